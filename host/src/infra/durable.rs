//! What the host's durable stores (the event store, the ledger's journal) share: a redb file
//! (or an in-memory database) with a format version, and one writer thread doing group commit.
//!
//! Why one writer: redb allows one write transaction at a time, and an fsync per record caps a
//! disk at a few hundred commits a second. The writer takes every record that is waiting, writes
//! them in one transaction, commits once (durably), then acknowledges each. Throughput therefore
//! grows with the number of concurrent writers while each still waits for its fsync.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The page cache of one durable database.
const CACHE_BYTES: usize = 32 << 20;

/// Open (or create) the database at `path`, or one in memory when `path` is none. A file left
/// by a killed process is repaired by redb on open.
pub fn open_database(path: Option<&Path>) -> Result<Database, String> {
    match path {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            // redb caches up to 1 GiB by default, and a write-heavy store (a restart storm
            // journals every crash) grows the process towards it: bound it.
            Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => {
            Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(|e| e.to_string())
        }
    }
}

/// Stamp a new database with `format`, or refuse one written in another format rather than
/// misread it.
pub fn check_format(write: &redb::WriteTransaction, what: &str, format: u64) -> Result<(), String> {
    let mut meta = write.open_table(META).map_err(|e| e.to_string())?;
    let found = meta.get("format").map_err(|e| e.to_string())?.map(|f| f.value());
    match found {
        None => {
            meta.insert("format", format).map_err(|e| e.to_string())?;
            Ok(())
        }
        Some(found) if found == format => Ok(()),
        Some(other) => Err(format!(
            "the {what} is in format {other}, this host reads format {format}; move it aside to start a new one"
        )),
    }
}

/// What [`next_batch`] found.
pub enum Batch {
    /// At least one record is in the batch.
    Ready,
    /// Nothing arrived for the idle period.
    Idle,
    /// Every sender is gone: the store is closing.
    Closed,
}

/// Wait up to `idle` for a record, then take every record already waiting, up to `max`.
pub fn next_batch<T>(receiver: &mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize, idle: Duration) -> Batch {
    match receiver.recv_timeout(idle) {
        Ok(record) => batch.push(record),
        Err(mpsc::RecvTimeoutError::Timeout) => return Batch::Idle,
        Err(mpsc::RecvTimeoutError::Disconnected) => return Batch::Closed,
    }
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
    Batch::Ready
}

/// The loop of a writer thread that only commits: whenever records wait, take them all (up to
/// `max`) and hand them to `commit`, which empties the batch and says whether to go on. Ends
/// when every sender is gone.
pub fn commit_batches<T>(receiver: &mpsc::Receiver<T>, max: usize, mut commit: impl FnMut(&mut Vec<T>) -> bool) {
    let mut batch = Vec::with_capacity(max.min(1024));
    loop {
        match next_batch(receiver, &mut batch, max, Duration::from_secs(3600)) {
            Batch::Ready => {
                if !commit(&mut batch) {
                    return;
                }
            }
            Batch::Idle => {}
            Batch::Closed => return,
        }
    }
}

/// The sending end of a writer thread: dropping it lets the writer commit what it holds, and
/// waits for it.
pub struct WriterHandle<T> {
    sender: Option<mpsc::Sender<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> WriterHandle<T> {
    pub fn spawn(name: &str, run: impl FnOnce(mpsc::Receiver<T>) + Send + 'static) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || run(receiver))?;
        Ok(WriterHandle { sender: Some(sender), thread: Some(thread) })
    }

    /// False when the writer has stopped.
    pub fn send(&self, record: T) -> bool {
        self.sender.as_ref().is_some_and(|sender| sender.send(record).is_ok())
    }
}

impl<T> Drop for WriterHandle<T> {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
