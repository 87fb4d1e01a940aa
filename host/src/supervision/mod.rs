//! Supervisors: OTP's `supervisor` semantics for wasm agents.
//!
//! A supervisor starts its children one at a time in declared order (each `init` returns before
//! the next child starts) and stops them in reverse order. When a child exits, its restart type
//! decides whether it comes back (`permanent` always, `transient` after an abnormal exit,
//! `temporary` never); the strategy decides which siblings restart with it (`one_for_one`: none,
//! `one_for_all`: all, `rest_for_one`: those started after it, stopped in reverse order first).
//! More than `intensity` restarts within `period` and the supervisor stops all its children and
//! exits with `max_restart_intensity`, which its own parent treats like any crash; at the root it
//! ends `agora run` with a non-zero exit.
//!
//! Each supervisor is one task that owns its children's handles; exits reach it through its own
//! channel, so supervisors never share a lock or a central process.
//!
//! Dynamic supervisors (`dynamic = true`) start empty and take `spawn`, `stop-child` and
//! `list-children` requests from agents through the `supervision` interface (`host.rs`).
//!
//! Where Agora differs from OTP: a static supervisor whose children have all exited for good
//! (and none is waiting for a restart) exits `normal` itself, so that a run ends when its work is
//! done; an agent that calls `stop` during `init` counts as started and exited normally (OTP
//! would call that `ignore`); restarts can wait with an exponential backoff (off by default).

pub mod host;
mod isolated;
pub mod links;

use std::collections::{HashSet, VecDeque};
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
use crate::manifest::{AgentSpec, ChildSpec, Restart, Shutdown, Strategy, SupervisorSpec};
use crate::messaging::AgentId;
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Exit, ExitReason, Fault, FaultKind, RunningAgent, StartError, StopSignal};

/// Run a supervision tree until its root exits, or until `stop` resolves (then shut it down).
/// The root's crash (restart intensity reached, or a child that cannot start) is the error.
pub async fn run(
    runtime: Arc<Runtime>,
    root: &SupervisorSpec,
    stop: impl Future<Output = ()>,
) -> Result<ExitReason, SupervisionError> {
    let (exits, mut exited) = mpsc::unbounded_channel();
    let running = start_supervisor(&runtime, root, exits).await?;
    tokio::pin!(stop);
    let reason = tokio::select! {
        exit = exited.recv() => exit.map_or(ExitReason::Normal, |exit| exit.reason),
        _ = &mut stop => {
            running.stop(Shutdown::Infinity).await;
            exited.recv().await.map_or(ExitReason::Shutdown, |exit| exit.reason)
        }
    };
    match reason {
        ExitReason::Crashed(fault) => Err(SupervisionError::Failed { supervisor: root.name.clone(), fault }),
        other => Ok(other),
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

/// A running child of a supervisor.
enum Child {
    Agent(RunningAgent),
    Supervisor(RunningSupervisor),
}

impl Child {
    fn id(&self) -> AgentId {
        match self {
            Child::Agent(agent) => agent.id,
            Child::Supervisor(supervisor) => supervisor.id,
        }
    }

    async fn stop(self, policy: Shutdown) {
        match self {
            Child::Agent(agent) => agent.stop(policy).await,
            Child::Supervisor(supervisor) => supervisor.stop(policy).await,
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
            next_delay: backoff.map(|b| b.initial),
            started_at: Instant::now(),
            last_exit: "",
        }
    }
}

/// One child position: its spec and, while it runs, its handle.
struct Slot {
    spec: ChildSpec,
    running: Option<Child>,
    /// Restarts of this child so far, for the `agent_restarted` event.
    restarts: u32,
    /// A temporary child that exited is gone for good (OTP deletes its spec).
    removed: bool,
    /// The next backoff delay, when backoff is configured.
    next_delay: Option<Duration>,
    started_at: Instant,
    /// Why the child last exited, for the `agent_restarted` event.
    last_exit: &'static str,
}

struct Supervisor {
    runtime: Arc<Runtime>,
    name: String,
    id: AgentId,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    backoff: Option<crate::manifest::Backoff>,
    slots: Vec<Slot>,
    /// When each restart within the current period happened.
    recent_restarts: VecDeque<Instant>,
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
        let mut supervisor = Supervisor {
            runtime: runtime.clone(),
            name: spec.name.clone(),
            id: runtime.next_id(),
            strategy: spec.strategy,
            intensity: spec.intensity,
            period: spec.period,
            backoff: spec.backoff,
            slots: spec.children.iter().map(|child| Slot::new(child.clone(), spec.backoff)).collect(),
            recent_restarts: VecDeque::new(),
            stopping: HashSet::new(),
            exits,
            exits_sender,
            due,
            due_sender,
            pending_restarts: 0,
            max_children: spec.max_children,
            commands: None,
        };
        if spec.is_dynamic() {
            let (commands, requests) = mpsc::unbounded_channel();
            runtime.dynamic_supervisors.insert(spec.name.clone(), commands);
            supervisor.commands = Some(requests);
        }
        for index in 0..supervisor.slots.len() {
            if let Err(error) = supervisor.start_slot(index).await {
                supervisor.stop_children(0..index).await;
                return Err(error);
            }
        }
        let (name, id, children) = (&supervisor.name, supervisor.id, supervisor.slots.len());
        runtime.observe(&HostEvent::SupervisorStarted { supervisor: name, id, children });
        let stop = StopSignal::default();
        let id = supervisor.id;
        let task = tokio::spawn(supervisor.supervise(stop.clone(), parent));
        Ok(RunningSupervisor { id, stop, task })
    })
}

