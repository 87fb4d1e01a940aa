//! The runtime: the engines, the loaded modules, and what every agent reaches through its store
//! (router, registry, links, and the composed capabilities). It names no single capability:
//! billing, journaling and telemetry take part through the hooks of the capability list.
//!
//! An agent is a component instance in its own `Store`, owned by one tokio task ([`agent`]);
//! it handles one message at a time. Instances come from a pooling allocator through an
//! `InstancePre`, so a start is "instantiate + init" with no compilation or linking.

pub mod agent;
pub mod batch;
pub mod catalog;
pub mod control;
pub mod directory;
pub mod engine;
pub mod hibernation;
pub mod invoke;
pub mod limits;
pub mod live_set;
pub mod modules;
pub mod output;
pub mod persistence;
pub mod reload;
pub mod state;
pub mod stats;
pub mod upgrade;
pub mod warm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::capabilities::{HostEvent, ServiceSections, Services, Startup};
use crate::manifest::{HostSettings, Limits, Manifest};
use crate::messaging::{AgentId, Router};
use crate::registry::Registry;
use engine::EpochTicker;
use modules::{Module, ModuleError, ModuleLoader};

/// Shared state of one host process.
pub struct Runtime {
    /// One engine per class of component (`engine::Class`).
    pub engines: engine::Engines,
    pub settings: HostSettings,
    pub router: Arc<Router>,
    pub registry: Registry,
    pub links: crate::supervision::links::Links,
    /// The live agents, for the admin API.
    pub directory: directory::Directory,
    /// When this host started, for its uptime.
    pub started: std::time::Instant,
    /// Dynamic supervisors by name, for `supervision.spawn` and friends.
    pub dynamic_supervisors: dashmap::DashMap<String, crate::supervision::Commands>,
    /// Every supervisor by name, for the admin API.
    pub supervisors: dashmap::DashMap<String, crate::supervision::Operators>,
    /// The manifest's `[defaults]`: limits for agents spawned at runtime and isolated jobs.
    pub defaults: Limits,
    pub loader: ModuleLoader,
    /// Every module, by name (components spawned by path: by canonical path), with its versions.
    pub catalog: catalog::Catalog,
    /// The operator's loads in progress, and the last ones done.
    pub loads: catalog::Loads,
    /// The manifest's directory: relative component paths are resolved from here.
    pub base_dir: std::path::PathBuf,
    /// The manifest this host runs, for `agora reload`.
    pub manifest_path: Option<std::path::PathBuf>,
    /// Held by a reload, so that two (SIGHUP and the API) never interleave.
    pub reloading: tokio::sync::Mutex<()>,
    next_serial: AtomicU64,
    pub tally: ExitTally,
    /// What the admin endpoint refused.
    pub admin: crate::admin::AdminCounters,
    /// Stores alive right now (agents, isolated jobs, benchmark baselines): each holds one
    /// instance-pool slot, so this returning to zero means no slot leaked.
    pub live_instances: AtomicUsize,
    /// The agents a full pool may hibernate, least recently used first.
    pub live_set: live_set::LiveSet,
    /// Durable agents' snapshots, opened when the first durable agent starts.
    snapshots: std::sync::OnceLock<Result<persistence::Snapshots, String>>,
    /// Instances kept instantiated ahead, by module (`warm`).
    pub warm: warm::WarmPools,
    /// The most mailbox items per guest entry (`host.max_batch`; 1: each alone). An atomic, so
    /// that the benchmarks can measure one host both ways.
    pub max_batch: std::sync::atomic::AtomicU32,
    /// Every capability's shared state.
    pub services: Services,
    /// This host's cluster membership, once it joined one (`agora run --cluster`).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    _tickers: [EpochTicker; 2],
}

impl Runtime {
    /// Build the engine and services with default service settings, without modules.
    pub fn new(settings: HostSettings) -> anyhow::Result<Runtime> {
        Self::with_services(settings, &ServiceSections::default(), true)
    }

