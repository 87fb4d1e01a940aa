//! A cluster of real hosts over a real NATS server: every test starts its own `nats-server`
//! (with JetStream, on a free loopback port, its store in a temporary directory) and three
//! `agora run --cluster` processes of one manifest, and reads what each host says through its
//! admin API and its JSON log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Lines, agora, api, lines_of, run_agora, terminate, wait_for_event};

/// The NATS server the Makefile installs (`make nats`).
fn nats_server() -> PathBuf {
    let path = common::workspace().join(".toolchains/python/bin/nats-server");
    assert!(path.is_file(), "{} is missing: `make nats` installs it", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A NATS server of the test's own, stopped when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let store = tempfile::tempdir().unwrap();
        let mut nats = Nats { child: None, port: free_port(), store };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start it (again, on the same port and store).
    pub fn restart(&mut self) {
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One host of the cluster: `agora run --cluster` on the shared manifest, with data of its own.
pub struct Node {
    pub name: String,
    child: Child,
    pub lines: Lines,
    pub seen: Vec<Value>,
    pub admin: String,
    pub token: String,
}

impl Node {
    pub fn start(manifest: &Path, nats: &Nats, name: &str, data: &Path) -> Node {
        let mut child = agora()
            .args(["run", "--log-format", "json", "--cluster", &nats.url(), "--node", name, "--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.join(name))
            .arg(manifest)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = lines_of(&mut child);
        let mut seen = Vec::new();
        wait_for_event(&mut lines, &mut seen, |e| e["event"] == "admin_listening");
        let admin = seen.last().unwrap()["address"].as_str().unwrap().to_string();
        wait_for_event(&mut lines, &mut seen, |e| e["event"] == "cluster_joined");
        let token = std::fs::read_to_string(data.join(name).join("admin.token")).unwrap();
        Node { name: name.to_string(), child, lines, seen, admin, token }
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body) = api(&self.admin, &self.token, "GET", path, "");
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    pub fn cluster(&self) -> Value {
        self.get("/v1/cluster")
    }

    /// The names of the agents running on this host.
    pub fn agents(&self) -> Vec<String> {
        let mut names: Vec<String> = self.get("/v1/agents")["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// The first line so far, or from now on, that `pred` holds for.
    pub fn saw(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        match self.seen.iter().find(|e| pred(e)) {
            Some(line) => line.clone(),
            None => self.wait_for(pred),
        }
    }

    pub fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for_event(&mut self.lines, &mut self.seen, &pred);
        self.seen.last().unwrap().clone()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to end.
    pub fn stop(&mut self) {
        terminate(&self.child);
        let deadline = Instant::now() + common::RUN_TIMEOUT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "node {} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `check` until it holds (placement and membership settle within heartbeats), or panic
/// with what it last saw.
pub fn eventually<T: std::fmt::Debug>(what: &str, mut check: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (done, seen) = check();
        if done {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: never held; last saw {seen:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which node runs each child, by the placement a node reports: `(child, node or "", node up)`.
fn placement(node: &Node) -> Vec<(String, String, bool)> {
    node.cluster()["placement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["child"].as_str().unwrap().to_string(),
                p["node"].as_str().unwrap_or("").to_string(),
                p["node_up"] == true,
            )
        })
        .collect()
}

fn placed_on(node: &Node, child: &str) -> Option<String> {
    placement(node).into_iter().find(|(c, _, up)| c == child && *up).map(|(_, n, _)| n)
}

fn up_nodes(node: &Node) -> Vec<String> {
    let mut up: Vec<String> = node.cluster()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["up"] == true)
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    up.sort();
    up
}

/// The cluster manifest: short heartbeats, so that failures show within a second or two.
fn manifest(dir: &Path, cluster: &str, agents: &str) -> PathBuf {
    manifest_timed(dir, cluster, "1s", agents)
}

/// As [`manifest`], with nodes down after `node_timeout` of silence.
fn manifest_timed(dir: &Path, cluster: &str, node_timeout: &str, agents: &str) -> PathBuf {
    let text = format!(
        "[cluster]\nname = \"{cluster}\"\nheartbeat = \"200ms\"\nnode_timeout = \"{node_timeout}\"\nsettle = \"3s\"\n\n\
         [modules]\necho = {echo:?}\nmisbehave = {misbehave:?}\nprobe = {probe:?}\n\n\
         [defaults]\ngrants = [\"messaging\", \"registry\", \"supervision\"]\n\n{agents}",
        echo = common::agent("echo").display().to_string(),
        misbehave = common::agent("misbehave").display().to_string(),
        probe = common::agent("probe").display().to_string(),
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const PLACED: &str = r#"
[[agent]]
name = "prefers-a"
module = "echo"
nodes = ["a", "b"]

[[agent]]
name = "only-a"
module = "echo"
node = "a"

[[agent]]
name = "temporary-on-a"
module = "echo"
restart = "temporary"
nodes = ["a", "b"]

[[agent]]
name = "only-c"
module = "echo"
node = "c"

[[agent]]
name = "anywhere"
module = "echo"
"#;

#[test]
fn three_nodes_place_the_roots_children_and_move_a_killed_leaders_work() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let manifest = manifest(dir.path(), "placed", PLACED);
    // a first, so that it leads; the others join within the leader's settle time.
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    a.wait_for(|e| e["event"] == "leading");
    let b = Node::start(&manifest, &nats, "b", dir.path());
    let c = Node::start(&manifest, &nats, "c", dir.path());
    let all = ["anywhere", "only-a", "only-c", "prefers-a", "temporary-on-a"];
    let nodes = [&a, &b, &c];
    // Every node sees the same three members and the same placement, and runs what is its own.
    for node in nodes {
        eventually("three nodes up", || {
            let up = up_nodes(node);
            (up == ["a", "b", "c"], up)
        });
        let seen = eventually("every child placed", || {
            let placed = placement(node);
            (placed.iter().all(|(_, _, up)| *up) && placed.len() == all.len(), placed)
        });
        assert_eq!(node.cluster()["leader"], "a", "{seen:?}");
    }
    assert_eq!(placed_on(&b, "only-a").as_deref(), Some("a"));
    assert_eq!(placed_on(&b, "prefers-a").as_deref(), Some("a"));
    assert_eq!(placed_on(&b, "temporary-on-a").as_deref(), Some("a"));
    assert_eq!(placed_on(&a, "only-c").as_deref(), Some("c"));
    // `anywhere` went to the least loaded node at the time: b, which had none.
    assert_eq!(placed_on(&a, "anywhere").as_deref(), Some("b"));
    let mut total = 0;
    for node in nodes {
        let running = eventually("each child running where it is placed", || {
            let mine: Vec<String> =
                placement(node).into_iter().filter(|(_, n, _)| *n == node.name).map(|(c, _, _)| c).collect();
            let running = node.agents();
            let mut mine_sorted = mine.clone();
            mine_sorted.sort();
            (running == mine_sorted, (running, mine_sorted))
        });
        total += running.0.len();
    }
    assert_eq!(total, all.len(), "each child runs on exactly one node");
    // Agent ids carry their node's index.
    for node in nodes {
        let index = node.cluster()["index"].as_u64().unwrap();
        for agent in node.get("/v1/agents")["agents"].as_array().unwrap() {
            assert_eq!(agent["id"].as_u64().unwrap() >> 40, index, "{agent}");
        }
    }
    // The text view names every node and child.
    let token = dir.path().join("b/admin.token").display().to_string();
    let cli = run_agora(&["cluster", "--admin", &b.admin, "--token-file", &token]);
    cli.assert_success();
    for word in ["leader a", "only-c", "prefers-a"] {
        assert!(cli.stdout.contains(word), "{word}: {}", cli.stdout);
    }

    // The leader dies: another node takes the lease, and a's work moves, but for its
    // temporary child (never restarted, as a supervisor never restarts one) and the child
    // that may run on a alone (it waits for a).
    a.kill();
    let (mut b, c) = (b, c);
    b.wait_for(|e| e["event"] == "node_down" && e["node"] == "a");
    let leader = eventually("a new leader", || {
        let leader = b.cluster()["leader"].as_str().unwrap_or("").to_string();
        (leader == "b" || leader == "c", leader)
    });
    assert_eq!(c.cluster()["leader"].as_str(), Some(leader.as_str()));
    eventually("prefers-a moved to b", || {
        let on = placed_on(&c, "prefers-a");
        (on.as_deref() == Some("b"), on)
    });
    eventually("b runs prefers-a", || {
        let running = b.agents();
        (running.contains(&"prefers-a".to_string()), running)
    });
    let placed = placement(&c);
    for waiting in ["only-a", "temporary-on-a"] {
        let entry = placed.iter().find(|(child, ..)| child == waiting).unwrap();
        assert_eq!((entry.1.as_str(), entry.2), ("a", false), "{waiting} stays with the dead a: {placed:?}");
    }
    assert!(!b.agents().iter().chain(c.agents().iter()).any(|n| n == "only-a" || n == "temporary-on-a"));

    // a comes back, a new incarnation: what may run on a alone goes there; what moved stays; the
    // temporary child of its previous run is not started again.
    let a = Node::start(&manifest, &nats, "a", dir.path());
    eventually("only-a back on the new a", || {
        let running = a.agents();
        (running == ["only-a"], running)
    });
    assert_eq!(placed_on(&c, "prefers-a").as_deref(), Some("b"), "no takeover");
    let placed = placement(&c);
    let temporary = placed.iter().find(|(child, ..)| child == "temporary-on-a").unwrap();
    assert!(!temporary.2, "the temporary child of a's first run stays down: {placed:?}");
}

#[test]
fn a_node_that_stops_leaves_at_once_and_its_name_is_refused_while_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let manifest = manifest(dir.path(), "leaving", PLACED);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    let mut c = Node::start(&manifest, &nats, "c", dir.path());
    eventually("c runs only-c", || {
        let running = c.agents();
        (running.contains(&"only-c".to_string()), running)
    });
    // A second host may not take a live node's name.
    let second = common::run_command(
        {
            let mut command = agora();
            command.args([
                "run",
                "--log-format",
                "json",
                "--cluster",
                &nats.url(),
                "--node",
                "c",
                "--admin",
                "127.0.0.1:0",
            ]);
            command.arg("--data-dir").arg(dir.path().join("c2"));
            command
        },
        &[manifest.to_str().unwrap()],
    );
    second.assert_failure();
    assert!(second.stderr.contains("node name \"c\" is in use by a live host"), "{}", second.stderr);
    // A graceful stop removes the heartbeat: a sees c leave, not lapse.
    c.stop();
    let down = a.wait_for(|e| e["event"] == "node_down" && e["node"] == "c");
    assert_eq!(down["reason"], "left", "{down}");
    let placed = placement(&a);
    let only_c = placed.iter().find(|(child, ..)| child == "only-c").unwrap();
    assert!(!only_c.2, "only-c waits for c: {placed:?}");
    // Its events are in the event store too.
    eventually("node_down in the event store", || {
        let events = a.get("/v1/events?kind=node_down");
        (events.to_string().contains("\\\"c\\\""), events)
    });
    a.stop();
}

#[test]
fn cluster_settings_and_placement_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let echo = common::agent("echo").display().to_string();
    let check = |text: &str| {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("[modules]\necho = {echo:?}\n\n{text}")).unwrap();
        run_agora(&["check", path.to_str().unwrap()])
    };
    let nested = check(
        "[supervisor]\n[[supervisor.children]]\nname = \"inner\"\n[[supervisor.children.children]]\nname = \"e\"\nmodule = \"echo\"\nnode = \"a\"\n",
    );
    nested.assert_failure();
    assert!(nested.stderr.contains("only the root supervisor's children are placed"), "{}", nested.stderr);
    assert!(nested.stderr.contains("bad.toml:10"), "{}", nested.stderr);
    let both = check("[[agent]]\nname = \"e\"\nmodule = \"echo\"\nnode = \"a\"\nnodes = [\"b\"]\n");
    both.assert_failure();
    assert!(both.stderr.contains("say one of `node`, `nodes` and `placement`"), "{}", both.stderr);
    let placement = check("[[agent]]\nname = \"e\"\nmodule = \"echo\"\nplacement = \"everywhere\"\n");
    placement.assert_failure();
    assert!(placement.stderr.contains("`agent[0].placement`"), "{}", placement.stderr);
    let timeout = check("[cluster]\nurl = \"nats://127.0.0.1:1\"\nheartbeat = \"1s\"\nnode_timeout = \"1s\"\n");
    timeout.assert_failure();
    assert!(timeout.stderr.contains("`cluster.node_timeout`"), "{}", timeout.stderr);
    let url = check("[cluster]\nurl = \"http://127.0.0.1:1\"\n");
    url.assert_failure();
    assert!(url.stderr.contains("`cluster.url`"), "{}", url.stderr);
    // Placement means nothing to a host alone: it runs every child.
    let alone = check("[[agent]]\nname = \"e\"\nmodule = \"echo\"\nnode = \"a\"\n");
    alone.assert_success();
    // --node needs a cluster; an unreachable server is named.
    let path = dir.path().join("bad.toml");
    let lonely = run_agora(&["run", "--node", "a", path.to_str().unwrap()]);
    lonely.assert_failure();
    assert!(lonely.stderr.contains("--node needs a cluster to join"), "{}", lonely.stderr);
    let port = free_port().to_string();
    let url = format!("nats://127.0.0.1:{port}");
    let unreachable = run_agora(&["run", "--cluster", &url, "--node", "a", path.to_str().unwrap()]);
    unreachable.assert_failure();
    assert!(unreachable.stderr.contains("cannot reach the cluster's NATS server"), "{}", unreachable.stderr);
}

impl Node {
    /// Call an agent (of this node or another) through the admin API; its reply's text.
    pub fn call(&self, agent: &str, text: &str) -> String {
        let (status, body) = api(&self.admin, &self.token, "POST", &format!("/v1/agents/{agent}/call"), text);
        assert_eq!(status, 200, "{agent} <- {text}: {body}");
        body["reply"].as_str().unwrap().to_string()
    }
}

const RELAYS: &str = r#"
[[agent]]
name = "relay-a"
module = "misbehave"
node = "a"

[[agent]]
name = "relay-b"
module = "misbehave"
node = "b"

[[agent]]
name = "target"
module = "misbehave"
node = "b"

[[agent]]
name = "echo-b"
module = "echo"
node = "b"

[[agent]]
name = "narrow"
module = "misbehave"
node = "b"
mailbox = 1
"#;

#[test]
fn messages_reach_agents_on_other_nodes_by_name_and_id_with_the_local_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let manifest = manifest(dir.path(), "relay", RELAYS);
    let a = Node::start(&manifest, &nats, "a", dir.path());
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    eventually("b runs its four", || {
        let running = b.agents();
        (running.len() == 4, running)
    });
    eventually("relay-a runs on a", || {
        let running = a.agents();
        (running == ["relay-a"], running)
    });
    // A call by name to an agent of b, from an agent of a, and its reply.
    assert_eq!(a.call("relay-a", "relay-call:echo-b:hello"), "ok:hello");
    // The admin endpoint of a reaches an agent of b by name too, for calls and sends.
    assert_eq!(a.call("echo-b", "hello"), "hello");
    let (status, body) = api(&a.admin, &a.token, "POST", "/v1/agents/target/send", "tick");
    assert_eq!(status, 202, "{body}");
    assert_eq!(a.try_call("nobody", "x").0, 404);
    // Sends arrive in order and are handled; the count shows every one.
    for _ in 0..3 {
        assert_eq!(a.call("relay-a", "relay-send:target:tick"), "sent");
    }
    assert_eq!(a.call("relay-a", "relay-call:target:tick"), "ok:5");
    // By id: the id that a lookup across the cluster gives.
    let id = a.call("relay-a", "lookup:echo-b");
    let id: u64 = id.strip_prefix("id:").unwrap_or_else(|| panic!("{id}")).parse().unwrap();
    assert_eq!(id >> 40, b.cluster()["index"].as_u64().unwrap(), "the id carries b's index");
    // Unknown names are not-found, as on one host.
    assert_eq!(a.call("relay-a", "relay-call:nobody:x"), "error:Error::NotFound");
    // A full mailbox on b is mailbox-full on a: `narrow` (one slot) sleeps on its first
    // message for 3 s; of the next three, at most one finds room.
    assert_eq!(a.call("relay-a", "relay-send:narrow:sleep:3000"), "sent");
    let answers: Vec<String> = (0..3).map(|_| a.call("relay-a", "relay-send:narrow:tick")).collect();
    assert!(answers.iter().any(|answer| answer == "error:Error::MailboxFull"), "{answers:?}");
    assert!(answers.iter().all(|a| a == "sent" || a == "error:Error::MailboxFull"), "{answers:?}");
    // A payload over what the NATS server carries is too-large, with the limit.
    let big = a.call("relay-a", "relay-big:echo-b:1048570");
    assert!(big.starts_with("error:Error::TooLarge("), "{big}");
    assert_eq!(a.call("relay-a", "relay-big:echo-b:1000"), "ok:1000 bytes");
    // A name registered on two nodes at once is held by exactly one agent of the cluster.
    let (first, second) = std::thread::scope(|scope| {
        let (a_admin, a_token, b_admin, b_token) = (&a.admin, &a.token, &b.admin, &b.token);
        let register = |admin: &String, token: &String, agent: &str| {
            let (status, body) = api(admin, token, "POST", &format!("/v1/agents/{agent}/call"), "register:shared");
            assert_eq!(status, 200, "{body}");
            body["reply"].as_str().unwrap().to_string()
        };
        let on_a = scope.spawn(move || register(a_admin, a_token, "relay-a"));
        let on_b = scope.spawn(move || register(b_admin, b_token, "relay-b"));
        (on_a.join().unwrap(), on_b.join().unwrap())
    });
    let mut answers = [first.clone(), second.clone()];
    answers.sort();
    assert_eq!(answers, ["error:Error::AlreadyExists", "registered"], "{first} / {second}");
    let holder = if first == "registered" { "relay-a" } else { "relay-b" };
    let held = a.call("relay-a", "lookup:shared");
    let expected =
        if holder == "relay-a" { a.call("relay-a", "lookup:relay-a") } else { a.call("relay-a", "lookup:relay-b") };
    assert_eq!(held, expected, "both nodes agree who holds it");
    // b goes down: its agents are gone for a, at once, as exited ones are.
    b.kill();
    eventually("a sees b down", || {
        let up = up_nodes(&a);
        (up == ["a"], up)
    });
    assert_eq!(a.call("relay-a", "relay-call:echo-b:hello"), "error:Error::NotFound");
    // A name b held is free again: a can take it.
    if holder == "relay-b" {
        assert_eq!(a.call("relay-a", "register:shared"), "registered");
    }
}

impl Node {
    /// As [`Node::call`], but any answer: the status and the reply or error code.
    pub fn try_call(&self, agent: &str, text: &str) -> (u16, String) {
        let (status, body) = api(&self.admin, &self.token, "POST", &format!("/v1/agents/{agent}/call"), text);
        let answer = body["reply"].as_str().or(body["error"]["code"].as_str()).unwrap_or_default().to_string();
        (status, answer)
    }
}

#[test]
fn while_the_nats_server_is_down_remote_messages_fail_at_once_and_work_again_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start();
    // Nodes count each other down only after 30 s: the outage below is shorter.
    let manifest = manifest_timed(dir.path(), "outage", "30s", RELAYS);
    let a = Node::start(&manifest, &nats, "a", dir.path());
    let b = Node::start(&manifest, &nats, "b", dir.path());
    eventually("echo-b answers a", || {
        let answer = a.try_call("relay-a", "relay-call:echo-b:hello");
        (answer == (200, "ok:hello".to_string()), answer)
    });
    nats.stop();
    // Not a call that hangs until its deadline: an error as soon as a knows it is cut off.
    let failed = eventually("a remote call fails in transport", || {
        let started = Instant::now();
        let answer = a.try_call("relay-a", "relay-call:echo-b:hello");
        (answer.1 == "error:Error::Timeout", (answer, started.elapsed()))
    });
    assert!(failed.1 < Duration::from_secs(5), "it failed at once, not after the call's 5 s: {failed:?}");
    // Local messaging goes on meanwhile.
    assert_eq!(b.call("relay-b", "relay-call:echo-b:local"), "ok:local");
    nats.restart();
    eventually("echo-b answers a again", || {
        let answer = a.try_call("relay-a", "relay-call:echo-b:again");
        (answer == (200, "ok:again".to_string()), answer)
    });
    assert_eq!(b.call("relay-b", "relay-call:relay-a:tick"), "ok:1");
}

#[test]
fn a_node_cut_off_for_node_timeout_stops_its_work_and_takes_it_back_when_the_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start();
    let manifest = manifest(dir.path(), "isolated", RELAYS);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    eventually("a runs relay-a", || {
        let running = a.agents();
        (running == ["relay-a"], running)
    });
    nats.stop();
    // The others would count it down and restart its work elsewhere: so it stops its own.
    a.wait_for(|e| e["event"] == "cluster_isolated");
    eventually("a stops relay-a", || {
        let running = a.agents();
        (running.is_empty(), running)
    });
    assert_eq!(a.cluster()["isolated"], true);
    nats.restart();
    a.wait_for(|e| e["event"] == "cluster_reconnected");
    eventually("a takes relay-a back", || {
        let running = a.agents();
        (running == ["relay-a"], running)
    });
    assert_eq!(a.cluster()["isolated"], false);
}

#[test]
fn a_reload_on_a_cluster_places_the_new_children_and_starts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let manifest = manifest(dir.path(), "reloaded", "[[agent]]\nname = \"first\"\nmodule = \"echo\"\nnode = \"b\"\n");
    let a = Node::start(&manifest, &nats, "a", dir.path());
    let b = Node::start(&manifest, &nats, "b", dir.path());
    eventually("b runs first", || {
        let running = b.agents();
        (running == ["first"], running)
    });
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n[[agent]]\nname = \"second\"\nmodule = \"echo\"\nnode = \"a\"\n"))
        .unwrap();
    for node in [&b, &a] {
        let (status, report) = api(&node.admin, &node.token, "POST", "/v1/reload", "");
        assert_eq!(status, 200, "{report}");
    }
    eventually("a runs second, b still first alone", || {
        let running = (a.agents(), b.agents());
        (running.0 == ["second"] && running.1 == ["first"], running)
    });
}

const WATCHERS: &str = r#"
[[agent]]
name = "watcher"
module = "misbehave"
node = "a"

[[agent]]
name = "trapper"
module = "misbehave"
node = "a"

[[agent]]
name = "partner"
module = "misbehave"
node = "a"

[[agent]]
name = "target"
module = "misbehave"
node = "b"

[[agent]]
name = "echo-b"
module = "echo"
node = "b"
"#;

#[test]
fn monitors_and_links_span_nodes_and_fire_noconnection_when_a_node_goes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let manifest = manifest(dir.path(), "watched", WATCHERS);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    eventually("both nodes run theirs", || {
        let running = (a.agents(), b.agents());
        (running.0.len() == 3 && running.1.len() == 2, running)
    });
    let id_of = |name: &str| -> String {
        let id = a.call("watcher", &format!("lookup:{name}"));
        id.strip_prefix("id:").unwrap_or_else(|| panic!("{id}")).to_string()
    };
    let target = id_of("target");
    let echo = id_of("echo-b");
    // A monitor and a trapped link of an agent on b; b's agent is killed: both hear `killed`.
    assert!(a.call("watcher", "monitor:target").starts_with("ref:"));
    assert_eq!(a.call("trapper", "trap"), "trapping");
    assert_eq!(a.call("trapper", "link:target"), "linked");
    // Signals are asynchronous, as in Erlang: a kill before the link reached b would be
    // `noproc` for the trapper. So b is seen holding both halves first.
    eventually("b holds the monitor and the link", || {
        let relations = b.get("/v1/agents/target")["relations"].clone();
        let held = relations["monitored_by"].as_array().is_some_and(|m| m.len() == 1)
            && relations["links"].as_array().is_some_and(|l| l.len() == 1);
        (held, relations)
    });
    let (status, body) = api(&b.admin, &b.token, "POST", "/v1/agents/target/kill", "");
    assert!(status < 300, "{body}");
    eventually("the watcher hears target down", || {
        let notices = a.call("watcher", "notices");
        (notices == format!("down:{target}:killed"), notices)
    });
    eventually("the trapper hears target's exit", || {
        let notices = a.call("trapper", "notices");
        (notices == format!("exit:{target}:killed"), notices)
    });
    // Monitors and links of b's echo, then b dies: `noconnection` for each, and the
    // partner, which does not trap exits, ends with it (and is restarted by its supervisor).
    assert!(a.call("watcher", "monitor:echo-b").starts_with("ref:"));
    assert_eq!(a.call("trapper", "link:echo-b"), "linked");
    assert_eq!(a.call("partner", "link:echo-b"), "linked");
    eventually("b holds echo-b's monitor and links", || {
        let relations = b.get("/v1/agents/echo-b")["relations"].clone();
        let held = relations["monitored_by"].as_array().is_some_and(|m| m.len() == 1)
            && relations["links"].as_array().is_some_and(|l| l.len() == 2);
        (held, relations)
    });
    b.kill();
    let exited = a.wait_for(|e| e["event"] == "agent_exited" && e["agent"] == "partner");
    assert_eq!(exited["reason"], "noconnection", "{exited}");
    eventually("the watcher hears echo-b down with noconnection", || {
        let notices = a.call("watcher", "notices");
        (notices.ends_with(&format!(";down:{echo}:noconnection")), notices)
    });
    eventually("the trapper hears echo-b's exit with noconnection", || {
        let notices = a.call("trapper", "notices");
        (notices.ends_with(&format!(";exit:{echo}:noconnection")), notices)
    });
}

