//! Cluster-wide election groups: one group name means one group across every node, led by its
//! earliest member still alive, as on a host alone.
//!
//! Each group is a key of the groups bucket whose value is its members in join order (with
//! their nodes' incarnations) and its term. Every change is a compare-and-swap on the key's
//! revision that recomputes the leader and raises the term when the leader changed, so two
//! leaderships never share a term: whoever writes the next term writes it over the revision
//! that had the previous one. Members of a node that went down are taken out by the next
//! change of the group, by a read that finds its leader gone, or by the cluster's leader.
//!
//! Every node follows the bucket and tells its own members of each new term
//! (`notice.leader-changed`), so each member hears each change once, in term order. An empty
//! group keeps its key, so that its terms go on increasing when it is joined again.

use std::collections::HashMap;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::capabilities::coordination::election::{Leadership, TOPIC_PREFIX};
use crate::messaging::AgentId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMember {
    pub agent: AgentId,
    pub node: String,
    pub incarnation: u64,
}

/// A group's value in the bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// In join order; the first leads.
    pub members: Vec<GroupMember>,
    pub term: u64,
}

impl GroupRecord {
    pub fn leadership(&self) -> Leadership {
        Leadership { leader: self.members.first().map(|m| m.agent), term: self.term }
    }

    /// The record after `change` to its members, the term raised if the leader changed.
    fn changed(&self, change: impl FnOnce(&mut Vec<GroupMember>)) -> GroupRecord {
        let mut next = self.clone();
        change(&mut next.members);
        // As on a host alone: every change of leader, to none too, is a new term.
        if next.leadership().leader != self.leadership().leader {
            next.term += 1;
        }
        next
    }
}

/// What the follower keeps of the groups bucket: each group's record and revision.
pub(super) type GroupTable = HashMap<String, (GroupRecord, u64)>;

fn group_key(group: &str) -> String {
    format!("g.{}", super::hex(group))
}

fn key_group(key: &str) -> Option<String> {
    super::unhex(key.strip_prefix("g.")?)
}

fn unreachable(error: impl std::fmt::Display) -> String {
    format!("unreachable: the cluster's election groups did not answer: {error}")
}

const RACES: usize = 64;

impl Cluster {
    fn member(&self, agent: AgentId) -> GroupMember {
        GroupMember { agent, node: self.settings.node.clone(), incarnation: self.incarnation }
    }

