//! One thread for every periodic sweep of the process: keyed rate limiters and outbound
//! breakers forgetting idle keys, expired lock leases and abandoned barriers, the metrics
//! recorder's upkeep. A sweep holds its table weakly and ends with it, so a host that is dropped
//! (tests build many) leaves nothing running.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// A periodic job: false when it has nothing left to sweep.
type Job = Box<dyn FnMut() -> bool + Send>;

struct Task {
    every: Duration,
    next: Instant,
    job: Job,
}

/// The process's housekeeping thread and its tasks.
pub struct Housekeeping {
    tasks: Mutex<Vec<Task>>,
    added: Condvar,
}

/// The housekeeping of this process, started on first use.
pub fn global() -> &'static Housekeeping {
    static GLOBAL: OnceLock<Arc<Housekeeping>> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let housekeeping = Arc::new(Housekeeping { tasks: Mutex::new(Vec::new()), added: Condvar::new() });
        let worker = housekeeping.clone();
        std::thread::Builder::new()
            .name("agora-housekeeping".into())
            .spawn(move || worker.run())
            .expect("cannot start the housekeeping thread");
        housekeeping
    })
}

impl Housekeeping {
    /// Run `job` every `every` until it returns false.
    pub fn every(&self, every: Duration, job: impl FnMut() -> bool + Send + 'static) {
        let task = Task { every, next: Instant::now() + every, job: Box::new(job) };
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        self.added.notify_one();
    }

    /// Run `sweep` on `table` every `every`, for as long as the table lives.
    pub fn sweep<T: Send + Sync + 'static>(&self, every: Duration, table: Weak<T>, sweep: fn(&T)) {
        self.every(every, move || match table.upgrade() {
            Some(table) => {
                sweep(&table);
                true
            }
            None => false,
        });
    }

    fn run(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            let Some(next) = tasks.iter().map(|task| task.next).min() else {
                tasks = self.added.wait(tasks).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            if next > now {
                tasks = self.added.wait_timeout(tasks, next - now).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            // Run the due jobs without the lock, so that a slow sweep never holds up a host
            // registering its own.
            let (mut due, waiting): (Vec<Task>, Vec<Task>) =
                std::mem::take(&mut *tasks).into_iter().partition(|task| task.next <= now);
            *tasks = waiting;
            drop(tasks);
            due.retain_mut(|task| {
                task.next = now + task.every;
                (task.job)()
            });
            tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.extend(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn sweeps_run_until_their_table_is_dropped() {
        let table = Arc::new(AtomicUsize::new(0));
        global().sweep(Duration::from_millis(5), Arc::downgrade(&table), |n| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while table.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "the sweep never ran three times");
            std::thread::sleep(Duration::from_millis(5));
        }
        let weak = Arc::downgrade(&table);
        drop(table);
        assert!(weak.upgrade().is_none(), "the housekeeping holds its tables weakly");
    }
}
