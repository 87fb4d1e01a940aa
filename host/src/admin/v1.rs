//! The admin API, version 1: JSON on the admin endpoint, every route behind the bearer token the
//! host writes at each start to `<data_dir>/admin.token` (mode 0600). Errors are
//! `{"error": {"code": "...", "message": "..."}}` with a stable code.
//!
//! - `GET /v1/openapi.json`: the OpenAPI document of these routes (no token needed).
//! - `GET /v1/status`: version, uptime, agents alive, pool slots used per class.
//! - `GET /v1/agents[?sort=name|memory|mailbox|restarts|cpu|uptime]`: the live agents.
//! - `GET /v1/agents/<name>`: one.
//! - `POST /v1/agents/<name>/call[?timeout_ms=N]` (body: the payload): the reply, as
//!   `{"reply": text}` (`reply_base64` as well when it is not UTF-8).
//! - `POST /v1/agents/<name>/send` (body: the payload): enqueued, or why not.
//! - `POST /v1/agents/<name>/stop`: OTP's `terminate_child`: its supervisor stops it as its
//!   `shutdown` says and keeps it down; `POST /v1/agents/<name>/restart`: stopped if it runs, then
//!   started again.
//! - `GET /v1/tree`: every supervisor and its children (kind, id, state, restarts).
//! - `POST /v1/agents/<name>/kill`: as Erlang's `exit(Pid, kill)`: the agent ends at once with
//!   `killed`, and its supervisor's restart policy decides what follows.
//! - `GET /v1/events[?kind=&agent=&correlation=&since_ms=&until_ms=&after=&limit=&newest=true]`:
//!   the event store, read by the operator (no agent needed): a page, and `next` to continue.
//! - `GET /v1/modules`: every module, its current version and the old one still run, with the
//!   agents on each. `POST /v1/modules` (`{"name", "path", "version"?}`): load a version, compiled
//!   in the background; `GET /v1/loads/<id>` follows it.
//! - `POST /v1/agents/<name>/upgrade[?trial_ms=N]`: move the agent to its module's current
//!   version, state and all (`runtime::upgrade`); `POST /v1/modules/<name>/upgrade`: every agent
//!   on an older version of it, one at a time, with a report each.
//! - `POST /v1/reload`: re-read the manifest and apply the difference (`runtime::reload`).
//! - `GET /v1/logs[?agent=&limit=&follow=true]`: recent log lines; followed, as JSON lines.
//! - `POST /v1/supervisors/<name>/children` (`{"name", "module", "config"?, "grants"?, "restart"?,
//!   "memory"?, "mailbox"?}`): spawn under a dynamic supervisor.
//! - `DELETE /v1/agents/<name>/state`: forget a durable agent's persisted state, so that it next
//!   starts by `init` (refused while an agent of that name runs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::bindings::Error;
use crate::capabilities::events::store::{MAX_PAGE, Query};
use crate::runtime::Runtime;
use crate::runtime::directory::Listed;

/// Where a host writes its token, beside its other state.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The shortest fixed token accepted: 128 bits, hex.
const MIN_TOKEN: usize = 32;

/// A fixed token (`host.admin_token_file`): the file's first line, long enough, in a file no
/// one but its owner can read.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!("{} is readable by others: `chmod 600` it", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = first_line(&text);
    if token.len() < MIN_TOKEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{}: the token must be at least {MIN_TOKEN} characters, without spaces", path.display()));
    }
    Ok(token)
}

/// The token the CLI presents to the host of these settings.
pub fn token_for(settings: &crate::manifest::HostSettings) -> anyhow::Result<String> {
    read_token(&settings.admin_token_file.clone().unwrap_or_else(|| token_file(&settings.data_dir)))
}

/// A token file's token, as the host reads it: its first line.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the API token {}: {e}", path.display()))?;
    Ok(first_line(&text))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// This start's token: the fixed one, or a new one (32 random bytes, hex) written for the CLI
/// to read, readable by this user only, created that way rather than narrowed after.
pub fn issue_token(settings: &crate::manifest::HostSettings) -> anyhow::Result<String> {
    if let Some(file) = &settings.admin_token_file {
        return read_token_file(file).map_err(|why| anyhow::anyhow!("host.admin_token_file: {why}"));
    }
    let data_dir = settings.data_dir.as_path();
    use std::os::unix::fs::OpenOptionsExt;
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)?;
    let path = token_file(data_dir);
    // A file from an earlier start may have any mode: replace it.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.write_all(token.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(token)
}

/// The largest payload a `call` or `send` takes in one request (the host's `max_message`
/// applies too).
const MAX_PAYLOAD: usize = 16 << 20;
/// The longest a `call` may wait.
const MAX_CALL: Duration = Duration::from_secs(300);

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn failure(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": { "code": code, "message": message.into() } }))
}

