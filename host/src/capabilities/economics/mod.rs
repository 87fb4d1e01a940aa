//! The economics capability (grant "economics"): money that is conserved and compute that is
//! paid for. Each agent has a wallet in the [`ledger`] (an integer balance and holds, moved only
//! by durable double-entry records in the [`journal`]); with `compute_price` set, every
//! instance's fuel is metered and its wallet pays for it ([`billing`]). Agents trade through
//! [`auctions`] and the contract-net task [`market`], whose outcomes build each agent's
//! [`reputation`]; every bid and every task budget is escrow in the ledger.

pub mod auctions;
pub mod billing;
pub mod journal;
pub mod ledger;
pub mod market;
pub mod reputation;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::AsContextMut;

use super::hooks::{Gate, Hooks};
use super::{Capability, Entering, Getter, SectionError, Served, Startup, View};
use crate::bindings::auctions::{
    self as wit_auctions, AuctionError as WitAuctionError, AuctionInfo, DutchClock, EnglishRules, Format as WitFormat,
    Sale, State as WitState, Terms as WitTerms,
};
use crate::bindings::ledger::{self as wit, ComputeUsage, Funds as WitFunds, LedgerError as WitError};
use crate::bindings::market::{
    self as wit_market, AwardRule, Completion, Contract, Failure, MarketError as WitMarketError, Standing,
    Task as WitTask, TaskInfo, TaskState as WitTaskState,
};
use crate::manifest::Span;
use crate::messaging::AgentId;
use crate::messaging::Router;
use crate::runtime::state::AgentState;
use auctions::{AuctionError, Auctions, Format, Party, State, Terms};
use ledger::{HoldId, Ledger, LedgerError};
use market::{Announcement, Market, MarketError, Rule, TaskState};
use reputation::Reputation;

/// What happens to messages for an agent whose wallet cannot pay for its compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnpaidPolicy {
    /// Refuse them with the typed error `unpaid` (queued ones too) until it is funded.
    #[default]
    Refuse,
    /// Keep them queued (the mailbox bound still applies) until it is funded.
    Suspend,
}

/// `[economics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EconomicsSettings {
    /// The currency's name, for people.
    pub currency: String,
    /// Credits per `compute_unit` of fuel; 0 leaves compute free and unmetered.
    pub compute_price: u64,
    pub compute_unit: u64,
    /// Units a store buys ahead at least (a busy one: twice its burn per tick). A slice must
    /// cover one tick of the fastest compute, as a long callback's first top-up comes at a
    /// tick: the default, 100 M fuel, lasts ~12 ms of a tight loop here; a tick is 10 ms.
    pub compute_slice: u64,
    pub unpaid: UnpaidPolicy,
    /// Keep the ledger in `<data_dir>/ledger.redb` (else in memory, gone at exit).
    pub durable: bool,
    /// How fast task outcomes fade from reputations.
    pub reputation_half_life: Span,
}

impl Default for EconomicsSettings {
    fn default() -> Self {
        EconomicsSettings {
            currency: "credits".into(),
            compute_price: 0,
            compute_unit: 1_000_000,
            compute_slice: 100,
            unpaid: UnpaidPolicy::Refuse,
            durable: true,
            reputation_half_life: Span(Duration::from_secs(3600)),
        }
    }
}

impl EconomicsSettings {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.compute_unit == 0 {
            return Err(("economics.compute_unit", "must be at least 1 (fuel)".into()));
        }
        if self.compute_slice == 0 {
            return Err(("economics.compute_slice", "must be at least 1 (unit)".into()));
        }
        if self.reputation_half_life.duration() < Duration::from_millis(1) {
            return Err(("economics.reputation_half_life", "must be at least 1ms".into()));
        }
        Ok(())
    }

    /// Whether instances burn fuel (an engine setting, fixed for the host's life).
    pub fn meters_compute(&self) -> bool {
        self.compute_price > 0
    }
}

/// The price of compute, when it has one.
#[derive(Debug, Clone, Copy)]
pub struct Pricing {
    pub price: u64,
    pub unit: u64,
    pub slice: u64,
}

