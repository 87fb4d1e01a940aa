//! The registry: unique names, per-agent metadata and capability lookup, on sharded maps.
//!
//! A name is claimed atomically through the map's entry API, so of two agents racing for it
//! exactly one wins. Everything an agent registered is removed when it exits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;

use crate::bindings::Error;
use crate::infra::hashers::{IdHasher, NameHasher};
use crate::messaging::AgentId;

pub mod host;

const MAX_NAME: usize = 255;
const MAX_METADATA_ENTRIES: usize = 256;
const MAX_METADATA_VALUE: usize = 64 * 1024;

#[derive(Default)]
pub struct Registry {
    names: DashMap<Arc<str>, AgentId, NameHasher>,
    agents: DashMap<AgentId, Entry, IdHasher>,
    by_capability: DashMap<Arc<str>, BTreeSet<AgentId>, NameHasher>,
}

/// What the registry knows about one live agent.
struct Entry {
    /// The manifest (instance) name.
    name: Arc<str>,
    /// Every name it holds, the instance name included.
    names: Vec<Arc<str>>,
    capabilities: Vec<Arc<str>>,
    metadata: BTreeMap<String, String>,
}

impl Registry {
    /// Enter a new agent under its instance name; fails when the name is taken.
    pub fn enter(&self, id: AgentId, name: &Arc<str>, capabilities: &[String]) -> Result<(), Error> {
        self.claim(id, name)?;
        self.agents.insert(
            id,
            Entry {
                name: name.clone(),
                names: vec![name.clone()],
                capabilities: Vec::new(),
                metadata: BTreeMap::new(),
            },
        );
        for capability in capabilities {
            self.add_capability(id, capability);
        }
        Ok(())
    }

    /// Remove an agent and everything it registered.
    pub fn leave(&self, id: AgentId) {
        let Some((_, entry)) = self.agents.remove(&id) else {
            return;
        };
        for name in &entry.names {
            self.names.remove_if(name, |_, holder| *holder == id);
        }
        for capability in &entry.capabilities {
            if let Some(mut holders) = self.by_capability.get_mut(capability) {
                holders.remove(&id);
            }
            self.by_capability.remove_if(capability, |_, holders| holders.is_empty());
        }
    }

    /// Every name `id` holds, its instance name first.
    pub fn names_of(&self, id: AgentId) -> Vec<Arc<str>> {
        self.agents.get(&id).map(|entry| entry.names.clone()).unwrap_or_default()
    }

    pub fn lookup(&self, name: &str) -> Option<AgentId> {
        self.names.get(name).map(|id| *id)
    }

    pub fn name_of(&self, id: AgentId) -> Option<Arc<str>> {
        self.agents.get(&id).map(|entry| entry.name.clone())
    }

    /// Registered processes: live agents and supervisors (both hold a name).
    pub fn live_entries(&self) -> usize {
        self.agents.len()
    }

    fn claim(&self, id: AgentId, name: &Arc<str>) -> Result<(), Error> {
        match self.names.entry(name.clone()) {
            MapEntry::Occupied(holder) if *holder.get() == id => Ok(()),
            MapEntry::Occupied(_) => Err(Error::AlreadyExists),
            MapEntry::Vacant(slot) => {
                slot.insert(id);
                Ok(())
            }
        }
    }

    pub fn register(&self, id: AgentId, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::Invalid(format!("a name must be 1..={MAX_NAME} bytes")));
        }
        let name: Arc<str> = name.into();
        let mut entry = self.agents.get_mut(&id).ok_or(Error::NotFound)?;
        self.claim(id, &name)?;
        if !entry.names.contains(&name) {
            entry.names.push(name);
        }
        Ok(())
    }

    pub fn unregister(&self, id: AgentId, name: &str) -> Result<(), Error> {
        let mut entry = self.agents.get_mut(&id).ok_or(Error::NotFound)?;
        if *entry.name == *name {
            return Err(Error::Invalid("the instance name stays registered while the agent lives".into()));
        }
        if self.names.remove_if(name, |_, holder| *holder == id).is_none() {
            return Err(Error::NotFound);
        }
        entry.names.retain(|n| **n != *name);
        Ok(())
    }

    pub fn add_capability(&self, id: AgentId, capability: &str) {
        let capability: Arc<str> = capability.into();
        if let Some(mut entry) = self.agents.get_mut(&id) {
            if entry.capabilities.contains(&capability) {
                return;
            }
            entry.capabilities.push(capability.clone());
        }
        self.by_capability.entry(capability).or_default().insert(id);
    }

    pub fn find_by_capability(&self, capability: &str) -> Vec<AgentId> {
        self.by_capability.get(capability).map(|holders| holders.iter().copied().collect()).unwrap_or_default()
    }

    pub fn set_metadata(&self, id: AgentId, key: String, value: Option<String>) -> Result<(), Error> {
        let mut entry = self.agents.get_mut(&id).ok_or(Error::NotFound)?;
        match value {
            Some(value) if value.len() > MAX_METADATA_VALUE => Err(Error::TooLarge(MAX_METADATA_VALUE as u64)),
            Some(_) if entry.metadata.len() >= MAX_METADATA_ENTRIES && !entry.metadata.contains_key(&key) => {
                Err(Error::Invalid(format!("at most {MAX_METADATA_ENTRIES} metadata entries per agent")))
            }
            Some(value) => {
                entry.metadata.insert(key, value);
                Ok(())
            }
            None => {
                entry.metadata.remove(&key);
                Ok(())
            }
        }
    }

    pub fn metadata(&self, id: AgentId, key: &str) -> Result<Option<String>, Error> {
        let entry = self.agents.get(&id).ok_or(Error::NotFound)?;
        Ok(entry.metadata.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_vanish_with_their_agent() {
        let registry = Registry::default();
        registry.enter(1, &"a".into(), &["cap".into()]).unwrap();
        registry.enter(2, &"b".into(), &["cap".into()]).unwrap();
        assert_eq!(registry.enter(3, &"a".into(), &[]), Err(Error::AlreadyExists));
        registry.register(1, "alias").unwrap();
        assert_eq!(registry.register(2, "alias"), Err(Error::AlreadyExists));
        assert_eq!(registry.find_by_capability("cap"), vec![1, 2]);
        registry.leave(1);
        assert_eq!(registry.lookup("alias"), None);
        assert_eq!(registry.lookup("a"), None);
        assert_eq!(registry.find_by_capability("cap"), vec![2]);
        registry.register(2, "alias").unwrap();
        assert_eq!(registry.lookup("alias"), Some(2));
    }

    #[test]
    fn concurrent_claims_have_one_winner() {
        let registry = Arc::new(Registry::default());
        for id in 1..=8 {
            registry.enter(id, &format!("agent-{id}").into(), &[]).unwrap();
        }
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=8)
                .map(|id| {
                    let registry = registry.clone();
                    scope.spawn(move || registry.register(id, "leader").is_ok() as usize)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
    }
}
