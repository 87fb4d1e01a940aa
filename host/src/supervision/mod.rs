//! Supervisors: OTP's `supervisor` semantics for wasm agents.
//!
//! A supervisor starts its children one at a time in declared order (each `init` returns before
//! the next child starts) and stops them in reverse order. When a child exits, its restart type
//! decides whether it comes back (`permanent` always, `transient` after an abnormal exit,
//! `temporary` never); the strategy decides which siblings restart with it (`one_for_one`: none,
//! `one_for_all`: all, `rest_for_one`: those started after it, stopped in reverse order first).
//! More than `intensity` restarts within `period` and the supervisor stops all its children and
//! exits with `shutdown`, as OTP's does (its parent's restart type decides what follows; the
//! `supervisor_failed` event says why); at the root it ends `agora run` with a non-zero exit.
//! A supervisor without running children stays up, unless its `auto_shutdown` (OTP 24) says to
//! end once its significant children have exited for good.
//!
//! Each supervisor is one task that owns its children's handles; exits reach it through its own
//! channel, so supervisors never share a lock or a central process.
//!
//! Dynamic supervisors (`dynamic = true`) start empty and take `spawn`, `stop-child` and
//! `list-children` requests from agents through the `supervision` interface (`host.rs`).
//!
//! An agent that calls `stop` during `init` is OTP's `ignore`: the child stays, not running, and
//! is never restarted. Supervisors are registered under their names and can be monitored and
//! linked like agents. Where Agora differs from OTP: restarts can wait with an exponential
//! backoff (off by default).

pub mod host;
mod isolated;
pub mod links;
pub mod pools;
mod restarts;

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::bindings::Error;
use crate::bindings::supervision::{ChildInfo, SpawnError};
use crate::capabilities::HostEvent;
use crate::manifest::{AgentSpec, AutoShutdown, ChildSpec, Restart, Shutdown, Strategy, SupervisorSpec};
use crate::messaging::AgentId;
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Exit, ExitReason, Fault, FaultKind, RunningAgent, StartError, StopSignal};

/// How a run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// `stop` resolved (Ctrl-C, SIGTERM) and the tree was shut down.
    Interrupted,
    /// The root ended by itself (its `auto_shutdown`).
    Finished,
}

/// Run a supervision tree until its root exits, or until `stop` resolves (then shut it down).
/// The root's failure (restart intensity reached, or a child that cannot start) is the error.
pub async fn run(
    runtime: Arc<Runtime>,
    root: &SupervisorSpec,
    stop: impl Future<Output = ()>,
) -> Result<RunEnd, SupervisionError> {
    let (exits, mut exited) = mpsc::unbounded_channel();
    let running = start_supervisor(&runtime, root, exits).await?;
    tokio::pin!(stop);
    let (reason, end) = tokio::select! {
        exit = exited.recv() => (exit.map_or(ExitReason::Normal, |exit| exit.reason), RunEnd::Finished),
        _ = &mut stop => {
            running.stop(Shutdown::Infinity).await;
            (exited.recv().await.map_or(ExitReason::Shutdown, |exit| exit.reason), RunEnd::Interrupted)
        }
    };
    match reason {
        ExitReason::Crashed(fault) | ExitReason::GaveUp(fault) => {
            Err(SupervisionError::Failed { supervisor: root.name.clone(), fault })
        }
        _ => Ok(end),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisionError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("supervisor {supervisor:?} failed: {fault}")]
    Failed { supervisor: String, fault: Fault },
}

/// Requests to a dynamic supervisor, from the `supervision` interface.
pub enum Command {
    Spawn { spec: AgentSpec, reply: oneshot::Sender<Result<AgentId, SpawnError>> },
    Stop { name: String, reply: oneshot::Sender<Result<(), Error>> },
    List { reply: oneshot::Sender<Vec<ChildInfo>> },
}

pub type Commands = mpsc::UnboundedSender<Command>;

