//! Hibernation (`hibernate_after = "30s"`), as `erlang:hibernate` after OTP's `hibernate_after`:
//! an agent idle that long has its state taken through `snapshot`, and its instance dropped,
//! freeing its pool slot and its memory. It stays registered under its name and id with its
//! mailbox open; its links, monitors, subscriptions, locks, groups and wallet stay as they were,
//! held by a store with no instance. The next message (or a stop) wakes it: a fresh instance of
//! the same module version gets `restore(state)` and then the message, so that senders see only
//! latency. An agent without the state interface hibernates only if its manifest entry says
//! `stateless = true`; it is woken by `init`. A wake that fails is a crash, for its supervisor.
//!
//! Not yet here (issue 18): a host-wide cap on live instances with least-recently-used eviction,
//! durable snapshots, and the event-store records of hibernation.

use std::time::Duration;

use super::agent::{Booted, ExitReason, Fault, FaultKind, Instance, new_store};
use super::stats::Phase;
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
        let spec = &self.store.data().spec;
        spec.hibernate_after.filter(|_| self.module.state.is_some() || spec.stateless)
    }

    pub(super) async fn hibernate(&mut self, booted: &mut Booted) -> Hibernation {
        let module = self.module.clone();
        let snapshot = match module.state {
            Some(exports) => match self.snapshot(booted, exports).await {
                Ok(Ok(bytes)) => Some(bytes),
                Ok(Err(refused)) => {
                    tracing::warn!(event = "hibernation_refused", agent = %self.store.data().name,
                        "agent {} stays awake: its snapshot refused: {refused}", self.store.data().name);
                    return Hibernation::Stayed;
                }
                Err(fault) => return Hibernation::Ended(ExitReason::Crashed(fault)),
            },
            None => None,
        };
        // A store with no instance holds what the agent holds while it sleeps; the old one goes,
        // and its pool slot and memory with it.
        let mut sleeper = self.store.data().successor();
        self.store.data_mut().hand_over(&mut sleeper);
        let store = new_store(module.pre.engine(), sleeper);
        self.meter = store.data().budget.meter.clone();
        drop(std::mem::replace(&mut self.store, store));
        let state = self.store.data();
        state.stats.set_phase(Phase::Hibernated);
        let bytes = snapshot.as_ref().map_or(0, Vec::len);
        tracing::info!(event = "agent_hibernated", agent = %state.name, id = state.id, state_bytes = bytes,
            "agent {} hibernated ({bytes} bytes of state)", state.name);

        let stop = self.stop.clone();
        let woken_by = tokio::select! {
            biased;
            _ = stop.attention() => None,
            message = self.inbox.recv() => message,
        };
        if stop.is_killed() {
            // No need to wake what is killed: its holdings end with the sleeping store.
            return Hibernation::Ended(self.killed());
        }
        let started = quanta::Instant::now();
        if let Err(fault) = self.wake(booted, snapshot).await {
            return Hibernation::Ended(ExitReason::Crashed(fault));
        }
        let state = self.store.data();
        let micros = started.elapsed().as_micros() as u64;
        tracing::info!(event = "agent_woken", agent = %state.name, id = state.id, micros,
            "agent {} woke in {micros} µs", state.name);
        Hibernation::Woke(woken_by)
    }

    /// A fresh instance of the same version, from the snapshot (or from `init`).
    async fn wake(&mut self, booted: &mut Booted, snapshot: Option<Vec<u8>>) -> Result<(), Fault> {
        let module = self.module.clone();
        *booted = self.instantiate(&module).await?;
        let config = self.store.data().spec.config.clone();
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