#[test]
fn the_cluster_benchmark_prints_its_figures_next_to_raw_nats() {
    let agents = common::agent("echo").parent().unwrap().display().to_string();
    let server = nats_server().display().to_string();
    let run = run_agora(&[
        "bench",
        "--json",
        "cluster",
        "--cluster-calls",
        "50",
        "--agents",
        &agents,
        "--nats-server",
        &server,
    ]);
    run.assert_success();
    for name in ["cluster_call_p50", "cluster_call_p99", "cluster_msgs", "cluster_failover"] {
        let figure = run
            .stdout
            .lines()
            .find(|l| l.contains(&format!("\"bench\":\"{name}\"")))
            .unwrap_or_else(|| panic!("{name}: {}", run.stdout));
        let figure: Value = serde_json::from_str(figure).unwrap();
        assert!(figure["value"].as_f64().unwrap() > 0.0 && figure["baseline"].as_f64().unwrap() > 0.0, "{figure}");
    }
}

/// A probe agent placed on `node`, running `script` (see the probe's steps).
fn probe_on(node: &str, name: &str, grants: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nnode = \"{node}\"\nrestart = \"temporary\"\n\
         grants = [{grants}]\nconfig = {{ script = \"{script}\" }}\n"
    )
}

const LOCKING: &str = "\"messaging\", \"logging\", \"registry\", \"coordination\"";

