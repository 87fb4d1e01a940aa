//! One agent's life: instantiate, `init`, then one message at a time until it stops, is shut
//! down, or faults. Each agent is one tokio task that owns its store.
//!
//! CPU control: every callback starts with a deadline one epoch tick away. At each tick the
//! epoch callback charges one tick to the callback's budget and yields to tokio (a custom yield,
//! because wasmtime's built-in one would re-poll the same task first), so a looping agent shares
//! the worker threads with everyone else until its budget is spent and it is interrupted.
//!
//! Stopping: a [`StopSignal`] asks for `shutdown` (after the current message, `terminate` runs)
//! or `kill` (running wasm traps at its next tick; a suspended callback is dropped).
//!
//! A trap poisons the instance: the store is dropped, never reused.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use wasmtime::{AsContextMut, Store, Trap, UpdateDeadline, WasmBacktrace};

use super::Runtime;
use super::control::Control;
use super::hibernation::Hibernation;
use super::invoke;
use super::limits::{BudgetExceeded, CpuMeter, MemoryCapExceeded};
use super::modules::Module;
use super::state::AgentState;
use crate::bindings::{Agent, Envelope, Error, HandleError};
use crate::capabilities::hooks::ExitReport;
use crate::capabilities::{AllHooks, Gate, HostEvent};
use crate::manifest::{AgentSpec, Persist, Shutdown};
use crate::messaging::{AgentId, Body, Inbox, Message};
use crate::supervision::links::KillCause;

/// How an agent (or a supervisor) ended.
#[derive(Debug, Clone)]
pub enum ExitReason {
    /// The agent asked to stop (`lifecycle.stop`, `exit(normal)`, WASI `exit(0)`).
    Normal,
    /// The host stopped it (Ctrl-C, SIGTERM, its supervisor), it asked for `exit(shutdown)`, or
    /// a linked agent exited with `shutdown`.
    Shutdown,
    /// Its supervisor killed it (`brutal_kill`, or `terminate` overran the shutdown timeout), or
    /// a linked agent was killed.
    Killed,
    /// The agent exited with a reason of its own (`exit(custom(..))`), or a linked agent did:
    /// abnormal, as any reason but `normal` and `shutdown` is in OTP.
    Custom(Arc<str>),
    Crashed(Fault),
    /// A supervisor reached its restart intensity and stopped its children: OTP's `shutdown`
    /// (its parent's restart type decides what follows), with the restarts that caused it.
    GaveUp(Fault),
}

impl ExitReason {
    /// A stable, machine-readable code: `normal`, `shutdown`, `killed`, the fault kind, or the
    /// agent's own reason.
    pub fn code(&self) -> &str {
        match self {
            ExitReason::Normal => "normal",
            ExitReason::Shutdown | ExitReason::GaveUp(_) => "shutdown",
            ExitReason::Killed => "killed",
            ExitReason::Custom(reason) => reason,
            ExitReason::Crashed(fault) => fault.kind.code(),
        }
    }

    /// OTP's notion: anything but `normal` and `shutdown` is abnormal (a transient child is
    /// restarted after it, a link propagates it).
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal | ExitReason::Shutdown | ExitReason::GaveUp(_))
    }
}

/// Reasons an agent cannot give `exit(custom(..))`: the host's own codes, so that a report never
/// claims a fault that did not happen.
pub fn reserved_reason(reason: &str) -> bool {
    const OWN: [&str; 5] = ["normal", "shutdown", "killed", "noproc", "linked"];
    OWN.contains(&reason) || FaultKind::ALL.iter().any(|kind| kind.code() == reason)
}

/// A crash, with what is known about it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
    /// The wasm backtrace, when the fault was a trap.
    pub backtrace: Option<String>,
    /// The last lines the guest wrote to stderr (a Rust panic message, for example).
    pub output: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Instantiation failed (missing pool capacity, a memory cap below the module's minimum).
    Instantiate,
    /// `init` returned an error.
    InitError,
    MemoryCap,
    CpuBudget,
    Panic,
    StackOverflow,
    /// Any other wasm trap (out-of-bounds access, `unreachable`, ...).
    Trap,
    /// `handle` returned an error marked fatal.
    HandlerFatal,
    /// A supervisor exceeded its restart intensity and gave up.
    RestartIntensity,
    /// A restart could not start (its name was taken meanwhile, say).
    StartFailed,
    /// A linked agent exited abnormally, and this one did not trap exits.
    Linked,
    /// A bug in the host panicked while serving this agent; the host caught it and carried on.
    HostPanic,
    /// Its wallet could not pay for the compute a callback needed (or for its start).
    Unpaid,
    /// The guest called WASI `exit` with a non-zero status.
    ExitStatus,
    /// A durable agent's state could not be written (its snapshot trapped or refused, or the
    /// disk failed): it is restarted from what was last written.
    PersistFailed,
}

impl FaultKind {
    pub const ALL: [FaultKind; 15] = [
        FaultKind::Instantiate,
        FaultKind::InitError,
        FaultKind::MemoryCap,
        FaultKind::CpuBudget,
        FaultKind::Panic,
        FaultKind::StackOverflow,
        FaultKind::Trap,
        FaultKind::HandlerFatal,
        FaultKind::RestartIntensity,
        FaultKind::Linked,
        FaultKind::HostPanic,
        FaultKind::Unpaid,
        FaultKind::ExitStatus,
        FaultKind::StartFailed,
        FaultKind::PersistFailed,
    ];

