//! Warm instances: `warm = N` on a module (or `[host] warm` for every module) keeps N of its
//! instances instantiated ahead, so that a start (a spawn, a restart) is "take one, call
//! `init`" instead of "instantiate, call `init`".
//!
//! Each warm instance is a store of its own, made for no agent: its state is
//! [`AgentState::vacant`] (no identity, nothing granted, no capability state), and no guest
//! code has run in it: a module whose instantiation runs code (a start function) is never kept
//! warm. The agent that takes one puts its own state in the store, as a cold start would have
//! made it, and calls `init` first, so a warm start is exactly as isolated as a cold one: the
//! instance is fresh, and nothing in it was ever seen by another agent.
//!
//! Refills run on a thread of their own (`agora-warmer`, with its own single-threaded tokio
//! runtime), so that instantiating ahead never takes a tokio worker from the message path.
//! Warm instances hold instance-pool slots: a start that finds the pool full drops one warm
//! instance before it hibernates an idle agent, and a refill that finds the pool full stops
//! until the next take.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::mpsc;
use wasmtime::Store;

use super::Runtime;
use super::agent::{self, Booted};
use super::engine::Class;
use super::modules::Module;
use super::state::AgentState;
use crate::manifest::{AgentSpec, Limits};

/// An instance instantiated ahead, in a store no agent has used yet.
pub(super) struct Warm {
    pub(super) store: Store<AgentState>,
    pub(super) booted: Booted,
    /// The version it was instantiated from: a start of another version does not take it.
    module: Module,
}

/// One module's warm instances.
struct Shelf {
    target: usize,
    ready: Mutex<Vec<Warm>>,
    /// A refill is queued or running.
    filling: AtomicBool,
    /// Why the last refill stopped short, logged once until a refill succeeds again.
    reported: AtomicBool,
}

/// Every module's warm instances, by module name.
pub struct WarmPools {
    shelves: DashMap<String, Arc<Shelf>>,
    warmer: OnceLock<mpsc::UnboundedSender<(Arc<Runtime>, String)>>,
    /// What a vacant store runs under: nothing granted, the host's largest memory cap.
    vacant: OnceLock<Arc<AgentSpec>>,
    /// Per class: when (milliseconds after `epoch`, plus one) a start last found the pool full.
    /// Refills of that class stay off for [`YIELD_TO_AGENTS`] after it: agents come first.
    pressed: [AtomicU64; 2],
    /// Per class: instances being instantiated ahead right now.
    in_flight: [AtomicUsize; 2],
    epoch: Instant,
}

/// How long refills of a class stay off after a start found its pool full.
const YIELD_TO_AGENTS: Duration = Duration::from_secs(1);

impl Default for WarmPools {
    fn default() -> Self {
        WarmPools {
            shelves: DashMap::new(),
            warmer: OnceLock::new(),
            vacant: OnceLock::new(),
            pressed: Default::default(),
            in_flight: Default::default(),
            epoch: Instant::now(),
        }
    }
}

fn index(class: Class) -> usize {
    usize::from(class == Class::Interpreter)
}

impl WarmPools {
    /// Keep `count` instances of module `name` warm (0: none). Takes effect at the next
    /// [`WarmPools::fill`] or take.
    pub fn configure(&self, name: &str, count: u32) {
        if count == 0 {
            self.shelves.remove(name);
            return;
        }
        let shelf = Shelf {
            target: count as usize,
            ready: Mutex::default(),
            filling: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        };
        self.shelves.insert(name.to_string(), Arc::new(shelf));
    }

    /// Whether module `name`'s shelf holds its target (false for a module not kept warm).
    pub fn is_full(&self, name: &str) -> bool {
        self.shelf(name).is_some_and(|shelf| lock(&shelf.ready).len() >= shelf.target)
    }

    /// Every module kept warm, by name: its warm instances now and its target.
    pub fn statuses(&self) -> Vec<(String, usize, usize)> {
        let mut all: Vec<_> =
            self.shelves.iter().map(|shelf| (shelf.key().clone(), lock(&shelf.ready).len(), shelf.target)).collect();
        all.sort();
        all
    }

