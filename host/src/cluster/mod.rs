//! The cluster: hosts that run one manifest together over a NATS server (JetStream key-value
//! buckets), as Erlang nodes form a distributed system. A single host needs none of it; a host
//! started with `--cluster` (or a `[cluster]` section) joins before its tree starts.
//!
//! What lives where, in buckets named after the cluster (`agora_<cluster>_...`):
//!
//! - `_ids`: one counter, `incarnation`, advanced by compare-and-swap at each join. A node's
//!   incarnation names this run of it; its agent ids carry the incarnation's index
//!   ([`node_index`]), so that ids are unique across the cluster and a restarted node never
//!   reuses its previous run's.
//! - `_nodes`: each node's heartbeat record (`node.<name>`) and the leader's lease (`leader`);
//!   the bucket ages entries out after `node_timeout`, so a node or leader that stops writing
//!   vanishes from it ([`membership`], [`leader`]).
//! - `_placement`: which node incarnation runs each of the root supervisor's children
//!   ([`placement`]), written by the leader, watched by every node.
//! - `_names`: the cluster-wide registry ([`names`]).
//! - `_groups`: cluster-wide election groups ([`groups`]); `_barriers`: barriers ([`barriers`]).
//! - `_config`: changes of the live config ([`config`]); `_topics`: which nodes have
//!   subscribers of which topics ([`topics`]).
//! - The stream `agora_<cluster>_ledger`: every movement of money ([`ledger`]).
//! - `_locks`: cluster-wide locks, each key with a per-key TTL as long as its leases ([`locks`]).
//!
//! A node that cannot reach the server for `node_timeout` is down for the others, who restart
//! its work: it stops its placed children itself at that moment (it is isolated), so that no
//! child runs twice, and takes back what the leader assigns it once it is reachable again.

pub mod barriers;
pub mod config;
pub mod groups;
pub mod leader;
pub mod ledger;
pub mod locks;
pub mod membership;
pub mod names;
pub mod placement;
pub mod remote;
pub mod settings;
pub mod signals;
pub mod topics;
pub mod votes;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::manifest::{ChildSpec, Restart};
use membership::Member;
use placement::{Assignment, Placement};
pub use settings::{ClusterSettings, RawClusterSettings};

/// How many node indices agent ids can carry (13 bits, so that every id stays below 2^53 and
/// exact as a JSON number); after this many joins, indices are used again, oldest first.
pub const NODE_INDICES: u64 = 8191;
/// The bit at which an agent id's node index starts: below it, a per-incarnation serial.
pub const NODE_SHIFT: u32 = 40;

/// The index that a cluster incarnation's agent ids carry (1..=8191; 0 is a host alone).
pub fn node_index(incarnation: u64) -> u64 {
    (incarnation.saturating_sub(1) % NODE_INDICES) + 1
}

/// The node index an agent id carries.
pub fn index_of(id: u64) -> u64 {
    id >> NODE_SHIFT
}

/// A node's heartbeat record in the nodes bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    pub incarnation: u64,
    /// Its agent ids' node index.
    pub index: u64,
    /// When it joined, in Unix milliseconds.
    pub started_ms: u64,
    /// Its admin endpoint, if it serves one.
    pub admin: Option<String>,
}

/// A root child the cluster places, from the manifest.
#[derive(Debug, Clone)]
pub struct PlacedChild {
    pub spec: ChildSpec,
    pub placement: Placement,
    pub restart: Restart,
}