/// An operator's requests to any supervisor (the admin API), as OTP's `terminate_child`,
/// `restart_child` and `which_children`.
pub enum Operate {
    /// Stop the child as its `shutdown` says and keep its spec; it stays down until restarted.
    Terminate { name: String, reply: oneshot::Sender<Result<(), String>> },
    /// Stop the child if it runs, then start it again.
    Restart { name: String, reply: oneshot::Sender<Result<AgentId, String>> },
    /// The children, in start order.
    Describe { reply: oneshot::Sender<Vec<ChildView>> },
    /// Make the children those of `children` (a reloaded manifest's), as a release upgrade
    /// does: children no longer listed are stopped and deleted, new ones started after the
    /// others, agents whose spec changed restarted on the new spec. A nested supervisor is kept
    /// as it runs (its own children are reconciled by a request of their own).
    Reconcile { children: Vec<ChildSpec>, reply: oneshot::Sender<Vec<Reconciled>> },
}

/// What a reconcile did to one child.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reconciled {
    pub supervisor: String,
    pub child: String,
    /// `started`, `stopped`, `restarted` (its spec changed) or `failed`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A child as the operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChildView {
    pub name: String,
    /// `agent` or `supervisor`.
    pub kind: &'static str,
    /// The id it runs under, if it runs.
    pub id: Option<AgentId>,
    /// `running`, `restarting` (waiting for its restart), `terminated` (by an operator) or
    /// `finished` (exited for good).
    pub state: &'static str,
    pub restarts: u32,
}

pub type Operators = mpsc::UnboundedSender<Operate>;

/// A running child of a supervisor.
enum Child {
    Agent(RunningAgent),
    Supervisor(RunningSupervisor),
    Pool(pools::RunningPool),
}

impl Child {
    fn id(&self) -> AgentId {
        match self {
            Child::Agent(agent) => agent.id,
            Child::Supervisor(supervisor) => supervisor.id,
            Child::Pool(pool) => pool.id,
        }
    }

    async fn stop(self, policy: Shutdown) {
        match self {
            Child::Agent(agent) => agent.stop(policy).await,
            Child::Supervisor(supervisor) => supervisor.stop(policy).await,
            Child::Pool(pool) => pool.stop(policy).await,
        }
    }
}

