//! The live agents, for operators: who runs, on which module, since when, under which
//! supervisor, with which counters, and the handle to kill it. An instance is listed when it
//! starts and unlisted when it leaves (its exit, or a start that failed); the admin API reads it.
//! Isolated jobs are not listed: they are their caller's work.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use super::agent::StopSignal;
use super::modules::Module;
use super::stats::AgentStats;
use crate::infra::hashers::IdHasher;
use crate::messaging::AgentId;

pub struct Listed {
    pub id: AgentId,
    pub name: Arc<str>,
    /// Its module (shared, so that listing an agent copies nothing on the spawn path).
    pub module: Module,
    /// Earlier incarnations under its supervisor.
    pub restarts: u32,
    /// The supervisor it runs under ("" for one started outside a tree, as the benchmarks do).
    pub supervisor: Arc<str>,
    pub started: Instant,
    pub stats: Arc<AgentStats>,
    pub stop: StopSignal,
}

#[derive(Default)]
pub struct Directory {
    live: DashMap<AgentId, Arc<Listed>, IdHasher>,
}

impl Directory {
    pub fn enter(&self, listed: Listed) {
        self.live.insert(listed.id, Arc::new(listed));
    }

    /// The agent runs another version of its module now.
    pub fn upgraded(&self, id: AgentId, module: Module) {
        if let Some(mut entry) = self.live.get_mut(&id) {
            let listed = entry.value();
            let upgraded = Listed {
                id,
                name: listed.name.clone(),
                module,
                restarts: listed.restarts,
                supervisor: listed.supervisor.clone(),
                started: listed.started,
                stats: listed.stats.clone(),
                stop: listed.stop.clone(),
            };
            *entry.value_mut() = Arc::new(upgraded);
        }
    }

    pub fn leave(&self, id: AgentId) {
        self.live.remove(&id);
    }

    /// Every live agent, by id (start order).
    pub fn list(&self) -> Vec<Arc<Listed>> {
        let mut listed: Vec<Arc<Listed>> = self.live.iter().map(|entry| entry.value().clone()).collect();
        listed.sort_by_key(|listed| listed.id);
        listed
    }

    pub fn get(&self, id: AgentId) -> Option<Arc<Listed>> {
        self.live.get(&id).map(|entry| entry.value().clone())
    }

    /// How many agents are in each phase (every phase listed, zeros included).
    pub fn by_phase(&self) -> Vec<(super::stats::Phase, usize)> {
        let mut counts = [0usize; super::stats::Phase::ALL.len()];
        for entry in self.live.iter() {
            counts[entry.value().stats.phase() as usize] += 1;
        }
        super::stats::Phase::ALL.into_iter().zip(counts).collect()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}
