//! `run-isolated`: a job in a fresh, throwaway instance with its own memory cap and CPU budget.
//!
//! The job is an agent component run once: `init` with no config, then `handle` with the input.
//! It is granted nothing (pure computation), is not registered and has no mailbox; its store, and
//! with it all its memory, is dropped before the result is returned. When compute has a price,
//! the caller's wallet pays for the job's fuel.

use std::sync::Arc;

use wasmtime::AsContextMut;

use crate::capabilities::Grants;
use crate::capabilities::economics::billing;
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
    (caller, payer): (AgentId, &Arc<str>),
    module: &Module,
    input: Vec<u8>,
    limits: &Limits,
) -> Result<Vec<u8>, JobError> {
    let name: Arc<str> = format!("isolated-{}", module.name).into();
    let state = AgentState::new(runtime.clone(), runtime.next_id(), name, Grants::NONE, limits);
    let mut store = agent::new_store(runtime, module.pre.engine(), state);
    if let Some(meter) = store.data_mut().meter.as_mut() {
        meter.payer = payer.clone();
    }
    let result = run_in(&mut store, caller, module, input, limits).await;
    if store.data().meter.is_some() {
        billing::settle(store.as_context_mut());
    }
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
    let arm = |store: &mut wasmtime::Store<AgentState>| {
        store.data_mut().budget.ticks_used = 0;
        store.set_epoch_deadline(1);
        if store.data().meter.is_some() && !billing::arm(store.as_context_mut(), false) {
            return Err(JobError::Failed(format!("unpaid: wallet {:?} cannot pay for the job", store.data().name)));
        }
        Ok(())
    };
    arm(store)?;
    let instance = match module.pre.instantiate_async(&mut *store).await {
        Ok(instance) => instance,
        Err(e) => return Err(job_error(Fault::from_error(&e, store.data(), "instantiate"), cap)),
    };
    arm(store)?;
    match instance.call_init(&mut *store, &[]).await {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Err(JobError::Failed(format!("init: {message}"))),
        Err(e) => return Err(job_error(Fault::from_error(&e, store.data(), "init"), cap)),
    }
    arm(store)?;
    let envelope = Envelope { sender: Some(caller), correlation: None, topic: None, payload: input };
    match instance.call_handle(&mut *store, &envelope).await {
        Ok(Ok(reply)) => Ok(reply.unwrap_or_default()),
        Ok(Err(error)) => Err(JobError::Failed(error.message)),
        Err(e) => Err(job_error(Fault::from_error(&e, store.data(), "handle"), cap)),
    }
}

fn job_error(fault: Fault, cap: u64) -> JobError {
    match fault.kind {
        FaultKind::MemoryCap => JobError::MemoryCap(cap),
        FaultKind::CpuBudget => JobError::CpuBudget,
        _ => JobError::Trap(fault.to_string()),
    }
}
