//! The cluster-wide registry of agent names, as Erlang's `global`: a name is held by one agent
//! of the whole cluster. Each name is a key of the names bucket whose value says who holds it
//! (`{id, node, incarnation}`): a claim is a create (of two nodes creating one key at once,
//! exactly one succeeds), taken over by compare-and-swap on the key's revision only when its
//! holder's node incarnation is down; a release deletes the key only at the revision its holder
//! wrote. Every node follows the bucket into a local cache, which lookups read; a name the
//! cache does not know yet (registered a moment ago elsewhere) is read from the bucket.
//!
//! Supervisors' names stay local: the root supervisor runs on every node, and a nested one is
//! reached through its agents.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::bindings::Error;
use crate::messaging::AgentId;

/// Who holds a name, as the names bucket says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub id: AgentId,
    pub node: String,
    pub incarnation: u64,
}

/// A bucket key for an agent name: names are any 1-255 bytes, keys a restricted alphabet, so
/// every name is written in hex (which also keeps `.` and `>` from meaning anything).
fn name_key(name: &str) -> String {
    format!("n.{}", super::hex(name))
}

fn key_name(key: &str) -> Option<String> {
    super::unhex(key.strip_prefix("n.")?)
}

/// Why a claim could not be decided.
fn unreachable(error: impl std::fmt::Display) -> Error {
    Error::Failed(format!("unreachable: the cluster's registry did not answer: {error}"))
}

impl Cluster {
    fn holder(&self, id: AgentId) -> Holder {
        Holder { id, node: self.settings.node.clone(), incarnation: self.incarnation }
    }

    /// Whether the holder's node incarnation may be alive: up as we see it, or newer than what
    /// we have seen of it (its heartbeat has not reached us yet). One we never saw that is
    /// older than this node was down when this node joined.
    pub(super) fn is_live(&self, node: &str, incarnation: u64) -> bool {
        match self.members.lock().expect("members").get(node) {
            Some(member) if member.record.incarnation == incarnation => member.up,
            Some(member) => member.record.incarnation < incarnation,
            None => incarnation > self.incarnation,
        }
    }

    /// Claim `name` for local agent `id` across the cluster: `already-exists` when an agent of a
    /// live node holds it.
    pub async fn claim(&self, name: &str, id: AgentId) -> Result<(), Error> {
        let key = name_key(name);
        let value = Bytes::from(serde_json::to_vec(&self.holder(id)).expect("a holder serializes"));
        for _ in 0..8 {
            match self.names.create(&key, value.clone()).await {
                Ok(revision) => {
                    self.remember_name(name, self.holder(id), revision);
                    return Ok(());
                }
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(error) => return Err(unreachable(error)),
            }
            // Held: by a live agent, or by one of a node that is gone (then taken over).
            let entry = match self.names.entry(&key).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
                // Released in between: create again.
                Ok(_) => continue,
                Err(error) => return Err(unreachable(error)),
            };
            let holder: Option<Holder> = serde_json::from_slice(&entry.value).ok();
            if let Some(holder) = &holder
                && (holder.node != self.settings.node || holder.incarnation != self.incarnation)
                && self.is_live(&holder.node, holder.incarnation)
            {
                return Err(Error::AlreadyExists);
            }
            // Ours from an earlier claim of this run would be held locally, and the local
            // registry refused it first; anything else is a dead node's.
            match self.names.update(&key, value.clone(), entry.revision).await {
                Ok(revision) => {
                    self.remember_name(name, self.holder(id), revision);
                    return Ok(());
                }
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(error) => return Err(unreachable(error)),
            }
        }
        Err(unreachable("the name kept changing hands"))
    }

    /// Let go of `name` if local agent `id` still holds it (in the background: an exit does not
    /// wait on the server; a name left behind by a node that cannot reach it is taken over once
    /// that node is down).
    pub fn release(self: &Arc<Self>, name: &str, id: AgentId) {
        let revision = {
            let mut names = self.held_names.lock().expect("names");
            match names.get(name) {
                Some((holder, revision)) if holder.id == id => {
                    let revision = *revision;
                    names.remove(name);
                    revision
                }
                _ => return,
            }
        };
        let (cluster, key) = (self.clone(), name_key(name));
        tokio::spawn(async move {
            if let Err(error) = cluster.names.delete_expect_revision(&key, Some(revision)).await {
                tracing::debug!(event = "name_release_failed", key = %key, %error);
            }
        });
    }

    fn remember_name(&self, name: &str, holder: Holder, revision: u64) {
        self.held_names.lock().expect("names").insert(name.to_string(), (holder, revision));
    }

    /// Follow the names bucket into the cache. A claim of this node's is cached as it is made,
    /// so an older revision arriving after it changes nothing.
    pub(super) fn apply_name(&self, entry: kv::Entry) {
        let Some(name) = key_name(&entry.key) else { return };
        let mut names = self.held_names.lock().expect("names");
        if names.get(&name).is_some_and(|(_, revision)| *revision >= entry.revision) {
            return;
        }
        match entry.operation {
            kv::Operation::Put => {
                if let Ok(holder) = serde_json::from_slice::<Holder>(&entry.value) {
                    names.insert(name, (holder, entry.revision));
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                names.remove(&name);
            }
        }
    }

    /// The id of the agent holding `name` on another live node, from the cache, or else from
    /// the bucket (a name claimed a moment ago may not have reached the cache).
    pub async fn lookup(&self, name: &str) -> Option<AgentId> {
        let cached = self.held_names.lock().expect("names").get(name).cloned();
        let holder = match cached {
            Some((holder, _)) => holder,
            None => {
                let entry = self.names.entry(name_key(name)).await.ok()??;
                if entry.operation != kv::Operation::Put {
                    return None;
                }
                serde_json::from_slice::<Holder>(&entry.value).ok()?
            }
        };
        self.is_live(&holder.node, holder.incarnation).then_some(holder.id)
    }

    /// Names held by incarnations that are down, for the leader to clear away.
    pub(super) async fn clear_dead_names(&self) {
        let dead: Vec<(String, u64)> = {
            let names = self.held_names.lock().expect("names");
            names
                .iter()
                .filter(|(_, (holder, _))| !self.is_live(&holder.node, holder.incarnation))
                .map(|(name, (_, revision))| (name_key(name), *revision))
                .collect()
        };
        for (key, revision) in dead {
            let _ = self.names.delete_expect_revision(&key, Some(revision)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_name_makes_a_valid_key_and_back() {
        for name in ["echo", "a.b", ">", "*", "ünï code", "with space", "a..b"] {
            let key = name_key(name);
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'), "{key}");
            assert_eq!(key_name(&key).as_deref(), Some(name));
        }
    }
}