    pub fn code(self) -> &'static str {
        match self {
            FaultKind::Instantiate => "instantiate_failed",
            FaultKind::InitError => "init_failed",
            FaultKind::MemoryCap => "memory_cap",
            FaultKind::CpuBudget => "cpu_budget",
            FaultKind::Panic => "panic",
            FaultKind::StackOverflow => "stack_overflow",
            FaultKind::Trap => "trap",
            FaultKind::HandlerFatal => "handler_fatal",
            FaultKind::RestartIntensity => "max_restart_intensity",
            FaultKind::Linked => "linked",
            FaultKind::HostPanic => "host_panic",
            FaultKind::Unpaid => "unpaid",
            FaultKind::ExitStatus => "exit_status",
            FaultKind::StartFailed => "start_failed",
            FaultKind::PersistFailed => "persist_failed",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

impl Fault {
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Fault {
        Fault { kind, detail: detail.into(), backtrace: None, output: None }
    }

    /// Classify a wasmtime error from a guest call.
    pub(crate) fn from_error(error: &wasmtime::Error, state: &AgentState, during: &str) -> Fault {
        let output = Some(state.stderr.tail()).filter(|s| !s.is_empty());
        let (kind, detail) = if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
            (FaultKind::MemoryCap, cap.to_string())
        } else if let Some(budget) = error.downcast_ref::<BudgetExceeded>() {
            (FaultKind::CpuBudget, budget.to_string())
        } else if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            (FaultKind::ExitStatus, format!("the guest called exit({})", exit.0))
        } else if let Some(trap) = error.downcast_ref::<Trap>() {
            let panicked = output.as_deref().is_some_and(|o| o.contains("panicked at"));
            let kind = match trap {
                Trap::StackOverflow => FaultKind::StackOverflow,
                Trap::OutOfFuel => FaultKind::Unpaid,
                Trap::UnreachableCodeReached if panicked => FaultKind::Panic,
                _ => FaultKind::Trap,
            };
            match output.as_deref().and_then(rust_panic).filter(|_| kind == FaultKind::Panic) {
                Some((at, message)) => (kind, format!("{message} (panicked at {at})")),
                None => (kind, trap.to_string()),
            }
        } else {
            (FaultKind::Trap, format!("{error:#}"))
        };
        Fault {
            kind,
            detail: format!("{detail} (in {during})"),
            backtrace: error.downcast_ref::<WasmBacktrace>().map(|bt| bt.to_string()),
            output,
        }
    }
}

/// The location and message of the last Rust panic in a guest's stderr, which the standard
/// library writes as `thread '<name>' (<id>) panicked at <file>:<line>:<column>:` and then the
/// message, up to its `note: run with RUST_BACKTRACE` line.
fn rust_panic(output: &str) -> Option<(&str, String)> {
    let (_, after) = output.rsplit_once(" panicked at ")?;
    let (at, message) = after.split_once('\n').unwrap_or((after, ""));
    let message: Vec<&str> = message.lines().take_while(|line| !line.starts_with("note: run with")).collect();
    let message = message.join(" ");
    Some((at.trim_end_matches(':'), if message.is_empty() { "a panic without a message".into() } else { message }))
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("agent {agent:?}: the name is already registered by another agent")]
    NameTaken { agent: String },
    #[error("agent {agent:?} failed to start: {fault}")]
    Failed { agent: String, fault: Fault },
}

/// Sent to the agent's supervisor when a started agent ends.
#[derive(Debug)]
pub struct Exit {
    pub id: AgentId,
    pub name: Arc<str>,
    pub reason: ExitReason,
}

/// How an agent (or a supervisor) is asked to end: `shutdown` (finish the current message, then
/// `terminate`) or `kill` (at once). Checked with one atomic load per message; only an idle
/// agent, or one whose callback is suspended, waits on the notification.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

/// Only the agent's own task ever waits on the signal, so one registered waker suffices
/// (registering it is a compare-and-swap, where a `Notify` would take a lock per wait).
#[derive(Default)]
struct StopInner {
    level: std::sync::atomic::AtomicU8,
    waiter: futures_util::task::AtomicWaker,
    /// Set while `controls` holds a request: the agent loop tests it between messages.
    pending: std::sync::atomic::AtomicBool,
    controls: std::sync::Mutex<Controls>,
}

/// Requests waiting for the agent's task; once it has ended (`closed`), a request is dropped
/// at once, so that its asker learns it will never be carried out.
#[derive(Default)]
struct Controls {
    queue: Vec<super::control::Control>,
    closed: bool,
}

/// Stop levels (0 = running).
const SHUTDOWN: u8 = 1;
const KILL: u8 = 2;

impl StopSignal {
    pub fn shutdown(&self) {
        self.raise(SHUTDOWN);
    }

    pub fn kill(&self) {
        self.raise(KILL);
    }

    fn raise(&self, level: u8) {
        self.inner.level.fetch_max(level, std::sync::atomic::Ordering::SeqCst);
        self.inner.waiter.wake();
    }