impl Pricing {
    pub fn slice_fuel(&self) -> u64 {
        self.unit.saturating_mul(self.slice)
    }
}

pub struct Economics {
    pub ledger: Arc<Ledger>,
    pub auctions: Arc<Auctions>,
    pub market: Arc<Market>,
    pub reputation: Arc<Reputation>,
    pub settings: EconomicsSettings,
}

impl Economics {
    /// `durable = false` keeps the ledger in memory whatever the settings say (`agora check`).
    pub fn open(
        settings: &EconomicsSettings,
        data_dir: &Path,
        durable: bool,
        router: &Arc<Router>,
    ) -> Result<Economics, LedgerError> {
        let path = data_dir.join("ledger.redb");
        let ledger = Arc::new(Ledger::open((settings.durable && durable).then_some(path.as_path()))?);
        let reputation = Arc::new(Reputation::new(settings.reputation_half_life.duration()));
        Ok(Economics {
            auctions: Auctions::new(ledger.clone(), router.clone()),
            market: Market::new(ledger.clone(), reputation.clone(), router.clone()),
            ledger,
            reputation,
            settings: settings.clone(),
        })
    }

    /// A short account of the economy for people: wallets, reputations, auctions and tasks,
    /// and whether money was conserved. None when no agent had a wallet.
    pub fn summary(&self) -> Option<String> {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let wallets = self.ledger.wallets();
        if wallets.is_empty() {
            return None;
        }
        let (auctions, tasks) = (&self.auctions.tally, &self.market.tally);
        let (sold, unsold) = (auctions.sold.load(Relaxed), auctions.unsold.load(Relaxed));
        let ended = [&tasks.completed, &tasks.failed, &tasks.timed_out, &tasks.unawarded].map(|n| n.load(Relaxed));
        let currency = &self.settings.currency;
        let mut text = format!(
            "economy ({currency}): {} auctions ({sold} sold, {unsold} unsold), {} tasks ({} delivered, {} failed, {} timed out, {} without proposals)\n",
            sold + unsold + auctions.cancelled.load(Relaxed),
            ended.iter().sum::<u64>(),
            ended[0],
            ended[1],
            ended[2],
            ended[3],
        );
        let width = wallets.keys().map(String::len).max().unwrap_or(0).max(6);
        let _ = writeln!(text, "  {:width$}  {:>10}  {:>8}  reputation", "wallet", "balance", "held");
        let reputations: std::collections::HashMap<_, _> = self.reputation.all().into_iter().collect();
        for (name, funds) in &wallets {
            let standing = reputations.get(name.as_str()).map_or(String::new(), |standing| {
                format!("{:.2} ({} delivered, {} failed)", standing.score, standing.completed, standing.failed)
            });
            let _ = writeln!(text, "  {name:width$}  {:>10}  {:>8}  {standing}", funds.balance, funds.held);
        }
        let (total, minted) = self.ledger.totals();
        let verdict = if total == minted { "conserved" } else { "NOT CONSERVED" };
        let _ = writeln!(text, "  money: {minted} minted, {total} in wallets and holds ({verdict})");
        Some(text)
    }

    pub fn pricing(&self) -> Option<Pricing> {
        let s = &self.settings;
        s.meters_compute().then_some(Pricing { price: s.compute_price, unit: s.compute_unit, slice: s.compute_slice })
    }
}

impl Capability for Economics {
    const GRANT: Option<&'static str> = Some("economics");
    type Section = EconomicsSettings;
    type Shared = Economics;
    type Agent = AgentEconomics;

    fn validate(section: &EconomicsSettings) -> Result<(), SectionError> {
        section.validate().map_err(|(key, message)| SectionError::new("economics", key, message))
    }

    fn start(section: &EconomicsSettings, host: &Startup<'_>) -> anyhow::Result<Economics> {
        Ok(Economics::open(section, host.data_dir, host.durable, host.router)?)
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, Served<Self>>(linker, get)?;
        wit_auctions::add_to_linker::<_, Served<Self>>(linker, get)?;
        wit_market::add_to_linker::<_, Served<Self>>(linker, get)
    }

