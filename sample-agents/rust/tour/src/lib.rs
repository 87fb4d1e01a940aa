//! A tour of the host services, one short function each: the README shows each function (between
//! its `// README:` markers) as that service's example, and tests/readme.rs runs the tour
//! (examples/tour.toml) and checks what each one logs.

use agora_guest::{
    Agent, Config, HandleError, Message, auctions, barriers, config, consensus, election, events, http, ledger, locks,
    log, market, messaging, outbound, rate_limits, telemetry,
};

// README: config
fn read_config() -> Result<String, String> {
    // `[config.values] pricing = { rate = 3 }` in the manifest; grant "config".
    let rate = config::get("pricing.rate").map_err(|e| e.to_string())?;
    config::subscribe("pricing").map_err(|e| e.to_string())?; // changes arrive in `notify`
    Ok(format!("pricing.rate = {}", rate.unwrap_or_default()))
}
// README: end

// README: events
fn record_an_event() -> Result<String, String> {
    // Grant "events": an append returns once the event is durable.
    let seq = events::append("order-placed", b"{\"id\": 42}", Some("order-42")).map_err(|e| e.to_string())?;
    let mut filter = events::all(10);
    filter.correlation = Some("order-42".into());
    let page = events::query(&filter).map_err(|e| e.to_string())?;
    Ok(format!("appended as #{seq}, found {} by its correlation", page.events.len()))
}
// README: end

// README: telemetry
fn count_something() -> Result<String, String> {
    // Grant "telemetry": served at the admin endpoint's /metrics as agora_agent_orders{agent="tour"}.
    telemetry::counter_add("orders", 1).map_err(|e| e.to_string())?;
    telemetry::histogram_record("order_value", 12.5).map_err(|e| e.to_string())?;
    Ok("counted".into())
}
// README: end

// README: outbound
fn ask_an_upstream() -> Result<String, String> {
    // `[outbound.upstream] url = "http://127.0.0.1:9464/health"` and `outbound = ["upstream"]` on the
    // agent (here the host's own admin endpoint). Any WASI HTTP client works; this is the SDK's.
    let url = config::get("upstream").map_err(|e| e.to_string())?.ok_or("config `upstream` is not set")?;
    let answer = http::get(&url)?;
    if let Some(rejection) = answer.rejection() {
        return Err(format!("the host answered for the target: {rejection:?}"));
    }
    let target = outbound::status("upstream").map_err(|e| e.to_string())?;
    let circuit = match target.circuit {
        outbound::Circuit::Closed => "closed",
        outbound::Circuit::Open => "open",
        outbound::Circuit::HalfOpen => "half-open",
    };
    Ok(format!(
        "status {}, circuit {}, {} of {} connections in use",
        answer.status, circuit, target.in_use, target.capacity
    ))
}
// README: end

// README: rate limits
fn limit_a_caller() -> Result<String, String> {
    // `[rate_limits.api] limit = 2, per = "1m", keyed = true`; grant "rate-limits".
    let passed = (0..3).filter(|_| rate_limits::check("api", "customer-7", 1).is_ok()).count();
    Ok(format!("{passed} of 3 passed"))
}
// README: end

// README: locks
fn update_under_a_lock() -> Result<String, String> {
    // Grant "coordination": a 5 s lease, waiting up to 1 s; the token fences writes elsewhere.
    let token = locks::acquire("inventory", locks::Mode::Exclusive, 5_000, 1_000).map_err(|e| format!("{e:?}"))?;
    // ... read-modify-write, presenting `token` to the store ...
    locks::release("inventory", token).map_err(|e| format!("{e:?}"))?;
    Ok("released".into())
}
// README: end

// README: barriers
fn meet_the_others() -> Result<String, String> {
    // Grant "coordination": here a party of one, so the round is complete at once.
    let round = barriers::arrive("start", 1, 1_000).map_err(|e| format!("{e:?}"))?;
    Ok(format!("round {round} complete"))
}
// README: end

// README: election
fn stand_for_leader() -> Result<String, String> {
    // Grant "coordination": the earliest live member leads; changes arrive in `notify`.
    let now = election::join("schedulers").map_err(|e| format!("{e:?}"))?;
    let me = messaging::self_id();
    Ok(if now.leader == Some(me) { "leading".into() } else { "following".into() })
}
// README: end

