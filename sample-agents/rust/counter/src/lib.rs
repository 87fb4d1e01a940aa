//! A counter that keeps state between messages: `inc`, `add <n>`, `get` (replies with the value
//! as decimal text), `stop`. It starts at config `start` (default 0).
use agora_guest::{Agent, Config, HandleError, Message, log};

struct Counter {
    value: i64,
}

impl Agent for Counter {
    fn init(config: Config) -> Result<Self, String> {
        Ok(Counter { value: config.parse("start")?.unwrap_or(0) })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let text = String::from_utf8_lossy(&message.payload);
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some("inc"), None) => self.value += 1,
            (Some("add"), Some(n)) => {
                self.value += n.parse::<i64>().map_err(|e| HandleError::reject(format!("add {n}: {e}")))?
            }
            (Some("get"), None) => {}
            (Some("stop"), None) => agora_guest::stop(),
            _ => return Err(HandleError::reject(format!("unknown command {text:?}"))),
        }
        Ok(Some(self.value.to_string().into_bytes()))
    }

    fn terminate(&mut self, reason: &str) {
        log::info(&format!("counter terminating ({reason}) at {}", self.value));
    }
}

agora_guest::export_agent!(Counter);
