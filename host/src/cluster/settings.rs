//! `[cluster]`: the NATS server a host joins, and as which node. `agora run --cluster URL --node
//! NAME` sets the same from the command line; without either, the host runs alone and needs no
//! NATS server.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::manifest::units::Span;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterSettings {
    pub url: Option<String>,
    pub name: Option<String>,
    pub node: Option<String>,
    pub credentials: Option<PathBuf>,
    pub heartbeat: Option<Span>,
    pub node_timeout: Option<Span>,
    pub settle: Option<Span>,
}

/// A cluster's settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// The NATS server, as `nats://host:port`.
    pub url: String,
    /// The cluster's name: hosts of one cluster share its buckets and subjects, and another
    /// cluster on the same server shares nothing with them.
    pub name: String,
    /// This host's node name, unique among the cluster's live nodes.
    pub node: String,
    /// A NATS credentials file (JWT and NKey seed), relative to the manifest.
    pub credentials: Option<PathBuf>,
    /// How often a node says it is alive.
    pub heartbeat: Duration,
    /// A node silent this long is down, for every other node (and stops its own placed work,
    /// since the others will restart it elsewhere).
    pub node_timeout: Duration,
    /// How long a new leader waits, after it is elected, before its first assignment: the
    /// nodes started together join meanwhile, and the work spreads over them.
    pub settle: Duration,
}

pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// A cluster or node name: it is part of bucket names and subjects.
pub fn check_cluster_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if valid { Ok(()) } else { Err(format!("invalid {what} {name:?}: use 1-64 of A-Z a-z 0-9 - _")) }
}

impl RawClusterSettings {
    /// Resolve, with the command line's `--cluster` and `--node` over the section's. `Ok(None)`:
    /// no cluster. The error names the key at fault.
    pub fn resolve(
        raw: Option<&RawClusterSettings>,
        url: Option<String>,
        node: Option<String>,
    ) -> Result<Option<ClusterSettings>, (&'static str, String)> {
        let empty = RawClusterSettings::default();
        let raw = raw.unwrap_or(&empty);
        let Some(url) = url.or_else(|| raw.url.clone()) else {
            if node.is_some() {
                return Err((
                    "url",
                    "--node needs a cluster to join: --cluster nats://HOST:PORT or [cluster] url".into(),
                ));
            }
            if raw.node.is_some() || raw.name.is_some() {
                return Err(("url", "[cluster] needs the `url` of its NATS server".into()));
            }
            return Ok(None);
        };
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(("url", format!("{url:?}: expected nats://HOST:PORT or tls://HOST:PORT")));
        }
        let name = raw.name.clone().unwrap_or_else(|| "agora".into());
        check_cluster_name("cluster name", &name).map_err(|e| ("name", e))?;
        let Some(node) = node.or_else(|| raw.node.clone()) else {
            return Err(("node", "a cluster member needs a node name: --node NAME or [cluster] node".into()));
        };
        check_cluster_name("node name", &node).map_err(|e| ("node", e))?;
        let heartbeat = raw.heartbeat.map_or(DEFAULT_HEARTBEAT, |s| s.duration());
        let node_timeout = raw.node_timeout.map_or(DEFAULT_NODE_TIMEOUT, |s| s.duration());
        if heartbeat < Duration::from_millis(50) {
            return Err(("heartbeat", "must be at least 50ms".into()));
        }
        // The heartbeats' bucket ages entries out after node_timeout, which the server counts
        // in whole seconds at best.
        if node_timeout < Duration::from_secs(1) || node_timeout < heartbeat * 2 {
            return Err(("node_timeout", "must be at least 1s and at least two heartbeats".into()));
        }
        let settle = raw.settle.map_or(DEFAULT_SETTLE, |s| s.duration());
        Ok(Some(ClusterSettings {
            url,
            name,
            node,
            credentials: raw.credentials.clone(),
            heartbeat,
            node_timeout,
            settle,
        }))
    }
}
