//! The counter's next version, to show a code upgrade with state (OTP's `code_change`): the
//! same commands as `sample-agents/rust/counter`, plus `version` (replies `2`) and `upgrades`
//! (how many upgrades its state has been through). It reads the counter's state (`value`,
//! `held`) and adds `upgrades`, counted up at each restore.
//!
//! Two config keys make a restore fail, for the rollback paths of an upgrade: `refuse_restore =
//! "true"` refuses the state, `trap_first = "true"` panics in the first message after a restore.
use agora_guest::{Agent, Config, HandleError, Message, Stateful, log, messaging};

#[derive(serde::Serialize, serde::Deserialize)]
struct Counter {
    value: i64,
    held: Option<u64>,
    /// Absent from the first version's state.
    #[serde(default)]
    upgrades: u32,
    /// Set by a restore when `trap_first` asks for a failed first message.
    #[serde(skip)]
    trap_next: bool,
}

impl Agent for Counter {
    fn init(config: Config) -> Result<Self, String> {
        Ok(Counter { value: config.parse("start")?.unwrap_or(0), held: None, upgrades: 0, trap_next: false })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        if std::mem::take(&mut self.trap_next) {
            panic!("counter v2 traps in its first message (trap_first)");
        }
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
            (Some("version"), None) => return Ok(Some(b"2".to_vec())),
            (Some("upgrades"), None) => return Ok(Some(self.upgrades.to_string().into_bytes())),
            (Some("stop"), None) => agora_guest::stop(),
            (Some("release"), None) => {
                let held = self.held.take().ok_or_else(|| HandleError::reject("nothing held"))?;
                let answer = format!("released {} (v2)", self.value);
                messaging::reply(held, answer.as_bytes()).map_err(|e| HandleError::reject(e.to_string()))?;
                return Ok(None);
            }
            _ => return Err(HandleError::reject(format!("unknown command {text:?}"))),
        }
        Ok(Some(self.value.to_string().into_bytes()))
    }
}

impl Stateful for Counter {
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        agora_guest::state::encode(self)
    }

    fn restore(config: Config, state: &[u8], from_version: &str) -> Result<Self, String> {
        if config.get("refuse_restore") == Some("true") {
            return Err(format!("refusing the state of {from_version} (refuse_restore)"));
        }
        let mut counter: Counter = agora_guest::state::decode(state)?;
        counter.upgrades += 1;
        counter.trap_next = config.get("trap_first") == Some("true");
        log::info(&format!("counter v2 took over at {} from {from_version}", counter.value));
        Ok(counter)
    }
}

agora_guest::export_agent!(Counter, state);
