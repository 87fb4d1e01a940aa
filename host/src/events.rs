//! Lifecycle events. Each is one `tracing` event with an `event` field naming it, so that
//! `--log-format json` yields one JSON object per line that tools and tests can match on.

use std::time::Duration;

use crate::messaging::AgentId;
use crate::runtime::agent::{ExitReason, Fault};

pub fn agent_started(agent: &str, id: AgentId, module: &str, took: Duration) {
    tracing::info!(
        target: "agora::lifecycle",
        event = "agent_started",
        agent,
        id,
        module,
        micros = took.as_micros() as u64,
        "agent {agent} started"
    );
}

pub fn agent_exited(agent: &str, id: AgentId, reason: &ExitReason, undelivered: usize, peak_memory: usize) {
    match reason {
        ExitReason::Crashed(fault) => crashed(agent, id, "agent_exited", fault, undelivered, peak_memory),
        _ => tracing::info!(
            target: "agora::lifecycle",
            event = "agent_exited",
            agent,
            id,
            reason = reason.code(),
            undelivered,
            peak_memory,
            "agent {agent} exited: {}",
            reason.code()
        ),
    }
}

pub fn agent_start_failed(agent: &str, fault: &Fault) {
    crashed(agent, 0, "agent_start_failed", fault, 0, 0);
}

fn crashed(agent: &str, id: AgentId, event: &str, fault: &Fault, undelivered: usize, peak_memory: usize) {
    tracing::error!(
        target: "agora::lifecycle",
        event,
        agent,
        id,
        reason = fault.kind.code(),
        detail = %fault.detail,
        output = fault.output.as_deref(),
        backtrace = fault.backtrace.as_deref(),
        undelivered,
        peak_memory,
        "agent {agent} crashed: {fault}"
    );
}

pub fn run_finished(outcome: &str, normal: usize, shutdown: usize, crashed: usize) {
    tracing::info!(
        target: "agora::lifecycle",
        event = "run_finished",
        reason = outcome,
        normal,
        shutdown,
        crashed,
        "run finished ({outcome}): {normal} normal, {shutdown} shut down, {crashed} crashed"
    );
}