/// Compare without an early exit, so that timing does not reveal how much of a guess was right.
fn same(presented: &[u8], token: &[u8]) -> bool {
    presented.len() == token.len() && presented.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The routes described, kept true by a test that calls each one.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A response body: whole, or streamed (a followed log).
pub type Body = http_body_util::Either<Full<Bytes>, Streamed>;

pub async fn serve(runtime: &Arc<Runtime>, token: &str, request: Request<Incoming>) -> Response<Body> {
    let follow = request.method() == Method::GET
        && request.uri().path() == "/v1/logs"
        && param(request.uri().query().unwrap_or_default(), "follow").is_some_and(|v| v == "true");
    if request.method() == Method::GET && request.uri().path() == "/v1/live" && authorized(&request, token) {
        return super::dashboard::live(runtime).map(http_body_util::Either::Right);
    }
    if follow && authorized(&request, token) {
        let query = request.uri().query().unwrap_or_default().to_string();
        return match log_filter(&query) {
            Ok((limit, agent)) => follow_logs(limit, agent).map(http_body_util::Either::Right),
            Err(response) => response.map(http_body_util::Either::Left),
        };
    }
    serve_whole(runtime, token, request).await.map(http_body_util::Either::Left)
}

/// Whether the request carries this start's token.
pub fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    presented.is_some_and(|presented| same(presented.as_bytes(), token.as_bytes()))
}

async fn serve_whole(runtime: &Arc<Runtime>, token: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == "/v1/openapi.json" {
        let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return response;
    }
    if !authorized(&request, token) {
        return failure(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`, the token in the host's <data_dir>/admin.token",
        );
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (request.method().clone(), parts.as_slice()) {
        (Method::GET, ["status"]) => status(runtime),
        (Method::GET, ["agents"]) => agents(runtime, &query),
        (Method::GET, ["events"]) => events(runtime, &query),
        (Method::GET, ["tree"]) => tree(runtime).await,
        (Method::GET, ["modules"]) => modules(runtime),
        (Method::POST, ["reload"]) => match crate::runtime::reload::reload(runtime).await {
            Ok(report) => json_response(StatusCode::OK, &json!(report)),
            Err(error) => failure(StatusCode::UNPROCESSABLE_ENTITY, "invalid-manifest", error.to_string()),
        },
        (Method::GET, ["logs"]) => match log_filter(&query) {
            Ok((limit, agent)) => logs(limit, agent),
            Err(response) => *response,
        },
        (Method::GET, ["loads", id]) => load_status(runtime, id),
        (Method::POST, ["agents", name, "upgrade"]) => upgrade_agent(runtime, name, &query).await,
        (Method::POST, ["modules", name, "upgrade"]) => upgrade_module(runtime, name, &query).await,
        (Method::POST, ["modules"]) => match body_json(request).await {
            Ok(body) => load(runtime, &body),
            Err(response) => *response,
        },
        (Method::POST, ["supervisors", supervisor, "children"]) => {
            let supervisor = supervisor.to_string();
            match body_json(request).await {
                Ok(body) => spawn(runtime, &supervisor, &body).await,
                Err(response) => *response,
            }
        }
        (Method::DELETE, ["agents", name, "state"]) => forget(runtime, name).await,
        (Method::POST, ["agents", name, "stop"]) => stop(runtime, name, false).await,
        (Method::POST, ["agents", name, "restart"]) => stop(runtime, name, true).await,
        (Method::GET, ["agents", name]) => match find(runtime, name) {
            Some(listed) => json_response(StatusCode::OK, &detail(runtime, &listed).await),
            None => not_found(name),
        },
        (Method::GET, ["economy"]) => economy(runtime),
        (Method::GET, ["cluster"]) => match runtime.cluster.get() {
            Some(cluster) => json_response(StatusCode::OK, &cluster.describe()),
            None => failure(
                StatusCode::NOT_FOUND,
                "not-clustered",
                "this host runs alone (`agora run --cluster nats://HOST:PORT --node NAME` joins a cluster)",
            ),
        },
        (Method::POST, ["agents", name, action @ ("call" | "send" | "kill")]) => {
            let name = name.to_string();
            let action = action.to_string();
            let payload = match Limited::new(request.into_body(), MAX_PAYLOAD).collect().await {
                Ok(body) => body.to_bytes().to_vec(),
                Err(_) => {
                    return failure(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "the payload is over 16 MiB");
                }
            };
            match action.as_str() {
                "call" => call(runtime, &name, payload, &query).await,
                "send" => send(runtime, &name, payload).await,
                _ => kill(runtime, &name),
            }
        }
        _ => failure(StatusCode::NOT_FOUND, "no-route", format!("no route {path}; the routes are in the docs")),
    }
}

/// A query parameter, percent-decoded (`+` is a space).
fn param(query: &str, key: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => decoded.push(b' '),
            (byte, _) => decoded.push(byte),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

fn not_found(name: &str) -> Response<Full<Bytes>> {
    failure(StatusCode::NOT_FOUND, "not-found", format!("no live agent is named {name:?}"))
}

/// The live agent registered under `name`.
fn find(runtime: &Runtime, name: &str) -> Option<Arc<Listed>> {
    runtime.registry.lookup(name).and_then(|id| runtime.directory.get(id))
}

/// One agent as the API lists it: serialized straight to the response, without a JSON tree
/// per agent (a listing of 10,000 agents is a common request).
#[derive(serde::Serialize)]
pub(super) struct Row<'a> {
    pub name: &'a str,
    pub id: u64,
    pub module: &'a str,
    pub version: &'a crate::runtime::modules::Version,
    /// `starting`, `idle`, `busy`, `held` or `upgrading`.
    pub state: &'static str,
    pub supervisor: &'a str,
    pub class: &'static str,
    pub restarts: u32,
    pub uptime_ms: u64,
    pub mailbox: u64,
    pub memory_peak: u64,
    pub messages_in: u64,
    /// Of `messages_in`, those handled within a batch after its first item.
    pub batched: u64,
    pub messages_out: u64,
    pub cpu_ticks: u64,
    pub fuel: u64,
    #[serde(skip)]
    pub phase: u64,
}

