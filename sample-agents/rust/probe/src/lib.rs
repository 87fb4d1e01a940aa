//! Runs a script of host calls and logs each outcome as `probe: <step> => <outcome>`, so that
//! tests and operators can exercise the WIT contract from a manifest alone.
//!
//! `script` is a `;`-separated list of steps, run in order after init (from the probe's own first
//! message, so that agents declared after it have started too). Steps:
//! `send <to> <text>`, `send-timeout <to> <timeout-ms> <text>`, `call <to> <text> <timeout-ms>`, `big <to> <bytes>` (send that many bytes),
//! `burst <to> <count>` (send without waiting; reports how many were accepted and the first error),
//! `publish <topic> <text>`, `subscribe <topic>`, `register <name>`, `lookup <name>`,
//! `meta <key> <value>`, `get-meta <name> <key>`, `capability <cap>`, `find <cap>`,
//! `await <name> <timeout-ms>` (until the name is registered, e.g. by a restarted agent),
//! `await-new <name> <timeout-ms>` (until the name points to another agent than at this probe's
//! last `lookup` of it),
//! `spawn <supervisor> <name> <module> <restart> [memory-bytes]`, `stop-child <supervisor> <name>`,
//! `children <supervisor>`, `monitor <name-or-#id>`, `link <name>`, `trap-exits on|off`,
//! `isolated <module> <input> <memory-bytes> <budget-ms>`,
//! `repeat <n> <step...>` (reports the last outcome), `sleep <ms>`, `log <text>`, `stop`.
//! `<to>` is a registered name, or `#<id>` for a raw agent id.
//! With `report_messages = "true"` every message the probe receives is logged too; with
//! `run_in_init = "true"` the script runs inside `init` (for probes without the messaging grant).
use std::time::Duration;

use agora_guest::{Address, Agent, Config, Error, HandleError, Message, log, messaging, registry, supervision};

struct Probe {
    script: String,
    report_messages: bool,
}

thread_local! {
    /// The id each name had at this probe's last `lookup` of it.
    static SEEN: std::cell::RefCell<std::collections::HashMap<String, u64>> = Default::default();
}

fn address(to: &str) -> Address {
    match to.strip_prefix('#').and_then(|id| id.parse().ok()) {
        Some(id) => Address::Id(id),
        None => Address::Name(to.to_string()),
    }
}

/// A name through the registry, or `#<id>`.
fn resolve(to: &str) -> Result<u64, Error> {
    match address(to) {
        Address::Id(id) => Ok(id),
        Address::Name(name) => registry::lookup(&name),
    }
}

fn outcome<T>(result: Result<T, Error>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(error) => format!("error {}", error_code(&error)),
    }
}

