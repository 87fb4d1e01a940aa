//! Operating a running host through its admin API: `agora ps`, `call`, `send`, `kill`. Each finds
//! the host as `agora config` does, from the manifest's `data_dir` (the manifest given first, or
//! `agora.toml` here), or talks to `--admin ADDR` with `--token-file F`.
//!
//! Exit codes: 0 done; 1 the host refused (the reason on stderr, with the API's error code);
//! 2 no host could be reached or the command line was wrong.

use crate::admin::Address;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::admin;
use crate::infra::host_lock;
use crate::manifest::Manifest;

/// How to reach the host.
#[derive(Args, Clone)]
pub struct Reach {
    /// The running host's admin address, instead of finding it from the manifest.
    #[arg(long, requires = "token_file")]
    admin: Option<Address>,
    /// The API token of that host (its `<data_dir>/admin.token`).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// The host's admin address and API token.
fn reach(manifest: Option<PathBuf>, how: &Reach) -> anyhow::Result<(Address, String)> {
    if let (Some(address), Some(token)) = (&how.admin, &how.token_file) {
        return Ok((address.clone(), admin::v1::read_token(token)?));
    }
    let manifest = super::manifest_path(manifest)?;
    let settings = Manifest::load(&manifest)?.host;
    Ok((admin_address(&settings.data_dir)?, admin::v1::token_for(&settings)?))
}

/// The admin address of the host running on `data_dir`.
pub fn admin_address(data_dir: &std::path::Path) -> anyhow::Result<Address> {
    let Some(host) = host_lock::running(data_dir) else {
        anyhow::bail!("no host is running on {}: start it with `agora run`", data_dir.display());
    };
    host.admin.ok_or_else(|| {
        anyhow::anyhow!(
            "the host running on {} (pid {}) serves no admin endpoint: set host.admin or run with --admin",
            data_dir.display(),
            host.pid
        )
    })
}

/// Split `[manifest] ARGS...`: a manifest is there when one more word than `wanted` is.
fn split(mut words: Vec<String>, wanted: usize, usage: &str) -> anyhow::Result<(Option<PathBuf>, Vec<String>)> {
    match words.len() {
        n if n == wanted => Ok((None, words)),
        n if n == wanted + 1 => {
            let manifest = words.remove(0);
            Ok((Some(manifest.into()), words))
        }
        _ => anyhow::bail!("usage: {usage}"),
    }
}

/// A payload as given: text, `@file` for a file's bytes, or `-` for standard input.
fn payload(given: &str) -> anyhow::Result<Vec<u8>> {
    if given == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        return Ok(bytes);
    }
    if let Some(file) = given.strip_prefix('@') {
        return std::fs::read(file).map_err(|e| anyhow::anyhow!("{file}: {e}"));
    }
    Ok(given.as_bytes().to_vec())
}

/// One API request; a refusal becomes the command's error, with the API's code.
async fn api(address: &Address, token: &str, method: Method, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
    let (status, text) = admin::request(address, Some(token), method, path, body).await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    Err(Refused::from_answer(status, &value, &text).into())
}

