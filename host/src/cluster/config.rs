//! The live config across the cluster: a change made on one node (`PUT /config/<path>`) is
//! written to the config bucket (`p.<path>`: the new value, or none for a removal), and every
//! node follows the bucket into its own live config, notifying its own subscribers. A node that
//! joins later takes the cluster's changes over its manifest's values. Each node checks a
//! change against its own manifest's rules (updatable paths, bounds): nodes of one manifest
//! agree; a node that refuses a change says so in its log.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Cluster;

#[derive(Debug, Serialize, Deserialize)]
struct Change {
    value: Option<String>,
    node: String,
}

/// How a node takes a change of the cluster's config: its path and new value.
pub type ConfigHook = Box<dyn Fn(&str, Option<String>) + Send + Sync>;

impl Cluster {
    /// Follow the config bucket into `apply` (the cluster's changes so far first).
    pub async fn follow_config(self: &Arc<Self>, apply: ConfigHook) -> anyhow::Result<()> {
        let _ = self.config_hook.set(apply);
        self.follow(&self.config, "config", Cluster::apply_config).await
    }

    /// Share a change this node made with the others.
    pub async fn share_config(&self, path: &str, value: Option<String>) -> Result<(), String> {
        let change = Change { value, node: self.settings.node.clone() };
        let body = Bytes::from(serde_json::to_vec(&change).expect("a change serializes"));
        self.config.put(format!("p.{path}"), body).await.map(|_| ()).map_err(|error| error.to_string())
    }

    fn apply_config(&self, entry: kv::Entry) {
        let Some(path) = entry.key.strip_prefix("p.") else { return };
        let Some(apply) = self.config_hook.get() else { return };
        if entry.operation != kv::Operation::Put {
            return;
        }
        match serde_json::from_slice::<Change>(&entry.value) {
            Ok(change) => apply(path, change.value),
            Err(error) => tracing::warn!(event = "cluster_bad_entry", key = %entry.key, %error),
        }
    }
}
