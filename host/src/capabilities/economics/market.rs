//! The task market: contract net.
//!
//! An announcer puts a task's budget in escrow and announces it; every agent whose registry
//! capabilities include all the task's capabilities gets a call for proposals. Those invited
//! propose a price (at most the budget) and an estimated time. When bidding closes the
//! announcer's rule awards the contract: the lowest price, or the best reputation-weighted value,
//! score × (budget + 1) / (price + 1); ties go to the earliest proposal. The contractor is paid
//! the price from escrow when it reports completion (the rest returns to the announcer); on a
//! reported failure, or when the deadline passes first, the whole budget returns. Each outcome
//! counts in the contractor's reputation.
//!
//! A task is its own entry with its own mutex, driven by one tokio task through bidding and the
//! deadline. Tasks live in memory: at a host restart open ones are gone and the ledger releases
//! their escrow.

use crate::bindings::types::{MarketNotice, TaskCompleted, TaskEnded};
use crate::messaging::Notice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::auctions::{MAX_DURATION, Party};
use super::ledger::{HoldId, Ledger, LedgerError};
use super::reputation::Reputation;
use crate::messaging::{AgentId, Router};

/// Calls for proposals, awards and outcomes arrive on this topic.
pub const TOPIC: &str = "agora:market";
const RETAIN: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    LowestPrice,
    BestScore,
}

#[derive(Debug, Clone)]
pub struct Announcement {
    pub kind: String,
    pub capabilities: Vec<String>,
    /// The most the announcer pays; held in escrow until the task ends.
    pub budget: u64,
    /// How long proposals are taken.
    pub bidding: Duration,
    /// From the announcement: the contract must be completed by then.
    pub deadline: Duration,
    pub rule: Rule,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Bidding,
    Awarded {
        contractor: Arc<str>,
        price: u64,
    },
    Completed {
        contractor: Arc<str>,
        price: u64,
        result: Vec<u8>,
    },
    Failed {
        contractor: Arc<str>,
        reason: String,
    },
    /// The deadline passed before the contractor reported.
    TimedOut {
        contractor: Arc<str>,
    },
    /// Nobody proposed.
    Unawarded,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    #[error("no such task")]
    NotFound,
    #[error("this agent was not called for proposals")]
    NotInvited,
    #[error("the task is past that stage")]
    Closed,
    #[error("the price exceeds the budget of {0}")]
    OverBudget(u64),
    #[error("only the contractor may report on the task")]
    NotContractor,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

struct Proposal {
    contractor: Party,
    price: u64,
}

struct Book {
    state: TaskState,
    proposals: Vec<Proposal>,
    contractor: Option<AgentId>,
    deadline: Instant,
}

pub struct Task {
    id: u64,
    announcer: Party,
    announcement: Announcement,
    invited: Vec<AgentId>,
    escrow: HoldId,
    book: Mutex<Book>,
    outcome: watch::Sender<TaskState>,
    /// Wakes the driver early (the contractor reported).
    wake: Notify,
}

/// What an invited agent reads of a task.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub announcer: Arc<str>,
    pub announcement: Announcement,
    pub state: TaskState,
    pub proposals: u32,
    pub deadline_in: Duration,
}

impl Task {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How tasks have ended so far.
#[derive(Debug, Default)]
pub struct Tally {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub unawarded: AtomicU64,
}

pub struct Market {
    tasks: papaya::HashMap<u64, Arc<Task>>,
    next: AtomicU64,
    pub tally: Tally,
    ledger: Arc<Ledger>,
    reputation: Arc<Reputation>,
    router: Arc<Router>,
}

impl Market {
    pub fn new(ledger: Arc<Ledger>, reputation: Arc<Reputation>, router: Arc<Router>) -> Arc<Market> {
        let tasks = papaya::HashMap::default();
        Arc::new(Market { tasks, next: AtomicU64::new(1), tally: Tally::default(), ledger, reputation, router })
    }

