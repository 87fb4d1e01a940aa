//! Named locks with leases, fencing tokens and FIFO waiters.
//!
//! Each lock's state lives in its own entry behind its own mutex, never held across an await:
//! there is no lock manager task, and two locks share nothing but a read-mostly table. Nothing runs in the background either: an expired lease is noticed by the next
//! operation on the lock, and a waiter sleeps until the earliest lease ends (or its own
//! deadline), then expires what is due and hands the lock on itself.
//!
//! Tokens: a lock's tokens strictly increase. Idle locks' entries are swept away every few
//! seconds (so that one-off names do not stay resident), and a new entry starts above every
//! token a swept entry gave. The sweep, not each release, touches the shared floor: a release
//! that did would make two agents on two unrelated locks contend for one cache line.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Leases are timed with the TSC clock (a few ns a read; the system clock costs ~25 ns here and
/// was a sixth of a lock cycle). Waiters convert to tokio's clock only to sleep.
use quanta::Instant;
use smallvec::SmallVec;
use tokio::sync::oneshot;

use crate::infra::hashers::{IdHasher, NameHasher};
use crate::messaging::AgentId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    Busy,
    Timeout,
    NotHeld,
}

struct Holder {
    agent: AgentId,
    token: u64,
    mode: Mode,
    expires: Instant,
}

struct Waiter {
    agent: AgentId,
    mode: Mode,
    ttl: Duration,
    granted: oneshot::Sender<u64>,
}

/// One lock, sized to a cache line with its mutex: the usual single holder sits inline and the
/// waiter queue, empty for most locks, behind a pointer.
#[derive(Default)]
struct LockState {
    /// The last token this entry gave.
    token: u64,
    holders: SmallVec<[Holder; 1]>,
    #[expect(clippy::box_collection, reason = "one pointer, not a 32-byte queue, in every entry")]
    waiters: Option<Box<VecDeque<Waiter>>>,
}

const _: () = assert!(std::mem::size_of::<Mutex<LockState>>() <= 64, "a lock entry fits a cache line");

/// The token of an entry the sweep took out of the table (no lock gives that many).
const RETIRED: u64 = u64::MAX;

impl LockState {
    fn is_retired(&self) -> bool {
        self.token == RETIRED
    }

    fn retire(&mut self) {
        self.token = RETIRED;
    }

    fn nobody_waits(&self) -> bool {
        self.waiters.as_ref().is_none_or(|w| w.is_empty())
    }

    fn enqueue(&mut self, waiter: Waiter) {
        self.waiters.get_or_insert_default().push_back(waiter);
    }

    fn compatible(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => self.holders.is_empty(),
            Mode::Shared => self.holders.iter().all(|h| h.mode == Mode::Shared),
        }
    }

    fn grant(&mut self, agent: AgentId, mode: Mode, ttl: Duration, now: Instant) -> u64 {
        self.token += 1;
        self.holders.push(Holder { agent, token: self.token, mode, expires: now + ttl });
        self.token
    }

    /// Drop expired leases, then hand the lock to waiters in order for as long as they fit.
    fn settle(&mut self, now: Instant) {
        self.holders.retain(|h| h.expires > now);
        let Some(mut waiters) = self.waiters.take() else { return };
        while let Some(front) = waiters.front() {
            if front.granted.is_closed() {
                // Gave up (timeout) or exited while waiting.
                waiters.pop_front();
                continue;
            }
            if !self.compatible(front.mode) {
                break;
            }
            let waiter = waiters.pop_front().expect("a front waiter");
            let token = self.token + 1;
            if waiter.granted.send(token).is_ok() {
                self.grant(waiter.agent, waiter.mode, waiter.ttl, now);
            }
        }
        self.waiters = Some(waiters);
    }

    fn earliest_expiry(&self) -> Option<Instant> {
        self.holders.iter().map(|h| h.expires).min()
    }

    fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.nobody_waits()
    }
}

/// A wait in progress. Dropped before it returned (its agent was killed meanwhile), it refuses
/// a grant still in flight, or gives back one that arrived: a grant never outlives its waiter.
struct Waiting<'a> {
    locks: &'a Locks,
    name: &'a str,
    agent: AgentId,
    grant: Option<oneshot::Receiver<u64>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut grant) = self.grant.take() {
            grant.close();
            if let Ok(token) = grant.try_recv() {
                let _ = self.locks.release(self.name, self.agent, token);
            }
        }
    }
}

