//! The host's lifecycle events. Each is one `tracing` event with an `event` field naming it, so
//! that `--log-format json` yields one JSON object per line that tools and tests can match on;
//! those about agents are also appended to the event store (without waiting for the commit).

use std::time::Duration;

use serde_json::json;

use super::{EventStore, NewEvent};
use crate::capabilities::hooks::ExitReport;
use crate::messaging::AgentId;
use crate::runtime::ExitTally;
use crate::runtime::agent::{ExitReason, Fault};

fn journal(store: &EventStore, kind: &str, agent: Option<&str>, payload: serde_json::Value) {
    store.record(NewEvent {
        kind: kind.to_string(),
        agent: agent.map(Into::into),
        correlation: None,
        payload: payload.to_string().into_bytes(),
    });
}

/// `warm`: its instance was taken warm (instantiated ahead) rather than instantiated now.
pub fn agent_started(
    store: &EventStore,
    agent: &str,
    id: AgentId,
    module: &str,
    took: Duration,
    restarts: u32,
    warm: bool,
) {
    journal(
        store,
        "agent_started",
        Some(agent),
        json!({ "id": id, "module": module, "restarts": restarts, "warm": warm }),
    );
    tracing::info!(
        target: "agora::lifecycle",
        event = "agent_started",
        agent,
        id,
        module,
        restarts,
        warm,
        micros = took.as_micros() as u64,
        "agent {agent} started"
    );
}

pub fn agent_exited(store: &EventStore, report: &ExitReport) {
    let ExitReport { agent, id, restarts, undelivered, handled, batched, peak_memory, reason } = *report;
    let mut payload = json!({ "id": id, "reason": reason.code(), "restarts": restarts,
        "undelivered": undelivered, "handled": handled, "batched": batched, "peak_memory": peak_memory });
    if let ExitReason::Crashed(fault) = reason {
        payload["detail"] = json!(fault.detail);
    }
    journal(store, "agent_exited", Some(agent), payload);
    match reason {
        ExitReason::Crashed(fault) => crashed("agent_exited", report, fault),
        _ => tracing::info!(
            target: "agora::lifecycle",
            event = "agent_exited",
            agent,
            id,
            reason = reason.code(),
            restarts,
            undelivered,
            handled,
            batched,
            peak_memory,
            "agent {agent} exited: {}",
            reason.code()
        ),
    }
}

pub fn agent_start_failed(store: &EventStore, agent: &str, fault: &Fault) {
    journal(store, "agent_start_failed", Some(agent), json!({ "reason": fault.kind.code(), "detail": fault.detail }));
    let reason = ExitReason::Crashed(fault.clone());
    let report = ExitReport {
        agent,
        id: 0,
        restarts: 0,
        undelivered: 0,
        handled: 0,
        batched: 0,
        peak_memory: 0,
        reason: &reason,
    };
    crashed("agent_start_failed", &report, fault);
}

/// An upgrade's outcome: `agent_upgraded`, or `agent_upgrade_failed` with the stage and reason.
pub fn agent_upgrade(store: &EventStore, agent: &str, id: AgentId, report: &serde_json::Value, ok: bool) {
    let event = if ok { "agent_upgraded" } else { "agent_upgrade_failed" };
    journal(store, event, Some(agent), report.clone());
    let text = |key: &str| report.get(key).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    if ok {
        tracing::info!(target: "agora::lifecycle", event, agent, id, from = %text("from"), to = %text("to"),
            handoff = %text("handoff"), paused_us = report.get("paused_us").and_then(|v| v.as_u64()),
            "agent {agent} upgraded from {} to {} ({} handed over)", text("from"), text("to"), text("handoff"));
    } else {
        tracing::warn!(target: "agora::lifecycle", event, agent, id, stage = %text("stage"), reason = %text("reason"),
            "agent {agent}: upgrade to {} failed at {} and was rolled back: {}", text("to"), text("stage"), text("reason"));
    }
}