    /// Build the engine and the services of `sections`, without modules. `durable_events =
    /// false` keeps the event store in memory whatever the sections say.
    pub fn with_services(
        settings: HostSettings,
        sections: &ServiceSections,
        durable_events: bool,
    ) -> anyhow::Result<Runtime> {
        let engines = engine::Engines::build(&settings, sections.meters_fuel())?;
        let loader = ModuleLoader::new(&engines, settings.data_dir.join("cache"), settings.max_memory.bytes())?;
        let router = Arc::new(Router::with_mailbox_bytes(
            settings.max_message.bytes() as usize,
            settings.mailbox_bytes.bytes() as usize,
        ));
        let startup = Startup { data_dir: &settings.data_dir, router: &router, durable: durable_events };
        let services = Services::start(sections, &startup)?;
        Ok(Runtime {
            _tickers: [&engines.compact, &engines.interpreter]
                .map(|engine| EpochTicker::start(engine, settings.tick.duration())),
            router,
            services,
            registry: Registry::default(),
            links: Default::default(),
            directory: Default::default(),
            started: std::time::Instant::now(),
            dynamic_supervisors: Default::default(),
            supervisors: Default::default(),
            defaults: Limits::default(),
            catalog: Default::default(),
            loads: Default::default(),
            base_dir: std::path::PathBuf::from("."),
            manifest_path: None,
            reloading: Default::default(),
            next_serial: AtomicU64::new(1),
            tally: ExitTally::default(),
            admin: Default::default(),
            live_instances: AtomicUsize::new(0),
            live_set: Default::default(),
            snapshots: Default::default(),
            warm: Default::default(),
            cluster: Default::default(),
            max_batch: std::sync::atomic::AtomicU32::new(settings.max_batch),
            engines,
            settings,
            loader,
        })
    }

    /// The durable agents' store, `<data_dir>/agents.redb`, opened on first use.
    pub fn snapshots(&self) -> Result<&persistence::Snapshots, String> {
        self.snapshots
            .get_or_init(|| persistence::Snapshots::open(&self.settings.data_dir.join("agents.redb")))
            .as_ref()
            .map_err(|e| format!("the durable agents' store: {e}"))
    }

    /// Build the runtime for a manifest and load (or compile) each of its modules.
    pub fn for_manifest(manifest: &Manifest) -> anyhow::Result<Runtime> {
        Self::load(manifest, true)
    }

    /// As [`Runtime::for_manifest`], but without opening the durable event store (which a
    /// running host of the same manifest holds locked): for `agora check`.
    pub fn for_check(manifest: &Manifest) -> anyhow::Result<Runtime> {
        Self::load(manifest, false)
    }

    fn load(manifest: &Manifest, durable_events: bool) -> anyhow::Result<Runtime> {
        let mut runtime = Runtime::with_services(manifest.host.clone(), &manifest.services, durable_events)?;
        runtime.defaults = manifest.defaults;
        // Canonical once here, so that resolving a spawned path compares without asking again.
        let base = manifest.base_dir();
        runtime.base_dir = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
        runtime.manifest_path = Some(manifest.path.clone());
        let mut warm_slots = [0u64; 2];
        for (name, path) in &manifest.modules {
            let label = manifest.module_versions.get(name).map(String::as_str);
            let module = Arc::new(runtime.loader.load(name, path, label)?);
            let (own, warm) = match manifest.module_warm.get(name) {
                Some(warm) => (true, *warm),
                None => (false, manifest.host.warm),
            };
            if warm > 0 && module.runs_at_instantiation {
                let why = format!(
                    "module {name} runs guest code when it is instantiated (a start function), so it cannot be \
                     kept warm: a warm instance must not have run any before its agent's init"
                );
                if own {
                    anyhow::bail!("{}: `modules.{name}.warm`: {why}", manifest.path.display());
                }
                tracing::warn!(event = "warm_skipped", module = %name, "{why}; `host.warm` skips it");
            } else if warm > 0 {
                warm_slots[usize::from(module.class == engine::Class::Interpreter)] += u64::from(warm);
                runtime.warm.configure(name, warm);
            }
            runtime.catalog.insert_new(module);
        }
        // Warm instances hold pool slots: at most half of each pool, so agents always have room.
        for (class, warm) in [engine::Class::Compact, engine::Class::Interpreter].into_iter().zip(warm_slots) {
            let slots = u64::from(match class {
                engine::Class::Compact => manifest.host.max_agents,
                engine::Class::Interpreter => manifest.host.interpreter_agents,
            });
            if warm > slots / 2 {
                anyhow::bail!(
                    "{}: {warm} warm instances of {} components would hold more than half of the {slots} slots of \
                     their pool ({}): lower `warm`, or raise {}",
                    manifest.path.display(),
                    class.as_str(),
                    class.slots_key(),
                    class.slots_key()
                );
            }
        }
        Ok(runtime)
    }

    /// Load a module under `name` (its first version: for benchmarks and tests).
    pub fn add_module(&mut self, name: &str, path: &std::path::Path) -> Result<Module, ModuleError> {
        let module = Arc::new(self.loader.load(name, path, None)?);
        self.catalog.insert_new(module.clone());
        Ok(module)
    }