    /// A store is metered when compute has a price; its own wallet pays, or for an isolated
    /// job the wallet of the agent it works for.
    fn enter(economics: &Economics, agent: &Entering<'_>) -> AgentEconomics {
        let payer = agent.acting_for.unwrap_or(agent.name);
        AgentEconomics { meter: economics.pricing().map(|_| billing::Meter::new(payer.clone())), fuel_used: 0 }
    }
}

/// Per-agent state: the meter of its store's fuel, when compute has a price.
#[derive(Default)]
pub struct AgentEconomics {
    pub meter: Option<billing::Meter>,
    /// Fuel burned up to the end of the last callback.
    pub fuel_used: u64,
}

/// Compute is billed through the callback hooks; an agent's wallet is opened before it starts.
impl Hooks for Economics {
    fn meters_fuel(section: &EconomicsSettings) -> bool {
        section.meters_compute()
    }

    fn setup(store: &mut wasmtime::Store<AgentState>) {
        if let Some(pricing) = <Economics as super::Member>::shared(&store.data().runtime.services).pricing() {
            // Fuel in chunks, with the rest in the store's reserve: see `billing::chunk`.
            store
                .fuel_async_yield_interval(Some(billing::chunk(&pricing)))
                .expect("the engine runs async and meters fuel");
        }
    }

    async fn admit(economics: &Economics, spec: &crate::manifest::AgentSpec) -> Result<(), String> {
        let granted = crate::capabilities::Grants::allow::<Economics>(spec.grants);
        if spec.wallet > 0 || granted || economics.pricing().is_some() {
            economics
                .ledger
                .open_wallet(&spec.name, spec.wallet)
                .await
                .map_err(|e| format!("opening its wallet: {e}"))?;
        }
        Ok(())
    }

    #[inline]
    fn before(mut store: wasmtime::StoreContextMut<'_, AgentState>) -> Result<(), Box<Gate>> {
        if billing::meter(&store).is_none() || billing::arm(store.as_context_mut(), false) {
            return Ok(());
        }
        Err(Box::new(billing::unpaid_gate(store)))
    }

    #[inline]
    fn tick(store: wasmtime::StoreContextMut<'_, AgentState>) {
        if billing::meter(&store).is_some() {
            // A long callback buys its next slice as it goes; one its wallet cannot pay for
            // runs out of fuel and traps.
            billing::arm(store, true);
        }
    }

    #[inline]
    fn after(store: wasmtime::StoreContextMut<'_, AgentState>) {
        billing::count_fuel(store);
    }

    #[inline]
    fn idle(store: wasmtime::StoreContextMut<'_, AgentState>) {
        billing::settle(store);
    }

    fn exit(mut store: wasmtime::StoreContextMut<'_, AgentState>) {
        billing::settle(store.as_context_mut());
        billing::count_fuel(store);
    }
}

crate::capabilities::denied_is_denied!(WitError => "ledger", WitAuctionError => "auctions", WitMarketError => "market");

fn error(error: LedgerError) -> WitError {
    match LedgerFailure::from(error) {
        LedgerFailure::NotFound => WitError::NotFound,
        LedgerFailure::InsufficientFunds(funds) => WitError::InsufficientFunds(funds),
        LedgerFailure::Invalid(why) => WitError::Invalid(why),
        LedgerFailure::Unavailable(why) => WitError::Unavailable(why),
    }
}

impl View<'_, Economics> {
    fn own_hold(&self, number: u64) -> HoldId {
        HoldId { owner: self.name.clone(), number }
    }
}

fn memo(memo: &str) -> Result<&str, WitError> {
    if memo.len() > 256 { Err(WitError::Invalid("a memo is at most 256 bytes".into())) } else { Ok(memo) }
}