// README: consensus
fn put_it_to_a_vote() -> Result<String, String> {
    // Grant "coordination": the members of election group "release" (here two `replica` agents)
    // each get a vote-requested notice and answer in `notify`; a proposer need not be a member.
    let outcome =
        consensus::propose("release", b"ship v2", consensus::Quorum::Majority, 1_000).map_err(|e| format!("{e:?}"))?;
    let verdict = match outcome.verdict {
        consensus::Verdict::Committed => "committed",
        consensus::Verdict::Rejected => "rejected",
        consensus::Verdict::TimedOut => "timed out",
    };
    Ok(format!("{verdict}, {} of {} accepted", outcome.accepted, outcome.voters))
}
// README: end

// README: ledger
fn put_money_aside() -> Result<String, String> {
    // Grant "economics": the wallet starts with the manifest's `wallet = 100`.
    let hold = ledger::hold(30, "deposit for job 9").map_err(|e| format!("{e:?}"))?;
    let funds = ledger::wallet().map_err(|e| format!("{e:?}"))?;
    ledger::release(hold).map_err(|e| format!("{e:?}"))?;
    Ok(format!("balance {} held {}", funds.balance, funds.held))
}
// README: end

// README: auctions
fn sell_something() -> Result<String, String> {
    // Grant "economics": an English auction with a public reserve; nobody bids in this tour.
    let terms = auctions::Terms {
        item: "4 GPU hours".into(),
        format: auctions::Format::English(auctions::EnglishRules { min_increment: 1, soft_close_ms: 0 }),
        reserve: 10,
        duration_ms: 50,
    };
    let id = auctions::open(&terms).map_err(|e| format!("{e:?}"))?;
    let asking = auctions::info(id).map_err(|e| format!("{e:?}"))?.asking;
    let ended = match auctions::wait(id, 1_000).map_err(|e| format!("{e:?}"))? {
        auctions::State::Sold(sale) => format!("sold to {} for {}", sale.winner, sale.price),
        auctions::State::Unsold => "unsold".to_string(),
        other => format!("{other:?}"),
    };
    Ok(format!("#{id} asked {asking}, {ended}"))
}
// README: end

// README: market
fn put_out_a_task() -> Result<String, String> {
    // Grant "economics": the budget waits in escrow; agents with the capability may propose.
    let task = market::Task {
        kind: "translate".into(),
        capabilities: vec!["translation".into()],
        budget: 20,
        bidding_ms: 50,
        deadline_ms: 1_000,
        rule: market::AwardRule::LowestPrice,
        payload: b"hello".to_vec(),
    };
    let id = market::announce(&task).map_err(|e| format!("{e:?}"))?;
    let outcome = match market::wait(id, 2_000).map_err(|e| format!("{e:?}"))? {
        market::TaskState::Completed(done) => format!("done by {} for {}", done.contractor, done.price),
        market::TaskState::Unawarded => "nobody proposed".to_string(),
        other => format!("{other:?}"),
    };
    // Unawarded, failed or timed out, the budget is back in the wallet.
    let balance = ledger::wallet().map_err(|e| format!("{e:?}"))?.balance;
    Ok(format!("task #{id}: {outcome}; balance {balance}"))
}
// README: end

/// One stop of the tour: what the service said, or why it refused.
type Stop = fn() -> Result<String, String>;

struct Tour;

impl Agent for Tour {
    fn init(_config: Config) -> Result<Self, String> {
        messaging::send(messaging::self_id(), b"tour").map_err(|e| e.to_string())?;
        Ok(Tour)
    }

    fn handle(&mut self, _message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let stops: [(&str, Stop); 12] = [
            ("config", read_config),
            ("events", record_an_event),
            ("telemetry", count_something),
            ("outbound", ask_an_upstream),
            ("rate limits", limit_a_caller),
            ("locks", update_under_a_lock),
            ("barriers", meet_the_others),
            ("election", stand_for_leader),
            ("consensus", put_it_to_a_vote),
            ("ledger", put_money_aside),
            ("auctions", sell_something),
            ("market", put_out_a_task),
        ];
        for (service, stop) in stops {
            match stop() {
                Ok(said) => log::info(&format!("{service}: {said}")),
                Err(why) => log::error(&format!("{service} failed: {why}")),
            }
        }
        agora_guest::stop();
        Ok(None)
    }
}

agora_guest::export_agent!(Tour);
