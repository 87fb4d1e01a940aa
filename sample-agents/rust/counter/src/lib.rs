//! A counter that keeps state between messages: `inc`, `add <n>`, `set <n>`, `get` (replies with the value
//! as decimal text), `stop`. It starts at config `start` (default 0).
//!
//! The counter is [`Stateful`]: its value (and a held call) survive an upgrade of its code, as
//! JSON (`{"value":3,"held":null}`); `sample-agents/rust/counter-v2` reads that format.
//!
//! With config `refuse_snapshot = "true"` its `snapshot` refuses (for the failure paths of
//! durable agents).
//!
//! `hold` shows a deferred reply: the call is not answered from `handle`; the counter sends
//! itself `release`, and answers the held call from there with `messaging::reply` (and logs what
//! a second reply to the same call returns).
use agora_guest::{Agent, Config, HandleError, Message, Stateful, log, messaging};

#[derive(serde::Serialize, serde::Deserialize)]
struct Counter {
    value: i64,
    held: Option<u64>,
    #[serde(skip)]
    refuse_snapshot: bool,
}

impl Agent for Counter {
    fn init(config: Config) -> Result<Self, String> {
        let refuse_snapshot = config.get("refuse_snapshot") == Some("true");
        Ok(Counter { value: config.parse("start")?.unwrap_or(0), held: None, refuse_snapshot })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let text = String::from_utf8_lossy(&message.payload);
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some("inc"), None) => self.value += 1,
            (Some("add"), Some(n)) => {
                self.value += n.parse::<i64>().map_err(|e| HandleError::reject(format!("add {n}: {e}")))?
            }
            (Some("set"), Some(n)) => {
                self.value = n.parse::<i64>().map_err(|e| HandleError::reject(format!("set {n}: {e}")))?
            }
            (Some("get"), None) => {}
            (Some("stop"), None) => agora_guest::stop(),
            (Some("hold"), None) => {
                self.held = message.correlation;
                messaging::send(messaging::self_id(), b"release").map_err(|e| HandleError::reject(e.to_string()))?;
                return Ok(None);
            }
            (Some("release"), None) => {
                let held = self.held.take().ok_or_else(|| HandleError::reject("nothing held"))?;
                let answer = format!("released {}", self.value);
                messaging::reply(held, answer.as_bytes()).map_err(|e| HandleError::reject(e.to_string()))?;
                let again = messaging::reply(held, b"twice");
                log::info(&format!("second reply: {again:?}"));
                return Ok(None);
            }
            _ => return Err(HandleError::reject(format!("unknown command {text:?}"))),
        }
        Ok(Some(self.value.to_string().into_bytes()))
    }

    fn terminate(&mut self, reason: &str) {
        log::info(&format!("counter terminating ({reason}) at {}", self.value));
    }
}

impl Stateful for Counter {
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        if self.refuse_snapshot {
            return Err("refusing to be snapshotted (refuse_snapshot)".into());
        }
        agora_guest::state::encode(self)
    }

    fn restore(config: Config, state: &[u8], from_version: &str) -> Result<Self, String> {
        let mut counter: Counter = agora_guest::state::decode(state)?;
        counter.refuse_snapshot = config.get("refuse_snapshot") == Some("true");
        log::info(&format!("counter restored at {} from {from_version}", counter.value));
        Ok(counter)
    }
}

agora_guest::export_agent!(Counter, state);