impl wit::Host for View<'_, Economics> {
    fn wallet(&mut self) -> Result<WitFunds, WitError> {
        self.require::<WitError>()?;
        let funds = self.shared.ledger.funds(self.name).ok_or(WitError::NotFound)?;
        Ok(WitFunds { balance: funds.balance, held: funds.held })
    }

    async fn transfer(&mut self, to: String, amount: u64, note: String) -> Result<u64, WitError> {
        self.require::<WitError>()?;
        let ledger = &self.shared.ledger;
        ledger.transfer(self.name, &to, amount, memo(&note)?).await.map_err(error)
    }

    async fn hold(&mut self, amount: u64, note: String) -> Result<u64, WitError> {
        self.require::<WitError>()?;
        let hold = self.shared.ledger.hold(self.name, amount, memo(&note)?).await.map_err(error)?;
        Ok(hold.number)
    }

    async fn release(&mut self, hold: u64) -> Result<(), WitError> {
        self.require::<WitError>()?;
        self.shared.ledger.release(&self.own_hold(hold), "released by its owner").await.map_err(error)?;
        Ok(())
    }

    async fn capture(&mut self, hold: u64, to: String, amount: u64) -> Result<(), WitError> {
        self.require::<WitError>()?;
        let ledger = &self.shared.ledger;
        ledger.capture(&self.own_hold(hold), &to, amount, "captured by its owner").await.map_err(error)?;
        Ok(())
    }

    fn usage(&mut self) -> ComputeUsage {
        let charged = self.state.meter.as_ref().map_or(0, |meter| meter.charged);
        ComputeUsage { fuel: self.state.fuel_used, charged }
    }
}

impl View<'_, Economics> {
    fn party(&self) -> Party {
        Party { id: self.id, name: self.name.clone() }
    }
}

/// How a ledger failure shows through the ledger, auction and market interfaces (the same
/// cases in each of their error variants).
enum LedgerFailure {
    NotFound,
    InsufficientFunds(WitFunds),
    Invalid(String),
    Unavailable(String),
}

impl From<LedgerError> for LedgerFailure {
    fn from(error: LedgerError) -> LedgerFailure {
        match error {
            LedgerError::NoWallet(_) | LedgerError::NoHold(_) => LedgerFailure::NotFound,
            LedgerError::InsufficientFunds { available, .. } => {
                LedgerFailure::InsufficientFunds(WitFunds { balance: available, held: 0 })
            }
            LedgerError::Invalid(why) => LedgerFailure::Invalid(why),
            LedgerError::Journal(why) => LedgerFailure::Unavailable(why.to_string()),
        }
    }
}

fn auction_error(error: AuctionError) -> WitAuctionError {
    match error {
        AuctionError::NotFound => WitAuctionError::NotFound,
        AuctionError::Closed => WitAuctionError::Closed,
        AuctionError::TooLow(minimum) => WitAuctionError::TooLow(minimum),
        AuctionError::OwnAuction => WitAuctionError::OwnAuction,
        AuctionError::NotSeller => WitAuctionError::NotSeller,
        AuctionError::HasBids => WitAuctionError::HasBids,
        AuctionError::AlreadyBid => WitAuctionError::AlreadyBid,
        AuctionError::Invalid(why) => WitAuctionError::Invalid(why),
        AuctionError::Ledger(error) => match LedgerFailure::from(error) {
            LedgerFailure::NotFound => WitAuctionError::NotFound,
            LedgerFailure::InsufficientFunds(funds) => WitAuctionError::InsufficientFunds(funds),
            LedgerFailure::Invalid(why) => WitAuctionError::Invalid(why),
            LedgerFailure::Unavailable(why) => WitAuctionError::Unavailable(why),
        },
    }
}

