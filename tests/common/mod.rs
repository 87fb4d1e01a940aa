//! Shared harness: build the sample agents, write a manifest into a temporary directory, run
//! the real `agora` binary on it and collect its JSON lifecycle events.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: a run that takes this long is hung, not slow.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Build the sample agents once per test binary (a no-op when they are fresh).
pub fn agent(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args(["build", "--profile", "agent", "--target", "wasm32-wasip2"])
            .args([
                "-p",
                "echo",
                "-p",
                "ping-pong",
                "-p",
                "counter",
                "-p",
                "counter-v2",
                "-p",
                "misbehave",
                "-p",
                "probe",
            ])
            .args(["-p", "replica", "-p", "worker", "-p", "trader", "-p", "polyglot", "-p", "not-an-agent"])
            .status()
            .expect("running cargo to build the sample agents");
        assert!(status.success(), "building the sample agents failed");
    });
    let path = workspace().join("target/wasm32-wasip2/agent").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// A temporary directory with a manifest in it.
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
    /// Environment variables for the host (`AGORA_INJECT_FAULT`, say).
    pub env: Vec<(String, String)>,
}

/// The `[host]` and `[modules]` header every scenario shares; `host_extra` adds host keys.
pub fn header(host_extra: &str) -> String {
    let mut text = format!("[host]\ndata_dir = \"data\"\n{host_extra}\n[modules]\n");
    for (name, file) in [
        ("echo", "echo"),
        ("ping-pong", "ping_pong"),
        ("counter", "counter"),
        ("misbehave", "misbehave"),
        ("probe", "probe"),
    ] {
        text.push_str(&format!("{name} = {:?}\n", agent(file).display().to_string()));
    }
    text
}

impl Scenario {
    pub fn new(manifest: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.toml");
        std::fs::write(&path, manifest).unwrap();
        Scenario { dir, manifest: path, env: Vec::new() }
    }

    /// A manifest made of the shared header and the given agent tables.
    pub fn agents(host_extra: &str, agents: &str) -> Scenario {
        Scenario::new(&format!("{}\n{agents}", header(host_extra)))
    }

    /// As [`Scenario::agents`], for a run that ends by itself: the root shuts down once every
    /// significant agent has exited for good (OTP's `auto_shutdown = "all_significant"`).
    pub fn finite(host_extra: &str, agents: &str) -> Scenario {
        Scenario::agents(host_extra, &format!("{agents}\n[supervisor]\nauto_shutdown = \"all_significant\"\n"))
    }

    /// Run the host with this environment variable set.
    pub fn env(mut self, key: &str, value: &str) -> Scenario {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn run(&self) -> Run {
        let mut command = agora();
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        run_command(command, &["run", "--log-format", "json", self.manifest.to_str().unwrap()])
    }

    /// Run until `agent` has exited, then stop the host with SIGTERM: for manifests whose other
    /// agents never stop by themselves.
    pub fn run_until_exit_of(&self, agent: &str) -> Run {
        self.run_until_exit_of_all(&[agent])
    }

    /// Run until every one of `agents` has exited and then `more` holds for an event, then stop
    /// the host with SIGTERM.
    pub fn run_until_exit_and(&self, agent: &str, more: impl Fn(&Value) -> bool) -> Run {
        let mut child = self.spawn();
        let mut lines = lines_of(&mut child);
        let mut events = Vec::new();
        wait_for_event(&mut lines, &mut events, |e| e["event"] == "agent_exited" && e["agent"] == agent);
        if !events.iter().any(&more) {
            wait_for_event(&mut lines, &mut events, &more);
        }
        terminate(&child);
        events.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));
        let status = child.wait().unwrap();
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
        Run { status, events, stdout: String::new(), stderr }
    }

    /// Run until every one of `agents` has exited, then stop the host with SIGTERM.
    pub fn run_until_exit_of_all(&self, agents: &[&str]) -> Run {
        let mut child = self.spawn();
        let mut lines = lines_of(&mut child);
        let mut events = Vec::new();
        for agent in agents {
            if events.iter().any(|e: &Value| e["event"] == "agent_exited" && e["agent"] == *agent) {
                continue;
            }
            wait_for_event(&mut lines, &mut events, |e| e["event"] == "agent_exited" && e["agent"] == *agent);
        }
        terminate(&child);
        events.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));
        let status = child.wait().unwrap();
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
        Run { status, events, stdout: String::new(), stderr }
    }

    /// Run until an event matches `pred`, then stop the host with SIGTERM.
    pub fn run_until(&self, pred: impl Fn(&Value) -> bool) -> Run {
        let mut child = self.spawn();
        let mut lines = lines_of(&mut child);
        let mut events = Vec::new();
        wait_for_event(&mut lines, &mut events, pred);
        terminate(&child);
        events.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));
        let status = child.wait().unwrap();
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
        Run { status, events, stdout: String::new(), stderr }
    }

    pub fn spawn(&self) -> Child {
        agora()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["run", "--log-format", "json", self.manifest.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Read a just-spawned host's output until its admin endpoint listens; returns the host, its
/// output lines, the events seen so far and the bound address.
pub fn until_admin_listens(mut child: Child) -> (Child, Lines, Vec<Value>, String) {
    let mut lines = lines_of(&mut child);
    let mut seen = Vec::new();
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "admin_listening");
    let address = seen.last().unwrap()["address"].as_str().unwrap().to_string();
    (child, lines, seen, address)
}

pub fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

pub fn agora() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
    command.env("RUST_LOG", "info");
    command
}

