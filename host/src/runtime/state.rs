//! What one agent's store holds: what every agent has (its identity and manifest entry, its
//! limits, its stop signal, its counters, its WASI context: no files, no network, no
//! environment, output captured), and the composed per-agent state of the capabilities.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Runtime;
use super::agent::{ExitReason, StopSignal, reserved_reason};
use super::limits::{Budget, MemoryCap};
use super::output::GuestOutput;
pub use super::stats::AgentStats;
use crate::capabilities::{AgentCapabilities, Entering, Leaving};
use crate::manifest::AgentSpec;
use crate::messaging::AgentId;

pub struct AgentState {
    pub runtime: Arc<Runtime>,
    pub id: AgentId,
    pub name: Arc<str>,
    /// The manifest entry it runs under: grants, limits, outbound targets, wallet.
    pub spec: Arc<AgentSpec>,
    /// Earlier incarnations of this agent under its supervisor.
    pub restarts: u32,
    /// How the host asks this agent to end; the epoch callback reads it to cut a kill short.
    pub stop: StopSignal,
    pub memory: MemoryCap,
    pub budget: Budget,
    pub stats: Arc<AgentStats>,
    pub stderr: GuestOutput,
    /// Set by `lifecycle.stop` and `exit`; the agent loop ends after the current callback.
    pub exit_requested: Option<ExitReason>,
    /// Set when the guest called WASI `exit(0)`: the instance unwound and cannot be entered
    /// again (no `terminate`), but the exit is normal.
    pub exited_cleanly: bool,
    /// Each capability's state for this agent.
    pub capabilities: AgentCapabilities,
    /// Whether the capabilities have been told the agent left (once, at its exit or drop).
    left: bool,
    /// Built at the instance's first WASI call: a store without an instance (a hibernated
    /// agent's) holds none, and a WASI context costs half a kilobyte (its random generator).
    wasi: Option<WasiCtx>,
    /// The store's resources (WASI streams, HTTP requests).
    pub table: ResourceTable,
    /// The batch of mailbox items in progress, for the `batch.next` import.
    pub batch: super::batch::Batch,
}

impl AgentState {
    /// `name`: the agent's registered name (an isolated job's is made up, and `acting_for` names
    /// the agent it works for).
    pub fn new(
        runtime: Arc<Runtime>,
        id: AgentId,
        name: Arc<str>,
        spec: Arc<AgentSpec>,
        acting_for: Option<&Arc<str>>,
    ) -> Self {
        let stderr = GuestOutput::new(name.clone(), "stderr");
        runtime.live_instances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stats = Arc::new(AgentStats::default());
        let entering = Entering { id, name: &name, spec: &spec, stats: &stats, acting_for };
        let capabilities = runtime.services.enter(&entering);
        AgentState {
            id,
            name,
            restarts: 0,
            stop: StopSignal::default(),
            memory: MemoryCap::new(spec.limits.memory.bytes()),
            budget: Budget::new(spec.limits.budget),
            stats,
            stderr,
            exit_requested: None,
            exited_cleanly: false,
            capabilities,
            left: false,
            wasi: None,
            table: ResourceTable::new(),
            batch: Default::default(),
            spec,
            runtime,
        }
    }

    /// The state of a warm instance's store before an agent takes it: no identity (id 0), the
    /// `vacant` entry (nothing granted, the host's largest memory cap), no capability state,
    /// nothing to end when dropped. [`super::warm`] replaces it with the agent's own.
    pub fn vacant(runtime: Arc<Runtime>, spec: Arc<AgentSpec>) -> Self {
        runtime.live_instances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: Arc<str> = Arc::from("");
        AgentState {
            id: 0,
            stderr: GuestOutput::new(name.clone(), "stderr"),
            name,
            restarts: 0,
            stop: StopSignal::default(),
            memory: MemoryCap::new(spec.limits.memory.bytes()),
            budget: Budget::new(spec.limits.budget),
            stats: Arc::default(),
            exit_requested: None,
            exited_cleanly: false,
            capabilities: AgentCapabilities::default(),
            left: true,
            wasi: None,
            table: ResourceTable::new(),
            batch: Default::default(),
            spec,
            runtime,
        }
    }

