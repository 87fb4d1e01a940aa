//! Membership: each node writes its heartbeat record under `node.<name>` every `heartbeat`;
//! every node watches the bucket. A node is up from its first record and down when its record
//! is deleted (it left) or when no record came for `node_timeout` (the bucket ages it out too,
//! so a node that joins later never sees it). Going down is reported once, as `node_down`.

use std::time::Instant;

use async_nats::jetstream::kv;

use super::{Cluster, NodeRecord};
use crate::capabilities::HostEvent;

/// What this node knows of another (or of itself).
#[derive(Debug, Clone)]
pub struct Member {
    pub record: NodeRecord,
    pub up: bool,
    /// When its last heartbeat arrived here.
    pub last_seen: Instant,
}

pub fn node_key(node: &str) -> String {
    format!("node.{node}")
}

impl Cluster {
    pub(super) fn apply_node(&self, entry: kv::Entry) {
        if entry.key == super::leader::LEADER_KEY {
            let holder = match entry.operation {
                kv::Operation::Put => String::from_utf8(entry.value.to_vec()).ok(),
                _ => None,
            };
            let mut leader = self.leader.lock().expect("leader");
            if *leader != holder {
                if let Some(holder) = &holder {
                    tracing::info!(event = "leader_elected", leader = %holder, "node {holder} leads the cluster");
                    self.observe("leader_elected", serde_json::json!({ "node": holder }));
                }
                *leader = holder;
            }
            return;
        }
        let Some(name) = entry.key.strip_prefix("node.") else { return };
        match entry.operation {
            kv::Operation::Put => {
                let Ok(record) = serde_json::from_slice::<NodeRecord>(&entry.value) else {
                    tracing::warn!(event = "cluster_bad_entry", key = %entry.key);
                    return;
                };
                let mut members = self.members.lock().expect("members");
                let previous = members
                    .insert(name.to_string(), Member { record: record.clone(), up: true, last_seen: Instant::now() });
                let new = previous.as_ref().is_none_or(|p| !p.up || p.record.incarnation != record.incarnation);
                drop(members);
                if let Some(previous) = previous.filter(|p| p.up && p.record.incarnation != record.incarnation) {
                    // Restarted within node_timeout: its previous run is down.
                    self.went_down(&previous.record, "restarted");
                }
                if new {
                    tracing::info!(event = "node_up", node = %record.name, incarnation = record.incarnation,
                        "node {} is up (incarnation {})", record.name, record.incarnation);
                    self.observe(
                        "node_up",
                        serde_json::json!({ "node": record.name, "incarnation": record.incarnation }),
                    );
                    self.changed.notify_one();
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                let record = {
                    let mut members = self.members.lock().expect("members");
                    members.get_mut(name).filter(|m| m.up).map(|m| {
                        m.up = false;
                        m.record.clone()
                    })
                };
                if let Some(record) = record {
                    self.went_down(&record, "left");
                }
            }
        }
    }

    /// Mark the nodes silent for node_timeout down.
    pub(super) fn sweep(&self) {
        let timeout = self.settings.node_timeout;
        let lapsed: Vec<NodeRecord> = {
            let mut members = self.members.lock().expect("members");
            members
                .values_mut()
                .filter(|m| m.up && m.record.name != self.settings.node && m.last_seen.elapsed() >= timeout)
                .map(|m| {
                    m.up = false;
                    m.record.clone()
                })
                .collect()
        };
        for record in lapsed {
            self.went_down(&record, "heartbeat lapsed");
        }
    }

    fn went_down(&self, record: &NodeRecord, why: &str) {
        if let Some(hook) = self.node_down_hook.get() {
            hook(record.index);
        }
        tracing::warn!(event = "node_down", node = %record.name, incarnation = record.incarnation, reason = why,
            "node {} is down ({why})", record.name);
        self.observe(
            "node_down",
            serde_json::json!({ "node": record.name, "incarnation": record.incarnation, "reason": why }),
        );
        self.changed.notify_one();
        // Its lock grants ended with it.
        self.lock_changed.notify_waiters();
        self.barrier_changed.notify_waiters();
    }

    /// The name of the node up now whose agent ids carry `index`.
    pub fn members_index(&self, index: u64) -> Option<String> {
        let members = self.members.lock().expect("members");
        members.values().find(|m| m.up && m.record.index == index).map(|m| m.record.name.clone())
    }

    /// The nodes up now (this one included unless it is isolated).
    pub fn live_nodes(&self) -> Vec<super::placement::LiveNode> {
        let members = self.members.lock().expect("members");
        members
            .values()
            .filter(|m| m.up && !(m.record.name == self.settings.node && self.is_isolated()))
            .map(|m| super::placement::LiveNode { name: m.record.name.clone(), incarnation: m.record.incarnation })
            .collect()
    }

    /// Journal a cluster event, as the lifecycle's are.
    pub(super) fn observe(&self, kind: &'static str, detail: serde_json::Value) {
        if let Some(observer) = self.observer.get() {
            observer(&HostEvent::Cluster { kind, detail: &detail });
        }
    }
}
