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
//! last `lookup` of it), `await-gone <name> <timeout-ms>` (until the name is free),
//! `spawn <supervisor> <name> <module> <restart> [memory-bytes]`, `stop-child <supervisor> <name>`,
//! `children <supervisor>`, `monitor <name-or-#id>`, `link <name>`, `trap-exits on|off`,
//! `isolated <module> <input> <memory-bytes> <budget-ms>`,
//! `config-get <path>`, `config-entries <prefix>`, `config-subscribe <prefix>`,
//! `event-append <kind> <correlation|-> <payload>`, `event-append-many <n> <kind>`,
//! `event-query <field>=<value>...` (fields kind, agent, correlation, since, until, after, limit,
//! newest (true: newest first);
//! `since`/`until` may be `mark`: the time of the last `mark` step),
//! `event-field <field> <field>=<value>...` (that string field of each match's JSON payload),
//! `event-all <page-size> <field>=<value>...` (pages through every match), `mark`,
//! `event-stream <kind> <n> <every>` (n appends, logging `acked <count>` every `every`),
//! `event-subscribe <kind>`,
//! `counter <name> <n>`, `gauge <name> <value>`, `histogram <name> <value>`,
//! `limit <limiter> <key> <cost>`, `limit-count <limiter> <key> <n>` (n checks: how many passed),
//! `limit-wait <limiter> <key> <cost> <timeout-ms>`, `target <name>` (its outbound status),
//! `http <method> <url>`, `http-post <url> <text>`, `http-count <n> <method> <url>` (outcome classes, counted),
//! `http-paced <n> <method> <url>` (until n pass, waiting out each rate-limited answer's
//! retry-after: how many were limited, the time taken), `http-pair <method> <url>` (two requests in flight at once),
//! `lock <name> exclusive|shared <ttl-ms> <timeout-ms>`, `lock-try <name> <mode> <ttl-ms>`,
//! `lock-renew <name> <ttl-ms>`, `lock-release <name>` (with this probe's last token of it),
//! `locked-inc <counter> <lock> <n>` (read-modify-write rounds on a counter agent under the lock),
//! `lock-cycle <prefix> <locks> <n>` (n try-acquire + release pairs over that many locks),
//! `barrier <name> <parties> <timeout-ms>`, `barrier-waiting <name>`, `join <group>`, `leader <group>`, `leave <group>`,
//! `propose <group> majority|all|<n> <timeout-ms> <value>`, `panic`,
//! `wallet`, `pay <to> <amount>`, `hold <amount>` (remembered as the last hold),
//! `release-hold`, `capture <to> <amount>` (of the last hold), `usage`, `spin <n>` (n rounds of
//! arithmetic: compute to pay for), `auction-open <format> <reserve> <duration-ms> [<increment>
//! | <start> <step> <step-ms>]`, `bid <auction> <amount>`, `auction-cancel <auction>`,
//! `auction-wait <auction> <timeout-ms>`, `announce <capability> <budget> <bidding-ms>
//! <deadline-ms> lowest|best`, `offer <task> <price> <eta-ms>` (a proposal), `complete <task> <output>`,
//! `give-up <task> <reason>`, `task-wait <task> <timeout-ms>`, `reputation <agent>`,
//! `checkout <pool> <timeout-ms>|default` (remembered, newest last; reports the worker's name),
//! `checkin <pool> [<worker-name>]` (by default the newest checkout of the pool), `worker-call
//! <pool> <text> <timeout-ms>` (a call to the newest checkout), `pool-status <pool>`,
//! `pool-cycle <pool> <n> <text>` (n rounds of checkout, call and checkin),
//! `repeat <n> <step...>` (reports the last outcome), `count <n> <step...>` (outcomes counted by class), `await-outcome <timeout-ms> <step...> => <outcome>` (repeats the step until it has that outcome),
//! `until <timeout-ms> <step...>` (repeats the
//! step until it succeeds), `await-children <supervisor> <timeout-ms> <list>` (until `children`
//! shows that list), `await-meta <agent> <key> <value> <timeout-ms>`, `sleep <ms>`, `log <text>`, `say <text>`
//! (logs the text, `{}` replaced by the previous step's outcome), `stop`. A message `stop` stops it too.
//! `<to>` is a registered name, or `#<id>` for a raw agent id.
//! With `vote = "accept" | "reject" | "ignore" | "crash"` the probe answers consensus vote requests
//! so (crash: it panics on the request). With `narrate = "true"` only the `say` steps are logged. With `report_messages = "true"` every message the probe
//! receives is logged too; with
//! `run_in_init = "true"` the script runs inside `init` (for probes without the messaging grant).
use std::time::Duration;

