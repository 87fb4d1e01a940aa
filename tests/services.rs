//! Host services through the WIT contract, the manifest and the CLI: config with live updates,
//! the durable event store (queries, subscriptions, retention, a SIGKILL in mid-write),
//! telemetry on the Prometheus endpoint, and agent-visible rate limiters.

use crate::common;

use std::io::{Read, Write};
use std::process::Child;

use common::{Lines, Scenario, agora, lines_of, run_agora, terminate, wait_for_event};
use serde_json::Value;

fn probe(name: &str, grants: &str, extra: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"1h\"\n\
         grants = [{grants}]\n{extra}\nconfig = {{ script = \"{script}\", report_messages = \"true\" }}\n"
    )
}

/// Start the host with an admin endpoint on a free port; returns it with its output lines.
fn start(scenario: &Scenario) -> (Child, Lines, Vec<Value>, String) {
    let child = agora()
        .args(["run", "--log-format", "json", "--admin", "127.0.0.1:0", scenario.manifest.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::until_admin_listens(child)
}

fn wait_for_log(lines: &mut Lines, seen: &mut Vec<Value>, agent: &str, message: &str) {
    wait_for_event(lines, seen, |e| {
        e["agent"] == agent && e["message"].as_str().is_some_and(|m| m.starts_with(message))
    });
}

fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nhost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn logged(seen: &[Value], agent: &str) -> Vec<String> {
    seen.iter()
        .filter(|e| e["event"] == "agent_log" && e["agent"] == agent)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn outcome(seen: &[Value], agent: &str, step: &str) -> String {
    let prefix = format!("probe: {step} => ");
    logged(seen, agent)
        .iter()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("{agent} logged nothing for {step:?}: {:#?}", logged(seen, agent)))
}

#[test]
fn config_is_read_updated_at_allowed_paths_and_pushed_to_subscribers() {
    let config = "[config]\nupdatable = [\"pricing\"]\n[config.values]\ngreeting = \"hello\"\n\
                  pricing = { rate = 3, currency = \"EUR\" }\n";
    let reader = probe(
        "reader",
        "\"messaging\", \"logging\", \"config\"",
        "",
        "config-get greeting; config-get pricing.rate; config-get pricing; config-get missing; \
         config-entries pricing; config-subscribe pricing; log ready",
    );
    let outsider = probe("outsider", "\"messaging\", \"logging\"", "", "config-get greeting; stop");
    let scenario = Scenario::agents("", &format!("{reader}{outsider}{config}"));
    let (child, mut lines, mut seen, _) = start(&scenario);
    wait_for_log(&mut lines, &mut seen, "reader", "probe: log ready");
    let manifest = scenario.manifest.to_str().unwrap();

    let set = run_agora(&["config", "set", manifest, "pricing.rate", "5"]);
    set.assert_success();
    assert!(set.stdout.contains("1 subscribers notified"), "{}", set.stdout);
    let refused = run_agora(&["config", "set", manifest, "greeting", "bye"]);
    refused.assert_failure();
    assert!(refused.stderr.contains("\"greeting\" is not updatable"), "{}", refused.stderr);
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    let get = run_agora(&["config", "get", manifest, "pricing.rate"]);
    get.assert_success();
    assert_eq!(get.stdout.trim(), "5");
    assert_eq!(run_agora(&["config", "get", manifest, "greeting"]).stdout.trim(), "hello");
    run_agora(&["config", "unset", manifest, "pricing.currency"]).assert_success();
    let gone = run_agora(&["config", "get", manifest, "pricing.currency"]);
    gone.assert_failure();
    assert!(gone.stderr.contains("no config value at \"pricing.currency\""), "{}", gone.stderr);
    let all = run_agora(&["config", "get", manifest]);
    all.assert_success();
    assert_eq!(
        serde_json::from_str::<Value>(&all.stdout).unwrap(),
        serde_json::json!({ "greeting": "hello", "pricing.rate": "5" })
    );

    wait_for_log(&mut lines, &mut seen, "reader", "probe got [agora:config] pricing.currency=");
    terminate(&child);
    seen.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));

    assert_eq!(outcome(&seen, "reader", "config-get greeting"), "value hello");
    assert_eq!(outcome(&seen, "reader", "config-get pricing.rate"), "value 3");
    assert!(outcome(&seen, "reader", "config-get pricing").starts_with("error invalid("));
    assert_eq!(outcome(&seen, "reader", "config-get missing"), "value none");
    assert_eq!(outcome(&seen, "reader", "config-entries pricing"), "entries [pricing.currency=EUR,pricing.rate=3]");
    assert_eq!(outcome(&seen, "outsider", "config-get greeting"), "error denied");
    let pushed: Vec<String> =
        logged(&seen, "reader").into_iter().filter(|l| l.starts_with("probe got [agora:config]")).collect();
    assert_eq!(
        pushed,
        ["probe got [agora:config] pricing.rate=5", "probe got [agora:config] pricing.currency="],
        "one notification per change, none for the refused one"
    );
    let changed: Vec<&Value> = seen.iter().filter(|e| e["event"] == "config_changed").collect();
    assert_eq!(changed.len(), 2, "the refused update changed nothing");
}