    /// Module `name`'s warm instances now and its target, if it is kept warm.
    pub fn status(&self, name: &str) -> Option<(usize, usize)> {
        self.shelf(name).map(|shelf| (lock(&shelf.ready).len(), shelf.target))
    }

    /// Start filling every configured module's shelf.
    pub fn fill_all(runtime: &Arc<Runtime>) {
        let names: Vec<String> = runtime.warm.shelves.iter().map(|shelf| shelf.key().clone()).collect();
        for name in names {
            Self::refill(runtime, &name);
        }
    }

    /// A warm instance of exactly this version of the module, if one is ready; the shelf is
    /// refilled behind it.
    pub(super) fn take(runtime: &Arc<Runtime>, module: &Module) -> Option<Warm> {
        let shelf = runtime.warm.shelf(&module.name)?;
        let current = runtime.module(&module.name);
        let taken = {
            let mut ready = lock(&shelf.ready);
            // Instances of an earlier version (an operator has loaded a new one since) go.
            ready.retain(|warm| current.as_ref().is_some_and(|current| Arc::ptr_eq(&warm.module, current)));
            // A start of another version than the current one starts cold.
            ready.last().is_some_and(|warm| Arc::ptr_eq(&warm.module, module)).then(|| ready.pop()).flatten()
        };
        Self::refill(runtime, &module.name);
        taken
    }

