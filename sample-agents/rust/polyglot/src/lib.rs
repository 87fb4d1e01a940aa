//! The polyglot agent in Rust: the same text protocol as its Python, JavaScript and C siblings
//! (see sample-agents/python/polyglot/app.py): `ping`, `ask:<agent>:<text>`, `missing`,
//! `count`, `config:<path>`, `alloc:<bytes>`, `crash`, `exit:<reason>`, `monitor:<id>`, `notices`.
use std::time::Duration;

use agora_guest::{
    Agent, Config, Error, ExitReason, HandleError, Message, Notice, config, log, messaging, registry, supervision,
    telemetry,
};

struct Polyglot {
    calls: u64,
    last_notice: String,
}

fn code(error: &Error) -> &'static str {
    match error {
        Error::NotFound => "not-found",
        Error::MailboxFull => "mailbox-full",
        Error::Timeout => "timeout",
        Error::Denied => "denied",
        Error::Invalid(_) => "invalid",
        Error::TooLarge(_) => "too-large",
        Error::AlreadyExists => "already-exists",
        Error::Stopped => "stopped",
        Error::Failed(_) => "failed",
        Error::Unpaid => "unpaid",
    }
}

impl Agent for Polyglot {
    fn init(config: Config) -> Result<Self, String> {
        registry::add_capability("polyglot").map_err(|e| code(&e).to_string())?;
        log::info(&format!("rust agent up ({})", config.get("motto").unwrap_or("no motto")));
        Ok(Polyglot { calls: 0, last_notice: "none".into() })
    }

    fn notify(&mut self, notice: Notice) -> Result<(), HandleError> {
        if let Notice::Down(down) = notice {
            self.last_notice = format!("rust saw {} down: {}", down.agent, down.reason);
        }
        Ok(())
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let line = String::from_utf8_lossy(&message.payload).into_owned();
        let mut words = line.splitn(3, ':');
        let (command, first, rest) = (words.next().unwrap_or(""), words.next(), words.next());
        let answer = match command {
            "ping" => "pong from rust".to_string(),
            "ask" => {
                let to = first.ok_or_else(|| HandleError::reject("ask needs an agent"))?;
                match messaging::call(to, rest.unwrap_or("").as_bytes(), Duration::from_secs(5)) {
                    Ok(reply) => format!("rust heard: {}", String::from_utf8_lossy(&reply)),
                    Err(error) => format!("error {}", code(&error)),
                }
            }
            "missing" => match messaging::call("nobody-by-this-name", b"hello", Duration::from_secs(1)) {
                Ok(_) => "unexpected answer".to_string(),
                Err(error) => format!("error {}", code(&error)),
            },
            "count" => {
                self.calls += 1;
                telemetry::counter_add("polyglot_calls", 1).map_err(|e| HandleError::reject(code(&e)))?;
                self.calls.to_string()
            }
            "config" => {
                let path = first.ok_or_else(|| HandleError::reject("config needs a path"))?;
                match config::get(path) {
                    Ok(value) => value.unwrap_or_else(|| "none".into()),
                    Err(error) => format!("error {}", code(&error)),
                }
            }
            "alloc" => {
                let size: usize = first.and_then(|n| n.parse().ok()).unwrap_or(0);
                let block = std::hint::black_box(vec![1u8; size]);
                format!("allocated {}", block.len())
            }
            "crash" => panic!("crashed on request"),
            "exit" => {
                let reason = match first.unwrap_or("") {
                    "normal" => ExitReason::Normal,
                    "shutdown" => ExitReason::Shutdown,
                    custom => ExitReason::Custom(custom.into()),
                };
                match agora_guest::exit(&reason) {
                    Ok(()) => format!("exiting {}", first.unwrap_or("")),
                    Err(error) => format!("error {}", code(&error)),
                }
            }
            "monitor" => {
                let target =
                    first.and_then(|id| id.parse().ok()).ok_or_else(|| HandleError::reject("monitor needs an id"))?;
                match supervision::monitor(target) {
                    Ok(_) => format!("monitoring {target}"),
                    Err(error) => format!("error {}", code(&error)),
                }
            }
            "notices" => self.last_notice.clone(),
            other => return Err(HandleError::reject(format!("unknown command '{other}'"))),
        };
        Ok(Some(answer.into_bytes()))
    }
}

agora_guest::export_agent!(Polyglot);