    async fn read_group(&self, key: &str) -> Result<(GroupRecord, u64), String> {
        match self.groups.entry(key).await.map_err(unreachable)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok((serde_json::from_slice(&entry.value).unwrap_or_default(), entry.revision))
            }
            Some(entry) => Ok((GroupRecord::default(), entry.revision)),
            None => Ok((GroupRecord::default(), 0)),
        }
    }

    /// Apply `change` to the group (its gone members taken out too) until a write wins; the
    /// record as written (or as it was, when nothing changed) and what `change` returned.
    async fn change_group<T>(
        &self,
        group: &str,
        change: impl Fn(&mut Vec<GroupMember>) -> T,
    ) -> Result<(GroupRecord, T), String> {
        let key = group_key(group);
        for _ in 0..RACES {
            let (record, revision) = self.read_group(&key).await?;
            let mut outcome = None;
            let next = record.changed(|members| {
                members.retain(|m| self.is_live(&m.node, m.incarnation));
                outcome = Some(change(members));
            });
            let outcome = outcome.expect("the change ran");
            if next == record {
                return Ok((record, outcome));
            }
            let value = Bytes::from(serde_json::to_vec(&next).expect("a group serializes"));
            match super::put_expecting(&self.js, &self.groups, &key, value, revision, None).await {
                Ok(_) => return Ok((next, outcome)),
                Err(super::PutError::Conflict) => continue,
                Err(super::PutError::Failed(error)) => return Err(unreachable(error)),
            }
        }
        Err(unreachable("the group kept changing"))
    }

    /// Join `group` (again: no change).
    pub async fn group_join(&self, group: &str, agent: AgentId) -> Result<Leadership, String> {
        let me = self.member(agent);
        let (record, ()) = self
            .change_group(group, |members| {
                if !members.contains(&me) {
                    members.push(me.clone());
                }
            })
            .await?;
        Ok(record.leadership())
    }

    /// Leave `group`; false if `agent` was no member.
    pub async fn group_leave(&self, group: &str, agent: AgentId) -> Result<bool, String> {
        let me = self.member(agent);
        let (_, was_member) = self
            .change_group(group, |members| {
                let before = members.len();
                members.retain(|m| *m != me);
                members.len() != before
            })
            .await?;
        Ok(was_member)
    }

    /// The group's leadership: as followed, unless its leader's node is gone (then the group is
    /// changed first, so that the next term is written once, by compare-and-swap).
    pub async fn group_leadership(&self, group: &str) -> Result<Leadership, String> {
        let cached = self.group_table.lock().expect("groups").get(&group_key(group)).map(|(r, _)| r.clone());
        if let Some(record) = &cached
            && record.members.iter().all(|m| self.is_live(&m.node, m.incarnation))
        {
            return Ok(record.leadership());
        }
        Ok(self.change_group(group, |_| ()).await?.0.leadership())
    }

    /// The group's members, in join order, as followed (consensus asks them).
    pub fn group_members(&self, group: &str) -> Vec<GroupMember> {
        let table = self.group_table.lock().expect("groups");
        let Some((record, _)) = table.get(&group_key(group)) else { return Vec::new() };
        record.members.iter().filter(|m| self.is_live(&m.node, m.incarnation)).cloned().collect()
    }

    /// An exiting agent's groups, left in the background.
    pub fn group_leave_all(self: &std::sync::Arc<Self>, agent: AgentId, groups: Vec<String>) {
        let cluster = self.clone();
        tokio::spawn(async move {
            for group in groups {
                if let Err(error) = cluster.group_leave(&group, agent).await {
                    tracing::debug!(event = "group_leave_failed", group = %group, %error);
                }
            }
        });
    }

    /// Groups with members of nodes that are down, changed without them (by the leader).
    pub(super) async fn clear_dead_members(&self) {
        let stale: Vec<String> = {
            let table = self.group_table.lock().expect("groups");
            table
                .iter()
                .filter(|(_, (record, _))| record.members.iter().any(|m| !self.is_live(&m.node, m.incarnation)))
                .filter_map(|(key, _)| key_group(key))
                .collect()
        };
        for group in stale {
            let _ = self.change_group(&group, |_| ()).await;
        }
    }

    /// Follow the groups bucket; tell this node's members of each new term.
    pub(super) fn apply_group(&self, entry: kv::Entry) {
        let Some(group) = key_group(&entry.key) else { return };
        if entry.operation != kv::Operation::Put {
            self.group_table.lock().expect("groups").remove(&entry.key);
            return;
        }
        let Ok(record) = serde_json::from_slice::<GroupRecord>(&entry.value) else { return };
        let told_before = {
            let mut table = self.group_table.lock().expect("groups");
            if table.get(&entry.key).is_some_and(|(_, revision)| *revision >= entry.revision) {
                return;
            }
            table.insert(entry.key.clone(), (record.clone(), entry.revision)).map(|(old, _)| old.term)
        };
        // A new term with a leader: each of this node's members hears of it once.
        let is_new = told_before.is_none_or(|term| record.term > term);
        if !is_new || record.members.is_empty() {
            return;
        }
        let router = &self.router;
        let Leadership { leader, term } = record.leadership();
        let change = crate::bindings::types::LeaderChange { group: group.clone(), leader, term };
        let topic: std::sync::Arc<str> = format!("{TOPIC_PREFIX}{group}").into();
        let here = record
            .members
            .iter()
            .filter(|m| m.node == self.settings.node && m.incarnation == self.incarnation)
            .map(|m| m.agent);
        router.notify(here, &topic, &crate::messaging::Notice::LeaderChanged(change));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(agent: AgentId) -> GroupMember {
        GroupMember { agent, node: "a".into(), incarnation: 1 }
    }

    #[test]
    fn a_change_of_leader_raises_the_term_and_nothing_else_does() {
        let empty = GroupRecord::default();
        let one = empty.changed(|m| m.push(member(1)));
        assert_eq!(one.leadership(), Leadership { leader: Some(1), term: 1 });
        let two = one.changed(|m| m.push(member(2)));
        assert_eq!(two.leadership(), Leadership { leader: Some(1), term: 1 });
        let follower_left = two.changed(|m| m.retain(|m| m.agent != 2));
        assert_eq!(follower_left, one);
        let three = two.changed(|m| m.push(member(3)));
        let leader_left = three.changed(|m| m.retain(|m| m.agent != 1));
        assert_eq!(leader_left.leadership(), Leadership { leader: Some(2), term: 2 });
        let emptied = leader_left.changed(|m| m.clear());
        assert_eq!(emptied.leadership(), Leadership { leader: None, term: 3 });
        let again = emptied.changed(|m| m.push(member(4)));
        assert_eq!(again.leadership(), Leadership { leader: Some(4), term: 4 }, "terms go on after a group empties");
    }

    #[test]
    fn any_group_name_makes_a_valid_key_and_back() {
        for group in ["g", "a.b", ">", "with space"] {
            assert_eq!(key_group(&group_key(group)).as_deref(), Some(group));
        }
    }
}
