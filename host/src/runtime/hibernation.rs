//! Hibernation (`hibernate_after = "30s"`), as `erlang:hibernate` after OTP's `hibernate_after`:
//! an agent idle that long has its state taken through `snapshot`, and its instance dropped,
//! freeing its pool slot and its memory. It stays registered under its name and id with its
//! mailbox open; its links, monitors, subscriptions, locks, groups and wallet stay as they were,
//! held by a store with no instance. The next message (or a stop) wakes it: a fresh instance of
//! the same module version gets `restore(state)` and then the message, so that senders see only
//! latency. An agent without the state interface hibernates only if its manifest entry says
//! `stateless = true`; it is woken by `init`. A wake that fails is a crash, for its supervisor.
//!
//! A full pool hibernates the least recently used idle agent that can ([`super::live_set`]),
//! whatever its `hibernate_after`. While it sleeps, a description or a request to hibernate is
//! answered without waking it; an upgrade wakes it.

use std::time::Duration;

use tokio::sync::oneshot;

use super::agent::{Booted, ExitReason, Fault, FaultKind, Instance, new_store};
use super::control::Control;
use super::stats::Phase;
use crate::capabilities::HostEvent;
use crate::messaging::Message;

/// What a hibernation came to.
pub enum Hibernation {
    /// The agent could not hibernate (its `snapshot` refused); it carries on awake.
    Stayed,
    /// It woke, for this message (or, with `None`, for a stop or a control request).
    Woke(Option<Message>),
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
        if !self.can_hibernate() || !self.inbox.is_empty() {
            let _ = reply.send(false);
            self.enter_live_set();
            return Hibernation::Stayed;
        }
        self.hibernate(booted, Some(reply)).await
    }

    /// Take the state, drop the instance, sleep until a message (or a stop, or an upgrade)
    /// comes, then wake. `freed` is told once the instance is gone (or that it is not).
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
        // A store with no instance holds what the agent holds while it sleeps; the old one goes,
        // and its pool slot and memory with it.
        let mut sleeper = self.store.data().successor();
        self.store.data_mut().hand_over(&mut sleeper);
        let store = new_store(module.pre.engine(), sleeper);
        self.meter = store.data().budget.meter.clone();
        drop(std::mem::replace(&mut self.store, store));
        if let Some(freed) = freed {
            let _ = freed.send(true);
        }
        let state = self.store.data();
        state.stats.set_phase(Phase::Hibernated);
        let bytes = snapshot.as_ref().map_or(0, Vec::len);
        tracing::info!(event = "agent_hibernated", agent = %state.name, id = state.id, state_bytes = bytes, durable,
            "agent {} hibernated ({bytes} bytes of state in memory)", state.name);
        state.runtime.observe(&HostEvent::AgentHibernated {
            agent: &state.name,
            id: state.id,
            state_bytes: bytes,
            durable,
        });

        let woken_by = self.sleep().await;
        if self.stop.is_killed() {
            // No need to wake what is killed: its holdings end with the sleeping store.
            return Hibernation::Ended(self.killed());
        }
        if self.stop.shutdown_asked() {
            // Not woken only to stop (no `terminate`): waking a host's every sleeper at its
            // shutdown would need a pool slot for each. A durable agent's state is on disk.
            return Hibernation::Ended(ExitReason::Shutdown);
        }
        let started = quanta::Instant::now();
        self.store.data().stats.set_phase(Phase::Waking);
        if let Err(fault) = Box::pin(self.wake(booted, snapshot)).await {
            return Hibernation::Ended(ExitReason::Crashed(fault));
        }
        self.enter_live_set();
        let state = self.store.data();
        let micros = started.elapsed().as_micros() as u64;
        tracing::info!(event = "agent_woken", agent = %state.name, id = state.id, micros,
            "agent {} woke in {micros} µs", state.name);
        state.runtime.observe(&HostEvent::AgentWoken { agent: &state.name, id: state.id, micros });
        Hibernation::Woke(woken_by)
    }

    /// Wait, without an instance, for what wakes the agent: a message (returned), a stop, or a
    /// request only an instance can carry out (left queued for the serve loop).
    async fn sleep(&mut self) -> Option<Message> {
        let stop = self.stop.clone();
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.attention() => None,
                message = self.inbox.recv() => message,
            };
            if message.is_some() || stop.is_killed() || stop.shutdown_asked() || !stop.control_pending() {
                return message;
            }
            let mut wakes = Vec::new();
            for control in stop.take_controls() {
                match control {
                    Control::Describe { reply } => {
                        let _ = reply.send(self.describe());
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
                return None;
            }
        }
    }

    /// A fresh instance of the same version, from the snapshot (or from `init`).
    async fn wake(&mut self, booted: &mut Booted, snapshot: Option<Vec<u8>>) -> Result<(), Fault> {
        let module = self.module.clone();
        *booted = self.instantiate(&module).await?;
        let config = self.store.data().spec.config.clone();
        // A durable agent's state is read back from the disk.
        let snapshot = match snapshot {
            None if self.store.data().spec.durable.is_some() => self.persisted()?.map(|persisted| persisted.state),
            kept => kept,
        };
        let woken = match &snapshot {
            Some(state) => {
                let version = module.version.to_string();
                self.restore(booted, module.state, &config, state, &version).await
            }
            None => self.init(booted, &config).await,
        };
        woken.map_err(|(stage, reason)| Fault::new(FaultKind::InitError, format!("waking ({stage}): {reason}")))
    }
}