#[test]
fn events_are_appended_queried_by_each_filter_paged_and_pushed_by_kind() {
    let listener = probe(
        "listener",
        "\"messaging\", \"logging\", \"events\", \"registry\"",
        "",
        "event-subscribe order; register listening",
    );
    let writer = probe(
        "writer",
        "\"messaging\", \"logging\", \"events\", \"registry\"",
        "",
        "await listening 10000; event-append order c-1 first; sleep 5; mark; sleep 5; \
         event-append order - second; event-append tick - beat; event-append order c-2 third; \
         event-query kind=order; event-query kind=tick agent=writer; event-query correlation=c-2; \
         event-query kind=order since=mark; event-query kind=order until=mark; event-query agent=nobody; \
         event-all 2 kind=order; event-query kind=order newest=true limit=2; \
         event-query kind=agent_started agent=listener; \
         event-append bad~kind - x; stop",
    );
    let outsider =
        probe("outsider", "\"messaging\", \"logging\"", "", "event-append order - x; event-query kind=order; stop");
    // Until the writer is done and the listener has handled the third pushed event.
    let run = Scenario::agents("", &format!("{listener}{writer}{outsider}")).run_until_exit_and("writer", |e| {
        e["agent"] == "listener"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("probe got [agora:event/order]") && m.ends_with("third"))
    });

    let query = |step: &str| run.outcome("writer", step);
    assert!(query("event-append order c-1 first").starts_with("seq "));
    assert_eq!(
        query("event-query kind=order"),
        "events 3 [order:writer:first,order:writer:second,order:writer:third] next none"
    );
    assert_eq!(query("event-query kind=tick agent=writer"), "events 1 [tick:writer:beat] next none");
    assert_eq!(query("event-query correlation=c-2"), "events 1 [order:writer:third] next none");
    assert_eq!(
        query("event-query kind=order since=mark"),
        "events 2 [order:writer:second,order:writer:third] next none"
    );
    assert_eq!(query("event-query kind=order until=mark"), "events 1 [order:writer:first] next none");
    assert_eq!(query("event-query agent=nobody"), "events 0 [] next none");
    assert_eq!(query("event-all 2 kind=order"), "pages [2,1] payloads [first,second,third]");
    let newest = query("event-query kind=order newest=true limit=2");
    assert!(newest.starts_with("events 2 [order:writer:third,order:writer:second] next "), "{newest}");
    assert!(query("event-query kind=agent_started agent=listener").starts_with("events 1 [agent_started:listener:{"));
    assert!(query("event-append bad~kind - x").starts_with("error invalid("));
    assert_eq!(run.outcome("outsider", "event-append order - x"), "error denied");
    assert_eq!(run.outcome("outsider", "event-query kind=order"), "error denied");

    let pushed: Vec<String> =
        run.logs("listener").into_iter().filter(|l| l.starts_with("probe got [agora:event/order]")).collect();
    assert_eq!(pushed.len(), 3, "{pushed:#?}");
    assert!(pushed[0].contains("agent=writer correlation=c-1\nfirst"), "{}", pushed[0]);
    assert!(pushed[1].ends_with("correlation=\nsecond"), "{}", pushed[1]);
}