    fn level(&self) -> u8 {
        self.inner.level.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn is_killed(&self) -> bool {
        self.level() == KILL
    }

    /// Ask the agent's task for something it does between two messages (an upgrade); it is
    /// woken if idle. A stopped agent never takes it: the request's reply channel is dropped.
    pub fn control(&self, control: super::control::Control) {
        let mut controls = self.inner.controls.lock().unwrap_or_else(|p| p.into_inner());
        if controls.closed {
            drop(controls);
            drop(control);
            return;
        }
        controls.queue.push(control);
        drop(controls);
        self.inner.pending.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.waiter.wake();
    }

    /// A shutdown (or a kill) has been asked for.
    pub(super) fn shutdown_asked(&self) -> bool {
        self.level() >= SHUTDOWN
    }

    pub(super) fn control_pending(&self) -> bool {
        self.inner.pending.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Nothing asked of the agent's task: no stop, no kill, no control. A batch goes on only
    /// while this holds.
    pub(super) fn undisturbed(&self) -> bool {
        self.level() == 0 && !self.control_pending()
    }

    pub(super) fn take_controls(&self) -> Vec<super::control::Control> {
        self.inner.pending.store(false, std::sync::atomic::Ordering::SeqCst);
        std::mem::take(&mut self.inner.controls.lock().unwrap_or_else(|p| p.into_inner()).queue)
    }

    /// The agent's task has ended: drop what waits, and whatever comes later.
    fn close_controls(&self) {
        let mut controls = self.inner.controls.lock().unwrap_or_else(|p| p.into_inner());
        controls.closed = true;
        let dropped = std::mem::take(&mut controls.queue);
        drop(controls);
        drop(dropped);
    }

    /// Resolves once a shutdown (or kill) is asked for, or a control request is pending.
    pub(super) async fn attention(&self) {
        std::future::poll_fn(|context| {
            let ready = || self.level() >= SHUTDOWN || self.inner.pending.load(std::sync::atomic::Ordering::SeqCst);
            if ready() {
                return std::task::Poll::Ready(());
            }
            self.inner.waiter.register(context.waker());
            if ready() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
        })
        .await
    }

    /// Resolves once the level is at least `level`. For the agent's own task only.
    async fn reached(&self, level: u8) {
        std::future::poll_fn(|context| {
            if self.level() >= level {
                return std::task::Poll::Ready(());
            }
            self.inner.waiter.register(context.waker());
            // Raised between the check and the registration: do not miss it.
            if self.level() >= level { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
        })
        .await
    }

    pub async fn killed(&self) {
        self.reached(KILL).await
    }

    /// Resolves once a shutdown (or a kill) has been asked for.
    pub async fn shutdown_requested(&self) {
        self.reached(SHUTDOWN).await
    }

    /// Apply a supervisor's shutdown policy to the task this signal belongs to, and wait until
    /// the task has ended: ask for `terminate`, and kill once the timeout has passed.
    pub async fn apply<F: Future + Unpin>(&self, policy: Shutdown, mut task: Option<F>) {
        match policy {
            Shutdown::BrutalKill => self.kill(),
            Shutdown::Infinity => self.shutdown(),
            Shutdown::Timeout(limit) => {
                self.shutdown();
                if let Some(running) = task.as_mut()
                    && tokio::time::timeout(limit, running).await.is_ok()
                {
                    return;
                }
                self.kill();
            }
        }
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A running agent, as its supervisor holds it.
pub struct RunningAgent {
    pub id: AgentId,
    pub name: Arc<str>,
    stop: StopSignal,
    /// Resolves once the agent is gone, whichever task it last ran on (a hibernated agent has
    /// none); None when it asked to stop during `init` and was finished before `start` returned.
    gone: Option<oneshot::Receiver<()>>,
    /// It stopped during `init` (OTP's `ignore`): its supervisor keeps the child, not running,
    /// and gets no exit for it.
    pub ignored: bool,
}

impl RunningAgent {
    /// Stop the agent as its supervisor does, and wait until it is gone (its exit has then
    /// been sent): `terminate("shutdown")` within the timeout, else killed.
    pub async fn stop(self, policy: Shutdown) {
        self.stop.apply(policy, self.gone).await
    }

    /// Ask for a graceful stop without waiting.
    pub fn request_shutdown(&self) {
        self.stop.shutdown();
    }
}

/// Start an agent: instantiate it and run its `init` on the caller's task (so that a start
/// costs no cross-thread hand-off), then hand the instance to a task of its own. Exits after a
/// successful start are sent to `exits`; a failed start is returned instead.
/// Whether the agent's memory cap holds its module's memory at start: checked by `agora check`
/// as by each start.
pub fn fits(module: &Module, spec: &AgentSpec) -> Result<(), String> {
    if module.initial_memory <= spec.limits.memory.bytes() {
        return Ok(());
    }
    let readable = crate::manifest::units::readable;
    Err(format!(
        "its module {:?} needs {} of memory at start, above its memory cap of {} (raise `memory`)",
        module.name,
        readable(module.initial_memory),
        readable(spec.limits.memory.bytes()),
    ))
}

/// Whether a durable entry's module can carry its state: checked by `agora check`, by each
/// start, and before an upgrade.
pub fn durable_fits(module: &Module, spec: &AgentSpec) -> Result<(), String> {
    if spec.durable.is_none() || module.state.is_some() {
        return Ok(());
    }
    Err(format!(
        "it is durable, but its module {:?} does not export the state interface (`agora:agent/state`) to \
         take and restore its state through",
        module.name
    ))
}

/// `restarts` counts the earlier incarnations, for the lifecycle events.
pub async fn start(
    runtime: &Arc<Runtime>,
    spec: &Arc<AgentSpec>,
    module: &Module,
    exits: mpsc::UnboundedSender<Exit>,
    restarts: u32,
) -> Result<RunningAgent, StartError> {
    start_under(runtime, spec, module, exits, restarts, &Arc::from("")).await
}

/// [`start`], by the supervisor `supervisor`, named in the directory.
pub async fn start_under(
    runtime: &Arc<Runtime>,
    spec: &Arc<AgentSpec>,
    module: &Module,
    exits: mpsc::UnboundedSender<Exit>,
    restarts: u32,
    supervisor: &Arc<str>,
) -> Result<RunningAgent, StartError> {
    let started = Instant::now();
    if let Err(needs) = fits(module, spec) {
        return Err(StartError::Failed { agent: spec.name.clone(), fault: Fault::new(FaultKind::MemoryCap, needs) });
    }
    if let Err(why) = durable_fits(module, spec) {
        return Err(StartError::Failed { agent: spec.name.clone(), fault: Fault::new(FaultKind::Instantiate, why) });
    }
    AllHooks::admit(runtime, spec).await.map_err(|reason| StartError::Failed {
        agent: spec.name.clone(),
        fault: Fault::new(FaultKind::Instantiate, reason),
    })?;
    let id = runtime.next_id();
    let name: Arc<str> = spec.name.as_str().into();
    // The mailbox first: whoever finds the name can reach it (found a moment earlier, the id
    // had no mailbox and a send failed with `not-found`).
    let mut inbox = runtime.router.open(id, spec.limits.mailbox);
    if runtime.registry.enter(id, &name, &spec.capabilities).is_err() {
        runtime.router.close(id, &[], &mut inbox);
        return Err(StartError::NameTaken { agent: spec.name.clone() });
    }
    // In a cluster, the name is the whole cluster's.
    if let Some(cluster) = runtime.cluster.get()
        && let Err(error) = cluster.claim(&name, id).await
    {
        runtime.registry.leave(id);
        runtime.router.close(id, &[], &mut inbox);
        return Err(match error {
            crate::bindings::Error::AlreadyExists => StartError::NameTaken { agent: spec.name.clone() },
            other => StartError::Failed {
                agent: spec.name.clone(),
                fault: Fault::new(FaultKind::StartFailed, format!("claiming its name in the cluster: {other:?}")),
            },
        });
    }
    let mut state = AgentState::new(runtime.clone(), id, name.clone(), spec.clone(), None);
    state.restarts = restarts;
    let stop = state.stop.clone();
    runtime.directory.enter(super::directory::Listed {
        id,
        name: name.clone(),
        module: module.clone(),
        restarts,
        supervisor: supervisor.clone(),
        started: Instant::now(),
        stats: state.stats.clone(),
        stop: stop.clone(),
    });
    let kill_cause = KillCause::default();
    runtime.links.enter(id, stop.clone(), kill_cause.clone());
    let meter = state.budget.meter.clone();
    let tick = runtime.settings.tick.duration();
    // A warm instance of this version, if one is ready: its store gets this agent's state,
    // as a cold start would have made it, in place of the vacant one it was instantiated with.
    let (store, warm_instance) = match super::warm::WarmPools::take(runtime, module) {
        Some(warm) => {
            let mut store = warm.store;
            let vacant = std::mem::replace(store.data_mut(), state);
            store.data_mut().memory.continue_from(&vacant.memory);
            (store, Some(warm.booted))
        }
        None => (new_store(module.pre.engine(), state), None),
    };
    let (ended, gone) = oneshot::channel();
    let mut instance = Instance {
        store,
        inbox: Some(inbox),
        stop: stop.clone(),
        kill_cause,
        meter,
        tick,
        module: module.clone(),
        unpersisted: false,
        held_answer: None,
        ended,
    };
    let warm = warm_instance.is_some();
    match instance.boot(module, &spec.config, warm_instance).await {
        Ok(booted) => {
            let took = started.elapsed();
            let exiting = instance.store.data_mut().exit_requested.take();
            if exiting.is_none() {
                // Idle from here, before anyone hears it started (its task may not have run
                // yet): a full pool may ask it to hibernate.
                instance.store.data().stats.idle();
                instance.enter_live_set();
            }
            runtime.observe(&HostEvent::AgentStarted { agent: &name, id, module: &module.name, took, restarts, warm });
            // An agent that exits in `init` is finished here, so that its registry entries are
            // gone before the next sibling starts.
            match exiting {
                None => {
                    tokio::spawn(instance.live(booted, exits, None));
                    Ok(RunningAgent { id, name, stop, gone: Some(gone), ignored: false })
                }
                Some(ExitReason::Normal) => {
                    let reason = instance.terminate(&booted, ExitReason::Normal).await;
                    instance.finish(reason, None);
                    Ok(RunningAgent { id, name, stop, gone: None, ignored: true })
                }
                Some(reason) => {
                    // OTP's `{stop, Reason}` from `init`: the start fails.
                    let detail = format!("init asked to exit with reason {:?}", reason.code());
                    let fault = Fault::new(FaultKind::InitError, detail);
                    instance.cleanup(&ExitReason::Crashed(fault.clone()));
                    Err(StartError::Failed { agent: spec.name.clone(), fault })
                }
            }
        }
        Err(_) if instance.store.data().exited_cleanly => {
            // WASI `exit(0)` in `init`: ignored, as `stop` is (the instance cannot run `terminate`).
            let took = started.elapsed();
            runtime.observe(&HostEvent::AgentStarted { agent: &name, id, module: &module.name, took, restarts, warm });
            instance.finish(ExitReason::Normal, None);
            Ok(RunningAgent { id, name, stop, gone: None, ignored: true })
        }
        Err(fault) => {
            instance.cleanup(&ExitReason::Crashed(fault.clone()));
            Err(StartError::Failed { agent: spec.name.clone(), fault })
        }
    }
}

/// `inbox`: `None` while it is lent to a batch.
pub(super) fn record_handle(state: &AgentState, took: std::time::Duration, inbox: Option<&Inbox>) {
    state.stats.handled(took, || inbox.map_or(0, Inbox::len), state.memory.peak(), state.budget.ticks);
}

/// A message as the guest gets it; a caller's reply channel is now the agent's to answer.
pub(super) fn prepare(state: &mut AgentState, message: Message) -> Delivery {
    let payload = match message.body {
        Body::Bytes(payload) => payload,
        Body::Notice(notice) => return Delivery::Notice(notice),
    };
    let correlation = message.reply.map(|reply| state.capabilities.messaging.expect_reply(reply));
    Delivery::Envelope(Envelope {
        sender: message.sender,
        correlation,
        topic: message.topic.map(|t| t.to_string()),
        payload,
    })
}

/// A reply owed to a caller: its correlation, and the reply or the error instead.
pub(super) type Answer = (u64, Result<Vec<u8>, Error>);

/// What a handled message's outcome owes its caller (`correlation`, when it has one): the
/// reply (or, too large for any mailbox, the error instead), or the refusal. A fatal error
/// ends the agent.
pub(super) fn answer_of(
    state: &AgentState,
    correlation: Option<u64>,
    outcome: Result<Option<Vec<u8>>, HandleError>,
) -> Result<Option<Answer>, Fault> {
    Ok(match outcome {
        Ok(reply) => correlation
            .zip(reply)
            .map(|(correlation, reply)| (correlation, state.runtime.router.check_size(reply.len()).map(|()| reply))),
        Err(HandleError { fatal: false, message }) => {
            correlation.map(|correlation| (correlation, Err(Error::Failed(message))))
        }
        Err(HandleError { fatal: true, message }) => return Err(Fault::new(FaultKind::HandlerFatal, message)),
    })
}

/// A handled notice's outcome: only a fatal error matters (it ends the agent).
pub(super) fn notice_outcome(outcome: Result<Option<Vec<u8>>, HandleError>) -> Result<(), Fault> {
    match outcome {
        Ok(_) | Err(HandleError { fatal: false, .. }) => Ok(()),
        Err(HandleError { fatal: true, message }) => Err(Fault::new(FaultKind::HandlerFatal, message)),
    }
}

/// The trap raised in a store whose agent is being killed.
#[derive(Debug)]
struct Killed;

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("killed by its supervisor")
    }
}

impl std::error::Error for Killed {}

/// A store with the agent's memory cap and CPU-budget callback installed.
/// `engine`: the one its module was compiled for (`module.pre.engine()`).
pub fn new_store(engine: &wasmtime::Engine, state: AgentState) -> Store<AgentState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    AllHooks::setup(&mut store);
    store.epoch_deadline_callback(|mut context| {
        if context.data().stop.is_killed() {
            return Err(wasmtime::Error::new(Killed));
        }
        let tick = context.data().runtime.settings.tick.duration();
        let budget = &mut context.data_mut().budget;
        budget.ticks += 1;
        let used = budget.meter.ticked(tick);
        if used > budget.allowed {
            return Err(wasmtime::Error::new(BudgetExceeded { allowed: budget.allowed, used }));
        }
        let meter = budget.meter.clone();
        AllHooks::tick(context.as_context_mut());
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                meter.resumed();
            }),
        ))
    });
    store
}

