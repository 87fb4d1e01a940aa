//! Hot code upgrade of one agent, OTP's `sys:suspend` → `code_change` → `sys:resume`, done by the
//! agent's own task between two messages, so that it needs no lock and races nothing:
//!
//! 1. The current message is finished; the task stops taking messages (they keep queueing in the
//!    mailbox, none lost).
//! 2. If the old code exports the `state` interface, its `snapshot` is taken. A refusal keeps the
//!    agent as it was; a trap loses the old instance (a crash, as any trap).
//! 3. The new version is instantiated in a store of its own, under the same id and name; the
//!    agent's holdings in every capability (subscriptions, pending replies, wallet meter, ...)
//!    move to it. It gets `restore(config, state, old version)` if both versions have the state
//!    interface, and `init(config)` otherwise (its state is then lost: a restart on new code).
//! 4. The first message is the trial: while it runs on the new instance the old one is kept. If
//!    the new code fails to instantiate, refuses the state, or traps in that first message, the
//!    agent rolls back to the old instance with its state intact (the trial message is handed
//!    to the old instance, so nothing is lost; what the failed instance did meanwhile, such as a
//!    message it sent, is not undone). When no message comes within the trial window, the
//!    upgrade is kept untried.
//!
//! What the agent did not take messages for (steps 1 to 3) is the upgrade's pause, reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmtime::Store;

use super::agent::{Booted, ExitReason, Fault, Instance, new_store};
use super::invoke;
use super::modules::{Module, StateExports};
use super::state::AgentState;
use crate::capabilities::HostEvent;
use crate::messaging::AgentId;

/// A finished upgrade.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Upgraded {
    pub agent: String,
    pub id: AgentId,
    pub from: String,
    pub to: String,
    /// `state` (snapshot, then restore) or `init` (a restart on the new code: its state is lost).
    pub handoff: &'static str,
    pub state_bytes: Option<usize>,
    /// How long the agent took no message: from suspending the old instance to the new one ready.
    pub paused_us: u64,
    /// `passed` (the first message ran on the new code) or `untried` (none came in the window).
    pub trial: &'static str,
}

/// An upgrade that did not happen, and why.
#[derive(Debug, Clone, serde::Serialize, thiserror::Error)]
#[error("upgrading {agent} from {from} to {to} failed at {stage}: {reason}")]
pub struct UpgradeFailed {
    pub agent: String,
    pub from: String,
    pub to: String,
    /// `unchanged`, `snapshot`, `instantiate`, `restore`, `init` or `first_message`.
    pub stage: &'static str,
    pub reason: String,
    /// The old instance serves on with its state (false only when it trapped in `snapshot`).
    pub rolled_back: bool,
}

/// Why an operator's upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Failed(UpgradeFailed),
    #[error("agent {0:?} exited before it could be upgraded")]
    Exited(String),
    #[error("module {0:?} is not loaded any more")]
    NoModule(String),
}

/// Upgrade one live agent to the current version of its module, and wait for the outcome.
/// The agent's task does it after its current message (see the module's documentation).
pub async fn upgrade(
    runtime: &super::Runtime,
    listed: &super::directory::Listed,
    trial: Duration,
) -> Result<Upgraded, UpgradeError> {
    let to = runtime.module(&listed.module.name).ok_or_else(|| UpgradeError::NoModule(listed.module.name.clone()))?;
    let (reply, answer) = oneshot::channel();
    listed.stop.control(super::control::Control::Upgrade { to, trial, reply });
    match answer.await {
        Ok(outcome) => outcome.map_err(UpgradeError::Failed),
        Err(_) => Err(UpgradeError::Exited(listed.name.to_string())),
    }
}

/// The old instance, kept until the new one has passed its trial.
struct Kept {
    store: Store<AgentState>,
    meter: Arc<super::limits::CpuMeter>,
    module: Module,
    /// None when the new version did not even instantiate (the old exports never left).
    booted: Option<Booted>,
}

