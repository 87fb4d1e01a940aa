//! Supervision of the manifest's agents.
//!
//! Children start one at a time in declared order, each waiting for the previous `init` to
//! return, and stop in reverse order, as in OTP. This first level does not restart: a crash is
//! reported (with its fault, backtrace and guest output) and the child stays down while the
//! others keep running. Restart strategies, intensity and nested supervisors build on this loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::events;
use crate::manifest::AgentSpec;
use crate::messaging::AgentId;
use crate::runtime::Runtime;
use crate::runtime::agent::{self, ExitReason, RunningAgent, StartError};

/// How a run ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub normal: usize,
    pub shutdown: usize,
    pub crashed: usize,
    /// True when the run ended because the host was asked to stop.
    pub interrupted: bool,
}

/// Start every agent, then wait until all have exited or `stop` resolves (then shut the rest
/// down in reverse start order).
pub async fn run(
    runtime: Arc<Runtime>,
    specs: &[AgentSpec],
    stop: impl Future<Output = ()>,
) -> Result<Summary, StartError> {
    let (exits_sender, mut exits) = mpsc::unbounded_channel();
    let mut order: Vec<AgentId> = Vec::with_capacity(specs.len());
    let mut running: HashMap<AgentId, RunningAgent> = HashMap::with_capacity(specs.len());
    for spec in specs {
        let module = runtime.module(&spec.module).expect("the manifest validated its module names").clone();
        match agent::start(&runtime, spec, &module, exits_sender.clone()).await {
            Ok(agent) => {
                order.push(agent.id);
                running.insert(agent.id, agent);
            }
            Err(error) => {
                if let StartError::Failed { agent, fault } = &error {
                    events::agent_start_failed(agent, fault);
                }
                shutdown_in_reverse(&order, &mut running).await;
                return Err(error);
            }
        }
    }
    drop(exits_sender);

    let mut summary = Summary::default();
    tokio::pin!(stop);
    while !running.is_empty() {
        tokio::select! {
            exit = exits.recv() => {
                let Some(exit) = exit else { break };
                running.remove(&exit.id);
                count(&mut summary, &exit.reason);
            }
            _ = &mut stop => {
                summary.interrupted = true;
                shutdown_in_reverse(&order, &mut running).await;
            }
        }
    }
    while let Ok(exit) = exits.try_recv() {
        count(&mut summary, &exit.reason);
    }
    Ok(summary)
}

fn count(summary: &mut Summary, reason: &ExitReason) {
    match reason {
        ExitReason::Normal => summary.normal += 1,
        ExitReason::Shutdown => summary.shutdown += 1,
        ExitReason::Crashed(_) => summary.crashed += 1,
    }
}

async fn shutdown_in_reverse(order: &[AgentId], running: &mut HashMap<AgentId, RunningAgent>) {
    for id in order.iter().rev() {
        if let Some(agent) = running.remove(id) {
            agent.shutdown().await;
        }
    }
}