pub(super) struct Instance {
    pub(super) store: Store<AgentState>,
    /// The agent's mailbox; lent to the store while a batch runs ([`Instance::inbox`] gets it
    /// back after one that was cut short).
    pub(super) inbox: Option<Inbox>,
    /// A kill ends even a callback in progress: the epoch callback traps running wasm, and a
    /// suspended call is dropped (safe: the store is never entered again, only its data read).
    pub(super) stop: StopSignal,
    /// Set when the kill comes from a linked agent's exit.
    pub(super) kill_cause: KillCause,
    /// The store's CPU meter, outside the store so that a callback's polls can mark it.
    pub(super) meter: Arc<CpuMeter>,
    pub(super) tick: std::time::Duration,
    /// The module version the store's instance runs.
    pub(super) module: Module,
    /// A durable agent (`persist = "idle"`) has handled a message since its state was written.
    pub(super) unpersisted: bool,
    /// The reply of the message just handled, held until the state it made is on disk
    /// (`persist = "every-message"`).
    pub(super) held_answer: Option<Answer>,
    /// Dropped with the instance, last (so after its store): the agent is gone.
    pub(super) ended: oneshot::Sender<()>,
}

/// How the serve loop ended: the agent exited, or it hibernated (its instance gone, the state
/// it took kept here unless a durable agent's is on disk) and its task can end.
pub(super) enum Served {
    Ended(ExitReason),
    Asleep(Option<Vec<u8>>),
}

