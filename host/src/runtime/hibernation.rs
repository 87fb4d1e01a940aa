//! Hibernation (`hibernate_after = "30s"`), as `erlang:hibernate` after OTP's `hibernate_after`:
//! an agent idle that long has its state taken through `snapshot`, and its instance dropped,
//! freeing its pool slot and its memory. It stays registered under its name and id with its
//! mailbox open; its links, monitors, subscriptions, locks, groups and wallet stay as they were,
//! held by its state alone: its task ends, and a small one waits for what wakes it ([`Asleep`]).
//! The next message (or an upgrade) wakes it on a new task: a fresh instance of
//! the same module version gets `restore(state)` and then the message, so that senders see only
//! latency. An agent without the state interface hibernates only if its manifest entry says
//! `stateless = true`; it is woken by `init`. A wake that fails is a crash, for its supervisor.
//!
//! A full pool hibernates the least recently used idle agent that can ([`super::live_set`]),
//! whatever its `hibernate_after`. While it sleeps, a description or a request to hibernate is
//! answered without waking it; an upgrade wakes it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::agent::{Booted, Exit, ExitReason, Fault, FaultKind, Instance, StopSignal, new_store};
use super::control::Control;
use super::modules::Module;
use super::state::AgentState;
use super::stats::Phase;
use crate::capabilities::HostEvent;
use crate::messaging::Inbox;
use crate::messaging::Message;
use crate::supervision::links::KillCause;

/// What a hibernation came to.
pub enum Hibernation {
    /// The agent could not hibernate (its `snapshot` refused); it carries on awake.
    Stayed,
    /// It let go of its instance: its task ends, and it sleeps as an [`Asleep`] (with the
    /// state it took, unless a durable agent's is on disk).
    Asleep(Option<Vec<u8>>),
    /// It ended: its snapshot or its wake trapped.
    Ended(ExitReason),
}

impl Instance {
    /// How long the agent may idle before it hibernates, if it may.
    pub(super) fn hibernation_delay(&self) -> Option<Duration> {
        self.store.data().spec.hibernate_after.filter(|_| self.can_hibernate())
    }

    /// Hibernate because a full pool asked ([`Control::Hibernate`]): only an agent that can and
    /// has no message waiting does; `reply` is told which.
    pub(super) async fn hibernate_for_room(
        &mut self,
        booted: &mut Booted,
        reply: oneshot::Sender<bool>,
    ) -> Hibernation {
        if !self.can_hibernate() || !self.inbox().is_empty() {
            let _ = reply.send(false);
            self.enter_live_set();
            return Hibernation::Stayed;
        }
        self.hibernate(booted, Some(reply)).await
    }

    /// Take the state and drop the instance; the caller then ends the agent's task and leaves
    /// it [`Asleep`]. `freed` is told once the instance is gone (or that it is not).
    pub(super) async fn hibernate(&mut self, booted: &mut Booted, freed: Option<oneshot::Sender<bool>>) -> Hibernation {
        let module = self.module.clone();
        let snapshot = match module.state {
            // Boxed, as the wake below: the future of a sleeping agent holds only what it needs
            // to sleep, not the calls made before and after.
            Some(exports) => match Box::pin(self.snapshot(booted, exports)).await {
                Ok(Ok(bytes)) => Some(bytes),
                Ok(Err(refused)) => {
                    tracing::warn!(event = "hibernation_refused", agent = %self.store.data().name,
                        "agent {} stays awake: its snapshot refused: {refused}", self.store.data().name);
                    if let Some(freed) = freed {
                        let _ = freed.send(false);
                    }
                    self.enter_live_set();
                    return Hibernation::Stayed;
                }
                Err(fault) => return Hibernation::Ended(ExitReason::Crashed(fault)),
            },
            None => None,
        };
        // A durable agent's snapshot goes to disk, and only there: it wakes from the disk.
        let durable = self.store.data().spec.durable.is_some();
        let snapshot = match snapshot {
            Some(state) if durable => match Box::pin(self.write_snapshot(state)).await {
                Ok(()) => None,
                Err(fault) => return Hibernation::Ended(ExitReason::Crashed(fault)),
            },
            kept => kept,
        };
        self.leave_live_set();
        // A store with no instance holds the agent's holdings until its task has ended (then
        // only its data is kept, see [`Asleep`]); the old one goes, and its pool slot and
        // memory with it.
        let mut sleeper = self.store.data().successor();
        self.store.data_mut().hand_over(&mut sleeper);
        let store = new_store(module.pre.engine(), sleeper);
        self.meter = store.data().budget.meter.clone();
        drop(std::mem::replace(&mut self.store, store));
        // Hibernated before the pool that asked hears of the room: whoever it then tells sees so.
        let state = self.store.data();
        state.stats.set_phase(Phase::Hibernated);
        if let Some(freed) = freed {
            let _ = freed.send(true);
        }
        let bytes = snapshot.as_ref().map_or(0, Vec::len);
        tracing::info!(event = "agent_hibernated", agent = %state.name, id = state.id, state_bytes = bytes, durable,
            "agent {} hibernated ({bytes} bytes of state in memory)", state.name);
        state.runtime.observe(&HostEvent::AgentHibernated {
            agent: &state.name,
            id: state.id,
            state_bytes: bytes,
            durable,
        });
        Hibernation::Asleep(snapshot)
    }

