//! The coordination capability (grant "coordination"): primitives agents use to work together
//! safely. So far: named locks with leases and fencing tokens ([`locks`], the `locks`
//! interface), reusable barriers ([`barriers`]), leader election ([`election`]) and quorum
//! consensus among a group's members ([`consensus`]).

pub mod barriers;
pub mod consensus;
pub mod election;
pub mod locks;

use std::time::Duration;

use super::hooks::Hooks;
use super::{Capability, Entering, Getter, Leaving, NoSection, Served, Startup, View};
use crate::bindings::barriers::{self as wit_barriers, BarrierError as WitBarrierError};
use crate::bindings::consensus::{self as wit_consensus, ConsensusError as WitConsensusError};
use crate::bindings::election::{self as wit_election, ElectionError as WitElectionError};
use crate::bindings::locks::{self as wit, LockError as WitError, Mode as WitMode};
use crate::cluster::locks::ClusterLockError;
use crate::runtime::state::AgentState;
use locks::{LockError, Mode};

/// The longest lease and wait an agent may ask for.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// The coordination services of one host.
pub struct Coordination {
    pub locks: std::sync::Arc<locks::Locks>,
    pub barriers: std::sync::Arc<barriers::Barriers>,
    pub elections: election::Elections,
    pub consensus: consensus::Consensus,
}

impl Capability for Coordination {
    const GRANT: Option<&'static str> = Some("coordination");
    type Section = NoSection;
    type Shared = Coordination;
    type Agent = AgentCoordination;

    fn start(_section: &NoSection, host: &Startup<'_>) -> anyhow::Result<Coordination> {
        Ok(Coordination {
            locks: locks::Locks::start(),
            barriers: barriers::Barriers::start(),
            elections: election::Elections::new(host.router.clone()),
            consensus: consensus::Consensus::new(host.router.clone()),
        })
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, Served<Self>>(linker, get)?;
        wit_barriers::add_to_linker::<_, Served<Self>>(linker, get)?;
        wit_election::add_to_linker::<_, Served<Self>>(linker, get)?;
        wit_consensus::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_shared: &Coordination, _agent: &Entering<'_>) -> AgentCoordination {
        AgentCoordination::default()
    }

    /// End its locks, its group memberships (a successor leads at once) and its owed votes.
    fn leave(shared: &Coordination, state: &mut AgentCoordination, agent: &Leaving<'_>) {
        let held = std::mem::take(&mut state.held);
        match agent.host.cluster.get() {
            Some(cluster) => cluster.lock_release_all(agent.id, held),
            None => shared.locks.release_all(agent.id, &held),
        }
        let groups = std::mem::take(&mut state.groups);
        if !groups.is_empty() {
            shared.consensus.forget(agent.id);
        }
        match agent.host.cluster.get() {
            Some(cluster) => cluster.group_leave_all(agent.id, groups),
            None => {
                for group in &groups {
                    shared.elections.leave(group, agent.id);
                }
            }
        }
    }
}

impl Hooks for Coordination {}

crate::capabilities::denied_is_denied!(
    WitError => "locks",
    WitBarrierError => "barriers",
    WitElectionError => "election",
    WitConsensusError => "consensus",
);

/// Per-agent state: the grants to end and the groups to leave when the agent exits.
#[derive(Default)]
pub struct AgentCoordination {
    pub held: Vec<(String, u64)>,
    pub groups: Vec<String>,
}

fn mode(mode: WitMode) -> Mode {
    match mode {
        WitMode::Exclusive => Mode::Exclusive,
        WitMode::Shared => Mode::Shared,
    }
}

fn error(error: LockError) -> WitError {
    match error {
        LockError::Busy => WitError::Busy,
        LockError::Timeout => WitError::Timeout,
        LockError::NotHeld => WitError::NotHeld,
    }
}

/// A cluster-wide lock's failure. WIT 0.3 has no `unreachable` case: a server that does not
/// answer is `invalid`, its text starting with "unreachable:".
fn cluster_error(error: ClusterLockError) -> WitError {
    match error {
        ClusterLockError::Lock(lock) => self::error(lock),
        ClusterLockError::Unreachable(why) => WitError::Invalid(why),
    }
}

/// Run a cluster lock operation inside a synchronous host call.
fn in_place<T>(operation: impl std::future::Future<Output = Result<T, ClusterLockError>>) -> Result<T, WitError> {
    crate::cluster::remote::in_place(operation)
        .unwrap_or_else(|| Err(ClusterLockError::Unreachable("unreachable: needs the multi-threaded runtime".into())))
        .map_err(cluster_error)
}