/// A booted instance: the `agent` world's exports, and the instance for the optional ones.
pub(super) struct Booted {
    pub(super) agent: Agent,
    pub(super) instance: wasmtime::component::Instance,
    /// `handle-batch`, when the module exports it.
    pub(super) batch: Option<super::batch::HandleBatch>,
}

impl Booted {
    /// The exports of `instance`, just instantiated from `module` in `store`.
    pub(super) fn load(
        store: &mut Store<AgentState>,
        module: &Module,
        instance: wasmtime::component::Instance,
    ) -> wasmtime::Result<Booted> {
        let agent = module.indices.load(&mut *store, &instance)?;
        let batch = match module.batch {
            Some(index) => Some(instance.get_typed_func(&mut *store, index).map_err(|e| {
                e.context("its `handle-batch` export does not have the agent world's type (func(first: item))")
            })?),
            None => None,
        };
        Ok(Booted { agent, instance, batch })
    }
}

impl Instance {
    /// The agent task: serve (`first`, the message that woke it, before any other), then clean
    /// up and report; or, when it hibernates, end the task and leave the agent asleep.
    pub(super) async fn live(mut self, mut booted: Booted, exits: mpsc::UnboundedSender<Exit>, first: Option<Message>) {
        // A panic in host code must not leave a registered agent without a task: catch it,
        // then clean up and report like any crash, so the supervisor can restart the agent.
        let reason = match AssertUnwindSafe(self.serve(&mut booted, first)).catch_unwind().await {
            Ok(Served::Ended(reason)) => reason,
            Ok(Served::Asleep(snapshot)) => {
                // `booted` named the instance that is gone; the wake makes a new one.
                super::hibernation::Asleep::park(self, snapshot, exits);
                return;
            }
            Err(panic) => ExitReason::Crashed(Fault::new(FaultKind::HostPanic, panic_message(&*panic))),
        };
        self.finish(reason, Some(&exits));
    }

    /// Clean up, report the exit, tell the supervisor (unless it was ignored in `init`).
    pub(super) fn finish(&mut self, reason: ExitReason, exits: Option<&mpsc::UnboundedSender<Exit>>) {
        let undelivered = self.cleanup(&reason);
        let state = self.store.data();
        state.runtime.tally.record(&reason, undelivered);
        let report = ExitReport {
            agent: &state.name,
            id: state.id,
            restarts: state.restarts,
            undelivered,
            handled: state.stats.messages_in.get(),
            batched: state.stats.batched.get(),
            peak_memory: state.memory.peak(),
            reason: &reason,
        };
        state.runtime.observe(&HostEvent::AgentExited(&report));
        if let Some(exits) = exits {
            let _ = exits.send(Exit { id: state.id, name: state.name.clone(), reason });
        }
    }

    /// `warm`: the instance, when a warm one was taken; else one is instantiated here.
    async fn boot(
        &mut self,
        module: &Module,
        config: &[(String, String)],
        warm: Option<Booted>,
    ) -> Result<Booted, Fault> {
        // A durable agent with a state on disk comes back with it: `restore` instead of `init`.
        let persisted = match self.store.data().spec.durable {
            Some(_) => self.persisted()?,
            None => None,
        };
        let booted = match warm {
            Some(booted) => booted,
            None => self.instantiate(module).await?,
        };
        if let Some(snapshot) = persisted {
            let bytes = snapshot.state.len();
            self.restore(&booted, module.state, config, &snapshot.state, &snapshot.version).await.map_err(
                |(_, reason)| Fault::new(FaultKind::InitError, format!("restoring its persisted state: {reason}")),
            )?;
            let state = self.store.data();
            state.stats.initialized(state.memory.peak());
            tracing::info!(event = "agent_restored", agent = %state.name, id = state.id, from = %snapshot.version,
                state_bytes = bytes, "agent {} came back with its persisted state ({bytes} bytes, written by {})",
                state.name, snapshot.version);
            return Ok(booted);
        }
        invoke::arm(&mut self.store).map_err(|gate| gate.fault)?;
        let initialized =
            invoke::metered(&self.meter, self.tick, booted.agent.call_init(&mut self.store, config)).await;
        match invoke::finish(&mut self.store, initialized, "init")? {
            Ok(()) => {
                let state = self.store.data();
                state.stats.initialized(state.memory.peak());
                Ok(booted)
            }
            Err(message) => {
                // A guest that fails init over a denied call says only `denied`: name the fix.
                let message = match self.store.data().stats.denied_grants() {
                    Some(grants) => format!("{message} (denied during init; the manifest must grant {grants})"),
                    None => message,
                };
                Err(Fault::new(FaultKind::InitError, message))
            }
        }
    }

    /// The durable agent's last persisted snapshot, if it has one.
    pub(super) fn persisted(&self) -> Result<Option<super::persistence::Snapshot>, Fault> {
        let state = self.store.data();
        let fault = |e: String| Fault::new(FaultKind::PersistFailed, e);
        state.runtime.snapshots().map_err(|e| fault(e.to_string()))?.load(&state.name).map_err(fault)
    }