mod http;

use agora_guest::rate_limits::LimitError;
use agora_guest::{
    Address, Agent, Config, Error, HandleError, Message, Notice, VoteRequest, auctions, config, events, ledger, locks,
    log, market, messaging, pools, rate_limits, registry, supervision, telemetry,
};

struct Probe {
    script: String,
    narrate: bool,
    report_messages: bool,
    vote: Option<String>,
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

fn outcome_of<E: std::fmt::Debug>(result: Result<(), E>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => format!("error {e:?}"),
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
        Error::Unpaid => "unpaid".into(),
    }
}

thread_local! {
    /// The token of this probe's last grant of each lock.
    static TOKENS: std::cell::RefCell<std::collections::HashMap<String, u64>> = Default::default();
    /// The number of this probe's last hold.
    static HOLD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The time of the last `mark` step, for `since=mark` and `until=mark`.
    static MARK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The workers this probe holds, by pool, newest last.
    static LENT: std::cell::RefCell<std::collections::HashMap<String, Vec<u64>>> = Default::default();
}

fn pool_outcome<T>(result: Result<T, pools::PoolError>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(error) => format!(
            "error {}",
            match error {
                pools::PoolError::Denied => "denied".into(),
                pools::PoolError::NotFound => "not-found".into(),
                pools::PoolError::Full => "full".into(),
                pools::PoolError::Timeout => "timeout".into(),
                pools::PoolError::NotCheckedOut => "not-checked-out".into(),
                pools::PoolError::Stopped => "stopped".into(),
                pools::PoolError::Invalid(why) => format!("invalid({why})"),
            }
        ),
    }
}