impl Instance {
    /// Upgrade the agent (see the module's documentation), report the outcome as an event,
    /// and send it to `reply`; `Some` when the agent ends because of it.
    pub(super) async fn upgrade_and_report(
        &mut self,
        booted: &mut Booted,
        to: Module,
        trial: Duration,
        reply: oneshot::Sender<Result<Upgraded, UpgradeFailed>>,
    ) -> Option<ExitReason> {
        self.store.data().stats.set_phase(super::stats::Phase::Upgrading);
        // Out of the live set while two instances exist; back in under whichever version serves.
        self.leave_live_set();
        let (outcome, exit) = self.upgrade(booted, to, trial).await;
        self.enter_live_set();
        let state = self.store.data();
        let report = match &outcome {
            Ok(done) => serde_json::to_value(done),
            Err(failed) => serde_json::to_value(failed),
        }
        .unwrap_or_default();
        let event = HostEvent::AgentUpgrade { agent: &state.name, id: state.id, report: &report, ok: outcome.is_ok() };
        state.runtime.observe(&event);
        let _ = reply.send(outcome);
        exit
    }

    async fn upgrade(
        &mut self,
        booted: &mut Booted,
        to: Module,
        trial: Duration,
    ) -> (Result<Upgraded, UpgradeFailed>, Option<ExitReason>) {
        let suspended = Instant::now();
        let from = self.module.clone();
        let state = self.store.data();
        let (name, id, spec) = (state.name.to_string(), state.id, state.spec.clone());
        let failed = |stage: &'static str, reason: String, rolled_back: bool| UpgradeFailed {
            agent: name.clone(),
            from: from.version.to_string(),
            to: to.version.to_string(),
            stage,
            reason,
            rolled_back,
        };
        if from.version.hash == to.version.hash {
            return (Err(failed("unchanged", format!("it runs {} already", from.version), true)), None);
        }
        if let Err(why) = super::agent::fits(&to, &spec).and_then(|()| super::agent::durable_fits(&to, &spec)) {
            return (Err(failed("instantiate", why, true)), None);
        }

        // 2. The old state.
        let snapshot = match (from.state, to.state) {
            (Some(exports), Some(_)) => match self.snapshot(booted, exports).await {
                Ok(Ok(bytes)) => Some(bytes),
                Ok(Err(refused)) => {
                    return (Err(failed("snapshot", format!("the running version refused: {refused}"), true)), None);
                }
                Err(fault) => {
                    let exit = if self.stop.is_killed() { self.killed() } else { ExitReason::Crashed(fault.clone()) };
                    let reason = format!("{fault}; the old instance is lost, and its supervisor restarts the agent");
                    return (Err(failed("snapshot", reason, false)), Some(exit));
                }
            },
            _ => None,
        };

        // 3. The new instance, holding what the agent holds.
        let mut successor = self.store.data().successor();
        self.store.data_mut().hand_over(&mut successor);
        let store = new_store(to.pre.engine(), successor);
        let meter = store.data().budget.meter.clone();
        let mut kept = Kept {
            store: std::mem::replace(&mut self.store, store),
            meter: std::mem::replace(&mut self.meter, meter),
            module: std::mem::replace(&mut self.module, to.clone()),
            booted: None,
        };
        match self.instantiate(&to).await {
            Ok(new) => kept.booted = Some(std::mem::replace(booted, new)),
            Err(fault) => return self.rolled_back(booted, kept, failed("instantiate", fault.to_string(), true)),
        }
        let from_version = from.version.to_string();
        let handoff = match &snapshot {
            Some(bytes) => self.restore(booted, to.state, &spec.config, bytes, &from_version).await.map(|()| "state"),
            None => self.init(booted, &spec.config).await.map(|()| "init"),
        };
        if let Err((stage, reason)) = handoff {
            return self.rolled_back(booted, kept, failed(stage, reason, true));
        }
        let handoff = handoff.unwrap_or("init");
        let paused_us = suspended.elapsed().as_micros() as u64;

