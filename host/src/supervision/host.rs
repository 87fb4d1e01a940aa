//! The `supervision` interface as the guest sees it, served as a capability. Grant:
//! "supervision". Links and monitors are the core's (`supervision::links`), and end with the
//! agent's exit there.

use std::time::Duration;

use tokio::sync::oneshot;

use super::Command;
use crate::bindings::Error;
use crate::bindings::supervision::{self, Child, ChildInfo, JobError, SpawnError};
use crate::capabilities::hooks::Hooks;
use crate::capabilities::{Capability, Entering, Getter, NoSection, Served, Startup, View};
use crate::manifest::{AgentSpec, ByteSize, Limits, Restart, check_name};
use crate::messaging::AgentId;
use crate::runtime::ModuleRefError;
use crate::runtime::state::AgentState;

/// Supervision as a capability.
pub struct Supervising;

impl Capability for Supervising {
    const GRANT: Option<&'static str> = Some("supervision");
    type Section = NoSection;
    type Shared = ();
    type Agent = ();

    fn start(_section: &NoSection, _host: &Startup<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        supervision::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_shared: &(), _agent: &Entering<'_>) {}
}

impl Hooks for Supervising {}

crate::capabilities::denied_is_denied!(SpawnError => "supervision", JobError => "supervision");

impl View<'_, Supervising> {
    /// The cluster, when `target` is an agent of another node.
    fn remote(&self, target: AgentId) -> Option<&std::sync::Arc<crate::cluster::Cluster>> {
        self.host.cluster.get().filter(|cluster| cluster.is_remote(target))
    }

    /// The manifest's defaults with the guest's overrides, checked against the host's bounds.
    fn limits(&self, requested: &supervision::Limits) -> Result<Limits, String> {
        let settings = &self.host.settings;
        let mut limits = self.host.defaults;
        if let Some(memory) = requested.memory_bytes {
            if !(64 << 10..=settings.max_memory.bytes()).contains(&memory) {
                return Err(format!("memory {memory} is outside 64KiB..={}", settings.max_memory));
            }
            limits.memory = ByteSize(memory);
        }
        if let Some(budget) = requested.budget_ms {
            let budget = Duration::from_millis(u64::from(budget));
            if budget < settings.tick.duration() {
                return Err(format!("a budget under one tick ({}) is not enforceable", settings.tick));
            }
            limits.budget = budget;
        }
        if let Some(mailbox) = requested.mailbox {
            if mailbox == 0 {
                return Err("a mailbox holds at least 1 message".into());
            }
            limits.mailbox = mailbox;
        }
        Ok(limits)
    }

    fn dynamic_supervisor(&self, name: &str) -> Option<super::Commands> {
        self.host.dynamic_supervisors.get(name).map(|commands| commands.clone())
    }
}

/// Ask a supervisor task; a supervisor that exits meanwhile answers `not-found`.
async fn ask<T>(commands: &super::Commands, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    commands.send(command(reply)).ok()?;
    answer.await.ok()
}

impl supervision::Host for View<'_, Supervising> {
    async fn spawn(&mut self, supervisor: String, child: Child) -> Result<AgentId, SpawnError> {
        self.require()?;
        let commands = self
            .dynamic_supervisor(&supervisor)
            .ok_or_else(|| SpawnError::NotFound(format!("no dynamic supervisor {supervisor:?}")))?;
        check_name(&child.name).map_err(SpawnError::Invalid)?;
        let limits = self.limits(&child.limits).map_err(SpawnError::Invalid)?;
        let module = self.host.resolve_module(&child.module).await.map_err(|e| match e {
            ModuleRefError::NotFound(_) => SpawnError::NotFound(e.to_string()),
            ModuleRefError::Denied(_) => SpawnError::Denied,
            ModuleRefError::Invalid(why) => SpawnError::Invalid(why),
        })?;
        // A child never holds more than the agent that spawned it (its grants and outbound
        // targets); everything else starts empty (a wallet too: its parent can pay into it).
        let spec = AgentSpec {
            config: child.config,
            grants: self.spec.grants,
            outbound: self.spec.outbound.clone(),
            restart: match child.restart {
                supervision::Restart::Permanent => Restart::Permanent,
                supervision::Restart::Transient => Restart::Transient,
                supervision::Restart::Temporary => Restart::Temporary,
            },
            ..AgentSpec::new(child.name, &module.name, limits)
        };
        ask(&commands, |reply| Command::Spawn { spec, reply })
            .await
            .unwrap_or_else(|| Err(SpawnError::NotFound(format!("supervisor {supervisor:?} has exited"))))
    }

    async fn stop_child(&mut self, supervisor: String, name: String) -> Result<(), Error> {
        self.require()?;
        let commands = self.dynamic_supervisor(&supervisor).ok_or(Error::NotFound)?;
        ask(&commands, |reply| Command::Stop { name, reply }).await.unwrap_or(Err(Error::NotFound))
    }

    async fn list_children(&mut self, supervisor: String) -> Result<Vec<ChildInfo>, Error> {
        self.require()?;
        let commands = self.dynamic_supervisor(&supervisor).ok_or(Error::NotFound)?;
        ask(&commands, |reply| Command::List { reply }).await.ok_or(Error::NotFound)
    }

    fn monitor(&mut self, target: AgentId) -> Result<u64, Error> {
        self.require()?;
        if let Some(cluster) = self.remote(target) {
            return Ok(cluster.monitor(self.host, self.id, target));
        }
        Ok(self.host.links.monitor(&self.host.router, self.id, target))
    }

    fn demonitor(&mut self, reference: u64) -> Result<(), Error> {
        self.require()?;
        let target = self.host.links.demonitor(self.id, reference)?;
        if let Some(cluster) = self.remote(target) {
            cluster.demonitor(target, reference);
        }
        Ok(())
    }

    /// Linking to an agent of another node does not fail there and then: as in Erlang, a
    /// partner that is gone sends back an exit signal `noproc` (`noconnection` if its node is).
    fn link(&mut self, target: AgentId) -> Result<(), Error> {
        self.require()?;
        if let Some(cluster) = self.remote(target) {
            cluster.link(self.host, self.id, target);
            return Ok(());
        }
        self.host.links.link(&self.host.router, self.id, target)
    }

    fn unlink(&mut self, target: AgentId) -> Result<(), Error> {
        self.require()?;
        self.host.links.unlink(self.id, target);
        if let Some(cluster) = self.remote(target) {
            cluster.unlink(self.id, target);
        }
        Ok(())
    }

    fn trap_exits(&mut self, enabled: bool) -> Result<(), Error> {
        self.require()?;
        self.host.links.set_trap_exits(self.id, enabled);
        Ok(())
    }

    async fn run_isolated(
        &mut self,
        module: String,
        input: Vec<u8>,
        limits: supervision::Limits,
    ) -> Result<Vec<u8>, JobError> {
        self.require()?;
        let limits = self.limits(&limits).map_err(JobError::Failed)?;
        let module = self.host.resolve_module(&module).await.map_err(|e| match e {
            ModuleRefError::NotFound(_) => JobError::NotFound(e.to_string()),
            ModuleRefError::Denied(_) => JobError::Denied,
            ModuleRefError::Invalid(why) => JobError::Failed(why),
        })?;
        super::isolated::run(self.host, (self.id, self.name), &module, input, &limits).await
    }
}