fn auction_state(state: State) -> WitState {
    match state {
        State::Open => WitState::Open,
        State::Sold { winner, price } => WitState::Sold(Sale { winner: winner.to_string(), price }),
        State::Unsold => WitState::Unsold,
        State::Cancelled => WitState::Cancelled,
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(ms.into())
}

fn format_terms(format: &Format) -> WitFormat {
    match *format {
        Format::English { min_increment, soft_close } => {
            WitFormat::English(EnglishRules { min_increment, soft_close_ms: soft_close.as_millis() as u32 })
        }
        Format::Dutch { start, step, every } => {
            WitFormat::Dutch(DutchClock { start_price: start, step, step_ms: every.as_millis() as u32 })
        }
        Format::SealedFirstPrice => WitFormat::SealedFirstPrice,
        Format::Vickrey => WitFormat::Vickrey,
    }
}

impl wit_auctions::Host for View<'_, Economics> {
    fn open(&mut self, terms: WitTerms) -> Result<u64, WitAuctionError> {
        self.require()?;
        let format = match terms.format {
            WitFormat::English(rules) => {
                Format::English { min_increment: rules.min_increment, soft_close: millis(rules.soft_close_ms) }
            }
            WitFormat::Dutch(clock) => {
                Format::Dutch { start: clock.start_price, step: clock.step, every: millis(clock.step_ms) }
            }
            WitFormat::SealedFirstPrice => Format::SealedFirstPrice,
            WitFormat::Vickrey => Format::Vickrey,
        };
        let terms = Terms { item: terms.item, format, reserve: terms.reserve, duration: millis(terms.duration_ms) };
        self.shared.auctions.open(self.party(), terms).map_err(auction_error)
    }

    async fn bid(&mut self, auction: u64, amount: u64) -> Result<u64, WitAuctionError> {
        self.require()?;
        self.shared.auctions.bid(auction, &self.party(), amount).await.map_err(auction_error)
    }

    async fn cancel(&mut self, auction: u64) -> Result<(), WitAuctionError> {
        self.require()?;
        self.shared.auctions.cancel(auction, &self.party()).await.map_err(auction_error)
    }

    fn info(&mut self, auction: u64) -> Result<AuctionInfo, WitAuctionError> {
        self.require()?;
        let info = self.shared.auctions.info(auction).map_err(auction_error)?;
        Ok(AuctionInfo {
            item: info.item,
            seller: info.seller.to_string(),
            format: format_terms(&info.format),
            reserve: info.reserve,
            state: auction_state(info.state),
            standing: info.standing,
            asking: info.asking,
            bids: info.bids,
            closes_in_ms: info.closes_in.as_millis() as u64,
        })
    }

    async fn wait(&mut self, auction: u64, timeout_ms: u32) -> Result<WitState, WitAuctionError> {
        self.require()?;
        let state = self.shared.auctions.wait(auction, millis(timeout_ms)).await;
        state.map(auction_state).map_err(auction_error)
    }
}

fn market_error(error: MarketError) -> WitMarketError {
    match error {
        MarketError::NotFound => WitMarketError::NotFound,
        MarketError::NotInvited => WitMarketError::NotInvited,
        MarketError::Closed => WitMarketError::Closed,
        MarketError::OverBudget(budget) => WitMarketError::OverBudget(budget),
        MarketError::NotContractor => WitMarketError::NotContractor,
        MarketError::Invalid(why) => WitMarketError::Invalid(why),
        MarketError::Ledger(error) => match LedgerFailure::from(error) {
            LedgerFailure::NotFound => WitMarketError::NotFound,
            LedgerFailure::InsufficientFunds(funds) => WitMarketError::InsufficientFunds(funds),
            LedgerFailure::Invalid(why) => WitMarketError::Invalid(why),
            LedgerFailure::Unavailable(why) => WitMarketError::Unavailable(why),
        },
    }
}

fn task_state(state: TaskState) -> WitTaskState {
    match state {
        TaskState::Bidding => WitTaskState::Bidding,
        TaskState::Awarded { contractor, price } => {
            WitTaskState::Awarded(Contract { contractor: contractor.to_string(), price })
        }
        TaskState::Completed { contractor, price, result } => {
            WitTaskState::Completed(Completion { contractor: contractor.to_string(), price, output: result })
        }
        TaskState::Failed { contractor, reason } => {
            WitTaskState::Failed(Failure { contractor: contractor.to_string(), reason })
        }
        TaskState::TimedOut { contractor } => WitTaskState::TimedOut(contractor.to_string()),
        TaskState::Unawarded => WitTaskState::Unawarded,
    }
}