fn newest_checkout(pool: &str) -> Option<u64> {
    LENT.with(|lent| lent.borrow().get(pool).and_then(|held| held.last().copied()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `kind=order agent=x since=mark limit=5 ...` as a filter.
fn filter_of(fields: &[&str], limit: u32) -> events::Filter {
    let mut filter = events::all(limit);
    for field in fields {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        let time = || if value == "mark" { Some(MARK.with(|m| m.get())) } else { value.parse().ok() };
        match key {
            "kind" => filter.kind = Some(value.into()),
            "agent" => filter.agent = Some(value.into()),
            "correlation" => filter.correlation = Some(value.into()),
            "since" => filter.since_ms = time(),
            "until" => filter.until_ms = time(),
            "after" => filter.after = value.parse().ok(),
            "limit" => filter.limit = value.parse().unwrap_or(limit),
            "newest" => filter.newest_first = value == "true",
            _ => {}
        }
    }
    filter
}

fn describe_event(event: &events::Event) -> String {
    format!("{}:{}:{}", event.kind, event.agent.as_deref().unwrap_or("-"), text(&event.payload))
}

fn limit_outcome(result: Result<(), LimitError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(LimitError::Limited(after)) => format!("error limited (retry after {after}ms)"),
        Err(other) => format!("error {other:?}"),
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
        "await-meta" => {
            // Until agent `arg(1)`'s metadata `arg(2)` is `arg(3)`, or `arg(4)` ms pass.
            let started = std::time::Instant::now();
            loop {
                let value = registry::lookup(arg(1)).and_then(|id| registry::get_metadata(id, arg(2)));
                if value.as_ref().is_ok_and(|v| v.as_deref() == Some(arg(3))) {
                    return format!("value {}", arg(3));
                }
                if started.elapsed() >= Duration::from_millis(number(4)) {
                    return format!("error timeout ({value:?})");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "capability" => outcome(registry::add_capability(arg(1)), |_| "ok".into()),
        "find" => outcome(registry::find_by_capability(arg(1)), |ids| {
            let names: Vec<String> = ids.iter().map(|id| registry::name_of(*id).unwrap_or_default()).collect();
            format!("found [{}]", names.join(","))
        }),
        "count" => {
            // `count <n> <step...>`: the step n times, its outcomes counted by their first word
            // (`reply`, `ok`, `error unpaid`: an error keeps its code), in first-seen order.
            let mut counts: Vec<(String, u64)> = Vec::new();
            for _ in 0..number(1) {
                let outcome = run_step(&words[2..]);
                let mut class = outcome.split(' ').take(if outcome.starts_with("error") { 2 } else { 1 });
                let class = [class.next(), class.next()].into_iter().flatten().collect::<Vec<_>>().join(" ");
                match counts.iter_mut().find(|(c, _)| *c == class) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((class, 1)),
                }
            }
            let listed: Vec<String> = counts.iter().map(|(class, n)| format!("{class}:{n}")).collect();
            format!("counted [{}]", listed.join(","))
        }
        "repeat" => {
            let mut last = String::new();
            for _ in 0..number(1) {
                last = run_step(&words[2..]);
            }
            last
        }
        "await-outcome" => {
            // `await-outcome <timeout-ms> <step...> => <outcome...>`: the step again every 10 ms
            // until its outcome is that one (or, written `<prefix>*`, starts so), or the time runs
            // out; reports the last outcome.
            let rest = &words[2..];
            let split = rest.iter().position(|w| *w == "=>").unwrap_or(rest.len());
            let (step, expected) = (&rest[..split], rest.get(split + 1..).unwrap_or_default().join(" "));
            let matches = |outcome: &str| match expected.strip_suffix('*') {
                Some(prefix) => outcome.starts_with(prefix),
                None => outcome == expected,
            };
            let started = std::time::Instant::now();
            loop {
                let last = run_step(step);
                if matches(&last) || started.elapsed() >= Duration::from_millis(number(1)) {
                    return last;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "until" => {
            // Until the step succeeds (its outcome is no error), or the time runs out.
            let started = std::time::Instant::now();
            loop {
                let last = run_step(&words[2..]);
                if !last.starts_with("error") || started.elapsed() >= Duration::from_millis(number(1)) {
                    return last;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "await" | "await-new" => {
            // Timed by the clock: a millisecond's sleep takes longer than that on a busy host.
            let deadline = Duration::from_millis(number(2));
            let previous = SEEN.with(|seen| seen.borrow().get(arg(1)).copied()).filter(|_| arg(0) == "await-new");
            let started = std::time::Instant::now();
            loop {
                match registry::lookup(arg(1)) {
                    Ok(id) if Some(id) != previous => break format!("id {id}"),
                    Ok(_) | Err(Error::NotFound) if started.elapsed() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(_) | Err(Error::NotFound) => break "error timeout".into(),
                    Err(e) => break format!("error {}", error_code(&e)),
                }
            }
        }
        "await-gone" => {
            let deadline = Duration::from_millis(number(2));
            let started = std::time::Instant::now();
            loop {
                match registry::lookup(arg(1)) {
                    Err(Error::NotFound) => break "gone".to_string(),
                    Ok(_) if started.elapsed() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(_) => break "error timeout".into(),
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
            // Words after the memory (`-` for the default) are one step the child (a probe) runs
            // in its `init`.
            let config = match words.get(6..).filter(|step| !step.is_empty()) {
                Some(step) => vec![("script".into(), step.join(" ")), ("run_in_init".into(), "true".into())],
                None => Vec::new(),
            };
            let child = supervision::Child { name: arg(2).into(), module: arg(3).into(), config, limits, restart };
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
        "await-children" => {
            // Until the supervisor lists exactly `arg(3)` (as `children` renders it), or the
            // time runs out.
            let started = std::time::Instant::now();
            loop {
                let last = run_step(&["children", arg(1)]);
                if last == format!("children {}", arg(3)) || started.elapsed() >= Duration::from_millis(number(2)) {
                    return last;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
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
        "wallet" => match ledger::wallet() {
            Ok(funds) => format!("balance {} held {}", funds.balance, funds.held),
            Err(e) => format!("error {e:?}"),
        },
        "pay" => match ledger::transfer(arg(1), number(2), "probe") {
            Ok(seq) => format!("paid seq {seq}"),
            Err(e) => format!("error {e:?}"),
        },
        "hold" => match ledger::hold(number(1), "probe") {
            Ok(hold) => {
                HOLD.set(hold);
                format!("hold {hold}")
            }
            Err(e) => format!("error {e:?}"),
        },
        "release-hold" => outcome_of(ledger::release(HOLD.get())),
        "capture" => outcome_of(ledger::capture(HOLD.get(), arg(1), number(2))),
        "auction-open" => {
            // `auction-open english|dutch|sealed|vickrey <reserve> <duration-ms> [<increment> |
            // <start> <step> <step-ms>]`
            let format = match arg(1) {
                "english" => {
                    auctions::Format::English(auctions::EnglishRules { min_increment: number(4), soft_close_ms: 0 })
                }
                "dutch" => auctions::Format::Dutch(auctions::DutchClock {
                    start_price: number(4),
                    step: number(5),
                    step_ms: number(6) as u32,
                }),
                "sealed" => auctions::Format::SealedFirstPrice,
                _ => auctions::Format::Vickrey,
            };
            let terms =
                auctions::Terms { item: "lot".into(), format, reserve: number(2), duration_ms: number(3) as u32 };
            match auctions::open(&terms) {
                Ok(id) => format!("auction {id}"),
                Err(e) => format!("error {e:?}"),
            }
        }
        "bid" => match auctions::bid(number(1), number(2)) {
            Ok(bid) => format!("bid {bid}"),
            Err(e) => format!("error {e:?}"),
        },
        "auction-cancel" => outcome_of(auctions::cancel(number(1))),
        "auction-wait" => match auctions::wait(number(1), number(2) as u32) {
            Ok(auctions::State::Sold(sale)) => format!("sold {} {}", sale.winner, sale.price),
            Ok(state) => format!("{state:?}"),
            Err(e) => format!("error {e:?}"),
        },
        "announce" => {
            // `announce <capability> <budget> <bidding-ms> <deadline-ms> lowest|best`
            let task = market::Task {
                kind: "probe-task".into(),
                capabilities: vec![arg(1).to_string()],
                budget: number(2),
                bidding_ms: number(3) as u32,
                deadline_ms: number(4) as u32,
                rule: if arg(5) == "best" { market::AwardRule::BestScore } else { market::AwardRule::LowestPrice },
                payload: b"probe".to_vec(),
            };
            match market::announce(&task) {
                Ok(id) => format!("task {id}"),
                Err(e) => format!("error {e:?}"),
            }
        }
        "offer" => outcome_of(market::propose(number(1), number(2), number(3) as u32)),
        "complete" => match market::complete(number(1), arg(2).as_bytes()) {
            Ok(paid) => format!("paid {paid}"),
            Err(e) => format!("error {e:?}"),
        },
        "give-up" => outcome_of(market::fail(number(1), arg(2))),
        "task-wait" => match market::wait(number(1), number(2) as u32) {
            Ok(market::TaskState::Completed(done)) => {
                format!("completed {} {} {}", done.contractor, done.price, String::from_utf8_lossy(&done.output))
            }
            Ok(state) => format!("{state:?}"),
            Err(e) => format!("error {e:?}"),
        },
        "reputation" => {
            let standing = market::reputation(arg(1));
            format!("score {:.3} completed {} failed {}", standing.score, standing.completed, standing.failed)
        }
        "usage" => {
            let usage = ledger::usage();
            format!("fuel {} charged {}", usage.fuel, usage.charged)
        }
        "spin" => {
            let mut x = 1u64;
            for i in 0..number(1) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            format!("spun {}", x % 2)
        }
        "config-get" => outcome(config::get(arg(1)), |v| format!("value {}", v.unwrap_or_else(|| "none".into()))),
        "config-entries" => outcome(config::entries(arg(1)), |entries| {
            let listed: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("entries [{}]", listed.join(","))
        }),
        "config-subscribe" => outcome(config::subscribe(arg(1)), |_| "ok".into()),
        "event-append" => {
            let correlation = Some(arg(2)).filter(|c| *c != "-");
            outcome(events::append(arg(1), words[3..].join(" ").as_bytes(), correlation), |seq| format!("seq {seq}"))
        }
        "event-append-many" => {
            let mut last = Ok(0);
            for i in 0..number(1) {
                last = events::append(arg(2), format!("{i}").as_bytes(), None);
                if last.is_err() {
                    break;
                }
            }
            outcome(last, |seq| format!("last seq {seq}"))
        }
        "event-query" => outcome(events::query(&filter_of(&words[1..], 100)), |page| {
            let listed: Vec<String> = page.events.iter().map(describe_event).collect();
            let next = page.next.map_or_else(|| "none".to_string(), |n| n.to_string());
            format!("events {} [{}] next {next}", page.events.len(), listed.join(","))
        }),
        "event-field" => outcome(events::query(&filter_of(&words[2..], 100)), |page| {
            // `event-field <field> <filters>`: that string field of each match's JSON payload.
            let needle = format!("\"{}\":\"", arg(1));
            let found: Vec<String> = page
                .events
                .iter()
                .filter_map(|event| {
                    let payload = text(&event.payload);
                    let (_, rest) = payload.split_once(&needle)?;
                    Some(rest.split('"').next().unwrap_or_default().to_string())
                })
                .collect();
            found.join(",")
        }),
        "event-all" => {
            // Page through every match, `limit` at a time.
            let mut filter = filter_of(&words[2..], number(1) as u32);
            let mut sizes = Vec::new();
            let mut payloads = Vec::new();
            loop {
                match events::query(&filter) {
                    Ok(page) => {
                        sizes.push(page.events.len().to_string());
                        payloads.extend(page.events.iter().map(|e| text(&e.payload)));
                        match page.next {
                            Some(next) => filter.after = Some(next),
                            None => break format!("pages [{}] payloads [{}]", sizes.join(","), payloads.join(",")),
                        }
                    }
                    Err(e) => break format!("error {}", error_code(&e)),
                }
            }
        }
        "event-stream" => {
            // Append `n` events, logging each `every`-th acknowledgement as it arrives.
            for i in 0..number(2) {
                if let Err(e) = events::append(arg(1), i.to_string().as_bytes(), None) {
                    return format!("error {} after {i}", error_code(&e));
                }
                if (i + 1) % number(3).max(1) == 0 {
                    log::info(&format!("acked {}", i + 1));
                }
            }
            "done".into()
        }
        "mark" => {
            MARK.with(|mark| mark.set(now_ms()));
            "ok".into()
        }
        "event-subscribe" => outcome(events::subscribe(arg(1)), |_| "ok".into()),
        "counter" => outcome(telemetry::counter_add(arg(1), number(2)), |_| "ok".into()),
        "gauge" => outcome(telemetry::gauge_set(arg(1), arg(2).parse().unwrap_or(0.0)), |_| "ok".into()),
        "histogram" => outcome(telemetry::histogram_record(arg(1), arg(2).parse().unwrap_or(0.0)), |_| "ok".into()),
        "limit" => limit_outcome(rate_limits::check(arg(1), arg(2), number(3) as u32)),
        "limit-count" => {
            let passed = (0..number(3)).filter(|_| rate_limits::check(arg(1), arg(2), 1).is_ok()).count();
            format!("passed {passed}")
        }
        "limit-wait" => limit_outcome(rate_limits::wait(arg(1), arg(2), number(3) as u32, number(4) as u32)),
        "target" => outcome(agora_guest::outbound::status(arg(1)), |s| {
            let retry = s.retry_after_ms.map_or_else(|| "-".to_string(), |ms| ms.to_string());
            let circuit = match s.circuit {
                agora_guest::outbound::Circuit::Closed => "closed",
                agora_guest::outbound::Circuit::Open => "open",
                agora_guest::outbound::Circuit::HalfOpen => "half-open",
            };
            format!("circuit {circuit} retry-after-ms {retry} in-use {} capacity {}", s.in_use, s.capacity)
        }),
        "http" => http::describe(http::start(arg(1), arg(2), None).and_then(http::finish)),
        "http-count" => {
            let mut counts = std::collections::BTreeMap::<String, u32>::new();
            for _ in 0..number(1) {
                *counts.entry(http::class(&http::start(arg(2), arg(3), None).and_then(http::finish))).or_default() += 1;
            }
            let listed: Vec<String> = counts.iter().map(|(class, n)| format!("{class}:{n}")).collect();
            format!("outcomes [{}]", listed.join(","))
        }
        "http-post" => {
            let body = words[2..].join(" ");
            http::describe(http::start("POST", arg(1), Some(body.as_bytes())).and_then(http::finish))
        }
        "http-paced" => {
            // `http-paced <n> GET <url>`: until n requests passed, waiting out each rate-limited
            // answer's retry-after; reports how many were limited and how long it all took.
            let started = std::time::Instant::now();
            let (mut passed, mut limited) = (0, 0);
            while passed < number(1) {
                match http::start(arg(2), arg(3), None).and_then(http::finish) {
                    Ok(answer) if answer.header("agora-rejected").as_deref() == Some("rate-limited") => {
                        limited += 1;
                        let retry: u64 =
                            answer.header("agora-retry-after-ms").and_then(|v| v.parse().ok()).unwrap_or(1);
                        std::thread::sleep(Duration::from_millis(retry));
                    }
                    Ok(answer) if answer.status == 200 => passed += 1,
                    other => return format!("stopped by {}", http::describe(other)),
                }
            }
            format!("passed {passed} limited {limited} elapsed-ms {}", started.elapsed().as_millis())
        }
        "http-pair" => {
            let first = http::start(arg(1), arg(2), None);
            let second = http::start(arg(1), arg(2), None);
            let mut classes = [first.and_then(http::finish), second.and_then(http::finish)].map(|o| http::class(&o));
            classes.sort();
            format!("outcomes [{}]", classes.join(","))
        }
        "lock" | "lock-try" => {
            let mode = if arg(2) == "shared" { locks::Mode::Shared } else { locks::Mode::Exclusive };
            let outcome = if arg(0) == "lock" {
                locks::acquire(arg(1), mode, number(3) as u32, number(4) as u32)
            } else {
                locks::try_acquire(arg(1), mode, number(3) as u32)
            };
            match outcome {
                Ok(token) => {
                    TOKENS.with(|t| t.borrow_mut().insert(arg(1).to_string(), token));
                    format!("token {token}")
                }
                Err(e) => format!("error {e:?}"),
            }
        }
        "lock-renew" | "lock-release" => {
            let token = TOKENS.with(|t| t.borrow().get(arg(1)).copied()).unwrap_or(0);
            let outcome = if arg(0) == "lock-renew" {
                locks::renew(arg(1), token, number(2) as u32)
            } else {
                locks::release(arg(1), token)
            };
            match outcome {
                Ok(()) => "ok".into(),
                Err(e) => format!("error {e:?}"),
            }
        }
        "locked-inc" => {
            // `locked-inc <counter> <lock> <n>`: n read-modify-write rounds on a counter agent,
            // each under the lock; reports whether the fencing tokens kept increasing.
            let mut last = 0;
            let mut increasing = true;
            for _ in 0..number(3) {
                let token = match locks::acquire(arg(2), locks::Mode::Exclusive, 10_000, 30_000) {
                    Ok(token) => token,
                    Err(e) => return format!("error {e:?}"),
                };
                increasing &= token > last;
                last = token;
                let value = messaging::call(address(arg(1)), b"get", Duration::from_secs(10))
                    .map(|v| text(&v).parse::<i64>().unwrap_or(0));
                let set = value.and_then(|v| {
                    messaging::call(address(arg(1)), format!("set {}", v + 1).as_bytes(), Duration::from_secs(10))
                });
                if let Err(e) = set {
                    return format!("error {}", error_code(&e));
                }
                if let Err(e) = locks::release(arg(2), token) {
                    return format!("error {e:?}");
                }
            }
            format!("done tokens-increasing {increasing}")
        }
        "checkout" => {
            let timeout = if arg(2) == "default" { None } else { Some(number(2) as u32) };
            pool_outcome(pools::checkout(arg(1), timeout), |worker| {
                LENT.with(|lent| lent.borrow_mut().entry(arg(1).to_string()).or_default().push(worker));
                format!("worker {}", registry::name_of(worker).unwrap_or_else(|_| format!("#{worker}")))
            })
        }
        "checkin" => {
            let worker = match arg(2) {
                "" => newest_checkout(arg(1)),
                name => registry::lookup(name).ok(),
            };
            let Some(worker) = worker else { return "error nothing to check in".into() };
            LENT.with(|lent| lent.borrow_mut().entry(arg(1).to_string()).or_default().retain(|held| *held != worker));
            pool_outcome(pools::checkin(arg(1), worker), |()| "ok".into())
        }
        "worker-call" => {
            let Some(worker) = newest_checkout(arg(1)) else { return "error nothing checked out".into() };
            let timeout = Duration::from_millis(number(3));
            outcome(messaging::call(Address::Id(worker), arg(2).as_bytes(), timeout), |r| format!("reply {}", text(&r)))
        }
        "pool-status" => pool_outcome(pools::status(arg(1)), |s| {
            let state = match s.state {
                pools::PoolState::Ready => "ready",
                pools::PoolState::Overflow => "overflow",
                pools::PoolState::Full => "full",
            };
            format!(
                "{state} available {} overflow {} out {} waiting {}",
                s.available, s.overflow, s.checked_out, s.waiting
            )
        }),
        "pool-cycle" => {
            // `pool-cycle <pool> <n> <text>`: n rounds of checkout, call, checkin.
            for i in 0..number(2) {
                let called = pools::transaction(arg(1), None, |worker| {
                    messaging::call(Address::Id(worker), arg(3).as_bytes(), Duration::from_secs(5))
                });
                match called {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("error {} after {i}", error_code(&e)),
                    Err(e) => return pool_outcome(Err::<(), _>(e), |()| String::new()) + &format!(" after {i}"),
                }
            }
            "done".into()
        }
        "lock-cycle" => {
            // `lock-cycle <prefix> <locks> <n>`: n uncontended try-acquire + release pairs, over
            // `locks` distinct lock names in turn.
            let names: Vec<String> = (0..number(2).max(1)).map(|i| format!("{}-{i}", arg(1))).collect();
            for i in 0..number(3) as usize {
                let name = &names[i % names.len()];
                let released = locks::try_acquire(name, locks::Mode::Exclusive, 10_000)
                    .and_then(|token| locks::release(name, token));
                if let Err(e) = released {
                    return format!("error {e:?} after {i}");
                }
            }
            "done".into()
        }
        "barrier" => match agora_guest::barriers::arrive(arg(1), number(2) as u32, number(3) as u32) {
            Ok(round) => format!("round {round}"),
            Err(e) => format!("error {e:?}"),
        },
        // Sorted, so that a script can wait for a set of parties whatever their arrival order.
        "barrier-waiting" => match agora_guest::barriers::waiting(arg(1)) {
            Ok(mut parties) => {
                parties.sort();
                format!("waiting [{}]", parties.join(","))
            }
            Err(e) => format!("error {e:?}"),
        },
        "join" | "leader" => {
            let outcome = if arg(0) == "join" {
                agora_guest::election::join(arg(1))
            } else {
                agora_guest::election::leader(arg(1))
            };
            match outcome {
                Ok(now) => {
                    let leader = now.leader.map_or_else(|| "none".to_string(), |id| id.to_string());
                    format!("term {} leader {leader} me {}", now.term, messaging::self_id())
                }
                Err(e) => format!("error {e:?}"),
            }
        }
        "leave" => match agora_guest::election::leave(arg(1)) {
            Ok(()) => "ok".into(),
            Err(e) => format!("error {e:?}"),
        },
        "propose" => {
            use agora_guest::consensus::{self, Quorum};
            let quorum = match arg(2) {
                "majority" => Quorum::Majority,
                "all" => Quorum::All,
                n => Quorum::AtLeast(n.parse().unwrap_or(0)),
            };
            match consensus::propose(arg(1), words[4..].join(" ").as_bytes(), quorum, number(3) as u32) {
                Ok(o) => format!(
                    "{:?} voters {} accepted {} rejected {} missing {}",
                    o.verdict, o.voters, o.accepted, o.rejected, o.missing
                ),
                Err(e) => format!("error {e:?}"),
            }
        }
        "panic" => panic!("the probe was asked to panic"),
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

/// Run each step, logging `probe: <step> => <outcome>`; a narrated script logs only its `say`
/// lines, each with `{}` replaced by the outcome of the step before it.
fn run_script(script: &str, narrate: bool) {
    let mut last = String::new();
    for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(line) = step.strip_prefix("say ") {
            log::info(&line.replace("{}", &last));
            continue;
        }
        let words: Vec<&str> = step.split_whitespace().collect();
        last = run_step(&words);
        if !narrate {
            log::info(&format!("probe: {step} => {last}"));
        }
    }
}

impl Agent for Probe {
    fn init(config: Config) -> Result<Self, String> {
        let report_messages = config.get("report_messages") == Some("true");
        let script = config.get("script").unwrap_or_default().to_string();
        let narrate = config.get("narrate") == Some("true");
        if config.get("run_in_init") == Some("true") {
            run_script(&script, narrate);
            return Ok(Probe {
                script: String::new(),
                narrate,
                report_messages,
                vote: config.get("vote").map(str::to_string),
            });
        }
        if !script.is_empty() {
            messaging::send(messaging::self_id(), b"run-script").map_err(|e| e.to_string())?;
        }
        Ok(Probe { script, narrate, report_messages, vote: config.get("vote").map(str::to_string) })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        if message.sender == Some(messaging::self_id()) && message.payload == b"run-script" {
            run_script(&self.script, self.narrate);
            return Ok(None);
        }
        if self.report_messages {
            let topic = message.topic.as_deref().unwrap_or("-");
            log::info(&format!("probe got [{topic}] {}", text(&message.payload)));
        }
        if message.payload == b"stop" {
            agora_guest::stop();
        }
        Ok(Some(message.payload))
    }

    fn notify(&mut self, notice: Notice) -> Result<(), HandleError> {
        if let (Some(vote), Notice::VoteRequested(VoteRequest { group, round, .. })) = (self.vote.as_deref(), &notice) {
            match vote {
                "crash" => panic!("the probe was asked to crash on a vote request"),
                "ignore" => {}
                choice => {
                    let voted = agora_guest::consensus::vote(group, *round, choice == "accept");
                    log::info(&format!("probe voted {choice} in round {round}: {voted:?}"));
                }
            }
            return Ok(());
        }
        if self.report_messages {
            let (topic, told) = describe(&notice);
            log::info(&format!("probe got [{topic}] {told}"));
        }
        Ok(())
    }
}

/// A notice as the probe logs it: the host's topic for its kind, and one `key=value` line (a
/// body on the next line).
fn describe(notice: &Notice) -> (String, String) {
    match notice {
        Notice::Down(down) => {
            ("agora:down".into(), format!("ref={} id={} reason={}", down.reference, down.agent, down.reason))
        }
        Notice::Exit(exit) => ("agora:exit".into(), format!("id={} reason={}", exit.agent, exit.reason)),
        Notice::ConfigChanged(change) => {
            ("agora:config".into(), format!("{}={}", change.path, change.value.as_deref().unwrap_or("")))
        }
        Notice::Event(event) => (
            format!("agora:event/{}", event.kind),
            format!(
                "seq={} time={} agent={} correlation={}\n{}",
                event.seq,
                event.time_ms,
                event.agent.as_deref().unwrap_or(""),
                event.correlation.as_deref().unwrap_or(""),
                text(&event.payload)
            ),
        ),
        Notice::LeaderChanged(change) => {
            let leader = change.leader.map_or_else(|| "none".to_string(), |id| id.to_string());
            (format!("agora:leader/{}", change.group), format!("term={} leader={leader}", change.term))
        }
        Notice::VoteRequested(request) => (
            format!("agora:vote/{}", request.group),
            format!("round={} proposer={}\n{}", request.round, request.proposer, text(&request.value)),
        ),
        Notice::Auction(notice) => ("agora:auction".into(), format!("{notice:?}")),
        Notice::Market(notice) => ("agora:market".into(), format!("{notice:?}")),
    }
}

agora_guest::export_agent!(Probe);
