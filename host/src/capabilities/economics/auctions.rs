//! Auctions: an agent sells an item to other agents for money from their wallets.
//!
//! Four formats: English (open ascending bids, a minimum increment, a deadline that a late bid
//! can push back: soft close), Dutch (a price clock falling to the reserve; the first taker
//! wins), sealed-bid first-price, and Vickrey (sealed; the winner pays the second-highest bid,
//! or the reserve when higher). Every bid is backed by a hold (escrow) in the bidder's wallet,
//! taken before the bid counts, so a winner can always pay; at settlement the winner's hold pays
//! the seller and the others are released. Ties go to the earliest bid.
//!
//! Each auction is its own entry with its own mutex in a lock-free table, so bids on different
//! auctions share nothing but the ledger's journal queue. A bid's hold is taken outside the
//! mutex (it waits for the journal), then the bid is checked again under it: a bid overtaken
//! meanwhile, or one arriving after the close, gives its hold straight back.
//!
//! Auctions live in memory. At a host restart the open ones are gone, and the ledger releases
//! their holds when it replays.

use crate::bindings::types::{AuctionNotice, AuctionSold, Outbid};
use crate::messaging::Notice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::ledger::{HoldId, Ledger, LedgerError};
use crate::messaging::{AgentId, Router};

/// Sellers and bidders are told of outbids and of the close on this topic.
pub const TOPIC: &str = "agora:auction";
/// How long a closed auction stays readable (`info`, `wait`).
const RETAIN: Duration = Duration::from_secs(600);
/// The longest an auction may run.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    English {
        min_increment: u64,
        soft_close: Duration,
    },
    /// The price starts at `start` and falls by `step` every `every`, down to the reserve.
    Dutch {
        start: u64,
        step: u64,
        every: Duration,
    },
    SealedFirstPrice,
    Vickrey,
}

#[derive(Debug, Clone)]
pub struct Terms {
    pub item: String,
    pub format: Format,
    /// The lowest price the seller accepts: public, and the floor of a Dutch clock.
    pub reserve: u64,
    pub duration: Duration,
}