/// A stable code per error case, for tests to match on.
fn error_code(error: &Error) -> String {
    match error {
        Error::NotFound => "not-found".into(),
        Error::MailboxFull => "mailbox-full".into(),
        Error::Timeout => "timeout".into(),
        Error::Denied => "denied".into(),
        Error::Invalid(why) => format!("invalid({why})"),
        Error::TooLarge(max) => format!("too-large({max})"),
        Error::AlreadyExists => "already-exists".into(),
        Error::Stopped => "stopped".into(),
        Error::Failed(why) => format!("failed({why})"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_step(words: &[&str]) -> String {
    let arg = |i: usize| words.get(i).copied().unwrap_or("");
    let number = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    match arg(0) {
        "send" => outcome(messaging::send(address(arg(1)), words[2..].join(" ").as_bytes()), |_| "ok".into()),
        "send-timeout" => {
            let timeout = Duration::from_millis(number(2));
            outcome(messaging::send_timeout(address(arg(1)), words[3..].join(" ").as_bytes(), timeout), |_| "ok".into())
        }
        "call" => {
            let timeout = Duration::from_millis(number(3));
            outcome(messaging::call(address(arg(1)), arg(2).as_bytes(), timeout), |r| format!("reply {}", text(&r)))
        }
        "big" => outcome(messaging::send(address(arg(1)), &vec![b'x'; number(2) as usize]), |_| "ok".into()),
        "burst" => {
            let mut accepted = 0;
            let mut first_error = None;
            for _ in 0..number(2) {
                match messaging::send(address(arg(1)), b"tick") {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            let first_error = first_error.map(|e| error_code(&e)).unwrap_or_else(|| "none".into());
            format!("accepted {accepted} first-error {first_error}")
        }
        "publish" => outcome(messaging::publish(arg(1), words[2..].join(" ").as_bytes()), |r| {
            format!("delivered {} full {}", r.delivered, r.mailbox_full.len())
        }),
        "subscribe" => outcome(messaging::subscribe(arg(1)), |_| "ok".into()),
        "register" => outcome(registry::register(arg(1)), |_| "ok".into()),
        "lookup" => outcome(registry::lookup(arg(1)), |id| {
            SEEN.with(|seen| seen.borrow_mut().insert(arg(1).to_string(), id));
            format!("id {id}")
        }),
        "meta" => outcome(registry::set_metadata(arg(1), Some(arg(2))), |_| "ok".into()),
        "get-meta" => outcome(registry::lookup(arg(1)).and_then(|id| registry::get_metadata(id, arg(2))), |v| {
            format!("value {}", v.unwrap_or_else(|| "none".into()))
        }),
        "capability" => outcome(registry::add_capability(arg(1)), |_| "ok".into()),
        "find" => outcome(registry::find_by_capability(arg(1)), |ids| {
            let names: Vec<String> = ids.iter().map(|id| registry::name_of(*id).unwrap_or_default()).collect();
            format!("found [{}]", names.join(","))
        }),
        "repeat" => {
            let mut last = String::new();
            for _ in 0..number(1) {
                last = run_step(&words[2..]);
            }
            last
        }
        "await" | "await-new" => {
            let deadline = number(2);
            let previous = SEEN.with(|seen| seen.borrow().get(arg(1)).copied()).filter(|_| arg(0) == "await-new");
            let mut waited = 0;
            loop {
                match registry::lookup(arg(1)) {
                    Ok(id) if Some(id) != previous => break format!("id {id}"),
                    Ok(_) | Err(Error::NotFound) if waited < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                        waited += 1;
                    }
                    Ok(_) | Err(Error::NotFound) => break "error timeout".into(),
                    Err(e) => break format!("error {}", error_code(&e)),
                }
            }
        }
        "spawn" => {
            let restart = match arg(4) {
                "transient" => supervision::Restart::Transient,
                "temporary" => supervision::Restart::Temporary,
                _ => supervision::Restart::Permanent,
            };
            let mut limits = supervision::default_limits();
            limits.memory_bytes = arg(5).parse().ok();
            let child =
                supervision::Child { name: arg(2).into(), module: arg(3).into(), config: Vec::new(), limits, restart };
            match supervision::spawn(arg(1), &child) {
                Ok(id) => format!("id {id}"),
                Err(e) => format!("error {e:?}"),
            }
        }
        "stop-child" => outcome(supervision::stop_child(arg(1), arg(2)), |_| "ok".into()),
        "children" => outcome(supervision::list_children(arg(1)), |children| {
            let listed: Vec<String> = children.iter().map(|c| format!("{}:{}", c.name, c.restarts)).collect();
            format!("children [{}]", listed.join(","))
        }),
        "monitor" => outcome(resolve(arg(1)).and_then(supervision::monitor), |r| format!("ref {r}")),
        "link" => outcome(resolve(arg(1)).and_then(supervision::link), |_| "ok".into()),
        "trap-exits" => outcome(supervision::trap_exits(arg(1) == "on"), |_| "ok".into()),
        "isolated" => {
            let limits = supervision::Limits {
                memory_bytes: arg(3).parse().ok(),
                budget_ms: arg(4).parse().ok(),
                mailbox: None,
            };
            match supervision::run_isolated(arg(1), arg(2).as_bytes(), limits) {
                Ok(output) => format!("output {}", text(&output)),
                Err(e) => format!("error {e:?}"),
            }
        }
        "sleep" => {
            std::thread::sleep(Duration::from_millis(number(1)));
            "ok".into()
        }
        "log" => words[1..].join(" "),
        "stop" => {
            agora_guest::stop();
            "ok".into()
        }
        other => format!("unknown step {other:?}"),
    }
}

fn run_script(script: &str) {
    for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let words: Vec<&str> = step.split_whitespace().collect();
        log::info(&format!("probe: {step} => {}", run_step(&words)));
    }
}

impl Agent for Probe {
    fn init(config: Config) -> Result<Self, String> {
        let report_messages = config.get("report_messages") == Some("true");
        let script = config.get("script").unwrap_or_default().to_string();
        if config.get("run_in_init") == Some("true") {
            run_script(&script);
            return Ok(Probe { script: String::new(), report_messages });
        }
        if !script.is_empty() {
            messaging::send(messaging::self_id(), b"run-script").map_err(|e| e.to_string())?;
        }
        Ok(Probe { script, report_messages })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        if message.sender == Some(messaging::self_id()) && message.payload == b"run-script" {
            for step in self.script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let words: Vec<&str> = step.split_whitespace().collect();
                log::info(&format!("probe: {step} => {}", run_step(&words)));
            }
            return Ok(None);
        }
        if self.report_messages {
            let topic = message.topic.as_deref().unwrap_or("-");
            log::info(&format!("probe got [{topic}] {}", text(&message.payload)));
        }
        Ok(Some(message.payload))
    }
}

agora_guest::export_agent!(Probe);