impl View<'_, Economics> {
    /// A task's payload and output travel as messages do, under the same size limit.
    fn fits(&self, bytes: &[u8]) -> Result<(), WitMarketError> {
        match self.host.router.check_size(bytes.len()) {
            Err(crate::bindings::Error::TooLarge(limit)) => {
                Err(WitMarketError::Invalid(format!("{} bytes: the host's message limit is {limit}", bytes.len())))
            }
            _ => Ok(()),
        }
    }

    /// Every registered agent (but the announcer) with all of `capabilities`.
    fn invited(&self, capabilities: &[String]) -> Vec<AgentId> {
        let registry = &self.host.registry;
        let mut invited = capabilities.first().map(|first| registry.find_by_capability(first)).unwrap_or_default();
        for capability in &capabilities[1.min(capabilities.len())..] {
            let holders = registry.find_by_capability(capability);
            invited.retain(|agent| holders.contains(agent));
        }
        invited.retain(|agent| *agent != self.id);
        invited.sort_unstable();
        invited
    }
}

impl wit_market::Host for View<'_, Economics> {
    async fn announce(&mut self, task: WitTask) -> Result<u64, WitMarketError> {
        self.require::<WitMarketError>()?;
        self.fits(&task.payload)?;
        let invited = self.invited(&task.capabilities);
        let announcement = Announcement {
            kind: task.kind,
            capabilities: task.capabilities,
            budget: task.budget,
            bidding: millis(task.bidding_ms),
            deadline: millis(task.deadline_ms),
            rule: match task.rule {
                AwardRule::LowestPrice => Rule::LowestPrice,
                AwardRule::BestScore => Rule::BestScore,
            },
            payload: task.payload,
        };
        self.shared.market.announce(self.party(), announcement, invited).await.map_err(market_error)
    }

    fn propose(&mut self, task: u64, price: u64, eta_ms: u32) -> Result<(), WitMarketError> {
        self.require::<WitMarketError>()?;
        let market = &self.shared.market;
        market.propose(task, &self.party(), price, millis(eta_ms)).map_err(market_error)
    }

    fn info(&mut self, task: u64) -> Result<TaskInfo, WitMarketError> {
        self.require::<WitMarketError>()?;
        let info = self.shared.market.info(task).map_err(market_error)?;
        let announced = info.announcement;
        Ok(TaskInfo {
            announcer: info.announcer.to_string(),
            task: WitTask {
                kind: announced.kind,
                capabilities: announced.capabilities,
                budget: announced.budget,
                bidding_ms: announced.bidding.as_millis() as u32,
                deadline_ms: announced.deadline.as_millis() as u32,
                rule: match announced.rule {
                    Rule::LowestPrice => AwardRule::LowestPrice,
                    Rule::BestScore => AwardRule::BestScore,
                },
                payload: announced.payload,
            },
            state: task_state(info.state),
            proposals: info.proposals,
            deadline_in_ms: info.deadline_in.as_millis() as u64,
        })
    }

    async fn complete(&mut self, task: u64, result: Vec<u8>) -> Result<u64, WitMarketError> {
        self.require::<WitMarketError>()?;
        self.fits(&result)?;
        self.shared.market.report(task, &self.party(), Ok(result)).await.map_err(market_error)
    }

    async fn fail(&mut self, task: u64, reason: String) -> Result<(), WitMarketError> {
        self.require::<WitMarketError>()?;
        if reason.len() > 1024 {
            return Err(WitMarketError::Invalid("a reason is at most 1024 bytes".into()));
        }
        let market = &self.shared.market;
        market.report(task, &self.party(), Err(reason)).await.map(drop).map_err(market_error)
    }

    async fn wait(&mut self, task: u64, timeout_ms: u32) -> Result<WitTaskState, WitMarketError> {
        self.require::<WitMarketError>()?;
        self.shared.market.wait(task, millis(timeout_ms)).await.map(task_state).map_err(market_error)
    }

    fn reputation(&mut self, agent: String) -> Standing {
        let standing = self.shared.reputation.standing(&agent);
        Standing { score: standing.score, completed: standing.completed, failed: standing.failed }
    }
}