#[test]
fn events_refuse_payloads_over_max_payload_pages_hold_at_most_1000_and_memory_stores_forget() {
    let grants = "\"messaging\", \"logging\", \"events\"";
    let writer = probe(
        "writer",
        grants,
        "",
        "event-append small - 0123456789abcdef; event-append small - 0123456789abcdefX; \
         event-append-many 1200 many; event-all 5000 kind=many; event-query kind=many limit=0; stop",
    );
    let events = "[events]\nmax_payload = \"16B\"\ndurable = false\n";
    let scenario = Scenario::finite("", &format!("{writer}{events}"));
    let run = scenario.run();
    run.assert_success();
    let step = |s: &str| run.outcome("writer", s);
    assert!(step("event-append small - 0123456789abcdef").starts_with("seq "), "16 bytes are within 16B");
    assert_eq!(step("event-append small - 0123456789abcdefX"), "error too-large(16)");
    let all = step("event-all 5000 kind=many");
    let payloads: Vec<String> = (0..1200).map(|i| i.to_string()).collect();
    assert_eq!(all, format!("pages [1000,200] payloads [{}]", payloads.join(",")), "a page holds at most 1000");
    assert!(step("event-query kind=many limit=0").starts_with("events 1 [many:writer:0] next "), "at least one");
    assert!(!scenario.dir.path().join("data/events.redb").exists(), "durable = false writes no store");

    // The next run on the same data starts empty.
    let reader = probe("reader", grants, "", "event-query kind=small; stop");
    std::fs::write(
        &scenario.manifest,
        format!("{}\n{reader}{events}\n[supervisor]\nauto_shutdown = \"all_significant\"\n", common::header("")),
    )
    .unwrap();
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("reader", "event-query kind=small"), "events 0 [] next none");
}

#[test]
fn notifications_that_meet_a_full_mailbox_are_dropped_and_counted() {
    let grants = "\"messaging\", \"logging\", \"events\", \"registry\"";
    // Busy in its script until the writer is gone, with room for three messages.
    let listener =
        probe("listener", grants, "mailbox = 3", "event-subscribe k; register listening; await-gone writer 30000");
    let writer = probe("writer", grants, "", "await listening 10000; event-append-many 10 k; stop");
    let run = Scenario::agents("", &format!("{listener}{writer}")).run_until(|e| {
        e["agent"] == "listener"
            && e["message"].as_str().is_some_and(|m| m.starts_with("probe got [agora:event/k]") && m.ends_with("\n2"))
    });
    let got: Vec<String> =
        run.logs("listener").into_iter().filter(|l| l.starts_with("probe got [agora:event/k]")).collect();
    assert_eq!(got.len(), 3, "the mailbox held three: {got:#?}");
    let dropped: Vec<&serde_json::Value> = run.events("notification_dropped", None);
    assert_eq!(dropped.len(), 7, "the other seven were dropped, each with a warning: {dropped:#?}");
    assert!(dropped.iter().all(|e| e["topic"] == "agora:event/k"), "{dropped:#?}");
}

#[test]
fn retention_keeps_the_newest_events_and_drops_old_ones() {
    let counted = probe(
        "counted",
        "\"messaging\", \"logging\", \"events\"",
        "",
        "event-append-many 20 bulk; await-outcome 30000 event-all 100 => pages [5] payloads [15,16,17,18,19]; stop",
    );
    let scenario = Scenario::finite("", &format!("{counted}\n[events]\nretain_events = 5\n"));
    let run = scenario.run();
    run.assert_success();
    let step = "await-outcome 30000 event-all 100 => pages [5] payloads [15,16,17,18,19]";
    assert_eq!(run.outcome("counted", step), "pages [5] payloads [15,16,17,18,19]", "the newest five are kept");

    let aged = probe(
        "aged",
        "\"messaging\", \"logging\", \"events\"",
        "",
        // Until the old ones are gone (retain_for 1 s), then a young one is kept.
        "event-append-many 3 old; event-all 100 kind=old; \
         await-outcome 30000 event-all 100 kind=old => pages [0] payloads []; \
         event-append young - fresh; event-all 100 kind=young; stop",
    );
    let scenario = Scenario::finite("", &format!("{aged}\n[events]\nretain_for = \"1s\"\n"));
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("aged", "event-all 100 kind=old"), "pages [3] payloads [0,1,2]", "kept while young");
    assert_eq!(
        run.outcome("aged", "await-outcome 30000 event-all 100 kind=old => pages [0] payloads []"),
        "pages [0] payloads []",
        "gone once older than retain_for"
    );
    assert_eq!(run.outcome("aged", "event-all 100 kind=young"), "pages [1] payloads [fresh]");
}