    /// The current version of a module, by its manifest name (or the canonical path of a
    /// component spawned by path).
    pub fn module(&self, name: &str) -> Option<Module> {
        self.catalog.current(name)
    }

    /// How many live agents run exactly this version.
    pub fn running_on(&self, module: &Module) -> usize {
        self.directory.list().iter().filter(|listed| Arc::ptr_eq(&listed.module, module)).count()
    }

    /// Load a version of a module for the operator, in the background: compiled (or found in
    /// the cache) off the async threads, then made the current version of `name`. The load's
    /// outcome is read from [`Runtime::loads`].
    pub fn load_module(
        self: &Arc<Self>,
        name: &str,
        path: std::path::PathBuf,
        label: Option<String>,
    ) -> Arc<catalog::Load> {
        let load = self.loads.begin(name, path, label);
        let runtime = self.clone();
        let job = load.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let outcome = match runtime.loader.load(&job.name, &job.path, job.label.as_deref()) {
                Err(error) => catalog::LoadOutcome::Failed { error: error.to_string(), code: "invalid_module" },
                Ok(loaded) => {
                    let module = Arc::new(loaded);
                    let (version, cache) = (module.version.to_string(), module.cache);
                    match runtime.catalog.install(module, |m| runtime.running_on(m)) {
                        Err(error) => catalog::LoadOutcome::Failed { error: error.to_string(), code: "two_versions" },
                        Ok(installed) => {
                            let replaced = match installed {
                                catalog::Installed::Replaced { old } => Some(old.version.to_string()),
                                _ => None,
                            };
                            let millis = started.elapsed().as_secs_f64() * 1e3;
                            catalog::LoadOutcome::Ready { version, cache, replaced, millis }
                        }
                    }
                }
            };
            job.finish(outcome);
        });
        load
    }

    /// Find the module an agent refers to: a name from `[modules]`, or the path of a component
    /// inside one of `host.spawn_paths` (compiled on first use, off the async threads).
    pub async fn resolve_module(self: &Arc<Self>, reference: &str) -> Result<Module, ModuleRefError> {
        if let Some(module) = self.module(reference) {
            return Ok(module);
        }
        // Decided from the reference alone, before the file system is asked: a guest learns
        // nothing about host files outside the spawn paths (not even whether they exist), and
        // no answer shows a host path, only the reference it gave.
        let denied = || ModuleRefError::Denied(reference.to_string());
        // A reference with no `/` that does not end in `.wasm` is a module name, and there is none.
        if !reference.contains('/') && !reference.ends_with(".wasm") {
            return Err(ModuleRefError::NotFound(reference.to_string()));
        }
        let relative = std::path::Path::new(reference);
        let plain =
            relative.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        if !plain || reference.is_empty() {
            return Err(denied());
        }
        let base = &self.base_dir;
        let inside = |path: &std::path::Path| self.settings.spawn_paths.iter().any(|dir| path.starts_with(dir));
        if !inside(&base.join(relative)) {
            return Err(denied());
        }
        let path = base.join(relative).canonicalize().map_err(|_| ModuleRefError::NotFound(reference.to_string()))?;
        if !inside(&path) {
            // A link inside a spawn path that leads out of it.
            return Err(denied());
        }
        let key = path.display().to_string();
        if let Some(module) = self.module(&key) {
            return Ok(module);
        }
        let runtime = self.clone();
        let shown = path.display().to_string();
        let loaded = tokio::task::spawn_blocking(move || runtime.loader.load(&key, &path, None))
            .await
            .map_err(|e| ModuleRefError::Invalid(format!("loading was interrupted: {e}")))?
            .map_err(|e| ModuleRefError::Invalid(e.to_string().replace(&shown, reference)))?;
        Ok(self.catalog.insert_new(Arc::new(loaded)))
    }

    /// Tell the capabilities of a lifecycle event (the event store journals it, telemetry
    /// counts it).
    pub fn observe(&self, event: &HostEvent<'_>) {
        self.services.observe(event)
    }

    /// Call the agent registered as `name` from outside any agent (its message has no sender)
    /// and wait up to `timeout` for the reply: `agora run --call`, and the Rust API.
    pub async fn call(&self, name: &str, payload: Vec<u8>, timeout: std::time::Duration) -> crate::messaging::Reply {
        self.router.check_size(payload.len())?;
        match self.registry.lookup(name) {
            Some(target) => self.router.call(None, target, payload, timeout).await,
            None => {
                let (cluster, target) = self.elsewhere(name).await?;
                cluster.deliver(crate::cluster::remote::Kind::Call, None, target, &payload, timeout).await
            }
        }
    }

    /// Enqueue a message for the agent registered as `name`, from outside any agent.
    pub async fn send(&self, name: &str, payload: Vec<u8>) -> Result<(), crate::bindings::Error> {
        self.router.check_size(payload.len())?;
        match self.registry.lookup(name) {
            Some(target) => self.router.try_deliver(target, crate::messaging::Message::cast(None, payload)),
            None => {
                let (cluster, target) = self.elsewhere(name).await?;
                let send = crate::cluster::remote::Kind::Send;
                cluster.deliver(send, None, target, &payload, std::time::Duration::ZERO).await.map(|_| ())
            }
        }
    }

    /// The agent registered as `name` on another node of this host's cluster.
    async fn elsewhere(&self, name: &str) -> Result<(&Arc<crate::cluster::Cluster>, AgentId), crate::bindings::Error> {
        let cluster = self.cluster.get().ok_or(crate::bindings::Error::NotFound)?;
        let target = cluster.lookup(name).await.ok_or(crate::bindings::Error::NotFound)?;
        Ok((cluster, target))
    }

    /// Join the cluster of `settings`: from now on this host's ids carry its node index, its
    /// events journal what the cluster does, and its wallets are the cluster's.
    pub async fn join_cluster(
        self: &Arc<Self>,
        settings: crate::cluster::ClusterSettings,
        children: Vec<crate::cluster::PlacedChild>,
    ) -> anyhow::Result<Arc<crate::cluster::Cluster>> {
        let weak = Arc::downgrade(self);
        let observer: crate::cluster::Observer = Box::new(move |event| {
            if let Some(runtime) = weak.upgrade() {
                runtime.observe(event);
            }
        });
        let cluster = crate::cluster::Cluster::join(settings, children, self.router.clone(), observer).await?;
        // Ids from here on carry the incarnation's index; none was taken before the join.
        self.next_serial.store((cluster.index << crate::cluster::NODE_SHIFT) | 1, Ordering::Relaxed);
        let _ = self.cluster.set(cluster.clone());
        cluster.serve_signals(self).await?;
        cluster.serve_votes(self).await?;
        cluster.serve_topics(&self.router).await?;
        let weak = Arc::downgrade(self);
        cluster
            .follow_config(Box::new(move |path, value| {
                if let Some(runtime) = weak.upgrade() {
                    runtime.take_config_change(path, value);
                }
            }))
            .await?;
        let journal = crate::cluster::ledger::SharedJournal::open(&cluster).await?;
        anyhow::Context::context(
            self.services.economics.ledger.share(journal).await,
            "following the cluster's ledger",
        )?;
        Ok(cluster)
    }

    /// A change of the cluster's config (another node's, or this one's coming back): applied
    /// unless the value is already the one here.
    fn take_config_change(&self, path: &str, value: Option<String>) {
        let config = &self.services.config;
        if config.get(path).ok() == Some(value.clone()) {
            return;
        }
        if let Err(error) = config.update(path, value) {
            tracing::warn!(event = "cluster_config_refused", path, %error,
                "a config change made on another node does not apply here: {error}");
        }
    }

    /// A fresh agent id; ids are never reused within a process.
    pub fn next_id(&self) -> AgentId {
        self.next_serial.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why a module reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ModuleRefError {
    #[error("no module or component {0:?} in [modules] or under host.spawn_paths")]
    NotFound(String),
    #[error("{0:?} is not a relative path under the manifest's host.spawn_paths")]
    Denied(String),
    #[error("{0}")]
    Invalid(String),
}

/// How agents have ended so far, for the end-of-run summary.
#[derive(Default)]
pub struct ExitTally {
    pub normal: AtomicUsize,
    pub shutdown: AtomicUsize,
    pub killed: AtomicUsize,
    pub crashed: AtomicUsize,
    /// Starts that failed (init refused, a name taken): not exits, so counted apart.
    pub start_failed: AtomicUsize,
    /// Messages still queued when their agent exited, over every exit.
    pub undelivered: AtomicUsize,
}

impl ExitTally {
    pub fn record(&self, reason: &agent::ExitReason, undelivered: usize) {
        self.undelivered.fetch_add(undelivered, Ordering::Relaxed);
        let counter = match reason {
            agent::ExitReason::Normal => &self.normal,
            agent::ExitReason::Shutdown => &self.shutdown,
            agent::ExitReason::Killed => &self.killed,
            agent::ExitReason::Crashed(_) | agent::ExitReason::Custom(_) | agent::ExitReason::GaveUp(_) => {
                &self.crashed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
