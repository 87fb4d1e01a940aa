//! The dashboard: a page at `/` of the admin endpoint, shipped inside the binary (three files,
//! no framework, nothing fetched from elsewhere), and the stream that keeps it live.
//!
//! The page itself holds no data and needs no token; everything it shows comes from the API
//! with the token (taken from the link `agora run` prints, `/#token=...`, which never reaches
//! the server, or typed in). It is served with a content security policy that lets it load
//! and reach nothing but this endpoint.
//!
//! `GET /v1/live` streams server-sent events (`text/event-stream`, each `data:` a JSON object)
//! to one viewer, read with `fetch` so that the token goes in a header, not the URL: a `hello` (every agent, the host's status,
//! the recent lifecycle events), then a `tick` a second (the status, the rates, the agents whose
//! figures changed and the ids of those gone), and each lifecycle event (`agent_exited`,
//! `agent_restarted`, ...) the moment it is logged. The sampling runs only while a viewer is
//! connected, in that viewer's task: with nobody watching, the dashboard costs nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::v1::{Streamed, row};
use crate::infra::log_tail::{LogLine, tail};
use crate::runtime::Runtime;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// How often a viewer gets a tick.
const TICK: Duration = Duration::from_secs(1);
/// Lifecycle events a new viewer gets in its `hello`.
const RECENT_EVENTS: usize = 200;

/// One of the page's files, by path.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    let header = http::HeaderValue::from_static;
    headers.insert(http::header::CONTENT_TYPE, header(kind));
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        header("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    );
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, header("nosniff"));
    headers.insert(http::header::CACHE_CONTROL, header("no-store"));
    headers.insert(http::header::REFERRER_POLICY, header("no-referrer"));
    *response.status_mut() = StatusCode::OK;
    Some(response)
}

/// One server-sent event.
fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// A log line that is a lifecycle event, as the page shows it.
fn lifecycle(line: &LogLine) -> Option<Value> {
    let kind = line.event.as_deref()?;
    Some(json!({ "t": "event", "time_ms": line.time_ms, "kind": kind, "agent": line.agent, "text": line.message }))
}

/// The figures of a row that, when they change, the viewer is sent the row again.
type Figures = [u64; 7];

fn figures(row: &super::v1::Row<'_>) -> Figures {
    [row.mailbox, row.memory_peak, row.messages_in, row.cpu_ticks, row.restarts.into(), row.phase, row.fuel]
}

/// The newest event's sequence number in the store, to count events per second.
fn newest_event(runtime: &Runtime) -> u64 {
    let query = crate::capabilities::events::store::Query { limit: 1, newest_first: true, ..Default::default() };
    runtime.services.events.store.query(&query).ok().and_then(|page| page.events.first().map(|e| e.seq)).unwrap_or(0)
}

pub fn live(runtime: &Arc<Runtime>) -> Response<Streamed> {
    let (recent, mut logs) = tail().follow(RECENT_EVENTS, |line| line.event.is_some());
    let (sender, streamed) = Streamed::channel(64);
    let runtime = runtime.clone();
    tokio::spawn(async move {
        let mut seen: HashMap<u64, Figures> = HashMap::new();
        let listed = runtime.directory.list();
        let rows: Vec<_> = listed.iter().map(|l| row(l)).collect();
        for row in &rows {
            seen.insert(row.id, figures(row));
        }
        let events: Vec<Value> = recent.iter().filter_map(|l| lifecycle(l)).rev().collect();
        let hello =
            json!({ "t": "hello", "status": super::v1::status_value(&runtime), "agents": rows, "events": events });
        drop(rows);
        if sender.send(event(&hello)).await.is_err() {
            return;
        }
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        let mut last = (Instant::now(), messages_total(&listed), newest_event(&runtime));
        drop(listed);
        let mut ticks = tokio::time::interval(TICK);
        ticks.tick().await;
        loop {
            let next = tokio::select! {
                received = logs.recv() => match received {
                    Ok(entry) => {
                        if entry.event.as_deref() == Some("agent_restarted") {
                            restarts.push_back(Instant::now());
                        }
                        match lifecycle(&entry) {
                            Some(lifecycle) => event(&lifecycle),
                            None => continue,
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => event(&json!({ "t": "lost", "lines": lost })),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = ticks.tick() => {
                    let listed = runtime.directory.list();
                    let now = Instant::now();
                    while restarts.front().is_some_and(|at| now.duration_since(*at) > Duration::from_secs(60)) {
                        restarts.pop_front();
                    }
                    let (messages, events) = (messages_total(&listed), newest_event(&runtime));
                    let elapsed = now.duration_since(last.0).as_secs_f64().max(1e-3);
                    let rates = json!({
                        "messages_per_s": messages.saturating_sub(last.1) as f64 / elapsed,
                        "events_per_s": events.saturating_sub(last.2) as f64 / elapsed,
                        "restarts_per_min": restarts.len(),
                        "memory_bytes": crate::infra::resident_bytes(),
                    });
                    last = (now, messages, events);
                    let mut changed = Vec::new();
                    let mut alive = std::collections::HashSet::with_capacity(listed.len());
                    for listed in &listed {
                        let row = row(listed);
                        alive.insert(row.id);
                        let now = figures(&row);
                        if seen.insert(row.id, now) != Some(now) {
                            changed.push(serde_json::to_value(&row).unwrap_or_default());
                        }
                    }
                    let gone: Vec<u64> = seen.keys().copied().filter(|id| !alive.contains(id)).collect();
                    for id in &gone {
                        seen.remove(id);
                    }
                    let status = super::v1::status_value(&runtime);
                    event(&json!({ "t": "tick", "status": status, "rates": rates, "changed": changed, "gone": gone }))
                }
            };
            if sender.send(next).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(streamed);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// Messages handled so far by the agents alive now (an exit takes its count along: the rate
/// never goes below zero for it).
fn messages_total(listed: &[Arc<crate::runtime::directory::Listed>]) -> u64 {
    listed.iter().map(|l| l.stats.messages_in.get()).sum()
}
