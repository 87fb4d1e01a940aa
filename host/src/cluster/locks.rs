//! Cluster-wide locks, as `global:set_lock`: a lock name means one lock across every node.
//!
//! Each lock is a key of the locks bucket whose value lists its grants (`{agent, node,
//! incarnation, mode, token, expires_ms}`). Every change is a compare-and-swap on the key's
//! revision, so two nodes granting one lock at once cannot both succeed; a grant's fencing token
//! is the revision of the write that made it, which is above every earlier grant's on that lock
//! (revisions increase across the whole bucket). Each write carries a per-key TTL (whole seconds,
//! rounded up) as long as the longest lease in it: a key whose holders all stopped renewing
//! leaves the bucket by itself.
//!
//! A grant ends when its holder releases it or exits, when its lease ends, or when its holder's
//! node is down (its heartbeat lapsed, as for names): a killed node's locks free within
//! `node_timeout` or the lease, whichever comes first. Leases are timed with the granting
//! node's wall clock and read with the reader's, so nodes on different machines need
//! synchronised clocks (NTP: an error of milliseconds against leases of seconds).
//!
//! Waiters are not queued across nodes: a waiting `acquire` tries again whenever the lock's key
//! changes, a node goes down, or the earliest lease in it ends, and the first write wins (as
//! `global` retries). Within one host alone, the local table serves waiters in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Cluster, now_ms};
use crate::capabilities::coordination::locks::{LockError, Mode};
use crate::messaging::AgentId;

/// One grant of a lock, as the bucket holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Grant {
    pub agent: AgentId,
    pub node: String,
    pub incarnation: u64,
    pub shared: bool,
    /// The fencing token; 0 means "the revision of the write that carries this record" (a
    /// grant's token is known only once the server numbered its write).
    pub token: u64,
    /// When the lease ends, in Unix milliseconds of the granting node's clock.
    pub expires_ms: u64,
}

/// A lock's value in the bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockRecord {
    pub grants: Vec<Grant>,
}

impl LockRecord {
    /// The record as read at `revision`: tokens resolved, grants that ended (lease over, holder's
    /// node down) left out.
    fn live(mut self, revision: u64, now: u64, is_live: impl Fn(&str, u64) -> bool) -> LockRecord {
        for grant in &mut self.grants {
            if grant.token == 0 {
                grant.token = revision;
            }
        }
        self.grants.retain(|g| g.expires_ms > now && is_live(&g.node, g.incarnation));
        self
    }

    fn compatible(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => self.grants.is_empty(),
            Mode::Shared => self.grants.iter().all(|g| g.shared),
        }
    }

    /// How long the key must live: until its last lease ends.
    fn ttl(&self, now: u64) -> Duration {
        let last = self.grants.iter().map(|g| g.expires_ms).max().unwrap_or(now);
        Duration::from_millis(last.saturating_sub(now))
    }

    /// When the earliest lease ends, in Unix milliseconds.
    fn earliest_expiry(&self) -> Option<u64> {
        self.grants.iter().map(|g| g.expires_ms).min()
    }
}

/// Why a lock operation failed at the cluster's end.
#[derive(Debug)]
pub enum ClusterLockError {
    Lock(LockError),
    /// The server did not answer; the text says what failed.
    Unreachable(String),
}

impl From<LockError> for ClusterLockError {
    fn from(error: LockError) -> Self {
        ClusterLockError::Lock(error)
    }
}

fn unreachable(error: impl std::fmt::Display) -> ClusterLockError {
    ClusterLockError::Unreachable(format!("unreachable: the cluster's lock table did not answer: {error}"))
}

/// A lock's bucket key: names are any 1-256 bytes, so they are written in hex.
fn lock_key(name: &str) -> String {
    format!("l.{}", super::hex(name))
}

/// What the follower keeps of the locks bucket: each key's record and revision.
pub(super) type LockTable = HashMap<String, (LockRecord, u64)>;

/// How many times a change is tried again after losing a compare-and-swap race.
const RACES: usize = 64;