#[test]
fn every_acknowledged_event_survives_a_sigkill_in_mid_write() {
    let writers: String = (0..4)
        .map(|i| {
            probe(
                &format!("writer-{i}"),
                "\"messaging\", \"logging\", \"events\"",
                "",
                "event-stream bulk 100000000 500",
            )
        })
        .collect();
    let scenario = Scenario::finite("", &writers);
    let mut child = scenario.spawn();
    let mut lines = lines_of(&mut child);
    // Kill once every writer has had a few thousand appends acknowledged. A line read here was
    // logged after its acknowledgement, so those appends were durable before the kill.
    let mut acked = [0u64; 4];
    for line in lines.by_ref() {
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if let (Some(agent), Some(message)) = (event["agent"].as_str(), event["message"].as_str())
            && let (Some(index), Some(count)) = (agent.strip_prefix("writer-"), message.strip_prefix("acked "))
        {
            acked[index.parse::<usize>().unwrap()] = count.parse().unwrap();
        }
        if acked.iter().all(|n| *n >= 3000) {
            break;
        }
    }
    std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    let _ = child.wait();

    // The host opens the store again (redb repairs it) and runs.
    let reader = probe(
        "reader",
        "\"messaging\", \"logging\", \"events\"",
        "",
        "event-append after-crash - ok; event-query kind=after-crash; stop",
    );
    let ends = "[supervisor]\nauto_shutdown = \"all_significant\"\n";
    std::fs::write(&scenario.manifest, format!("{}\n{reader}\n{ends}", common::header(""))).unwrap();
    let run = scenario.run();
    run.assert_success();
    assert_eq!(run.outcome("reader", "event-query kind=after-crash"), "events 1 [after-crash:reader:ok] next none");

    // Every acknowledged append of every writer is in the store, in order.
    let store = agora_host::capabilities::events::EventStore::open(
        &scenario.dir.path().join("data/events.redb"),
        agora_host::capabilities::events::Retention {
            max_events: None,
            max_age: None,
            max_bytes: None,
            check_every: std::time::Duration::from_secs(3600),
        },
        None,
    )
    .unwrap();
    for (index, count) in acked.iter().enumerate() {
        let mut query = agora_host::capabilities::events::Query {
            kind: Some("bulk".into()),
            agent: Some(format!("writer-{index}")),
            limit: 1000,
            ..Default::default()
        };
        let mut expected = 0u64;
        loop {
            let page = store.query(&query).unwrap();
            for event in &page.events {
                assert_eq!(event.payload, expected.to_string().into_bytes(), "writer-{index}: gap before {expected}");
                expected += 1;
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert!(expected >= *count, "writer-{index}: {count} acknowledged, {expected} stored");
    }
}

#[test]
fn telemetry_reaches_the_prometheus_endpoint() {
    let spread: Vec<String> = (1..=100).map(|v| format!("histogram spread {v}")).collect();
    let meter = probe(
        "meter",
        "\"messaging\", \"logging\", \"telemetry\"",
        "",
        &format!(
            "counter jobs_done 3; counter jobs_done 2; gauge queue_len 7.5; histogram latency_ms 12; \
             histogram latency_ms 30; {}; counter Bad-Name 1; gauge jobs_done 1; log ready",
            spread.join("; ")
        ),
    );
    let mute = probe("mute", "\"messaging\", \"logging\"", "", "counter jobs_done 1; stop");
    // Stops normally after a moment; permanent, so its supervisor restarts it, three times:
    // the fourth stop is past the supervisor's intensity, which gives up (and, temporary, stays
    // down), so that the count is final when scraped.
    let bouncer = "[[supervisor.children]]\nname = \"bouncing\"\nrestart = \"temporary\"\nintensity = 3\nperiod = \"1h\"\n\
                   [[supervisor.children.children]]\nname = \"bouncer\"\nmodule = \"probe\"\ngrants = [\"messaging\"]\n\
                   config = { script = \"sleep 10; stop\" }\n";
    let children = format!("{meter}{mute}").replace("[[agent]]", "[[supervisor.children]]");
    let scenario = Scenario::agents("", &format!("{children}{bouncer}"));
    let (child, mut lines, mut seen, address) = start(&scenario);
    wait_for_log(&mut lines, &mut seen, "meter", "probe: log ready");
    if !seen.iter().any(|e| e["event"] == "supervisor_failed" && e["supervisor"] == "bouncing") {
        wait_for_event(&mut lines, &mut seen, |e| e["event"] == "supervisor_failed" && e["supervisor"] == "bouncing");
    }
    let scraped = http_get(&address, "/metrics");
    terminate(&child);
    seen.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));

    assert!(scraped.starts_with("HTTP/1.0 200") || scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    for expected in [
        "agora_agent_jobs_done{agent=\"meter\"} 5",
        "agora_agent_queue_len{agent=\"meter\"} 7.5",
        "agora_agent_latency_ms{agent=\"meter\",quantile=\"0.5\"}",
        "agora_agent_latency_ms_count{agent=\"meter\"} 2",
        "agora_messages_in_total{agent=\"meter\"}",
        "agora_messages_out_total{agent=\"meter\"}",
        "agora_handle_seconds{agent=\"meter\",quantile=\"0.99\"}",
        "agora_memory_peak_bytes{agent=\"meter\"}",
        "agora_mailbox_depth{agent=\"meter\"}",
        "# TYPE agora_cpu_budget_ticks_total counter",
        "agora_restarts_total{agent=\"bouncer\"} 3",
    ] {
        assert!(scraped.contains(expected), "missing {expected:?} in:\n{scraped}");
    }
    let restarted = seen.iter().filter(|e| e["event"] == "agent_restarted" && e["agent"] == "bouncer").count();
    assert_eq!(restarted, 3, "the exported count is the restarts that happened");
    // 100 samples, 1 to 100: each quantile within the sketch's 1% of the value at its rank
    // (q × (n − 1), rounded down or up: the two conventions).
    let quantile = |q: &str| -> f64 {
        let key = format!("agora_agent_spread{{agent=\"meter\",quantile=\"{q}\"}} ");
        let line = scraped.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("no {key} in {scraped}"));
        line[key.len()..].trim().parse().unwrap()
    };
    for (q, low, high) in [("0.5", 50.0, 51.0), ("0.9", 90.0, 91.0), ("0.99", 99.0, 100.0)] {
        let value = quantile(q);
        assert!(value >= low * 0.99 && value <= high * 1.01, "quantile {q}: {value}");
    }
    assert!(scraped.contains("agora_agent_spread_sum{agent=\"meter\"} 5050\n"), "{scraped}");
    assert!(scraped.contains("agora_agent_spread_count{agent=\"meter\"} 100\n"), "{scraped}");
    assert!(!scraped.contains("agora_agent_jobs_done{agent=\"mute\"}"), "an ungranted agent records nothing");
    assert!(outcome(&seen, "meter", "counter Bad-Name 1").starts_with("error invalid("));
    assert!(outcome(&seen, "meter", "gauge jobs_done 1").starts_with("error invalid("));
    assert_eq!(outcome(&seen, "mute", "counter jobs_done 1"), "error denied");
}

