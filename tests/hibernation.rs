//! Hibernation through the real binary (the first part of issue 18): an idle counter hibernates
//! (no instance, its state taken) and the next messages wake it with its count intact, in
//! order; a stateless agent is woken by `init`.

mod common;

use std::time::{Duration, Instant};

use common::{Scenario, api, terminate, until_admin_listens, wait_for_event};

/// The agent's state as the listing shows it (asking the agent itself would wake it).
fn state(address: &str, token: &str, name: &str) -> String {
    let (_, listed) = api(address, token, "GET", &format!("/v1/agents?name={name}"), "");
    listed["agents"][0]["state"].as_str().unwrap_or("").to_string()
}

fn until_state(address: &str, token: &str, name: &str, wanted: &str) {
    let deadline = Instant::now() + common::RUN_TIMEOUT;
    while state(address, token, name) != wanted {
        assert!(Instant::now() < deadline, "{name} never became {wanted}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_agent_hibernates_and_wakes_with_its_state_and_its_messages_in_order() {
    let agents = "[[agent]]\nname = \"counter\"\nmodule = \"counter\"\ngrants = [\"messaging\", \"logging\"]\nhibernate_after = \"100ms\"\n\
                  [[agent]]\nname = \"echo\"\nmodule = \"echo\"\ngrants = [\"messaging\"]\nhibernate_after = \"100ms\"\nstateless = true\n";
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", agents);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "echo");
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
    let call = |name: &str, payload: &str| {
        let (status, body) =
            api(&address, &token, "POST", &format!("/v1/agents/{name}/call?timeout_ms=10000"), payload);
        assert_eq!(status, 200, "{body}");
        body["reply"].as_str().unwrap().to_string()
    };
    assert_eq!(call("counter", "add 5"), "5");
    until_state(&address, &token, "counter", "hibernated");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_hibernated" && e["agent"] == "counter");
    // Three casts while it sleeps, then a call: all of them, in order, on the restored count.
    for _ in 0..3 {
        assert_eq!(api(&address, &token, "POST", "/v1/agents/counter/send", "inc").0, 202);
    }
    assert_eq!(call("counter", "get"), "8");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_woken" && e["agent"] == "counter");
    // It hibernates again, and again wakes with its state.
    until_state(&address, &token, "counter", "hibernated");
    assert_eq!(call("counter", "inc"), "9");
    // A stateless agent without the state interface hibernates too, and `init` wakes it.
    until_state(&address, &token, "echo", "hibernated");
    assert_eq!(call("echo", "still here"), "still here");
    terminate(&child);
}