/// This host's membership of a cluster.
pub struct Cluster {
    pub settings: ClusterSettings,
    pub incarnation: u64,
    pub index: u64,
    pub started_ms: u64,
    client: async_nats::Client,
    js: jetstream::Context,
    /// Whether the client is connected to the server now.
    connected: tokio::sync::watch::Receiver<bool>,
    nodes: kv::Store,
    placement: kv::Store,
    names: kv::Store,
    locks: kv::Store,
    groups: kv::Store,
    barriers: kv::Store,
    config: kv::Store,
    topics: kv::Store,
    /// The topics bucket, as followed: the node indices with subscribers of each topic.
    topic_table: Mutex<topics::TopicTable>,
    /// How this host takes the cluster's config changes.
    config_hook: std::sync::OnceLock<config::ConfigHook>,
    /// The barriers bucket, as followed.
    barrier_table: Mutex<barriers::BarrierTable>,
    /// A barrier changed or a node went down: waiting parties look again.
    barrier_changed: Notify,
    /// The groups bucket, as followed.
    group_table: Mutex<groups::GroupTable>,
    /// This host's mailboxes (members of election groups are told of new terms).
    router: Arc<crate::messaging::Router>,
    /// The locks bucket, as followed.
    lock_table: Mutex<locks::LockTable>,
    /// A lock's key changed or a node went down: waiting acquires look again.
    lock_changed: Notify,
    /// The names bucket, as followed: each name's holder and its revision.
    held_names: Mutex<std::collections::HashMap<String, (names::Holder, u64)>>,
    /// The root's children, in manifest order, with where each may run.
    children: Mutex<Vec<PlacedChild>>,
    /// Every node seen in the nodes bucket, up or down.
    members: Mutex<BTreeMap<String, Member>>,
    /// The placement bucket, as watched: each child's assignment and its revision.
    assignments: Mutex<BTreeMap<String, (Assignment, u64)>>,
    /// The node holding the leader's lease, as last seen.
    leader: Mutex<Option<String>>,
    /// This node holds the lease, since then.
    leading_since: Mutex<Option<Instant>>,
    /// The last heartbeat the server took.
    last_heartbeat: Mutex<Instant>,
    /// Cut off from the server for `node_timeout`: its placed children are stopped.
    isolated: AtomicBool,
    /// Placement or membership changed: the node's reconciler looks again.
    pub changed: Notify,
    admin: Mutex<Option<String>>,
    /// Where cluster events go (the event store).
    observer: std::sync::OnceLock<Observer>,
    /// Told the node index of each incarnation that goes down (the link table's `noconnection`).
    node_down_hook: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// A sink for cluster events.
pub type Observer = Box<dyn Fn(&crate::capabilities::HostEvent<'_>) + Send + Sync>;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A bucket key for a child name (manifest names are `A-Z a-z 0-9 - _ .`; a dot may not start
/// or end a key, nor two follow each other, so such names are written in hex).
fn child_key(name: &str) -> String {
    let plain = !name.starts_with('.') && !name.ends_with('.') && !name.contains("..");
    if plain { format!("c.{name}") } else { format!("x.{}", hex(name)) }
}

fn key_child(key: &str) -> Option<String> {
    if let Some(name) = key.strip_prefix("c.") {
        return Some(name.to_string());
    }
    unhex(key.strip_prefix("x.")?)
}

/// A text as hex digits, for bucket keys (whose alphabet is restricted).
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(digits: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..digits.len())
        .step_by(2)
        .map(|i| digits.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Cluster {
    /// Join: connect, open the buckets, take an incarnation, wait out a previous run's heartbeat
    /// under the same node name, and announce this one. `children` are the root's, placed.
    pub async fn join(
        settings: ClusterSettings,
        children: Vec<PlacedChild>,
        router: Arc<crate::messaging::Router>,
        observer: Observer,
    ) -> anyhow::Result<Arc<Cluster>> {
        // The connection's state, as the client reports it: a request in flight when it drops
        // fails then, rather than at its timeout.
        let (connected_tx, connected) = tokio::sync::watch::channel(true);
        let mut options = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected_tx.send_replace(true);
                        }
                        async_nats::Event::Disconnected => {
                            connected_tx.send_replace(false);
                        }
                        _ => {}
                    }
                }
            })
            .name(format!("agora-{}-{}", settings.name, settings.node))
            .connection_timeout(Duration::from_secs(5))
            // Reconnects are the client's, forever; a node cut off for `node_timeout` is down
            // for the others meanwhile.
            .max_reconnects(None);
        if let Some(credentials) = &settings.credentials {
            options = options
                .credentials_file(credentials)
                .await
                .with_context(|| format!("[cluster] credentials {}", credentials.display()))?;
        }
        let client = options
            .connect(settings.url.as_str())
            .await
            .with_context(|| format!("cannot reach the cluster's NATS server at {}", settings.url))?;
        let mut js = jetstream::new(client.clone());
        // A key-value call that the server does not answer within a heartbeat's time or two is
        // reported, rather than held for the default 5 s.
        js.set_timeout(settings.heartbeat.max(Duration::from_millis(500)) * 2);
        // Each bucket keeps one value per key, on disk; the nodes' ages out after node_timeout.
        // Per-key TTLs (`ttls`) need the server's message TTLs (2.11 or later); an expired key
        // leaves a marker for a minute, so that followers see it go.
        let open = |suffix: &str, max_age: Duration, ttls: bool| {
            let js = js.clone();
            let name = format!("agora_{}_{suffix}", settings.name);
            async move {
                let config = kv::Config {
                    bucket: name.clone(),
                    history: 1,
                    max_age,
                    storage: jetstream::stream::StorageType::File,
                    limit_markers: ttls.then_some(Duration::from_secs(60)),
                    ..Default::default()
                };
                js.create_key_value(config).await.with_context(|| {
                    format!("cannot open bucket {name} (the server needs JetStream: nats-server -js, 2.11 or later)")
                })
            }
        };
        let forever = Duration::ZERO;
        let ids = open("ids", forever, false).await?;
        let nodes = open("nodes", settings.node_timeout, false).await?;
        let placement = open("placement", forever, false).await?;
        let names = open("names", forever, false).await?;
        let locks = open("locks", forever, true).await?;
        let groups = open("groups", forever, false).await?;
        let barriers = open("barriers", forever, false).await?;
        let config = open("config", forever, false).await?;
        let topics = open("topics", forever, false).await?;
        let incarnation = next_incarnation(&ids).await?;
        // The same name may not run twice: a previous run killed a moment ago is waited out
        // (its heartbeat ages out of the bucket within node_timeout); a live one is refused.
        let key = membership::node_key(&settings.node);
        let deadline = Instant::now() + settings.node_timeout + settings.heartbeat;
        loop {
            match nodes.entry(key.clone()).await.context("reading the nodes bucket")? {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    if Instant::now() >= deadline {
                        anyhow::bail!(
                            "node name {:?} is in use by a live host of cluster {:?}: give this host another --node",
                            settings.node,
                            settings.name
                        );
                    }
                    tokio::time::sleep(settings.heartbeat.min(Duration::from_millis(250))).await;
                }
                _ => break,
            }
        }
        let cluster = Arc::new(Cluster {
            index: node_index(incarnation),
            incarnation,
            started_ms: now_ms(),
            client,
            js,
            connected,
            nodes,
            placement,
            names,
            locks,
            groups,
            group_table: Default::default(),
            barriers,
            config,
            config_hook: Default::default(),
            topics,
            topic_table: Default::default(),
            barrier_table: Default::default(),
            barrier_changed: Notify::new(),
            router: router.clone(),
            lock_table: Default::default(),
            lock_changed: Notify::new(),
            held_names: Default::default(),
            children: Mutex::new(children),
            members: Default::default(),
            assignments: Default::default(),
            leader: Default::default(),
            leading_since: Default::default(),
            last_heartbeat: Mutex::new(Instant::now()),
            isolated: AtomicBool::new(false),
            changed: Notify::new(),
            admin: Default::default(),
            observer: std::sync::OnceLock::from(observer),
            node_down_hook: Default::default(),
            settings,
        });
        cluster.beat().await.context("announcing this node")?;
        // The buckets as they are now, before any work is placed.
        cluster.follow(&cluster.placement, "placement", Cluster::apply_placement).await?;
        cluster.follow(&cluster.nodes, "nodes", Cluster::apply_node).await?;
        cluster.follow(&cluster.names, "names", Cluster::apply_name).await?;
        cluster.follow(&cluster.locks, "locks", Cluster::apply_lock).await?;
        cluster.follow(&cluster.groups, "groups", Cluster::apply_group).await?;
        cluster.follow(&cluster.barriers, "barriers", Cluster::apply_barrier).await?;
        cluster.follow(&cluster.topics, "topics", Cluster::apply_topic).await?;
        cluster.clone().serve_deliveries(router).await.context("serving this node's agents")?;
        tracing::info!(event = "cluster_joined", cluster = %cluster.settings.name, node = %cluster.settings.node,
            incarnation, index = cluster.index, "joined cluster {} as node {} (incarnation {incarnation})",
            cluster.settings.name, cluster.settings.node);
        tokio::spawn(cluster.clone().heartbeats());
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// The admin endpoint others may reach this node at, announced in its heartbeat.
    pub fn set_admin(&self, address: Option<String>) {
        *self.admin.lock().expect("admin") = address;
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            name: self.settings.node.clone(),
            incarnation: self.incarnation,
            index: self.index,
            started_ms: self.started_ms,
            admin: self.admin.lock().expect("admin").clone(),
        }
    }

    /// Write this node's heartbeat.
    async fn beat(&self) -> anyhow::Result<()> {
        let record = serde_json::to_vec(&self.record())?;
        self.nodes.put(membership::node_key(&self.settings.node), Bytes::from(record)).await?;
        *self.last_heartbeat.lock().expect("heartbeat") = Instant::now();
        Ok(())
    }

    /// Every heartbeat: write ours, mark silent nodes down, hold or seek the leader's lease,
    /// and, leading, assign what needs a node. Cut off for `node_timeout`, stop placed work.
    async fn heartbeats(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.settings.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.beat().await {
                Ok(()) => {
                    if self.isolated.swap(false, Ordering::SeqCst) {
                        tracing::warn!(event = "cluster_reconnected", node = %self.settings.node,
                            "node {} reaches the cluster again", self.settings.node);
                        self.changed.notify_one();
                    }
                }
                Err(error) => {
                    let silent = self.last_heartbeat.lock().expect("heartbeat").elapsed();
                    if silent >= self.settings.node_timeout && !self.isolated.swap(true, Ordering::SeqCst) {
                        tracing::error!(event = "cluster_isolated", node = %self.settings.node, error = %error,
                            "node {} has not reached the cluster for {silent:?}: the others count it down and \
                             restart its work, so it stops its own", self.settings.node);
                        self.changed.notify_one();
                    }
                    continue;
                }
            }
            self.sweep();
            self.lead().await;
        }
    }

    /// Cut off from the server for node_timeout (its placed work stopped).
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    /// Of the manifest's root children, those assigned to this incarnation, in manifest order.
    pub fn placed_here(&self) -> Vec<ChildSpec> {
        if self.is_isolated() {
            return Vec::new();
        }
        let assignments = self.assignments.lock().expect("assignments");
        self.children
            .lock()
            .expect("children")
            .iter()
            .filter(|child| {
                assignments
                    .get(child.spec.name())
                    .is_some_and(|(a, _)| a.node == self.settings.node && a.incarnation == self.incarnation)
            })
            .map(|child| child.spec.clone())
            .collect()
    }

    /// Replace the placed children (a reloaded manifest's).
    pub fn set_children(&self, children: Vec<PlacedChild>) {
        *self.children.lock().expect("children") = children;
        self.changed.notify_one();
    }

    /// Follow every key of `bucket` from its current values on, into `apply` (which must
    /// take the same entry twice calmly: after the server comes back, the bucket is followed
    /// again from its current values). Returns once the current values are in.
    async fn follow(
        self: &Arc<Self>,
        bucket: &kv::Store,
        what: &'static str,
        apply: fn(&Cluster, kv::Entry),
    ) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        let mut watch = bucket.watch_with_history(">").await.with_context(|| format!("watching the {what} bucket"))?;
        // The current values come first, the last marked as such; an empty bucket has none.
        let status = bucket.status().await.with_context(|| format!("reading the {what} bucket"))?;
        if status.values() > 0 {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
                    Ok(Some(Ok(entry))) => {
                        let current = entry.seen_current;
                        apply(self, entry);
                        if current {
                            break;
                        }
                    }
                    Ok(Some(Err(error))) => anyhow::bail!("watching the {what} bucket: {error}"),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let (cluster, bucket) = (self.clone(), bucket.clone());
        tokio::spawn(async move {
            loop {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(entry) => apply(&cluster, entry),
                        Err(error) => {
                            tracing::warn!(event = "cluster_watch_error", bucket = what, %error);
                            break;
                        }
                    }
                }
                // The watch ended (the server went away): follow again once it answers.
                loop {
                    tokio::time::sleep(cluster.settings.heartbeat).await;
                    match bucket.watch_with_history(">").await {
                        Ok(again) => {
                            watch = again;
                            break;
                        }
                        Err(error) => tracing::debug!(event = "cluster_watch_error", bucket = what, %error),
                    }
                }
            }
        });
        Ok(())
    }

    fn apply_placement(&self, entry: kv::Entry) {
        let Some(child) = key_child(&entry.key) else { return };
        let mut assignments = self.assignments.lock().expect("assignments");
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Assignment>(&entry.value) {
                Ok(assignment) => {
                    let moved = assignments.get(&child).is_none_or(|(old, _)| *old != assignment);
                    if moved {
                        tracing::info!(event = "child_placed", child = %child, node = %assignment.node,
                            incarnation = assignment.incarnation,
                            "{child} runs on node {} (incarnation {})", assignment.node, assignment.incarnation);
                    }
                    assignments.insert(child, (assignment, entry.revision));
                    self.changed.notify_one();
                }
                Err(error) => tracing::warn!(event = "cluster_bad_entry", key = %entry.key, %error),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                if assignments.remove(&child).is_some() {
                    self.changed.notify_one();
                }
            }
        }
    }

    /// What the admin API shows: this node, the leader, every member, every assignment.
    pub fn describe(&self) -> serde_json::Value {
        let members = self.members.lock().expect("members");
        let nodes: Vec<serde_json::Value> = members
            .values()
            .map(|m| {
                serde_json::json!({
                    "name": m.record.name,
                    "incarnation": m.record.incarnation,
                    "index": m.record.index,
                    "up": m.up,
                    "admin": m.record.admin,
                    "started_ms": m.record.started_ms,
                    "last_seen_ms": m.last_seen.elapsed().as_millis() as u64,
                })
            })
            .collect();
        let assignments = self.assignments.lock().expect("assignments");
        let placement: Vec<serde_json::Value> = self
            .children
            .lock()
            .expect("children")
            .iter()
            .map(|child| {
                let name = child.spec.name();
                let assigned = assignments.get(name).map(|(a, _)| a);
                let up = assigned.is_some_and(|a| {
                    members.get(&a.node).is_some_and(|m| m.up && m.record.incarnation == a.incarnation)
                });
                serde_json::json!({
                    "child": name,
                    "node": assigned.map(|a| a.node.clone()),
                    "incarnation": assigned.map(|a| a.incarnation),
                    "node_up": up,
                    "here": assigned.is_some_and(|a| a.node == self.settings.node && a.incarnation == self.incarnation),
                })
            })
            .collect();
        serde_json::json!({
            "cluster": self.settings.name,
            "node": self.settings.node,
            "incarnation": self.incarnation,
            "index": self.index,
            "leader": *self.leader.lock().expect("leader"),
            "isolated": self.is_isolated(),
            "nodes": nodes,
            "placement": placement,
        })
    }

    /// Leave: the heartbeat and, if held, the lease are removed, so that the others see this
    /// node down at once rather than after node_timeout.
    pub async fn leave(&self) {
        if self.leading_since.lock().expect("leader").is_some() {
            let _ = self.nodes.delete(leader::LEADER_KEY).await;
        }
        let _ = self.nodes.delete(membership::node_key(&self.settings.node)).await;
        tracing::info!(event = "cluster_left", node = %self.settings.node, "node {} left the cluster", self.settings.node);
    }
}