/// What a finished `agora` process left behind.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_agora(args: &[&str]) -> Run {
    run_command(agora(), args)
}

/// As [`run_agora`], with the process set up by the caller (its environment, say).
pub fn run_command(mut command: Command, args: &[&str]) -> Run {
    let mut child = command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap();
            let tail: Vec<&str> = stdout.lines().rev().take(40).collect();
            panic!(
                "agora {args:?} did not finish within {RUN_TIMEOUT:?}; its last lines, newest first:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let events = parse_events(&stdout);
    Run { status, events, stdout, stderr }
}

pub fn parse_events(stdout: &str) -> Vec<Value> {
    stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect(l)).collect()
}

/// As [`wait_for_event`], but an event already read counts: for events whose order among
/// themselves is not fixed (a notice an agent logs can come before or after the exit it reports).
pub fn wait_for_seen(lines: &mut Lines, seen: &mut Vec<Value>, pred: impl Fn(&Value) -> bool) {
    if !seen.iter().any(&pred) {
        wait_for_event(lines, seen, pred);
    }
}

/// Read JSON events from a running child's stdout until one matches; collects all read so far.
/// Panics if the process ends first or nothing matches within [`RUN_TIMEOUT`].
pub fn wait_for_event(lines: &mut Lines, seen: &mut Vec<Value>, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.receiver.recv_timeout(left) {
            Ok(line) => {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let hit = pred(&event);
                    seen.push(event);
                    if hit {
                        return;
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("no expected event within {RUN_TIMEOUT:?}; saw {seen:#?}")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the process ended before the expected event; saw {seen:#?}")
            }
        }
    }
}

/// A child's stdout lines, read on a thread so that waiting for them can time out.
pub struct Lines {
    receiver: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    /// The next line if one comes before `deadline`; `None` once it passed or the output ended.
    pub fn next_before(&mut self, deadline: Instant) -> Option<String> {
        self.receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
    }
}

impl Iterator for Lines {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        self.receiver.recv_timeout(RUN_TIMEOUT).ok()
    }
}

pub fn lines_of(child: &mut Child) -> Lines {
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Lines { receiver }
}

