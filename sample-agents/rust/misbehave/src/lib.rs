//! An agent that fails on purpose, for the tests and the demo. The payload (or config `on_init`)
//! says how: `hog` allocates until its memory cap stops it, `loop` spins forever, `panic` panics,
//! `recurse` overflows the stack, `fatal` returns a fatal handler error, `reject` a non-fatal one,
//! `ignore` never answers a call, `stop` stops, `exit:<reason>` exits with that reason
//! (`normal`, `shutdown` or any other text), `wasi-exit:<status>` calls WASI's `exit`, and
//! `spew-lines` / `spew-line` print 10 MB to stdout (100,000 short lines, or one line),
//! `big-reply:<n>` answers a call with n bytes, and `reply-import:<n>` answers it with n bytes
//! through the `reply` import instead (answering with that import's error when it fails).
//! `sleep:<ms>` sets its metadata `state` to `sleep-<ms>` and sleeps (waiting costs no CPU
//! budget), `spin:<ms>` burns that much CPU; both answer `done`, so that a test can hold the
//! agent in one message while its mailbox fills.
//! Anything else is echoed, and `tick` is counted so that progress between faults is visible.
use agora_guest::{Agent, Config, ExitReason, HandleError, Message, Notice, log, messaging};

struct Misbehave {
    ticks: u64,
    /// The `down` and `exit` notices it got, as `down:AGENT:REASON` / `exit:AGENT:REASON`.
    notices: Vec<String>,
}

