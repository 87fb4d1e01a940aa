//! `agora bench cluster`: messages between two nodes of a cluster, next to the transport's own
//! limit. A NATS server of the benchmark's own (the one `make nats` installs, or `--nats-server`)
//! on a free loopback port; two hosts in this process, nodes `a` and `b` of one cluster, each
//! with its own runtime, connection and buckets; an echo agent on `b`.
//!
//! - `cluster_call_p50` / `_p99`: a call from `a` to the echo on `b` (host to agent, through `b`'s
//!   router and the agent's reply), one at a time; the baseline is a raw NATS request/reply of the
//!   same payload between two connections of this process, whose responder answers at once.
//! - `cluster_msgs`: sends from `a` to the echo on `b`, 64 in flight, each acknowledged once it
//!   is in the mailbox; the baseline is raw requests at the same concurrency.
//!
//! - `cluster_failover`: two `agora run` processes of this binary (nodes `a` and `b`) share a
//!   child that may run on either; the node running it is killed (SIGKILL), and the time until
//!   a call to the child by name is answered on the survivor is taken from this process's own
//!   node, which runs nothing. Three kills, the median; the baseline is `node_timeout` (the
//!   silence after which a node counts as down: the floor of any failover).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{Report, report_percentiles, spec};
use crate::cluster::remote::Kind;
use crate::cluster::{ClusterSettings, PlacedChild};
use crate::manifest::{ByteSize, HostSettings};
use crate::runtime::Runtime;

/// A NATS server for the benchmark, stopped when dropped.
struct Server {
    child: std::process::Child,
    /// Its store and the two hosts' data, removed when it stops.
    dir: std::path::PathBuf,
    port: u16,
}

impl Server {
    fn start(binary: &Path) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("agora-bench-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("nats"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e} (`make nats` installs it)", binary.display()))?;
        let server = Server { child, dir, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn node(url: &str, name: &str, echo: &Path, data: &Path) -> anyhow::Result<Arc<Runtime>> {
    let settings = HostSettings { data_dir: data.join(name), max_agents: 64, ..HostSettings::default() };
    let mut runtime = Runtime::new(settings)?;
    runtime.add_module("echo", echo)?;
    let runtime = Arc::new(runtime);
    let cluster = ClusterSettings {
        url: url.to_string(),
        name: "bench".into(),
        node: name.into(),
        credentials: None,
        heartbeat: Duration::from_millis(200),
        node_timeout: Duration::from_secs(2),
        settle: Duration::ZERO,
    };
    runtime.join_cluster(cluster, Vec::<PlacedChild>::new()).await?;
    Ok(runtime)
}

pub async fn cluster(nats_server: &Path, echo: &Path, calls: usize, report: &Report) -> anyhow::Result<()> {
    let server = Server::start(nats_server)?;
    let a = node(&server.url(), "a", echo, &server.dir).await?;
    let b = node(&server.url(), "b", echo, &server.dir).await?;
    let module = b.module("echo").expect("loaded above");
    let (exits, _exited) = tokio::sync::mpsc::unbounded_channel();
    let spec = Arc::new(spec("echo-b".into(), "echo", &[], ByteSize::mib(4)));
    let target = crate::runtime::agent::start(&b, &spec, &module, exits, 0).await.map_err(super::error)?;
    let cluster = a.cluster.get().expect("joined").clone();
    // Until a sees b up (its heartbeat reached a).
    let started = Instant::now();
    while cluster.deliver(Kind::Call, None, target.id, b"warm", Duration::from_secs(1)).await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "node a never reached the echo on b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let payload = vec![b'x'; 64];
    // The limit: a raw request/reply between two connections, answered at once.
    let responder = async_nats::connect(server.url()).await?;
    let requester = async_nats::connect(server.url()).await?;
    let mut requests = responder.subscribe("bench.raw").await?;
    responder.flush().await?;
    let answering = responder.clone();
    let echoing = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = answering.publish(reply, request.payload).await;
            }
        }
    });
    // Until the responder's interest has reached the server as the requester sees it.
    let started = Instant::now();
    while requester.request("bench.raw", payload.clone().into()).await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "the raw responder never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut raw = Vec::with_capacity(calls);
    for _ in 0..calls {
        let at = Instant::now();
        requester.request("bench.raw", payload.clone().into()).await?;
        raw.push(at.elapsed());
    }
    let mut remote = Vec::with_capacity(calls);
    for _ in 0..calls {
        let at = Instant::now();
        cluster.deliver(Kind::Call, None, target.id, &payload, Duration::from_secs(5)).await.map_err(super::error)?;
        remote.push(at.elapsed());
    }
    report_percentiles(report, "cluster_call", &mut remote, &mut raw, |ratio| {
        format!("({ratio:.2}x a raw NATS request/reply between two connections of this process)")
    });

    // Throughput, 64 in flight.
    const IN_FLIGHT: usize = 64;
    let messages = calls * 4;
    let raw_rate = {
        let at = Instant::now();
        let mut flying = futures_util::stream::iter(0..messages)
            .map(|_| requester.request("bench.raw", payload.clone().into()))
            .buffer_unordered(IN_FLIGHT);
        while let Some(answer) = flying.next().await {
            answer?;
        }
        messages as f64 / at.elapsed().as_secs_f64()
    };
    let sent_rate = {
        let at = Instant::now();
        let mut flying = futures_util::stream::iter(0..messages)
            .map(|_| cluster.deliver(Kind::Send, None, target.id, &payload, Duration::ZERO))
            .buffer_unordered(IN_FLIGHT);
        let mut refused = 0usize;
        while let Some(answer) = flying.next().await {
            // A full mailbox is an answer too (the echo takes them one at a time).
            refused += usize::from(answer.is_err());
        }
        let rate = messages as f64 / at.elapsed().as_secs_f64();
        if refused > 0 {
            tracing::info!(refused, "cluster_msgs: {refused} sends found the mailbox full");
        }
        rate
    };
    report.figure(
        "cluster_msgs",
        sent_rate,
        "msgs/s",
        Some(raw_rate),
        &format!(
            "(sends from a to an agent on b, {IN_FLIGHT} in flight; baseline: raw NATS requests, as many in flight)"
        ),
    );
    echoing.abort();
    target.request_shutdown();
    target.stop(crate::manifest::Shutdown::Infinity).await;
    for runtime in [&a, &b] {
        if let Some(cluster) = runtime.cluster.get() {
            cluster.leave().await;
        }
    }
    failover(&server, echo, report).await?;
    for runtime in [&a, &b] {
        if let Some(cluster) = runtime.cluster.get() {
            cluster.leave().await;
        }
    }
    drop(server);
    Ok(())
}

