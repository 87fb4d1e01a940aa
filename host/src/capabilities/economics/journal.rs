//! The ledger's journal: every movement of money as a double-entry record in one redb file,
//! written by one thread with group commit. The balances are not stored: they are the journal
//! replayed, so they cannot disagree with it.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::infra::durable::{self, WriterHandle};

/// (time in ms since the Unix epoch, kind, debit account, credit account, amount, hold, memo);
/// the empty account is the host's issuance.
type Row<'a> = (u64, u8, &'a str, &'a str, u64, u64, &'a str);
const JOURNAL: TableDefinition<u64, Row> = TableDefinition::new("journal");
const FORMAT: u64 = 1;
const MAX_BATCH: usize = 16 * 1024;

/// What a record does. Every record moves `amount` from its debit side to its credit side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Issuance → `credit` (a wallet's first budget).
    Mint = 1,
    /// `debit` → `credit`.
    Transfer = 3,
    /// `debit`'s balance → its hold `hold` (escrow); `credit` is the same wallet.
    Hold = 4,
    /// Hold `hold` of `debit` → back to its balance.
    Release = 5,
    /// Hold `hold` of `debit` → `credit`'s balance.
    Capture = 6,
}

impl Kind {
    pub(crate) fn from_u8(value: u8) -> Option<Kind> {
        [Kind::Mint, Kind::Transfer, Kind::Hold, Kind::Release, Kind::Capture].into_iter().find(|k| *k as u8 == value)
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub debit: Arc<str>,
    pub credit: Arc<str>,
    pub amount: u64,
    /// The hold's number within the debit wallet (hold, release, capture), else 0.
    pub hold: u64,
    pub memo: String,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub record: Record,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("ledger journal: {0}")]
pub struct JournalError(pub String);

fn failed(error: impl std::fmt::Display) -> JournalError {
    JournalError(error.to_string())
}

pub type Ack = oneshot::Sender<Result<u64, JournalError>>;

struct Pending {
    record: Record,
    ack: Option<Ack>,
}

pub struct Journal {
    writer: WriterHandle<Pending>,
}

impl Journal {
    /// Open the journal at `path` (in memory when none), replay it through `apply`, append the
    /// records `after_replay` returns (written before any other), then start the writer.
    pub fn open(
        path: Option<&Path>,
        mut apply: impl FnMut(&Entry) -> Result<(), String>,
        after_replay: impl FnOnce() -> Vec<Record>,
    ) -> Result<Journal, JournalError> {
        let db = durable::open_database(path).map_err(JournalError)?;
        let write = db.begin_write().map_err(failed)?;
        durable::check_format(&write, "ledger", FORMAT).map_err(JournalError)?;
        write.open_table(JOURNAL).map_err(failed)?;
        write.commit().map_err(failed)?;
        let mut last_seq = 0;
        {
            let read = db.begin_read().map_err(failed)?;
            let journal = read.open_table(JOURNAL).map_err(failed)?;
            for row in journal.iter().map_err(failed)? {
                let (seq, row) = row.map_err(failed)?;
                let entry = decode(seq.value(), row.value())?;
                apply(&entry).map_err(|why| JournalError(format!("record {} does not replay: {why}", entry.seq)))?;
                last_seq = entry.seq;
            }
        }
        let mut writer = Writer { db, last_seq };
        let opening: Vec<Pending> = after_replay().into_iter().map(|record| Pending { record, ack: None }).collect();
        if !opening.is_empty() {
            writer.write(&opening)?;
        }
        let writer =
            WriterHandle::spawn("agora-ledger-writer", move |receiver| writer.run(receiver)).map_err(failed)?;
        Ok(Journal { writer })
    }

    /// Queue a record; the returned receiver answers once it is durable.
    pub fn append(&self, record: Record) -> oneshot::Receiver<Result<u64, JournalError>> {
        let (ack, acked) = oneshot::channel();
        // A stopped writer drops the ack: the receiver then reports the journal closed.
        self.writer.send(Pending { record, ack: Some(ack) });
        acked
    }

    /// Queue a record nobody waits for (durable with the next commit).
    pub fn record(&self, record: Record) {
        self.writer.send(Pending { record, ack: None });
    }
}

fn decode(seq: u64, row: Row<'_>) -> Result<Entry, JournalError> {
    let (_time_ms, kind, debit, credit, amount, hold, memo) = row;
    let kind = Kind::from_u8(kind).ok_or_else(|| JournalError(format!("record {seq} has unknown kind {kind}")))?;
    let record = Record { kind, debit: debit.into(), credit: credit.into(), amount, hold, memo: memo.into() };
    Ok(Entry { seq, record })
}

struct Writer {
    db: Database,
    last_seq: u64,
}

impl Writer {
    fn run(&mut self, receiver: mpsc::Receiver<Pending>) {
        durable::commit_batches(&receiver, MAX_BATCH, |batch| {
            let first_seq = self.last_seq + 1;
            match self.write(batch) {
                Ok(()) => {
                    for (pending, seq) in batch.drain(..).zip(first_seq..) {
                        if let Some(ack) = pending.ack {
                            let _ = ack.send(Ok(seq));
                        }
                    }
                    true
                }
                Err(error) => {
                    // The balances in memory are now ahead of the file; the ledger stops taking
                    // movements (see `Ledger::fail`), so the file stays a consistent prefix.
                    tracing::error!(event = "ledger_journal_failed", %error, lost = batch.len(), "ledger commit failed");
                    for pending in batch.drain(..) {
                        if let Some(ack) = pending.ack {
                            let _ = ack.send(Err(error.clone()));
                        }
                    }
                    false
                }
            }
        })
    }

    fn write(&mut self, batch: &[Pending]) -> Result<(), JournalError> {
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut write = self.db.begin_write().map_err(failed)?;
        write.set_quick_repair(true);
        {
            let mut journal = write.open_table(JOURNAL).map_err(failed)?;
            for (pending, seq) in batch.iter().zip(self.last_seq + 1..) {
                let r = &pending.record;
                let row: Row = (time_ms, r.kind as u8, &r.debit, &r.credit, r.amount, r.hold, &r.memo);
                journal.insert(seq, row).map_err(failed)?;
            }
        }
        write.commit().map_err(failed)?;
        self.last_seq += batch.len() as u64;
        Ok(())
    }
}