/// The host refused a request: exit 1, where an unreachable host or a bad command line is 2.
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refused {
    /// A refusal from the API's error body (`{"error": {"code", "message"}}`), or its text.
    fn from_answer(status: StatusCode, answer: &Value, text: &str) -> Refused {
        let error = &answer["error"];
        Refused {
            status,
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message: error["message"].as_str().unwrap_or(text.trim()).to_string(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for Refused {}

/// The exit code of a failed operation.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<Refused>().is_some() { ExitCode::from(1) } else { ExitCode::from(2) }
}

pub async fn ps(manifest: Option<PathBuf>, how: &Reach, sort: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let (address, token) = reach(manifest, how)?;
    let listed = api(&address, &token, Method::GET, &format!("/v1/agents?sort={sort}"), Vec::new()).await?;
    if as_json {
        println!("{listed}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = listed["agents"].as_array().cloned().unwrap_or_default();
    let readable = |v: &Value| crate::manifest::units::readable(v.as_u64().unwrap_or(0));
    let mut table = vec![
        ["NAME", "ID", "MODULE", "STATE", "SUPERVISOR", "MAILBOX", "MEMORY", "CPU TICKS", "RESTARTS", "UPTIME"]
            .map(String::from),
    ];
    for row in &rows {
        table.push([
            row["name"].as_str().unwrap_or("").to_string(),
            row["id"].to_string(),
            format!("{}@{}", row["module"].as_str().unwrap_or(""), row["version"].as_str().unwrap_or("?")),
            row["state"].as_str().unwrap_or("?").to_string(),
            row["supervisor"].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string(),
            row["mailbox"].to_string(),
            readable(&row["memory_peak"]),
            row["cpu_ticks"].to_string(),
            row["restarts"].to_string(),
            format!("{:.1}s", row["uptime_ms"].as_u64().unwrap_or(0) as f64 / 1e3),
        ]);
    }
    let widths: Vec<usize> = (0..10).map(|column| table.iter().map(|r| r[column].len()).max().unwrap_or(0)).collect();
    for row in table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn call(words: Vec<String>, how: &Reach, timeout_ms: u64) -> anyhow::Result<ExitCode> {
    let (manifest, words) = split(words, 2, "agora call [manifest] NAME PAYLOAD (text, @file or -)")?;
    let (address, token) = reach(manifest, how)?;
    let path = format!("/v1/agents/{}/call?timeout_ms={timeout_ms}", words[0]);
    let answered = api(&address, &token, Method::POST, &path, payload(&words[1])?).await?;
    println!("{}", answered["reply"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

pub async fn send(words: Vec<String>, how: &Reach) -> anyhow::Result<ExitCode> {
    let (manifest, words) = split(words, 2, "agora send [manifest] NAME PAYLOAD (text, @file or -)")?;
    let (address, token) = reach(manifest, how)?;
    api(&address, &token, Method::POST, &format!("/v1/agents/{}/send", words[0]), payload(&words[1])?).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(words: Vec<String>, how: &Reach) -> anyhow::Result<ExitCode> {
    let (manifest, words) = split(words, 1, "agora kill [manifest] NAME")?;
    let (address, token) = reach(manifest, how)?;
    let killed = api(&address, &token, Method::POST, &format!("/v1/agents/{}/kill", words[0]), Vec::new()).await?;
    println!("killed {} (id {})", words[0], killed["killed"]);
    Ok(ExitCode::SUCCESS)
}

/// `agora events`: the filters of `GET /v1/events`.
#[derive(Args, Clone)]
pub struct EventFilter {
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    correlation: Option<String>,
    /// Continue past this sequence number (a previous page's `next`).
    #[arg(long)]
    after: Option<u64>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Newest first.
    #[arg(long)]
    newest: bool,
}

/// Percent-encode a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn events(
    manifest: Option<PathBuf>,
    how: &Reach,
    filter: &EventFilter,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let (address, token) = reach(manifest, how)?;
    let mut query = vec![format!("limit={}", filter.limit)];
    for (key, value) in [("kind", &filter.kind), ("agent", &filter.agent), ("correlation", &filter.correlation)] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(value)));
        }
    }
    if let Some(after) = filter.after {
        query.push(format!("after={after}"));
    }
    if filter.newest {
        query.push("newest=true".into());
    }
    let page = api(&address, &token, Method::GET, &format!("/v1/events?{}", query.join("&")), Vec::new()).await?;
    if as_json {
        println!("{page}");
        return Ok(ExitCode::SUCCESS);
    }
    for event in page["events"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:>8}  {}  {}  {}",
            event["seq"],
            event["kind"].as_str().unwrap_or(""),
            event["agent"].as_str().unwrap_or("-"),
            event["payload"].as_str().unwrap_or("")
        );
    }
    if let Some(next) = page["next"].as_u64() {
        println!("(more: --after {next})");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(words: Vec<String>, how: &Reach, restart: bool) -> anyhow::Result<ExitCode> {
    let verb = if restart { "restart" } else { "stop" };
    let (manifest, words) = split(words, 1, &format!("agora {verb} [manifest] NAME"))?;
    let (address, token) = reach(manifest, how)?;
    let done = api(&address, &token, Method::POST, &format!("/v1/agents/{}/{verb}", words[0]), Vec::new()).await?;
    match done["restarted"].as_u64() {
        Some(id) => println!("restarted {} (id {id}) under {}", words[0], done["supervisor"].as_str().unwrap_or("?")),
        None => println!("stopped {} under {}", words[0], done["supervisor"].as_str().unwrap_or("?")),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn forget(words: Vec<String>, how: &Reach) -> anyhow::Result<ExitCode> {
    let (manifest, words) = split(words, 1, "agora forget [manifest] NAME")?;
    let (address, token) = reach(manifest, how)?;
    api(&address, &token, Method::DELETE, &format!("/v1/agents/{}/state", words[0]), Vec::new()).await?;
    println!("forgot the persisted state of {}: its next start is by init", words[0]);
    Ok(ExitCode::SUCCESS)
}

pub async fn tree(manifest: Option<PathBuf>, how: &Reach, as_json: bool) -> anyhow::Result<ExitCode> {
    let (address, token) = reach(manifest, how)?;
    let tree = api(&address, &token, Method::GET, "/v1/tree", Vec::new()).await?;
    if as_json {
        println!("{tree}");
        return Ok(ExitCode::SUCCESS);
    }
    fn show(tree: &Value, supervisor: &str, depth: usize) {
        for child in tree["supervisors"][supervisor].as_array().cloned().unwrap_or_default() {
            let name = child["name"].as_str().unwrap_or("?");
            let id = child["id"].as_u64().map_or_else(|| "-".to_string(), |id| id.to_string());
            println!(
                "{}{name} ({}, {}, id {id}, {} restarts)",
                "  ".repeat(depth),
                child["kind"].as_str().unwrap_or("?"),
                child["state"].as_str().unwrap_or("?"),
                child["restarts"]
            );
            if child["kind"] == "supervisor" {
                show(tree, name, depth + 1);
            }
        }
    }
    let root = tree["root"].as_str().unwrap_or("root").to_string();
    println!("{root} (supervisor)");
    show(&tree, &root, 1);
    Ok(ExitCode::SUCCESS)
}

pub async fn cluster(manifest: Option<PathBuf>, how: &Reach, as_json: bool) -> anyhow::Result<ExitCode> {
    let (address, token) = reach(manifest, how)?;
    let cluster = api(&address, &token, Method::GET, "/v1/cluster", Vec::new()).await?;
    if as_json {
        println!("{cluster}");
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &Value| v.as_str().map_or_else(|| "-".to_string(), str::to_string);
    println!(
        "cluster {} · this node {} (incarnation {}) · leader {}{}",
        text(&cluster["cluster"]),
        text(&cluster["node"]),
        cluster["incarnation"],
        text(&cluster["leader"]),
        if cluster["isolated"] == true { " · ISOLATED: cannot reach the NATS server" } else { "" }
    );
    println!("{:<16} {:<6} {:>11} {:>10}  ADMIN", "NODE", "STATE", "INCARNATION", "SEEN");
    for node in cluster["nodes"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<16} {:<6} {:>11} {:>8}ms  {}",
            text(&node["name"]),
            if node["up"] == true { "up" } else { "down" },
            node["incarnation"],
            node["last_seen_ms"],
            text(&node["admin"])
        );
    }
    println!("{:<24} NODE", "CHILD");
    for placed in cluster["placement"].as_array().cloned().unwrap_or_default() {
        let node = match (placed["node"].as_str(), placed["node_up"] == true) {
            (Some(node), true) => node.to_string(),
            (Some(node), false) => format!("{node} (down: waiting for a node)"),
            (None, _) => "(unplaced: no node it may run on is up)".to_string(),
        };
        println!("{:<24} {node}", text(&placed["child"]));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn modules(manifest: Option<PathBuf>, how: &Reach, as_json: bool) -> anyhow::Result<ExitCode> {
    let (address, token) = reach(manifest, how)?;
    let listed = api(&address, &token, Method::GET, "/v1/modules", Vec::new()).await?;
    if as_json {
        println!("{listed}");
        return Ok(ExitCode::SUCCESS);
    }
    for module in listed["modules"].as_array().cloned().unwrap_or_default() {
        for version in module["versions"].as_array().cloned().unwrap_or_default() {
            println!(
                "{}@{}  {}  {} agent(s)  {}{}",
                module["name"].as_str().unwrap_or("?"),
                version["version"].as_str().unwrap_or("?"),
                if version["current"] == true { "current" } else { "old    " },
                version["agents"],
                version["class"].as_str().unwrap_or("?"),
                if version["state_interface"] == true { ", carries state" } else { "" },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `agora load [manifest] NAME PATH`: load a version of a module and follow its compilation;
/// with `upgrade`, then move every agent of the module onto it.
pub async fn load(
    words: Vec<String>,
    how: &Reach,
    label: Option<String>,
    upgrade: bool,
    trial_ms: u64,
) -> anyhow::Result<ExitCode> {
    let (manifest, words) = split(words, 2, "agora load [manifest] NAME PATH [--version LABEL] [--upgrade]")?;
    let (address, token) = reach(manifest, how)?;
    // The host reads the file: give it the path as this shell means it.
    let path = std::path::absolute(&words[1])?;
    let body = serde_json::json!({ "name": words[0], "path": path, "version": label });
    let begun = api(&address, &token, Method::POST, "/v1/modules", body.to_string().into_bytes()).await?;
    let id = begun["load"].as_u64().unwrap_or(0);
    let mut said = std::time::Instant::now();
    let loaded = loop {
        let status = api(&address, &token, Method::GET, &format!("/v1/loads/{id}"), Vec::new()).await?;
        match status["status"].as_str() {
            Some("compiling") => {
                if said.elapsed() >= std::time::Duration::from_secs(2) {
                    eprintln!("compiling {} ({:.0} s)", words[0], status["seconds"].as_f64().unwrap_or(0.0));
                    said = std::time::Instant::now();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Some("ready") => break status,
            _ => return Err(Refused::from_answer(StatusCode::UNPROCESSABLE_ENTITY, &status, "the load failed").into()),
        }
    };
    let replaced = loaded["replaced"].as_str().map(|old| format!("; agents on {old} run it until upgraded"));
    println!(
        "loaded {}@{} (cache {}, {:.0} ms){}",
        words[0],
        loaded["version"].as_str().unwrap_or("?"),
        loaded["cache"].as_str().unwrap_or("?"),
        loaded["millis"].as_f64().unwrap_or(0.0),
        replaced.unwrap_or_default()
    );
    if upgrade {
        return upgrade_module(&address, &token, &words[0], trial_ms).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `agora upgrade [manifest] NAME`, or `--module M` for every agent of a module.
pub async fn upgrade(
    words: Vec<String>,
    how: &Reach,
    module: Option<String>,
    trial_ms: u64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(module) = module {
        let (manifest, _) = split(words, 0, "agora upgrade [manifest] --module MODULE")?;
        let (address, token) = reach(manifest, how)?;
        return upgrade_module(&address, &token, &module, trial_ms).await;
    }
    let (manifest, words) = split(words, 1, "agora upgrade [manifest] NAME | --module MODULE")?;
    let (address, token) = reach(manifest, how)?;
    let path = format!("/v1/agents/{}/upgrade?trial_ms={trial_ms}", words[0]);
    let done = api(&address, &token, Method::POST, &path, Vec::new()).await?;
    if as_json {
        println!("{done}");
    } else {
        println!("{}", upgraded_line(&done["upgraded"]));
    }
    Ok(ExitCode::SUCCESS)
}

fn upgraded_line(done: &Value) -> String {
    format!(
        "upgraded {} from {} to {} ({} handed over{}, paused {:.2} ms, trial {})",
        done["agent"].as_str().unwrap_or("?"),
        done["from"].as_str().unwrap_or("?"),
        done["to"].as_str().unwrap_or("?"),
        done["handoff"].as_str().unwrap_or("?"),
        done["state_bytes"].as_u64().map(|n| format!(", {n} B")).unwrap_or_default(),
        done["paused_us"].as_f64().unwrap_or(0.0) / 1e3,
        done["trial"].as_str().unwrap_or("?"),
    )
}

async fn upgrade_module(address: &Address, token: &str, module: &str, trial_ms: u64) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/modules/{module}/upgrade?trial_ms={trial_ms}");
    let (status, text) = admin::request(address, Some(token), Method::POST, &path, Vec::new()).await?;
    let report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(Refused::from_answer(status, &report, &text).into());
    }
    for agent in report["agents"].as_array().cloned().unwrap_or_default() {
        match agent.get("upgraded") {
            Some(done) => println!("{}", upgraded_line(done)),
            None => eprintln!("{}", agent["error"]["message"].as_str().unwrap_or("?")),
        }
    }
    println!(
        "{}@{}: {} upgraded, {} failed",
        module,
        report["version"].as_str().unwrap_or("?"),
        report["upgraded"],
        report["failed"]
    );
    if report["failed"].as_u64().unwrap_or(0) > 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `agora spawn [manifest] SUPERVISOR NAME MODULE`: a child of a dynamic supervisor.
pub async fn spawn(
    words: Vec<String>,
    how: &Reach,
    config: Vec<(String, String)>,
    grants: Vec<String>,
    restart: String,
) -> anyhow::Result<ExitCode> {
    let (manifest, words) = split(words, 3, "agora spawn [manifest] SUPERVISOR NAME MODULE")?;
    let (address, token) = reach(manifest, how)?;
    let config: serde_json::Map<String, Value> = config.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let body = serde_json::json!({ "name": words[1], "module": words[2], "config": config, "grants": grants, "restart": restart });
    let path = format!("/v1/supervisors/{}/children", words[0]);
    let spawned = api(&address, &token, Method::POST, &path, body.to_string().into_bytes()).await?;
    println!("spawned {} (id {}) under {}", words[1], spawned["id"], words[0]);
    Ok(ExitCode::SUCCESS)
}

/// `agora logs [manifest] [NAME] [-f]`: the host's recent log lines (one agent's, with NAME),
/// and with `follow` each new one until interrupted.
pub async fn logs(
    words: Vec<String>,
    how: &Reach,
    follow: bool,
    lines: usize,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    // One word is a manifest if it names one, else an agent.
    let (manifest, agent) = match words.as_slice() {
        [] => (None, None),
        [one] if one.ends_with(".toml") || std::path::Path::new(one).is_file() => (Some(one.into()), None),
        [one] => (None, Some(one.clone())),
        [manifest, agent] => (Some(manifest.into()), Some(agent.clone())),
        _ => anyhow::bail!("usage: agora logs [manifest] [NAME] [-f]"),
    };
    let (address, token) = reach(manifest, how)?;
    let mut path = format!("/v1/logs?limit={lines}");
    if let Some(agent) = &agent {
        path.push_str(&format!("&agent={}", encode(agent)));
    }
    let show = |line: &Value| {
        if as_json {
            println!("{line}");
        } else if let Some(lost) = line["lost"].as_u64() {
            eprintln!("({lost} lines lost: this reader was too slow)");
        } else {
            let ms = line["time_ms"].as_u64().unwrap_or(0);
            let (h, m, s) = ((ms / 3_600_000) % 24, (ms / 60_000) % 60, (ms / 1000) % 60);
            let agent = line["agent"].as_str().map(|a| format!("{a}: ")).unwrap_or_default();
            println!(
                "{h:02}:{m:02}:{s:02}.{:03} {:<5} {agent}{}",
                ms % 1000,
                line["level"].as_str().unwrap_or("?"),
                line["message"].as_str().unwrap_or("")
            );
        }
    };
    if !follow {
        let page = api(&address, &token, Method::GET, &path, Vec::new()).await?;
        for line in page["lines"].as_array().cloned().unwrap_or_default() {
            show(&line);
        }
        return Ok(ExitCode::SUCCESS);
    }
    path.push_str("&follow=true");
    let (status, text) = admin::stream(&address, &token, &path, |line| {
        if let Ok(value) = serde_json::from_str::<Value>(line) {
            show(&value);
        }
    })
    .await?;
    if !status.is_success() {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Err(Refused::from_answer(status, &value, &text).into());
    }
    // The host ended the stream: it is shutting down.
    Ok(ExitCode::SUCCESS)
}

/// `agora reload [manifest]`: the host re-reads its manifest and applies the difference.
pub async fn reload(manifest: Option<PathBuf>, how: &Reach, as_json: bool) -> anyhow::Result<ExitCode> {
    let (address, token) = reach(manifest, how)?;
    let report = api(&address, &token, Method::POST, "/v1/reload", Vec::new()).await?;
    if as_json {
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut said = 0;
    for module in report["modules"].as_array().cloned().unwrap_or_default() {
        said += 1;
        println!(
            "module {}: {} {}{}",
            module["name"].as_str().unwrap_or("?"),
            module["action"].as_str().unwrap_or("?"),
            module["version"].as_str().unwrap_or(""),
            module["detail"].as_str().map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    for child in report["children"].as_array().cloned().unwrap_or_default() {
        said += 1;
        println!(
            "{} under {}: {}{}",
            child["child"].as_str().unwrap_or("?"),
            child["supervisor"].as_str().unwrap_or("?"),
            child["action"].as_str().unwrap_or("?"),
            child["detail"].as_str().map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    let mut failed = false;
    for upgrade in report["upgrades"].as_array().cloned().unwrap_or_default() {
        said += 1;
        match upgrade.get("upgraded") {
            Some(done) => println!("{}", upgraded_line(done)),
            None => {
                failed = true;
                println!("{}: {}", upgrade["agent"].as_str().unwrap_or("?"), upgrade["failed"].as_str().unwrap_or("?"))
            }
        }
    }
    for change in report["config"].as_array().cloned().unwrap_or_default() {
        said += 1;
        match change["value"].as_str() {
            Some(value) => println!("config {} = {value}", change["path"].as_str().unwrap_or("?")),
            None => println!("config {} removed", change["path"].as_str().unwrap_or("?")),
        }
    }
    for setting in report["host"].as_array().cloned().unwrap_or_default() {
        said += 1;
        println!("host.{} = {} (applied now)", setting["key"].as_str().unwrap_or("?"), setting["value"]);
    }
    for part in report["deferred"].as_array().cloned().unwrap_or_default() {
        println!("{} changed: applies at the next start", part.as_str().unwrap_or("?"));
    }
    if said == 0 {
        println!("nothing to change");
    }
    failed |= report["modules"].as_array().is_some_and(|m| m.iter().any(|m| m["action"] == "failed"))
        || report["children"].as_array().is_some_and(|c| c.iter().any(|c| c["action"] == "failed"));
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