impl Cluster {
    /// The lock's record and the revision to write over (0: no value, write as a create).
    async fn read_lock(&self, key: &str) -> Result<(LockRecord, u64), ClusterLockError> {
        let now = now_ms();
        match self.locks.entry(key).await.map_err(unreachable)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let record: LockRecord = serde_json::from_slice(&entry.value).unwrap_or_default();
                Ok((record.live(entry.revision, now, |node, inc| self.is_live(node, inc)), entry.revision))
            }
            // Released or aged out: the marker's revision is the one to write over.
            Some(entry) => Ok((LockRecord::default(), entry.revision)),
            None => Ok((LockRecord::default(), 0)),
        }
    }

    /// Write `record` over `revision`: its new revision, or `None` when another write came
    /// first. An empty record deletes the key.
    async fn write_lock(&self, key: &str, record: &LockRecord, revision: u64) -> Result<Option<u64>, ClusterLockError> {
        if record.grants.is_empty() {
            return match self.locks.delete_expect_revision(key, Some(revision)).await {
                Ok(()) => Ok(Some(revision)),
                Err(error) if error.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(None),
                Err(error) => Err(unreachable(error)),
            };
        }
        let value = Bytes::from(serde_json::to_vec(record).expect("a lock record serializes"));
        let ttl = record.ttl(now_ms());
        match super::put_expecting(&self.js, &self.locks, key, value, revision, Some(ttl)).await {
            Ok(revision) => Ok(Some(revision)),
            Err(super::PutError::Conflict) => Ok(None),
            Err(super::PutError::Failed(error)) => Err(unreachable(error)),
        }
    }

    /// Take the lock now if it is free for `mode`: the grant's fencing token, or `busy`.
    pub async fn lock_try(
        &self,
        name: &str,
        agent: AgentId,
        mode: Mode,
        ttl: Duration,
    ) -> Result<u64, ClusterLockError> {
        let key = lock_key(name);
        for _ in 0..RACES {
            let (mut record, revision) = self.read_lock(&key).await?;
            if !record.compatible(mode) {
                return Err(LockError::Busy.into());
            }
            record.grants.push(Grant {
                agent,
                node: self.settings.node.clone(),
                incarnation: self.incarnation,
                shared: mode == Mode::Shared,
                token: 0,
                expires_ms: now_ms() + ttl.as_millis() as u64,
            });
            if let Some(token) = self.write_lock(&key, &record, revision).await? {
                return Ok(token);
            }
        }
        Err(unreachable("the lock kept changing hands"))
    }

    /// Wait up to `timeout` for the lock.
    pub async fn lock_acquire(
        &self,
        name: &str,
        agent: AgentId,
        mode: Mode,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<u64, ClusterLockError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = lock_key(name);
        loop {
            // Listening before trying: a change between the try and the wait is not missed.
            let changed = self.lock_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.lock_try(name, agent, mode, ttl).await {
                Err(ClusterLockError::Lock(LockError::Busy)) => {}
                outcome => return outcome,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout.into());
            }
            // The earliest lease in it may end before anyone writes the key again.
            let expiry = self.lock_table.lock().expect("locks").get(&key).and_then(|(r, _)| r.earliest_expiry());
            let until_expiry = expiry.map(|at| Duration::from_millis(at.saturating_sub(now_ms()) + 1));
            let wake = until_expiry.map_or(deadline, |d| (now + d).min(deadline));
            // A node going down frees its grants without a write: look again every heartbeat too.
            let wake = wake.min(now + self.settings.heartbeat);
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Extend this agent's grant `token` to `ttl` from now.
    pub async fn lock_renew(
        &self,
        name: &str,
        agent: AgentId,
        token: u64,
        ttl: Duration,
    ) -> Result<(), ClusterLockError> {
        let key = lock_key(name);
        for _ in 0..RACES {
            let (mut record, revision) = self.read_lock(&key).await?;
            let grant = record.grants.iter_mut().find(|g| self.is_ours(g, agent, token)).ok_or(LockError::NotHeld)?;
            grant.expires_ms = now_ms() + ttl.as_millis() as u64;
            if self.write_lock(&key, &record, revision).await?.is_some() {
                return Ok(());
            }
        }
        Err(unreachable("the lock kept changing hands"))
    }

    /// End this agent's grant `token`.
    pub async fn lock_release(&self, name: &str, agent: AgentId, token: u64) -> Result<(), ClusterLockError> {
        let key = lock_key(name);
        for _ in 0..RACES {
            let (mut record, revision) = self.read_lock(&key).await?;
            let before = record.grants.len();
            record.grants.retain(|g| !self.is_ours(g, agent, token));
            if record.grants.len() == before {
                return Err(LockError::NotHeld.into());
            }
            if self.write_lock(&key, &record, revision).await?.is_some() {
                return Ok(());
            }
        }
        Err(unreachable("the lock kept changing hands"))
    }

    /// End an exiting agent's grants, in the background (an exit does not wait on the server;
    /// what cannot be written now ends with the lease or with this node).
    pub fn lock_release_all(self: &Arc<Self>, agent: AgentId, held: Vec<(String, u64)>) {
        if held.is_empty() {
            return;
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            for (name, token) in held {
                if let Err(ClusterLockError::Unreachable(error)) = cluster.lock_release(&name, agent, token).await {
                    tracing::debug!(event = "lock_release_failed", lock = %name, %error);
                }
            }
        });
    }

    /// Whether a grant of this agent with this token may still stand, as last followed (to
    /// forget ended grants lazily).
    pub fn lock_may_hold(&self, name: &str, agent: AgentId, token: u64) -> bool {
        let now = now_ms();
        self.lock_table.lock().expect("locks").get(&lock_key(name)).is_some_and(|(record, revision)| {
            record.grants.iter().any(|g| {
                let resolved = if g.token == 0 { *revision } else { g.token };
                g.agent == agent && resolved == token && g.expires_ms > now
            })
        })
    }

    fn is_ours(&self, grant: &Grant, agent: AgentId, token: u64) -> bool {
        grant.agent == agent
            && grant.token == token
            && grant.node == self.settings.node
            && grant.incarnation == self.incarnation
    }

    /// Follow the locks bucket: waiters look again at every change.
    pub(super) fn apply_lock(&self, entry: kv::Entry) {
        {
            let mut table = self.lock_table.lock().expect("locks");
            match entry.operation {
                kv::Operation::Put => {
                    let record = serde_json::from_slice(&entry.value).unwrap_or_default();
                    table.insert(entry.key, (record, entry.revision));
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    table.remove(&entry.key);
                }
            }
        }
        self.lock_changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(node: &str, shared: bool, token: u64, expires_ms: u64) -> Grant {
        Grant { agent: 1, node: node.into(), incarnation: 1, shared, token, expires_ms }
    }

    #[test]
    fn ended_grants_do_not_count_and_new_tokens_resolve_to_the_revision() {
        let record = LockRecord {
            grants: vec![grant("a", true, 0, 2_000), grant("b", true, 7, 900), grant("dead", true, 5, 5_000)],
        };
        let live = record.live(12, 1_000, |node, _| node != "dead");
        assert_eq!(live.grants, vec![grant("a", true, 12, 2_000)]);
        assert!(live.compatible(Mode::Shared));
        assert!(!live.compatible(Mode::Exclusive));
        assert_eq!(live.ttl(1_000), Duration::from_millis(1_000));
        assert!(LockRecord::default().compatible(Mode::Exclusive));
        let exclusive = LockRecord { grants: vec![grant("a", false, 3, 2_000)] };
        assert!(!exclusive.compatible(Mode::Shared));
    }

    #[test]
    fn any_lock_name_makes_a_valid_key() {
        for name in ["a", "a.b", ">", "*", "with space", "ünï"] {
            assert!(lock_key(name).chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
        }
    }
}