    fn get(&self, id: u64) -> Result<Arc<Task>, MarketError> {
        self.tasks.pin().get(&id).cloned().ok_or(MarketError::NotFound)
    }

    /// Put the budget in escrow and call `invited` for proposals; the task's id.
    pub async fn announce(
        self: &Arc<Self>,
        announcer: Party,
        announcement: Announcement,
        invited: Vec<AgentId>,
    ) -> Result<u64, MarketError> {
        let invalid = |why: &str| Err(MarketError::Invalid(why.into()));
        if announcement.kind.is_empty() || announcement.kind.len() > 256 {
            return invalid("a task's kind is 1-256 bytes");
        }
        if announcement.capabilities.is_empty() {
            return invalid("a task requires at least one capability");
        }
        if announcement.bidding.is_zero() || announcement.bidding >= announcement.deadline {
            return invalid("bidding takes at least 1 ms and ends before the deadline");
        }
        if announcement.deadline > MAX_DURATION {
            return invalid("the deadline is at most 24 h away");
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let escrow = self.ledger.hold(&announcer.name, announcement.budget, &format!("escrow of task {id}")).await?;
        let task = Arc::new(Task {
            id,
            announcer,
            invited,
            escrow,
            book: Mutex::new(Book {
                state: TaskState::Bidding,
                proposals: Vec::new(),
                contractor: None,
                deadline: Instant::now() + announcement.deadline,
            }),
            announcement,
            outcome: watch::Sender::new(TaskState::Bidding),
            wake: Notify::new(),
        });
        self.tasks.pin().insert(id, task.clone());
        let told = Notice::Market(MarketNotice::CallForProposals(id));
        self.router.notify(task.invited.iter().copied(), &TOPIC.into(), &told);
        // The market's steps log at debug (`--verbose`): every party is told each step and
        // says what it does, so at info they would say everything twice.
        tracing::debug!(event = "task_announced", task = id, kind = %task.announcement.kind,
            announcer = %task.announcer.name, budget = task.announcement.budget, invited = task.invited.len());
        let market = self.clone();
        tokio::spawn(async move {
            market.drive(&task).await;
            tokio::time::sleep(RETAIN).await;
            market.tasks.pin().remove(&task.id);
        });
        Ok(id)
    }

    /// Through bidding, the award and the deadline.
    async fn drive(&self, task: &Arc<Task>) {
        tokio::select! {
            () = tokio::time::sleep(task.announcement.bidding) => {}
            () = task.wake.notified() => {}
        }
        let award = {
            let mut book = task.book();
            let winner = self.choose(task, &book.proposals);
            book.state = match winner {
                Some(at) => {
                    let (id, name, price) = {
                        let Proposal { contractor, price } = &book.proposals[at];
                        (contractor.id, contractor.name.clone(), *price)
                    };
                    book.contractor = Some(id);
                    TaskState::Awarded { contractor: name, price }
                }
                None => TaskState::Unawarded,
            };
            let losers: Vec<AgentId> = book
                .proposals
                .iter()
                .enumerate()
                .filter(|(at, _)| Some(*at) != winner)
                .map(|(_, proposal)| proposal.contractor.id)
                .collect();
            (book.state.clone(), book.contractor, losers)
        };
        let topic: Arc<str> = TOPIC.into();
        match award {
            (TaskState::Awarded { contractor: name, price }, Some(contractor), losers) => {
                tracing::debug!(event = "task_awarded", task = task.id, contractor = %name, price);
                task.outcome.send_replace(TaskState::Awarded { contractor: name, price });
                self.router.notify([contractor], &topic, &Notice::Market(MarketNotice::Awarded(task.id)));
                self.router.notify(losers, &topic, &Notice::Market(MarketNotice::Lost(task.id)));
            }
            _ => {
                self.finish(task, TaskState::Unawarded).await;
                return;
            }
        }
        loop {
            let deadline = {
                let mut book = task.book();
                let TaskState::Awarded { contractor, .. } = &book.state else { return };
                if Instant::now() >= book.deadline {
                    book.state = TaskState::TimedOut { contractor: contractor.clone() };
                    Err(book.state.clone())
                } else {
                    Ok(book.deadline)
                }
            };
            let deadline = match deadline {
                Ok(deadline) => deadline,
                Err(timed_out) => return self.finish(task, timed_out).await,
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = task.wake.notified() => {}
            }
        }
    }

    /// The winning proposal under the task's rule; the earliest of equals.
    fn choose(&self, task: &Task, proposals: &[Proposal]) -> Option<usize> {
        let budget = task.announcement.budget as f64;
        let value = |proposal: &Proposal| match task.announcement.rule {
            Rule::LowestPrice => -(proposal.price as f64),
            Rule::BestScore => {
                self.reputation.standing(&proposal.contractor.name).score * (budget + 1.0)
                    / (proposal.price as f64 + 1.0)
            }
        };
        let mut best: Option<(usize, f64)> = None;
        for (at, proposal) in proposals.iter().enumerate() {
            let value = value(proposal);
            if best.is_none_or(|(_, top)| value > top) {
                best = Some((at, value));
            }
        }
        best.map(|(at, _)| at)
    }

    /// Settle the escrow for a task that has ended, count the outcome, and tell the parties.
    async fn finish(&self, task: &Task, state: TaskState) {
        let memo = format!("task {} ({})", task.id, task.announcement.kind);
        let counted = match &state {
            TaskState::Completed { .. } => &self.tally.completed,
            TaskState::Failed { .. } => &self.tally.failed,
            TaskState::TimedOut { .. } => &self.tally.timed_out,
            _ => &self.tally.unawarded,
        };
        counted.fetch_add(1, Ordering::Relaxed);
        let (settled, told) = match &state {
            TaskState::Completed { contractor, price, .. } => {
                self.reputation.record(contractor, true);
                let paid = self.ledger.capture(&task.escrow, contractor, *price, &memo).await;
                let completed = TaskCompleted { task: task.id, contractor: contractor.to_string(), price: *price };
                (paid, MarketNotice::Completed(completed))
            }
            TaskState::Failed { contractor, .. } | TaskState::TimedOut { contractor } => {
                self.reputation.record(contractor, false);
                let ended = TaskEnded { task: task.id, contractor: contractor.to_string() };
                let told = match state {
                    TaskState::Failed { .. } => MarketNotice::Failed(ended),
                    _ => MarketNotice::TimedOut(ended),
                };
                (self.ledger.release(&task.escrow, &memo).await, told)
            }
            _ => (self.ledger.release(&task.escrow, &memo).await, MarketNotice::Unawarded(task.id)),
        };
        if let Err(error) = settled {
            // Only a failed journal gets here; the ledger's next start releases the escrow.
            tracing::error!(event = "task_settlement_failed", task = task.id, %error);
        }
        match &told {
            MarketNotice::Completed(done) => tracing::debug!(
                event = "task_ended",
                task = task.id,
                outcome = "completed",
                contractor = %done.contractor,
                price = done.price
            ),
            MarketNotice::Failed(ended) | MarketNotice::TimedOut(ended) => {
                let outcome = if matches!(told, MarketNotice::Failed(_)) { "failed" } else { "timed_out" };
                tracing::debug!(event = "task_ended", task = task.id, outcome, contractor = %ended.contractor)
            }
            _ => tracing::debug!(event = "task_ended", task = task.id, outcome = "unawarded"),
        }
        task.outcome.send_replace(state);
        let contractor = task.book().contractor;
        let topic: Arc<str> = TOPIC.into();
        self.router.notify(std::iter::once(task.announcer.id).chain(contractor), &topic, &Notice::Market(told));
    }

    /// Propose to do a task; a later proposal from the same agent replaces its earlier one.
    pub fn propose(&self, id: u64, contractor: &Party, price: u64, eta: Duration) -> Result<(), MarketError> {
        let task = self.get(id)?;
        if !task.invited.contains(&contractor.id) {
            return Err(MarketError::NotInvited);
        }
        if price > task.announcement.budget {
            return Err(MarketError::OverBudget(task.announcement.budget));
        }
        let mut book = task.book();
        if book.state != TaskState::Bidding {
            return Err(MarketError::Closed);
        }
        if Instant::now() + eta > book.deadline {
            return Err(MarketError::Invalid("the estimated time runs past the deadline".into()));
        }
        book.proposals.retain(|proposal| proposal.contractor != *contractor);
        book.proposals.push(Proposal { contractor: contractor.clone(), price });
        Ok(())
    }

    /// The contractor reports: `Ok(result)` is completion (it is paid), `Err(reason)` failure.
    pub async fn report(
        &self,
        id: u64,
        contractor: &Party,
        outcome: Result<Vec<u8>, String>,
    ) -> Result<u64, MarketError> {
        let task = self.get(id)?;
        let state = {
            let mut book = task.book();
            let TaskState::Awarded { contractor: name, price } = &book.state else {
                return Err(if book.contractor == Some(contractor.id) {
                    MarketError::Closed
                } else {
                    MarketError::NotContractor
                });
            };
            if book.contractor != Some(contractor.id) {
                return Err(MarketError::NotContractor);
            }
            if Instant::now() >= book.deadline {
                return Err(MarketError::Closed);
            }
            let (name, price) = (name.clone(), *price);
            book.state = match outcome {
                Ok(result) => TaskState::Completed { contractor: name, price, result },
                Err(reason) => TaskState::Failed { contractor: name, reason },
            };
            book.state.clone()
        };
        task.wake.notify_one();
        let paid = match &state {
            TaskState::Completed { price, .. } => *price,
            _ => 0,
        };
        self.finish(&task, state).await;
        Ok(paid)
    }

    /// Every task still in the table, by id.
    pub fn list(&self) -> Vec<(u64, TaskInfo)> {
        let ids: Vec<u64> = self.tasks.pin().keys().copied().collect();
        let mut listed: Vec<(u64, TaskInfo)> =
            ids.into_iter().filter_map(|id| Some((id, self.info(id).ok()?))).collect();
        listed.sort_by_key(|(id, _)| *id);
        listed
    }

    pub fn info(&self, id: u64) -> Result<TaskInfo, MarketError> {
        let task = self.get(id)?;
        let book = task.book();
        Ok(TaskInfo {
            announcer: task.announcer.name.clone(),
            announcement: task.announcement.clone(),
            state: book.state.clone(),
            proposals: book.proposals.len() as u32,
            deadline_in: book.deadline.saturating_duration_since(Instant::now()),
        })
    }

    /// Wait until the task has ended (its escrow settled), at most `timeout`; its state then.
    pub async fn wait(&self, id: u64, timeout: Duration) -> Result<TaskState, MarketError> {
        let mut outcome = self.get(id)?.outcome.subscribe();
        let ended = |state: &TaskState| !matches!(state, TaskState::Bidding | TaskState::Awarded { .. });
        let waited = tokio::time::timeout(timeout, outcome.wait_for(ended)).await.map(|state| state.map(|s| s.clone()));
        Ok(match waited {
            Ok(Ok(state)) => state,
            _ => outcome.borrow().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::economics::ledger::Funds;

    impl Market {
        fn close_bidding(&self, id: u64) {
            self.get(id).unwrap().wake.notify_one();
        }

        fn expire(&self, id: u64) {
            let task = self.get(id).unwrap();
            task.book().deadline = Instant::now();
            task.wake.notify_one();
        }

        /// Wait until bidding has closed (the award is decided).
        async fn awarded(&self, id: u64) -> TaskState {
            let mut outcome = self.get(id).unwrap().outcome.subscribe();
            outcome.wait_for(|state| *state != TaskState::Bidding).await.unwrap().clone()
        }
    }

    fn party(id: AgentId, name: &str) -> Party {
        Party { id, name: name.into() }
    }

    const BOSS: (AgentId, &str) = (1, "boss");
    const CHEAP: (AgentId, &str) = (2, "cheap");
    const GOOD: (AgentId, &str) = (3, "good");
    const OUTSIDER: (AgentId, &str) = (4, "outsider");

    async fn market() -> (Arc<Ledger>, Arc<Reputation>, Arc<Market>) {
        let ledger = Arc::new(Ledger::open(None).unwrap());
        for (_, name) in [BOSS, CHEAP, GOOD, OUTSIDER] {
            ledger.open_wallet(name, 1000).await.unwrap();
        }
        let reputation = Arc::new(Reputation::new(Duration::from_secs(3600)));
        let market = Market::new(ledger.clone(), reputation.clone(), Arc::new(Router::new(1024)));
        (ledger, reputation, market)
    }

    fn task(rule: Rule) -> Announcement {
        Announcement {
            kind: "render".into(),
            capabilities: vec!["render".into()],
            budget: 100,
            bidding: Duration::from_secs(3600),
            deadline: Duration::from_secs(7200),
            rule,
            payload: b"frame 7".to_vec(),
        }
    }

    async fn announce(market: &Arc<Market>, rule: Rule) -> u64 {
        market.announce(party(BOSS.0, BOSS.1), task(rule), vec![CHEAP.0, GOOD.0]).await.unwrap()
    }

    fn funds(ledger: &Ledger, name: &str) -> (u64, u64) {
        let Funds { balance, held } = ledger.funds(name).unwrap();
        (balance, held)
    }

    #[tokio::test]
    async fn completion_pays_the_price_from_escrow_and_returns_the_rest() {
        let (ledger, reputation, market) = market().await;
        let id = announce(&market, Rule::LowestPrice).await;
        assert_eq!(funds(&ledger, "boss"), (900, 100));
        let hour = Duration::from_secs(3600);
        market.propose(id, &party(GOOD.0, GOOD.1), 70, hour).unwrap();
        market.propose(id, &party(CHEAP.0, CHEAP.1), 40, hour).unwrap();
        assert_eq!(market.propose(id, &party(OUTSIDER.0, OUTSIDER.1), 1, hour), Err(MarketError::NotInvited));
        assert_eq!(market.propose(id, &party(GOOD.0, GOOD.1), 101, hour), Err(MarketError::OverBudget(100)));
        assert!(matches!(market.propose(id, &party(GOOD.0, GOOD.1), 5, 3 * hour), Err(MarketError::Invalid(_))));
        market.close_bidding(id);
        assert_eq!(market.awarded(id).await, TaskState::Awarded { contractor: "cheap".into(), price: 40 });
        assert_eq!(market.propose(id, &party(GOOD.0, GOOD.1), 1, hour), Err(MarketError::Closed));
        let report = market.report(id, &party(GOOD.0, GOOD.1), Ok(Vec::new())).await;
        assert_eq!(report, Err(MarketError::NotContractor));
        assert_eq!(market.report(id, &party(CHEAP.0, CHEAP.1), Ok(b"done".to_vec())).await, Ok(40));
        let done = TaskState::Completed { contractor: "cheap".into(), price: 40, result: b"done".to_vec() };
        assert_eq!(market.wait(id, hour).await, Ok(done));
        assert_eq!(funds(&ledger, "boss"), (960, 0));
        assert_eq!(funds(&ledger, "cheap"), (1040, 0));
        assert_eq!(market.report(id, &party(CHEAP.0, CHEAP.1), Ok(Vec::new())).await, Err(MarketError::Closed));
        assert_eq!(reputation.standing("cheap").completed, 1);
    }

    #[tokio::test]
    async fn failure_and_timeout_refund_the_announcer_and_cost_reputation() {
        let (ledger, reputation, market) = market().await;
        let hour = Duration::from_secs(3600);
        let id = announce(&market, Rule::LowestPrice).await;
        market.propose(id, &party(CHEAP.0, CHEAP.1), 40, hour).unwrap();
        market.close_bidding(id);
        market.awarded(id).await;
        assert_eq!(market.report(id, &party(CHEAP.0, CHEAP.1), Err("out of paint".into())).await, Ok(0));
        let failed = TaskState::Failed { contractor: "cheap".into(), reason: "out of paint".into() };
        assert_eq!(market.wait(id, hour).await, Ok(failed));
        assert_eq!((funds(&ledger, "boss"), funds(&ledger, "cheap")), ((1000, 0), (1000, 0)));

        let id = announce(&market, Rule::LowestPrice).await;
        market.propose(id, &party(CHEAP.0, CHEAP.1), 40, hour).unwrap();
        market.close_bidding(id);
        market.awarded(id).await;
        market.expire(id);
        assert_eq!(market.wait(id, hour).await, Ok(TaskState::TimedOut { contractor: "cheap".into() }));
        let late = market.report(id, &party(CHEAP.0, CHEAP.1), Ok(Vec::new())).await;
        assert_eq!(late, Err(MarketError::Closed));
        assert_eq!((funds(&ledger, "boss"), funds(&ledger, "cheap")), ((1000, 0), (1000, 0)));
        assert_eq!(reputation.standing("cheap").failed, 2);

        // Nobody proposes: the budget comes back.
        let id = announce(&market, Rule::LowestPrice).await;
        market.close_bidding(id);
        assert_eq!(market.wait(id, hour).await, Ok(TaskState::Unawarded));
        assert_eq!(funds(&ledger, "boss"), (1000, 0));
    }

    #[tokio::test]
    async fn the_best_score_rule_weighs_price_by_reputation() {
        let (_ledger, reputation, market) = market().await;
        let hour = Duration::from_secs(3600);
        let (good, cheap): (Arc<str>, Arc<str>) = (GOOD.1.into(), CHEAP.1.into());
        for _ in 0..9 {
            reputation.record(&good, true);
            reputation.record(&cheap, false);
        }
        // good: 0.909 × 101/71 = 1.29; cheap: 0.0909 × 101/41 = 0.22.
        for (rule, winner, price) in [(Rule::BestScore, "good", 70), (Rule::LowestPrice, "cheap", 40)] {
            let id = announce(&market, rule).await;
            market.propose(id, &party(CHEAP.0, CHEAP.1), 40, hour).unwrap();
            market.propose(id, &party(GOOD.0, GOOD.1), 70, hour).unwrap();
            market.close_bidding(id);
            assert_eq!(market.awarded(id).await, TaskState::Awarded { contractor: winner.into(), price });
        }
        // Equal values: the earliest proposal wins.
        let id = announce(&market, Rule::LowestPrice).await;
        market.propose(id, &party(GOOD.0, GOOD.1), 50, hour).unwrap();
        market.propose(id, &party(CHEAP.0, CHEAP.1), 50, hour).unwrap();
        market.close_bidding(id);
        assert_eq!(market.awarded(id).await, TaskState::Awarded { contractor: "good".into(), price: 50 });
    }

    #[tokio::test]
    async fn announcing_needs_the_budget_and_a_sound_task() {
        let (ledger, _reputation, market) = market().await;
        let boss = party(BOSS.0, BOSS.1);
        let rich = Announcement { budget: 5000, ..task(Rule::LowestPrice) };
        let refused = market.announce(boss.clone(), rich, vec![]).await;
        assert_eq!(refused, Err(MarketError::Ledger(LedgerError::InsufficientFunds { needed: 5000, available: 1000 })));
        let slow = Announcement { bidding: Duration::from_secs(7200), ..task(Rule::LowestPrice) };
        assert!(matches!(market.announce(boss.clone(), slow, vec![]).await, Err(MarketError::Invalid(_))));
        let vague = Announcement { capabilities: vec![], ..task(Rule::LowestPrice) };
        assert!(matches!(market.announce(boss, vague, vec![]).await, Err(MarketError::Invalid(_))));
        assert_eq!(funds(&ledger, "boss"), (1000, 0));
    }
}