#[test]
fn an_agent_may_make_at_most_256_metrics() {
    let steps: Vec<String> = (0..257).map(|i| format!("counter m{i} 1")).collect();
    let script = format!("{}; counter m0 1; gauge m0 1; stop", steps.join("; "));
    let meter = probe("meter", "\"messaging\", \"logging\", \"telemetry\"", "", &script);
    let run = Scenario::finite("", &meter).run();
    run.assert_success();
    assert_eq!(run.outcome("meter", "counter m255 1"), "ok", "the 256th is made");
    let refused = run.outcome("meter", "counter m256 1");
    assert!(refused.starts_with("error invalid(") && refused.contains("at most 256"), "{refused}");
    let again: Vec<String> =
        run.logs("meter").into_iter().filter(|l| l.starts_with("probe: counter m0 1 => ")).collect();
    assert_eq!(again, ["probe: counter m0 1 => ok", "probe: counter m0 1 => ok"], "a made metric stays usable");
    assert!(run.outcome("meter", "gauge m0 1").starts_with("error invalid("), "a name keeps its first kind");
}

#[test]
fn named_rate_limiters_check_and_wait_per_key() {
    let limits = "[rate_limits.api]\nlimit = 3\nper = \"1m\"\nkeyed = true\n\
                  [rate_limits.shared]\nlimit = 3\nper = \"1m\"\n\
                  [rate_limits.fast]\nlimit = 10\nper = \"1s\"\nburst = 1\n\
                  [rate_limits.slow]\nlimit = 1\nper = \"1h\"\n";
    let user = probe(
        "user",
        "\"messaging\", \"logging\", \"rate-limits\"",
        "",
        "limit-count api alice 5; limit-count api bob 5; limit api alice 1; limit api carol 4; \
         limit-count shared alice 2; limit-count shared bob 2; limit nope k 1; \
         limit fast k 1; limit-wait fast k 1 1000; limit slow k 1; limit-wait slow k 1 1000; stop",
    );
    let outsider = probe("outsider", "\"messaging\", \"logging\"", "", "limit api alice 1; stop");
    let run = Scenario::finite("", &format!("{user}{outsider}{limits}")).run();
    run.assert_success();
    let step = |s: &str| run.outcome("user", s);
    assert_eq!(step("limit-count api alice 5"), "passed 3");
    assert_eq!(step("limit-count api bob 5"), "passed 3", "each key has its own budget");
    assert!(step("limit api alice 1").starts_with("error limited (retry after "), "{}", step("limit api alice 1"));
    assert_eq!(step("limit api carol 4"), "error LimitError::ExceedsBurst(4)");
    assert_eq!(step("limit-count shared alice 2"), "passed 2");
    assert_eq!(step("limit-count shared bob 2"), "passed 1", "an unkeyed limiter is one budget");
    assert_eq!(step("limit nope k 1"), "error LimitError::NotFound");
    assert_eq!(step("limit fast k 1"), "ok");
    assert_eq!(step("limit-wait fast k 1 1000"), "ok", "waited for the next cell");
    assert_eq!(step("limit slow k 1"), "ok");
    // The next cell of one an hour is far beyond the wait.
    assert_eq!(step("limit-wait slow k 1 1000"), "error LimitError::Timeout");
    assert_eq!(run.outcome("outsider", "limit api alice 1"), "error LimitError::Denied");
}