    /// A fresh instance of the same version, from the snapshot (or from `init`).
    async fn wake(&mut self, snapshot: Option<Vec<u8>>) -> Result<Booted, Fault> {
        let module = self.module.clone();
        let booted = self.instantiate(&module).await?;
        let config = self.store.data().spec.config.clone();
        // A durable agent's state is read back from the disk.
        let snapshot = match snapshot {
            None if self.store.data().spec.durable.is_some() => self.persisted()?.map(|persisted| persisted.state),
            kept => kept,
        };
        let woken = match &snapshot {
            Some(state) => {
                let version = module.version.to_string();
                self.restore(&booted, module.state, &config, state, &version).await
            }
            None => self.init(&booted, &config).await,
        };
        woken
            .map(|()| booted)
            .map_err(|(stage, reason)| Fault::new(FaultKind::InitError, format!("waking ({stage}): {reason}")))
    }
}

/// A hibernated agent: no instance, no store and no task, only what it holds and what wakes it.
/// A small task waits on its mailbox and its stop signal, answers what it can without an
/// instance, and hands the agent to a new task of its own when it must wake.
pub(super) struct Asleep {
    state: AgentState,
    inbox: Inbox,
    stop: StopSignal,
    kill_cause: KillCause,
    tick: Duration,
    module: Module,
    snapshot: Option<Vec<u8>>,
    exits: mpsc::UnboundedSender<Exit>,
    ended: oneshot::Sender<()>,
}

impl Asleep {
    /// Leave the agent asleep: its task has let go of its instance and is about to end.
    pub(super) fn park(instance: Instance, snapshot: Option<Vec<u8>>, exits: mpsc::UnboundedSender<Exit>) {
        let Instance { mut store, inbox, stop, kill_cause, tick, module, ended, .. } = instance;
        let mut inbox = inbox.or_else(|| store.data_mut().batch.inbox.take()).expect("an agent's mailbox");
        // A burst's buffer is not kept for the sleep.
        inbox.compact();
        let state = store.into_data();
        let asleep = Box::new(Asleep { state, inbox, stop, kill_cause, tick, module, snapshot, exits, ended });
        tokio::spawn(asleep.sleep());
    }

    /// Wait, without an instance, for what wakes the agent: a message, a stop, or a request
    /// only an instance can carry out (left queued for the serve loop).
    async fn sleep(mut self: Box<Self>) {
        let stop = self.stop.clone();
        let woken_by = loop {
            let message = tokio::select! {
                biased;
                _ = stop.attention() => None,
                message = self.inbox.recv() => message,
            };
            if message.is_some() || stop.is_killed() || stop.shutdown_asked() || !stop.control_pending() {
                break message;
            }
            let mut wakes = Vec::new();
            for control in stop.take_controls() {
                match control {
                    Control::Describe { reply } => {
                        let _ = reply.send(super::control::describe_state(&self.state));
                    }
                    Control::Hibernate { reply } => {
                        let _ = reply.send(false);
                    }
                    upgrade @ Control::Upgrade { .. } => wakes.push(upgrade),
                }
            }
            if !wakes.is_empty() {
                for control in wakes {
                    stop.control(control);
                }
                break None;
            }
        };
        let snapshot = self.snapshot.take();
        let exits = self.exits.clone();
        let mut instance = self.into_instance();
        if instance.stop.is_killed() {
            // No need to wake what is killed: its holdings end with the sleeper.
            let reason = instance.killed();
            instance.finish(reason, Some(&exits));
            return;
        }
        if instance.stop.shutdown_asked() {
            // Not woken only to stop (no `terminate`): waking a host's every sleeper at its
            // shutdown would need a pool slot for each. A durable agent's state is on disk.
            instance.finish(ExitReason::Shutdown, Some(&exits));
            return;
        }
        // On a task of its own, sized for the serve loop; this one ends.
        tokio::spawn(Instance::resume(instance, snapshot, woken_by, exits));
    }

    /// The agent's instance-to-be: its store again, with no instance yet.
    fn into_instance(self: Box<Self>) -> Instance {
        let Asleep { state, inbox, stop, kill_cause, tick, module, ended, .. } = *self;
        let meter = state.budget.meter.clone();
        let store = new_store(module.pre.engine(), state);
        let inbox = Some(inbox);
        Instance { store, inbox, stop, kill_cause, meter, tick, module, unpersisted: false, held_answer: None, ended }
    }
}

impl Instance {
    /// Wake a sleeper (a fresh instance, `restore` or `init`), then serve, `first` before any
    /// other message. Boxed with an explicit type: this task's future holds the serve loop,
    /// whose hibernation spawns the sleeper that spawns this.
    fn resume(
        mut self,
        snapshot: Option<Vec<u8>>,
        first: Option<Message>,
        exits: mpsc::UnboundedSender<Exit>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let started = quanta::Instant::now();
            self.store.data().stats.set_phase(Phase::Waking);
            let booted = match Box::pin(self.wake(snapshot)).await {
                Ok(booted) => booted,
                Err(fault) => {
                    self.finish(ExitReason::Crashed(fault), Some(&exits));
                    return;
                }
            };
            self.enter_live_set();
            let state = self.store.data();
            let micros = started.elapsed().as_micros() as u64;
            tracing::info!(event = "agent_woken", agent = %state.name, id = state.id, micros,
                "agent {} woke in {micros} µs", state.name);
            state.runtime.observe(&HostEvent::AgentWoken { agent: &state.name, id: state.id, micros });
            self.live(booted, exits, first).await
        })
    }
}
