//! The `registry` interface as the guest sees it, served as a capability. Grant: "registry".

use crate::bindings::{Error, registry};
use crate::capabilities::hooks::Hooks;
use crate::capabilities::{Capability, Entering, Getter, NoSection, Served, Startup, View};
use crate::messaging::AgentId;
use crate::runtime::state::AgentState;

/// The registry as a capability: the registry is the core's; an agent's entries leave with it
/// (`Registry::leave`, at its exit).
pub struct Naming;

impl Capability for Naming {
    const GRANT: Option<&'static str> = Some("registry");
    type Section = NoSection;
    type Shared = ();
    type Agent = ();

    fn start(_section: &NoSection, _host: &Startup<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        registry::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_shared: &(), _agent: &Entering<'_>) {}
}

impl Hooks for Naming {}

impl registry::Host for View<'_, Naming> {
    /// In a cluster the name is claimed across it, after here: of two agents on two nodes
    /// registering one name at once, exactly one gets it.
    async fn register(&mut self, name: String) -> Result<(), Error> {
        self.require()?;
        let fresh = self.host.registry.lookup(&name).is_none();
        self.host.registry.register(self.id, &name)?;
        if let (Some(cluster), true) = (self.host.cluster.get(), fresh)
            && let Err(error) = cluster.claim(&name, self.id).await
        {
            let _ = self.host.registry.unregister(self.id, &name);
            return Err(error);
        }
        Ok(())
    }

    async fn unregister(&mut self, name: String) -> Result<(), Error> {
        self.require()?;
        self.host.registry.unregister(self.id, &name)?;
        if let Some(cluster) = self.host.cluster.get() {
            cluster.release(&name, self.id);
        }
        Ok(())
    }

    async fn lookup(&mut self, name: String) -> Result<AgentId, Error> {
        self.require()?;
        if let Some(id) = self.host.registry.lookup(&name) {
            return Ok(id);
        }
        match self.host.cluster.get() {
            Some(cluster) => cluster.lookup(&name).await.ok_or(Error::NotFound),
            None => Err(Error::NotFound),
        }
    }

    fn set_metadata(&mut self, key: String, value: Option<String>) -> Result<(), Error> {
        self.require()?;
        self.host.registry.set_metadata(self.id, key, value)
    }

    fn get_metadata(&mut self, agent: AgentId, key: String) -> Result<Option<String>, Error> {
        self.require()?;
        self.host.registry.metadata(agent, &key)
    }

    fn add_capability(&mut self, capability: String) -> Result<(), Error> {
        self.require()?;
        if capability.is_empty() {
            return Err(Error::Invalid("empty capability".into()));
        }
        self.host.registry.add_capability(self.id, &capability);
        Ok(())
    }

    fn find_by_capability(&mut self, capability: String) -> Result<Vec<AgentId>, Error> {
        self.require()?;
        Ok(self.host.registry.find_by_capability(&capability))
    }

    fn name_of(&mut self, agent: AgentId) -> Result<String, Error> {
        self.require()?;
        self.host.registry.name_of(agent).map(|name| name.to_string()).ok_or(Error::NotFound)
    }
}
