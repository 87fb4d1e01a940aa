//! Wallets: integer balances and holds (escrow), moved only by journaled double-entry records.
//!
//! Each wallet has its own mutex in a read-mostly lock-free table (as the lock table does), so
//! movements between unrelated wallets share nothing but the journal's queue. A movement checks
//! and applies under the locks of the wallets it touches (taken in name order, so two transfers
//! in opposite directions cannot deadlock) and queues its record before letting go of them: the
//! journal's order is therefore an order in which every movement was valid, and replaying it
//! gives the same balances. The caller learns of success only once the record is durable.
//!
//! Invariant: the sum of balances, holds and compute charges not yet journaled equals what was
//! minted (the wallets' first budgets). No movement changes that sum.
//!
//! Compute charges (see `billing`) are taken from the balance at once, so a wallet can never pay
//! for more than it has, but journaled per agent when it goes idle or every 100 ms: a host that
//! crashes forgets at most that much of the charges (the wallets keep the money).

mod shared;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use tokio::sync::Notify;

use super::journal::{Entry, Journal, JournalError, Kind, Record};

/// The wallet compute charges are paid to.
pub const COMPUTE_ACCOUNT: &str = "host:compute";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("no wallet named {0:?}")]
    NoWallet(String),
    #[error("no hold {0} in this wallet")]
    NoHold(u64),
    #[error("insufficient funds: {needed} needed, {available} available")]
    InsufficientFunds { needed: u64, available: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Journal(#[from] JournalError),
}

/// A wallet's funds: what it can spend, and what it has put aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Funds {
    pub balance: u64,
    pub held: u64,
}

/// A hold: escrow in its owner's wallet, released back or captured by someone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId {
    pub owner: Arc<str>,
    pub number: u64,
}

#[derive(Default)]
struct Wallet {
    balance: u64,
    holds: BTreeMap<u64, u64>,
    next_hold: u64,
    /// Compute charges taken from `balance`, not journaled yet.
    compute_due: u64,
}

impl Wallet {
    fn held(&self) -> u64 {
        self.holds.values().sum()
    }

    fn debit(&mut self, amount: u64) -> Result<(), LedgerError> {
        self.balance = self
            .balance
            .checked_sub(amount)
            .ok_or(LedgerError::InsufficientFunds { needed: amount, available: self.balance })?;
        Ok(())
    }

    fn credit(&mut self, amount: u64) -> Result<(), LedgerError> {
        self.balance =
            self.balance.checked_add(amount).ok_or_else(|| LedgerError::Invalid("balance overflow".into()))?;
        Ok(())
    }

    fn take_hold(&mut self, number: u64, amount: u64) -> Result<(), LedgerError> {
        let held = self.holds.get_mut(&number).ok_or(LedgerError::NoHold(number))?;
        *held = held.checked_sub(amount).ok_or(LedgerError::InsufficientFunds { needed: amount, available: *held })?;
        if *held == 0 {
            self.holds.remove(&number);
        }
        Ok(())
    }
}

struct Account {
    wallet: Mutex<Wallet>,
    /// Woken when money arrives (an unfunded agent waits on it).
    funded: Arc<Notify>,
}