impl Run {
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "agora failed: {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_failure(&self) -> &Self {
        assert!(!self.status.success(), "agora unexpectedly succeeded\nstdout:\n{}", self.stdout);
        self
    }

    /// Events with this `event` field, for this agent when given.
    pub fn events(&self, event: &str, agent: Option<&str>) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == event && agent.is_none_or(|a| e["agent"] == a)).collect()
    }

    /// The messages an agent logged through the logging interface.
    pub fn logs(&self, agent: &str) -> Vec<String> {
        self.events("agent_log", Some(agent)).iter().map(|e| e["message"].as_str().unwrap_or("").to_string()).collect()
    }

    /// The agent's log lines are these, in order, each starting with its expected start.
    pub fn assert_logs_start_with(&self, agent: &str, expected: &[&str]) {
        let said = self.logs(agent);
        assert_eq!(said.len(), expected.len(), "{agent} logged: {said:#?}");
        for (line, start) in said.iter().zip(expected) {
            assert!(line.starts_with(start), "{line:?} is not {start:?}...");
        }
    }

    /// The outcome the probe logged for a step (`probe: <step> => <outcome>`).
    pub fn outcome(&self, agent: &str, step: &str) -> String {
        let prefix = format!("probe: {step} => ");
        self.logs(agent)
            .iter()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("{agent} logged no outcome for {step:?}; its log: {:#?}", self.logs(agent)))
    }

    /// Every outcome the probe logged for a step, in order (for a step it runs more than once).
    pub fn outcomes(&self, agent: &str, step: &str) -> Vec<String> {
        let prefix = format!("probe: {step} => ");
        self.logs(agent).iter().filter_map(|line| line.strip_prefix(&prefix).map(str::to_string)).collect()
    }

    /// The exit event of an agent.
    pub fn exit(&self, agent: &str) -> &Value {
        self.events("agent_exited", Some(agent))
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no agent_exited for {agent}; events: {:#?}", self.events))
    }

    /// Index of the first event matching, for ordering assertions.
    pub fn position(&self, pred: impl Fn(&Value) -> bool) -> Option<usize> {
        self.events.iter().position(pred)
    }
}

/// A real HTTP/1.1 server on loopback, run by the test, for the outbound tests.
/// `/ok` answers 200 `hello`; `/slow` answers 200 after a second; `/fail` answers 500;
/// `/api/<anything>` answers 200 with the path; `/echo` answers with the request body. Every
/// request is counted by path.
pub struct Upstream {
    pub address: std::net::SocketAddr,
    secure: bool,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Connections accepted, and those still open.
    connections: std::sync::Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn start() -> Upstream {
        Upstream::start_on("127.0.0.1:0")
    }

    /// On another loopback address (`[::1]:0` for IPv6).
    pub fn start_on(bind: &str) -> Upstream {
        Upstream::serve(bind, None)
    }

    /// The same server behind TLS, with the given certificate chain and key (PEM).
    pub fn start_tls(chain_pem: &str, key_pem: &str) -> Upstream {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Upstream::serve("127.0.0.1:0", Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))))
    }

    fn serve(bind: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(bind)).unwrap();
        let address = listener.local_addr().unwrap();
        let hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Default::default();
        let counted = hits.clone();
        let secure = tls.is_some();
        let connections: std::sync::Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)> =
            Default::default();
        let tracked = connections.clone();
        runtime.spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counted = counted.clone();
                let tls = tls.clone();
                let tracked = tracked.clone();
                tracked.0.fetch_add(1, SeqCst);
                tracked.1.fetch_add(1, SeqCst);
                tokio::spawn(async move {
                    match tls {
                        // A client that refuses the certificate ends the handshake: nothing to serve.
                        Some(acceptor) => {
                            if let Ok(secured) = acceptor.accept(stream).await {
                                serve_connection(secured, counted).await;
                            }
                        }
                        None => serve_connection(stream, counted).await,
                    }
                    tracked.1.fetch_sub(1, SeqCst);
                });
            }
        });
        Upstream { address, secure, hits, connections, _runtime: runtime }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
    }

    /// (connections accepted so far, connections open now).
    pub fn connections(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.connections.0.load(SeqCst), self.connections.1.load(SeqCst))
    }

    /// Requests that reached the server on this path.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// One connection of the [`Upstream`] server, plain or secured.
async fn serve_connection<S>(
    stream: S,
    counted: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Full;
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let path = request.uri().path().to_string();
        *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
        async move {
            use http_body_util::BodyExt;
            let received = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let (status, body) = match path.as_str() {
                "/echo" => (200, format!("echo {}", String::from_utf8_lossy(&received))),
                "/ok" => (200, "hello".to_string()),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    (200, "slow".to_string())
                }
                "/fail" => (500, "failing".to_string()),
                other if other.starts_with("/api/") => (200, other.to_string()),
                _ => (404, "no such path".to_string()),
            };
            let mut response = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// `GET /metrics` on an admin endpoint (no token needed): the body.
pub fn metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// One admin API request over loopback with a bearer token: the status and the JSON body.
pub fn api(address: &str, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null))
}