    /// Instantiate `module` in the store, without calling anything in it yet. A full pool first
    /// hibernates the least recently used idle agent that can hibernate ([`super::live_set`]).
    pub(super) async fn instantiate(&mut self, module: &Module) -> Result<Booted, Fault> {
        loop {
            // Waiting here would hold up the supervisor that starts it: an agent held by a gate
            // (a wallet that cannot pay) fails to start, and its supervisor's restart policy decides.
            invoke::arm(&mut self.store).map_err(|gate| gate.fault)?;
            let instantiated = async {
                let instance = module.pre.instance_pre().instantiate_async(&mut self.store).await?;
                Booted::load(&mut self.store, module, instance)
            };
            let error = match invoke::metered(&self.meter, self.tick, instantiated).await {
                Ok(booted) => return Ok(booted),
                Err(error) => error,
            };
            let fault = Fault::from_error(&error, self.store.data(), "instantiate");
            if fault.kind == FaultKind::MemoryCap {
                return Err(fault);
            }
            if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_none() {
                return Err(Fault { kind: FaultKind::Instantiate, ..fault });
            }
            let (runtime, id) = (self.store.data().runtime.clone(), self.store.data().id);
            // Warm instances give up their slots before any agent hibernates for one (and one
            // being instantiated ahead right now is dropped for it: wait for that).
            if runtime.warm.shed(module.class) {
                continue;
            }
            if runtime.warm.instantiating(module.class) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            if runtime.live_set.make_room(module.class, id).await {
                continue;
            }
            let (class, key) = (module.class.as_str(), module.class.slots_key());
            let detail = format!(
                "{}; the pool of {class} components is full and no idle agent can hibernate to make room \
                 (raise {key}, or let idle agents hibernate: the state interface, or `stateless = true`)",
                fault.detail
            );
            return Err(Fault { kind: FaultKind::Instantiate, detail, ..fault });
        }
    }

    /// Whether this agent can hibernate: its module carries its state, or it has none to carry.
    pub(super) fn can_hibernate(&self) -> bool {
        self.module.state.is_some() || self.store.data().spec.stateless
    }

    /// The agent has an instance: if it can hibernate, a full pool may ask it to.
    pub(super) fn enter_live_set(&self) {
        if self.can_hibernate() {
            let state = self.store.data();
            state.runtime.live_set.enter(self.module.class, state.id, &state.stats, &self.stop);
        }
    }

    pub(super) fn leave_live_set(&self) {
        let state = self.store.data();
        state.runtime.live_set.leave(self.module.class, state.id);
    }

    /// The agent's mailbox, taken back from the store if a batch that borrowed it was cut short
    /// (a kill drops the call mid-batch; a panic in host code unwinds through it).
    pub(super) fn inbox(&mut self) -> &mut Inbox {
        if self.inbox.is_none() {
            self.inbox = self.store.data_mut().batch.inbox.take();
        }
        self.inbox.as_mut().expect("an agent's mailbox is its instance's or its batch's")
    }

    /// Handle messages until the agent stops, faults or is shut down.
    async fn serve(&mut self, booted: &mut Booted, first: Option<Message>) -> Served {
        let stop = self.stop.clone();
        // Looked up once per task, so that the message path pays a local test for it.
        let injecting = crate::infra::faults::aimed_at("agent-task", &self.store.data().name);
        let candidate = self.can_hibernate();
        // A durable agent's state is written between two messages, which a batch has none of;
        // an injected fault must fire at its own message.
        // (`host.max_batch` is read per message, where a batch may start: a reload applies to
        // running agents too.)
        let batching = self.store.data().spec.durable.is_none() && !injecting;
        let mut used = false;
        // The message that woke the agent from hibernation, handled before any other.
        let mut woken: Option<Message> = first;
        loop {
            match stop.level() {
                KILL => return Served::Ended(self.killed()),
                SHUTDOWN => return Served::Ended(Box::pin(self.terminate(booted, ExitReason::Shutdown)).await),
                _ => {}
            }
            if woken.is_none() && stop.control_pending() {
                let mut hibernate = None;
                for control in stop.take_controls() {
                    match control {
                        // Last, after the others: it sleeps until a message comes.
                        Control::Hibernate { reply } => hibernate = Some(reply),
                        control => {
                            if let Some(reason) = Box::pin(self.control(booted, control)).await {
                                return Served::Ended(reason);
                            }
                        }
                    }
                }
                if let Some(reply) = hibernate {
                    match Box::pin(self.hibernate_for_room(booted, reply)).await {
                        Hibernation::Stayed => {}
                        Hibernation::Asleep(snapshot) => return Served::Asleep(snapshot),
                        Hibernation::Ended(reason) => return Served::Ended(reason),
                    }
                }
                continue;
            }
            // `left`: how many wait behind it; a batch is only worth its one extra host call
            // (the `next` that finds nothing) when some do.
            let (message, left) = match woken.take().map_or_else(|| self.inbox().try_recv_counted(), |m| Ok((m, 0))) {
                Ok(taken) => taken,
                Err(crate::messaging::mailbox::Empty::Closed) => {
                    return Served::Ended(Box::pin(self.terminate(booted, ExitReason::Shutdown)).await);
                }
                Err(crate::messaging::mailbox::Empty::Now) => {
                    // Going idle: the mailbox depth is known to be zero, for free.
                    let stats = &self.store.data().stats;
                    stats.idle();
                    // Used (it handled messages) since it last went idle: the stamp moves.
                    if candidate && std::mem::take(&mut used) {
                        stats.last_used.store(super::live_set::now_stamp(), std::sync::atomic::Ordering::Relaxed);
                    }
                    AllHooks::idle(self.store.as_context_mut());
                    if self.unpersisted
                        && let Err(fault) = Box::pin(self.persist(booted)).await
                    {
                        return Served::Ended(ExitReason::Crashed(fault));
                    }
                    let hibernate = self.hibernation_delay();
                    tokio::select! {
                        biased;
                        _ = stop.attention() => continue,
                        message = self.inbox().recv_counted() => match message {
                            Some(taken) => taken,
                            None => return Served::Ended(Box::pin(self.terminate(booted, ExitReason::Shutdown)).await),
                        },
                        // Made only when polled: select! builds a disabled branch's future all
                        // the same, and a `Sleep` takes the runtime's handle (a shared count)
                        // at every idle wait of every agent without `hibernate_after`.
                        _ = async { tokio::time::sleep(hibernate.unwrap_or_default()).await }, if hibernate.is_some() => {
                            match Box::pin(self.hibernate(booted, None)).await {
                                Hibernation::Stayed => continue,
                                Hibernation::Asleep(snapshot) => return Served::Asleep(snapshot),
                                Hibernation::Ended(reason) => return Served::Ended(reason),
                            }
                        }
                    }
                }
            };
            // Busy from the moment it takes a message: a full pool must not take an agent in a
            // long callback (or one waiting on a call to the very agent being woken) for idle.
            self.store.data().stats.set_phase(super::stats::Phase::Busy);
            // AGORA_INJECT_FAULT=agent-task:<name>: a panic in this task's host code.
            if injecting && crate::infra::faults::fires("agent-task", &self.store.data().name) {
                panic!("injected fault in the agent task");
            }
            let message = match invoke::arm(&mut self.store) {
                Ok(()) => message,
                Err(gate) => match Box::pin(self.held(message, gate)).await {
                    Some(message) => message,
                    None => continue,
                },
            };
            // Most callbacks finish in their first poll; only one that suspends (waiting in a
            // host call, yielding at a tick) also waits on the kill signal.
            let handled = {
                let handling = self.handle(booted, message, left, batching);
                tokio::pin!(handling);
                match futures_util::poll!(handling.as_mut()) {
                    std::task::Poll::Ready(handled) => Some(handled),
                    std::task::Poll::Pending => tokio::select! {
                        biased;
                        _ = stop.killed() => None,
                        handled = &mut handling => Some(handled),
                    },
                }
            };
            let Some(handled) = handled else { return Served::Ended(self.killed()) };
            if let Err(fault) = handled {
                // A kill that landed while wasm ran surfaces as a trap; report it as the kill.
                return Served::Ended(if stop.is_killed() {
                    self.killed()
                } else if self.store.data().exited_cleanly {
                    ExitReason::Normal
                } else {
                    ExitReason::Crashed(fault)
                });
            }
            used = true;
            // Only a durable agent has work here: the others skip the (boxed) call.
            if self.store.data().spec.durable.is_some()
                && let Err(fault) = Box::pin(self.after_message(booted)).await
            {
                return Served::Ended(ExitReason::Crashed(fault));
            }
            if let Some(reason) = self.store.data_mut().exit_requested.take() {
                return Served::Ended(Box::pin(self.terminate(booted, reason)).await);
            }
        }
    }