/// A supervisor running as its own task, as its parent holds it.
pub struct RunningSupervisor {
    pub id: AgentId,
    stop: StopSignal,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSupervisor {
    /// Stop it as a parent does (its children first, in reverse order) and wait until it is gone.
    pub async fn stop(self, policy: Shutdown) {
        self.stop.apply(policy, Some(self.task)).await
    }
}

enum Event {
    Exit(Exit),
    /// A restart scheduled after a backoff delay: these slots, in this order.
    RestartDue(Vec<usize>),
    Command(Command),
    Operate(Operate),
}

async fn next_command(commands: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

impl Slot {
    fn new(spec: ChildSpec, backoff: Option<crate::manifest::Backoff>) -> Slot {
        Slot {
            spec,
            running: None,
            restarts: 0,
            removed: false,
            finished: false,
            ignored_as: 0,
            next_delay: backoff.map(|b| b.initial),
            started_at: Instant::now(),
            last_exit: "".into(),
            terminated: false,
        }
    }
}

/// Why a child could not start, as a fault.
fn start_fault(error: &StartError) -> Fault {
    match error {
        StartError::Failed { fault, .. } => fault.clone(),
        StartError::NameTaken { agent } => Fault::new(
            FaultKind::StartFailed,
            format!("the name {agent:?} is registered by another agent or supervisor"),
        ),
    }
}

/// One child position: its spec and, while it runs, its handle.
struct Slot {
    spec: ChildSpec,
    running: Option<Child>,
    /// Restarts of this child so far, for the `agent_restarted` event.
    restarts: u32,
    /// Deleted: a temporary child that exited, or a dynamic supervisor's child that will not
    /// be restarted (OTP deletes their specs).
    removed: bool,
    /// It exited for good (not restarted, not running): what `auto_shutdown` counts.
    finished: bool,
    /// The id an agent had when it stopped in `init` (ignored).
    ignored_as: AgentId,
    /// The next backoff delay, when backoff is configured.
    next_delay: Option<Duration>,
    started_at: Instant,
    /// Why the child last exited, for the `agent_restarted` event.
    last_exit: Arc<str>,
    /// Stopped by an operator (`terminate_child`): not restarted until asked.
    terminated: bool,
}

struct Supervisor {
    runtime: Arc<Runtime>,
    name: String,
    /// Its name, shared by its agents' directory entries.
    label: Arc<str>,
    id: AgentId,
    strategy: Strategy,
    intensity: restarts::Intensity,
    backoff: Option<crate::manifest::Backoff>,
    slots: Vec<Slot>,
    /// Children this supervisor is stopping itself; their exits are expected, not failures.
    stopping: HashSet<AgentId>,
    /// Children's exits.
    exits: mpsc::UnboundedReceiver<Exit>,
    exits_sender: mpsc::UnboundedSender<Exit>,
    /// Restarts that are due after a backoff delay: these slots, in this order.
    due: mpsc::UnboundedReceiver<Vec<usize>>,
    due_sender: mpsc::UnboundedSender<Vec<usize>>,
    pending_restarts: usize,
    /// For a dynamic supervisor: its limit and its requests.
    max_children: Option<u32>,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    /// The admin API's requests, which every supervisor takes.
    operator: mpsc::UnboundedReceiver<Operate>,
    auto_shutdown: AutoShutdown,
    /// Set once `auto_shutdown` says the supervisor's work is done.
    done: bool,
}

/// Start a supervisor and all its children (in order), then hand it to a task of its own. If a
/// child cannot start, the children already started are stopped and the error returned.
///
/// Boxed with an explicit `Send`, because supervisors start supervisors: the recursion would
/// otherwise hide whether the future is `Send`.
pub fn start_supervisor<'a>(
    runtime: &'a Arc<Runtime>,
    spec: &'a SupervisorSpec,
    parent: mpsc::UnboundedSender<Exit>,
) -> Pin<Box<dyn Future<Output = Result<RunningSupervisor, StartError>> + Send + 'a>> {
    Box::pin(async move {
        let (exits_sender, exits) = mpsc::unbounded_channel();
        let (due_sender, due) = mpsc::unbounded_channel();
        let (operators, operator) = mpsc::unbounded_channel();
        let mut supervisor = Supervisor {
            runtime: runtime.clone(),
            name: spec.name.clone(),
            label: spec.name.as_str().into(),
            id: runtime.next_id(),
            strategy: spec.strategy,
            intensity: restarts::Intensity::new(spec.intensity, spec.period),
            backoff: spec.backoff,
            slots: spec.children.iter().map(|child| Slot::new(child.clone(), spec.backoff)).collect(),
            stopping: HashSet::new(),
            exits,
            exits_sender,
            due,
            due_sender,
            pending_restarts: 0,
            max_children: spec.max_children,
            commands: None,
            operator,
            auto_shutdown: spec.auto_shutdown,
            done: false,
        };
        let name: Arc<str> = spec.name.as_str().into();
        // One namespace with agents, as OTP's registered names: `whereis` finds a supervisor,
        // and it can be monitored and linked.
        if runtime.registry.enter(supervisor.id, &name, &[]).is_err() {
            return Err(StartError::NameTaken { agent: spec.name.clone() });
        }
        let stop = StopSignal::default();
        runtime.links.enter_supervisor(supervisor.id, stop.clone());
        runtime.supervisors.insert(spec.name.clone(), operators);
        if spec.is_dynamic() {
            let (commands, requests) = mpsc::unbounded_channel();
            runtime.dynamic_supervisors.insert(spec.name.clone(), commands);
            supervisor.commands = Some(requests);
        }
        for index in 0..supervisor.slots.len() {
            if let Err(error) = supervisor.start_slot(index).await {
                supervisor.stop_children(0..index).await;
                supervisor.leave(&ExitReason::Shutdown);
                return Err(error);
            }
        }
        let (name, id, children) = (&supervisor.name, supervisor.id, supervisor.slots.len());
        runtime.observe(&HostEvent::SupervisorStarted { supervisor: name, id, children });
        let id = supervisor.id;
        let task = tokio::spawn(supervisor.supervise(stop.clone(), parent));
        Ok(RunningSupervisor { id, stop, task })
    })
}

