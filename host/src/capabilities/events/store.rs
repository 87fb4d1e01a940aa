//! The durable event store: one redb file, one writer thread with group commit (see
//! [`durable`](crate::infra::durable)).
//!
//! Layout: `events` maps a sequence number to the event; three index tables map (bucket, kind,
//! seq), (bucket, agent, seq) and (bucket, correlation, seq) to nothing, so a filtered query
//! walks only its matches. The bucket (seq / 65536) keeps each commit's index inserts within the
//! newest part of each tree: keyed by agent alone, a commit from thousands of agents touched a
//! page per agent (copy-on-write), and indexing cost 5 times the rest of an append.
//! Every event of one commit gets the same timestamp, and timestamps never decrease with the
//! sequence, so `by_time` (one row per commit, time → first seq) turns a time range into a seq
//! range. Retention deletes from the oldest end, in bounded chunks between commits.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use crate::infra::durable::{self, Batch, WriterHandle};

/// (time in ms since the Unix epoch, kind, agent, correlation, payload)
type Row<'a> = (u64, &'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// What one event counts against `retain_bytes`: its strings and payload, and a row's share of
/// the tables and indexes (an estimate: redb's pages hold more).
fn row_bytes(kind: &str, agent: Option<&str>, correlation: Option<&str>, payload: &[u8]) -> u64 {
    (64 + 3 * kind.len() + 2 * agent.map_or(0, str::len) + 2 * correlation.map_or(0, str::len) + payload.len()) as u64
}

const EVENTS: TableDefinition<u64, Row> = TableDefinition::new("events");
/// (seq bucket, value, seq)
type IndexKey<'a> = (u64, &'a str, u64);
const BY_KIND: TableDefinition<IndexKey, ()> = TableDefinition::new("by_kind");
const BY_AGENT: TableDefinition<IndexKey, ()> = TableDefinition::new("by_agent");
const BY_CORRELATION: TableDefinition<IndexKey, ()> = TableDefinition::new("by_correlation");
const BUCKET_BITS: u32 = 12;
/// The layout above; a store written in another one is refused, not misread.
const FORMAT: u64 = 1;

fn index_key(value: &str, seq: u64) -> IndexKey<'_> {
    (seq >> BUCKET_BITS, value, seq)
}
const BY_TIME: TableDefinition<u64, u64> = TableDefinition::new("by_time");

/// Appends taken into one commit at most; bounds the latency of the first one.
const MAX_BATCH: usize = 16 * 1024;
/// How long unawaited records wait for company before they are committed.
const RECORD_LINGER: Duration = Duration::from_millis(50);
/// Events removed per retention pass, so that appends never wait long behind retention.
const RETENTION_CHUNK: usize = 20_000;
/// Rows one query may examine before it returns a partial page with a cursor.
const SCAN_BUDGET: usize = 200_000;
/// Largest page a query returns.
pub const MAX_PAGE: u32 = 1000;

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: String,
    /// The agent that appended it, or that it is about; none for host-wide events.
    pub agent: Option<String>,
    pub correlation: Option<String>,
    pub payload: Vec<u8>,
}

/// An event to append; the store assigns its sequence number and time.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub kind: String,
    /// Shared with the agent's own name: appending copies no string for it.
    pub agent: Option<Arc<str>>,
    pub correlation: Option<String>,
    pub payload: Vec<u8>,
}

/// Filters for [`EventStore::query`]; every set field must match. Results come in ascending
/// sequence order (descending with `newest_first`), starting past `after`.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub kind: Option<String>,
    pub agent: Option<String>,
    pub correlation: Option<String>,
    /// Inclusive lower bound on the event time, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Exclusive upper bound on the event time.
    pub until_ms: Option<u64>,
    /// Continue past this sequence number (the previous page's `next`).
    pub after: Option<u64>,
    pub limit: u32,
    /// Newest first: `after` then continues with older events.
    pub newest_first: bool,
}

/// One page of results; `next` is set when more may follow.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub events: Vec<Event>,
    pub next: Option<u64>,
}