        // 4. The trial.
        let stop = self.stop.clone();
        let first = match self.inbox().try_recv() {
            Ok(message) => Some(message),
            Err(_) => tokio::select! {
                biased;
                _ = stop.shutdown_requested() => None,
                message = self.inbox().recv() => message,
                _ = tokio::time::sleep(trial) => None,
            },
        };
        let mut tried = "untried";
        if let Some(message) = first {
            let delivery = self.prepare(message);
            let outcome = match invoke::arm(&mut self.store) {
                Ok(()) => self.deliver(&booted.agent, &delivery).await,
                // Held by a gate (a wallet that cannot pay): the message is not the new code's
                // fault; hand it to the old instance, and report the upgrade untried.
                Err(gate) => Err(gate.fault),
            };
            // A durable agent's state is written (and the reply released) as after any message.
            let outcome = match outcome {
                Ok(()) => self.after_message(booted).await,
                failed => failed,
            };
            match outcome {
                Ok(()) => tried = "passed",
                Err(_) if stop.is_killed() => {
                    return (Err(failed("first_message", "killed".into(), false)), Some(self.killed()));
                }
                Err(fault) => {
                    let reason = format!("{fault} (the message was handed to the old instance)");
                    let report = self.rolled_back(booted, kept, failed("first_message", reason, true));
                    // The old instance takes the message the new one failed.
                    let retried = match invoke::arm(&mut self.store) {
                        Ok(()) => self.deliver(&booted.agent, &delivery).await,
                        Err(gate) => Err(gate.fault),
                    };
                    let retried = match retried {
                        Ok(()) => self.after_message(booted).await,
                        failed => failed,
                    };
                    return match retried {
                        Ok(()) => report,
                        Err(fault) => (report.0, Some(ExitReason::Crashed(fault))),
                    };
                }
            }
        }
        // The old instance goes; its store owns nothing of the agent's any more.
        drop(kept);
        let runtime = self.store.data().runtime.clone();
        runtime.directory.upgraded(id, to.clone());
        let state_bytes = snapshot.as_ref().map(Vec::len);
        let done = Upgraded {
            agent: name.clone(),
            id,
            from: from_version,
            to: to.version.to_string(),
            handoff,
            state_bytes,
            paused_us,
            trial: tried,
        };
        (Ok(done), None)
    }

    /// Put the old instance back, holdings and all.
    fn rolled_back(
        &mut self,
        booted: &mut Booted,
        kept: Kept,
        failed: UpgradeFailed,
    ) -> (Result<Upgraded, UpgradeFailed>, Option<ExitReason>) {
        let Kept { store, meter, module, booted: old } = kept;
        if let Some(old) = old {
            *booted = old;
        }
        let mut new_store = std::mem::replace(&mut self.store, store);
        new_store.data_mut().hand_over(self.store.data_mut());
        self.meter = meter;
        self.module = module;
        drop(new_store);
        (Err(failed), None)
    }

    pub(super) async fn snapshot(
        &mut self,
        booted: &Booted,
        exports: StateExports,
    ) -> Result<Result<Vec<u8>, String>, Fault> {
        invoke::arm(&mut self.store).map_err(|gate| gate.fault)?;
        let call = async {
            let snapshot =
                booted.instance.get_typed_func::<(), (Result<Vec<u8>, String>,)>(&mut self.store, exports.snapshot)?;
            snapshot.call_async(&mut self.store, ()).await.map(|(result,)| result)
        };
        let outcome = invoke::metered(&self.meter, self.tick, call).await;
        invoke::finish(&mut self.store, outcome, "snapshot")
    }

    pub(super) async fn restore(
        &mut self,
        booted: &Booted,
        exports: Option<StateExports>,
        config: &[(String, String)],
        state: &[u8],
        from: &str,
    ) -> Result<(), (&'static str, String)> {
        let exports = exports.ok_or(("restore", "the new version has no state interface".to_string()))?;
        invoke::arm(&mut self.store).map_err(|gate| ("restore", gate.fault.to_string()))?;
        let call = async {
            let restore = booted.instance.get_typed_func::<(&[(String, String)], &[u8], &str), (Result<(), String>,)>(
                &mut self.store,
                exports.restore,
            )?;
            restore.call_async(&mut self.store, (config, state, from)).await.map(|(result,)| result)
        };
        let outcome = invoke::metered(&self.meter, self.tick, call).await;
        match invoke::finish(&mut self.store, outcome, "restore") {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(("restore", format!("its restore refused the state: {refused}"))),
            Err(fault) => Err(("restore", fault.to_string())),
        }
    }

    pub(super) async fn init(
        &mut self,
        booted: &Booted,
        config: &[(String, String)],
    ) -> Result<(), (&'static str, String)> {
        invoke::arm(&mut self.store).map_err(|gate| ("init", gate.fault.to_string()))?;
        let outcome = invoke::metered(&self.meter, self.tick, booted.agent.call_init(&mut self.store, config)).await;
        match invoke::finish(&mut self.store, outcome, "init") {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(("init", format!("init failed: {refused}"))),
            Err(fault) => Err(("init", fault.to_string())),
        }
    }
}