impl Supervisor {
    async fn supervise(mut self, stop: StopSignal, parent: mpsc::UnboundedSender<Exit>) {
        let reason = loop {
            if self.pending_restarts == 0 && self.commands.is_some() {
                // A dynamic supervisor forgets its removed children (slot indices are only
                // held by pending restarts).
                self.slots.retain(|slot| !slot.removed);
            }
            if self.done {
                // OTP's auto shutdown: the other children are stopped, and the exit is `shutdown`.
                self.stop_children(0..self.slots.len()).await;
                break ExitReason::Shutdown;
            }
            let event = tokio::select! {
                biased;
                _ = stop.killed() => break ExitReason::Killed,
                _ = stop.shutdown_requested() => {
                    let everyone = 0..self.slots.len();
                    tokio::select! {
                        biased;
                        _ = stop.killed() => break ExitReason::Killed,
                        _ = self.stop_children(everyone) => break ExitReason::Shutdown,
                    }
                }
                exit = self.exits.recv() => Event::Exit(exit.expect("the supervisor holds a sender")),
                slots = self.due.recv() => Event::RestartDue(slots.expect("the supervisor holds a sender")),
                Some(command) = next_command(&mut self.commands) => Event::Command(command),
                Some(operate) = self.operator.recv() => Event::Operate(operate),
            };
            // A panic in this host code fails the supervisor (its parent restarts it) instead of
            // leaving its children unsupervised.
            let outcome = match AssertUnwindSafe(self.process(event)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Err(Fault::new(FaultKind::HostPanic, agent::panic_message(&*panic))),
            };
            if let Err(fault) = outcome {
                self.runtime.observe(&HostEvent::SupervisorFailed {
                    supervisor: &self.name,
                    id: self.id,
                    fault: &fault,
                });
                self.stop_children(0..self.slots.len()).await;
                break match fault.kind {
                    FaultKind::RestartIntensity => ExitReason::GaveUp(fault),
                    _ => ExitReason::Crashed(fault),
                };
            }
        };
        if matches!(reason, ExitReason::Killed) {
            // Killed from above: take the children down without waiting for `terminate`.
            for slot in self.slots.iter_mut().rev() {
                if let Some(child) = slot.running.take() {
                    child.stop(Shutdown::BrutalKill).await;
                }
            }
        }
        self.leave(&reason);
        self.runtime.observe(&HostEvent::SupervisorExited { supervisor: &self.name, id: self.id, reason: &reason });
        let name: Arc<str> = self.name.as_str().into();
        let _ = parent.send(Exit { id: self.id, name, reason });
    }

    /// Leave the registry, the dynamic supervisors and the links table (monitors get `down`).
    fn leave(&self, reason: &ExitReason) {
        self.runtime.supervisors.remove(&self.name);
        if self.commands.is_some() {
            self.runtime.dynamic_supervisors.remove(&self.name);
        }
        self.runtime.registry.leave(self.id);
        self.runtime.links.exit(&self.runtime.router, self.id, reason);
    }

