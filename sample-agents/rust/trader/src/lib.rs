//! A trader in the agent economy, in one of three roles (config `role`):
//!
//! - `client` announces `tasks` tasks to contractors with capability `capability` (budget
//!   `budget`, bidding `bidding_ms`, deadline `deadline_ms`, rule `rule` = `lowest-price` or
//!   `best-score`), one after another: each next one once the last has ended. It starts once
//!   `contractors` agents offer the capability, and stops after its last task.
//! - `seller` auctions `auctions` items in turn, cycling English, Dutch, sealed first-price and
//!   Vickrey (reserve `reserve`, `duration_ms` each), and announces each on topic `auctions`.
//!   It starts once `bidders` agents offer `capability`, and stops after its last auction.
//! - `contractor` proposes `price` plus `raise` per contract it has delivered (capped at the
//!   budget) and `eta_ms` for every task it is called for, does `work` rounds of computation when awarded, and reports completion, except
//!   that every `fail_every`-th contract it reports failed and every `crash_every`-th it panics
//!   in the middle of (its supervisor restarts it; the contract times out). It bids in the
//!   seller's auctions up to `bid_limit`: English in steps, Dutch by taking when the clock
//!   reaches its limit, sealed first-price at three quarters of it, Vickrey at its full value. It
//!   offers `capability` in the registry once it is ready, watches the agents named in `watch`
//!   (comma-separated) and stops when all have exited.
use std::collections::BTreeSet;
use std::time::Duration;

use agora_guest::auctions::{self, Format};
use agora_guest::market::{self, AwardRule};
use agora_guest::supervision;
use agora_guest::{Agent, Config, HandleError, Message, ledger, log, messaging, registry};
use agora_guest::{AuctionNotice, AuctionSold, MarketNotice, Notice, Outbid, TaskCompleted, TaskEnded};

const AUCTIONS_TOPIC: &str = "auctions";

enum Role {
    Client { next: u32, tasks: u32, completed: u32, failed: u32, paid: u64 },
    Seller { next: u32, auctions: u32, sold: u32, earned: u64 },
    Contractor { awarded: u32, delivered: u64, watching: BTreeSet<u64> },
}

struct Trader {
    role: Role,
    config: Config,
    name: String,
}

fn wit_error(error: impl std::fmt::Debug) -> String {
    format!("{error:?}")
}

impl Trader {
    fn number(&self, key: &str, default: u64) -> u64 {
        self.config.parse(key).ok().flatten().unwrap_or(default)
    }

    fn text(&self, key: &str, default: &'static str) -> String {
        self.config.get(key).unwrap_or(default).to_string()
    }