pub(super) fn row(listed: &Listed) -> Row<'_> {
    let stats = &listed.stats;
    let phase = stats.phase();
    Row {
        name: &listed.name,
        id: listed.id,
        module: &listed.module.name,
        version: &listed.module.version,
        state: phase.name(),
        supervisor: &listed.supervisor,
        class: listed.module.class.as_str(),
        restarts: listed.restarts,
        uptime_ms: listed.started.elapsed().as_millis() as u64,
        mailbox: stats.mailbox_depth.get(),
        memory_peak: stats.memory_peak.get(),
        messages_in: stats.messages_in.get(),
        batched: stats.batched.get(),
        messages_out: stats.messages_out.get(),
        cpu_ticks: stats.cpu_ticks.get(),
        fuel: stats.fuel.get(),
        phase: phase as u64,
    }
}

/// One agent in full: its row, its limits, grants and holdings (asked of its own task, which
/// answers between two messages; `busy` if it does not within a second), its links and monitors.
async fn detail(runtime: &Runtime, listed: &Listed) -> Value {
    let mut value = serde_json::to_value(row(listed)).unwrap_or_default();
    match crate::runtime::control::describe(&listed.stop, Duration::from_secs(1)).await {
        Some(described) => {
            for (key, part) in described.as_object().into_iter().flatten() {
                value[key] = part.clone();
            }
        }
        None => value["holdings"] = json!("busy: it did not answer within a second"),
    }
    let named = |ids: &[u64]| -> Vec<Value> {
        ids.iter()
            .map(|id| match runtime.registry.name_of(*id) {
                Some(name) => json!(format!("{name} ({id})")),
                None => json!(id.to_string()),
            })
            .collect()
    };
    if let Some(relations) = runtime.links.relations(listed.id) {
        let mut described = json!({
            "links": named(&relations.links),
            "monitoring": named(&relations.monitoring),
            "monitored_by": named(&relations.monitored_by),
            "trap_exits": relations.trap_exits,
        });
        if let Some(holdings) = value.get("holdings").and_then(Value::as_object) {
            described["topics"] = holdings.get("topics").cloned().unwrap_or_default();
            described["locks"] = holdings.get("locks").cloned().unwrap_or_default();
            described["groups"] = holdings.get("groups").cloned().unwrap_or_default();
        }
        value["relations"] = described;
    }
    value
}

/// The host's status, as `GET /v1/status` and the dashboard's ticks give it.
pub(super) fn status_value(runtime: &Runtime) -> Value {
    let live = runtime.live_instances.load(std::sync::atomic::Ordering::Relaxed);
    let (mut compact, mut interpreter) = (0u64, 0u64);
    for listed in runtime.directory.list() {
        match listed.module.class {
            crate::runtime::engine::Class::Compact => compact += 1,
            crate::runtime::engine::Class::Interpreter => interpreter += 1,
        }
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": runtime.started.elapsed().as_millis() as u64,
        "agents": runtime.directory.len(),
        "instances": live,
        "max_agents": runtime.settings.max_agents,
        "interpreter_agents": runtime.settings.interpreter_agents,
        "classes": [
            { "class": "compact", "agents": compact, "slots": runtime.settings.max_agents },
            { "class": "interpreter", "agents": interpreter, "slots": runtime.settings.interpreter_agents },
        ],
        "memory_bytes": crate::infra::resident_bytes(),
        "cluster": runtime.cluster.get().map(|c| json!({ "name": c.settings.name, "node": c.node(), "incarnation": c.incarnation })),
    })
}

fn status(runtime: &Runtime) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &status_value(runtime))
}

/// The sort keys of `GET /v1/agents`, largest first but for `name`.
const SORTS: &[&str] = &["name", "memory", "mailbox", "restarts", "cpu", "uptime"];

