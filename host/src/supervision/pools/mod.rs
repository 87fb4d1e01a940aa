//! Worker pools, with poolboy's semantics (the pool library the original system wrapped for its
//! connection manager). `[pools.<name>]` keeps `size` workers of one module started, and
//! starts up to `overflow` more while every one is checked out.
//!
//! A pool is one task, a child of the root supervisor started before the manifest's agents;
//! its workers are its own (not a supervisor's): it starts them, hears their exits, and
//! replaces them. The rules are poolboy's:
//! - a checkout takes a free worker (`lifo`: the one returned last; `fifo`: the one free
//!   longest); with none free it starts an overflow worker while fewer than `overflow` run;
//!   otherwise it waits, first come first served, up to its timeout (`full` at once when it
//!   does not wait);
//! - a checkin hands the worker to the first waiter; with none waiting, an overflow worker is
//!   stopped (dismissed), any other goes back to the free ones;
//! - a worker that exits while checked out ends that checkout and is replaced: a waiter gets
//!   the new worker, or, while overflow workers run, one fewer runs; a free worker that exits is
//!   replaced among the free ones;
//! - a holder that exits checks in everything it holds, and its waiting checkouts end.
//!
//! Where Agora differs from poolboy: only the holder of a checkout can check it in (poolboy
//! takes a pid from anyone; here one agent must not return another's worker), and a checkout
//! that times out is ended by the pool itself, so a worker never goes to a caller that stopped
//! waiting. A replacement that fails to start fails the pool, which its supervisor restarts
//! (poolboy crashes there too); a worker that keeps crashing is replaced every time, as there.

pub mod host;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::bindings::pools::{PoolError, PoolState, PoolStatus};
use crate::capabilities::hooks::HostEvent;
use crate::manifest::{AgentSpec, PoolSpec, PoolStrategy, Shutdown};
use crate::messaging::AgentId;
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Exit, ExitReason, Fault, FaultKind, RunningAgent, StartError, StopSignal};

/// What an agent (through the `pools` interface) or the host asks of a pool.
pub enum Request {
    Checkout {
        holder: AgentId,
        timeout: Duration,
        reply: oneshot::Sender<Result<AgentId, PoolError>>,
    },
    Checkin {
        holder: AgentId,
        worker: AgentId,
        reply: oneshot::Sender<Result<(), PoolError>>,
    },
    Status {
        reply: oneshot::Sender<PoolStatus>,
    },
    /// An agent that checked out from this pool has exited.
    HolderExited {
        holder: AgentId,
    },
}

/// A running pool, as its supervisor holds it.
pub struct RunningPool {
    pub id: AgentId,
    stop: StopSignal,
    task: tokio::task::JoinHandle<()>,
}

impl RunningPool {
    /// Stop it as a supervisor does (its workers first) and wait until it is gone.
    pub async fn stop(self, policy: Shutdown) {
        self.stop.apply(policy, Some(self.task)).await
    }
}

/// A checkout waiting for a worker.
struct Waiter {
    serial: u64,
    holder: AgentId,
    deadline: Instant,
    reply: oneshot::Sender<Result<AgentId, PoolError>>,
}

struct Pool {
    runtime: Arc<Runtime>,
    spec: Arc<PoolSpec>,
    /// Its name, shared by its workers' directory entries.
    label: Arc<str>,
    id: AgentId,
    workers: HashMap<AgentId, RunningAgent>,
    /// Free workers, the next one to lend first.
    free: VecDeque<AgentId>,
    /// Checked-out workers and who holds each.
    lent: HashMap<AgentId, AgentId>,
    waiting: VecDeque<Waiter>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_waiter: u64,
    /// Overflow workers running now (poolboy counts them, it does not mark which they are).
    overflow: u32,
    /// For worker names: `<pool>.<n>`, never reused within a run of the pool.
    started: u64,
    /// Workers the pool is stopping itself: their exits are expected.
    dismissed: HashSet<AgentId>,
    exits: mpsc::UnboundedReceiver<Exit>,
    exits_sender: mpsc::UnboundedSender<Exit>,
    requests: mpsc::UnboundedReceiver<Request>,
}

