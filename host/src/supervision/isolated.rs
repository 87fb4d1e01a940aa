//! `run-isolated`: a job in a fresh, throwaway instance with its own memory cap and CPU budget.
//!
//! The job is an agent component run once: `init` with no config, then `handle` with the input.
//! It is granted nothing (pure computation), is not registered and has no mailbox; its store, and
//! with it all its memory, is dropped before the result is returned. When compute has a price,
//! the caller's wallet pays for the job's fuel.

use std::sync::Arc;

use crate::bindings::Envelope;
use crate::bindings::supervision::JobError;
use crate::capabilities::AllHooks;
use crate::manifest::{AgentSpec, Limits, Restart};
use crate::messaging::AgentId;
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Fault, FaultKind};
use crate::runtime::invoke::{self, Failed};
use crate::runtime::modules::Module;
use crate::runtime::state::AgentState;

pub async fn run(
    runtime: &Arc<Runtime>,
    (caller, payer): (AgentId, &Arc<str>),
    module: &Module,
    input: Vec<u8>,
    limits: &Limits,
) -> Result<Vec<u8>, JobError> {
    let name: Arc<str> = format!("isolated-{}", module.name).into();
    // Granted nothing: pure computation, paid for by the caller's wallet.
    let spec = AgentSpec { restart: Restart::Temporary, ..AgentSpec::new(&*name, &module.name, *limits) };
    let state = AgentState::new(runtime.clone(), runtime.next_id(), name, Arc::new(spec), Some(payer));
    let mut store = agent::new_store(module.pre.engine(), state);
    let result = run_in(&mut store, caller, module, input, limits).await;
    AllHooks::exit(wasmtime::AsContextMut::as_context_mut(&mut store));
    let peak = store.data().memory.peak();
    drop(store);
    tracing::debug!(event = "isolated_job_finished", module = %module.name, peak_memory = peak, ok = result.is_ok());
    result
}

async fn run_in(
    store: &mut wasmtime::Store<AgentState>,
    caller: AgentId,
    module: &Module,
    input: Vec<u8>,
    limits: &Limits,
) -> Result<Vec<u8>, JobError> {
    let cap = limits.memory.bytes();
    let failed = |failed: Failed| match failed {
        Failed::Held(gate) => JobError::Failed(format!("{}: {}", gate.fault.kind.code(), gate.fault.detail)),
        Failed::Fault(fault) => job_error(fault, cap),
    };
    let instance = invoke::run(store, "instantiate", async |store| module.pre.instantiate_async(store).await)
        .await
        .map_err(failed)?;
    match invoke::run(store, "init", async |store| instance.call_init(store, &[]).await).await.map_err(failed)? {
        Ok(()) => {}
        Err(message) => return Err(JobError::Failed(format!("init: {message}"))),
    }
    let envelope = Envelope { sender: Some(caller), correlation: None, topic: None, payload: input };
    match invoke::run(store, "handle", async |store| instance.call_handle(store, &envelope).await)
        .await
        .map_err(failed)?
    {
        Ok(reply) => Ok(reply.unwrap_or_default()),
        Err(error) => Err(JobError::Failed(error.message)),
    }
}

fn job_error(fault: Fault, cap: u64) -> JobError {
    match fault.kind {
        FaultKind::MemoryCap => JobError::MemoryCap(cap),
        FaultKind::CpuBudget => JobError::CpuBudget,
        _ => JobError::Trap(fault.to_string()),
    }
}