impl Account {
    fn new() -> Account {
        Account { wallet: Mutex::new(Wallet::default()), funded: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Wallet> {
        // Nothing panics while holding a wallet; a poisoned one is still consistent.
        self.wallet.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Accounts = papaya::HashMap<Arc<str>, Account, crate::infra::hashers::NameHasher>;

pub struct Ledger {
    accounts: Accounts,
    journal: Journal,
    minted: AtomicU64,
    /// Set when the journal failed: memory may be ahead of the file, so nothing more moves.
    failed: AtomicBool,
    /// In a cluster: the cluster's journal, which every movement goes through instead.
    shared: OnceLock<Arc<crate::cluster::ledger::SharedJournal>>,
    /// Itself, for the cluster's movements that finish in the background.
    me: OnceLock<Weak<Ledger>>,
}

fn new_accounts() -> Accounts {
    papaya::HashMap::builder()
        .hasher(crate::infra::hashers::NameHasher::default())
        .resize_mode(papaya::ResizeMode::Blocking)
        .build()
}

/// Apply one record to wallets in memory (replay; live movements apply the same way).
fn apply(accounts: &Accounts, record: &Record) -> Result<(), LedgerError> {
    let table = accounts.pin();
    let wallet = |name: &Arc<str>| table.get_or_insert_with(name.clone(), Account::new);
    match record.kind {
        Kind::Mint => wallet(&record.credit).lock().credit(record.amount),
        Kind::Transfer => {
            wallet(&record.debit).lock().debit(record.amount)?;
            wallet(&record.credit).lock().credit(record.amount)
        }
        Kind::Hold => {
            let mut owner = wallet(&record.debit).lock();
            owner.debit(record.amount)?;
            owner.holds.insert(record.hold, record.amount);
            owner.next_hold = owner.next_hold.max(record.hold);
            Ok(())
        }
        Kind::Release => {
            let mut owner = wallet(&record.debit).lock();
            owner.take_hold(record.hold, record.amount)?;
            owner.credit(record.amount)
        }
        Kind::Capture => {
            wallet(&record.debit).lock().take_hold(record.hold, record.amount)?;
            wallet(&record.credit).lock().credit(record.amount)
        }
    }
}

impl Ledger {
    /// Open the ledger at `path` (in memory when none) and replay its journal. Holds still open
    /// belonged to auctions and contracts of the previous host, which did not survive it: they
    /// are released, and the releases journaled, before anything else happens.
    pub fn open(path: Option<&Path>) -> Result<Ledger, LedgerError> {
        let accounts = new_accounts();
        let mut minted = 0u64;
        let journal = Journal::open(
            path,
            |entry: &Entry| {
                if entry.record.kind == Kind::Mint {
                    minted += entry.record.amount;
                }
                apply(&accounts, &entry.record).map_err(|e| e.to_string())
            },
            || {
                let mut releases = Vec::new();
                for (name, account) in accounts.pin().iter() {
                    let mut wallet = account.lock();
                    for (number, amount) in std::mem::take(&mut wallet.holds) {
                        wallet.balance += amount;
                        releases.push(Record {
                            kind: Kind::Release,
                            debit: name.clone(),
                            credit: name.clone(),
                            amount,
                            hold: number,
                            memo: "released at host start: its holder did not survive the previous host".into(),
                        });
                    }
                }
                releases
            },
        )?;
        Ok(Ledger {
            accounts,
            journal,
            minted: AtomicU64::new(minted),
            failed: AtomicBool::new(false),
            shared: OnceLock::new(),
            me: OnceLock::new(),
        })
    }

    fn check_open(&self) -> Result<(), LedgerError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(JournalError("an earlier commit failed; the ledger takes no more movements".into()).into());
        }
        Ok(())
    }

    /// Wait for a queued record to be durable; its sequence number.
    async fn durable(
        &self,
        acked: tokio::sync::oneshot::Receiver<Result<u64, JournalError>>,
    ) -> Result<u64, LedgerError> {
        let outcome = acked.await.unwrap_or_else(|_| Err(JournalError("the ledger has shut down".into())));
        if outcome.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        Ok(outcome?)
    }

    /// Make sure a wallet exists; a new one receives `initial` (minted, journaled). Returns
    /// whether it was new. An existing wallet keeps its balance: a budget is given once.
    pub async fn open_wallet(&self, name: &str, initial: u64) -> Result<bool, LedgerError> {
        if let Some(shared) = self.shared.get() {
            return self.shared_open_wallet(shared, name, initial).await;
        }
        self.check_open()?;
        let acked = {
            let table = self.accounts.pin();
            // Inserted here or already there: exactly one of two racing starts mints.
            let Ok(account) = table.try_insert(name.into(), Account::new()) else { return Ok(false) };
            if initial == 0 {
                return Ok(true);
            }
            let mut wallet = account.lock();
            wallet.credit(initial)?;
            self.minted.fetch_add(initial, Ordering::Relaxed);
            self.journal.append(Record {
                kind: Kind::Mint,
                debit: "".into(),
                credit: name.into(),
                amount: initial,
                hold: 0,
                memo: "initial budget".into(),
            })
        };
        self.durable(acked).await?;
        Ok(true)
    }

    /// Move `amount` from one wallet to another; the journal sequence number once durable.
    pub async fn transfer(&self, from: &str, to: &str, amount: u64, memo: &str) -> Result<u64, LedgerError> {
        self.check_open()?;
        if amount == 0 {
            return Err(LedgerError::Invalid("the amount must be at least 1".into()));
        }
        if from == to {
            return Err(LedgerError::Invalid("a wallet cannot pay itself".into()));
        }
        if let Some(shared) = self.shared.get() {
            return self.shared_transfer(shared, from, to, amount, memo).await;
        }
        let acked = {
            let table = self.accounts.pin();
            let payer = table.get(from).ok_or_else(|| LedgerError::NoWallet(from.into()))?;
            let payee = table.get(to).ok_or_else(|| LedgerError::NoWallet(to.into()))?;
            let (mut paying, mut paid) = lock_pair(payer, from, payee, to);
            paying.debit(amount)?;
            paid.credit(amount)?;
            let acked = self.journal.append(Record {
                kind: Kind::Transfer,
                debit: from.into(),
                credit: to.into(),
                amount,
                hold: 0,
                memo: memo.into(),
            });
            drop((paying, paid));
            payee.funded.notify_waiters();
            acked
        };
        self.durable(acked).await
    }

    /// Put `amount` of `owner`'s balance aside.
    pub async fn hold(&self, owner: &str, amount: u64, memo: &str) -> Result<HoldId, LedgerError> {
        self.check_open()?;
        if amount == 0 {
            return Err(LedgerError::Invalid("the amount must be at least 1".into()));
        }
        let owner: Arc<str> = owner.into();
        if let Some(shared) = self.shared.get() {
            let number = self.shared_hold(shared, &owner, amount, memo).await?;
            return Ok(HoldId { owner, number });
        }
        let (number, acked) = {
            let table = self.accounts.pin();
            let account = table.get(&*owner).ok_or_else(|| LedgerError::NoWallet(owner.to_string()))?;
            let mut wallet = account.lock();
            wallet.debit(amount)?;
            wallet.next_hold += 1;
            let number = wallet.next_hold;
            wallet.holds.insert(number, amount);
            let record = Record {
                kind: Kind::Hold,
                debit: owner.clone(),
                credit: owner.clone(),
                amount,
                hold: number,
                memo: memo.into(),
            };
            (number, self.journal.append(record))
        };
        self.durable(acked).await?;
        Ok(HoldId { owner, number })
    }

    /// Give all of a hold back to its owner.
    pub async fn release(&self, hold: &HoldId, memo: &str) -> Result<u64, LedgerError> {
        if let Some(shared) = self.shared.get() {
            return self.shared_settle_hold(shared, &hold.owner, hold.number, &hold.owner, None, memo).await;
        }
        self.check_open()?;
        let acked = {
            let table = self.accounts.pin();
            let account = table.get(&*hold.owner).ok_or_else(|| LedgerError::NoWallet(hold.owner.to_string()))?;
            let mut wallet = account.lock();
            let amount = wallet.holds.remove(&hold.number).ok_or(LedgerError::NoHold(hold.number))?;
            wallet.balance += amount;
            self.journal.append(Record {
                kind: Kind::Release,
                debit: hold.owner.clone(),
                credit: hold.owner.clone(),
                amount,
                hold: hold.number,
                memo: memo.into(),
            })
        };
        self.durable(acked).await
    }

    /// Pay `amount` of a hold to `to`; the rest goes back to the owner. The hold is closed.
    /// Paying the owner itself is a release.
    pub async fn capture(&self, hold: &HoldId, to: &str, amount: u64, memo: &str) -> Result<u64, LedgerError> {
        if *hold.owner == *to {
            return self.release(hold, memo).await;
        }
        if let Some(shared) = self.shared.get() {
            return self.shared_settle_hold(shared, &hold.owner, hold.number, to, Some(amount), memo).await;
        }
        self.check_open()?;
        let acked = {
            let table = self.accounts.pin();
            let owner_account = table.get(&*hold.owner).ok_or_else(|| LedgerError::NoWallet(hold.owner.to_string()))?;
            let payee = table.get(to).ok_or_else(|| LedgerError::NoWallet(to.into()))?;
            let (mut owner, mut paid) = lock_pair(owner_account, &hold.owner, payee, to);
            let held = *owner.holds.get(&hold.number).ok_or(LedgerError::NoHold(hold.number))?;
            if amount > held {
                return Err(LedgerError::InsufficientFunds { needed: amount, available: held });
            }
            paid.credit(amount)?;
            owner.holds.remove(&hold.number);
            owner.balance += held - amount;
            let record = |kind, credit: Arc<str>, amount, memo| Record {
                kind,
                debit: hold.owner.clone(),
                credit,
                amount,
                hold: hold.number,
                memo,
            };
            let mut acked = None;
            if amount > 0 {
                acked = Some(self.journal.append(record(Kind::Capture, to.into(), amount, memo.into())));
            }
            if held > amount {
                let rest = record(Kind::Release, hold.owner.clone(), held - amount, format!("{memo} (the rest)"));
                acked = Some(self.journal.append(rest));
            }
            drop((owner, paid));
            payee.funded.notify_waiters();
            acked.expect("a hold holds at least 1")
        };
        self.durable(acked).await
    }

    pub fn funds(&self, name: &str) -> Option<Funds> {
        let table = self.accounts.pin();
        let wallet = table.get(name)?.lock();
        Some(Funds { balance: wallet.balance, held: wallet.held() })
    }

    /// Buy up to `max_units` of compute at `price` each from a wallet, whole units only, taken
    /// from the balance at once and journaled later by `settle_compute`. How many it bought.
    pub fn buy_compute(&self, name: &str, price: u64, max_units: u64) -> u64 {
        let table = self.accounts.pin();
        let Some(account) = table.get(name) else { return 0 };
        let mut wallet = account.lock();
        let units = (wallet.balance / price.max(1)).min(max_units);
        wallet.balance -= units * price;
        wallet.compute_due += units * price;
        units
    }

    /// Give back compute paid for and not used: charges not journaled yet are undone, and the
    /// rest is paid back by [`COMPUTE_ACCOUNT`] (journaled).
    pub fn pay_back_compute(&self, name: &str, amount: u64) {
        let table = self.accounts.pin();
        let Some(account) = table.get(name) else { return };
        let rest = {
            let mut wallet = account.lock();
            let undone = amount.min(wallet.compute_due);
            wallet.compute_due -= undone;
            wallet.balance += undone;
            amount - undone
        };
        if let Some(shared) = self.shared.get() {
            if rest > 0 {
                self.shared_pay_back(shared, name, rest);
            }
            return;
        }
        let Some(house) = table.get(COMPUTE_ACCOUNT).filter(|_| rest > 0) else { return };
        let (mut wallet, mut paying) = lock_pair(account, name, house, COMPUTE_ACCOUNT);
        let amount = rest.min(paying.balance);
        if amount == 0 {
            return;
        }
        paying.balance -= amount;
        wallet.balance += amount;
        self.journal.record(Record {
            kind: Kind::Transfer,
            debit: COMPUTE_ACCOUNT.into(),
            credit: name.into(),
            amount,
            hold: 0,
            memo: "compute paid for and not used".into(),
        });
    }

    /// Journal a wallet's compute charges so far (paid to [`COMPUTE_ACCOUNT`]).
    pub fn settle_compute(&self, name: &str) {
        let table = self.accounts.pin();
        let Some(account) = table.get(name).filter(|_| *name != *self.compute_account()) else { return };
        if let Some(shared) = self.shared.get() {
            let due = std::mem::take(&mut account.lock().compute_due);
            if due > 0 {
                self.shared_settle_compute(shared, name, due);
            }
            return;
        }
        let house = table.get_or_insert_with(COMPUTE_ACCOUNT.into(), Account::new);
        let (mut wallet, mut paid) = lock_pair(account, name, house, COMPUTE_ACCOUNT);
        let due = std::mem::take(&mut wallet.compute_due);
        if due == 0 {
            return;
        }
        paid.balance += due;
        self.journal.record(Record {
            kind: Kind::Transfer,
            debit: name.into(),
            credit: COMPUTE_ACCOUNT.into(),
            amount: due,
            hold: 0,
            memo: "compute".into(),
        });
    }

    /// What is woken when money arrives in `name`. To wait without missing a payment, enable
    /// a `notified()` future first, then check the funds, then await it.
    pub fn funded_signal(&self, name: &str) -> Option<Arc<Notify>> {
        Some(self.accounts.pin().get(name)?.funded.clone())
    }

    /// (balances + holds + charges not yet journaled, minted): equal whenever no movement is
    /// under way.
    pub fn totals(&self) -> (u128, u128) {
        let mut held = 0u128;
        for (_, account) in self.accounts.pin().iter() {
            let wallet = account.lock();
            held += wallet.balance as u128 + wallet.held() as u128 + wallet.compute_due as u128;
        }
        // Compute charges on their way to the cluster's journal.
        held += self.shared.get().map_or(0, |shared| shared.in_flight());
        let issued = self.minted.load(Ordering::Relaxed) as u128;
        (held, issued)
    }

    /// Every wallet and its funds, by name.
    pub fn wallets(&self) -> BTreeMap<String, Funds> {
        self.accounts
            .pin()
            .iter()
            .map(|(name, account)| {
                let wallet = account.lock();
                (name.to_string(), Funds { balance: wallet.balance, held: wallet.held() })
            })
            .collect()
    }
}

/// Lock two wallets in name order.
fn lock_pair<'a>(
    first: &'a Account,
    first_name: &str,
    second: &'a Account,
    second_name: &str,
) -> (MutexGuard<'a, Wallet>, MutexGuard<'a, Wallet>) {
    if first_name < second_name {
        let a = first.lock();
        (a, second.lock())
    } else {
        let b = second.lock();
        (first.lock(), b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 tasks on 2 worker threads make 1,000 random movements each among 32 wallets
    /// (transfers, holds, releases and captures, some bound to fail for want of funds), and
    /// race one another to settle the same holds. Every wallet ends non-negative by type; the
    /// test checks the money: the totals equal what was minted, each hold was settled once, and
    /// replaying the journal after a restart gives the same funds (holds released back).
    #[test]
    fn random_movements_conserve_money_and_replay_to_the_same_funds() {
        use rand::{Rng, SeedableRng};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let names: Vec<String> = (0..32).map(|i| format!("w{i}")).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let ledger = Arc::new(Ledger::open(Some(&path)).unwrap());
        let settled = runtime.block_on(async {
            for name in &names {
                assert!(ledger.open_wallet(name, 1_000).await.unwrap());
            }
            assert!(!ledger.open_wallet("w0", 1_000).await.unwrap(), "a budget is given once");
            let holds: Arc<Mutex<Vec<HoldId>>> = Arc::default();
            let settled = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for task in 0..16u64 {
                let (ledger, names, holds, settled) = (ledger.clone(), names.clone(), holds.clone(), settled.clone());
                tasks.push(tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(task);
                    for _ in 0..1_000 {
                        let a = &names[rng.random_range(0..names.len())];
                        let b = &names[rng.random_range(0..names.len())];
                        let amount = rng.random_range(1..400);
                        match rng.random_range(0..4) {
                            0 | 1 => match ledger.transfer(a, b, amount, "t").await {
                                Ok(_) | Err(LedgerError::InsufficientFunds { .. }) => {}
                                Err(LedgerError::Invalid(_)) if a == b => {}
                                Err(e) => panic!("{e}"),
                            },
                            2 => {
                                if let Ok(hold) = ledger.hold(a, amount, "h").await {
                                    holds.lock().unwrap().push(hold);
                                }
                            }
                            _ => {
                                // Settle a random open hold; other tasks may race for it.
                                let hold = {
                                    let holds = holds.lock().unwrap();
                                    if holds.is_empty() {
                                        continue;
                                    }
                                    holds[rng.random_range(0..holds.len())].clone()
                                };
                                let outcome = if rng.random_bool(0.5) {
                                    ledger.release(&hold, "r").await
                                } else {
                                    let part = rng.random_range(0..=amount);
                                    ledger.capture(&hold, b, part, "c").await
                                };
                                match outcome {
                                    Ok(_) => {
                                        settled.fetch_add(1, Ordering::Relaxed);
                                        holds.lock().unwrap().retain(|h| *h != hold);
                                    }
                                    Err(LedgerError::NoHold(_) | LedgerError::InsufficientFunds { .. }) => {}
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let open = holds.lock().unwrap().len() as u64;
            (settled.load(Ordering::Relaxed), open)
        });
        let (held, issued) = ledger.totals();
        assert_eq!(held, issued, "money is conserved");
        assert_eq!(issued, 32_000);
        let (settled, open) = settled;
        let still_held: u64 = ledger.wallets().values().map(|f| f.held).sum();
        assert!(settled > 100 && (open == 0) == (still_held == 0), "{settled} settled, {open} open");
        let before: BTreeMap<String, u64> =
            ledger.wallets().into_iter().map(|(name, funds)| (name, funds.balance + funds.held)).collect();
        drop(ledger);
        drop(runtime);
        let reopened = Ledger::open(Some(&path)).unwrap();
        let after: BTreeMap<String, u64> = reopened
            .wallets()
            .into_iter()
            .map(|(name, funds)| {
                assert_eq!(funds.held, 0, "open holds are released at start");
                (name, funds.balance)
            })
            .collect();
        assert_eq!(before, after, "the journal replays to the same funds");
        assert_eq!(reopened.totals(), (32_000, 32_000));
    }

    #[tokio::test]
    async fn one_hold_is_settled_once_however_many_race_for_it() {
        let ledger = Arc::new(Ledger::open(None).unwrap());
        ledger.open_wallet("payer", 1_000).await.unwrap();
        ledger.open_wallet("payee", 0).await.unwrap();
        for _ in 0..50 {
            let hold = ledger.hold("payer", 10, "escrow").await.unwrap();
            let racers: Vec<_> = (0..4)
                .map(|i| {
                    let (ledger, hold) = (ledger.clone(), hold.clone());
                    tokio::spawn(async move {
                        if i % 2 == 0 {
                            ledger.capture(&hold, "payee", 10, "won").await.is_ok()
                        } else {
                            ledger.release(&hold, "lost").await.is_ok()
                        }
                    })
                })
                .collect();
            let mut wins = 0;
            for racer in racers {
                wins += racer.await.unwrap() as u32;
            }
            assert_eq!(wins, 1, "exactly one settlement of a hold");
        }
        let payer = ledger.funds("payer").unwrap();
        let payee = ledger.funds("payee").unwrap();
        assert_eq!(payer.balance + payee.balance, 1_000);
        assert_eq!(payer.held, 0);
        assert_eq!(ledger.transfer("payer", "nobody", 1, "x").await, Err(LedgerError::NoWallet("nobody".into())));
    }
}