/// Journaled only: the agent's task logs these itself, with what it knows.
pub fn agent_hibernated(store: &EventStore, agent: &str, id: AgentId, state_bytes: usize, durable: bool) {
    journal(
        store,
        "agent_hibernated",
        Some(agent),
        json!({ "id": id, "state_bytes": state_bytes, "durable": durable }),
    );
}

pub fn agent_woken(store: &EventStore, agent: &str, id: AgentId, micros: u64) {
    journal(store, "agent_woken", Some(agent), json!({ "id": id, "micros": micros }));
}

/// A cluster event (logged where it happens), journaled with the node it is about.
pub fn cluster(store: &EventStore, kind: &str, detail: &serde_json::Value) {
    journal(store, kind, None, detail.clone());
}

fn crashed(event: &str, report: &ExitReport, fault: &Fault) {
    let ExitReport { agent, id, restarts, undelivered, handled, batched, peak_memory, .. } = *report;
    let what = if event == "agent_start_failed" { "failed to start" } else { "crashed" };
    tracing::error!(
        target: "agora::lifecycle",
        event,
        agent,
        id,
        reason = fault.kind.code(),
        detail = %fault.detail,
        output = fault.output.as_deref(),
        backtrace = fault.backtrace.as_deref(),
        restarts,
        undelivered,
        handled,
        batched,
        peak_memory,
        "agent {agent} {what}: {fault}"
    );
}

pub fn run_finished(outcome: &str, tally: &ExitTally) {
    let count = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
    let (normal, shutdown, killed, crashed) =
        (count(&tally.normal), count(&tally.shutdown), count(&tally.killed), count(&tally.crashed));
    let start_failed = count(&tally.start_failed);
    let failed_starts = if start_failed > 0 { format!("; {start_failed} failed to start") } else { String::new() };
    tracing::info!(
        target: "agora::lifecycle",
        event = "run_finished",
        reason = outcome,
        normal,
        shutdown,
        killed,
        crashed,
        start_failed,
        "run finished ({outcome}): agents exited {normal} normal, {shutdown} shutdown, {killed} killed, \
         {crashed} crashed{failed_starts}"
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

pub fn supervisor_failed(store: &EventStore, supervisor: &str, id: AgentId, fault: &Fault) {
    journal(
        store,
        "supervisor_failed",
        Some(supervisor),
        json!({ "id": id, "reason": fault.kind.code(), "detail": fault.detail }),
    );
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

pub fn child_restarted(store: &EventStore, agent: &str, id: AgentId, restarts: u32, after: &str) {
    journal(store, "agent_restarted", Some(agent), json!({ "id": id, "restarts": restarts, "after": after }));
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

/// `value` is None for a removal, and for a secret's new value (`secret`), which is never shown.
pub fn config_changed(store: &EventStore, path: &str, value: Option<&str>, secret: bool, notified: usize) {
    journal(store, "config_changed", None, json!({ "path": path, "value": value, "secret": secret }));
    tracing::info!(target: "agora::lifecycle", event = "config_changed", path, value, secret, notified,
        "config {path} changed; {notified} subscribers notified");
}

/// A consensus round's outcome, recorded durably before the proposer learns it.
pub async fn consensus_round(
    store: &EventStore,
    proposer: &str,
    group: &str,
    outcome: &crate::capabilities::coordination::consensus::Outcome,
    value: &[u8],
) {
    let verdict = format!("{:?}", outcome.verdict).to_lowercase();
    let payload = json!({ "group": group, "round": outcome.round, "verdict": verdict, "voters": outcome.voters,
        "accepted": outcome.accepted, "rejected": outcome.rejected, "missing": outcome.missing,
        "value": String::from_utf8_lossy(value) });
    let event = NewEvent {
        kind: "consensus_round".into(),
        agent: Some(proposer.into()),
        correlation: Some(format!("{group}/{}", outcome.round)),
        payload: payload.to_string().into_bytes(),
    };
    if let Err(error) = store.append(event).await {
        tracing::error!(event = "event_store_failed", %error, group, round = outcome.round,
            "a consensus outcome could not be recorded");
    }
}