/// The root's children with where each may run, in manifest order.
pub fn placed_children(manifest: &crate::manifest::Manifest) -> Vec<PlacedChild> {
    manifest
        .root
        .children
        .iter()
        .map(|spec| PlacedChild {
            placement: manifest.placement.get(spec.name()).cloned().unwrap_or_default(),
            restart: spec.restart(),
            spec: spec.clone(),
        })
        .collect()
}

/// Keep the running root supervisor's children those placed on this node: started when
/// assigned here, stopped when moved away or when this node is cut off. Ends with the root.
pub async fn keep_placed(runtime: Arc<crate::runtime::Runtime>, cluster: Arc<Cluster>, root: String) {
    let mut applied: Option<Vec<String>> = None;
    loop {
        let wanted = cluster.placed_here();
        let names: Vec<String> = wanted.iter().map(|c| c.name().to_string()).collect();
        if applied.as_ref() != Some(&names) {
            let Some(operators) = runtime.supervisors.get(&root).map(|o| o.clone()) else { return };
            let (reply, answer) = tokio::sync::oneshot::channel();
            if operators.send(crate::supervision::Operate::Reconcile { children: wanted, reply }).is_err() {
                return;
            }
            match answer.await {
                Ok(done) => {
                    for change in done {
                        tracing::info!(event = "placement_applied", child = %change.child, action = change.action,
                            detail = change.detail.as_deref(), "{}: {}", change.child, change.action);
                    }
                }
                Err(_) => return,
            }
            applied = Some(names);
        }
        cluster.changed.notified().await;
    }
}