fn agents(runtime: &Runtime, query: &str) -> Response<Full<Bytes>> {
    let sort = param(query, "sort").unwrap_or_else(|| "name".into());
    let sort = sort.as_str();
    if !SORTS.contains(&sort) {
        return failure(StatusCode::BAD_REQUEST, "invalid", format!("sort={sort}: one of {}", SORTS.join(", ")));
    }
    let mut listed = runtime.directory.list();
    // Filters: `module`, `supervisor` and `state` match exactly, `name` is a substring.
    let (module, supervisor, state, name) =
        (param(query, "module"), param(query, "supervisor"), param(query, "state"), param(query, "name"));
    listed.retain(|l| {
        module.as_deref().is_none_or(|m| *l.module.name == *m)
            && supervisor.as_deref().is_none_or(|s| *l.supervisor == *s)
            && state.as_deref().is_none_or(|s| l.stats.phase().name() == s)
            && name.as_deref().is_none_or(|n| l.name.contains(n))
    });
    let key = |listed: &Listed| -> u64 {
        let stats = &listed.stats;
        match sort {
            "memory" => stats.memory_peak.get(),
            "mailbox" => stats.mailbox_depth.get(),
            "restarts" => listed.restarts.into(),
            "cpu" => stats.cpu_ticks.get(),
            _ => listed.started.elapsed().as_millis() as u64,
        }
    };
    if sort == "name" {
        listed.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        listed.sort_by_key(|listed| std::cmp::Reverse(key(listed)));
    }
    #[derive(serde::Serialize)]
    struct Listing<'a> {
        agents: Vec<Row<'a>>,
    }
    let body = serde_json::to_vec(&Listing { agents: listed.iter().map(|l| row(l)).collect() }).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// How an agent's refusal reads over HTTP.
fn refused(name: &str, error: Error) -> Response<Full<Bytes>> {
    let (status, code, message) = match error {
        Error::NotFound => return not_found(name),
        Error::MailboxFull => (StatusCode::SERVICE_UNAVAILABLE, "mailbox-full", "its mailbox is full".to_string()),
        Error::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout", "no reply within the timeout".to_string()),
        Error::Stopped => (StatusCode::BAD_GATEWAY, "stopped", "it exited before it replied".to_string()),
        Error::Failed(why) => (StatusCode::UNPROCESSABLE_ENTITY, "failed", format!("it refused the message: {why}")),
        Error::TooLarge(limit) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("the payload is over host.max_message ({limit} B)"))
        }
        Error::Unpaid => (StatusCode::PAYMENT_REQUIRED, "unpaid", "its wallet cannot pay for its compute".to_string()),
        other => (StatusCode::INTERNAL_SERVER_ERROR, "failed", format!("{other:?}")),
    };
    failure(status, code, message)
}

/// The supervisors now, by name.
fn supervisors(runtime: &Runtime) -> Vec<(String, crate::supervision::Operators)> {
    runtime.supervisors.iter().map(|entry| (entry.key().clone(), entry.value().clone())).collect()
}

/// Ask one supervisor to stop or restart its child `name`: what it did, or why not.
async fn operate(
    operators: &crate::supervision::Operators,
    name: &str,
    restart: bool,
) -> Option<Result<Value, String>> {
    use crate::supervision::Operate;
    let name = name.to_string();
    if restart {
        let (reply, answer) = tokio::sync::oneshot::channel();
        operators.send(Operate::Restart { name, reply }).ok()?;
        Some(answer.await.ok()?.map(|id| json!({ "restarted": id })))
    } else {
        let (reply, answer) = tokio::sync::oneshot::channel();
        operators.send(Operate::Terminate { name: name.clone(), reply }).ok()?;
        Some(answer.await.ok()?.map(|()| json!({ "stopped": name })))
    }
}

/// Ask the supervisor of `name` (whichever holds it) to stop it, or to restart it.
async fn stop(runtime: &Runtime, name: &str, restart: bool) -> Response<Full<Bytes>> {
    for (supervisor, operators) in supervisors(runtime) {
        match operate(&operators, name, restart).await {
            Some(Ok(mut done)) => {
                done["supervisor"] = json!(supervisor);
                return json_response(StatusCode::OK, &done);
            }
            Some(Err(why)) if !why.contains("has no child") => {
                return failure(StatusCode::CONFLICT, "start-failed", why);
            }
            _ => {}
        }
    }
    failure(StatusCode::NOT_FOUND, "not-found", format!("no supervisor has a child named {name:?}"))
}

async fn tree(runtime: &Runtime) -> Response<Full<Bytes>> {
    use crate::supervision::Operate;
    let mut tree = serde_json::Map::new();
    for (supervisor, operators) in supervisors(runtime) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if operators.send(Operate::Describe { reply }).is_ok()
            && let Ok(children) = answer.await
        {
            tree.insert(supervisor, json!(children));
        }
    }
    // The root is the supervisor no other has as a child.
    let children: Vec<&str> =
        tree.values().flat_map(|c| c.as_array().into_iter().flatten()).filter_map(|c| c["name"].as_str()).collect();
    let root = tree.keys().find(|name| !children.contains(&name.as_str())).cloned();
    json_response(StatusCode::OK, &json!({ "root": root, "supervisors": tree }))
}

