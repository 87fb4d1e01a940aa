//! Leader election in named groups.
//!
//! A group's state (members in join order, the leader, the term) is its own dashmap entry,
//! changed under that entry's shard lock: two members can never both see themselves leading the
//! same term. The earliest member leads; when it leaves or its agent exits, the next one takes
//! over under term + 1, and every member gets a message saying so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::infra::hashers::NameHasher;
use crate::messaging::{AgentId, Router};

/// Members are told of a new leader on `agora:leader/<group>`.
pub const TOPIC_PREFIX: &str = "agora:leader/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<AgentId>,
    pub term: u64,
}

#[derive(Default)]
struct Group {
    /// In join order; the first leads.
    members: Vec<AgentId>,
    term: u64,
}

impl Group {
    fn leadership(&self) -> Leadership {
        Leadership { leader: self.members.first().copied(), term: self.term }
    }
}

pub struct Elections {
    groups: DashMap<String, Group, NameHasher>,
    /// Above every term an emptied (removed) group reached, so terms only increase.
    floor: AtomicU64,
    router: Arc<Router>,
}

impl Elections {
    pub fn new(router: Arc<Router>) -> Elections {
        Elections { groups: DashMap::default(), floor: AtomicU64::new(0), router }
    }

    pub fn join(&self, group: &str, agent: AgentId) -> Leadership {
        let mut state = self
            .groups
            .entry(group.to_string())
            .or_insert_with(|| Group { members: Vec::new(), term: self.floor.load(Ordering::SeqCst) });
        if !state.members.contains(&agent) {
            state.members.push(agent);
            if state.members.len() == 1 {
                state.term += 1;
                self.announce(group, &state);
            }
        }
        state.leadership()
    }

    /// Leave a group; false if `agent` was no member.
    pub fn leave(&self, group: &str, agent: AgentId) -> bool {
        let Some(mut state) = self.groups.get_mut(group) else { return false };
        let Some(at) = state.members.iter().position(|member| *member == agent) else { return false };
        state.members.remove(at);
        if at == 0 {
            state.term += 1;
            self.announce(group, &state);
        }
        let emptied = state.members.is_empty();
        drop(state);
        if emptied {
            self.groups.remove_if(group, |_, state| {
                let empty = state.members.is_empty();
                if empty {
                    self.floor.fetch_max(state.term, Ordering::SeqCst);
                }
                empty
            });
        }
        true
    }

    pub fn leadership(&self, group: &str) -> Leadership {
        self.groups
            .get(group)
            .map_or(Leadership { leader: None, term: self.floor.load(Ordering::SeqCst) }, |state| state.leadership())
    }

    /// The group's members now, in join order.
    pub fn members(&self, group: &str) -> Vec<AgentId> {
        self.groups.get(group).map(|state| state.members.clone()).unwrap_or_default()
    }

