//! Replies with what it receives; a direct `stop` message ends it. Subscribes to the comma-separated `topics` in its config and
//! logs every published message it gets, so pub/sub delivery is visible in the host log.
use agora_guest::{Agent, Config, HandleError, Message, log, messaging};

struct Echo {
    handled: u64,
}

impl Agent for Echo {
    fn init(config: Config) -> Result<Self, String> {
        for topic in config.get("topics").unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            messaging::subscribe(topic).map_err(|e| format!("subscribe {topic}: {e}"))?;
        }
        Ok(Echo { handled: 0 })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        self.handled += 1;
        if message.topic.is_none() && message.payload == b"stop" {
            agora_guest::stop();
            return Ok(None);
        }
        if let Some(topic) = &message.topic {
            log::info(&format!("echo got {topic}: {}", String::from_utf8_lossy(&message.payload)));
        }
        Ok(Some(message.payload))
    }

    fn terminate(&mut self, reason: &str) {
        log::info(&format!("echo terminating ({reason}) after {} messages", self.handled));
    }
}

agora_guest::export_agent!(Echo);
