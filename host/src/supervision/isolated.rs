//! `run-isolated`: a job in a fresh, throwaway instance with its own memory cap and CPU budget.
//!
//! The job is an agent component run once: `init` with no config, then `handle` with the input.
//! It is granted nothing (pure computation), is not registered and has no mailbox; its store, and
//! with it all its memory, is dropped before the result is returned.

use std::sync::Arc;

use crate::capabilities::Grants;
use crate::manifest::Limits;
use crate::messaging::AgentId;
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Fault, FaultKind};
use crate::runtime::bindings::Envelope;
use crate::runtime::bindings::supervision::JobError;
use crate::runtime::modules::Module;
use crate::runtime::state::AgentState;

pub async fn run(
    runtime: &Arc<Runtime>,
    caller: AgentId,
    module: &Module,
    input: Vec<u8>,
    limits: &Limits,
) -> Result<Vec<u8>, JobError> {
    let name: Arc<str> = format!("isolated-{}", module.name).into();
    let state = AgentState::new(runtime.clone(), runtime.next_id(), name, Grants::NONE, limits);
    let mut store = agent::new_store(runtime, state);
    let cap = limits.memory.bytes();
    let arm = |store: &mut wasmtime::Store<AgentState>| {
        store.data_mut().budget.ticks_used = 0;
        store.set_epoch_deadline(1);
    };
    arm(&mut store);
    let instance = match module.pre.instantiate_async(&mut store).await {
        Ok(instance) => instance,
        Err(e) => return Err(job_error(Fault::from_error(&e, store.data(), "instantiate"), cap)),
    };
    arm(&mut store);
    match instance.call_init(&mut store, &[]).await {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Err(JobError::Failed(format!("init: {message}"))),
        Err(e) => return Err(job_error(Fault::from_error(&e, store.data(), "init"), cap)),
    }
    arm(&mut store);
    let envelope = Envelope { sender: Some(caller), correlation: None, topic: None, payload: input };
    let outcome = instance.call_handle(&mut store, &envelope).await;
    let peak = store.data().memory.peak();
    let result = match outcome {
        Ok(Ok(reply)) => Ok(reply.unwrap_or_default()),
        Ok(Err(error)) => Err(JobError::Failed(error.message)),
        Err(e) => Err(job_error(Fault::from_error(&e, store.data(), "handle"), cap)),
    };
    drop(store);
    tracing::debug!(event = "isolated_job_finished", module = %module.name, peak_memory = peak, ok = result.is_ok());
    result
}

fn job_error(fault: Fault, cap: u64) -> JobError {
    match fault.kind {
        FaultKind::MemoryCap => JobError::MemoryCap(cap),
        FaultKind::CpuBudget => JobError::CpuBudget,
        _ => JobError::Trap(fault.to_string()),
    }
}