    /// Tell every member the group's new leadership.
    fn announce(&self, group: &str, state: &Group) {
        let Leadership { leader, term } = state.leadership();
        let change = crate::bindings::types::LeaderChange { group: group.to_string(), leader, term };
        let topic: Arc<str> = format!("{TOPIC_PREFIX}{group}").into();
        self.router.notify(state.members.iter().copied(), &topic, &crate::messaging::Notice::LeaderChanged(change));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types::LeaderChange;

    #[test]
    fn the_earliest_member_leads_and_terms_increase() {
        let router = Arc::new(Router::new(1024));
        let elections = Elections::new(router.clone());
        let mut inboxes: Vec<_> = (1..=3).map(|id| router.open(id, 8)).collect();
        assert_eq!(elections.join("g", 1), Leadership { leader: Some(1), term: 1 });
        assert_eq!(elections.join("g", 2), Leadership { leader: Some(1), term: 1 });
        assert_eq!(elections.join("g", 3), Leadership { leader: Some(1), term: 1 });
        assert!(elections.leave("g", 2), "a follower leaves: nothing changes");
        assert_eq!(elections.leadership("g"), Leadership { leader: Some(1), term: 1 });
        assert!(elections.leave("g", 1));
        assert_eq!(elections.leadership("g"), Leadership { leader: Some(3), term: 2 });
        assert!(!elections.leave("g", 1));
        let told = inboxes[2].try_recv().unwrap().into_notice();
        let change = LeaderChange { group: "g".into(), leader: Some(3), term: 2 };
        assert_eq!(told, Some(crate::messaging::Notice::LeaderChanged(change)));
        assert!(elections.leave("g", 3));
        assert_eq!(
            elections.join("g", 2),
            Leadership { leader: Some(2), term: 4 },
            "terms go on after a group empties"
        );
        drop(inboxes.pop());
    }

    /// Randomized interleavings: 12 agents on 2 worker threads join, leave and read 2 groups at
    /// random. Every leadership anyone saw (from `join`, from `leadership`, or told in a message)
    /// pairs each term with one leader only, each agent is told of strictly increasing terms,
    /// and a group all left has no leader.
    #[test]
    fn random_joins_and_leaves_never_give_one_term_two_leaders() {
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;

        const AGENTS: u64 = 12;
        const GROUPS: [&str; 2] = ["a", "b"];
        for seed in 0..8u64 {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let router = Arc::new(Router::new(1024));
            let elections = Arc::new(Elections::new(router.clone()));
            let mut inboxes: Vec<_> = (1..=AGENTS).map(|agent| router.open(agent, 100_000)).collect();
            let seen: Vec<(usize, Leadership)> = runtime.block_on(async {
                let mut agents = Vec::new();
                for agent in 1..=AGENTS {
                    let elections = elections.clone();
                    agents.push(tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + agent);
                        let mut seen = Vec::new();
                        for _ in 0..300 {
                            let group = rng.random_range(0..GROUPS.len());
                            match rng.random_range(0..3) {
                                0 => seen.push((group, elections.join(GROUPS[group], agent))),
                                1 => {
                                    elections.leave(GROUPS[group], agent);
                                }
                                _ => seen.push((group, elections.leadership(GROUPS[group]))),
                            }
                            tokio::task::yield_now().await;
                        }
                        for group in GROUPS {
                            elections.leave(group, agent);
                        }
                        seen
                    }));
                }
                let mut seen = Vec::new();
                for agent in agents {
                    seen.extend(agent.await.unwrap());
                }
                seen
            });
            let mut leader_of_term: HashMap<(usize, u64), Option<AgentId>> = HashMap::new();
            let mut record = |group: usize, leadership: Leadership| {
                let first = *leader_of_term.entry((group, leadership.term)).or_insert(leadership.leader);
                assert_eq!(
                    first, leadership.leader,
                    "seed {seed}: group {group} term {} had two leaders",
                    leadership.term
                );
            };
            for (group, leadership) in seen {
                record(group, leadership);
            }
            let mut told = 0;
            for inbox in &mut inboxes {
                let mut last_term = [0u64; GROUPS.len()];
                while let Ok(message) = inbox.try_recv() {
                    let group = GROUPS
                        .iter()
                        .position(|g| message.topic.as_deref() == Some(&format!("{TOPIC_PREFIX}{g}")))
                        .unwrap();
                    let Some(crate::messaging::Notice::LeaderChanged(change)) = message.into_notice() else {
                        panic!("seed {seed}: a leader change, typed")
                    };
                    assert_eq!(change.group, GROUPS[group]);
                    let LeaderChange { term, leader, .. } = change;
                    assert!(term > last_term[group], "seed {seed}: terms told out of order");
                    last_term[group] = term;
                    record(group, Leadership { leader, term });
                    told += 1;
                }
            }
            assert!(told > 0, "seed {seed}: members were told of changes");
            for group in GROUPS {
                assert_eq!(elections.leadership(group).leader, None, "seed {seed}: everybody left {group}");
                assert!(elections.members(group).is_empty());
            }
        }
    }
}