    /// One message: in a batch (`handle-batch`, when the agent exports it and may batch), or
    /// alone (`handle` / `notify`).
    /// `left`: how many wait behind it in the mailbox.
    async fn handle(&mut self, booted: &Booted, message: Message, left: usize, batching: bool) -> Result<(), Fault> {
        let delivery = self.prepare(message);
        let batching =
            batching && left > 0 && self.store.data().runtime.max_batch.load(std::sync::atomic::Ordering::Relaxed) > 1;
        match booted.batch.as_ref().filter(|_| batching) {
            Some(handle_batch) => self.deliver_batch(handle_batch, delivery, left).await,
            None => self.deliver(&booted.agent, &delivery).await,
        }
    }

    /// Hand `delivery` (armed by the caller) and what follows it in the mailbox to the guest in
    /// one `handle-batch` call ([`super::batch`]): each item is settled as it is reported, so
    /// only the item in progress is lost to a fault, and the rest stays in the mailbox.
    async fn deliver_batch(
        &mut self,
        handle_batch: &super::batch::HandleBatch,
        delivery: Delivery,
        left: usize,
    ) -> Result<(), Fault> {
        let inbox = self.inbox.take().expect("the mailbox is the instance's between callbacks");
        self.store.data_mut().batch.begin(&delivery, left, inbox);
        let item = super::batch::item(delivery);
        let outcome = invoke::metered(&self.meter, self.tick, handle_batch.call_async(&mut self.store, (item,))).await;
        let batch = &mut self.store.data_mut().batch;
        let (inbox, unreported) = batch.end();
        self.inbox = inbox;
        let during = unreported.unwrap_or("handle-batch");
        // The last item's after-hooks ran when it was reported, unless it was not.
        let outcome = if std::mem::take(&mut batch.armed) {
            invoke::finish(&mut self.store, outcome, during)
        } else {
            invoke::classify(&mut self.store, outcome, during)
        };
        outcome?;
        if let Some(fault) = self.store.data_mut().batch.fault.take() {
            return Err(fault);
        }
        match unreported {
            None => Ok(()),
            Some(callback) => Err(Fault::new(
                FaultKind::HandlerFatal,
                format!(
                    "handle-batch returned without reporting the outcome of its {callback} item through batch.next"
                ),
            )),
        }
    }

    /// A message as the guest gets it; a caller's reply channel is now the agent's to answer.
    pub(super) fn prepare(&mut self, message: Message) -> Delivery {
        prepare(self.store.data_mut(), message)
    }

    /// Hand one prepared message to the guest (armed by the caller) and answer its caller.
    pub(super) async fn deliver(&mut self, agent: &Agent, delivery: &Delivery) -> Result<(), Fault> {
        let envelope = match delivery {
            Delivery::Envelope(envelope) => envelope,
            Delivery::Notice(notice) => return self.notify(agent, notice).await,
        };
        let correlation = envelope.correlation;
        // Armed (budget and hooks) by the caller, which may have had to wait for a gate.
        let started = quanta::Instant::now();
        let outcome = invoke::metered(&self.meter, self.tick, agent.call_handle(&mut self.store, envelope)).await;
        let outcome = invoke::finish(&mut self.store, outcome, "handle")?;
        let state = self.store.data_mut();
        record_handle(state, started.elapsed(), self.inbox.as_ref());
        if let Some((correlation, reply)) = answer_of(state, correlation, outcome)? {
            if state.spec.durable == Some(Persist::EveryMessage) {
                self.held_answer = Some((correlation, reply));
            } else {
                // A caller that gave up is no error of this agent's.
                let _ = state.capabilities.messaging.answer(correlation, reply);
            }
        }
        Ok(())
    }

    /// After a handled message: a durable agent's state is written (`every-message`, and then
    /// its reply released) or marked as not yet written (`idle`).
    pub(super) async fn after_message(&mut self, booted: &Booted) -> Result<(), Fault> {
        match self.store.data().spec.durable {
            None | Some(Persist::Shutdown) => Ok(()),
            Some(Persist::Idle) => {
                self.unpersisted = true;
                Ok(())
            }
            Some(Persist::EveryMessage) => {
                self.persist(booted).await?;
                if let Some((correlation, reply)) = self.held_answer.take() {
                    let _ = self.store.data_mut().capabilities.messaging.answer(correlation, reply);
                }
                Ok(())
            }
        }
    }

    /// Take a durable agent's state and write it to disk, returning once it is there. A
    /// snapshot that traps or refuses, or a write that fails, is a fault: what runs must never
    /// be ahead of what a restart would restore without anyone being told.
    pub(super) async fn persist(&mut self, booted: &Booted) -> Result<(), Fault> {
        let exports = self.module.state.ok_or_else(|| {
            Fault::new(FaultKind::PersistFailed, "its module has no state interface to take its state through")
        })?;
        let state = match self.snapshot(booted, exports).await? {
            Ok(state) => state,
            Err(refused) => {
                return Err(Fault::new(FaultKind::PersistFailed, format!("its snapshot refused: {refused}")));
            }
        };
        self.write_snapshot(state).await
    }