    /// Wait (by re-sending ourselves `go`) until `wanted` agents offer the capability.
    fn ready(&self, wanted_key: &str) -> bool {
        let wanted = self.number(wanted_key, 1) as usize;
        let found = registry::find_by_capability(&self.text("capability", "work")).map_or(0, |found| found.len());
        if found >= wanted {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
        let _ = messaging::send(messaging::self_id(), b"go");
        false
    }

    fn announce_next(&mut self) -> Result<(), String> {
        let Role::Client { next, tasks, .. } = &mut self.role else { return Ok(()) };
        if *next >= *tasks {
            return Ok(());
        }
        *next += 1;
        let number = *next;
        let rule = match self.config.get("rule") {
            Some("best-score") => AwardRule::BestScore,
            _ => AwardRule::LowestPrice,
        };
        let task = market::Task {
            kind: self.text("kind", "render"),
            capabilities: vec![self.text("capability", "work")],
            budget: self.number("budget", 100),
            bidding_ms: self.number("bidding_ms", 50) as u32,
            deadline_ms: self.number("deadline_ms", 2000) as u32,
            rule,
            payload: format!("{} job {number}", self.name).into_bytes(),
        };
        let id = market::announce(&task).map_err(wit_error)?;
        log::info(&format!("{} announced task {id} ({} {number}, budget {})", self.name, task.kind, task.budget));
        Ok(())
    }

    fn open_next_auction(&mut self) -> Result<(), String> {
        let Role::Seller { next, auctions: count, .. } = &mut self.role else { return Ok(()) };
        if *next >= *count {
            agora_guest::stop();
            return Ok(());
        }
        let number = *next;
        *next += 1;
        let limit = self.number("reserve", 20);
        let format = match number % 4 {
            0 => Format::English(auctions::EnglishRules { min_increment: 5, soft_close_ms: 20 }),
            1 => Format::Dutch(auctions::DutchClock { start_price: limit * 10, step: 5, step_ms: 5 }),
            2 => Format::SealedFirstPrice,
            _ => Format::Vickrey,
        };
        let terms = auctions::Terms {
            item: format!("gpu-hour-{number}"),
            format,
            reserve: limit,
            duration_ms: self.number("duration_ms", 300) as u32,
        };
        let id = auctions::open(&terms).map_err(wit_error)?;
        let kind = ["english", "dutch", "sealed", "vickrey"][number as usize % 4];
        log::info(&format!("{} auctions {} ({kind}, reserve {limit}) as auction {id}", self.name, terms.item));
        messaging::publish(AUCTIONS_TOPIC, format!("auction={id} format={kind}").as_bytes()).map_err(wit_error)?;
        Ok(())
    }

    fn client(&mut self, input: Input) -> Result<(), String> {
        if let Input::Message(message) = input {
            let go = message.payload == b"go" && message.topic.is_none();
            return if go && self.ready("contractors") { self.announce_next() } else { Ok(()) };
        }
        let Input::Notice(Notice::Market(notice)) = input else { return Ok(()) };
        let Role::Client { next, tasks, completed, failed, paid } = &mut self.role else { return Ok(()) };
        match notice {
            MarketNotice::Completed(TaskCompleted { task, contractor, price }) => {
                *completed += 1;
                *paid += price;
                log::info(&format!("{}: task {task} done by {contractor} for {price}", self.name));
            }
            MarketNotice::Failed(TaskEnded { task, contractor })
            | MarketNotice::TimedOut(TaskEnded { task, contractor }) => {
                *failed += 1;
                log::info(&format!("{}: task {task} not delivered by {contractor}; budget refunded", self.name));
            }
            MarketNotice::Unawarded(task) => {
                *failed += 1;
                log::info(&format!("{}: task {task} got no proposals; budget refunded", self.name));
            }
            _ => return Ok(()),
        }
        if *next >= *tasks {
            log::info(&format!(
                "{}: all {tasks} tasks ended: {completed} delivered, {failed} not, {paid} paid",
                self.name
            ));
            agora_guest::stop();
            return Ok(());
        }
        self.announce_next()
    }

    fn seller(&mut self, input: Input) -> Result<(), String> {
        if let Input::Message(message) = input {
            let go = message.payload == b"go" && message.topic.is_none();
            return if go && self.ready("bidders") { self.open_next_auction() } else { Ok(()) };
        }
        let Role::Seller { sold, earned, .. } = &mut self.role else { return Ok(()) };
        match input {
            Input::Notice(Notice::Auction(AuctionNotice::Sold(AuctionSold { auction, winner, price }))) => {
                *sold += 1;
                *earned += price;
                log::info(&format!("{}: auction {auction} sold to {winner} for {price}", self.name));
            }
            Input::Notice(Notice::Auction(AuctionNotice::Unsold(auction))) => {
                log::info(&format!("{}: auction {auction} unsold", self.name))
            }
            _ => return Ok(()),
        }
        self.open_next_auction()
    }

    fn contractor(&mut self, input: Input) -> Result<(), String> {
        if let Input::Notice(Notice::Down(down)) = input {
            let Role::Contractor { watching, .. } = &mut self.role else { return Ok(()) };
            watching.remove(&down.agent);
            if watching.is_empty() {
                let funds = ledger::wallet().map_err(wit_error)?;
                let standing = market::reputation(&self.name);
                log::info(&format!(
                    "{}: the market has closed; balance {}, reputation {:.2} ({} delivered, {} failed)",
                    self.name, funds.balance, standing.score, standing.completed, standing.failed
                ));
                agora_guest::stop();
            }
            return Ok(());
        }
        if let Input::Message(message) = input {
            if message.topic.as_deref() == Some(AUCTIONS_TOPIC) {
                return self.auction_announced(message);
            }
            return Ok(());
        }
        if let Input::Notice(Notice::Auction(AuctionNotice::Outbid(Outbid { auction, .. }))) = input {
            return self.raise(*auction);
        }
        match input {
            Input::Notice(Notice::Market(MarketNotice::CallForProposals(task))) => {
                let task = *task;
                let info = market::info(task).map_err(wit_error)?;
                let Role::Contractor { delivered, .. } = self.role else { return Ok(()) };
                let price = (self.number("price", 50) + self.number("raise", 0) * delivered).min(info.task.budget);
                // A proposal after bidding closed is refused: nothing to do then.
                if market::propose(task, price, self.number("eta_ms", 100) as u32).is_ok() {
                    log::debug(&format!("{} proposes {price} for task {task}", self.name));
                }
                Ok(())
            }
            Input::Notice(Notice::Market(MarketNotice::Awarded(task))) => self.work(*task),
            _ => Ok(()),
        }
    }

    fn work(&mut self, task: u64) -> Result<(), String> {
        let Role::Contractor { awarded, .. } = &mut self.role else { return Ok(()) };
        *awarded += 1;
        let n = *awarded as u64;
        let info = market::info(task).map_err(wit_error)?;
        let mut digest = 0xcbf29ce484222325u64;
        for round in 0..self.number("work", 100_000) {
            let byte = info.task.payload[round as usize % info.task.payload.len().max(1)];
            digest = std::hint::black_box((digest ^ u64::from(byte)).wrapping_mul(0x100000001b3));
            if round == 1000 && n.is_multiple_of(self.number("crash_every", u64::MAX)) {
                panic!("{} crashed in the middle of task {task}", self.name);
            }
        }
        if n.is_multiple_of(self.number("fail_every", u64::MAX)) {
            log::info(&format!("{} gives up task {task}", self.name));
            return market::fail(task, "the work did not converge").map_err(wit_error);
        }
        let paid = market::complete(task, format!("{digest:016x}").as_bytes()).map_err(wit_error)?;
        if let Role::Contractor { delivered, .. } = &mut self.role {
            *delivered += 1;
        }
        log::info(&format!("{} delivered task {task} and was paid {paid}", self.name));
        Ok(())
    }

    fn auction_announced(&mut self, message: &Message) -> Result<(), String> {
        let text = String::from_utf8_lossy(&message.payload);
        let Some(id) = text.split(' ').find_map(|pair| pair.strip_prefix("auction=")?.parse::<u64>().ok()) else {
            return Ok(());
        };
        let limit = self.number("bid_limit", 0);
        let Ok(info) = auctions::info(id) else { return Ok(()) };
        let bid = match info.format {
            Format::English(_) => return self.raise(id),
            Format::Dutch(clock) => {
                // Take the item when the clock comes down to our limit, if nobody has first.
                if info.asking > limit {
                    let steps = (info.asking - limit).div_ceil(clock.step.max(1));
                    std::thread::sleep(Duration::from_millis(steps * u64::from(clock.step_ms)));
                }
                limit
            }
            // First price: shade below the value. Vickrey: bidding the value is best.
            Format::SealedFirstPrice => limit * 3 / 4,
            Format::Vickrey => limit,
        };
        match auctions::bid(id, bid) {
            Ok(held) => log::debug(&format!("{} bids {held} in auction {id}", self.name)),
            Err(error) => log::debug(&format!("{}: bid in auction {id} refused: {error:?}", self.name)),
        }
        Ok(())
    }

    /// English: bid the asking price while it is within our limit (again when overtaken
    /// meanwhile).
    fn raise(&mut self, auction: u64) -> Result<(), String> {
        let Ok(info) = auctions::info(auction) else { return Ok(()) };
        let mut asking = info.asking;
        while matches!(info.state, auctions::State::Open) && asking <= self.number("bid_limit", 0) {
            match auctions::bid(auction, asking) {
                Err(auctions::AuctionError::TooLow(now)) => asking = now,
                Ok(bid) => {
                    log::debug(&format!("{} bids {bid} in auction {auction}", self.name));
                    break;
                }
                Err(error) => {
                    log::debug(&format!("{}: bid in auction {auction} refused: {error:?}", self.name));
                    break;
                }
            }
        }
        Ok(())
    }
}

impl Agent for Trader {
    fn init(config: Config) -> Result<Self, String> {
        let name = registry::name_of(messaging::self_id()).map_err(wit_error)?;
        let role = match config.get("role") {
            Some("client") => {
                Role::Client { next: 0, tasks: config.parse("tasks")?.unwrap_or(5), completed: 0, failed: 0, paid: 0 }
            }
            Some("seller") => {
                Role::Seller { next: 0, auctions: config.parse("auctions")?.unwrap_or(4), sold: 0, earned: 0 }
            }
            Some("contractor") => {
                let mut watching = BTreeSet::new();
                for watched in config.get("watch").unwrap_or("").split(',').filter(|name| !name.is_empty()) {
                    // Gone already (a restarted contractor late in the run): nothing to wait for.
                    if let Ok(id) = registry::lookup(watched) {
                        supervision::monitor(id).map_err(wit_error)?;
                        watching.insert(id);
                    }
                }
                messaging::subscribe(AUCTIONS_TOPIC).map_err(wit_error)?;
                // Offered last, when this contractor hears auctions: clients and sellers wait for it.
                registry::add_capability(config.get("capability").unwrap_or("work")).map_err(wit_error)?;
                if watching.is_empty() {
                    agora_guest::stop();
                }
                // Delivered before a restart: the price goes on from the wallet's reputation.
                let delivered = market::reputation(&name).completed;
                Role::Contractor { awarded: 0, delivered, watching }
            }
            other => return Err(format!("role must be client, seller or contractor, not {other:?}")),
        };
        if !matches!(role, Role::Contractor { .. }) {
            messaging::send(messaging::self_id(), b"go").map_err(wit_error)?;
        }
        Ok(Trader { role, config, name })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        self.take(Input::Message(&message)).map_err(HandleError::reject)?;
        Ok(None)
    }

    fn notify(&mut self, notice: Notice) -> Result<(), HandleError> {
        self.take(Input::Notice(&notice)).map_err(HandleError::reject)
    }
}

/// What reached the trader: an agent's message or a host notice.
#[derive(Clone, Copy)]
enum Input<'a> {
    Message(&'a Message),
    Notice(&'a Notice),
}

impl Trader {
    fn take(&mut self, input: Input) -> Result<(), String> {
        match self.role {
            Role::Client { .. } => self.client(input),
            Role::Seller { .. } => self.seller(input),
            Role::Contractor { .. } => self.contractor(input),
        }
    }
}

agora_guest::export_agent!(Trader);