    /// The state for the agent's next instance (an upgrade): the same identity, manifest
    /// entry, stop signal and counters, a fresh WASI context, memory cap and budget. It holds
    /// no capabilities of its own until [`AgentState::hand_over`] gives it the agent's.
    pub fn successor(&self) -> AgentState {
        let name = self.name.clone();
        let stderr = GuestOutput::new(name.clone(), "stderr");
        self.runtime.live_instances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entering = Entering { id: self.id, name: &name, spec: &self.spec, stats: &self.stats, acting_for: None };
        let capabilities = self.runtime.services.enter(&entering);
        AgentState {
            id: self.id,
            name,
            restarts: self.restarts,
            stop: self.stop.clone(),
            memory: MemoryCap::new(self.spec.limits.memory.bytes()),
            budget: Budget::new(self.spec.limits.budget),
            stats: self.stats.clone(),
            stderr,
            exit_requested: None,
            exited_cleanly: false,
            // Placeholders, swapped for the agent's own by `hand_over`; entering again only
            // refreshes what the capabilities key by the agent's id.
            capabilities,
            // Owns nothing yet: dropping it unused ends nothing of the agent's.
            left: true,
            wasi: None,
            table: ResourceTable::new(),
            batch: Default::default(),
            spec: self.spec.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// Move what the agent holds in the capabilities (subscriptions, pending replies, locks'
    /// state, its wallet's meter, ...) from `self` to `other`, and the duty to end it at exit.
    /// Called once to hand over to a successor, and again to take it back on a rollback.
    pub fn hand_over(&mut self, other: &mut AgentState) {
        std::mem::swap(&mut self.capabilities, &mut other.capabilities);
        std::mem::swap(&mut self.left, &mut other.left);
    }

    /// End what the agent holds in every capability (once). The agent's exit does this before
    /// its name leaves the registry, so that whoever sees the name gone sees its locks and
    /// leaderships gone too.
    pub fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let leaving = Leaving { id: self.id, name: &self.name, host: &self.runtime };
        self.runtime.services.leave(&mut self.capabilities, &leaving);
        self.runtime.directory.leave(self.id);
    }
}

impl Drop for AgentState {
    fn drop(&mut self) {
        self.leave();
        self.runtime.live_instances.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let AgentState { wasi, table, name, stderr, .. } = self;
        // No files, no network, no environment; output captured under the agent's name.
        let ctx = wasi.get_or_insert_with(|| {
            WasiCtx::builder().stdout(GuestOutput::new(name.clone(), "stdout")).stderr(stderr.clone()).build()
        });
        WasiCtxView { ctx, table }
    }
}

/// The `lifecycle` interface: an agent asks to end normally. Part of the core, not a
/// capability: every agent may stop itself.
impl crate::bindings::lifecycle::Host for AgentState {
    fn stop(&mut self) {
        self.exit_requested = Some(ExitReason::Normal);
    }

    fn exit(&mut self, reason: crate::bindings::lifecycle::ExitReason) -> Result<(), crate::bindings::Error> {
        use crate::bindings::lifecycle::ExitReason as Asked;
        let reason = match reason {
            Asked::Normal => ExitReason::Normal,
            Asked::Shutdown => ExitReason::Shutdown,
            Asked::Custom(reason) => {
                if reason.is_empty() || reason.len() > MAX_REASON {
                    return Err(crate::bindings::Error::Invalid(format!(
                        "a custom exit reason has 1 to {MAX_REASON} bytes, not {}",
                        reason.len()
                    )));
                }
                if reserved_reason(&reason) {
                    return Err(crate::bindings::Error::Invalid(format!(
                        "{reason:?} is the host's own exit code; use the `normal` or `shutdown` case, or another reason"
                    )));
                }
                ExitReason::Custom(reason.into())
            }
        };
        self.exit_requested = Some(reason);
        Ok(())
    }
}

/// The longest custom exit reason: it travels in every link's and monitor's notice.
const MAX_REASON: usize = 256;

/// The `types` interface has no functions; linking it only names it.
impl crate::bindings::types::Host for AgentState {}