fn events(runtime: &Runtime, query: &str) -> Response<Full<Bytes>> {
    let number = |key: &str| -> Result<Option<u64>, String> {
        match param(query, key) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| format!("{key}={text}: a whole number")),
        }
    };
    let numbers = (number("since_ms"), number("until_ms"), number("after"), number("limit"));
    let (since_ms, until_ms, after, limit) = match numbers {
        (Ok(since), Ok(until), Ok(after), Ok(limit)) => (since, until, after, limit),
        (Err(why), ..) | (_, Err(why), ..) | (_, _, Err(why), _) | (.., Err(why)) => {
            return failure(StatusCode::BAD_REQUEST, "invalid", why);
        }
    };
    let query = Query {
        kind: param(query, "kind"),
        agent: param(query, "agent"),
        correlation: param(query, "correlation"),
        since_ms,
        until_ms,
        after,
        limit: limit.map_or(100, |l| l.min(u64::from(MAX_PAGE)) as u32),
        newest_first: param(query, "newest").is_some_and(|v| v == "true"),
    };
    match runtime.services.events.store.query(&query) {
        Ok(page) => {
            let events: Vec<Value> = page
                .events
                .iter()
                .map(|event| {
                    json!({
                        "seq": event.seq,
                        "time_ms": event.time_ms,
                        "kind": event.kind,
                        "agent": event.agent,
                        "correlation": event.correlation,
                        "payload": String::from_utf8_lossy(&event.payload),
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "events": events, "next": page.next }))
        }
        Err(error) => failure(StatusCode::SERVICE_UNAVAILABLE, "event-store", format!("{error:?}")),
    }
}

async fn call(runtime: &Runtime, name: &str, payload: Vec<u8>, query: &str) -> Response<Full<Bytes>> {
    let timeout = match param(query, "timeout_ms") {
        None => Duration::from_secs(5),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if Duration::from_millis(ms) <= MAX_CALL => Duration::from_millis(ms),
            _ => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "timeout_ms: a number of milliseconds up to 300000",
                );
            }
        },
    };
    match runtime.call(name, payload, timeout).await {
        Ok(reply) => {
            let mut body = json!({ "reply": String::from_utf8_lossy(&reply) });
            if std::str::from_utf8(&reply).is_err() {
                use base64::Engine as _;
                body["reply_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&reply));
            }
            json_response(StatusCode::OK, &body)
        }
        Err(error) => refused(name, error),
    }
}

async fn send(runtime: &Runtime, name: &str, payload: Vec<u8>) -> Response<Full<Bytes>> {
    match runtime.send(name, payload).await {
        Ok(()) => json_response(StatusCode::ACCEPTED, &json!({ "sent": true })),
        Err(error) => refused(name, error),
    }
}

fn kill(runtime: &Runtime, name: &str) -> Response<Full<Bytes>> {
    match find(runtime, name) {
        Some(listed) => {
            listed.stop.kill();
            tracing::warn!(event = "agent_killed_by_operator", agent = %listed.name, id = listed.id,
                "agent {} killed through the admin API", listed.name);
            json_response(StatusCode::ACCEPTED, &json!({ "killed": listed.id }))
        }
        None => not_found(name),
    }
}

/// `limit` (default 100, at most the lines kept) and `agent` of a log request.
fn log_filter(query: &str) -> Result<(usize, Option<String>), Refusal> {
    let limit = match param(query, "limit") {
        None => 100,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n <= crate::infra::log_tail::KEPT => n,
            _ => {
                let why = format!("limit={n}: a number of lines up to {}", crate::infra::log_tail::KEPT);
                return Err(refusal(StatusCode::BAD_REQUEST, "invalid", why));
            }
        },
    };
    Ok((limit, param(query, "agent")))
}

fn logs(limit: usize, agent: Option<String>) -> Response<Full<Bytes>> {
    let keep = |line: &crate::infra::log_tail::LogLine| agent.is_none() || line.agent == agent;
    let (lines, _) = crate::infra::log_tail::tail().follow(limit, keep);
    let lines: Vec<&crate::infra::log_tail::LogLine> = lines.iter().map(|line| &**line).collect();
    json_response(StatusCode::OK, &json!({ "lines": lines }))
}

