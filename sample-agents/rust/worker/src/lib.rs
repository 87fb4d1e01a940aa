//! A worker that updates a shared resource under a lock: `rounds` times it takes the lock named
//! by config `lock`, reads the counter agent named by `counter`, writes back the value plus one,
//! and releases the lock, checking that every grant's fencing token is larger than the last.
//! Then it reports and stops.
use std::time::Duration;

use agora_guest::{Agent, Config, HandleError, Message, locks, log, messaging};

struct Worker {
    counter: String,
    lock: String,
    rounds: u32,
}

impl Worker {
    fn increment(&self, last_token: &mut u64) -> Result<(), String> {
        let token = locks::acquire(&self.lock, locks::Mode::Exclusive, 10_000, 60_000).map_err(|e| format!("{e:?}"))?;
        if token <= *last_token {
            return Err(format!("fencing token went back from {last_token} to {token}"));
        }
        *last_token = token;
        let wait = Duration::from_secs(10);
        let read = messaging::call(self.counter.as_str(), b"get", wait).map_err(|e| e.to_string())?;
        let value: i64 = String::from_utf8_lossy(&read).parse().map_err(|e| format!("{e}"))?;
        messaging::call(self.counter.as_str(), format!("set {}", value + 1).as_bytes(), wait)
            .map_err(|e| e.to_string())?;
        locks::release(&self.lock, token).map_err(|e| format!("{e:?}"))
    }
}

impl Agent for Worker {
    fn init(config: Config) -> Result<Self, String> {
        let worker = Worker {
            counter: config.get("counter").unwrap_or("ledger").to_string(),
            lock: config.get("lock").unwrap_or("ledger-lock").to_string(),
            rounds: config.parse("rounds")?.unwrap_or(100),
        };
        // Work from the first message, once the agents declared after this one have started.
        messaging::send(messaging::self_id(), b"go").map_err(|e| e.to_string())?;
        Ok(worker)
    }

    fn handle(&mut self, _message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let mut last_token = 0;
        for round in 0..self.rounds {
            self.increment(&mut last_token).map_err(|e| HandleError::fatal(format!("round {round}: {e}")))?;
        }
        log::info(&format!("worker finished {} locked increments", self.rounds));
        agora_guest::stop();
        Ok(None)
    }
}

agora_guest::export_agent!(Worker);