/// How long events are kept; both bounds apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_events: Option<u64>,
    pub max_age: Option<Duration>,
    /// The most the events may take, by [`row_bytes`].
    pub max_bytes: Option<u64>,
    /// How often the age bound is checked when no appends arrive.
    pub check_every: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("event store: {0}")]
    Database(String),
    #[error("the event store has shut down")]
    Closed,
}

impl StoreError {
    fn database(error: impl std::fmt::Display) -> StoreError {
        StoreError::Database(error.to_string())
    }
}

/// Called after each commit with the events it made durable (for subscriptions).
pub type CommitHook = Arc<dyn Fn(Committed<'_>) + Send + Sync>;

/// The events of one commit, borrowed: nothing is copied unless a hook needs it.
pub struct Committed<'a> {
    first_seq: u64,
    time_ms: u64,
    batch: &'a [Append],
}

impl Committed<'_> {
    /// (seq, time, event) of each event in the commit.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &NewEvent)> {
        self.batch.iter().zip(self.first_seq..).map(|(append, seq)| (seq, self.time_ms, &append.event))
    }
}

pub struct Append {
    event: NewEvent,
    ack: Option<oneshot::Sender<Result<u64, StoreError>>>,
}

/// The store's handle: cheap appends from any thread, queries on the caller's thread.
pub struct EventStore {
    db: Arc<Database>,
    writer: WriterHandle<Append>,
}

impl EventStore {
    /// Open (or create) the store at `path` and start its writer. A store left by a killed
    /// process is repaired by redb on open.
    pub fn open(path: &Path, retention: Retention, on_commit: Option<CommitHook>) -> Result<EventStore, StoreError> {
        Self::start(Some(path), retention, on_commit)
    }

    /// A store that lives in memory only (`[events] durable = false`).
    pub fn open_in_memory(retention: Retention, on_commit: Option<CommitHook>) -> Result<EventStore, StoreError> {
        Self::start(None, retention, on_commit)
    }

    fn start(
        path: Option<&Path>,
        retention: Retention,
        on_commit: Option<CommitHook>,
    ) -> Result<EventStore, StoreError> {
        let db = Arc::new(durable::open_database(path).map_err(StoreError::Database)?);
        let mut writer = Writer::new(db.clone(), retention, on_commit)?;
        let writer = WriterHandle::spawn("agora-event-writer", move |receiver| writer.run(receiver))
            .map_err(StoreError::database)?;
        Ok(EventStore { db, writer })
    }

    /// Append and wait until the event is durable; returns its sequence number.
    pub async fn append(&self, event: NewEvent) -> Result<u64, StoreError> {
        let (ack, acked) = oneshot::channel();
        self.send(Append { event, ack: Some(ack) })?;
        acked.await.map_err(|_| StoreError::Closed)?
    }

    /// Append without waiting (host lifecycle events): durable with the next commit, which a
    /// batch of records alone delays by at most 50 ms.
    pub fn record(&self, event: NewEvent) {
        let _ = self.send(Append { event, ack: None });
    }

    fn send(&self, append: Append) -> Result<(), StoreError> {
        if self.writer.send(append) { Ok(()) } else { Err(StoreError::Closed) }
    }