/// Start a pool and its `size` workers (in order), then hand it to a task of its own. If a
/// worker cannot start, those started are stopped and the error returned.
pub fn start_pool<'a>(
    runtime: &'a Arc<Runtime>,
    spec: &'a Arc<PoolSpec>,
    parent: mpsc::UnboundedSender<Exit>,
) -> Pin<Box<dyn Future<Output = Result<RunningPool, StartError>> + Send + 'a>> {
    Box::pin(async move {
        let id = runtime.next_id();
        let name: Arc<str> = spec.name.as_str().into();
        // Registered as a supervisor is: it can be found, monitored and linked.
        if runtime.registry.enter(id, &name, &[]).is_err() {
            return Err(StartError::NameTaken { agent: spec.name.clone() });
        }
        let stop = StopSignal::default();
        runtime.links.enter_supervisor(id, stop.clone());
        let (exits_sender, exits) = mpsc::unbounded_channel();
        let (requests_sender, requests) = mpsc::unbounded_channel();
        let mut pool = Pool {
            runtime: runtime.clone(),
            spec: spec.clone(),
            label: name,
            id,
            workers: HashMap::new(),
            free: VecDeque::new(),
            lent: HashMap::new(),
            waiting: VecDeque::new(),
            deadlines: BTreeSet::new(),
            next_waiter: 0,
            overflow: 0,
            started: 0,
            dismissed: HashSet::new(),
            exits,
            exits_sender,
            requests,
        };
        for _ in 0..spec.size {
            match pool.start_worker().await {
                Ok(worker) => pool.free.push_back(worker),
                Err(error) => {
                    pool.stop_workers(Shutdown::BrutalKill).await;
                    pool.leave(&ExitReason::Shutdown);
                    return Err(error);
                }
            }
        }
        runtime.services.pools.open(&spec.name, requests_sender, spec.checkout_timeout);
        tracing::info!(event = "pool_started", pool = %spec.name, id, size = spec.size, overflow = spec.overflow,
            "pool {} started with {} workers of {} (up to {} more on demand)",
            spec.name, spec.size, spec.worker.module, spec.overflow);
        let task = tokio::spawn(pool.run(stop.clone(), parent));
        Ok(RunningPool { id, stop, task })
    })
}

impl Pool {
    async fn run(mut self, stop: StopSignal, parent: mpsc::UnboundedSender<Exit>) {
        let reason = loop {
            let next_deadline = self.deadlines.first().map(|(at, _)| *at);
            let expire = async {
                match next_deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                biased;
                _ = stop.killed() => break ExitReason::Killed,
                _ = stop.shutdown_requested() => break ExitReason::Shutdown,
                exit = self.exits.recv() => Event::Exit(exit.expect("the pool holds a sender")),
                Some(request) = self.requests.recv() => Event::Request(request),
                () = expire => Event::Expire,
            };
            // A panic in this host code fails the pool (its supervisor restarts it) instead of
            // leaving its workers unmanaged.
            let outcome = match AssertUnwindSafe(self.process(event)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Err(Fault::new(FaultKind::HostPanic, agent::panic_message(&*panic))),
            };
            if let Err(fault) = outcome {
                // Journaled as a supervisor's failure is: the pool supervises its workers.
                self.runtime.observe(&HostEvent::SupervisorFailed {
                    supervisor: &self.spec.name,
                    id: self.id,
                    fault: &fault,
                });
                break ExitReason::Crashed(fault);
            }
        };
        let policy = match reason {
            ExitReason::Killed => Shutdown::BrutalKill,
            _ => self.spec.worker.shutdown,
        };
        self.stop_workers(policy).await;
        self.leave(&reason);
        self.runtime.observe(&HostEvent::SupervisorExited {
            supervisor: &self.spec.name,
            id: self.id,
            reason: &reason,
        });
        let _ = parent.send(Exit { id: self.id, name: self.label.clone(), reason });
    }

