//! Quorum consensus among the members of an election group.
//!
//! Each round is its own dashmap entry; votes and exits change it under that entry's shard lock,
//! and the round is decided the moment the outcome is certain: committed once the accepts reach
//! the quorum, rejected once they no longer can (rejections and members that exited before
//! voting), timed out at the proposer's deadline. Nothing is ever committed without the votes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::infra::hashers::IdHasher;
use crate::messaging::{AgentId, Message, Router};

/// Vote requests for group `g` arrive on `agora:vote/g`.
pub const TOPIC_PREFIX: &str = "agora:vote/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    Majority,
    All,
    AtLeast(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Committed,
    Rejected,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub round: u64,
    pub voters: u32,
    pub accepted: u32,
    pub rejected: u32,
    pub missing: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusError {
    NotFound,
    NotAVoter,
    Invalid(String),
}

struct Round {
    /// Asked and not yet voted.
    pending: Vec<AgentId>,
    needed: u32,
    outcome: Outcome,
    decided: Option<oneshot::Sender<Outcome>>,
}

impl Round {
    /// Decide if the outcome is certain.
    fn settle(&mut self) {
        let tally = &mut self.outcome;
        let verdict = if tally.accepted >= self.needed {
            Verdict::Committed
        } else if tally.accepted + self.pending.len() as u32 >= self.needed {
            return;
        } else {
            Verdict::Rejected
        };
        tally.verdict = verdict;
        if let Some(decided) = self.decided.take() {
            let _ = decided.send(*tally);
        }
    }
}

/// In a cluster: the rounds and voters of other nodes (see `crate::cluster::votes`).
pub trait RemoteRounds: Send + Sync {
    /// Ask `member`, an agent of another node; false if it cannot be asked.
    fn ask(&self, member: AgentId, request: &crate::bindings::types::VoteRequest) -> bool;
    /// Whether `round` is another node's.
    fn is_remote(&self, round: u64) -> bool;
    /// Vote in another node's round.
    fn vote(&self, round: u64, voter: AgentId, accept: bool) -> Result<(), ConsensusError>;
    /// `voter`, asked in another node's round, exited before voting.
    fn lost(&self, round: u64, voter: AgentId);
}

pub struct Consensus {
    rounds: DashMap<u64, Round, IdHasher>,
    next_round: AtomicU64,
    router: Arc<Router>,
    remote: std::sync::OnceLock<Arc<dyn RemoteRounds>>,
    /// Agents of this host asked in other nodes' rounds, and those rounds (to report them
    /// missing if they exit before voting).
    asked_here: DashMap<AgentId, Vec<u64>, IdHasher>,
}

impl Consensus {
    pub fn new(router: Arc<Router>) -> Consensus {
        Consensus {
            rounds: DashMap::default(),
            next_round: AtomicU64::new(1),
            router,
            remote: Default::default(),
            asked_here: Default::default(),
        }
    }

    /// Join a cluster: rounds are numbered from `first` (they carry the node's index, so a
    /// vote finds its way back), and members and rounds of other nodes are reached through
    /// `remote`.
    pub fn share(&self, first: u64, remote: Arc<dyn RemoteRounds>) {
        self.next_round.store(first, Ordering::Relaxed);
        let _ = self.remote.set(remote);
    }

    /// A request of another node's round reached local `member`.
    pub fn asked_remotely(&self, member: AgentId, round: u64) {
        self.asked_here.entry(member).or_default().push(round);
    }

    /// Ask `members` to vote on `value`; wait (suspending only the caller) for the outcome.
    pub async fn propose(
        &self,
        group: &str,
        proposer: AgentId,
        members: Vec<AgentId>,
        value: &[u8],
        quorum: Quorum,
        timeout: Duration,
    ) -> Result<Outcome, ConsensusError> {
        if members.is_empty() {
            return Err(ConsensusError::NotFound);
        }
        let voters = members.len() as u32;
        let needed = match quorum {
            Quorum::Majority => voters / 2 + 1,
            Quorum::All => voters,
            Quorum::AtLeast(n) if (1..=voters).contains(&n) => n,
            Quorum::AtLeast(n) => {
                return Err(ConsensusError::Invalid(format!("at-least({n}) with {voters} members")));
            }
        };
        let round = self.next_round.fetch_add(1, Ordering::Relaxed);
        let (decided, outcome) = oneshot::channel();
        let tally = Outcome { verdict: Verdict::TimedOut, round, voters, accepted: 0, rejected: 0, missing: 0 };
        self.rounds.insert(round, Round { pending: members.clone(), needed, outcome: tally, decided: Some(decided) });
        let topic: Arc<str> = format!("{TOPIC_PREFIX}{group}").into();
        let request =
            crate::bindings::types::VoteRequest { group: group.to_string(), round, proposer, value: value.to_vec() };
        for member in members {
            let notice = crate::messaging::Notice::VoteRequested(request.clone());
            let message = Message::notice(Some(proposer), topic.clone(), notice);
            match self.router.try_deliver(member, message) {
                Ok(()) => {}
                Err(crate::bindings::Error::NotFound)
                    if self.remote.get().is_some_and(|remote| remote.ask(member, &request)) => {}
                // Gone, or no room for the request: this member cannot vote.
                Err(_) => self.lose_voter(round, member),
            }
        }
        let decided = tokio::time::timeout(timeout, outcome).await;
        // Removed before its tally is read: a vote that comes later finds no round (and learns
        // so) rather than counting in a tally nobody reads.
        let left = self.rounds.remove(&round).map(|(_, round)| round.outcome);
        Ok(match decided {
            Ok(Ok(outcome)) => outcome,
            _ => left.unwrap_or(tally),
        })
    }

    pub fn vote(&self, round: u64, voter: AgentId, accept: bool) -> Result<(), ConsensusError> {
        if let Some(remote) = self.remote.get()
            && remote.is_remote(round)
        {
            if let Some(mut asked) = self.asked_here.get_mut(&voter) {
                asked.retain(|r| *r != round);
            }
            self.asked_here.remove_if(&voter, |_, asked| asked.is_empty());
            return remote.vote(round, voter, accept);
        }
        let mut state = self.rounds.get_mut(&round).ok_or(ConsensusError::NotFound)?;
        if state.decided.is_none() {
            return Err(ConsensusError::NotFound);
        }
        let at = state.pending.iter().position(|p| *p == voter).ok_or(ConsensusError::NotAVoter)?;
        state.pending.swap_remove(at);
        if accept {
            state.outcome.accepted += 1;
        } else {
            state.outcome.rejected += 1;
        }
        state.settle();
        Ok(())
    }

    pub fn lose_voter(&self, round: u64, voter: AgentId) {
        if let Some(mut state) = self.rounds.get_mut(&round)
            && let Some(at) = state.pending.iter().position(|p| *p == voter)
        {
            state.pending.swap_remove(at);
            state.outcome.missing += 1;
            state.settle();
        }
    }

    /// An exiting agent's votes still owed are missing.
    pub fn forget(&self, voter: AgentId) {
        let open: Vec<u64> = self.rounds.iter().filter(|r| r.pending.contains(&voter)).map(|r| *r.key()).collect();
        for round in open {
            self.lose_voter(round, voter);
        }
        if let (Some(remote), Some((_, asked))) = (self.remote.get(), self.asked_here.remove(&voter)) {
            for round in asked {
                remote.lost(round, voter);
            }
        }
    }

    /// Voters owed by agents that `gone` says are gone (a node that went down) are missing.
    pub fn lose_voters(&self, gone: impl Fn(AgentId) -> bool) {
        let owed: Vec<(u64, AgentId)> = self
            .rounds
            .iter()
            .flat_map(|r| r.pending.iter().filter(|v| gone(**v)).map(|v| (*r.key(), *v)).collect::<Vec<_>>())
            .collect();
        for (round, voter) in owed {
            self.lose_voter(round, voter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quorum_rules_decide_on_the_votes() {
        let router = Arc::new(Router::new(1024));
        let consensus = Arc::new(Consensus::new(router.clone()));
        let _inboxes: Vec<_> = (1..=3).map(|id| router.open(id, 8)).collect();
        let propose = |quorum, timeout| {
            let consensus = consensus.clone();
            tokio::spawn(async move { consensus.propose("g", 9, vec![1, 2, 3, 4], b"v", quorum, timeout).await })
        };
        // Member 4 has no mailbox: missing from the start.
        let round = propose(Quorum::Majority, Duration::from_secs(30));
        while consensus.rounds.is_empty() {
            tokio::task::yield_now().await;
        }
        let id = *consensus.rounds.iter().next().unwrap().key();
        consensus.vote(id, 1, true).unwrap();
        assert_eq!(consensus.vote(id, 1, true), Err(ConsensusError::NotAVoter));
        consensus.vote(id, 2, true).unwrap();
        consensus.vote(id, 3, true).unwrap();
        let outcome = round.await.unwrap().unwrap();
        assert_eq!(
            (outcome.verdict, outcome.accepted, outcome.rejected, outcome.missing),
            (Verdict::Committed, 3, 0, 1)
        );
        assert_eq!(outcome.voters, 4);

        // A rejection and a missing member: a majority of 4 (3) is out of reach at once.
        let round = propose(Quorum::Majority, Duration::from_secs(30));
        let id = loop {
            if let Some(open) = consensus.rounds.iter().find(|r| r.decided.is_some()).map(|r| *r.key()) {
                break open;
            }
            tokio::task::yield_now().await;
        };
        consensus.vote(id, 1, false).unwrap();
        let outcome = round.await.unwrap().unwrap();
        assert_eq!((outcome.verdict, outcome.rejected, outcome.missing), (Verdict::Rejected, 1, 1));
        assert_eq!(consensus.vote(id, 2, true), Err(ConsensusError::NotFound), "the round is closed");

        let round = propose(Quorum::All, Duration::from_secs(30));
        let outcome = round.await.unwrap().unwrap();
        assert_eq!(outcome.verdict, Verdict::Rejected, "a missing member makes `all` impossible at once");

        let round = propose(Quorum::AtLeast(2), Duration::from_millis(100));
        let outcome = round.await.unwrap().unwrap();
        assert_eq!((outcome.verdict, outcome.accepted), (Verdict::TimedOut, 0));
        assert!(matches!(
            consensus.propose("g", 9, vec![1], b"v", Quorum::AtLeast(2), Duration::ZERO).await,
            Err(ConsensusError::Invalid(_))
        ));
    }

    /// Randomized rounds: 3 proposers run rounds with random quorum rules and deadlines over 5
    /// members, who accept, reject, ignore or exit (lose their owed votes) after random delays,
    /// on 2 worker threads. Every outcome's tally is exactly the votes that were acknowledged for
    /// its round, and its verdict is the one the tally and the rule give: nothing is committed
    /// without the votes, and nothing acknowledged is lost.
    #[test]
    fn random_rounds_tally_exactly_the_acknowledged_votes() {
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;
        use std::sync::Mutex;

        const MEMBERS: u64 = 5;
        for seed in 0..8u64 {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let router = Arc::new(Router::new(1024));
            let consensus = Arc::new(Consensus::new(router.clone()));
            // Acknowledged (accepts, rejects) by round.
            let acknowledged: Arc<Mutex<HashMap<u64, (u32, u32)>>> = Arc::default();
            let outcomes = runtime.block_on(async {
                let mut voters = Vec::new();
                for member in 1..=MEMBERS {
                    let mut inbox = router.open(member, 1024);
                    let (consensus, acknowledged) = (consensus.clone(), acknowledged.clone());
                    voters.push(tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + member);
                        while let Some(request) = inbox.recv().await {
                            let Some(crate::messaging::Notice::VoteRequested(request)) = request.into_notice() else {
                                panic!("a vote request, typed")
                            };
                            let round = request.round;
                            let (choice, delay) = (rng.random_range(0..10), rng.random_range(0..4u64));
                            let (consensus, acknowledged) = (consensus.clone(), acknowledged.clone());
                            // Each request answered by its own task, at once or after 1 to 3 ms,
                            // so that votes race one another and the deadlines.
                            tokio::spawn(async move {
                                if delay == 0 {
                                    tokio::task::yield_now().await;
                                } else {
                                    tokio::time::sleep(Duration::from_millis(delay)).await;
                                }
                                match choice {
                                    0 => {}
                                    1 => consensus.forget(member),
                                    choice => {
                                        let accept = choice >= 4;
                                        if consensus.vote(round, member, accept).is_ok() {
                                            let mut counts = acknowledged.lock().unwrap();
                                            let (yes, no) = counts.entry(round).or_default();
                                            if accept { *yes += 1 } else { *no += 1 }
                                        }
                                    }
                                }
                            });
                        }
                    }));
                }
                let mut proposers = Vec::new();
                for proposer in 0..3u64 {
                    let consensus = consensus.clone();
                    proposers.push(tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + 50 + proposer);
                        let mut outcomes = Vec::new();
                        for _ in 0..40 {
                            let quorum = match rng.random_range(0..3) {
                                0 => Quorum::Majority,
                                1 => Quorum::All,
                                _ => Quorum::AtLeast(rng.random_range(1..=MEMBERS as u32)),
                            };
                            let timeout = Duration::from_millis(rng.random_range(1..6));
                            let members = (1..=MEMBERS).collect();
                            let outcome =
                                consensus.propose("g", 100 + proposer, members, b"v", quorum, timeout).await.unwrap();
                            outcomes.push((quorum, outcome));
                        }
                        outcomes
                    }));
                }
                let mut outcomes = Vec::new();
                for proposer in proposers {
                    outcomes.extend(proposer.await.unwrap());
                }
                for voter in voters {
                    voter.abort();
                }
                outcomes
            });
            let acknowledged = acknowledged.lock().unwrap();
            assert_eq!(outcomes.len(), 120);
            let verdicts = |v| outcomes.iter().filter(|(_, o)| o.verdict == v).count();
            eprintln!(
                "seed {seed}: {} committed, {} rejected, {} timed out",
                verdicts(Verdict::Committed),
                verdicts(Verdict::Rejected),
                verdicts(Verdict::TimedOut)
            );
            for (quorum, outcome) in outcomes {
                let (yes, no) = acknowledged.get(&outcome.round).copied().unwrap_or_default();
                assert_eq!((outcome.accepted, outcome.rejected), (yes, no), "seed {seed}: {outcome:?}");
                let needed = match quorum {
                    Quorum::Majority => 3,
                    Quorum::All => 5,
                    Quorum::AtLeast(n) => n,
                };
                let counted = outcome.accepted + outcome.rejected + outcome.missing;
                assert!(counted <= outcome.voters, "seed {seed}: {outcome:?}");
                let reachable = outcome.accepted + (outcome.voters - counted) >= needed;
                let verdict = match () {
                    _ if outcome.accepted >= needed => Verdict::Committed,
                    _ if !reachable => Verdict::Rejected,
                    _ => Verdict::TimedOut,
                };
                assert_eq!(outcome.verdict, verdict, "seed {seed}: {quorum:?} {outcome:?}");
            }
            assert!(consensus.rounds.is_empty(), "seed {seed}: every round closed");
        }
    }
}