    /// Events in the store now.
    pub fn len(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read().map_err(StoreError::database)?;
        match read.open_table(EVENTS) {
            Ok(table) => table.len().map_err(StoreError::database),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(StoreError::database(e)),
        }
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Events matching `query`, oldest first (or newest first). The time bounds become a
    /// sequence range; the most selective index among the filters drives the scan; a scan stops
    /// after a fixed number of rows and returns a cursor.
    pub fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE) as usize;
        let read = self.db.begin_read().map_err(StoreError::database)?;
        let events = match read.open_table(EVENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Page::default()),
            Err(e) => return Err(StoreError::database(e)),
        };
        let Some(last) = events.last().map_err(StoreError::database)?.map(|(seq, _)| seq.value()) else {
            return Ok(Page::default());
        };
        let by_time = read.open_table(BY_TIME).map_err(StoreError::database)?;
        // The first sequence number committed at or after `time`.
        let first_at = |time: u64| -> Result<Option<u64>, StoreError> {
            let found = by_time
                .range(time..)
                .map_err(StoreError::database)?
                .next()
                .transpose()
                .map_err(StoreError::database)?;
            Ok(found.map(|(_, seq)| seq.value()))
        };
        let (mut low, mut high) = (0, last);
        if let Some(since) = query.since_ms {
            match first_at(since)? {
                Some(seq) => low = seq,
                None => return Ok(Page::default()),
            }
        }
        if let Some(until) = query.until_ms
            && let Some(seq) = first_at(until)?
        {
            high = high.min(seq.saturating_sub(1));
        }
        match (query.after, query.newest_first) {
            (Some(after), false) => low = low.max(after.saturating_add(1)),
            (Some(after), true) => high = high.min(after.saturating_sub(1)),
            (None, _) => {}
        }
        if low > high || (query.newest_first && query.after == Some(0)) {
            return Ok(Page::default());
        }

        let mut page = Page::default();
        let mut scanned = 0usize;
        let mut last_seen = None;
        let mut visit = |seq: u64, row: Row| -> std::ops::ControlFlow<()> {
            scanned += 1;
            last_seen = Some(seq);
            let (time_ms, kind, agent, correlation, payload) = row;
            let matches = query.kind.as_deref().is_none_or(|k| k == kind)
                && query.agent.as_deref().is_none_or(|a| Some(a) == agent)
                && query.correlation.as_deref().is_none_or(|c| Some(c) == correlation);
            if matches {
                page.events.push(Event {
                    seq,
                    time_ms,
                    kind: kind.to_string(),
                    agent: agent.map(str::to_string),
                    correlation: correlation.map(str::to_string),
                    payload: payload.to_vec(),
                });
            }
            if page.events.len() >= limit || scanned >= SCAN_BUDGET {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        };
        let index = [(BY_CORRELATION, &query.correlation), (BY_AGENT, &query.agent), (BY_KIND, &query.kind)]
            .into_iter()
            .find_map(|(table, key)| key.as_deref().map(|key| (table, key)));
        let mut exhausted = true;
        match index {
            Some((table, key)) => {
                let index = read.open_table(table).map_err(StoreError::database)?;
                let buckets = (low >> BUCKET_BITS)..=(high >> BUCKET_BITS);
                let buckets: Box<dyn Iterator<Item = u64>> =
                    if query.newest_first { Box::new(buckets.rev()) } else { Box::new(buckets) };
                'buckets: for bucket in buckets {
                    let from = index_key(key, low.max(bucket << BUCKET_BITS));
                    let to = index_key(key, high.min(((bucket + 1) << BUCKET_BITS) - 1));
                    let range = index.range(from..=to).map_err(StoreError::database)?;
                    let range: Box<dyn Iterator<Item = _>> =
                        if query.newest_first { Box::new(range.rev()) } else { Box::new(range) };
                    for entry in range {
                        let (entry, _) = entry.map_err(StoreError::database)?;
                        let seq = entry.value().2;
                        let Some(row) = events.get(seq).map_err(StoreError::database)? else { continue };
                        if visit(seq, row.value()).is_break() {
                            exhausted = false;
                            break 'buckets;
                        }
                    }
                }
            }
            None => {
                let range = events.range(low..=high).map_err(StoreError::database)?;
                let range: Box<dyn Iterator<Item = _>> =
                    if query.newest_first { Box::new(range.rev()) } else { Box::new(range) };
                for entry in range {
                    let (seq, row) = entry.map_err(StoreError::database)?;
                    if visit(seq.value(), row.value()).is_break() {
                        exhausted = false;
                        break;
                    }
                }
            }
        }
        // A cursor when the scan stopped early (full page, scan budget) with more to look at.
        let more = if query.newest_first { last_seen > Some(low) } else { last_seen < Some(high) };
        page.next = if exhausted || !more { None } else { last_seen };
        Ok(page)
    }
}