    async fn process(&mut self, event: Event) -> Result<(), Fault> {
        // AGORA_INJECT_FAULT=pool:<name>: a panic in this pool's host code.
        if crate::infra::faults::fires("pool", &self.spec.name) {
            panic!("injected fault in the pool");
        }
        match event {
            Event::Exit(exit) => self.on_worker_exit(exit).await,
            Event::Expire => {
                self.expire(Instant::now());
                Ok(())
            }
            Event::Request(Request::Checkout { holder, timeout, reply }) => self.checkout(holder, timeout, reply).await,
            Event::Request(Request::Checkin { holder, worker, reply }) => {
                if self.lent.get(&worker) != Some(&holder) {
                    let _ = reply.send(Err(PoolError::NotCheckedOut));
                    return Ok(());
                }
                self.lent.remove(&worker);
                let _ = reply.send(Ok(()));
                self.checkin(worker);
                Ok(())
            }
            Event::Request(Request::Status { reply }) => {
                let _ = reply.send(self.status());
                Ok(())
            }
            Event::Request(Request::HolderExited { holder }) => {
                let held: Vec<AgentId> =
                    self.lent.iter().filter(|(_, h)| **h == holder).map(|(worker, _)| *worker).collect();
                for worker in held {
                    self.lent.remove(&worker);
                    self.checkin(worker);
                }
                let gone: Vec<(Instant, u64)> =
                    self.waiting.iter().filter(|w| w.holder == holder).map(|w| (w.deadline, w.serial)).collect();
                for key in gone {
                    self.deadlines.remove(&key);
                }
                self.waiting.retain(|w| w.holder != holder);
                Ok(())
            }
        }
    }

    async fn checkout(
        &mut self,
        holder: AgentId,
        timeout: Duration,
        reply: oneshot::Sender<Result<AgentId, PoolError>>,
    ) -> Result<(), Fault> {
        if let Some(worker) = self.free.pop_front() {
            self.lend(worker, holder, reply);
            return Ok(());
        }
        if self.overflow < self.spec.overflow {
            let worker = self.start_worker().await.map_err(|e| replacement_fault(&e))?;
            self.overflow += 1;
            self.lend(worker, holder, reply);
            return Ok(());
        }
        if timeout.is_zero() {
            let _ = reply.send(Err(PoolError::Full));
            return Ok(());
        }
        self.next_waiter += 1;
        let deadline = Instant::now() + timeout;
        self.deadlines.insert((deadline, self.next_waiter));
        self.waiting.push_back(Waiter { serial: self.next_waiter, holder, deadline, reply });
        Ok(())
    }

    /// Lend `worker` to `holder`; if the holder stopped waiting meanwhile, the worker is
    /// returned as a checkin would return it.
    fn lend(&mut self, worker: AgentId, holder: AgentId, reply: oneshot::Sender<Result<AgentId, PoolError>>) {
        self.lent.insert(worker, holder);
        if reply.send(Ok(worker)).is_err() {
            self.lent.remove(&worker);
            self.checkin(worker);
        }
    }

    /// A worker comes back (poolboy's `handle_checkin`).
    fn checkin(&mut self, worker: AgentId) {
        if let Some(waiter) = self.next_waiter() {
            return self.lend(worker, waiter.holder, waiter.reply);
        }
        if self.overflow > 0 {
            self.overflow -= 1;
            self.dismiss(worker);
            return;
        }
        match self.spec.strategy {
            PoolStrategy::Lifo => self.free.push_front(worker),
            PoolStrategy::Fifo => self.free.push_back(worker),
        }
    }

    /// The first waiter still waiting, taken from the queue.
    fn next_waiter(&mut self) -> Option<Waiter> {
        while let Some(waiter) = self.waiting.pop_front() {
            self.deadlines.remove(&(waiter.deadline, waiter.serial));
            if !waiter.reply.is_closed() {
                return Some(waiter);
            }
        }
        None
    }

