//! The admin endpoint attacked as another local process or a browser page would: a wrong
//! `Host` (DNS rebinding), a foreign `Origin` on writes, near-miss routes, secret config values,
//! a config grown without bound, idle and surplus connections, and a process out of file
//! descriptors. Every request goes over a real loopback socket to the real binary.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Lines, Scenario, agora, terminate, wait_for_event};
use serde_json::Value;

/// The host under attack: an echo agent that keeps it running, the given host keys and config.
fn scenario(host_extra: &str, config: &str) -> Scenario {
    Scenario::agents(host_extra, &format!("[[agent]]\nname = \"echo\"\nmodule = \"echo\"\n{config}"))
}

thread_local! {
    /// The API token of the host this test started (each test runs on a thread of its own).
    static TOKEN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Start a host with its admin endpoint on a free loopback port, through `wrapper` (a shell
/// prefix such as `ulimit -n 64;`), and wait until it listens.
fn start(scenario: &Scenario, wrapper: &str) -> (Child, Lines, Vec<Value>, String) {
    let started = spawn(scenario, wrapper);
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
    TOKEN.with(|t| *t.borrow_mut() = token.trim().to_string());
    started
}

fn spawn(scenario: &Scenario, wrapper: &str) -> (Child, Lines, Vec<Value>, String) {
    let agora = agora().get_program().to_str().unwrap().to_string();
    let manifest = scenario.manifest.to_str().unwrap();
    let child = std::process::Command::new("sh")
        .args(["-c", &format!("{wrapper} exec {agora} run --log-format json --admin 127.0.0.1:0 {manifest}")])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::until_admin_listens(child)
}

/// One HTTP/1.1 request with the given extra headers (`Host` among them, or not); returns the
/// status code and the body.
fn request(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(common::RUN_TIMEOUT)).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    (status, body)
}

/// A request with this endpoint's `Host` and the host's token.
fn ask(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let bearer = format!("Bearer {}", TOKEN.with(|t| t.borrow().clone()));
    request(address, method, path, &[("host", address), ("authorization", &bearer)], body)
}

/// A counter's value in the `/metrics` exposition.
fn counter(address: &str, name: &str) -> u64 {
    let (_, metrics) = ask(address, "GET", "/metrics", "");
    let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn foreign_hosts_and_origins_are_refused_and_routes_are_exact() {
    let scenario = scenario("", "[config]\nupdatable = [\"app\"]\n[config.values]\napp = { name = \"x\" }\n");
    let (child, _lines, _seen, address) = start(&scenario, "");
    let port = address.rsplit(':').next().unwrap();
    let localhost = format!("localhost:{port}");
    // A page that rebinds its own name to 127.0.0.1 still sends its own name.
    let rebound = format!("attacker.example:{port}");
    assert_eq!(request(&address, "GET", "/health", &[("host", &rebound)], "").0, 421);
    assert_eq!(request(&address, "GET", "/config", &[("host", &rebound)], "").0, 421);
    assert_eq!(request(&address, "GET", "/health", &[], "").0, 421, "no Host at all");
    assert_eq!(request(&address, "GET", "/health", &[("host", &address)], ""), (200, "ok\n".into()));
    assert_eq!(request(&address, "GET", "/health", &[("host", &localhost)], "").0, 200);
    // Writes from another origin are refused; from this one (or without one: the CLI) accepted.
    let foreign = [("host", address.as_str()), ("origin", "http://attacker.example")];
    assert_eq!(request(&address, "PUT", "/config/app.name", &foreign, "evil").0, 403);
    let own_origin = format!("http://{address}");
    let bearer = format!("Bearer {}", TOKEN.with(|t| t.borrow().clone()));
    let own = [("host", address.as_str()), ("origin", own_origin.as_str()), ("authorization", bearer.as_str())];
    assert_eq!(request(&address, "PUT", "/config/app.name", &own, "y").0, 200);
    // The config takes the API's token: without it, nothing is read or changed.
    let plain = [("host", address.as_str())];
    assert_eq!(request(&address, "PUT", "/config/app.name", &plain, "evil").0, 401);
    assert_eq!(request(&address, "GET", "/config", &plain, "").0, 401);
    assert_eq!(ask(&address, "GET", "/config/app.name", ""), (200, "y".into()));
    // Exact routes: `/configX` is not `/config/X`.
    assert_eq!(ask(&address, "GET", "/configapp.name", "").0, 404);
    assert_eq!(ask(&address, "PUT", "/configapp.name", "z").0, 404);
    assert_eq!(ask(&address, "GET", "/healthz", "").0, 404);
    assert_eq!(ask(&address, "GET", "/config/app.name", "").1, "y");
    assert_eq!(counter(&address, "agora_admin_requests_refused_total"), 6);
    terminate(&child);
}

#[test]
fn secret_values_are_never_served_or_logged_and_the_config_is_bounded() {
    let config = "[config]\nupdatable = [\"app\"]\nsecret = [\"app.token\", \"db\"]\nmax_entries = 5\nmax_bytes = \"1KiB\"\n\
                  [config.values]\napp = { name = \"x\", token = \"first-secret\" }\ndb = { password = \"hunter2\" }\n\
                  [[agent]]\nname = \"reader\"\nmodule = \"probe\"\ngrants = [\"messaging\", \"logging\", \"config\"]\n\
                  config = { script = \"config-get app.token; config-get db.password; log ready\" }\n";
    let scenario = scenario("", config);
    let (child, mut lines, mut seen, address) = start(&scenario, "");
    wait_for_event(&mut lines, &mut seen, |e| e["agent"] == "reader" && e["message"] == "probe: log ready => ready");
    // Agents read secrets; the endpoint never serves them.
    let all: Value = serde_json::from_str(&ask(&address, "GET", "/config", "").1).unwrap();
    assert_eq!(all, serde_json::json!({ "app.name": "x" }));
    assert_eq!(ask(&address, "GET", "/config/app.token", "").0, 403);
    assert_eq!(ask(&address, "GET", "/config/db.password", "").0, 403);
    assert_eq!(ask(&address, "PUT", "/config/app.token", "second-secret").0, 200);
    assert_eq!(ask(&address, "GET", "/config/app.token", "").0, 403);
    // Three values live; two more fit, a sixth does not, a replacement does.
    assert_eq!(ask(&address, "PUT", "/config/app.a", "1").0, 200);
    assert_eq!(ask(&address, "PUT", "/config/app.b", "2").0, 200);
    let (status, body) = ask(&address, "PUT", "/config/app.c", "3");
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("the live config is full (5 values"), "{body}");
    assert_eq!(ask(&address, "PUT", "/config/app.a", "10").0, 200);
    // Bytes are bounded too: a value that would take the config past 1 KiB is refused.
    assert_eq!(ask(&address, "PUT", "/config/app.a", &"v".repeat(1000)).0, 507);
    assert_eq!(ask(&address, "DELETE", "/config/app.b", "").0, 200);
    assert_eq!(ask(&address, "PUT", "/config/app.c", "3").0, 200);
    assert_eq!(counter(&address, "agora_config_updates_refused_total"), 2);
    terminate(&child);
    seen.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));
    let outcome = |step: &str| {
        let prefix = format!("probe: {step} => ");
        seen.iter().find_map(|e| e["message"].as_str().and_then(|m| m.strip_prefix(&prefix))).map(str::to_string)
    };
    assert_eq!(outcome("config-get app.token").as_deref(), Some("value first-secret"));
    assert_eq!(outcome("config-get db.password").as_deref(), Some("value hunter2"));
    let changed: Vec<&Value> = seen.iter().filter(|e| e["event"] == "config_changed").collect();
    let token = changed.iter().find(|e| e["path"] == "app.token").expect("the secret's change is logged");
    assert_eq!(token["secret"], true);
    assert!(token.get("value").is_none_or(Value::is_null), "{token}");
    let everything = seen.iter().map(Value::to_string).collect::<String>();
    assert!(!everything.contains("second-secret"), "a secret reached the log");
}