/// Why a conditional write did not happen.
#[derive(Debug)]
enum PutError {
    /// Another write to the key came first.
    Conflict,
    Failed(String),
}

/// Write `value` at `key` only if the key's last revision is `revision` (0: it has none), with
/// a per-key TTL (whole seconds, rounded up; the bucket must allow them). The key-value client
/// takes a TTL only on a create, so this publishes to the bucket's stream itself.
async fn put_expecting(
    js: &jetstream::Context,
    store: &kv::Store,
    key: &str,
    value: Bytes,
    revision: u64,
    ttl: Option<Duration>,
) -> Result<u64, PutError> {
    use async_nats::header::{self, HeaderValue};
    let subject = format!("{}{key}", store.put_prefix.as_ref().unwrap_or(&store.prefix));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(revision));
    if let Some(ttl) = ttl {
        let seconds = ttl.as_millis().div_ceil(1000).max(1) as u64;
        headers.insert(header::NATS_MESSAGE_TTL, HeaderValue::from(seconds));
    }
    let ack = js.publish_with_headers(subject, headers, value).await.map_err(|e| PutError::Failed(e.to_string()))?;
    match ack.await {
        Ok(ack) => Ok(ack.sequence),
        Err(error) if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
            Err(PutError::Conflict)
        }
        Err(error) => Err(PutError::Failed(error.to_string())),
    }
}