/// What a probe logged for a step, from a node's log (waiting for it).
fn outcome_on(node: &mut Node, agent: &str, step: &str) -> String {
    let prefix = format!("probe: {step} => ");
    let line = node.saw(|e| e["agent"] == agent && e["message"].as_str().is_some_and(|m| m.starts_with(&prefix)));
    line["message"].as_str().unwrap()[prefix.len()..].to_string()
}

fn token_of(outcome: &str) -> u64 {
    outcome.strip_prefix("token ").and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not a grant: {outcome}"))
}

#[test]
fn locks_are_cluster_wide_their_leases_end_across_nodes_and_a_killed_nodes_locks_free() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let agents = [
        // c takes `res` for a minute and is killed while holding it.
        probe_on("c", "holder", LOCKING, "lock res exclusive 60000 5000; register res-held; sleep 600000"),
        // a finds it busy from another node, in both modes, then waits for it.
        probe_on(
            "a",
            "waiter",
            LOCKING,
            "await res-held 30000; lock-try res exclusive 60000; lock-try res shared 60000; \
             register waiting; lock res exclusive 60000 30000; sleep 600000",
        ),
        // b holds `short` on a lease of 1 s that it never renews; a takes it when the lease ends.
        probe_on(
            "b",
            "leaser",
            LOCKING,
            "lock short exclusive 1500 5000; register short-held; await took-short 30000; lock-renew short 1000; \
             lock-release short; sleep 600000",
        ),
        probe_on(
            "a",
            "taker",
            LOCKING,
            "await short-held 30000; lock-try short exclusive 60000; lock short exclusive 60000 20000; \
             register took-short; sleep 600000",
        ),
        // Shared grants from two nodes at once.
        probe_on("a", "reader-a", LOCKING, "lock-try books shared 60000; register read-a; sleep 600000"),
        probe_on(
            "b",
            "reader-b",
            LOCKING,
            "await read-a 30000; lock-try books shared 60000; lock-try books exclusive 60000; sleep 600000",
        ),
    ]
    .concat();
    let manifest = manifest(dir.path(), "locking", &agents);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    a.wait_for(|e| e["event"] == "leading");
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    let mut c = Node::start(&manifest, &nats, "c", dir.path());

    let held = token_of(&outcome_on(&mut c, "holder", "lock res exclusive 60000 5000"));
    assert_eq!(outcome_on(&mut a, "waiter", "lock-try res exclusive 60000"), "error LockError::Busy");
    assert_eq!(outcome_on(&mut a, "waiter", "lock-try res shared 60000"), "error LockError::Busy");

    // A lease ends on time across nodes: the taker on a waits it out; the leaser on b, alive,
    // has lost it (its renew is refused) and the taker's token is the larger.
    let leased = token_of(&outcome_on(&mut b, "leaser", "lock short exclusive 1500 5000"));
    assert_eq!(outcome_on(&mut a, "taker", "lock-try short exclusive 60000"), "error LockError::Busy");
    let taken = token_of(&outcome_on(&mut a, "taker", "lock short exclusive 60000 20000"));
    assert!(taken > leased, "fencing tokens increase across nodes: {leased} then {taken}");
    assert_eq!(outcome_on(&mut b, "leaser", "lock-renew short 1000"), "error LockError::NotHeld");
    assert_eq!(outcome_on(&mut b, "leaser", "lock-release short"), "error LockError::NotHeld");

    // Two readers on two nodes share `books`; a writer is refused meanwhile.
    let first = token_of(&outcome_on(&mut a, "reader-a", "lock-try books shared 60000"));
    let second = token_of(&outcome_on(&mut b, "reader-b", "lock-try books shared 60000"));
    assert!(second > first);
    assert_eq!(outcome_on(&mut b, "reader-b", "lock-try books exclusive 60000"), "error LockError::Busy");

    // c dies holding `res` for a minute: its grant ends with it, well before its lease would.
    outcome_on(&mut a, "waiter", "register waiting");
    c.kill();
    let inherited = token_of(&outcome_on(&mut a, "waiter", "lock res exclusive 60000 30000"));
    assert!(inherited > held, "{held} then {inherited}");
    assert!(a.seen.iter().any(|e| e["event"] == "node_down" && e["node"] == "c"), "a saw c go down first");
}