impl Supervisor {
    async fn supervise(mut self, stop: StopSignal, parent: mpsc::UnboundedSender<Exit>) {
        let reason = loop {
            if self.pending_restarts == 0 {
                if self.commands.is_some() {
                    // A dynamic supervisor forgets its removed children; one that is empty waits.
                    self.slots.retain(|slot| !slot.removed);
                } else if self.slots.iter().all(|slot| slot.running.is_none()) {
                    break ExitReason::Normal;
                }
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
                break ExitReason::Crashed(fault);
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
        if self.commands.is_some() {
            self.runtime.dynamic_supervisors.remove(&self.name);
        }
        self.runtime.observe(&HostEvent::SupervisorExited { supervisor: &self.name, id: self.id, reason: &reason });
        let name: Arc<str> = self.name.as_str().into();
        let _ = parent.send(Exit { id: self.id, name, reason });
    }

    async fn process(&mut self, event: Event) -> Result<(), Fault> {
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

    async fn spawn(&mut self, spec: AgentSpec) -> Result<AgentId, SpawnError> {
        let max = self.max_children.unwrap_or(u32::MAX);
        if self.slots.iter().filter(|slot| !slot.removed).count() >= max as usize {
            return Err(SpawnError::MaxChildren(max));
        }
        self.slots.push(Slot::new(ChildSpec::Agent(spec.into()), self.backoff));
        let index = self.slots.len() - 1;
        match self.start_slot(index).await {
            Ok(()) => Ok(self.slots[index].running.as_ref().map_or(0, Child::id)),
            Err(error) => {
                self.slots.pop();
                Err(match error {
                    StartError::NameTaken { .. } => SpawnError::AlreadyExists,
                    StartError::Failed { fault, .. } => SpawnError::StartFailed(fault.to_string()),
                })
            }
        }
    }

    /// Start (or restart) the child in one slot; its exits are routed to this supervisor.
    async fn start_slot(&mut self, index: usize) -> Result<(), StartError> {
        let exits = self.exits_sender.clone();
        let child = match &self.slots[index].spec {
            ChildSpec::Agent(spec) => {
                let module = self.runtime.module(&spec.module).expect("modules are resolved before a spec exists");
                let started = agent::start(&self.runtime, spec, &module, exits, self.slots[index].restarts).await;
                if let Err(StartError::Failed { agent, fault }) = &started {
                    self.runtime.observe(&HostEvent::AgentStartFailed { agent, fault });
                }
                Child::Agent(started?)
            }
            ChildSpec::Supervisor(spec) => Child::Supervisor(start_supervisor(&self.runtime, spec, exits).await?),
        };
        let slot = &mut self.slots[index];
        slot.running = Some(child);
        slot.started_at = Instant::now();
        Ok(())
    }

    async fn on_exit(&mut self, exit: Exit) -> Result<(), Fault> {
        if self.stopping.remove(&exit.id) {
            return Ok(());
        }
        let Some(index) = self.slots.iter().position(|s| s.running.as_ref().is_some_and(|c| c.id() == exit.id)) else {
            return Ok(());
        };
        let slot = &mut self.slots[index];
        slot.running = None;
        slot.last_exit = exit.reason.code();
        let restart = match slot.spec.restart() {
            Restart::Permanent => true,
            Restart::Transient => exit.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            slot.removed = slot.spec.restart() == Restart::Temporary;
            return Ok(());
        }
        if let (Some(backoff), true) = (self.backoff, slot.started_at.elapsed() > self.period) {
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
            slot.last_exit = "sibling_restart";
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
            slot.next_delay = Some((delay * 2).clamp(backoff.initial, backoff.max));
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
        let now = Instant::now();
        while self.recent_restarts.front().is_some_and(|at| now.duration_since(*at) > self.period) {
            self.recent_restarts.pop_front();
        }
        self.recent_restarts.push_back(now);
        if self.recent_restarts.len() as u32 > self.intensity {
            return Err(Fault::new(
                FaultKind::RestartIntensity,
                format!(
                    "more than {} restarts within {:?}; the last: {} exited with {}",
                    self.intensity,
                    self.period,
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
                        id,
                        restarts: slot.restarts,
                        after: slot.last_exit,
                    });
                }
                Err(error) => {
                    // A restart that fails to start counts as another crash of that child.
                    let fault = match error {
                        StartError::Failed { fault, .. } => fault,
                        StartError::NameTaken { agent } => Fault::new(
                            FaultKind::InitError,
                            format!("the name {agent:?} is registered by another agent"),
                        ),
                    };
                    let name: Arc<str> = self.slots[index].spec.name().into();
                    let exit = Exit { id: 0, name, reason: ExitReason::Crashed(fault) };
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
                let policy = match &slot.spec {
                    ChildSpec::Agent(agent) => agent.shutdown,
                    ChildSpec::Supervisor(supervisor) => supervisor.shutdown,
                };
                self.stopping.insert(child.id());
                child.stop(policy).await;
            }
        }
    }
}