/// Take the next incarnation from the ids bucket's counter (compare-and-swap: two joins at once
/// get two numbers).
async fn next_incarnation(ids: &kv::Store) -> anyhow::Result<u64> {
    const KEY: &str = "incarnation";
    for _ in 0..100 {
        let entry = ids.entry(KEY).await.context("reading the cluster's incarnation counter")?;
        let (last, revision) = match &entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                std::str::from_utf8(&entry.value).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                entry.revision,
            ),
            Some(entry) => (0, entry.revision),
            None => (0, 0),
        };
        let next = last + 1;
        let value = Bytes::from(next.to_string());
        let written = if revision == 0 {
            ids.create(KEY, value).await.map(|_| ()).map_err(|e| e.to_string())
        } else {
            ids.update(KEY, value, revision).await.map(|_| ()).map_err(|e| e.to_string())
        };
        match written {
            Ok(()) => return Ok(next),
            // Another node joined in between: read again.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    anyhow::bail!("could not take an incarnation number: the counter kept changing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keys_round_trip_and_are_valid_keys() {
        for name in ["echo", "a.b", "x-y_z", ".hidden", "trailing.", "a..b"] {
            let key = child_key(name);
            assert!(!key.contains("..") && !key.ends_with('.'), "{key}");
            assert_eq!(key_child(&key).as_deref(), Some(name));
        }
    }

    #[test]
    fn ids_stay_exact_as_json_numbers() {
        let top = (node_index(u64::MAX) << NODE_SHIFT) | ((1 << NODE_SHIFT) - 1);
        assert!(top < 1 << 53);
        assert_eq!(node_index(1), 1);
        assert_eq!(node_index(NODE_INDICES), NODE_INDICES);
        assert_eq!(node_index(NODE_INDICES + 1), 1);
        assert_eq!(index_of(3 << NODE_SHIFT | 17), 3);
    }
}
