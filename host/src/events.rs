//! Lifecycle events. Each is one `tracing` event with an `event` field naming it, so that
//! `--log-format json` yields one JSON object per line that tools and tests can match on.

use std::time::Duration;

use crate::messaging::AgentId;
use crate::runtime::ExitTally;
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

pub fn run_finished(outcome: &str, tally: &ExitTally) {
    let count = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
    let (normal, shutdown, killed, crashed) =
        (count(&tally.normal), count(&tally.shutdown), count(&tally.killed), count(&tally.crashed));
    tracing::info!(
        target: "agora::lifecycle",
        event = "run_finished",
        reason = outcome,
        normal,
        shutdown,
        killed,
        crashed,
        "run finished ({outcome}): agents exited {normal} normal, {shutdown} shutdown, {killed} killed, {crashed} crashed"
    );
}

pub fn supervisor_started(supervisor: &str, id: AgentId, children: usize) {
    tracing::info!(
        target: "agora::lifecycle",
        event = "supervisor_started",
        supervisor,
        id,
        children,
        "supervisor {supervisor} started {children} children"
    );
}

pub fn supervisor_failed(supervisor: &str, id: AgentId, fault: &Fault) {
    tracing::error!(
        target: "agora::lifecycle",
        event = "supervisor_failed",
        supervisor,
        id,
        reason = fault.kind.code(),
        detail = %fault.detail,
        "supervisor {supervisor} failed: {fault}; stopping its children"
    );
}

pub fn supervisor_exited(supervisor: &str, id: AgentId, reason: &ExitReason) {
    tracing::info!(
        target: "agora::lifecycle",
        event = "supervisor_exited",
        supervisor,
        id,
        reason = reason.code(),
        "supervisor {supervisor} exited: {}",
        reason.code()
    );
}

pub fn child_restarted(agent: &str, id: AgentId, restarts: u32, after: &str) {
    tracing::info!(
        target: "agora::lifecycle",
        event = "agent_restarted",
        agent,
        id,
        restarts,
        reason = after,
        "{agent} restarted after {after} (restart {restarts})"
    );
}