impl View<'_, Coordination> {
    fn lock_request(&self, name: &str, ttl_ms: u32) -> Result<Duration, WitError> {
        self.require()?;
        if name.is_empty() || name.len() > 256 {
            return Err(WitError::Invalid("lock names are 1-256 bytes".into()));
        }
        let ttl = Duration::from_millis(ttl_ms.into());
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(WitError::Invalid(format!("ttl-ms {ttl_ms}: 1 ms to {} s", MAX_TTL.as_secs())));
        }
        Ok(ttl)
    }

    fn granted(&mut self, name: String, token: u64) -> u64 {
        // Forget grants that ended without this agent's release (expired leases), lazily.
        if self.state.held.len() >= 64 {
            let (locks, id) = (&self.shared.locks, self.id);
            match self.host.cluster.get() {
                Some(cluster) => self.state.held.retain(|(name, token)| cluster.lock_may_hold(name, id, *token)),
                None => self.state.held.retain(|(name, token)| locks.renew_check(name, id, *token)),
            }
        }
        self.state.held.push((name, token));
        token
    }
}

impl wit::Host for View<'_, Coordination> {
    async fn acquire(&mut self, name: String, mode_: WitMode, ttl_ms: u32, timeout_ms: u32) -> Result<u64, WitError> {
        let ttl = self.lock_request(&name, ttl_ms)?;
        let timeout = Duration::from_millis(timeout_ms.into()).min(MAX_TTL);
        let token = match self.host.cluster.get() {
            // Dropped in the middle (its agent killed), a write may still have granted it: such
            // a grant ends with its lease.
            Some(cluster) => {
                cluster.lock_acquire(&name, self.id, mode(mode_), ttl, timeout).await.map_err(cluster_error)?
            }
            None => self.shared.locks.acquire(&name, self.id, mode(mode_), ttl, timeout).await.map_err(error)?,
        };
        Ok(self.granted(name, token))
    }

    fn try_acquire(&mut self, name: String, mode_: WitMode, ttl_ms: u32) -> Result<u64, WitError> {
        let ttl = self.lock_request(&name, ttl_ms)?;
        let token = match self.host.cluster.get() {
            Some(cluster) => in_place(cluster.lock_try(&name, self.id, mode(mode_), ttl))?,
            None => self.shared.locks.try_acquire(&name, self.id, mode(mode_), ttl).map_err(error)?,
        };
        Ok(self.granted(name, token))
    }

    fn renew(&mut self, name: String, token: u64, ttl_ms: u32) -> Result<(), WitError> {
        let ttl = self.lock_request(&name, ttl_ms)?;
        match self.host.cluster.get() {
            Some(cluster) => in_place(cluster.lock_renew(&name, self.id, token, ttl)),
            None => self.shared.locks.renew(&name, self.id, token, ttl).map_err(error),
        }
    }

    fn release(&mut self, name: String, token: u64) -> Result<(), WitError> {
        self.require()?;
        self.state.held.retain(|(n, t)| !(*t == token && *n == name));
        match self.host.cluster.get() {
            Some(cluster) => in_place(cluster.lock_release(&name, self.id, token)),
            None => self.shared.locks.release(&name, self.id, token).map_err(error),
        }
    }
}

impl wit_barriers::Host for View<'_, Coordination> {
    async fn arrive(&mut self, name: String, parties: u32, timeout_ms: u32) -> Result<u64, WitBarrierError> {
        self.require()?;
        if name.is_empty() || name.len() > 256 || parties == 0 {
            return Err(WitBarrierError::Invalid("names are 1-256 bytes, and a barrier has at least 1 party".into()));
        }
        let timeout = Duration::from_millis(timeout_ms.into()).min(MAX_TTL);
        let arrived = match self.host.cluster.get() {
            Some(cluster) => cluster.barrier_arrive(&name, self.id, self.name, parties, timeout).await,
            None => self.shared.barriers.arrive(&name, self.id, self.name.clone(), parties, timeout).await,
        };
        arrived.map_err(|error| match error {
            barriers::BarrierError::Timeout => WitBarrierError::Timeout,
            barriers::BarrierError::PartyLost(party) => WitBarrierError::PartyLost(party),
            barriers::BarrierError::Mismatch(parties) => WitBarrierError::Mismatch(parties),
        })
    }

    fn waiting(&mut self, name: String) -> Result<Vec<String>, WitBarrierError> {
        self.require()?;
        match self.host.cluster.get() {
            Some(cluster) => Ok(cluster.barrier_waiting(&name)),
            None => Ok(self.shared.barriers.waiting(&name).iter().map(|party| party.to_string()).collect()),
        }
    }
}

fn leadership(leadership: election::Leadership) -> wit_election::Leadership {
    wit_election::Leadership { leader: leadership.leader, term: leadership.term }
}