const PAYING: &str = "\"messaging\", \"logging\", \"registry\", \"economics\"";

/// A node's view of the economy: each wallet's (balance, held), and the money's totals.
fn economy(node: &Node) -> (Vec<(String, u64, u64)>, Value) {
    let economy = node.get("/v1/economy");
    let wallets = economy["wallets"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| {
                    (
                        w["name"].as_str().unwrap().to_string(),
                        w["balance"].as_u64().unwrap(),
                        w["held"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (wallets, economy["money"].clone())
}

#[test]
fn money_moves_between_nodes_and_is_conserved_when_a_node_is_killed_mid_way() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let payer = |node: &str, name: &str, script: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\n{node}\nwallet = 1000\n\
             grants = [{PAYING}]\nconfig = {{ script = \"{script}\" }}\n"
        )
    };
    let agents = [
        payer(
            "node = \"a\"",
            "p-a",
            "await p-b 30000; await p-c 30000; count 100 pay p-b 1; count 100 pay p-c 2; hold 50; capture p-b 30; \
             register a-done; sleep 600000",
        ),
        payer(
            "node = \"b\"",
            "p-b",
            "await p-a 30000; await p-c 30000; count 100 pay p-c 1; count 100 pay p-a 3; hold 40; release-hold; \
             register b-done; sleep 600000",
        ),
        // c's payer moves to b when c dies, its wallet with it (not opened twice).
        payer(
            "nodes = [\"c\", \"b\"]",
            "p-c",
            "await p-a 30000; await p-b 30000; count 50 pay p-a 1; count 300 pay p-b 1; count 50 pay p-a 1; \
             register c-done; sleep 600000",
        ),
    ]
    .concat();
    let manifest = manifest(dir.path(), "paying", &agents);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    a.wait_for(|e| e["event"] == "leading");
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    let mut c = Node::start(&manifest, &nats, "c", dir.path());

    // c is killed while its payer is paying.
    assert_eq!(outcome_on(&mut c, "p-c", "count 50 pay p-a 1"), "counted [paid:50]");
    c.kill();
    assert_eq!(outcome_on(&mut a, "p-a", "count 100 pay p-b 1"), "counted [paid:100]");
    assert_eq!(outcome_on(&mut a, "p-a", "count 100 pay p-c 2"), "counted [paid:100]");
    assert_eq!(outcome_on(&mut a, "p-a", "capture p-b 30"), "ok");
    assert_eq!(outcome_on(&mut b, "p-b", "count 100 pay p-a 3"), "counted [paid:100]");
    assert_eq!(outcome_on(&mut b, "p-b", "release-hold"), "ok");
    // The payer restarted on b runs its script again, from the wallet it had.
    eventually("p-c runs on b", || {
        let running = b.agents();
        (running.contains(&"p-c".to_string()), running)
    });
    b.wait_for(|e| e["agent"] == "p-c" && e["message"] == "probe: register c-done => ok");

    // Both survivors agree on every wallet, and on the money: 3,000 minted (p-c's budget was
    // given once), all of it in the wallets.
    let (on_a, money) = eventually("a and b agree on the wallets", || {
        let (a_view, b_view) = (economy(&a), economy(&b));
        (a_view == b_view && a_view.1["conserved"] == true, a_view)
    });
    assert_eq!(money["minted"], "3000", "{money}");
    assert_eq!(money["held"], "3000", "{money}");
    let total: u64 = on_a.iter().map(|(_, balance, held)| balance + held).sum();
    assert_eq!(total, 3000, "{on_a:?}");
    let names: Vec<&str> = on_a.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(names, ["p-a", "p-b", "p-c"]);
    assert!(on_a.iter().all(|(_, _, held)| *held == 0), "every hold settled: {on_a:?}");
}

/// A member of group `g` on `node` that votes `vote` and logs the notices it gets.
fn member_on(node: &str, name: &str, vote: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nnode = \"{node}\"\nrestart = \"temporary\"\n\
         grants = [{LOCKING}]\nconfig = {{ script = \"{script}\", vote = \"{vote}\", report_messages = \"true\" }}\n"
    )
}

/// `term <t> leader <id> me <id>` as (term, leader, me).
fn leadership_of(outcome: &str) -> (u64, String, String) {
    let words: Vec<&str> = outcome.split(' ').collect();
    assert_eq!((words.len(), words[0], words[2], words[4]), (6, "term", "leader", "me"), "{outcome}");
    (words[1].parse().unwrap(), words[3].to_string(), words[5].to_string())
}

#[test]
fn election_groups_and_consensus_rounds_span_nodes_and_a_killed_leaders_successor_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let agents = [
        // Their scripts end, so that they take the vote requests (a probe handles one message at a time).
        member_on("a", "m-a", "accept", "join g; register joined-a"),
        member_on("b", "m-b", "accept", "await joined-a 30000; join g; register joined-b"),
        member_on("c", "m-c", "reject", "await joined-b 30000; join g; register joined-c"),
        // Not a member: proposes to the three, then to the two left once a is gone.
        probe_on(
            "c",
            "proposer",
            LOCKING,
            "await joined-c 30000; leader g; propose g majority 20000 one; propose g all 20000 two; \
             register proposed; await-outcome 30000 leader g => term 2*; propose g 1 20000 three; sleep 600000",
        ),
    ]
    .concat();
    let manifest = manifest(dir.path(), "electing", &agents);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    a.wait_for(|e| e["event"] == "leading");
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    let mut c = Node::start(&manifest, &nats, "c", dir.path());

    // One group across three nodes, led by its first member, a's.
    let (term, leader, m_a) = leadership_of(&outcome_on(&mut a, "m-a", "join g"));
    assert_eq!((term, &leader), (1, &m_a));
    let (term, leader, m_b) = leadership_of(&outcome_on(&mut b, "m-b", "join g"));
    assert_eq!((term, &leader), (1, &m_a), "b joins a's group, not one of its own");
    let (term, leader, _) = leadership_of(&outcome_on(&mut c, "proposer", "leader g"));
    assert_eq!((term, &leader), (1, &m_a));
    // Votes come from members on all three nodes.
    assert_eq!(
        outcome_on(&mut c, "proposer", "propose g majority 20000 one"),
        "Verdict::Committed voters 3 accepted 2 rejected 1 missing 0"
    );
    // Decided the moment c's member rejects: a's and b's accepts may come after.
    let all = outcome_on(&mut c, "proposer", "propose g all 20000 two");
    assert!(all.starts_with("Verdict::Rejected voters 3 ") && all.contains(" rejected 1 "), "{all}");

    // The leader's node dies: b's member leads under term 2, and the members left hear it.
    outcome_on(&mut c, "proposer", "register proposed");
    a.kill();
    let told = format!("probe got [agora:leader/g] term=2 leader={m_b}");
    b.wait_for(|e| e["agent"] == "m-b" && e["message"] == told.as_str());
    c.wait_for(|e| e["agent"] == "m-c" && e["message"] == told.as_str());
    let (term, leader, _) = leadership_of(&outcome_on(&mut c, "proposer", "await-outcome 30000 leader g => term 2*"));
    assert_eq!((term, leader), (2, m_b));
    // Committed with b's accept, whether c's reject came before it or not.
    let three = outcome_on(&mut c, "proposer", "propose g 1 20000 three");
    assert!(
        three.starts_with("Verdict::Committed voters 2 accepted 1 "),
        "the dead node's member is not asked: {three}"
    );
}

#[test]
fn barriers_gather_parties_of_every_node_and_a_killed_nodes_party_breaks_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let agents = [
        probe_on("a", "x-a", LOCKING, "barrier meet 3 30000; barrier meet 3 30000; barrier again 3 30000"),
        probe_on("b", "x-b", LOCKING, "barrier meet 3 30000; barrier meet 3 30000; barrier other 2 1000"),
        probe_on("c", "x-c", LOCKING, "barrier meet 3 30000; barrier meet 3 30000; barrier again 3 60000"),
        // Sees the two parties of `again` wait, from a third node.
        probe_on(
            "b",
            "watcher",
            LOCKING,
            "await-outcome 30000 barrier-waiting again => waiting [x-a,x-c]; barrier again 2 1000",
        ),
    ]
    .concat();
    let manifest = manifest(dir.path(), "meeting", &agents);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    a.wait_for(|e| e["event"] == "leading");
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    let mut c = Node::start(&manifest, &nats, "c", dir.path());

    // Two rounds, each released for all three parties together, with one number each.
    let rounds_of = |node: &mut Node, agent: &str| {
        let prefix = "probe: barrier meet 3 30000 => ";
        let mut rounds = Vec::new();
        while rounds.len() < 2 {
            let line =
                node.wait_for(|e| e["agent"] == agent && e["message"].as_str().is_some_and(|m| m.starts_with(prefix)));
            rounds.push(line["message"].as_str().unwrap()[prefix.len()..].to_string());
        }
        rounds
    };
    let on_a = rounds_of(&mut a, "x-a");
    assert_eq!(on_a, ["round 1", "round 2"]);
    assert_eq!(rounds_of(&mut b, "x-b"), on_a);
    assert_eq!(rounds_of(&mut c, "x-c"), on_a);
    // A party alone at its barrier times out.
    assert_eq!(outcome_on(&mut b, "x-b", "barrier other 2 1000"), "error BarrierError::Timeout");

    // c dies while its party waits at `again`: a's party hears that x-c was lost.
    assert_eq!(
        outcome_on(&mut b, "watcher", "await-outcome 30000 barrier-waiting again => waiting [x-a,x-c]"),
        "waiting [x-a,x-c]"
    );
    // Arriving for another number of parties while others wait is refused, from any node.
    assert_eq!(outcome_on(&mut b, "watcher", "barrier again 2 1000"), "error BarrierError::Mismatch(3)");
    c.kill();
    assert_eq!(outcome_on(&mut a, "x-a", "barrier again 3 30000"), "error BarrierError::PartyLost(\"x-c\")");
}