/// Every lock of one host, by a seeded 64-bit hash of its name: a lookup then compares no
/// strings (a collision would make two names one lock: more exclusion, never less).
///
/// The table is read-mostly (an entry is added on a name's first use and removed by the sweep),
/// so it is a lock-free map whose lookups write nothing shared, and each lock has its own mutex.
/// A sharded map's shard locks were written by every operation: two agents on unrelated locks
/// then passed the shard's cache line between their cores, and 10,000 locks ran at a third of
/// the speed of one lock per agent.
pub struct Locks {
    table: papaya::HashMap<u64, Mutex<LockState>, IdHasher>,
    names: NameHasher,
    /// Above every token a swept entry gave.
    floor: AtomicU64,
}

impl Default for Locks {
    fn default() -> Self {
        Locks {
            table: papaya::HashMap::builder()
                .hasher(IdHasher::default())
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            names: NameHasher::default(),
            floor: AtomicU64::new(0),
        }
    }
}

fn lock(cell: &Mutex<LockState>) -> MutexGuard<'_, LockState> {
    // Nothing panics while holding a lock's state; a poisoned one is still consistent.
    cell.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Locks {
    fn key(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.names.hash_one(name)
    }

    /// Run `change` on the lock's state, creating the entry on first use.
    fn with_entry<R>(&self, name: &str, change: impl FnOnce(&mut LockState) -> R) -> R {
        let key = self.key(name);
        let table = self.table.pin();
        loop {
            let cell = table.get_or_insert_with(key, || {
                Mutex::new(LockState { token: self.floor.load(Ordering::SeqCst), ..LockState::default() })
            });
            let mut state = lock(cell);
            // Swept while we waited for it; it is out of the table already, so the next
            // lookup finds or makes its successor.
            if !state.is_retired() {
                return change(&mut state);
            }
        }
    }

    /// Run `change` on the state of a lock that has an entry.
    fn with_existing<R>(&self, name: &str, change: impl FnOnce(&mut LockState) -> R) -> Option<R> {
        let table = self.table.pin();
        let mut state = lock(table.get(&self.key(name))?);
        (!state.is_retired()).then(|| change(&mut state))
    }

    /// A lock table, swept by the housekeeping thread while it lives.
    pub fn start() -> std::sync::Arc<Locks> {
        let locks = std::sync::Arc::new(Locks::default());
        let every = crate::capabilities::rate_limits::SWEEP_EVERY;
        crate::infra::housekeeping::global().sweep(every, std::sync::Arc::downgrade(&locks), Locks::sweep);
        locks
    }

    /// Remove the entries of idle locks (expired leases count as gone), remembering their last
    /// tokens. The floor is raised and the entry removed while its mutex is held, so whoever
    /// locks the entry after sees it retired and makes a new entry that starts above it.
    pub fn sweep(&self) {
        let now = Instant::now();
        let table = self.table.pin();
        for (key, cell) in table.iter() {
            let mut state = lock(cell);
            if state.is_retired() {
                continue;
            }
            state.settle(now);
            if state.is_idle() {
                self.floor.fetch_max(state.token, Ordering::SeqCst);
                state.retire();
                table.remove(key);
            }
        }
    }

    /// Take the lock now if it is free for `mode` and nobody waits for it.
    pub fn try_acquire(&self, name: &str, agent: AgentId, mode: Mode, ttl: Duration) -> Result<u64, LockError> {
        let now = Instant::now();
        self.with_entry(name, |state| {
            state.settle(now);
            if state.nobody_waits() && state.compatible(mode) {
                Ok(state.grant(agent, mode, ttl, now))
            } else {
                Err(LockError::Busy)
            }
        })
    }

    /// Wait (suspending only the caller) until the lock is granted or `timeout` passes.
    pub async fn acquire(
        &self,
        name: &str,
        agent: AgentId,
        mode: Mode,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<u64, LockError> {
        let deadline = Instant::now() + timeout;
        let (granted, grant) = oneshot::channel();
        let queued = self.with_entry(name, |state| {
            let now = Instant::now();
            state.settle(now);
            if state.nobody_waits() && state.compatible(mode) {
                return Err(state.grant(agent, mode, ttl, now));
            }
            state.enqueue(Waiter { agent, mode, ttl, granted });
            Ok(state.earliest_expiry().map_or(deadline, |expiry| expiry.min(deadline)))
        });
        let mut wake_at = match queued {
            Ok(wake_at) => wake_at,
            Err(token) => return Ok(token),
        };
        let mut waiting = Waiting { locks: self, name, agent, grant: Some(grant) };
        let grant = waiting.grant.as_mut().expect("set above");
        loop {
            let sleep = wake_at.saturating_duration_since(Instant::now());
            tokio::select! {
                token = &mut *grant => {
                    waiting.grant = None;
                    return token.map_err(|_| LockError::Timeout);
                }
                _ = tokio::time::sleep(sleep) => {}
            }
            let now = Instant::now();
            let next_expiry = self.with_entry(name, |state| {
                state.settle(now);
                state.earliest_expiry()
            });
            if let Ok(token) = grant.try_recv() {
                waiting.grant = None;
                return Ok(token);
            }
            if now >= deadline {
                // Closing first: a grant either arrived before (and is taken) or never comes.
                grant.close();
                let outcome = grant.try_recv().map_err(|_| LockError::Timeout);
                waiting.grant = None;
                if outcome.is_err() {
                    self.with_existing(name, |state| state.settle(Instant::now()));
                }
                return outcome;
            }
            wake_at = next_expiry.map_or(deadline, |expiry| expiry.min(deadline));
        }
    }

    /// Extend a grant to `ttl` from now.
    pub fn renew(&self, name: &str, agent: AgentId, token: u64, ttl: Duration) -> Result<(), LockError> {
        let now = Instant::now();
        self.with_existing(name, |state| {
            state.settle(now);
            let holder =
                state.holders.iter_mut().find(|h| h.token == token && h.agent == agent).ok_or(LockError::NotHeld)?;
            holder.expires = now + ttl;
            Ok(())
        })
        .unwrap_or(Err(LockError::NotHeld))
    }

    pub fn release(&self, name: &str, agent: AgentId, token: u64) -> Result<(), LockError> {
        self.with_existing(name, |state| {
            let before = state.holders.len();
            state.holders.retain(|h| !(h.token == token && h.agent == agent));
            let released = state.holders.len() != before;
            state.settle(Instant::now());
            if released { Ok(()) } else { Err(LockError::NotHeld) }
        })
        .unwrap_or(Err(LockError::NotHeld))
    }

    /// Whether `agent` still holds the grant `token` (its lease has not run out).
    pub fn renew_check(&self, name: &str, agent: AgentId, token: u64) -> bool {
        let now = Instant::now();
        self.with_existing(name, |state| {
            state.holders.iter().any(|h| h.token == token && h.agent == agent && h.expires > now)
        })
        .unwrap_or(false)
    }

    /// An exiting agent's grants end at once; its waits ended with its task.
    pub fn release_all(&self, agent: AgentId, held: &[(String, u64)]) {
        for (name, token) in held {
            let _ = self.release(name, agent, *token);
        }
    }

    /// Locks with an entry now (held, waited for, or not yet tidied).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn exclusive_shared_fifo_and_tokens() {
        let locks = Locks::default();
        let first = locks.try_acquire("l", 1, Mode::Shared, LONG).unwrap();
        let second = locks.try_acquire("l", 2, Mode::Shared, LONG).unwrap();
        assert!(second > first, "tokens increase");
        assert_eq!(locks.try_acquire("l", 3, Mode::Exclusive, LONG), Err(LockError::Busy));
        // A writer waits; a reader that comes later waits behind it (no writer starvation).
        let writer = locks.acquire("l", 3, Mode::Exclusive, LONG, Duration::from_secs(5));
        tokio::pin!(writer);
        assert!(futures_util::poll!(writer.as_mut()).is_pending());
        assert_eq!(locks.try_acquire("l", 4, Mode::Shared, LONG), Err(LockError::Busy));
        locks.release("l", 1, first).unwrap();
        assert!(futures_util::poll!(writer.as_mut()).is_pending());
        locks.release("l", 2, second).unwrap();
        let token = writer.await.unwrap();
        assert!(token > second);
        assert_eq!(locks.release("l", 2, second), Err(LockError::NotHeld));
        locks.release("l", 3, token).unwrap();
        locks.sweep();
        assert!(locks.is_empty(), "an idle lock's entry is swept");
        let again = locks.try_acquire("l", 5, Mode::Exclusive, LONG).unwrap();
        assert!(again > token, "tokens keep increasing across a removed entry");
    }

    #[tokio::test]
    async fn leases_expire_and_waiters_time_out() {
        let locks = Locks::default();
        let token = locks.try_acquire("l", 1, Mode::Exclusive, Duration::from_secs(5)).unwrap();
        assert_eq!(
            locks.acquire("l", 2, Mode::Exclusive, LONG, Duration::from_millis(100)).await,
            Err(LockError::Timeout)
        );
        locks.renew("l", 1, token, Duration::from_millis(500)).unwrap();
        let renewed = Instant::now();
        let next = locks.acquire("l", 2, Mode::Exclusive, LONG, Duration::from_secs(30)).await.unwrap();
        assert!(renewed.elapsed() >= Duration::from_millis(500), "granted only when the renewed lease ended");
        assert!(next > token);
        assert_eq!(locks.renew("l", 1, token, LONG), Err(LockError::NotHeld));
        assert_eq!(locks.release("l", 1, token), Err(LockError::NotHeld));
    }

    /// Randomized interleavings: 16 tasks on 2 worker threads take, wait for, renew and release
    /// 3 locks in random modes with random timeouts, some waits cancelled midway, while a sweep
    /// keeps retiring idle entries. At every grant
    /// the checker verifies exclusion (a writer alone, readers only with readers), and that an
    /// exclusive grant's token exceeds every token released before it.
    #[test]
    fn random_interleavings_keep_exclusion_and_token_order() {
        use rand::{Rng, SeedableRng};
        use std::sync::Mutex;

        #[derive(Default)]
        struct Occupancy {
            readers: u32,
            writers: u32,
            max_released: u64,
        }

        for seed in 0..8u64 {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let locks = std::sync::Arc::new(Locks::default());
            let occupancy: std::sync::Arc<Vec<Mutex<Occupancy>>> =
                std::sync::Arc::new((0..3).map(|_| Mutex::default()).collect());
            runtime.block_on(async {
                let mut tasks = Vec::new();
                for agent in 0..16u64 {
                    let (locks, occupancy) = (locks.clone(), occupancy.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + agent);
                        for _ in 0..200 {
                            let which = rng.random_range(0..3usize);
                            let name = format!("lock-{which}");
                            let mode = if rng.random_bool(0.5) { Mode::Shared } else { Mode::Exclusive };
                            let wait = Duration::from_micros(rng.random_range(0..2000));
                            let granted = if rng.random_bool(0.3) {
                                locks.try_acquire(&name, agent, mode, LONG).ok()
                            } else if rng.random_bool(0.2) {
                                // A wait abandoned midway unless granted by then, as when
                                // its agent is killed.
                                let abandoned =
                                    tokio::time::timeout(wait / 2, locks.acquire(&name, agent, mode, LONG, wait));
                                abandoned.await.ok().and_then(Result::ok)
                            } else {
                                locks.acquire(&name, agent, mode, LONG, wait).await.ok()
                            };
                            let Some(token) = granted else { continue };
                            {
                                let mut seen = occupancy[which].lock().unwrap();
                                match mode {
                                    Mode::Exclusive => {
                                        assert_eq!(
                                            (seen.readers, seen.writers),
                                            (0, 0),
                                            "seed {seed}: a writer not alone"
                                        );
                                        assert!(token > seen.max_released, "seed {seed}: token order");
                                        seen.writers += 1;
                                    }
                                    Mode::Shared => {
                                        assert_eq!(seen.writers, 0, "seed {seed}: a reader beside a writer");
                                        seen.readers += 1;
                                    }
                                }
                            }
                            if rng.random_bool(0.2) {
                                locks.renew(&name, agent, token, LONG).unwrap();
                            }
                            tokio::task::yield_now().await;
                            {
                                let mut seen = occupancy[which].lock().unwrap();
                                match mode {
                                    Mode::Exclusive => seen.writers -= 1,
                                    Mode::Shared => seen.readers -= 1,
                                }
                                seen.max_released = seen.max_released.max(token);
                            }
                            locks.release(&name, agent, token).unwrap();
                        }
                    }));
                }
                // The sweep retires idle entries under the tasks' feet.
                let sweeping = {
                    let locks = locks.clone();
                    tokio::spawn(async move {
                        loop {
                            locks.sweep();
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    })
                };
                for task in tasks {
                    task.await.unwrap();
                }
                // Abort takes effect at the sweeper's next await: wait for it, or a sweep still
                // running on the other worker races the final check below.
                sweeping.abort();
                let _ = sweeping.await;
            });
            drop(runtime);
            locks.sweep();
            let left: Vec<(usize, usize, Vec<u64>)> = locks
                .table
                .pin()
                .values()
                .map(|cell| {
                    let e = lock(cell);
                    let waiting = e.waiters.as_ref().map_or(0, |w| w.len());
                    (e.holders.len(), waiting, e.holders.iter().map(|h| h.agent).collect())
                })
                .collect();
            assert!(locks.is_empty(), "seed {seed}: every lock idle at the end: {left:?}");
        }
    }
}