impl wit_election::Host for View<'_, Coordination> {
    fn join(&mut self, group: String) -> Result<wit_election::Leadership, WitElectionError> {
        self.election_request(&group)?;
        let now = match self.host.cluster.get() {
            Some(cluster) => in_place_group(cluster.group_join(&group, self.id))?,
            None => self.shared.elections.join(&group, self.id),
        };
        if !self.state.groups.contains(&group) {
            self.state.groups.push(group);
        }
        Ok(leadership(now))
    }

    fn leave(&mut self, group: String) -> Result<(), WitElectionError> {
        self.election_request(&group)?;
        self.state.groups.retain(|g| *g != group);
        let was_member = match self.host.cluster.get() {
            Some(cluster) => in_place_group(cluster.group_leave(&group, self.id))?,
            None => self.shared.elections.leave(&group, self.id),
        };
        if was_member { Ok(()) } else { Err(WitElectionError::NotMember) }
    }

    fn leader(&mut self, group: String) -> Result<wit_election::Leadership, WitElectionError> {
        self.election_request(&group)?;
        match self.host.cluster.get() {
            Some(cluster) => Ok(leadership(in_place_group(cluster.group_leadership(&group))?)),
            None => Ok(leadership(self.shared.elections.leadership(&group))),
        }
    }
}

/// Run a cluster-wide group operation inside a synchronous host call; a server that does not
/// answer is `invalid` with a text starting "unreachable:" (WIT 0.3 has no case for it).
fn in_place_group<T>(operation: impl std::future::Future<Output = Result<T, String>>) -> Result<T, WitElectionError> {
    crate::cluster::remote::in_place(operation)
        .unwrap_or_else(|| Err("unreachable: needs the multi-threaded runtime".into()))
        .map_err(WitElectionError::Invalid)
}

impl View<'_, Coordination> {
    fn election_request(&self, group: &str) -> Result<(), WitElectionError> {
        self.require()?;
        if group.is_empty() || group.len() > 256 {
            return Err(WitElectionError::Invalid("group names are 1-256 bytes".into()));
        }
        Ok(())
    }
}

impl wit_consensus::Host for View<'_, Coordination> {
    async fn propose(
        &mut self,
        group: String,
        value: Vec<u8>,
        quorum: wit_consensus::Quorum,
        timeout_ms: u32,
    ) -> Result<wit_consensus::Outcome, WitConsensusError> {
        self.require()?;
        self.host.router.check_size(value.len()).map_err(|_| WitConsensusError::Invalid("value too large".into()))?;
        let quorum = match quorum {
            wit_consensus::Quorum::Majority => consensus::Quorum::Majority,
            wit_consensus::Quorum::All => consensus::Quorum::All,
            wit_consensus::Quorum::AtLeast(n) => consensus::Quorum::AtLeast(n),
        };
        let members = match self.host.cluster.get() {
            Some(cluster) => cluster.group_members(&group).into_iter().map(|m| m.agent).collect(),
            None => self.shared.elections.members(&group),
        };
        let timeout = Duration::from_millis(timeout_ms.into()).min(MAX_TTL);
        let outcome = self.shared.consensus.propose(&group, self.id, members, &value, quorum, timeout).await;
        let outcome = outcome.map_err(|error| match error {
            consensus::ConsensusError::NotFound => WitConsensusError::NotFound,
            consensus::ConsensusError::NotAVoter => WitConsensusError::NotAVoter,
            consensus::ConsensusError::Invalid(why) => WitConsensusError::Invalid(why),
        })?;
        let verdict = match outcome.verdict {
            consensus::Verdict::Committed => wit_consensus::Verdict::Committed,
            consensus::Verdict::Rejected => wit_consensus::Verdict::Rejected,
            consensus::Verdict::TimedOut => wit_consensus::Verdict::TimedOut,
        };
        crate::capabilities::events::lifecycle::consensus_round(
            &self.host.services.events.store,
            self.name,
            &group,
            &outcome,
            &value,
        )
        .await;
        Ok(wit_consensus::Outcome {
            verdict,
            round: outcome.round,
            voters: outcome.voters,
            accepted: outcome.accepted,
            rejected: outcome.rejected,
            missing: outcome.missing,
        })
    }

    fn vote(&mut self, _group: String, round: u64, accept: bool) -> Result<(), WitConsensusError> {
        self.require()?;
        self.shared.consensus.vote(round, self.id, accept).map_err(|error| match error {
            consensus::ConsensusError::NotFound => WitConsensusError::NotFound,
            consensus::ConsensusError::NotAVoter => WitConsensusError::NotAVoter,
            consensus::ConsensusError::Invalid(why) => WitConsensusError::Invalid(why),
        })
    }
}