fn misbehave(how: &str) -> Result<Option<Vec<u8>>, HandleError> {
    match how {
        "hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so that the memory is really committed, not just reserved.
                hoard.push(vec![0xA5; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "loop" => {
            // Say so first (when the registry is granted), so that a test can wait until this
            // agent is busy instead of guessing.
            let _ = agora_guest::registry::set_metadata("state", Some("looping"));
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        "panic" => panic!("misbehave: asked to panic"),
        "recurse" => Ok(Some(recurse(std::hint::black_box(1)).to_le_bytes().to_vec())),
        "fatal" => Err(HandleError::fatal("misbehave: asked to fail fatally")),
        "reject" => Err(HandleError::reject("misbehave: asked to reject")),
        "stop" => {
            agora_guest::stop();
            Ok(None)
        }
        "spew-lines" => {
            // 10 MB in 100,000 lines of 100 bytes.
            let line = "x".repeat(99);
            for _ in 0..100_000 {
                println!("{line}");
            }
            Ok(None)
        }
        "spew-line" => {
            // One 10 MB line.
            println!("{}", "y".repeat(10 << 20));
            Ok(None)
        }
        _ => {
            if let Some(reason) = how.strip_prefix("exit:") {
                let reason = match reason {
                    "normal" => ExitReason::Normal,
                    "shutdown" => ExitReason::Shutdown,
                    custom => ExitReason::Custom(custom.into()),
                };
                return match agora_guest::exit(&reason) {
                    Ok(()) => Ok(Some(b"exiting".to_vec())),
                    Err(error) => Ok(Some(format!("error {error:?}").into_bytes())),
                };
            }
            if let Some(ms) = how.strip_prefix("sleep:").and_then(|ms| ms.parse::<u64>().ok()) {
                let _ = agora_guest::registry::set_metadata("state", Some(&format!("sleep-{ms}")));
                std::thread::sleep(std::time::Duration::from_millis(ms));
                return Ok(Some(b"done".to_vec()));
            }
            if let Some(ms) = how.strip_prefix("spin:").and_then(|ms| ms.parse::<u64>().ok()) {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                while std::time::Instant::now() < until {
                    std::hint::black_box(());
                }
                return Ok(Some(b"done".to_vec()));
            }
            if let Some(status) = how.strip_prefix("wasi-exit:") {
                std::process::exit(status.parse().unwrap_or(1));
            }
            Ok(None)
        }
    }
}

/// Messages and names on the agent's behalf, for the tests of a cluster (where the target may
/// be on another node): `relay-call:NAME:TEXT`, `relay-send:NAME:TEXT`, `relay-big:NAME:BYTES`
/// (a call with that many bytes), `register:NAME`, `lookup:NAME`, `monitor:NAME`, `link:NAME`, `trap`. The answer is `ok:REPLY`,
/// `sent`, `registered`, `id:ID`, or `error:ERROR` (the error's debug form).
fn relay(text: &str) -> Option<String> {
    let timeout = std::time::Duration::from_secs(5);
    let outcome = |result: Result<String, agora_guest::Error>| match result {
        Ok(answer) => answer,
        Err(error) => format!("error:{error:?}"),
    };
    if let Some((name, payload)) = text.strip_prefix("relay-call:").and_then(|rest| rest.split_once(':')) {
        let reply = messaging::call(name, payload.as_bytes(), timeout);
        return Some(outcome(reply.map(|r| format!("ok:{}", String::from_utf8_lossy(&r)))));
    }
    if let Some((name, payload)) = text.strip_prefix("relay-send:").and_then(|rest| rest.split_once(':')) {
        return Some(outcome(messaging::send(name, payload.as_bytes()).map(|()| "sent".into())));
    }
    if let Some((name, size)) = text.strip_prefix("relay-big:").and_then(|rest| rest.split_once(':')) {
        let payload = vec![b'x'; size.parse().unwrap_or(0)];
        return Some(outcome(messaging::call(name, &payload, timeout).map(|r| format!("ok:{} bytes", r.len()))));
    }
    if let Some(name) = text.strip_prefix("register:") {
        return Some(outcome(agora_guest::registry::register(name).map(|()| "registered".into())));
    }
    // Monitors and links by name (`monitor:NAME` answers `ref:REF`), and `trap`.
    use agora_guest::supervision;
    if let Some(name) = text.strip_prefix("monitor:") {
        let watched = agora_guest::registry::lookup(name).and_then(supervision::monitor);
        return Some(outcome(watched.map(|reference| format!("ref:{reference}"))));
    }
    if let Some(name) = text.strip_prefix("link:") {
        let linked = agora_guest::registry::lookup(name).and_then(supervision::link);
        return Some(outcome(linked.map(|()| "linked".into())));
    }
    if text == "trap" {
        return Some(outcome(supervision::trap_exits(true).map(|()| "trapping".into())));
    }
    if let Some(name) = text.strip_prefix("lookup:") {
        return Some(outcome(agora_guest::registry::lookup(name).map(|id| format!("id:{id}"))));
    }
    None
}

/// Unbounded recursion that keeps nothing in linear memory, so that it exhausts the wasm stack
/// rather than Rust's shadow stack; the multiply after the call keeps it from becoming a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_mul(3).wrapping_add(depth)
}

impl Agent for Misbehave {
    fn init(config: Config) -> Result<Self, String> {
        if let Some(how) = config.get("on_init") {
            if how == "error" {
                return Err("misbehave: asked to fail init".into());
            }
            misbehave(how).map_err(|e| e.message)?;
        }
        Ok(Misbehave { ticks: 0, notices: Vec::new() })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let text = String::from_utf8_lossy(&message.payload).into_owned();
        if text == "tick" {
            self.ticks += 1;
            log::info(&format!("tick {}", self.ticks));
            return Ok(Some(self.ticks.to_string().into_bytes()));
        }
        if let Some(size) = text.strip_prefix("big-reply:") {
            return Ok(Some(vec![b'x'; size.parse().unwrap_or(0)]));
        }
        if let (Some(size), Some(correlation)) = (text.strip_prefix("reply-import:"), message.correlation) {
            return match messaging::reply(correlation, &vec![b'x'; size.parse().unwrap_or(0)]) {
                Ok(()) => Ok(None),
                Err(error) => Ok(Some(format!("reply-import error {error:?}").into_bytes())),
            };
        }
        if let Some(answer) = relay(&text) {
            return Ok(Some(answer.into_bytes()));
        }
        if text == "notices" {
            return Ok(Some(self.notices.join(";").into_bytes()));
        }
        match text.as_str() {
            "ignore" => Ok(None),
            _ => Ok(misbehave(&text)?.or(Some(message.payload))),
        }
    }

    fn notify(&mut self, notice: Notice) -> Result<(), HandleError> {
        match notice {
            Notice::Down(down) => self.notices.push(format!("down:{}:{}", down.agent, down.reason)),
            Notice::Exit(exit) => self.notices.push(format!("exit:{}:{}", exit.agent, exit.reason)),
            _ => {}
        }
        Ok(())
    }
}

agora_guest::export_agent!(Misbehave);