#[test]
fn series_of_exited_agents_expire_and_live_ones_stay() {
    let brief = probe("brief", "\"messaging\", \"logging\", \"telemetry\"", "", "counter visits 1; stop");
    let stayer = probe("stayer", "\"messaging\", \"logging\"", "", "log ready");
    let scenario = Scenario::agents("", &format!("{brief}{stayer}\n[telemetry]\nidle_timeout = \"1s\"\n"));
    let (child, mut lines, mut seen, address) = start(&scenario);
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_exited" && e["agent"] == "brief");
    let first = http_get(&address, "/metrics");
    // Idle for 1 s, the exited agent's series go; polled, so that a slow machine only waits longer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let later = loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let scraped = http_get(&address, "/metrics");
        if !scraped.contains("agent=\"brief\"") || std::time::Instant::now() > deadline {
            break scraped;
        }
    };
    terminate(&child);
    assert!(first.contains("agora_agent_visits{agent=\"brief\"} 1"), "{first}");
    assert!(first.contains("agora_messages_in_total{agent=\"brief\"}"), "{first}");
    assert!(!later.contains("agent=\"brief\""), "an exited agent's series expire:\n{later}");
    assert!(later.contains("agora_messages_in_total{agent=\"stayer\"}"), "a live agent's stay:\n{later}");
}

#[test]
fn metered_compute_shows_per_agent_in_prometheus() {
    let spender =
        probe("spender", "\"messaging\", \"logging\", \"economics\"", "wallet = 1000000", "spin 200000; stop");
    // Keeps the host (and its endpoint) up after the spender has gone.
    let bystander = probe("bystander", "\"messaging\", \"logging\"", "wallet = 100000", "log idle");
    let priced = "[economics]\ncompute_price = 1\ncompute_unit = 1000\ncompute_slice = 10000\n";
    let scenario = Scenario::agents("tick = \"1ms\"", &format!("{priced}{spender}{bystander}"));
    let (child, mut lines, mut seen, address) = start(&scenario);
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_exited" && e["agent"] == "spender");
    let scraped = http_get(&address, "/metrics");
    terminate(&child);
    let value = |series: &str| -> u64 {
        let line =
            scraped.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("{series}: {scraped}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    let fuel = value("agora_fuel_consumed_total{agent=\"spender\"} ");
    let charged = value("agora_compute_charged_total{agent=\"spender\"} ");
    assert!(fuel > 200_000, "a 200,000-round spin burns more fuel than that: {fuel}");
    // Whole units are bought ahead and the unburned ones paid back when the agent exits: what
    // it was charged in the end is its fuel's price, rounded up to a whole unit.
    assert_eq!(charged, fuel.div_ceil(1000), "billed at 1 credit per 1,000 fuel: {charged} for {fuel}");
}