    /// End the checkouts whose time is up with `timeout`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, serial)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(index) = self.waiting.iter().position(|w| w.serial == serial) {
                let waiter = self.waiting.remove(index).expect("the index is in the queue");
                let _ = waiter.reply.send(Err(PoolError::Timeout));
            }
        }
    }

    /// poolboy's `handle_worker_exit`, and the exit of a free worker.
    async fn on_worker_exit(&mut self, exit: Exit) -> Result<(), Fault> {
        if self.dismissed.remove(&exit.id) {
            return Ok(());
        }
        if self.workers.remove(&exit.id).is_none() {
            return Ok(());
        }
        tracing::info!(event = "pool_worker_replaced", pool = %self.spec.name, worker = exit.id,
            reason = exit.reason.code(), lent = self.lent.contains_key(&exit.id),
            "pool {}: worker {} exited ({}); replacing it", self.spec.name, exit.name, exit.reason.code());
        if self.lent.remove(&exit.id).is_some() {
            if let Some(waiter) = self.next_waiter() {
                let worker = self.start_worker().await.map_err(|e| replacement_fault(&e))?;
                self.lend(worker, waiter.holder, waiter.reply);
            } else if self.overflow > 0 {
                self.overflow -= 1;
            } else {
                let worker = self.start_worker().await.map_err(|e| replacement_fault(&e))?;
                self.free.push_back(worker);
            }
            return Ok(());
        }
        // A replacement joins the end of the free ones, as in poolboy (`queue:in`).
        self.free.retain(|worker| *worker != exit.id);
        let worker = self.start_worker().await.map_err(|e| replacement_fault(&e))?;
        self.free.push_back(worker);
        Ok(())
    }

    fn status(&self) -> PoolStatus {
        // poolboy's `state_name`.
        let state = if self.overflow < 1 {
            match (self.free.is_empty(), self.spec.overflow < 1) {
                (true, true) => PoolState::Full,
                (true, false) => PoolState::Overflow,
                (false, _) => PoolState::Ready,
            }
        } else if self.overflow == self.spec.overflow {
            PoolState::Full
        } else {
            PoolState::Overflow
        };
        PoolStatus {
            state,
            available: self.free.len() as u32,
            overflow: self.overflow,
            checked_out: self.lent.len() as u32,
            waiting: self.waiting.iter().filter(|w| !w.reply.is_closed()).count() as u32,
        }
    }

    async fn start_worker(&mut self) -> Result<AgentId, StartError> {
        self.started += 1;
        let spec = Arc::new(AgentSpec {
            name: format!("{}.{}", self.spec.name, self.started),
            ..AgentSpec::clone(&self.spec.worker)
        });
        let module = self.runtime.module(&spec.module).expect("modules are resolved before a spec exists");
        let worker =
            agent::start_under(&self.runtime, &spec, &module, self.exits_sender.clone(), 0, &self.label).await?;
        if worker.ignored {
            // OTP's `ignore` from a worker's `init`: nothing to lend.
            let fault = Fault::new(FaultKind::StartFailed, format!("worker {} stopped during init", spec.name));
            return Err(StartError::Failed { agent: spec.name.clone(), fault });
        }
        let id = worker.id;
        self.workers.insert(id, worker);
        Ok(id)
    }

    /// Stop one worker in the background (an overflow worker coming back).
    fn dismiss(&mut self, worker: AgentId) {
        if let Some(running) = self.workers.remove(&worker) {
            self.dismissed.insert(worker);
            let policy = self.spec.worker.shutdown;
            tokio::spawn(running.stop(policy));
        }
    }

    /// Stop every worker, all at once, and wait until they are gone.
    async fn stop_workers(&mut self, policy: Shutdown) {
        let stopping: Vec<_> = self.workers.drain().map(|(_, worker)| worker.stop(policy)).collect();
        futures_util::future::join_all(stopping).await;
        self.free.clear();
        self.lent.clear();
    }

    /// Leave the pools' directory, the registry and the links table; waiters hear `stopped`.
    fn leave(&mut self, reason: &ExitReason) {
        self.runtime.services.pools.close(&self.spec.name);
        for waiter in self.waiting.drain(..) {
            let _ = waiter.reply.send(Err(PoolError::Stopped));
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            refuse(request);
        }
        self.runtime.registry.leave(self.id);
        self.runtime.links.exit(&self.runtime.router, self.id, reason);
    }
}

enum Event {
    Exit(Exit),
    Request(Request),
    Expire,
}

/// A request the pool will not carry out: it stopped.
fn refuse(request: Request) {
    match request {
        Request::Checkout { reply, .. } => drop(reply.send(Err(PoolError::Stopped))),
        Request::Checkin { reply, .. } => drop(reply.send(Err(PoolError::Stopped))),
        Request::Status { .. } | Request::HolderExited { .. } => {}
    }
}

/// A worker that could not be started where the pool needed one: the pool fails.
fn replacement_fault(error: &StartError) -> Fault {
    match error {
        StartError::Failed { agent, fault } => {
            Fault::new(fault.kind, format!("a new worker ({agent}) failed to start: {}", fault.detail))
        }
        StartError::NameTaken { agent } => Fault::new(
            FaultKind::StartFailed,
            format!("a new worker could not register as {agent:?}: another agent holds that name"),
        ),
    }
}
