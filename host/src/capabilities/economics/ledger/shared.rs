//! The ledger of a cluster node: the same wallets, moved through the cluster's shared journal
//! ([`crate::cluster::ledger`]) instead of the host's file. A movement is checked against this
//! node's view, published, and applied once the server took it, so nothing is applied that
//! could still be refused; the movements of other nodes arrive through the journal's follower.

use std::sync::Arc;

use super::{Account, Accounts, Ledger, LedgerError, Record, apply};
use crate::capabilities::economics::journal::{JournalError, Kind};
use crate::cluster::ledger::{AppendError, Effect, SharedJournal};

/// How many times a movement is checked again after another node wrote to its wallet.
const CONFLICTS: usize = 3;

fn unavailable(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Journal(JournalError(error.to_string()))
}

/// The credit side of a record whose debit was taken already (compute charges).
fn credit_side(accounts: &Accounts, record: &Record) -> Result<(), LedgerError> {
    let table = accounts.pin();
    table.get_or_insert_with(record.credit.clone(), Account::new).lock().credit(record.amount)
}

impl Ledger {
    /// Join the cluster's ledger: this host's own wallets are set aside (the cluster's are the
    /// stream's), every movement in the stream is replayed, and from then on every movement
    /// goes through it.
    pub async fn share(self: &Arc<Self>, journal: Arc<SharedJournal>) -> anyhow::Result<()> {
        {
            let table = self.accounts.pin();
            if !table.is_empty() {
                tracing::warn!(
                    event = "ledger_set_aside",
                    wallets = table.len(),
                    "this host's own ledger is not used in a cluster: the cluster's ledger replaces it"
                );
            }
            table.clear();
        }
        self.minted.store(0, std::sync::atomic::Ordering::Relaxed);
        let _ = self.me.set(Arc::downgrade(self));
        let _ = self.shared.set(journal.clone());
        let ledger = Arc::downgrade(self);
        journal
            .follow(Box::new(move |records, credit_only| {
                if let Some(ledger) = ledger.upgrade() {
                    ledger.apply_shared(records, credit_only);
                }
            }))
            .await
    }

