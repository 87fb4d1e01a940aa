//! Requests an agent's own task carries out between two messages, so that they need no lock
//! on the agent's state and race nothing: an upgrade of its code, and a description of what it
//! holds (OTP's `sys:get_status`), which only its store knows.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::agent::{Booted, ExitReason, Instance};
use super::modules::Module;
use super::state::AgentState;
use super::upgrade::{UpgradeFailed, Upgraded};

pub enum Control {
    Upgrade {
        to: Module,
        trial: Duration,
        reply: oneshot::Sender<Result<Upgraded, UpgradeFailed>>,
    },
    /// The agent's limits and holdings, as JSON.
    Describe {
        reply: oneshot::Sender<Value>,
    },
    /// Hibernate now, to free a pool slot for a start or a wake ([`super::live_set`]): answered
    /// true once the instance is gone, false if the agent could not (it has messages waiting,
    /// its snapshot refused, it is asleep already).
    Hibernate {
        reply: oneshot::Sender<bool>,
    },
}

impl Instance {
    /// Carry out one control request; `Some` when the agent ends because of it.
    pub(super) async fn control(&mut self, booted: &mut Booted, control: Control) -> Option<ExitReason> {
        match control {
            Control::Upgrade { to, trial, reply } => self.upgrade_and_report(booted, to, trial, reply).await,
            Control::Describe { reply } => {
                let _ = reply.send(self.describe());
                None
            }
            // Carried out by the serve loop itself, which then sleeps (see `Instance::serve`).
            Control::Hibernate { reply } => {
                let _ = reply.send(false);
                None
            }
        }
    }

    pub(super) fn describe(&self) -> Value {
        describe_state(self.store.data())
    }
}

/// What an agent's state says of it, with or without an instance.
pub(super) fn describe_state(state: &AgentState) -> Value {
    let spec = &state.spec;
    let capabilities = &state.capabilities;
    let grants: Vec<&str> = crate::capabilities::Grant::all()
        .filter(|grant| spec.grants.allows(*grant))
        .map(|grant| grant.name())
        .collect();
    json!({
        "limits": {
            "memory": spec.limits.memory.bytes(),
            "budget_ms": spec.limits.budget.as_millis() as u64,
            "mailbox": spec.limits.mailbox,
        },
        "grants": grants,
        "holdings": {
            "topics": capabilities.messaging.topics.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "locks": capabilities.coordination.held.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(),
            "groups": capabilities.coordination.groups.clone(),
            "config_subscriptions": capabilities.config.subscriptions.clone(),
        },
    })
}

/// Ask an agent's task to describe itself; `None` when it is busy past `patience` (a long
/// callback) or gone.
pub async fn describe(stop: &super::agent::StopSignal, patience: Duration) -> Option<Value> {
    let (reply, answer) = oneshot::channel();
    stop.control(Control::Describe { reply });
    tokio::time::timeout(patience, answer).await.ok()?.ok()
}