struct Writer {
    db: Arc<Database>,
    retention: Retention,
    on_commit: Option<CommitHook>,
    last_seq: u64,
    last_time_ms: u64,
    /// What the stored events take, by [`row_bytes`].
    stored_bytes: u64,
    /// Index rows of the first retained event's commit time exists; see `retain`.
    last_retention: std::time::Instant,
}

impl Writer {
    fn new(db: Arc<Database>, retention: Retention, on_commit: Option<CommitHook>) -> Result<Writer, StoreError> {
        // Create the tables, so that readers never see a store without them.
        let write = db.begin_write().map_err(StoreError::database)?;
        durable::check_format(&write, "event store", FORMAT).map_err(StoreError::Database)?;
        let last_seq = {
            let events = write.open_table(EVENTS).map_err(StoreError::database)?;
            for table in [BY_KIND, BY_AGENT, BY_CORRELATION] {
                write.open_table(table).map_err(StoreError::database)?;
            }
            write.open_table(BY_TIME).map_err(StoreError::database)?;
            let last = match events.last().map_err(StoreError::database)? {
                Some((seq, row)) => (seq.value(), row.value().0),
                None => (0, 0),
            };
            // One pass over the store at start (about a second per million events).
            let mut stored = 0;
            if retention.max_bytes.is_some() {
                for entry in events.iter().map_err(StoreError::database)? {
                    let (_, row) = entry.map_err(StoreError::database)?;
                    let (_, kind, agent, correlation, payload) = row.value();
                    stored += row_bytes(kind, agent, correlation, payload);
                }
            }
            (last.0, last.1, stored)
        };
        let (last_seq, last_time_ms, stored_bytes) = last_seq;
        write.commit().map_err(StoreError::database)?;
        Ok(Writer {
            db,
            retention,
            on_commit,
            last_seq,
            last_time_ms,
            stored_bytes,
            last_retention: std::time::Instant::now(),
        })
    }