    /// Drop one warm instance of `class` to free its pool slot for an agent (whose start found
    /// the pool full); false when none is warm. Refills of the class pause meanwhile.
    pub(super) fn shed(&self, class: Class) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.pressed[index(class)].store(now, Ordering::Release);
        for shelf in self.shelves.iter() {
            let mut ready = lock(&shelf.ready);
            if let Some(index) = ready.iter().position(|warm| warm.module.class == class) {
                drop(ready.swap_remove(index));
                return true;
            }
        }
        false
    }

    /// Whether an instance of `class` is being instantiated ahead: it will be dropped rather
    /// than shelved (the pool is under pressure), so a start waiting for a slot may wait for it.
    pub(super) fn instantiating(&self, class: Class) -> bool {
        self.in_flight[index(class)].load(Ordering::Acquire) > 0
    }

    /// Whether a start of `class` found its pool full within [`YIELD_TO_AGENTS`] of now, or
    /// since `since` (milliseconds after the epoch).
    fn pressed_since(&self, class: Class, since: Option<u64>) -> bool {
        let pressed = self.pressed[index(class)].load(Ordering::Acquire);
        if pressed == 0 {
            return false;
        }
        match since {
            Some(since) => pressed >= since,
            None => self.epoch.elapsed() < Duration::from_millis(pressed - 1) + YIELD_TO_AGENTS,
        }
    }

    /// Fill every configured module's shelf now, on this task, and wait until they are full
    /// (or a refill stops short): before the supervision tree starts, so that its first
    /// starts and restarts already find warm instances.
    pub async fn fill_now(runtime: &Arc<Runtime>) {
        let names: Vec<String> = runtime.warm.shelves.iter().map(|shelf| shelf.key().clone()).collect();
        for name in names {
            if let Some(shelf) = runtime.warm.shelf(&name)
                && !shelf.filling.swap(true, Ordering::AcqRel)
            {
                fill(runtime, &name).await;
            }
        }
    }

    /// Drop every warm instance (at shutdown: each store holds the runtime).
    pub fn clear(&self) {
        for shelf in self.shelves.iter() {
            lock(&shelf.ready).clear();
        }
    }

    fn shelf(&self, name: &str) -> Option<Arc<Shelf>> {
        self.shelves.get(name).map(|shelf| shelf.clone())
    }

    /// Queue a refill of `name`'s shelf unless one is queued or running.
    fn refill(runtime: &Arc<Runtime>, name: &str) {
        let Some(shelf) = runtime.warm.shelf(name) else { return };
        if lock(&shelf.ready).len() >= shelf.target || shelf.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let warmer = runtime.warm.warmer.get_or_init(start_warmer);
        if warmer.send((runtime.clone(), name.to_string())).is_err() {
            shelf.filling.store(false, Ordering::Release);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The warmer thread: it instantiates ahead, one shelf at a time, off the tokio workers.
fn start_warmer() -> mpsc::UnboundedSender<(Arc<Runtime>, String)> {
    let (sender, mut jobs) = mpsc::unbounded_channel::<(Arc<Runtime>, String)>();
    let spawned = std::thread::Builder::new().name("agora-warmer".into()).spawn(move || {
        let Ok(warmer) = tokio::runtime::Builder::new_current_thread().enable_time().build() else {
            tracing::error!(event = "warmer_failed", "the warm-instance thread could not start its runtime");
            return;
        };
        warmer.block_on(async move {
            while let Some((runtime, name)) = jobs.recv().await {
                fill(&runtime, &name).await;
            }
        });
    });
    if let Err(error) = spawned {
        tracing::error!(event = "warmer_failed", "the warm-instance thread could not start: {error}");
    }
    sender
}

/// Instantiate `name`'s current version until its shelf holds its target.
async fn fill(runtime: &Arc<Runtime>, name: &str) {
    let Some(shelf) = runtime.warm.shelf(name) else { return };
    loop {
        while lock(&shelf.ready).len() < shelf.target {
            let Some(module) = runtime.module(name) else { break };
            let pools = &runtime.warm;
            let outcome = if pools.pressed_since(module.class, None) {
                Err("the instance pool was full a moment ago: agents come first".to_string())
            } else {
                let began = pools.epoch.elapsed().as_millis() as u64 + 1;
                pools.in_flight[index(module.class)].fetch_add(1, Ordering::AcqRel);
                let made = instantiate(runtime, &module).await;
                // A start that found the pool full meanwhile gets this slot back.
                let made = match made {
                    Ok(_) if pools.pressed_since(module.class, Some(began)) => {
                        Err("the instance pool filled up meanwhile: agents come first".to_string())
                    }
                    made => made,
                };
                pools.in_flight[index(module.class)].fetch_sub(1, Ordering::AcqRel);
                made
            };
            match outcome {
                Ok(warm) => {
                    lock(&shelf.ready).push(warm);
                    shelf.reported.store(false, Ordering::Relaxed);
                }
                Err(why) => {
                    // A full pool (live agents come first) or a broken module: try again at
                    // the next take, and say why once.
                    if !shelf.reported.swap(true, Ordering::Relaxed) {
                        let warm = lock(&shelf.ready).len();
                        tracing::info!(
                            event = "warm_refill_stopped",
                            module = name,
                            warm,
                            target = shelf.target,
                            "module {name}: {warm} of {} instances warm; the refill stopped: {why}",
                            shelf.target
                        );
                    }
                    shelf.filling.store(false, Ordering::Release);
                    return;
                }
            }
        }
        shelf.filling.store(false, Ordering::Release);
        // A take between the last check and the store above found `filling` set and left
        // the refill to this loop: look again.
        if lock(&shelf.ready).len() >= shelf.target || shelf.filling.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

/// One instance of `module`, in a vacant store.
async fn instantiate(runtime: &Arc<Runtime>, module: &Module) -> Result<Warm, String> {
    let spec = runtime
        .warm
        .vacant
        .get_or_init(|| {
            let limits = Limits { memory: runtime.settings.max_memory, ..Limits::default() };
            Arc::new(AgentSpec::new("", "", limits))
        })
        .clone();
    let mut store = agent::new_store(module.pre.engine(), AgentState::vacant(runtime.clone(), spec));
    super::invoke::arm(&mut store).map_err(|gate| gate.fault.to_string())?;
    let instance = module.pre.instance_pre().instantiate_async(&mut store).await.map_err(|e| format!("{e:#}"))?;
    let booted = Booted::load(&mut store, module, instance).map_err(|e| format!("{e:#}"))?;
    Ok(Warm { store, booted, module: module.clone() })
}