/// A request to a node's admin endpoint whose answer is text (the config routes).
fn text_request(node: &Node, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&node.admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        node.admin,
        node.token,
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

#[test]
fn a_config_change_on_one_node_reaches_every_node_and_a_node_that_joins_later() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let agents = format!(
        "{}[config]\nupdatable = [\"pricing\"]\n[config.values]\npricing = {{ rate = 3 }}\nfixed = 1\n",
        member_on("b", "reader", "ignore", "config-subscribe pricing"),
    )
    .replace("\"coordination\"", "\"coordination\", \"config\"");
    let manifest = manifest(dir.path(), "configured", &agents);
    let a = Node::start(&manifest, &nats, "a", dir.path());
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    outcome_on(&mut b, "reader", "config-subscribe pricing");

    let (status, body) = text_request(&a, "PUT", "/config/pricing.rate", "5");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("across the cluster"), "{body}");
    b.wait_for(|e| e["agent"] == "reader" && e["message"] == "probe got [agora:config] pricing.rate=5");
    assert_eq!(text_request(&b, "GET", "/config/pricing.rate", ""), (200, "5".to_string()));
    // Refused where it is made, as on a host alone: nothing is shared.
    assert_eq!(text_request(&a, "PUT", "/config/fixed", "2").0, 403);
    // A node that joins now starts from the cluster's config, not its manifest's.
    let c = Node::start(&manifest, &nats, "c", dir.path());
    // (Its admin endpoint answers a moment before it has followed the cluster's config.)
    eventually("c starts from the cluster's config", || {
        let got = text_request(&c, "GET", "/config/pricing.rate", "");
        (got == (200, "5".to_string()), got)
    });
    assert_eq!(text_request(&c, "GET", "/config/fixed", ""), (200, "1".to_string()));
    // A removal travels too.
    assert_eq!(text_request(&c, "DELETE", "/config/pricing.rate", "").0, 200);
    b.wait_for(|e| e["agent"] == "reader" && e["message"] == "probe got [agora:config] pricing.rate=");
    eventually("a sees the removal", || {
        let got = text_request(&a, "GET", "/config/pricing.rate", "");
        (got.0 == 404, got)
    });
}

