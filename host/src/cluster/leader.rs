//! The leader: one node at a time holds the lease (`leader` in the nodes bucket, which ages it
//! out after node_timeout unless it is renewed), taken by create (only one create of a key
//! succeeds) and renewed by compare-and-swap on its revision (a renewal after another node took
//! it fails, and the old leader steps down). The leader assigns the root's children to nodes
//! ([`super::placement::assign`]); every assignment is itself a compare-and-swap on the child's
//! revision, so that a deposed leader's late write cannot overwrite its successor's.

use std::collections::BTreeMap;
use std::time::Instant;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::placement::{Wanted, assign};
use super::{Cluster, child_key};

pub const LEADER_KEY: &str = "leader";

impl Cluster {
    /// Hold or seek the lease; leading, and past the settle time, assign.
    pub(super) async fn lead(&self) {
        let me = Bytes::from(self.settings.node.clone());
        let held = match self.nodes.entry(LEADER_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                if entry.value == me {
                    self.nodes.update(LEADER_KEY, me, entry.revision).await.is_ok()
                } else {
                    false
                }
            }
            // No lease (never taken, aged out, or given up): try to take it.
            Ok(_) => self.nodes.create(LEADER_KEY, me).await.is_ok(),
            Err(_) => false,
        };
        let since = {
            let mut leading = self.leading_since.lock().expect("leader");
            match (held, *leading) {
                (true, None) => {
                    tracing::info!(event = "leading", node = %self.settings.node,
                        "node {} took the leader's lease", self.settings.node);
                    *leading = Some(Instant::now());
                }
                (false, Some(_)) => {
                    tracing::warn!(event = "leadership_lost", node = %self.settings.node,
                        "node {} no longer holds the leader's lease", self.settings.node);
                    *leading = None;
                }
                _ => {}
            }
            *leading
        };
        if let Some(since) = since
            && since.elapsed() >= self.settings.settle
        {
            self.assign_children().await;
            self.clear_dead_names().await;
            self.clear_dead_members().await;
            self.break_dead_barriers().await;
            self.clear_dead_topics().await;
        }
    }

    /// Write the assignments that the rules call for now.
    async fn assign_children(&self) {
        let live = self.live_nodes();
        // Decided under the locks (the rules are pure), written after: each change with the
        // revision it was decided on, 0 for a child never assigned.
        let changes: Vec<(String, super::placement::Assignment, u64)> = {
            let current = self.assignments.lock().expect("assignments");
            let children = self.children.lock().expect("children");
            let wanted: Vec<Wanted> = children
                .iter()
                .map(|c| Wanted { child: c.spec.name(), placement: &c.placement, restart: c.restart })
                .collect();
            let plain: BTreeMap<String, super::placement::Assignment> =
                current.iter().map(|(child, (a, _))| (child.clone(), a.clone())).collect();
            assign(&wanted, &plain, &live)
                .into_iter()
                .map(|(child, assignment)| {
                    let revision = current.get(&child).map_or(0, |(_, revision)| *revision);
                    (child, assignment, revision)
                })
                .collect()
        };
        for (child, assignment, revision) in changes {
            let Ok(value) = serde_json::to_vec(&assignment) else { continue };
            let key = child_key(&child);
            let written = match revision {
                0 => self.placement.create(&key, Bytes::from(value)).await.map(|_| ()).map_err(|e| e.to_string()),
                revision => self
                    .placement
                    .update(&key, Bytes::from(value), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => {
                    self.observe(
                        "child_assigned",
                        serde_json::json!({ "child": child, "node": assignment.node, "incarnation": assignment.incarnation }),
                    );
                }
                // Written by someone else since we read it: the watch brings it, the next
                // heartbeat looks again.
                Err(error) => tracing::debug!(event = "assignment_conflict", child = %child, %error),
            }
        }
    }
}
