//! Publish across the cluster: a topic's subscribers on every node get each message.
//!
//! Each node writes `t.<hex topic>.<index>` in the topics bucket while it has at least one
//! subscriber of the topic, and follows the bucket, so a publisher knows which other nodes to
//! ask. A publish delivers here, then asks each of those nodes (`agora.<cluster>.publish.<index>`,
//! all at once) to deliver to its own subscribers and report what it delivered and whose
//! mailbox was full: the publisher's report counts every node's. A node that does not answer
//! within `node_timeout` delivered nothing that the report counts (logged `cluster_unreachable`).
//! Topics in the host's `agora:` space stay on their node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::messaging::{AgentId, Router};

pub(super) type TopicTable = HashMap<String, BTreeSet<u64>>;

fn topic_key(topic: &str, index: u64) -> String {
    format!("t.{}.{index}", super::hex(topic))
}

fn key_topic(key: &str) -> Option<(String, u64)> {
    let (topic, index) = key.strip_prefix("t.")?.rsplit_once('.')?;
    Some((super::unhex(topic)?, index.parse().ok()?))
}

#[derive(Debug, Serialize, Deserialize)]
struct Publish {
    sender: AgentId,
    topic: String,
    payload: Vec<u8>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Delivered {
    pub delivered: u32,
    pub mailbox_full: Vec<AgentId>,
}

impl Cluster {
    fn publish_subject(&self, index: u64) -> String {
        format!("agora.{}.publish.{index}", self.settings.name)
    }

    /// Announce this node's topics as they gain and lose subscribers, and deliver other nodes'
    /// publishes to them.
    pub async fn serve_topics(self: &Arc<Self>, router: &Arc<Router>) -> anyhow::Result<()> {
        // One writer, in order: each change is written as the topic stands when its turn comes,
        // so a subscribe and an unsubscribe in quick succession end as the topic ends.
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<Arc<str>>();
        let _ = router.topic_changed.set(Box::new(move |topic| {
            if !topic.starts_with("agora:") {
                let _ = changed.send(topic.clone());
            }
        }));
        let (cluster, weak) = (self.clone(), Arc::downgrade(router));
        tokio::spawn(async move {
            while let Some(topic) = changes.recv().await {
                let Some(router) = weak.upgrade() else { return };
                let key = topic_key(&topic, cluster.index);
                let written = if router.subscribers(&topic).is_empty() {
                    cluster.topics.delete(&key).await.map_err(|e| e.to_string())
                } else {
                    cluster.topics.put(&key, Bytes::from_static(b"1")).await.map(|_| ()).map_err(|e| e.to_string())
                };
                if let Err(error) = written {
                    tracing::warn!(event = "cluster_unreachable", what = "topics", topic = %topic, %error,
                        "this node's subscription of {topic} was not announced: {error}");
                }
            }
        });
        let mut requests = self.client.subscribe(self.publish_subject(self.index)).await?;
        let (client, weak) = (self.client.clone(), Arc::downgrade(router));
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(router) = weak.upgrade() else { return };
                let answer = match serde_json::from_slice::<Publish>(&message.payload) {
                    Ok(publish) => {
                        let (delivered, mailbox_full) =
                            router.publish(publish.sender, &publish.topic, &publish.payload);
                        Delivered { delivered, mailbox_full }
                    }
                    Err(_) => Delivered::default(),
                };
                if let Some(reply) = message.reply {
                    let body = serde_json::to_vec(&answer).expect("a report serializes");
                    let _ = client.publish(reply, body.into()).await;
                }
            }
        });
        Ok(())
    }

    /// Whether subscribers of `topic` live on other nodes (up), as followed.
    pub fn has_remote_subscribers(&self, topic: &str) -> bool {
        let table = self.topic_table.lock().expect("topics");
        table.get(topic).is_some_and(|nodes| {
            nodes.iter().any(|index| *index != self.index && self.index_up(*index << super::NODE_SHIFT))
        })
    }

    /// Deliver to the subscribers of `topic` on other nodes; what they delivered.
    pub async fn publish_remote(&self, sender: AgentId, topic: &str, payload: &[u8]) -> Delivered {
        let nodes: Vec<u64> = {
            let table = self.topic_table.lock().expect("topics");
            let nodes = table.get(topic).cloned().unwrap_or_default();
            nodes.into_iter().filter(|i| *i != self.index && self.index_up(*i << super::NODE_SHIFT)).collect()
        };
        let body = Bytes::from(
            serde_json::to_vec(&Publish { sender, topic: topic.to_string(), payload: payload.to_vec() })
                .expect("a publish serializes"),
        );
        let asks = nodes.into_iter().map(|index| {
            let (client, subject, body) = (self.client.clone(), self.publish_subject(index), body.clone());
            let timeout = self.settings.node_timeout;
            async move { (index, tokio::time::timeout(timeout, client.request(subject, body)).await) }
        });
        let mut total = Delivered::default();
        for (index, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(Ok(reply)) => {
                    if let Ok(report) = serde_json::from_slice::<Delivered>(&reply.payload) {
                        total.delivered += report.delivered;
                        total.mailbox_full.extend(report.mailbox_full);
                    }
                }
                Ok(Err(error)) => tracing::warn!(event = "cluster_unreachable", what = "publish", topic, index, %error),
                Err(_) => tracing::warn!(
                    event = "cluster_unreachable",
                    what = "publish",
                    topic,
                    index,
                    "node {index} did not answer a publish in time"
                ),
            }
        }
        total
    }

    /// Announcements of nodes that are down, cleared (by the leader).
    pub(super) async fn clear_dead_topics(&self) {
        let stale: Vec<String> = {
            let table = self.topic_table.lock().expect("topics");
            table
                .iter()
                .flat_map(|(topic, nodes)| {
                    nodes
                        .iter()
                        .filter(|i| !self.index_up(**i << super::NODE_SHIFT))
                        .map(|i| topic_key(topic, *i))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for key in stale {
            let _ = self.topics.delete(&key).await;
        }
    }

    pub(super) fn apply_topic(&self, entry: kv::Entry) {
        let Some((topic, index)) = key_topic(&entry.key) else { return };
        let mut table = self.topic_table.lock().expect("topics");
        match entry.operation {
            kv::Operation::Put => {
                table.entry(topic).or_default().insert(index);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(nodes) = table.get_mut(&topic) {
                    nodes.remove(&index);
                    if nodes.is_empty() {
                        table.remove(&topic);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_round_trip() {
        for topic in ["prices", "a.b", "with space", ">"] {
            assert_eq!(key_topic(&topic_key(topic, 42)), Some((topic.to_string(), 42)));
        }
    }
}