#[test]
fn surplus_and_idle_connections_are_closed_and_accept_failures_do_not_spin() {
    let limited = scenario("admin_max_connections = 4\nadmin_idle_timeout = \"1s\"\n", "");
    let (child, _lines, _seen, address) = start(&limited, "");
    // Four silent connections hold every slot; a fifth is closed at once, unanswered.
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&address).unwrap()).collect();
    let mut surplus = TcpStream::connect(&address).unwrap();
    surplus.set_read_timeout(Some(common::RUN_TIMEOUT)).unwrap();
    let _ = write!(surplus, "GET /health HTTP/1.1\r\nhost: {address}\r\n\r\n");
    let mut answer = Vec::new();
    let _ = surplus.read_to_end(&mut answer);
    assert!(answer.is_empty(), "the surplus connection was served: {}", String::from_utf8_lossy(&answer));
    // The silent ones are closed once idle for the timeout, and their slots serve again.
    for mut connection in held {
        connection.set_read_timeout(Some(common::RUN_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        assert_eq!(connection.read_to_end(&mut rest).unwrap(), 0, "an idle connection is closed without a word");
    }
    assert_eq!(ask(&address, "GET", "/health", "").0, 200);
    assert!(counter(&address, "agora_admin_connections_refused_total") >= 1);
    terminate(&child);

    // Out of file descriptors: connections beyond the process's limit wait in the backlog. The
    // host must not spin on the failing accept, and must serve once descriptors are free.
    let starved = scenario("admin_max_connections = 1000\n", "");
    let (child, _lines, _seen, address) = start(&starved, "ulimit -n 128;");
    let flood: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(&address).ok()).collect();
    assert!(flood.len() >= 150, "the backlog took {} connections", flood.len());
    let deadline = Instant::now() + common::RUN_TIMEOUT;
    while !descriptors_exhausted(child.id(), 128) {
        assert!(Instant::now() < deadline, "the host never ran out of descriptors");
        std::thread::sleep(Duration::from_millis(50));
    }
    // CPU time over two seconds of exhaustion: a spinning accept loop burns a whole core.
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.id()) - before;
    let per_second = clock_ticks_per_second();
    assert!(used < per_second, "the host used {used} of {} CPU ticks while out of descriptors", 2 * per_second);
    drop(flood);
    let deadline = Instant::now() + common::RUN_TIMEOUT;
    loop {
        if let Ok(mut stream) = TcpStream::connect(&address) {
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = write!(stream, "GET /health HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
            let mut response = String::new();
            if stream.read_to_string(&mut response).is_ok() && response.ends_with("ok\n") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "/health never answered again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(counter(&address, "agora_admin_accept_errors_total") >= 1);
    terminate(&child);
}

/// Whether the process holds (nearly) all the descriptors its limit allows.
fn descriptors_exhausted(pid: u32, limit: usize) -> bool {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    open + 1 >= limit
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    let output = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(100)
}