    fn run(&mut self, receiver: mpsc::Receiver<Append>) {
        let mut batch = Vec::with_capacity(1024);
        loop {
            match durable::next_batch(&receiver, &mut batch, MAX_BATCH, self.retention.check_every) {
                Batch::Ready => {}
                Batch::Idle => {
                    self.retain();
                    continue;
                }
                Batch::Closed => return,
            }
            // Nobody waits on records (host lifecycle events): gather more for a moment, so
            // that a storm of starts and exits costs a few commits rather than one per event.
            if batch.iter().all(|append| append.ack.is_none()) {
                let deadline = std::time::Instant::now() + RECORD_LINGER;
                while batch.len() < MAX_BATCH {
                    match receiver.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                        Ok(append) => {
                            let awaited = append.ack.is_some();
                            batch.push(append);
                            if awaited {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            self.commit(&mut batch);
            if self.retention_due() || self.over_bytes() {
                self.retain();
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<Append>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let time_ms = now.max(self.last_time_ms);
        let first_seq = self.last_seq + 1;
        let written = self.write(batch, first_seq, time_ms);
        match written {
            Ok(()) => {
                self.last_seq += batch.len() as u64;
                for append in batch.iter() {
                    let event = &append.event;
                    self.stored_bytes +=
                        row_bytes(&event.kind, event.agent.as_deref(), event.correlation.as_deref(), &event.payload);
                }
                self.last_time_ms = time_ms;
                // Subscribers are told before the appenders: once an append returns, its
                // notifications are queued (or counted as dropped), so an appender that exits
                // right after cannot outrun them.
                if let Some(hook) = &self.on_commit {
                    hook(Committed { first_seq, time_ms, batch });
                }
                for (append, seq) in batch.iter_mut().zip(first_seq..) {
                    if let Some(ack) = append.ack.take() {
                        let _ = ack.send(Ok(seq));
                    }
                }
                batch.clear();
            }
            Err(error) => {
                tracing::error!(event = "event_store_failed", %error, lost = batch.len(), "event store commit failed");
                for append in batch.drain(..) {
                    if let Some(ack) = append.ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    fn write(&self, batch: &[Append], first_seq: u64, time_ms: u64) -> Result<(), StoreError> {
        let mut write = self.db.begin_write().map_err(StoreError::database)?;
        // Recovery after a crash then needs no full scan of the file.
        write.set_quick_repair(true);
        {
            let mut events = write.open_table(EVENTS).map_err(StoreError::database)?;
            let mut by_kind = write.open_table(BY_KIND).map_err(StoreError::database)?;
            let mut by_agent = write.open_table(BY_AGENT).map_err(StoreError::database)?;
            let mut by_correlation = write.open_table(BY_CORRELATION).map_err(StoreError::database)?;
            for (append, seq) in batch.iter().zip(first_seq..) {
                let event = &append.event;
                let row: Row =
                    (time_ms, &event.kind, event.agent.as_deref(), event.correlation.as_deref(), &event.payload);
                events.insert(seq, row).map_err(StoreError::database)?;
                by_kind.insert(index_key(&event.kind, seq), ()).map_err(StoreError::database)?;
                if let Some(agent) = &event.agent {
                    by_agent.insert(index_key(agent, seq), ()).map_err(StoreError::database)?;
                }
                if let Some(correlation) = &event.correlation {
                    by_correlation.insert(index_key(correlation, seq), ()).map_err(StoreError::database)?;
                }
            }
            if time_ms > self.last_time_ms || self.last_seq == 0 {
                let mut by_time = write.open_table(BY_TIME).map_err(StoreError::database)?;
                by_time.insert(time_ms, first_seq).map_err(StoreError::database)?;
            }
        }
        write.commit().map_err(StoreError::database)
    }

    fn retention_due(&self) -> bool {
        self.last_retention.elapsed() >= self.retention.check_every
    }

    fn over_bytes(&self) -> bool {
        self.retention.max_bytes.is_some_and(|max| self.stored_bytes > max)
    }

    /// Delete what the retention bounds exclude, a chunk per commit until none is left.
    fn retain(&mut self) {
        self.last_retention = std::time::Instant::now();
        loop {
            match self.retain_chunk() {
                Ok(0) => return,
                Ok(removed) => {
                    tracing::debug!(event = "event_retention", removed, "old events removed");
                }
                Err(error) => {
                    tracing::error!(event = "event_store_failed", %error, "event retention failed");
                    return;
                }
            }
        }
    }

    /// The first sequence number to keep, per the bounds.
    fn retained_from(&self, read: &redb::WriteTransaction) -> Result<u64, StoreError> {
        let mut keep_from = 0;
        if let Some(max) = self.retention.max_events {
            keep_from = (self.last_seq + 1).saturating_sub(max);
        }
        if let Some(age) = self.retention.max_age {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let cutoff = now.saturating_sub(age.as_millis() as u64);
            let by_time = read.open_table(BY_TIME).map_err(StoreError::database)?;
            let first_young = by_time.range(cutoff..).map_err(StoreError::database)?.next();
            let from = match first_young {
                Some(entry) => entry.map_err(StoreError::database)?.1.value(),
                None => self.last_seq + 1,
            };
            keep_from = keep_from.max(from);
        }
        if let Some(max) = self.retention.max_bytes
            && self.stored_bytes > max
        {
            // The oldest go until the rest fits.
            let events = read.open_table(EVENTS).map_err(StoreError::database)?;
            let mut left = self.stored_bytes;
            let mut from = self.last_seq + 1;
            for entry in events.iter().map_err(StoreError::database)? {
                let (seq, row) = entry.map_err(StoreError::database)?;
                if left <= max {
                    from = seq.value();
                    break;
                }
                let (_, kind, agent, correlation, payload) = row.value();
                left -= row_bytes(kind, agent, correlation, payload).min(left);
            }
            keep_from = keep_from.max(from);
        }
        Ok(keep_from)
    }

    fn retain_chunk(&mut self) -> Result<usize, StoreError> {
        let write = self.db.begin_write().map_err(StoreError::database)?;
        let mut freed = 0;
        let removed = {
            let keep_from = self.retained_from(&write)?;
            let mut events = write.open_table(EVENTS).map_err(StoreError::database)?;
            let mut doomed = Vec::new();
            for entry in events.range(..keep_from).map_err(StoreError::database)?.take(RETENTION_CHUNK) {
                let (seq, row) = entry.map_err(StoreError::database)?;
                let (_, kind, agent, correlation, payload) = row.value();
                freed += row_bytes(kind, agent, correlation, payload);
                doomed.push((
                    seq.value(),
                    kind.to_string(),
                    agent.map(str::to_string),
                    correlation.map(str::to_string),
                ));
            }
            let Some(&(last_doomed, ..)) = doomed.last() else { return Ok(0) };
            let mut by_kind = write.open_table(BY_KIND).map_err(StoreError::database)?;
            let mut by_agent = write.open_table(BY_AGENT).map_err(StoreError::database)?;
            let mut by_correlation = write.open_table(BY_CORRELATION).map_err(StoreError::database)?;
            for (seq, kind, agent, correlation) in &doomed {
                by_kind.remove(index_key(kind, *seq)).map_err(StoreError::database)?;
                if let Some(agent) = agent {
                    by_agent.remove(index_key(agent, *seq)).map_err(StoreError::database)?;
                }
                if let Some(correlation) = correlation {
                    by_correlation.remove(index_key(correlation, *seq)).map_err(StoreError::database)?;
                }
            }
            events.retain_in(..=last_doomed, |_, _| false).map_err(StoreError::database)?;
            // Time rows pointing into the deleted range go; the oldest survivor's commit gets
            // a row of its own, so that a time-range query still finds it.
            let mut by_time = write.open_table(BY_TIME).map_err(StoreError::database)?;
            by_time.retain(|_, seq| seq > last_doomed).map_err(StoreError::database)?;
            if let Some((seq, row)) =
                events.first().map_err(StoreError::database)?.map(|(s, r)| (s.value(), r.value().0))
            {
                let time_ms = row;
                let known = by_time.get(time_ms).map_err(StoreError::database)?.map(|s| s.value());
                if known.is_none_or(|known| known > seq) {
                    by_time.insert(time_ms, seq).map_err(StoreError::database)?;
                }
            }
            doomed.len()
        };
        write.commit().map_err(StoreError::database)?;
        self.stored_bytes = self.stored_bytes.saturating_sub(freed);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, agent: &str, correlation: Option<&str>) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            agent: Some(agent.into()),
            correlation: correlation.map(Into::into),
            payload: kind.as_bytes().to_vec(),
        }
    }

    fn keep_all() -> Retention {
        Retention { max_events: None, max_age: None, max_bytes: None, check_every: Duration::from_secs(3600) }
    }

    #[tokio::test]
    async fn query_by_each_filter_with_paging() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(&dir.path().join("e.redb"), keep_all(), None).unwrap();
        for i in 0..30u32 {
            let kind = if i % 3 == 0 { "order" } else { "tick" };
            let agent = if i % 2 == 0 { "a" } else { "b" };
            let correlation = (i == 7).then_some("c-7");
            store.append(event(kind, agent, correlation)).await.unwrap();
        }
        let all = store.query(&Query { limit: 100, ..Default::default() }).unwrap();
        assert_eq!(all.events.len(), 30);
        assert_eq!(all.next, None);

        let orders = store.query(&Query { kind: Some("order".into()), limit: 100, ..Default::default() }).unwrap();
        assert_eq!(orders.events.len(), 10);
        assert!(orders.events.iter().all(|e| e.kind == "order"));

        let both = Query { kind: Some("order".into()), agent: Some("a".into()), limit: 100, ..Default::default() };
        assert_eq!(store.query(&both).unwrap().events.len(), 5);

        let by_correlation = Query { correlation: Some("c-7".into()), limit: 10, ..Default::default() };
        let found = store.query(&by_correlation).unwrap();
        assert_eq!(found.events.len(), 1);
        assert_eq!(found.events[0].seq, 8);

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.query(&Query { agent: Some("b".into()), after, limit: 4, ..Default::default() }).unwrap();
            seen.extend(page.events.iter().map(|e| e.seq));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (1..=15).map(|i| i * 2).collect::<Vec<u64>>());

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let query = Query { kind: Some("order".into()), after, limit: 3, newest_first: true, ..Default::default() };
            let page = store.query(&query).unwrap();
            seen.extend(page.events.iter().map(|e| e.seq));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, vec![28, 25, 22, 19, 16, 13, 10, 7, 4, 1]);
        let newest = store.query(&Query { limit: 1, newest_first: true, ..Default::default() }).unwrap();
        assert_eq!((newest.events[0].seq, newest.next), (30, Some(30)));
    }

    #[tokio::test]
    async fn byte_retention_keeps_the_newest_that_fit_and_counts_a_reopened_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.redb");
        // 1 KiB payloads: each counts 1024 + 64 + 3 × 3 ("big") + 2 × 1 ("a") = 1,099 bytes.
        let each = row_bytes("big", Some("a"), None, &[0; 1024]);
        let retention = Retention {
            max_events: None,
            max_age: None,
            max_bytes: Some(20 * each),
            check_every: Duration::from_secs(3600),
        };
        let big = || NewEvent { payload: vec![7; 1024], ..event("big", "a", None) };
        {
            let store = EventStore::open(&path, retention, None).unwrap();
            for _ in 0..100 {
                store.append(big()).await.unwrap();
            }
            // Retention runs right after the commit that passes the bound.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while store.len().unwrap() > 20 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(store.len().unwrap(), 20, "20 events fit the bound");
            let kept = store.query(&Query { limit: 100, ..Default::default() }).unwrap();
            assert_eq!(kept.events.first().map(|e| e.seq), Some(81), "the newest are kept");
        }
        // Reopened with a smaller bound, the store counts what it holds and trims it.
        let smaller = Retention { max_bytes: Some(5 * each), ..retention };
        let store = EventStore::open(&path, smaller, None).unwrap();
        store.append(big()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.len().unwrap() > 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(store.len().unwrap(), 5);
    }

    #[tokio::test]
    async fn time_ranges_and_count_retention() {
        let dir = tempfile::tempdir().unwrap();
        let retention =
            Retention { max_events: Some(10), max_age: None, max_bytes: None, check_every: Duration::from_millis(1) };
        let store = EventStore::open(&dir.path().join("e.redb"), retention, None).unwrap();
        for _ in 0..5 {
            store.append(event("early", "a", None)).await.unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        let middle = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..5 {
            store.append(event("late", "a", None)).await.unwrap();
        }
        let late = store.query(&Query { since_ms: Some(middle), limit: 100, ..Default::default() }).unwrap();
        assert!(late.events.iter().all(|e| e.kind == "late"), "{late:?}");
        assert_eq!(late.events.len(), 5);
        let early = store.query(&Query { until_ms: Some(middle), limit: 100, ..Default::default() }).unwrap();
        assert_eq!(early.events.len(), 5);
        assert!(early.events.iter().all(|e| e.kind == "early"));

        for _ in 0..20 {
            store.append(event("more", "a", None)).await.unwrap();
        }
        // One more commit triggers the due retention pass.
        std::thread::sleep(Duration::from_millis(5));
        store.append(event("more", "a", None)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.len().unwrap() > 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(store.len().unwrap(), 10);
        let kept = store.query(&Query { agent: Some("a".into()), limit: 100, ..Default::default() }).unwrap();
        assert_eq!(kept.events.first().map(|e| e.seq), Some(22));
        assert_eq!(
            store.query(&Query { kind: Some("early".into()), limit: 100, ..Default::default() }).unwrap().events.len(),
            0
        );
    }
}