/// How often a followed log says it is still there, so that idle connections are not closed.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A followed log: the last `limit` lines, then each new one as it comes, as JSON lines (an empty
/// line is a heartbeat; `{"lost": n}` says a slow reader missed n lines).
fn follow_logs(limit: usize, agent: Option<String>) -> Response<Streamed> {
    let keep = move |line: &crate::infra::log_tail::LogLine| agent.is_none() || line.agent == agent;
    let (backlog, mut live) = crate::infra::log_tail::tail().follow(limit, &keep);
    let (sender, streamed) = Streamed::channel(64);
    tokio::spawn(async move {
        for entry in backlog {
            if sender.send(line(&*entry)).await.is_err() {
                return;
            }
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            let next = tokio::select! {
                received = live.recv() => match received {
                    Ok(entry) if keep(&entry) => line(&*entry),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => line(&json!({ "lost": lost })),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = heartbeat.tick() => Bytes::from_static(b"\n"),
            };
            if sender.send(next).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(streamed);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
    response
}

/// One JSON line.
pub(super) fn line<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    Bytes::from(format!("{}\n", serde_json::to_string(value).unwrap_or_default()))
}

/// A body fed by a task, chunk by chunk, until the task drops its sender.
pub struct Streamed {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Streamed {
    /// A body, and the sender that feeds it (`capacity` chunks ahead of the reader).
    pub(super) fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Streamed) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
        (sender, Streamed { receiver })
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.receiver.poll_recv(context).map(|chunk| chunk.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// The economy, when the manifest enables it: wallets, and the auctions and tasks in play.
fn economy(runtime: &Runtime) -> Response<Full<Bytes>> {
    let economics = &runtime.services.economics;
    let wallets = economics.ledger.wallets();
    if wallets.is_empty() && economics.auctions.list().is_empty() && economics.market.list().is_empty() {
        return json_response(StatusCode::OK, &json!({ "enabled": false }));
    }
    let wallets: Vec<Value> = wallets
        .iter()
        .map(|(name, funds)| json!({ "name": name, "balance": funds.balance, "held": funds.held }))
        .collect();
    let auctions: Vec<Value> = economics
        .auctions
        .list()
        .into_iter()
        .map(|(id, info)| {
            json!({
                "id": id, "item": info.item, "seller": &*info.seller, "format": format!("{:?}", info.format),
                "state": format!("{:?}", info.state), "standing": info.standing, "asking": info.asking,
                "bids": info.bids, "closes_in_ms": info.closes_in.as_millis() as u64,
            })
        })
        .collect();
    let tasks: Vec<Value> = economics
        .market
        .list()
        .into_iter()
        .map(|(id, task)| {
            json!({
                "id": id, "client": &*task.announcer, "description": task.announcement.kind,
                "budget": task.announcement.budget, "state": format!("{:?}", task.state),
                "proposals": task.proposals,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "enabled": true, "currency": economics.settings.currency, "wallets": wallets, "auctions": auctions,
            "tasks": tasks, "money": money(economics),
        }),
    )
}

/// What was minted and what the wallets hold: equal, unless a movement is under way.
fn money(economics: &crate::capabilities::economics::Economics) -> Value {
    let (held, minted) = economics.ledger.totals();
    // As strings: the sums may pass 2^53, which a JSON number cannot carry exactly.
    json!({ "minted": minted.to_string(), "held": held.to_string(), "conserved": held == minted })
}

/// A refusal built before the route is done (boxed: a response is large, and most requests
/// never build one).
type Refusal = Box<Response<Full<Bytes>>>;

fn refusal(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
    Box::new(failure(status, code, message))
}

/// The largest JSON body a request takes.
const MAX_JSON: usize = 64 << 10;

/// A request's body as a JSON object, or the error response.
async fn body_json(request: Request<Incoming>) -> Result<Value, Refusal> {
    let body = Limited::new(request.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|_| refusal(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "the JSON body is over 64 KiB"))?
        .to_bytes();
    match serde_json::from_slice::<Value>(&body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(refusal(StatusCode::BAD_REQUEST, "invalid", "the body is a JSON object")),
        Err(e) => Err(refusal(StatusCode::BAD_REQUEST, "invalid", format!("the body is not JSON: {e}"))),
    }
}

/// A string field of a JSON body: required or optional.
fn field<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(refusal(StatusCode::BAD_REQUEST, "invalid", format!("`{key}` is a string"))),
    }
}

fn required<'a>(body: &'a Value, key: &str) -> Result<&'a str, Refusal> {
    field(body, key)?.ok_or_else(|| refusal(StatusCode::BAD_REQUEST, "invalid", format!("`{key}` is required")))
}

fn modules(runtime: &Runtime) -> Response<Full<Bytes>> {
    let listed = runtime.directory.list();
    let running = |module: &crate::runtime::modules::Module| {
        listed.iter().filter(|agent| Arc::ptr_eq(&agent.module, module)).count()
    };
    runtime.catalog.purge(running);
    let version = |module: &crate::runtime::modules::Module, current: bool| {
        json!({
            "version": module.version.to_string(),
            "hash": module.version.short_hash(),
            "label": module.version.label,
            "current": current,
            "agents": running(module),
            "class": module.class.as_str(),
            "state_interface": module.state.is_some(),
            "path": module.path.display().to_string(),
        })
    };
    let modules: Vec<Value> = runtime
        .catalog
        .list()
        .into_iter()
        .map(|(name, versions)| {
            let mut all = vec![version(&versions.current, true)];
            all.extend(versions.old.as_ref().map(|old| version(old, false)));
            // Warm instances are always of the current version.
            let warm = runtime.warm.status(&name).map(|(ready, target)| json!({ "ready": ready, "target": target }));
            json!({ "name": name, "versions": all, "warm": warm })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "modules": modules }))
}

fn load(runtime: &Arc<Runtime>, body: &Value) -> Response<Full<Bytes>> {
    let checked = (|| {
        let name = required(body, "name")?;
        let path = required(body, "path")?;
        let label = field(body, "version")?;
        let invalid = |why: String| refusal(StatusCode::BAD_REQUEST, "invalid", why);
        crate::runtime::catalog::check_name(name).map_err(invalid)?;
        if let Some(label) = label {
            crate::runtime::catalog::check_label(label).map_err(invalid)?;
        }
        Ok::<_, Refusal>((name.to_string(), path.to_string(), label.map(str::to_string)))
    })();
    let (name, path, label) = match checked {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let path = Path::new(&path);
    let path = if path.is_absolute() { path.to_path_buf() } else { runtime.base_dir.join(path) };
    if !path.is_file() {
        return failure(StatusCode::BAD_REQUEST, "invalid", format!("{} is not a file on the host", path.display()));
    }
    let load = runtime.load_module(&name, path, label);
    json_response(StatusCode::ACCEPTED, &describe_load(&load))
}

fn describe_load(load: &crate::runtime::catalog::Load) -> Value {
    use crate::runtime::catalog::LoadOutcome;
    let mut described = json!({
        "load": load.id,
        "name": load.name,
        "path": load.path.display().to_string(),
        "seconds": load.started.elapsed().as_secs_f64(),
    });
    match load.outcome() {
        LoadOutcome::Compiling => described["status"] = json!("compiling"),
        LoadOutcome::Ready { version, cache, replaced, millis } => {
            described["status"] = json!("ready");
            described["version"] = json!(version);
            described["cache"] = json!(cache.as_str());
            described["replaced"] = json!(replaced);
            described["millis"] = json!(millis);
        }
        LoadOutcome::Failed { error, code } => {
            described["status"] = json!("failed");
            described["error"] = json!({ "code": code, "message": error });
        }
    }
    described
}

fn load_status(runtime: &Runtime, id: &str) -> Response<Full<Bytes>> {
    match id.parse::<u64>().ok().and_then(|id| runtime.loads.get(id)) {
        Some(load) => json_response(StatusCode::OK, &describe_load(&load)),
        None => failure(StatusCode::NOT_FOUND, "not-found", format!("no load {id:?} (the last 64 are kept)")),
    }
}

/// The trial window of an upgrade: `trial_ms`, 1 s unless given, at most a minute.
fn trial(query: &str) -> Result<Duration, Refusal> {
    match param(query, "trial_ms") {
        None => Ok(Duration::from_secs(1)),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms <= 60_000 => Ok(Duration::from_millis(ms)),
            _ => Err(refusal(StatusCode::BAD_REQUEST, "invalid", "trial_ms: milliseconds up to 60000")),
        },
    }
}

/// How one agent's upgrade reads over HTTP.
fn upgrade_answer(
    outcome: Result<crate::runtime::upgrade::Upgraded, crate::runtime::upgrade::UpgradeError>,
) -> (StatusCode, Value) {
    use crate::runtime::upgrade::UpgradeError;
    match outcome {
        Ok(done) => (StatusCode::OK, json!({ "upgraded": done })),
        Err(UpgradeError::Failed(failed)) => {
            let code = if failed.stage == "unchanged" { "unchanged" } else { "upgrade-failed" };
            (
                StatusCode::CONFLICT,
                json!({ "error": { "code": code, "message": failed.to_string() }, "failed": failed }),
            )
        }
        Err(other) => {
            (StatusCode::CONFLICT, json!({ "error": { "code": "upgrade-failed", "message": other.to_string() } }))
        }
    }
}

/// Forget a durable agent's persisted state: the remedy for a state its `restore` cannot take.
/// Not while it runs (it would write its state again at its next persist): stop it first.
async fn forget(runtime: &Runtime, name: &str) -> Response<Full<Bytes>> {
    if find(runtime, name).is_some() {
        let message = format!("agent {name:?} is running: stop it first (`agora stop {name}`), then forget its state");
        return failure(StatusCode::CONFLICT, "agent-running", message);
    }
    let store = match runtime.snapshots() {
        Ok(store) => store,
        Err(error) => return failure(StatusCode::INTERNAL_SERVER_ERROR, "store-failed", error),
    };
    match store.forget(name).await {
        Ok(true) => json_response(StatusCode::OK, &json!({ "forgotten": name })),
        Ok(false) => failure(StatusCode::NOT_FOUND, "no-state", format!("no persisted state for {name:?}")),
        Err(error) => failure(StatusCode::INTERNAL_SERVER_ERROR, "store-failed", error),
    }
}

async fn upgrade_agent(runtime: &Runtime, name: &str, query: &str) -> Response<Full<Bytes>> {
    let trial = match trial(query) {
        Ok(trial) => trial,
        Err(response) => return *response,
    };
    let Some(listed) = find(runtime, name) else { return not_found(name) };
    let (status, body) = upgrade_answer(crate::runtime::upgrade::upgrade(runtime, &listed, trial).await);
    json_response(status, &body)
}

async fn upgrade_module(runtime: &Runtime, module: &str, query: &str) -> Response<Full<Bytes>> {
    let trial = match trial(query) {
        Ok(trial) => trial,
        Err(response) => return *response,
    };
    let Some(current) = runtime.module(module) else {
        return failure(StatusCode::NOT_FOUND, "not-found", format!("no module {module:?}"));
    };
    let behind: Vec<Arc<Listed>> = runtime
        .directory
        .list()
        .into_iter()
        .filter(|listed| listed.module.name == module && !Arc::ptr_eq(&listed.module, &current))
        .collect();
    let mut reports = Vec::with_capacity(behind.len());
    let (mut upgraded, mut failed) = (0, 0);
    for listed in behind {
        let (status, mut body) = upgrade_answer(crate::runtime::upgrade::upgrade(runtime, &listed, trial).await);
        if status == StatusCode::OK {
            upgraded += 1
        } else {
            failed += 1
        }
        body["agent"] = json!(&*listed.name);
        reports.push(body);
    }
    let body = json!({
        "module": module,
        "version": current.version.to_string(),
        "upgraded": upgraded,
        "failed": failed,
        "agents": reports,
    });
    json_response(if failed == 0 { StatusCode::OK } else { StatusCode::MULTI_STATUS }, &body)
}

async fn spawn(runtime: &Arc<Runtime>, supervisor: &str, body: &Value) -> Response<Full<Bytes>> {
    use crate::manifest::{AgentSpec, Restart};
    let invalid = |why: String| refusal(StatusCode::BAD_REQUEST, "invalid", why);
    let checked = (|| {
        let name = required(body, "name")?;
        crate::manifest::check_name(name).map_err(invalid)?;
        let module = required(body, "module")?;
        let restart = match field(body, "restart")?.unwrap_or("permanent") {
            "permanent" => Restart::Permanent,
            "transient" => Restart::Transient,
            "temporary" => Restart::Temporary,
            other => return Err(invalid(format!("restart {other:?}: permanent, transient or temporary"))),
        };
        let config: Vec<(String, String)> = match body.get("config") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(table)) => table
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_string)))
                .collect(),
            Some(_) => return Err(invalid("`config` is an object of values".into())),
        };
        let grants: Vec<String> = match body.get("grants") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) => names.iter().map(|n| n.as_str().unwrap_or("?").to_string()).collect(),
            Some(_) => return Err(invalid("`grants` is a list of grant names".into())),
        };
        if let Some(unknown) = grants.iter().find(|g| !crate::capabilities::GRANTS.contains(&g.as_str())) {
            return Err(invalid(format!(
                "unknown grant {unknown:?}; the grants: {}",
                crate::capabilities::GRANTS.join(", ")
            )));
        }
        let mut limits = runtime.defaults;
        if let Some(memory) = field(body, "memory")? {
            let memory: crate::manifest::units::ByteSize =
                memory.parse().map_err(|e| invalid(format!("memory: {e}")))?;
            if !(64 << 10..=runtime.settings.max_memory.bytes()).contains(&memory.bytes()) {
                return Err(invalid(format!("memory {memory} is outside 64KiB..={}", runtime.settings.max_memory)));
            }
            limits.memory = memory;
        }
        if let Some(mailbox) = body.get("mailbox") {
            match mailbox.as_u64() {
                Some(n) if n >= 1 && n <= u64::from(u32::MAX) => limits.mailbox = n as u32,
                _ => return Err(invalid("`mailbox` is a number of messages, at least 1".into())),
            }
        }
        Ok::<_, Refusal>((name.to_string(), module.to_string(), restart, config, grants, limits))
    })();
    let (name, module, restart, config, grants, limits) = match checked {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let Some(commands) = runtime.dynamic_supervisors.get(supervisor).map(|c| c.clone()) else {
        return failure(StatusCode::NOT_FOUND, "not-found", format!("no dynamic supervisor {supervisor:?}"));
    };
    let module = match runtime.resolve_module(&module).await {
        Ok(module) => module,
        Err(error) => return failure(StatusCode::BAD_REQUEST, "invalid-module", error.to_string()),
    };
    let names: Vec<&str> = grants.iter().map(String::as_str).collect();
    let spec = AgentSpec {
        config,
        grants: crate::capabilities::Grants::named(&names),
        restart,
        ..AgentSpec::new(name.clone(), &module.name, limits)
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if commands.send(crate::supervision::Command::Spawn { spec, reply }).is_err() {
        return failure(StatusCode::NOT_FOUND, "not-found", format!("supervisor {supervisor:?} has exited"));
    }
    use crate::bindings::supervision::SpawnError;
    match answer.await {
        Ok(Ok(id)) => {
            json_response(StatusCode::CREATED, &json!({ "spawned": name, "id": id, "supervisor": supervisor }))
        }
        Ok(Err(error)) => {
            let (status, code) = match &error {
                SpawnError::AlreadyExists => (StatusCode::CONFLICT, "already-exists"),
                SpawnError::MaxChildren(_) => (StatusCode::CONFLICT, "max-children"),
                SpawnError::StartFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "start-failed"),
                _ => (StatusCode::BAD_REQUEST, "invalid"),
            };
            failure(status, code, format!("{error:?}"))
        }
        Err(_) => failure(StatusCode::NOT_FOUND, "not-found", format!("supervisor {supervisor:?} has exited")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_whole_and_percent_decoded() {
        let query = "kind=order%2Fplaced&agent=a+b&sortx=1&sort=memory&bad=%zz&cut=%4";
        assert_eq!(param(query, "kind").as_deref(), Some("order/placed"));
        assert_eq!(param(query, "agent").as_deref(), Some("a b"));
        assert_eq!(param(query, "sort").as_deref(), Some("memory"), "not `sortx`");
        assert_eq!(param(query, "bad").as_deref(), Some("%zz"));
        assert_eq!(param(query, "cut").as_deref(), Some("%4"));
        assert_eq!(param(query, "absent"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abd", b"abc"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"", b"abc"));
    }
}