    /// Write a snapshot already taken (at hibernation, say).
    pub(super) async fn write_snapshot(&mut self, state: Vec<u8>) -> Result<(), Fault> {
        let runtime = self.store.data().runtime.clone();
        let snapshot = super::persistence::Snapshot {
            module: self.module.name.clone(),
            version: self.module.version.to_string(),
            state,
        };
        let store = runtime.snapshots().map_err(|e| Fault::new(FaultKind::PersistFailed, e))?;
        store.persist(&self.store.data().name, snapshot).await.map_err(|e| Fault::new(FaultKind::PersistFailed, e))?;
        self.unpersisted = false;
        Ok(())
    }

    /// A host notice goes to the `notify` export: a separate callback, so that `handle`'s
    /// envelope stays small enough to pass in registers.
    async fn notify(&mut self, agent: &Agent, notice: &crate::messaging::Notice) -> Result<(), Fault> {
        let started = quanta::Instant::now();
        let outcome = invoke::metered(&self.meter, self.tick, agent.call_notify(&mut self.store, notice)).await;
        let outcome = invoke::finish(&mut self.store, outcome, "notify");
        record_handle(self.store.data(), started.elapsed(), self.inbox.as_ref());
        notice_outcome(outcome?.map(|()| None))
    }

    pub(super) async fn terminate(&mut self, booted: &Booted, reason: ExitReason) -> ExitReason {
        let agent = &booted.agent;
        // A durable agent's state is written at every graceful stop, before `terminate` runs.
        if self.store.data().spec.durable.is_some()
            && let Err(fault) = self.persist(booted).await
        {
            tracing::error!(event = "snapshot_persist_failed", agent = %self.store.data().name,
                "agent {}: its state was not persisted at its stop: {fault}", self.store.data().name);
        }
        if let Err(gate) = invoke::arm(&mut self.store) {
            tracing::warn!(event = "terminate_skipped", agent = %self.store.data().name,
                "terminate not called: {}", gate.fault.detail);
            return reason;
        }
        let stop = self.stop.clone();
        let terminated = tokio::select! {
            biased;
            _ = stop.killed() => return self.killed(),
            terminated = invoke::metered(&self.meter, self.tick, agent.call_terminate(&mut self.store, reason.code())) => terminated,
        };
        match invoke::finish(&mut self.store, terminated, "terminate") {
            Ok(()) => reason,
            Err(_) if stop.is_killed() => self.killed(),
            Err(_) if self.store.data().exited_cleanly => reason,
            Err(fault) => ExitReason::Crashed(fault),
        }
    }

    /// End coordination holdings, leave the registry, close the mailbox, notify monitors and
    /// links; returns how many messages were never handled.
    fn cleanup(&mut self, reason: &ExitReason) -> usize {
        self.inbox();
        self.leave_live_set();
        self.stop.close_controls();
        AllHooks::exit(self.store.as_context_mut());
        self.store.data_mut().leave();
        let state = self.store.data();
        let runtime = &state.runtime;
        if let Some(cluster) = runtime.cluster.get() {
            for name in runtime.registry.names_of(state.id) {
                cluster.release(&name, state.id);
            }
        }
        runtime.registry.leave(state.id);
        let inbox = self.inbox.as_mut().expect("taken back above");
        let undelivered = runtime.router.close(state.id, &state.capabilities.messaging.topics, inbox);
        runtime.links.exit(&runtime.router, state.id, reason);
        undelivered
    }

    /// A gate keeps the next callback from running (say, the agent's wallet cannot pay for its
    /// compute): refuse `message`, and every message that comes, until it opens (callers get
    /// the gate's error), or hold it if the gate refuses nothing. None when the agent was
    /// stopped meanwhile, or the message was refused.
    async fn held(&mut self, message: Message, gate: Box<Gate>) -> Option<Message> {
        let runtime = self.store.data().runtime.clone();
        let (id, name) = (self.store.data().id, self.store.data().name.clone());
        let Some(reopened) = gate.reopened.clone() else {
            // A gate that never opens: the message cannot be handled.
            refuse(&name, Some(message), gate.error.clone(), &gate.fault.detail);
            return None;
        };
        tracing::warn!(event = gate.held_event, agent = %name, refuses = gate.refuses,
            "{}; the agent waits", gate.fault.detail);
        self.store.data().stats.set_phase(super::stats::Phase::Held);
        let mut held = Some(message);
        if gate.refuses {
            runtime.router.refuse(id, gate.error.clone());
            refuse(&name, held.take(), gate.error.clone(), &gate.fault.detail);
        }
        let stop = self.stop.clone();
        loop {
            let opened = reopened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if invoke::arm(&mut self.store).is_ok() {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.reached(SHUTDOWN) => {
                    if let Some(reply) = held.take().and_then(|message| message.reply) {
                        let _ = reply.send(Err(Error::Stopped));
                    }
                    break;
                }
                _ = &mut opened => {}
                message = self.inbox().recv(), if gate.refuses => match message {
                    Some(message) => refuse(&name, Some(message), gate.error.clone(), &gate.fault.detail),
                    None => break,
                },
            }
        }
        runtime.router.accept(id);
        tracing::info!(event = gate.released_event, agent = %name, "the agent can run again");
        held
    }

    /// The exit reason when the kill token fired: the reason a link passed on, or a plain kill.
    pub(super) fn killed(&self) -> ExitReason {
        self.kill_cause.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or(ExitReason::Killed)
    }
}

/// A message ready for the guest's `handle` or `notify`.
pub(super) enum Delivery {
    Envelope(Envelope),
    Notice(Box<crate::messaging::Notice>),
}

/// Turn a message away from a held agent: a caller gets `error`, a cast is logged.
fn refuse(agent: &str, message: Option<Message>, error: Error, why: &str) {
    let Some(message) = message else { return };
    match message.reply {
        Some(reply) => {
            let _ = reply.send(Err(error));
        }
        None => tracing::warn!(event = "message_refused", agent, reason = ?error, "a message was refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::rust_panic;

    #[test]
    fn a_rust_panic_is_read_from_the_guests_stderr() {
        let stderr = "working\n\nthread '<unnamed>' (1) panicked at src/lib.rs:225:17:\nswift crashed\nin task 6\n\
                      note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
        assert_eq!(rust_panic(stderr), Some(("src/lib.rs:225:17", "swift crashed in task 6".to_string())));
        let bare = "thread 'main' panicked at src/main.rs:1:1:";
        assert_eq!(rust_panic(bare), Some(("src/main.rs:1:1", "a panic without a message".to_string())));
        assert_eq!(rust_panic("Traceback (most recent call last):"), None);
    }
}