    async fn process(&mut self, event: Event) -> Result<(), Fault> {
        // AGORA_INJECT_FAULT=supervisor:<name>: a panic in this supervisor's host code.
        if crate::infra::faults::fires("supervisor", &self.name) {
            panic!("injected fault in the supervisor");
        }
        match event {
            Event::Exit(exit) => self.on_exit(exit).await,
            Event::RestartDue(slots) => {
                self.pending_restarts -= 1;
                self.restart_slots(slots).await
            }
            Event::Command(command) => {
                self.on_command(command).await;
                Ok(())
            }
            Event::Operate(operate) => {
                self.on_operate(operate).await;
                Ok(())
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Spawn { spec, reply } => {
                let _ = reply.send(self.spawn(spec).await);
            }
            Command::Stop { name, reply } => {
                let found = self.slots.iter().position(|slot| !slot.removed && slot.spec.name() == name);
                let result = match found {
                    Some(index) => {
                        self.stop_children_at(&[index]).await;
                        self.slots[index].removed = true;
                        Ok(())
                    }
                    None => Err(Error::NotFound),
                };
                let _ = reply.send(result);
            }
            Command::List { reply } => {
                let children = self
                    .slots
                    .iter()
                    .filter(|slot| !slot.removed)
                    .map(|slot| ChildInfo {
                        name: slot.spec.name().to_string(),
                        id: slot.running.as_ref().map(Child::id),
                        restarts: slot.restarts,
                    })
                    .collect();
                let _ = reply.send(children);
            }
        }
    }

    /// The slot of the child named `name`, or why there is none.
    fn child_index(&self, name: &str) -> Result<usize, String> {
        let found = self.slots.iter().position(|slot| !slot.removed && slot.spec.name() == name);
        found.ok_or_else(|| format!("{} has no child {name:?}", self.name))
    }

    async fn on_operate(&mut self, operate: Operate) {
        match operate {
            Operate::Terminate { name, reply } => {
                let index = match self.child_index(&name) {
                    Ok(index) => index,
                    Err(why) => return drop(reply.send(Err(why))),
                };
                self.stop_children_at(&[index]).await;
                let slot = &mut self.slots[index];
                slot.terminated = true;
                // A dynamic supervisor keeps no spec of a child that will not come back.
                slot.removed = self.commands.is_some();
                let _ = reply.send(Ok(()));
            }
            Operate::Restart { name, reply } => {
                let index = match self.child_index(&name) {
                    Ok(index) => index,
                    Err(why) => return drop(reply.send(Err(why))),
                };
                self.stop_children_at(&[index]).await;
                self.slots[index].terminated = false;
                self.slots[index].restarts += 1;
                let started = match self.start_slot(index).await {
                    Ok(()) => {
                        self.slots[index].running.as_ref().map(Child::id).ok_or_else(|| "it stopped in init".into())
                    }
                    Err(error) => Err(error.to_string()),
                };
                let _ = reply.send(started);
            }
            Operate::Reconcile { children, reply } => {
                let _ = reply.send(self.reconcile(children).await);
            }
            Operate::Describe { reply } => {
                let children = self
                    .slots
                    .iter()
                    .filter(|slot| !slot.removed)
                    .map(|slot| ChildView {
                        name: slot.spec.name().to_string(),
                        kind: match slot.spec {
                            ChildSpec::Agent(_) => "agent",
                            ChildSpec::Supervisor(_) => "supervisor",
                            ChildSpec::Pool(_) => "pool",
                        },
                        id: slot.running.as_ref().map(Child::id),
                        state: match (&slot.running, slot.terminated, slot.finished) {
                            (Some(_), ..) => "running",
                            (None, true, _) => "terminated",
                            (None, _, true) => "finished",
                            (None, ..) => "restarting",
                        },
                        restarts: slot.restarts,
                    })
                    .collect();
                let _ = reply.send(children);
            }
        }
    }

    async fn reconcile(&mut self, wanted: Vec<ChildSpec>) -> Vec<Reconciled> {
        let mut done = Vec::new();
        let supervisor = self.name.clone();
        let mut report = |child: &str, action, detail: Option<String>| {
            done.push(Reconciled { supervisor: supervisor.clone(), child: child.to_string(), action, detail })
        };
        if self.commands.is_some() {
            // A dynamic supervisor's children are its spawns, not the manifest's.
            return done;
        }
        // Gone from the manifest: stopped, in reverse start order, and forgotten.
        let gone: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].removed && !wanted.iter().any(|w| w.name() == self.slots[i].spec.name()))
            .collect();
        self.stop_children_at(&gone).await;
        for &index in &gone {
            self.slots[index].removed = true;
            report(self.slots[index].spec.name(), "stopped", None);
        }
        for spec in wanted {
            let existing = self.slots.iter().position(|slot| !slot.removed && slot.spec.name() == spec.name());
            match existing {
                Some(index) => {
                    let same = match (&self.slots[index].spec, &spec) {
                        (ChildSpec::Agent(old), ChildSpec::Agent(new)) => format!("{old:?}") == format!("{new:?}"),
                        (ChildSpec::Supervisor(_), ChildSpec::Supervisor(_)) => true,
                        (ChildSpec::Pool(old), ChildSpec::Pool(new)) => format!("{old:?}") == format!("{new:?}"),
                        _ => false,
                    };
                    if same {
                        continue;
                    }
                    self.stop_children_at(&[index]).await;
                    self.slots[index].spec = spec;
                    match self.start_slot(index).await {
                        Ok(()) => report(self.slots[index].spec.name(), "restarted", Some("its spec changed".into())),
                        Err(error) => report(self.slots[index].spec.name(), "failed", Some(error.to_string())),
                    }
                }
                None => {
                    let name = spec.name().to_string();
                    self.slots.push(Slot::new(spec, self.backoff));
                    let index = self.slots.len() - 1;
                    match self.start_slot(index).await {
                        Ok(()) => report(&name, "started", None),
                        Err(error) => {
                            // Kept, not running: a later reload or restart tries again.
                            self.slots[index].finished = true;
                            report(&name, "failed", Some(error.to_string()))
                        }
                    }
                }
            }
        }
        done
    }

    async fn spawn(&mut self, spec: AgentSpec) -> Result<AgentId, SpawnError> {
        let max = self.max_children.unwrap_or(u32::MAX);
        if self.slots.iter().filter(|slot| !slot.removed).count() >= max as usize {
            return Err(SpawnError::MaxChildren(max));
        }
        // A child waiting for its restart holds its name, though it is not registered now.
        if self.slots.iter().any(|slot| !slot.removed && slot.spec.name() == spec.name) {
            return Err(SpawnError::AlreadyExists);
        }
        self.slots.push(Slot::new(ChildSpec::Agent(spec.into()), self.backoff));
        let index = self.slots.len() - 1;
        match self.start_slot(index).await {
            Ok(()) => {
                let slot = &mut self.slots[index];
                let id = slot.running.as_ref().map_or(slot.ignored_as, Child::id);
                // Ignored in `init`: OTP's `start_child` returns `{ok, undefined}` and keeps no
                // child of a dynamic supervisor.
                slot.removed |= slot.running.is_none();
                Ok(id)
            }
            Err(error) => {
                self.slots.pop();
                Err(match error {
                    StartError::NameTaken { .. } => SpawnError::AlreadyExists,
                    StartError::Failed { fault, .. } => SpawnError::StartFailed(fault.to_string()),
                })
            }
        }
    }

    /// Start (or restart) the child in one slot; its exits are routed to this supervisor. An
    /// agent that stops in `init` (OTP's `ignore`) leaves the slot not running, for good.
    async fn start_slot(&mut self, index: usize) -> Result<(), StartError> {
        let exits = self.exits_sender.clone();
        let started = match &self.slots[index].spec {
            ChildSpec::Agent(spec) => {
                let module = self.runtime.module(&spec.module).expect("modules are resolved before a spec exists");
                agent::start_under(&self.runtime, spec, &module, exits, self.slots[index].restarts, &self.label)
                    .await
                    .map(Child::Agent)
            }
            ChildSpec::Supervisor(spec) => start_supervisor(&self.runtime, spec, exits).await.map(Child::Supervisor),
            ChildSpec::Pool(spec) => pools::start_pool(&self.runtime, spec, exits).await.map(Child::Pool),
        };
        let child = match started {
            Ok(child) => child,
            Err(error) => {
                // A nested supervisor's own child has reported its failure already.
                let spec = &self.slots[index].spec;
                let own = !matches!(spec, ChildSpec::Supervisor(_))
                    || matches!(&error, StartError::NameTaken { agent } if agent == spec.name());
                if own {
                    let fault = start_fault(&error);
                    self.runtime.tally.start_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.runtime.observe(&HostEvent::AgentStartFailed { agent: spec.name(), fault: &fault });
                }
                return Err(error);
            }
        };
        let slot = &mut self.slots[index];
        slot.started_at = Instant::now();
        slot.terminated = false;
        match child {
            Child::Agent(agent) if agent.ignored => {
                slot.ignored_as = agent.id;
                slot.finished = true;
            }
            child => {
                slot.running = Some(child);
                slot.finished = false;
            }
        }
        Ok(())
    }

    async fn on_exit(&mut self, exit: Exit) -> Result<(), Fault> {
        if self.stopping.remove(&exit.id) {
            return Ok(());
        }
        let Some(index) = self.slots.iter().position(|s| s.running.as_ref().is_some_and(|c| c.id() == exit.id)) else {
            return Ok(());
        };
        let dynamic = self.commands.is_some();
        let slot = &mut self.slots[index];
        slot.running = None;
        slot.last_exit = exit.reason.code().into();
        let restart = match slot.spec.restart() {
            Restart::Permanent => true,
            Restart::Transient => exit.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            // OTP deletes a temporary child's spec, and every child a dynamic supervisor will not
            // restart; a static supervisor keeps a transient child's.
            slot.removed = dynamic || slot.spec.restart() == Restart::Temporary;
            slot.finished = true;
            if slot.spec.significant() {
                self.done |= match self.auto_shutdown {
                    AutoShutdown::Never => false,
                    AutoShutdown::AnySignificant => true,
                    AutoShutdown::AllSignificant => self.slots.iter().all(|s| !s.spec.significant() || s.finished),
                };
            }
            return Ok(());
        }
        if let (Some(backoff), true) = (self.backoff, slot.started_at.elapsed() > self.intensity.period) {
            // It ran well for a whole period: start the backoff over.
            slot.next_delay = Some(backoff.initial);
        }
        self.count_restart(&exit)?;
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.slots.len()).collect(),
            Strategy::RestForOne => (index..self.slots.len()).collect(),
        };
        // Siblings that restart with it are stopped first, in reverse start order.
        let siblings: Vec<usize> = group.iter().copied().filter(|i| *i != index).collect();
        self.stop_children_at(&siblings).await;
        for &sibling in &siblings {
            let slot = &mut self.slots[sibling];
            slot.last_exit = "sibling_restart".into();
            // A temporary sibling stopped by its supervisor is not restarted (OTP deletes it).
            slot.removed |= slot.spec.restart() == Restart::Temporary;
        }
        let group: Vec<usize> = group.into_iter().filter(|i| !self.slots[*i].removed).collect();
        if self.backoff.is_some() {
            self.defer(group, index);
            Ok(())
        } else {
            self.restart_slots(group).await
        }
    }

    /// Restart `group` through the event loop: after the backoff delay of the child that caused
    /// it (doubling that delay for next time), or at once without backoff.
    fn defer(&mut self, group: Vec<usize>, cause: usize) {
        let slot = &mut self.slots[cause];
        let delay = slot.next_delay.unwrap_or_default();
        if let Some(backoff) = self.backoff {
            slot.next_delay = Some(restarts::next_delay(delay, backoff));
        }
        self.pending_restarts += 1;
        let due = self.due_sender.clone();
        if delay.is_zero() {
            let _ = due.send(group);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = due.send(group);
            });
        }
    }

    /// Record one restart; fail once the intensity is exceeded within the period.
    fn count_restart(&mut self, exit: &Exit) -> Result<(), Fault> {
        if !self.intensity.allows(Instant::now()) {
            return Err(Fault::new(
                FaultKind::RestartIntensity,
                format!(
                    "more than {} restarts within {:?}; the last: {} exited with {}",
                    self.intensity.intensity,
                    self.intensity.period,
                    exit.name,
                    exit.reason.code()
                ),
            ));
        }
        Ok(())
    }

    async fn restart_slots(&mut self, slots: Vec<usize>) -> Result<(), Fault> {
        for index in slots {
            if self.slots[index].running.is_some() || self.slots[index].removed {
                continue;
            }
            self.slots[index].restarts += 1;
            match self.start_slot(index).await {
                Ok(()) => {
                    let slot = &self.slots[index];
                    let id = slot.running.as_ref().map_or(0, Child::id);
                    self.runtime.observe(&HostEvent::ChildRestarted {
                        agent: slot.spec.name(),
                        id: if slot.running.is_some() { id } else { slot.ignored_as },
                        restarts: slot.restarts,
                        after: &slot.last_exit,
                    });
                }
                Err(error) => {
                    // A restart that fails to start counts as another crash of that child.
                    let name: Arc<str> = self.slots[index].spec.name().into();
                    let exit = Exit { id: 0, name, reason: ExitReason::Crashed(start_fault(&error)) };
                    self.count_restart(&exit)?;
                    self.defer(vec![index], index);
                }
            }
        }
        Ok(())
    }

    /// Stop the running children in `range`, in reverse start order.
    async fn stop_children(&mut self, range: std::ops::Range<usize>) {
        let indices: Vec<usize> = range.collect();
        self.stop_children_at(&indices).await;
    }

    async fn stop_children_at(&mut self, indices: &[usize]) {
        for &index in indices.iter().rev() {
            let slot = &mut self.slots[index];
            if let Some(child) = slot.running.take() {
                let policy = slot.spec.shutdown();
                self.stopping.insert(child.id());
                child.stop(policy).await;
            }
        }
    }
}