#[test]
fn a_publish_reaches_the_topics_subscribers_on_every_node_and_reports_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start();
    let agents = [
        member_on("a", "sub-a", "ignore", "subscribe prices; register sub-a-ready"),
        member_on("b", "sub-b", "ignore", "subscribe prices; register sub-b-ready"),
        member_on("c", "sub-c", "ignore", "subscribe prices; register sub-c-ready"),
        // Publishes once every subscriber has announced itself (a subscription reaches the
        // other nodes in the background, as a `pg` join does).
        probe_on(
            "a",
            "publisher",
            LOCKING,
            "await sub-a-ready 30000; await sub-b-ready 30000; await sub-c-ready 30000; \
             await-outcome 30000 publish prices tick => delivered 3 full 0; await-gone sub-b 30000; \
             await-outcome 30000 publish prices tock => delivered 2 full 0",
        ),
    ]
    .concat();
    let manifest = manifest(dir.path(), "publishing", &agents);
    let mut a = Node::start(&manifest, &nats, "a", dir.path());
    a.wait_for(|e| e["event"] == "leading");
    let mut b = Node::start(&manifest, &nats, "b", dir.path());
    let mut c = Node::start(&manifest, &nats, "c", dir.path());
    assert_eq!(
        outcome_on(&mut a, "publisher", "await-outcome 30000 publish prices tick => delivered 3 full 0"),
        "delivered 3 full 0"
    );
    for (node, subscriber) in [(&mut a, "sub-a"), (&mut b, "sub-b"), (&mut c, "sub-c")] {
        node.saw(|e| e["agent"] == subscriber && e["message"] == "probe got [prices] tick");
    }
    // b's subscriber goes: the next publish reaches the two left, and reports two.
    let (status, body) = api(&b.admin, &b.token, "POST", "/v1/agents/sub-b/kill", "");
    assert!(status < 300, "{body}");
    assert_eq!(
        outcome_on(&mut a, "publisher", "await-outcome 30000 publish prices tock => delivered 2 full 0"),
        "delivered 2 full 0"
    );
    c.saw(|e| e["agent"] == "sub-c" && e["message"] == "probe got [prices] tock");
}