impl Terms {
    fn validate(&self) -> Result<(), AuctionError> {
        let invalid = |why: &str| Err(AuctionError::Invalid(why.into()));
        if self.item.is_empty() || self.item.len() > 256 {
            return invalid("an item is named in 1-256 bytes");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return invalid("an auction runs 1 ms to 24 h");
        }
        match self.format {
            Format::English { min_increment: 0, .. } => invalid("the minimum increment is at least 1"),
            Format::English { soft_close, .. } if soft_close > self.duration => {
                invalid("the soft close is at most the auction's duration")
            }
            Format::Dutch { start, .. } if start < self.reserve.max(1) => {
                invalid("a Dutch clock starts at or above the reserve, and at least at 1")
            }
            Format::Dutch { step, every, .. } if step == 0 || every.is_zero() => {
                invalid("a Dutch clock falls by at least 1 every 1 ms or more")
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Open,
    Sold { winner: Arc<str>, price: u64 },
    Unsold,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuctionError {
    #[error("no such auction")]
    NotFound,
    #[error("the auction is closed")]
    Closed,
    #[error("the bid is too low: at least {0}")]
    TooLow(u64),
    #[error("a seller cannot bid in its own auction")]
    OwnAuction,
    #[error("only the seller may do that")]
    NotSeller,
    #[error("the auction has bids")]
    HasBids,
    #[error("a sealed bid is final: this bidder has bid already")]
    AlreadyBid,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

/// An agent taking part: the id to notify, the wallet (name) that pays or is paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: AgentId,
    pub name: Arc<str>,
}

struct Bid {
    bidder: Party,
    amount: u64,
    /// Covering `amount` together: a raised English bid keeps its first hold and adds one.
    holds: Vec<(HoldId, u64)>,
}

impl Bid {
    fn covered(&self) -> u64 {
        self.holds.iter().map(|(_, amount)| amount).sum()
    }
}

struct Book {
    state: State,
    deadline: Instant,
    /// In arrival order. English keeps only the standing bid; the sealed formats keep all.
    bids: Vec<Bid>,
    /// Everyone who ever bid, to be told of the close.
    bidders: Vec<AgentId>,
}

pub struct Auction {
    id: u64,
    seller: Party,
    terms: Terms,
    opened: Instant,
    book: Mutex<Book>,
    /// Set once the auction is closed and its money has moved.
    outcome: watch::Sender<State>,
    /// Wakes the closer early (a cancel, a Dutch take).
    wake: Notify,
}

/// What a reader sees of an auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub item: String,
    pub seller: Arc<str>,
    pub format: Format,
    pub reserve: u64,
    pub state: State,
    /// The standing bid of an English auction (sealed bids stay hidden).
    pub standing: Option<u64>,
    /// The lowest acceptable bid now: the Dutch clock, or the next English minimum, or the reserve.
    pub asking: u64,
    pub bids: u32,
    pub closes_in: Duration,
}

/// What a bid did.
enum Entered {
    /// English: the standing bid now; the one it displaced is to be released.
    Standing(Option<Bid>),
    Sealed,
    /// Dutch: this bid took the item at `price`; the auction is to be settled.
    Taken(u64),
}

impl Auction {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Nothing panics while holding a book; a poisoned one is still consistent.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dutch_price(&self, now: Instant) -> u64 {
        let Format::Dutch { start, step, every } = self.terms.format else { return self.terms.reserve };
        let steps = (now.saturating_duration_since(self.opened).as_nanos() / every.as_nanos()) as u64;
        start.saturating_sub(step.saturating_mul(steps)).max(self.terms.reserve)
    }

    /// The lowest bid that would count now.
    fn asking(&self, book: &Book, now: Instant) -> u64 {
        match self.terms.format {
            Format::English { min_increment, .. } => match book.bids.last() {
                Some(standing) => standing.amount.saturating_add(min_increment),
                None => self.terms.reserve.max(1),
            },
            Format::Dutch { .. } => self.dutch_price(now),
            Format::SealedFirstPrice | Format::Vickrey => self.terms.reserve.max(1),
        }
    }

    /// Whether `amount` from `bidder` would count now: the bid it makes, and how much more to
    /// hold for it (a bidder raising its own standing bid adds only the difference).
    fn check(&self, book: &Book, bidder: &Party, amount: u64, now: Instant) -> Result<(u64, u64), AuctionError> {
        if book.state != State::Open || now >= book.deadline {
            return Err(AuctionError::Closed);
        }
        let asking = self.asking(book, now);
        if amount < asking {
            return Err(AuctionError::TooLow(asking));
        }
        match self.terms.format {
            Format::SealedFirstPrice | Format::Vickrey if book.bids.iter().any(|bid| bid.bidder == *bidder) => {
                Err(AuctionError::AlreadyBid)
            }
            // A taker pays the clock, whatever it offered above it.
            Format::Dutch { .. } => Ok((asking, asking)),
            Format::English { .. } => match book.bids.last() {
                Some(standing) if standing.bidder == *bidder => Ok((amount, amount - standing.covered())),
                _ => Ok((amount, amount)),
            },
            _ => Ok((amount, amount)),
        }
    }

    /// Enter a bid whose hold is taken: checked again, as the auction may have moved on.
    fn enter(&self, mut bid: Bid) -> Result<Entered, (AuctionError, Bid)> {
        let now = Instant::now();
        let mut book = self.book();
        match self.check(&book, &bid.bidder, bid.amount, now) {
            Err(error) => return Err((error, bid)),
            // Raised on a standing bid that was overtaken meanwhile: the top-up alone is short.
            Ok((_, more)) if more > bid.covered() => {
                return Err((AuctionError::Invalid("outbid while raising: bid again".into()), bid));
            }
            Ok(_) => {}
        }
        if !book.bidders.contains(&bid.bidder.id) {
            book.bidders.push(bid.bidder.id);
        }
        match self.terms.format {
            Format::English { soft_close, .. } => {
                if book.deadline.saturating_duration_since(now) < soft_close {
                    book.deadline = now + soft_close;
                }
                let mut outbid = book.bids.pop();
                if let Some(own) = outbid.take_if(|standing| standing.bidder == bid.bidder) {
                    bid.holds.extend(own.holds);
                }
                book.bids.push(bid);
                Ok(Entered::Standing(outbid))
            }
            Format::Dutch { .. } => {
                let price = self.dutch_price(now);
                book.state = State::Sold { winner: bid.bidder.name.clone(), price };
                book.bids.push(bid);
                Ok(Entered::Taken(price))
            }
            Format::SealedFirstPrice | Format::Vickrey => {
                book.bids.push(bid);
                Ok(Entered::Sealed)
            }
        }
    }

    /// The result of the bids in `book` at the deadline, and the winning bid's index.
    fn decide(&self, book: &Book) -> (State, Option<usize>) {
        // The first of the highest: earliest wins a tie.
        let mut best: Option<usize> = None;
        for (at, bid) in book.bids.iter().enumerate() {
            if best.is_none_or(|b| bid.amount > book.bids[b].amount) {
                best = Some(at);
            }
        }
        let Some(winner) = best else { return (State::Unsold, None) };
        let price = match self.terms.format {
            Format::Dutch { .. } => return (State::Unsold, None),
            Format::English { .. } | Format::SealedFirstPrice => book.bids[winner].amount,
            Format::Vickrey => {
                let second = book.bids.iter().enumerate().filter(|(at, _)| *at != winner).map(|(_, bid)| bid.amount);
                second.max().unwrap_or(0).max(self.terms.reserve)
            }
        };
        (State::Sold { winner: book.bids[winner].bidder.name.clone(), price }, Some(winner))
    }
}

/// How auctions have ended so far.
#[derive(Debug, Default)]
pub struct Tally {
    pub sold: AtomicU64,
    pub unsold: AtomicU64,
    pub cancelled: AtomicU64,
}

pub struct Auctions {
    table: papaya::HashMap<u64, Arc<Auction>>,
    next: AtomicU64,
    pub tally: Tally,
    ledger: Arc<Ledger>,
    router: Arc<Router>,
}

impl Auctions {
    pub fn new(ledger: Arc<Ledger>, router: Arc<Router>) -> Arc<Auctions> {
        let table = papaya::HashMap::builder().resize_mode(papaya::ResizeMode::Blocking).build();
        Arc::new(Auctions { table, next: AtomicU64::new(1), tally: Tally::default(), ledger, router })
    }

    fn get(&self, id: u64) -> Result<Arc<Auction>, AuctionError> {
        self.table.pin().get(&id).cloned().ok_or(AuctionError::NotFound)
    }

    /// Open an auction; its id. It closes by itself at its deadline.
    pub fn open(self: &Arc<Self>, seller: Party, terms: Terms) -> Result<u64, AuctionError> {
        terms.validate()?;
        if self.ledger.funds(&seller.name).is_none() {
            return Err(LedgerError::NoWallet(seller.name.to_string()).into());
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let book =
            Book { state: State::Open, deadline: opened + terms.duration, bids: Vec::new(), bidders: Vec::new() };
        let auction = Arc::new(Auction {
            id,
            seller,
            terms,
            opened,
            book: Mutex::new(book),
            outcome: watch::Sender::new(State::Open),
            wake: Notify::new(),
        });
        self.table.pin().insert(id, auction.clone());
        let auctions = self.clone();
        tokio::spawn(async move {
            auctions.close_when_due(&auction).await;
            tokio::time::sleep(RETAIN).await;
            auctions.table.pin().remove(&auction.id);
        });
        Ok(id)
    }

    async fn close_when_due(&self, auction: &Arc<Auction>) {
        loop {
            let deadline = {
                let book = auction.book();
                if book.state != State::Open {
                    return;
                }
                book.deadline
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = auction.wake.notified() => {}
            }
            let closed = {
                let mut book = auction.book();
                if book.state != State::Open || Instant::now() < book.deadline {
                    None
                } else {
                    let (state, winner) = auction.decide(&book);
                    book.state = state.clone();
                    Some((state, winner, std::mem::take(&mut book.bids)))
                }
            };
            if let Some((state, winner, bids)) = closed {
                self.settle(auction, state, winner, bids).await;
                return;
            }
        }
    }

    /// Move the money of a decided auction, then tell everyone.
    async fn settle(&self, auction: &Auction, state: State, winner: Option<usize>, bids: Vec<Bid>) {
        let memo = format!("auction {} ({})", auction.id, auction.terms.item);
        for (at, bid) in bids.into_iter().enumerate() {
            let mut due = match (&state, winner == Some(at)) {
                (State::Sold { price, .. }, true) => *price,
                _ => 0,
            };
            for (hold, held) in bid.holds {
                let paid = due.min(held);
                due -= paid;
                if let Err(error) = self.ledger.capture(&hold, &auction.seller.name, paid, &memo).await {
                    // Only a failed journal gets here (the holds are the auction's own); the
                    // ledger then refuses every movement, and its next start releases the hold.
                    tracing::error!(event = "auction_settlement_failed", auction = auction.id, %error);
                }
            }
        }
        let counted = match &state {
            State::Sold { .. } => &self.tally.sold,
            State::Unsold => &self.tally.unsold,
            _ => &self.tally.cancelled,
        };
        counted.fetch_add(1, Ordering::Relaxed);
        let (told, notice) = match &state {
            State::Sold { winner, price } => (
                format!("sold to {winner} for {price}"),
                AuctionNotice::Sold(AuctionSold { auction: auction.id, winner: winner.to_string(), price: *price }),
            ),
            State::Unsold => ("unsold".to_string(), AuctionNotice::Unsold(auction.id)),
            State::Cancelled => ("cancelled".to_string(), AuctionNotice::Cancelled(auction.id)),
            State::Open => unreachable!("settled auctions are closed"),
        };
        tracing::debug!(event = "auction_closed", auction = auction.id, item = %auction.terms.item, outcome = %told);
        auction.outcome.send_replace(state);
        let bidders = std::mem::take(&mut auction.book().bidders);
        let topic: Arc<str> = TOPIC.into();
        self.router.notify(std::iter::once(auction.seller.id).chain(bidders), &topic, &Notice::Auction(notice));
    }

    /// Bid `amount`, held in escrow until the close; the bid. In a Dutch auction a bid at or above the clock takes
    /// the item at the clock's price, and that is what it returns.
    pub async fn bid(&self, id: u64, bidder: &Party, amount: u64) -> Result<u64, AuctionError> {
        let auction = self.get(id)?;
        if bidder.name == auction.seller.name {
            return Err(AuctionError::OwnAuction);
        }
        let (amount, more) = auction.check(&auction.book(), bidder, amount, Instant::now())?;
        let hold = self.ledger.hold(&bidder.name, more, &format!("bid in auction {id}")).await?;
        let memo = format!("outbid in auction {id}");
        match auction.enter(Bid { bidder: bidder.clone(), amount, holds: vec![(hold, more)] }) {
            Err((error, bid)) => {
                self.release(bid, &memo).await?;
                Err(error)
            }
            Ok(Entered::Standing(outbid)) => {
                if let Some(outbid) = outbid {
                    let outbidder = outbid.bidder.id;
                    self.release(outbid, &memo).await?;
                    let told = Notice::Auction(AuctionNotice::Outbid(Outbid { auction: id, by: amount }));
                    self.router.notify([outbidder], &TOPIC.into(), &told);
                }
                Ok(amount)
            }
            Ok(Entered::Sealed) => Ok(amount),
            Ok(Entered::Taken(price)) => {
                let (state, bids) = {
                    let mut book = auction.book();
                    (book.state.clone(), std::mem::take(&mut book.bids))
                };
                auction.wake.notify_one();
                self.settle(&auction, state, Some(0), bids).await;
                Ok(price)
            }
        }
    }

    async fn release(&self, bid: Bid, memo: &str) -> Result<(), LedgerError> {
        for (hold, _) in bid.holds {
            self.ledger.release(&hold, memo).await?;
        }
        Ok(())
    }

    /// Withdraw an auction nobody has bid in (bidders' money is committed once they bid).
    pub async fn cancel(&self, id: u64, seller: &Party) -> Result<(), AuctionError> {
        let auction = self.get(id)?;
        if auction.seller.name != seller.name {
            return Err(AuctionError::NotSeller);
        }
        {
            let mut book = auction.book();
            if book.state != State::Open || Instant::now() >= book.deadline {
                return Err(AuctionError::Closed);
            }
            if !book.bids.is_empty() {
                return Err(AuctionError::HasBids);
            }
            book.state = State::Cancelled;
        }
        auction.wake.notify_one();
        self.settle(&auction, State::Cancelled, None, Vec::new()).await;
        Ok(())
    }

    /// Every auction still in the table (open, or closed and not yet swept), by id.
    pub fn list(&self) -> Vec<(u64, Info)> {
        let ids: Vec<u64> = self.table.pin().keys().copied().collect();
        let mut listed: Vec<(u64, Info)> = ids.into_iter().filter_map(|id| Some((id, self.info(id).ok()?))).collect();
        listed.sort_by_key(|(id, _)| *id);
        listed
    }

    pub fn info(&self, id: u64) -> Result<Info, AuctionError> {
        let auction = self.get(id)?;
        let now = Instant::now();
        let book = auction.book();
        let standing = match auction.terms.format {
            Format::English { .. } => book.bids.last().map(|bid| bid.amount),
            _ => None,
        };
        Ok(Info {
            item: auction.terms.item.clone(),
            seller: auction.seller.name.clone(),
            format: auction.terms.format.clone(),
            reserve: auction.terms.reserve,
            state: book.state.clone(),
            standing,
            asking: auction.asking(&book, now),
            bids: book.bids.len() as u32,
            closes_in: book.deadline.saturating_duration_since(now),
        })
    }

    /// Wait until the auction is closed and its money has moved, at most `timeout`; its state.
    pub async fn wait(&self, id: u64, timeout: Duration) -> Result<State, AuctionError> {
        let mut outcome = self.get(id)?.outcome.subscribe();
        let closed = tokio::time::timeout(timeout, outcome.wait_for(|state| *state != State::Open)).await;
        Ok(match closed {
            Ok(Ok(state)) => state.clone(),
            _ => State::Open,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::economics::ledger::Funds;

    impl Auctions {
        /// Bring an auction's deadline to now, so tests close it without waiting on a clock.
        fn expire(&self, id: u64) {
            let auction = self.get(id).unwrap();
            auction.book().deadline = Instant::now();
            auction.wake.notify_one();
        }

        fn open_count(&self) -> usize {
            self.table.pin().values().filter(|auction| auction.book().state == State::Open).count()
        }
    }

    fn party(name: &str) -> Party {
        Party { id: name.bytes().fold(7, |id, byte| id * 31 + u64::from(byte)), name: name.into() }
    }

    async fn market(wallets: &[(&str, u64)]) -> (Arc<Ledger>, Arc<Auctions>) {
        let ledger = Arc::new(Ledger::open(None).unwrap());
        for (name, budget) in wallets {
            ledger.open_wallet(name, *budget).await.unwrap();
        }
        let auctions = Auctions::new(ledger.clone(), Arc::new(Router::new(1024)));
        (ledger, auctions)
    }

    fn terms(format: Format, reserve: u64) -> Terms {
        Terms { item: "lamp".into(), format, reserve, duration: Duration::from_secs(3600) }
    }

    const ENGLISH: Format = Format::English { min_increment: 5, soft_close: Duration::from_millis(1) };
    const DUTCH: Format = Format::Dutch { start: 100, step: 10, every: Duration::from_secs(3600) };

    struct Case {
        name: &'static str,
        format: Format,
        reserve: u64,
        /// Bidder, amount, and what the bid returns.
        bids: &'static [(&'static str, u64, Result<u64, AuctionError>)],
        state: Option<(&'static str, u64)>,
    }

    /// Winner and price for each format, with reserves, increments, ties and refusals. Every
    /// bidder starts with 1,000; afterwards the winner has paid the price, the seller has it,
    /// and nobody else has lost anything or has anything still held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn winners_and_prices_for_each_format() {
        use AuctionError::*;
        let cases = [
            Case {
                name: "english: highest wins at its bid",
                format: ENGLISH,
                reserve: 0,
                bids: &[("ann", 10, Ok(10)), ("bob", 15, Ok(15)), ("ann", 30, Ok(30))],
                state: Some(("ann", 30)),
            },
            Case {
                name: "english: below the increment",
                format: ENGLISH,
                reserve: 0,
                bids: &[("ann", 10, Ok(10)), ("bob", 14, Err(TooLow(15))), ("bob", 15, Ok(15))],
                state: Some(("bob", 15)),
            },
            Case {
                name: "english: below the reserve",
                format: ENGLISH,
                reserve: 50,
                bids: &[("ann", 49, Err(TooLow(50))), ("bob", 50, Ok(50))],
                state: Some(("bob", 50)),
            },
            Case {
                name: "english: more than the wallet",
                format: ENGLISH,
                reserve: 0,
                bids: &[("ann", 1001, Err(Ledger(LedgerError::InsufficientFunds { needed: 1001, available: 1000 })))],
                state: None,
            },
            Case { name: "english: no bids", format: ENGLISH, reserve: 10, bids: &[], state: None },
            Case {
                name: "english: the seller cannot bid",
                format: ENGLISH,
                reserve: 0,
                bids: &[("sam", 10, Err(OwnAuction))],
                state: None,
            },
            Case {
                name: "sealed: highest wins at its own bid",
                format: Format::SealedFirstPrice,
                reserve: 0,
                bids: &[("ann", 40, Ok(40)), ("bob", 70, Ok(70)), ("cy", 55, Ok(55))],
                state: Some(("bob", 70)),
            },
            Case {
                name: "sealed: a tie goes to the earliest",
                format: Format::SealedFirstPrice,
                reserve: 0,
                bids: &[("cy", 60, Ok(60)), ("ann", 60, Ok(60)), ("bob", 20, Ok(20))],
                state: Some(("cy", 60)),
            },
            Case {
                name: "sealed: one bid each",
                format: Format::SealedFirstPrice,
                reserve: 0,
                bids: &[("ann", 40, Ok(40)), ("ann", 90, Err(AlreadyBid))],
                state: Some(("ann", 40)),
            },
            Case {
                name: "sealed: below the reserve",
                format: Format::SealedFirstPrice,
                reserve: 100,
                bids: &[("ann", 99, Err(TooLow(100)))],
                state: None,
            },
            Case {
                name: "vickrey: the winner pays the second price",
                format: Format::Vickrey,
                reserve: 0,
                bids: &[("ann", 40, Ok(40)), ("bob", 70, Ok(70)), ("cy", 55, Ok(55))],
                state: Some(("bob", 55)),
            },
            Case {
                name: "vickrey: the reserve when above the second price",
                format: Format::Vickrey,
                reserve: 50,
                bids: &[("ann", 80, Ok(80)), ("bob", 50, Ok(50))],
                state: Some(("ann", 50)),
            },
            Case {
                name: "vickrey: a lone bidder pays the reserve",
                format: Format::Vickrey,
                reserve: 30,
                bids: &[("ann", 80, Ok(80))],
                state: Some(("ann", 30)),
            },
            Case {
                name: "vickrey: a tie pays the tied price, earliest wins",
                format: Format::Vickrey,
                reserve: 0,
                bids: &[("bob", 60, Ok(60)), ("ann", 60, Ok(60)), ("cy", 10, Ok(10))],
                state: Some(("bob", 60)),
            },
            Case {
                name: "dutch: the first taker pays the clock",
                format: DUTCH,
                reserve: 20,
                bids: &[("ann", 99, Err(TooLow(100))), ("bob", 250, Ok(100)), ("cy", 300, Err(Closed))],
                state: Some(("bob", 100)),
            },
            Case { name: "dutch: no taker", format: DUTCH, reserve: 20, bids: &[], state: None },
        ];
        for case in cases {
            let names = ["sam", "ann", "bob", "cy"];
            let (ledger, auctions) = market(&names.map(|name| (name, 1000))).await;
            let id = auctions.open(party("sam"), terms(case.format.clone(), case.reserve)).unwrap();
            for (bidder, amount, expected) in case.bids {
                let outcome = auctions.bid(id, &party(bidder), *amount).await;
                assert_eq!(outcome, *expected, "{}: {bidder} bids {amount}", case.name);
            }
            auctions.expire(id);
            let state = auctions.wait(id, Duration::from_secs(60)).await.unwrap();
            let expected = match case.state {
                Some((winner, price)) => State::Sold { winner: winner.into(), price },
                None => State::Unsold,
            };
            assert_eq!(state, expected, "{}", case.name);
            for name in names {
                let balance = match case.state {
                    Some((winner, price)) if winner == name => 1000 - price,
                    Some((_, price)) if name == "sam" => 1000 + price,
                    _ => 1000,
                };
                assert_eq!(ledger.funds(name), Some(Funds { balance, held: 0 }), "{}: {name}", case.name);
            }
        }
    }

    #[tokio::test]
    async fn bids_after_the_close_are_refused_and_hold_nothing() {
        let (ledger, auctions) = market(&[("sam", 0), ("ann", 100)]).await;
        let id = auctions.open(party("sam"), terms(ENGLISH, 0)).unwrap();
        auctions.expire(id);
        assert_eq!(auctions.bid(id, &party("ann"), 10).await, Err(AuctionError::Closed));
        assert_eq!(auctions.wait(id, Duration::from_secs(60)).await, Ok(State::Unsold));
        assert_eq!(ledger.funds("ann"), Some(Funds { balance: 100, held: 0 }));
        assert_eq!(auctions.bid(id + 1, &party("ann"), 10).await, Err(AuctionError::NotFound));
    }

    #[tokio::test]
    async fn an_english_bid_holds_until_outbid() {
        let (ledger, auctions) = market(&[("sam", 0), ("ann", 100), ("bob", 100)]).await;
        let id = auctions.open(party("sam"), terms(ENGLISH, 0)).unwrap();
        auctions.bid(id, &party("ann"), 40).await.unwrap();
        assert_eq!(ledger.funds("ann"), Some(Funds { balance: 60, held: 40 }));
        auctions.bid(id, &party("bob"), 45).await.unwrap();
        assert_eq!(ledger.funds("ann"), Some(Funds { balance: 100, held: 0 }));
        assert_eq!(ledger.funds("bob"), Some(Funds { balance: 55, held: 45 }));
        // Raising one's own standing bid swaps the hold.
        auctions.bid(id, &party("bob"), 60).await.unwrap();
        assert_eq!(ledger.funds("bob"), Some(Funds { balance: 40, held: 60 }));
        let info = auctions.info(id).unwrap();
        assert_eq!((info.standing, info.asking, info.bids), (Some(60), 65, 1));
    }

    #[tokio::test]
    async fn a_late_english_bid_pushes_the_deadline_back_by_the_soft_close() {
        let (_ledger, auctions) = market(&[("sam", 0), ("ann", 100)]).await;
        let deadline = |id| auctions.get(id).unwrap().book().deadline;
        let soft = Format::English { min_increment: 1, soft_close: Duration::from_secs(3600) };
        let id = auctions.open(party("sam"), terms(soft, 0)).unwrap();
        let before = deadline(id);
        auctions.bid(id, &party("ann"), 10).await.unwrap();
        assert!(deadline(id) > before, "a bid within the soft close extends the auction");
        // A soft close of 1 ms does not reach back an hour.
        let id = auctions.open(party("sam"), terms(ENGLISH, 0)).unwrap();
        let before = deadline(id);
        auctions.bid(id, &party("ann"), 10).await.unwrap();
        assert_eq!(deadline(id), before);
    }

    #[tokio::test]
    async fn cancellation_only_by_the_seller_and_before_any_bid() {
        let (ledger, auctions) = market(&[("sam", 0), ("ann", 100)]).await;
        let id = auctions.open(party("sam"), terms(Format::SealedFirstPrice, 0)).unwrap();
        assert_eq!(auctions.cancel(id, &party("ann")).await, Err(AuctionError::NotSeller));
        auctions.cancel(id, &party("sam")).await.unwrap();
        assert_eq!(auctions.wait(id, Duration::from_secs(60)).await, Ok(State::Cancelled));
        assert_eq!(auctions.bid(id, &party("ann"), 10).await, Err(AuctionError::Closed));
        assert_eq!(auctions.cancel(id, &party("sam")).await, Err(AuctionError::Closed));

        let id = auctions.open(party("sam"), terms(Format::SealedFirstPrice, 0)).unwrap();
        auctions.bid(id, &party("ann"), 10).await.unwrap();
        assert_eq!(auctions.cancel(id, &party("sam")).await, Err(AuctionError::HasBids));
        assert_eq!(ledger.funds("ann"), Some(Funds { balance: 90, held: 10 }));
    }

    #[test]
    fn the_dutch_clock_falls_by_steps_to_the_reserve() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _entered = runtime.enter();
        let ledger = Arc::new(Ledger::open(None).unwrap());
        runtime.block_on(ledger.open_wallet("sam", 0)).unwrap();
        let auctions = Auctions::new(ledger, Arc::new(Router::new(1024)));
        let every = Duration::from_secs(10);
        let clock = Format::Dutch { start: 100, step: 30, every };
        let id = auctions.open(party("sam"), terms(clock, 20)).unwrap();
        let auction = auctions.get(id).unwrap();
        let at = |steps: u32| auction.dutch_price(auction.opened + every * steps + Duration::from_millis(1));
        assert_eq!([at(0), at(1), at(2), at(3), at(50)], [100, 70, 40, 20, 20]);
        assert_eq!(auction.dutch_price(auction.opened + every - Duration::from_millis(1)), 100);
    }

    #[test]
    fn terms_are_checked() {
        let bad = [
            Terms { item: String::new(), ..terms(ENGLISH, 0) },
            Terms { duration: Duration::ZERO, ..terms(ENGLISH, 0) },
            terms(Format::English { min_increment: 0, soft_close: Duration::ZERO }, 0),
            terms(Format::English { min_increment: 1, soft_close: Duration::from_secs(7200) }, 0),
            terms(Format::Dutch { start: 10, step: 1, every: Duration::from_secs(1) }, 20),
            terms(Format::Dutch { start: 10, step: 0, every: Duration::from_secs(1) }, 0),
        ];
        for terms in bad {
            assert!(matches!(terms.validate(), Err(AuctionError::Invalid(_))), "{terms:?}");
        }
    }

    /// 32 takers at once on one Dutch clock: exactly one gets the item, at the clock's price,
    /// and every other taker keeps all its money. 50 rounds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_dutch_taker_wins_under_concurrency() {
        let takers: Vec<String> = (0..32).map(|i| format!("taker-{i}")).collect();
        let mut wallets: Vec<(&str, u64)> = takers.iter().map(|name| (name.as_str(), 10_000)).collect();
        wallets.push(("sam", 0));
        let (ledger, auctions) = market(&wallets).await;
        let mut earned = 0;
        for _ in 0..50 {
            let clock = Format::Dutch { start: 100, step: 1, every: Duration::from_millis(1) };
            let id = auctions.open(party("sam"), terms(clock, 10)).unwrap();
            let racing: Vec<_> = takers
                .iter()
                .map(|name| {
                    let (auctions, taker) = (auctions.clone(), party(name));
                    tokio::spawn(async move { (taker.name.clone(), auctions.bid(id, &taker, 100).await) })
                })
                .collect();
            let mut won = Vec::new();
            for racer in racing {
                match racer.await.unwrap() {
                    (name, Ok(price)) => won.push((name, price)),
                    (_, Err(error)) => assert_eq!(error, AuctionError::Closed),
                }
            }
            assert_eq!(won.len(), 1, "exactly one taker: {won:?}");
            let (winner, price) = won.pop().unwrap();
            assert!((10..=100).contains(&price));
            let state = auctions.wait(id, Duration::from_secs(60)).await.unwrap();
            assert_eq!(state, State::Sold { winner: winner.clone(), price });
            earned += price;
        }
        assert_eq!(ledger.funds("sam").unwrap().balance, earned);
        let wallets = ledger.wallets();
        let paid: u64 = takers.iter().map(|name| 10_000 - wallets[name].balance).sum();
        assert_eq!(paid, earned);
        assert!(wallets.values().all(|funds| funds.held == 0));
    }

    /// 16 tasks run 1,000 auctions of every format at once, with 24 bidders bidding at random,
    /// while 4 more tasks make 4,000 random transfers among the same wallets. At the end every
    /// hold is settled, no wallet went negative (they are unsigned, and every debit is checked),
    /// and the total equals what was minted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn money_is_conserved_under_concurrent_auctions_and_transfers() {
        use rand::{Rng, SeedableRng};
        let names: Vec<String> = (0..24).map(|i| format!("agent-{i}")).collect();
        let wallets: Vec<(&str, u64)> = names.iter().map(|name| (name.as_str(), 5_000)).collect();
        let (ledger, auctions) = market(&wallets).await;
        let names = Arc::new(names);
        let mut tasks = Vec::new();
        for task in 0..20u64 {
            let (auctions, ledger, names) = (auctions.clone(), ledger.clone(), names.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(task);
                let mut sold = Vec::new();
                if task >= 16 {
                    for _ in 0..1000 {
                        let (from, to) = (&names[rng.random_range(0..24)], &names[rng.random_range(0..24)]);
                        let _ = ledger.transfer(from, to, rng.random_range(1..300), "random").await;
                    }
                    return sold;
                }
                for round in 0..(1000 / 16 + 1) {
                    let seller = party(&names[rng.random_range(0..24)]);
                    let format = match round % 4 {
                        0 => Format::English { min_increment: rng.random_range(1..20), soft_close: Duration::ZERO },
                        1 => Format::Dutch { start: 400, step: 1, every: Duration::from_micros(50) },
                        2 => Format::SealedFirstPrice,
                        _ => Format::Vickrey,
                    };
                    let id = auctions.open(seller.clone(), terms(format, rng.random_range(0..100))).unwrap();
                    for _ in 0..rng.random_range(0..12) {
                        let bidder = party(&names[rng.random_range(0..24)]);
                        let _ = auctions.bid(id, &bidder, rng.random_range(1..600)).await;
                    }
                    auctions.expire(id);
                    if let State::Sold { price, .. } = auctions.wait(id, Duration::from_secs(60)).await.unwrap() {
                        sold.push(price);
                    }
                }
                sold
            }));
        }
        let mut sold = 0u64;
        let mut sales = 0;
        for task in tasks {
            let prices = task.await.unwrap();
            sales += prices.len();
            sold += prices.iter().sum::<u64>();
        }
        assert!(sales > 300, "enough auctions sold to mean something: {sales}");
        assert!(sold > 0);
        let (total, minted) = ledger.totals();
        assert_eq!((total, minted), (24 * 5_000, 24 * 5_000));
        assert!(ledger.wallets().values().all(|funds| funds.held == 0), "every hold settled");
        assert_eq!(auctions.open_count(), 0);
    }
}
