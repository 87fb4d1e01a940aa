//! What one agent's store holds: its identity and grants, each capability's per-agent state,
//! its limits, and its WASI context (no files, no network, no environment; output is captured).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Runtime;
use super::agent::StopSignal;
use super::limits::{Budget, MemoryCap};
use super::output::GuestOutput;
use crate::capabilities::coordination::AgentCoordination;
use crate::capabilities::outbound::AgentOutbound;
use crate::capabilities::telemetry::AgentMetrics;
use crate::capabilities::{Grant, Grants, config, lifecycle, logging};
use crate::manifest::Limits;
use crate::messaging::{self, AgentId};
use crate::runtime::bindings::Error;

pub struct AgentState {
    pub runtime: Arc<Runtime>,
    pub id: AgentId,
    pub name: Arc<str>,
    pub grants: Grants,
    /// Earlier incarnations of this agent under its supervisor.
    pub restarts: u32,
    pub messaging: messaging::AgentMessaging,
    pub logging: logging::AgentLogging,
    pub lifecycle: lifecycle::AgentLifecycle,
    pub config: config::AgentConfig,
    pub coordination: AgentCoordination,
    pub metrics: AgentMetrics,
    /// The outbound targets this agent may reach, for its `wasi:http` requests.
    pub outbound: AgentOutbound,
    /// How the host asks this agent to end; the epoch callback reads it to cut a kill short.
    pub stop: StopSignal,
    pub memory: MemoryCap,
    pub budget: Budget,
    pub stderr: GuestOutput,
    /// The wallet paying for this store's fuel, when compute has a price.
    pub meter: Option<crate::capabilities::economics::billing::Meter>,
    /// Fuel burned up to the start of the current callback.
    pub fuel_used: u64,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl AgentState {
    pub fn new(runtime: Arc<Runtime>, id: AgentId, name: Arc<str>, grants: Grants, limits: &Limits) -> Self {
        let stderr = GuestOutput::new(name.clone(), "stderr");
        let wasi = WasiCtx::builder().stdout(GuestOutput::new(name.clone(), "stdout")).stderr(stderr.clone()).build();
        let tick = runtime.settings.tick.duration();
        let ticks_allowed = (limits.budget.as_nanos() / tick.as_nanos().max(1)).max(1) as u64;
        runtime.live_instances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let services = &runtime.services;
        let meter =
            services.economics.pricing().map(|_| crate::capabilities::economics::billing::Meter::new(name.clone()));
        AgentState {
            metrics: services.telemetry.enter(id, &name),
            outbound: AgentOutbound::new(name.clone(), &[], &services.outbound),
            config: config::AgentConfig::default(),
            coordination: AgentCoordination::default(),
            http: WasiHttpCtx::new(),
            id,
            name,
            grants,
            restarts: 0,
            messaging: messaging::AgentMessaging::default(),
            logging: logging::AgentLogging::default(),
            lifecycle: lifecycle::AgentLifecycle::default(),
            stop: StopSignal::default(),
            memory: MemoryCap::new(limits.memory.bytes()),
            budget: Budget { ticks_allowed, ticks_used: 0 },
            stderr,
            meter,
            fuel_used: 0,
            wasi,
            table: ResourceTable::new(),
            runtime,
        }
    }

    /// Let the agent reach these outbound targets (none by default).
    pub fn grant_outbound(&mut self, targets: &[String]) {
        self.outbound = AgentOutbound::new(self.name.clone(), targets, &self.runtime.services.outbound);
    }

    /// Deny-by-default check at the top of every granted host function.
    pub fn require(&self, grant: Grant) -> Result<(), Error> {
        if self.grants.allows(grant) { Ok(()) } else { Err(Error::Denied) }
    }
}

impl AgentState {
    /// End what the agent holds in the coordination services: its locks, its group memberships
    /// (a successor leads at once), its owed votes. The agent's exit does this before its name
    /// leaves the registry, so that whoever sees the name gone sees the leadership moved too.
    pub fn leave_coordination(&mut self) {
        let services = &self.runtime.services;
        services.locks.release_all(self.id, &std::mem::take(&mut self.coordination.held));
        let groups = std::mem::take(&mut self.coordination.groups);
        for group in &groups {
            services.elections.leave(group, self.id);
        }
        if !groups.is_empty() {
            services.consensus.forget(self.id);
        }
    }
}

impl Drop for AgentState {
    fn drop(&mut self) {
        self.runtime.services.config.forget(self.id, &self.config.subscriptions);
        self.runtime.services.telemetry.leave(self.id);
        self.leave_coordination();
        self.runtime.live_instances.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for AgentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}