/// A host process of the failover cluster, killed when dropped.
struct Host(std::process::Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long, after the node running a child dies, until the child answers on the survivor.
async fn failover(server: &Server, echo: &Path, report: &Report) -> anyhow::Result<()> {
    const NODE_TIMEOUT: Duration = Duration::from_secs(1);
    // The manifest lives elsewhere: the module by its absolute path.
    let echo = std::fs::canonicalize(echo)?;
    let dir = server.dir.join("failover");
    std::fs::create_dir_all(&dir)?;
    let manifest = dir.join("failover.toml");
    std::fs::write(
        &manifest,
        format!(
            "[cluster]\nname = \"failover\"\nheartbeat = \"200ms\"\nnode_timeout = \"{}ms\"\nsettle = \"0s\"\n\n\
             [modules]\necho = {:?}\n\n[[agent]]\nname = \"mover\"\nmodule = \"echo\"\nnodes = [\"a\", \"b\"]\n",
            NODE_TIMEOUT.as_millis(),
            echo.display().to_string()
        ),
    )?;
    let binary = std::env::current_exe()?;
    let start = |node: &str| -> anyhow::Result<Host> {
        let child = std::process::Command::new(&binary)
            .args(["run", "--log-format", "json", "--cluster", &server.url(), "--node", node, "--data-dir"])
            .arg(dir.join(node))
            .arg(&manifest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Host(child))
    };
    // This process watches through a node of its own, which runs nothing.
    let cluster = ClusterSettings {
        url: server.url(),
        name: "failover".into(),
        node: "observer".into(),
        credentials: None,
        heartbeat: Duration::from_millis(200),
        node_timeout: NODE_TIMEOUT,
        settle: Duration::ZERO,
    };
    let settings = HostSettings { data_dir: dir.join("observer"), max_agents: 8, ..HostSettings::default() };
    let watcher = Arc::new(Runtime::new(settings)?);
    // It knows the root's children, as every node of one manifest does: leading, it places them.
    let children = crate::cluster::placed_children(&crate::manifest::Manifest::load(&manifest)?);
    watcher.join_cluster(cluster, children).await?;
    let view = watcher.cluster.get().expect("joined").clone();
    // Where the child answers now: the node index of its id, once a call to it by name works.
    let answering = || {
        let view = view.clone();
        async move {
            let id = view.lookup("mover").await?;
            view.deliver(Kind::Call, None, id, b"ping", Duration::from_millis(500)).await.ok()?;
            Some(crate::cluster::index_of(id))
        }
    };
    let mut hosts = [Some(start("a")?), Some(start("b")?)];
    let mut times = Vec::new();
    for round in 0..3 {
        // Until the child answers and both nodes are up.
        let started = Instant::now();
        let index = loop {
            let up = view.live_nodes().iter().filter(|n| n.name == "a" || n.name == "b").count();
            if up == 2
                && let Some(index) = answering().await
            {
                break index;
            }
            for (host, node) in hosts.iter_mut().zip(["a", "b"]) {
                if let Some(Host(child)) = host
                    && let Some(status) = child.try_wait()?
                {
                    anyhow::bail!(
                        "failover host {node} exited ({status}); `agora run {}` says why",
                        manifest.display()
                    );
                }
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "round {round}: the cluster never settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let running = view.members_index(index).ok_or_else(|| anyhow::anyhow!("no node has index {index}"))?;
        let at = if running == "a" { 0 } else { 1 };
        let killed = Instant::now();
        drop(hosts[at].take());
        loop {
            if answering().await.is_some_and(|now| now != index) {
                break;
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(30), "round {round}: the child never moved");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(killed.elapsed());
        // The killed node comes back (a new incarnation) for the next round.
        hosts[at] = Some(start(running.as_str())?);
    }
    times.sort();
    let median = times[times.len() / 2];
    report.figure(
        "cluster_failover",
        median.as_secs_f64() * 1000.0,
        "ms",
        Some(NODE_TIMEOUT.as_secs_f64() * 1000.0),
        "(a node killed until its child answers on the survivor, median of 3; baseline: node_timeout)",
    );
    view.leave().await;
    Ok(())
}
