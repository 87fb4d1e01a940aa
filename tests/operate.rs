//! Operating a running host through the admin API and its CLI: `ps`, `call`, `send`, `kill`,
//! the bearer token (refused without it, nothing changed), and the exit codes.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Run, Scenario, agora, run_command, terminate, until_admin_listens, wait_for_event};

const AGENTS: &str = "[[agent]]\nname = \"echo\"\nmodule = \"echo\"\ngrants = [\"messaging\", \"registry\", \"logging\"]\n\
                      [[agent]]\nname = \"counter\"\nmodule = \"counter\"\ngrants = [\"messaging\", \"logging\"]\n";

fn raw(address: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The status and headers of a response whose body streams (the dashboard's live feed), read
/// until the headers end.
fn raw_head(address: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), head)
}

fn cli(scenario: &Scenario, args: &[&str]) -> Run {
    let mut all: Vec<&str> = vec![args[0], scenario.manifest.to_str().unwrap()];
    all.extend(&args[1..]);
    run_command(agora(), &all)
}

#[test]
fn an_operator_lists_calls_sends_and_kills_agents_with_the_token() {
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", AGENTS);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "counter");

    // The token: this user's only, and required.
    let token_file = scenario.dir.path().join("data/admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let get = |auth: &str| {
        raw(&address, &format!("GET /v1/agents HTTP/1.1\r\nhost: {address}\r\n{auth}connection: close\r\n\r\n"))
    };
    let (status, body) = get("");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    assert_eq!(get("authorization: Bearer wrong\r\n").0, 401);
    let kill = format!(
        "POST /v1/agents/counter/kill HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer x{token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(raw(&address, &kill).0, 401);
    let (status, body) = get(&format!("authorization: Bearer {token}\r\n"));
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["agents"].as_array().unwrap().len(), 2, "{listed}");

    let authed = |path: &str| {
        let (status, body) = raw(
            &address,
            &format!(
                "GET {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
            ),
        );
        (status, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default())
    };
    let (status, host) = authed("/v1/status");
    assert_eq!(status, 200);
    assert_eq!((host["agents"].as_u64(), host["version"].is_string()), (Some(2), true), "{host}");
    let (status, echo) = authed("/v1/agents/echo");
    assert_eq!((status, echo["name"].as_str(), echo["module"].as_str()), (200, Some("echo"), Some("echo")), "{echo}");
    assert_eq!(authed("/v1/agents/nobody").1["error"]["code"], "not-found");
    assert_eq!(authed("/v1/nothing-here").0, 404);

    // ps: a table, and JSON.
    let ps = cli(&scenario, &["ps"]);
    ps.assert_success();
    let table: Vec<&str> = ps.stdout.lines().collect();
    assert!(table[0].starts_with("NAME") && table[0].contains("MAILBOX"), "{}", ps.stdout);
    assert!(table[0].contains("STATE") && table[0].contains("SUPERVISOR"), "{}", ps.stdout);
    assert!(table[1].starts_with("counter ") && table[2].starts_with("echo "), "sorted by name:\n{}", ps.stdout);
    let json = cli(&scenario, &["ps", "--json", "--sort", "memory"]);
    json.assert_success();
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(parsed["agents"].as_array().unwrap().iter().all(|a| a["module"].is_string()), "{parsed}");
    // Filters: by module, supervisor and state exactly, by a part of the name.
    let only = |query: &str| -> Vec<String> {
        let (status, listed) = authed(&format!("/v1/agents?{query}"));
        assert_eq!(status, 200, "{listed}");
        listed["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(only("module=counter"), ["counter"]);
    assert_eq!(only("supervisor=root&name=ch"), ["echo"]);
    assert_eq!(only("supervisor=nobody"), Vec::<String>::new());
    assert_eq!(only("state=upgrading"), Vec::<String>::new());
    let bad = cli(&scenario, &["ps", "--sort", "colour"]);
    assert_eq!(bad.status.code(), Some(1), "a refusal exits 1: {}", bad.stderr);
    assert!(bad.stderr.contains("(invalid, 400"), "{}", bad.stderr);

    // call and send.
    let echoed = cli(&scenario, &["call", "echo", "hello there"]);
    echoed.assert_success();
    assert_eq!(echoed.stdout, "hello there\n");
    let file = scenario.dir.path().join("payload.txt");
    std::fs::write(&file, "from a file").unwrap();
    assert_eq!(cli(&scenario, &["call", "echo", &format!("@{}", file.display())]).stdout, "from a file\n");
    for _ in 0..3 {
        cli(&scenario, &["send", "counter", "inc"]).assert_success();
    }
    assert_eq!(cli(&scenario, &["call", "counter", "get"]).stdout, "3\n");
    let nobody = cli(&scenario, &["call", "nobody", "x"]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(nobody.stderr.contains("no live agent is named \"nobody\" (not-found, 404"), "{}", nobody.stderr);
    let refused = cli(&scenario, &["call", "counter", "dance"]);
    assert!(
        refused.stderr.contains("it refused the message: unknown command \"dance\" (failed, 422"),
        "{}",
        refused.stderr
    );

    // kill: as exit(Pid, kill); the permanent counter comes back, with its state lost.
    let killed = cli(&scenario, &["kill", "counter"]);
    killed.assert_success();
    assert!(killed.stdout.starts_with("killed counter (id "), "{}", killed.stdout);
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_exited" && e["agent"] == "counter");
    assert_eq!(seen.iter().rev().find(|e| e["event"] == "agent_exited").unwrap()["reason"], "killed");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_restarted" && e["agent"] == "counter");
    assert_eq!(cli(&scenario, &["call", "counter", "get"]).stdout, "0\n");

    // The event store, read by the operator.
    // Lifecycle events are journaled by the store's writer, a moment after they happen.
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    let agents = loop {
        let started = cli(&scenario, &["events", "--kind", "agent_started", "--json"]);
        started.assert_success();
        let page: serde_json::Value = serde_json::from_str(&started.stdout).unwrap();
        let agents: Vec<String> =
            page["events"].as_array().unwrap().iter().filter_map(|e| e["agent"].as_str().map(String::from)).collect();
        if agents.len() >= 3 || std::time::Instant::now() > deadline {
            break agents;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(agents, ["echo", "counter", "counter"], "started, and the restart after the kill");
    let newest =
        cli(&scenario, &["events", "--agent", "counter", "--kind", "agent_exited", "--newest", "--limit", "1"]);
    newest.assert_success();
    let rows: Vec<&str> = newest.stdout.lines().collect();
    assert!(
        rows[0].contains("agent_exited  counter  {") && rows[0].contains("\"reason\":\"killed\""),
        "{}",
        newest.stdout
    );
    let bad = cli(&scenario, &["events", "--kind", "x", "--limit", "nope"]);
    assert_eq!(bad.status.code(), Some(2), "a bad command line is 2: {}", bad.stderr);

    // stop keeps it down (OTP's terminate_child), restart brings it back, the tree shows both.
    let stopped = cli(&scenario, &["stop", "echo"]);
    stopped.assert_success();
    assert_eq!(stopped.stdout, "stopped echo under root\n");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_exited" && e["agent"] == "echo");
    assert_eq!(seen.iter().rev().find(|e| e["event"] == "agent_exited").unwrap()["reason"], "shutdown");
    let tree = cli(&scenario, &["tree"]);
    tree.assert_success();
    assert!(
        tree.stdout.starts_with("root (supervisor)\n  echo (agent, terminated, id -, 0 restarts)\n"),
        "{}",
        tree.stdout
    );
    assert!(tree.stdout.contains("  counter (agent, running, id "), "{}", tree.stdout);
    let down = cli(&scenario, &["call", "echo", "anyone?"]);
    assert_eq!(down.status.code(), Some(1), "a stopped agent stays down: {}", down.stdout);
    let restarted = cli(&scenario, &["restart", "echo"]);
    restarted.assert_success();
    assert!(restarted.stdout.starts_with("restarted echo (id "), "{}", restarted.stdout);
    assert_eq!(cli(&scenario, &["call", "echo", "back"]).stdout, "back\n");
    let json_tree = cli(&scenario, &["tree", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json_tree.stdout).unwrap();
    let echo = parsed["supervisors"]["root"].as_array().unwrap().iter().find(|c| c["name"] == "echo").unwrap().clone();
    assert_eq!((echo["state"].as_str(), echo["restarts"].as_u64()), (Some("running"), Some(1)), "{parsed}");
    assert_eq!(cli(&scenario, &["stop", "nobody"]).status.code(), Some(1));

    // A remote host: its address and a copy of its token.
    let copy = scenario.dir.path().join("token-copy");
    std::fs::copy(&token_file, &copy).unwrap();
    let remote = run_command(
        agora(),
        &["call", "--admin", &address, "--token-file", copy.to_str().unwrap(), "echo", "far away"],
    );
    remote.assert_success();
    assert_eq!(remote.stdout, "far away\n");

    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let gone = cli(&scenario, &["ps"]);
    assert_eq!(gone.status.code(), Some(2), "no host is 2: {}", gone.stderr);
    assert!(gone.stderr.contains("no host is running on"), "{}", gone.stderr);
    // The next start has a new token.
    let (child, _lines, _seen, _address) = until_admin_listens(scenario.spawn());
    assert_ne!(std::fs::read_to_string(&token_file).unwrap(), token);
    terminate(&child);
}

#[test]
fn the_openapi_document_names_every_route_and_each_one_answers() {
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", AGENTS);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "counter");
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
    let request = |method: &str, path: &str, auth: bool| {
        let auth = if auth { format!("authorization: Bearer {token}\r\n") } else { String::new() };
        raw(
            &address,
            &format!(
                "{method} {path} HTTP/1.1\r\nhost: {address}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
            ),
        )
    };
    let (status, body) = request("GET", "/v1/openapi.json", false);
    assert_eq!(status, 200, "the document needs no token");
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 8, "{paths:?}");
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            // `counter` exists; a kill is left for last, the call gets a command it knows.
            let concrete = path.replace("{name}", "counter");
            let concrete = if concrete.ends_with("/call") { format!("{concrete}?timeout_ms=1000") } else { concrete };
            if path == "/v1/live" {
                // It streams until the client goes: its head is the answer.
                let (status, head) = raw_head(
                    &address,
                    &format!("GET /v1/live HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\r\n"),
                );
                assert_eq!(status, 200, "{head}");
                assert!(head.contains("text/event-stream"), "{head}");
                assert_eq!(request("GET", "/v1/live", false).0, 401);
                continue;
            }
            let (status, body) = request(&method.to_uppercase(), &concrete, true);
            let code: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            assert_ne!(code["error"]["code"], "no-route", "{method} {path} is documented but not served");
            assert!(status < 500 || status == 504 || status == 503, "{method} {path}: {status} {body}");
            if path != "/v1/openapi.json" {
                assert_eq!(
                    request(&method.to_uppercase(), &concrete, false).0,
                    401,
                    "{method} {path} without the token"
                );
            }
        }
    }
    // And a route that is not documented is not served.
    assert_eq!(request("GET", "/v1/agents/counter/state", true).0, 404);
    assert_eq!(request("DELETE", "/v1/agents/counter", true).0, 404);
    terminate(&child);
}

#[test]
fn a_fixed_token_file_is_used_when_it_is_private_and_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let file = dir.path().join("api.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let host = format!("admin = \"127.0.0.1:0\"\nadmin_token_file = {:?}", file.display().to_string());
    let scenario = Scenario::agents(&host, AGENTS);
    let open = run_command(agora(), &["check", scenario.manifest.to_str().unwrap()]);
    open.assert_failure();
    assert!(
        open.stderr.contains("`host.admin_token_file`") && open.stderr.contains("`chmod 600` it"),
        "{}",
        open.stderr
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "counter");
    let status = |bearer: &str| {
        raw(&address, &format!("GET /v1/status HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {bearer}\r\nconnection: close\r\n\r\n")).0
    };
    assert_eq!(status(token), 200);
    assert!(!scenario.dir.path().join("data/admin.token").exists(), "no token of its own is written");
    // The CLI reads the same file, from the manifest.
    let ps = cli(&scenario, &["ps", "--json"]);
    ps.assert_success();
    terminate(&child);

    // Too short a token is refused where it is set.
    std::fs::write(&file, "short\n").unwrap();
    let short = run_command(agora(), &["check", scenario.manifest.to_str().unwrap()]);
    short.assert_failure();
    assert!(short.stderr.contains("at least 32 characters"), "{}", short.stderr);
}

#[test]
fn the_api_is_served_on_a_unix_socket_with_the_same_token() {
    use std::os::unix::net::UnixStream;
    let scenario = Scenario::agents("admin = \"unix:admin.sock\"", AGENTS);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "counter");
    let socket = scenario.dir.path().join("admin.sock");
    assert_eq!(address, format!("unix:{}", socket.display()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only this user reaches the socket");
    // Without the token: refused, as on TCP.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.write_all(b"GET /v1/agents HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    // The CLI finds the socket through the manifest, and with --admin.
    let ps = cli(&scenario, &["ps"]);
    ps.assert_success();
    assert!(ps.stdout.contains("counter"), "{}", ps.stdout);
    let token = scenario.dir.path().join("data/admin.token");
    let call = run_command(
        agora(),
        &["call", "counter", "add 2", "--admin", &address, "--token-file", token.to_str().unwrap()],
    );
    call.assert_success();
    assert_eq!(call.stdout.trim(), "2");
    terminate(&child);
}
