//! Durable agents' state (`durable = true`): the latest snapshot of each, by agent name, in
//! `<data_dir>/agents.redb`. A write is acknowledged once it is committed to disk; one writer
//! thread commits every write that is waiting in one transaction (group commit, as the event
//! store does), so that many agents persisting at once share an fsync.
//!
//! A snapshot is kept until the agent's next one replaces it: an agent that comes back (a
//! restart by its supervisor, or a host started again on the same data) gets it through
//! `restore`, with the version that wrote it as `from-version`.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use crate::infra::durable::{self, WriterHandle};

/// Agent name → (module, version, state).
const SNAPSHOTS: TableDefinition<&str, (&str, &str, &[u8])> = TableDefinition::new("snapshots");
const FORMAT: u64 = 1;
/// Writes committed together at most.
const MAX_BATCH: usize = 4096;

/// One agent's persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub module: String,
    /// The module version that took it (its label, or `sha256:...`).
    pub version: String,
    pub state: Vec<u8>,
}

struct Write {
    agent: Arc<str>,
    /// None forgets the agent's snapshot.
    snapshot: Option<Snapshot>,
    acked: oneshot::Sender<Result<(), String>>,
}

pub struct Snapshots {
    db: Arc<Database>,
    writer: WriterHandle<Write>,
}

impl Snapshots {
    /// Open (or create) the store at `path`; redb repairs a file left by a killed process.
    pub fn open(path: &Path) -> Result<Snapshots, String> {
        let db = Arc::new(durable::open_database(Some(path))?);
        let write = db.begin_write().map_err(|e| e.to_string())?;
        durable::check_format(&write, "durable agents' store", FORMAT)?;
        write.open_table(SNAPSHOTS).map_err(|e| e.to_string())?;
        write.commit().map_err(|e| e.to_string())?;
        let writing = db.clone();
        let writer = WriterHandle::spawn("agora-snapshot-writer", move |receiver| run(&writing, receiver))
            .map_err(|e| e.to_string())?;
        Ok(Snapshots { db, writer })
    }

    /// Persist `agent`'s snapshot, replacing its last; returns once it is on disk.
    pub async fn persist(&self, agent: &Arc<str>, snapshot: Snapshot) -> Result<(), String> {
        let (acked, ack) = oneshot::channel();
        self.write(Write { agent: agent.clone(), snapshot: Some(snapshot), acked }, ack).await
    }

    /// Forget `agent`'s snapshot (its next start is by `init`); false when it had none.
    pub async fn forget(&self, agent: &str) -> Result<bool, String> {
        let had = self.load(agent)?.is_some();
        let (acked, ack) = oneshot::channel();
        self.write(Write { agent: agent.into(), snapshot: None, acked }, ack).await?;
        Ok(had)
    }

    async fn write(&self, write: Write, ack: oneshot::Receiver<Result<(), String>>) -> Result<(), String> {
        if !self.writer.send(write) {
            return Err("the durable agents' store has shut down".into());
        }
        ack.await.map_err(|_| "the durable agents' store has shut down".to_string())?
    }

    /// The last snapshot persisted for `agent`.
    pub fn load(&self, agent: &str) -> Result<Option<Snapshot>, String> {
        let read = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = read.open_table(SNAPSHOTS).map_err(|e| e.to_string())?;
        let found = table.get(agent).map_err(|e| e.to_string())?;
        Ok(found.map(|row| {
            let (module, version, state) = row.value();
            Snapshot { module: module.to_string(), version: version.to_string(), state: state.to_vec() }
        }))
    }

    /// How many agents have a snapshot, and their bytes of state.
    #[cfg(test)]
    fn totals(&self) -> Result<(u64, u64), String> {
        use redb::ReadableTable;
        let read = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = read.open_table(SNAPSHOTS).map_err(|e| e.to_string())?;
        let mut totals = (0, 0);
        for row in table.iter().map_err(|e| e.to_string())? {
            let (_, value) = row.map_err(|e| e.to_string())?;
            totals.0 += 1;
            totals.1 += value.value().2.len() as u64;
        }
        Ok(totals)
    }
}

fn run(db: &Database, receiver: mpsc::Receiver<Write>) {
    durable::commit_batches(&receiver, MAX_BATCH, |batch| {
        let outcome = commit(db, batch);
        if let Err(error) = &outcome {
            tracing::error!(event = "snapshot_persist_failed", %error, writes = batch.len(),
                "durable agents' store: a commit failed");
        }
        for write in batch.drain(..) {
            let _ = write.acked.send(outcome.clone());
        }
        true
    })
}

fn commit(db: &Database, batch: &[Write]) -> Result<(), String> {
    let mut write = db.begin_write().map_err(|e| e.to_string())?;
    write.set_quick_repair(true);
    {
        let mut table = write.open_table(SNAPSHOTS).map_err(|e| e.to_string())?;
        // Later writes of one agent replace its earlier ones in the batch: the last one counts.
        for Write { agent, snapshot, .. } in batch {
            match snapshot {
                Some(snapshot) => {
                    let row = (snapshot.module.as_str(), snapshot.version.as_str(), snapshot.state.as_slice());
                    table.insert(&**agent, row).map_err(|e| e.to_string())?;
                }
                None => {
                    table.remove(&**agent).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    write.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_persisted_snapshot_is_there_after_reopening_and_the_last_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.redb");
        let snapshot = |n: u8| Snapshot { module: "counter".into(), version: "1".into(), state: vec![n; 3] };
        {
            let store = Snapshots::open(&path).unwrap();
            let agent: Arc<str> = "a".into();
            let writes = (1..=50).map(|n| store.persist(&agent, snapshot(n)));
            for written in futures_util::future::join_all(writes).await {
                written.unwrap();
            }
            store.persist(&"b".into(), snapshot(7)).await.unwrap();
        }
        let store = Snapshots::open(&path).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(snapshot(50)));
        assert_eq!(store.load("b").unwrap(), Some(snapshot(7)));
        assert_eq!(store.load("c").unwrap(), None);
        assert_eq!(store.totals().unwrap(), (2, 6));
        assert!(store.forget("a").await.unwrap());
        assert!(!store.forget("a").await.unwrap());
        assert_eq!(store.load("a").unwrap(), None);
        assert_eq!(store.totals().unwrap(), (1, 3));
    }
}