    /// A movement that reached the journal, this node's or another's.
    fn apply_shared(&self, records: &[Record], credit_only: bool) {
        for record in records {
            let outcome = if credit_only { credit_side(&self.accounts, record) } else { apply(&self.accounts, record) };
            match outcome {
                Ok(()) => {
                    if record.kind == Kind::Mint {
                        self.minted.fetch_add(record.amount, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(account) = self.accounts.pin().get(&record.credit) {
                        account.funded.notify_waiters();
                    }
                }
                // Every node applies the journal in the same order, so they agree on this too.
                Err(error) => tracing::error!(event = "ledger_record_refused", kind = ?record.kind,
                    debit = %record.debit, credit = %record.credit, amount = record.amount, %error,
                    "a movement in the cluster's ledger does not apply: {error}"),
            }
        }
    }

    /// The house wallet compute is paid to: this node's own in a cluster.
    pub(super) fn compute_account(&self) -> Arc<str> {
        match self.shared.get() {
            Some(shared) => shared.compute_account.clone(),
            None => super::COMPUTE_ACCOUNT.into(),
        }
    }

    /// Check with `plan`, publish, apply: a movement debiting `wallet`, in its turn.
    async fn commit(
        &self,
        shared: &SharedJournal,
        wallet: &str,
        plan: impl Fn() -> Result<Vec<Record>, LedgerError>,
    ) -> Result<(u64, Vec<Record>), LedgerError> {
        let writer = shared.writer(wallet);
        let _turn = writer.lock().await;
        let mut caught_up = 0;
        loop {
            let records = match plan() {
                Ok(records) => records,
                // Opened a moment ago on another node: its opening may not have arrived yet.
                Err(LedgerError::NoWallet(_)) if caught_up == 0 => {
                    caught_up += 1;
                    shared.catch_up().await.map_err(unavailable)?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match shared.append(wallet, Effect { records: records.clone(), credit_only: false }).await {
                Ok(seq) => return Ok((seq, records)),
                Err(AppendError::Conflict) if caught_up < CONFLICTS => {
                    caught_up += 1;
                    shared.catch_up().await.map_err(unavailable)?;
                }
                Err(error) => return Err(unavailable(error)),
            }
        }
    }

    pub(super) async fn shared_open_wallet(
        &self,
        shared: &SharedJournal,
        name: &str,
        initial: u64,
    ) -> Result<bool, LedgerError> {
        // A wallet moved here from a node that went down: every movement it made is in first.
        shared.catch_up().await.map_err(unavailable)?;
        let writer = shared.writer(name);
        let _turn = writer.lock().await;
        if self.accounts.pin().contains_key(name) {
            return Ok(false);
        }
        let mint = Record {
            kind: Kind::Mint,
            debit: "".into(),
            credit: name.into(),
            amount: initial,
            hold: 0,
            memo: "initial budget".into(),
        };
        match shared.append(name, Effect { records: vec![mint], credit_only: false }).await {
            Ok(_) => Ok(true),
            // Opened on another node at the same moment: exactly one mints.
            Err(AppendError::Conflict) => {
                shared.catch_up().await.map_err(unavailable)?;
                Ok(false)
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    pub(super) async fn shared_transfer(
        &self,
        shared: &SharedJournal,
        from: &str,
        to: &str,
        amount: u64,
        memo: &str,
    ) -> Result<u64, LedgerError> {
        let plan = || {
            let table = self.accounts.pin();
            let payer = table.get(from).ok_or_else(|| LedgerError::NoWallet(from.into()))?;
            table.get(to).ok_or_else(|| LedgerError::NoWallet(to.into()))?;
            let available = payer.lock().balance;
            if available < amount {
                return Err(LedgerError::InsufficientFunds { needed: amount, available });
            }
            Ok(vec![Record {
                kind: Kind::Transfer,
                debit: from.into(),
                credit: to.into(),
                amount,
                hold: 0,
                memo: memo.into(),
            }])
        };
        Ok(self.commit(shared, from, plan).await?.0)
    }

    pub(super) async fn shared_hold(
        &self,
        shared: &SharedJournal,
        owner: &Arc<str>,
        amount: u64,
        memo: &str,
    ) -> Result<u64, LedgerError> {
        let plan = || {
            let table = self.accounts.pin();
            let account = table.get(&**owner).ok_or_else(|| LedgerError::NoWallet(owner.to_string()))?;
            let wallet = account.lock();
            if wallet.balance < amount {
                return Err(LedgerError::InsufficientFunds { needed: amount, available: wallet.balance });
            }
            // Numbered here: this node alone holds from this wallet, one movement at a time.
            let number = wallet.next_hold + 1;
            Ok(vec![Record {
                kind: Kind::Hold,
                debit: owner.clone(),
                credit: owner.clone(),
                amount,
                hold: number,
                memo: memo.into(),
            }])
        };
        let (_, records) = self.commit(shared, owner, plan).await?;
        Ok(records[0].hold)
    }

    pub(super) async fn shared_settle_hold(
        &self,
        shared: &SharedJournal,
        owner: &Arc<str>,
        number: u64,
        to: &str,
        amount: Option<u64>,
        memo: &str,
    ) -> Result<u64, LedgerError> {
        let plan = || {
            let table = self.accounts.pin();
            let account = table.get(&**owner).ok_or_else(|| LedgerError::NoWallet(owner.to_string()))?;
            let held = *account.lock().holds.get(&number).ok_or(LedgerError::NoHold(number))?;
            let record = |kind, credit: Arc<str>, amount, memo: String| Record {
                kind,
                debit: owner.clone(),
                credit,
                amount,
                hold: number,
                memo,
            };
            let Some(amount) = amount else {
                return Ok(vec![record(Kind::Release, owner.clone(), held, memo.into())]);
            };
            table.get(to).ok_or_else(|| LedgerError::NoWallet(to.into()))?;
            if amount > held {
                return Err(LedgerError::InsufficientFunds { needed: amount, available: held });
            }
            let mut records = Vec::new();
            if amount > 0 {
                records.push(record(Kind::Capture, to.into(), amount, memo.into()));
            }
            if held > amount {
                records.push(record(Kind::Release, owner.clone(), held - amount, format!("{memo} (the rest)")));
            }
            Ok(records)
        };
        Ok(self.commit(shared, owner, plan).await?.0)
    }

    /// Journal compute charges already taken from `name`'s balance (in the background: the
    /// hooks that settle are synchronous). A charge the journal refuses is due again, to be
    /// settled with the next.
    pub(super) fn shared_settle_compute(&self, shared: &Arc<SharedJournal>, name: &str, due: u64) {
        let record = Record {
            kind: Kind::Transfer,
            debit: name.into(),
            credit: shared.compute_account.clone(),
            amount: due,
            hold: 0,
            memo: "compute".into(),
        };
        let (shared, ledger, name) = (shared.clone(), self.me.get().cloned(), Arc::<str>::from(name));
        tokio::spawn(async move {
            let writer = shared.writer(&name);
            let _turn = writer.lock().await;
            let mut outcome = Err(AppendError::Conflict);
            for _ in 0..CONFLICTS {
                outcome = shared.append(&name, Effect { records: vec![record.clone()], credit_only: true }).await;
                match &outcome {
                    Err(AppendError::Conflict) => {
                        let _ = shared.catch_up().await;
                    }
                    _ => break,
                }
            }
            match outcome {
                Ok(_) | Err(AppendError::InDoubt(_)) => {}
                Err(error) => {
                    tracing::warn!(event = "compute_settle_failed", wallet = %name, %error);
                    if let Some(ledger) = ledger.and_then(|l| l.upgrade()) {
                        let table = ledger.accounts.pin();
                        if let Some(account) = table.get(&*name) {
                            account.lock().compute_due += due;
                        }
                    }
                }
            }
        });
    }

    /// Pay back compute already journaled, from this node's house wallet (in the background).
    pub(super) fn shared_pay_back(&self, shared: &Arc<SharedJournal>, name: &str, rest: u64) {
        let (shared, ledger, name) = (shared.clone(), self.me.get().cloned(), Arc::<str>::from(name));
        tokio::spawn(async move {
            let Some(ledger) = ledger.and_then(|l| l.upgrade()) else { return };
            let house = shared.compute_account.clone();
            let plan = || {
                let available = ledger.accounts.pin().get(&house).map_or(0, |a| a.lock().balance);
                let amount = rest.min(available);
                if amount == 0 {
                    return Err(LedgerError::InsufficientFunds { needed: rest, available });
                }
                Ok(vec![Record {
                    kind: Kind::Transfer,
                    debit: house.clone(),
                    credit: name.clone(),
                    amount,
                    hold: 0,
                    memo: "compute paid for and not used".into(),
                }])
            };
            if let Err(error) = ledger.commit(&shared, &house, plan).await {
                tracing::debug!(event = "compute_pay_back_skipped", wallet = %name, %error);
            }
        });
    }
}
