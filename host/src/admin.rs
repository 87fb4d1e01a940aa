//! The admin endpoint (`[host] admin = "127.0.0.1:9464"`): HTTP/1.1 on the host's own socket.
//!
//! - `GET /metrics`: the Prometheus exposition.
//! - `GET /config`: every config value but the secret ones, as a JSON object by path;
//!   `GET /config/<path>`: one (`403` for a secret). `/config` takes the API's token, as `/v1`.
//! - `PUT /config/<path>` (body: the new value) and `DELETE /config/<path>`: change the live
//!   config at a path the manifest marks updatable; `403` elsewhere, with the reason; `507` when
//!   the config is at its bounds.
//! - `GET /health`: `ok` while the host runs.
//! - `GET /`: the dashboard ([`dashboard`]), a page over the API.
//! - `/v1/...`: the admin API ([`v1`]), JSON, behind the bearer token of this start.
//!
//! The bound address is recorded in `<data_dir>/host.lock`, so that the CLI finds a host that
//! asked for port 0. What keeps other local software out: requests must name the bound address
//! in `Host` (a page in a browser that rebinds its own name to 127.0.0.1 sends its own name),
//! writes from a browser must come from that origin, connections are capped in number and closed
//! when idle, and the API needs the token, readable by this user only.

pub mod dashboard;
pub mod v1;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::capabilities::config::UpdateError;
use crate::runtime::Runtime;

/// Largest config value accepted in one update.
const MAX_VALUE: usize = 64 << 10;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `accept` waits after a failure (out of file descriptors, say), doubling up to the
/// most, so that a failing accept never spins.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// What the endpoint has refused, for `/metrics`.
#[derive(Default)]
pub struct AdminCounters {
    pub connections_refused: AtomicU64,
    pub accept_errors: AtomicU64,
    pub requests_refused: AtomicU64,
}

/// Where the endpoint listens: a TCP address, or a Unix socket (`unix:<path>`), which only
/// local users with access to the file reach, and no browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Address, String> {
        match text.strip_prefix("unix:") {
            Some("") => Err("`unix:` needs a socket path, as in unix:data/admin.sock".into()),
            Some(path) => Ok(Address::Unix(path.into())),
            None => text.parse().map(Address::Tcp).map_err(|_| {
                format!("{text:?} is neither an address with a port (127.0.0.1:9464) nor unix:<socket path>")
            }),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(address) => write!(f, "{address}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A connection's byte stream, TCP or Unix.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn bind(address: &Address) -> anyhow::Result<(Listener, Address)> {
        let cannot = |e: std::io::Error| anyhow::anyhow!("host.admin: cannot listen on {address}: {e}");
        match address {
            Address::Tcp(socket) => {
                let listener = tokio::net::TcpListener::bind(socket).await.map_err(cannot)?;
                let bound = listener.local_addr()?;
                Ok((Listener::Tcp(listener), Address::Tcp(bound)))
            }
            Address::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                // A socket left by a host that is gone (nobody accepts on it) is replaced; one
                // that answers belongs to someone else.
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        anyhow::bail!("host.admin: {} is in use by another process", path.display());
                    }
                    std::fs::remove_file(path).map_err(cannot)?;
                }
                let listener = tokio::net::UnixListener::bind(path).map_err(cannot)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(cannot)?;
                Ok((Listener::Unix(listener), address.clone()))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Box<dyn Connection>> {
        Ok(match self {
            Listener::Tcp(listener) => Box::new(listener.accept().await?.0),
            Listener::Unix(listener) => Box::new(listener.accept().await?.0),
        })
    }
}

/// Bind the endpoint and serve it on a task; returns the bound address.
pub async fn start(runtime: Arc<Runtime>, address: Address) -> anyhow::Result<Address> {
    let (listener, bound) = Listener::bind(&address).await?;
    // The token is in place before anyone is told the endpoint listens.
    let endpoint = Arc::new(Endpoint { hosts: accepted_hosts(&bound), token: v1::issue_token(&runtime.settings)? });
    let url = match &bound {
        Address::Tcp(socket) => format!("http://{socket}"),
        Address::Unix(_) => bound.to_string(),
    };
    tracing::info!(event = "admin_listening", address = %bound,
        "admin endpoint on {url} (/metrics, /config, /v1: the API, token in {})",
        runtime.settings.admin_token_file.clone().unwrap_or_else(|| v1::token_file(&runtime.settings.data_dir)).display());
    // Connections served at once (`host.admin_max_connections`); one more is closed at once.
    let slots = Arc::new(tokio::sync::Semaphore::new(runtime.settings.admin_max_connections as usize));
    let idle_timeout = runtime.settings.admin_idle_timeout.duration();
    tokio::spawn(async move {
        let mut backoff = ACCEPT_BACKOFF.0;
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => {
                    backoff = ACCEPT_BACKOFF.0;
                    stream
                }
                Err(error) => {
                    runtime.admin.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if backoff == ACCEPT_BACKOFF.0 {
                        tracing::warn!(event = "admin_accept_failed", %error, "the admin endpoint cannot accept: {error}; retrying with backoff");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                runtime.admin.connections_refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            let (runtime, endpoint) = (runtime.clone(), endpoint.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let activity = Arc::new(AtomicU64::new(0));
                let started = tokio::time::Instant::now();
                let io = TokioIo::new(Watched { inner: stream, activity: activity.clone(), started });
                let service = hyper::service::service_fn(move |request| {
                    let (runtime, endpoint) = (runtime.clone(), endpoint.clone());
                    async move { Ok::<_, Infallible>(guarded(&runtime, &endpoint, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(io, service);
                tokio::select! {
                    _ = connection => {}
                    _ = idle(&activity, started, idle_timeout) => {}
                }
            });
        }
    });
    Ok(bound)
}

/// Resolves once the connection has seen no bytes either way for `timeout`.
async fn idle(activity: &AtomicU64, started: tokio::time::Instant, timeout: Duration) {
    loop {
        let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
        let due = last + timeout;
        if tokio::time::Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// A connection's stream, noting when bytes last moved (ms since `started`).
struct Watched {
    inner: Box<dyn Connection>,
    activity: Arc<AtomicU64>,
    started: tokio::time::Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The `Host` values that name this endpoint: its bound address, and for a loopback bind the
/// `localhost` spelling too. Anything else is another name resolved to this address. A Unix
/// socket is reached by no name (no browser connects to it): clients say `localhost`.
fn accepted_hosts(bound: &Address) -> Vec<String> {
    let Address::Tcp(bound) = bound else { return vec!["localhost".to_string()] };
    let mut hosts = vec![bound.to_string()];
    if bound.ip().is_loopback() {
        hosts.push(format!("localhost:{}", bound.port()));
    }
    hosts
}

/// Check where a request claims to go (and, for a write, where it comes from), then serve it.
/// What this endpoint answers to, and the API's token for this start.
struct Endpoint {
    hosts: Vec<String>,
    token: String,
}

async fn guarded(runtime: &Arc<Runtime>, endpoint: &Endpoint, request: Request<Incoming>) -> Response<v1::Body> {
    if let Err(refused) = checked(runtime, endpoint, &request) {
        return refused.map(http_body_util::Either::Left);
    }
    if request.uri().path().starts_with("/v1/") {
        return v1::serve(runtime, &endpoint.token, request).await;
    }
    if request.method() == Method::GET
        && let Some(page) = dashboard::asset(request.uri().path())
    {
        return page.map(http_body_util::Either::Left);
    }
    // The live config is the API's too: reading its values or changing them takes the token.
    if matches!(route(request.uri().path()), Route::AllConfig | Route::Config(_))
        && !v1::authorized(&request, &endpoint.token)
    {
        runtime.admin.requests_refused.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <token>`, the token in the host's <data_dir>/admin.token\n",
        )
        .map(http_body_util::Either::Left);
    }
    serve(runtime, request).await.map(http_body_util::Either::Left)
}

/// Refuse a request that names another host, or a write from another origin.
fn checked(
    runtime: &Runtime,
    endpoint: &Endpoint,
    request: &Request<Incoming>,
) -> Result<(), Box<Response<Full<Bytes>>>> {
    let hosts = &endpoint.hosts;
    let host = request.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(|host| hosts.iter().any(|h| h.eq_ignore_ascii_case(host))) {
        runtime.admin.requests_refused.fetch_add(1, Ordering::Relaxed);
        let expected = hosts.join(" or ");
        return Err(Box::new(text(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this endpoint answers only to Host: {expected}\n"),
        )));
    }
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if writes && let Some(origin) = request.headers().get(http::header::ORIGIN) {
        let same =
            origin.to_str().ok().and_then(|o| o.strip_prefix("http://")).is_some_and(|o| hosts.iter().any(|h| h == o));
        if !same {
            runtime.admin.requests_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                "writes are accepted only from this endpoint's own origin\n",
            )));
        }
    }
    Ok(())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The host's own refusals, as Prometheus counters.
fn host_counters(runtime: &Runtime) -> String {
    let admin = &runtime.admin;
    let counters = [
        (
            "agora_admin_connections_refused_total",
            "Admin connections closed at once: the cap was reached",
            &admin.connections_refused,
        ),
        (
            "agora_admin_accept_errors_total",
            "Failed accepts on the admin socket (out of file descriptors, say)",
            &admin.accept_errors,
        ),
        (
            "agora_admin_requests_refused_total",
            "Admin requests refused for their Host or Origin",
            &admin.requests_refused,
        ),
        (
            "agora_config_updates_refused_total",
            "Config updates refused because the config was at its bounds",
            &runtime.services.config.refused,
        ),
        (
            "agora_agent_output_dropped_bytes_total",
            "Guest stdout/stderr bytes cut from long lines or dropped over the rate",
            &crate::runtime::output::DROPPED_BYTES,
        ),
    ];
    let mut text = String::new();
    for (name, help, counter) in counters {
        let value = counter.load(Ordering::Relaxed);
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
    }
    let live = runtime.live_instances.load(Ordering::Relaxed);
    let name = "agora_live_instances";
    text.push_str(&format!(
        "# HELP {name} Agent stores alive (an awake agent's holds a pool slot, a hibernated one's none)\n\
         # TYPE {name} gauge\n{name} {live}\n"
    ));
    let name = "agora_agents";
    text.push_str(&format!("# HELP {name} Registered agents, by what they are doing\n# TYPE {name} gauge\n"));
    for (phase, count) in runtime.directory.by_phase() {
        text.push_str(&format!("{name}{{state=\"{}\"}} {count}\n", phase.name()));
    }
    let warm = runtime.warm.statuses();
    if !warm.is_empty() {
        let ready: Vec<(&str, usize)> = warm.iter().map(|(module, ready, _)| (module.as_str(), *ready)).collect();
        let target: Vec<(&str, usize)> = warm.iter().map(|(module, _, target)| (module.as_str(), *target)).collect();
        for (name, help, values) in [
            ("agora_warm_instances", "Instances of a module instantiated ahead and waiting (warm)", ready),
            ("agora_warm_target", "Instances a module keeps warm (modules.<name>.warm or host.warm)", target),
        ] {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (module, value) in values {
                let label = crate::capabilities::telemetry::summary::escape(module);
                text.push_str(&format!("{name}{{module=\"{label}\"}} {value}\n"));
            }
        }
    }
    text
}

/// Each worker pool's workers, as `agora_pool_workers{pool, state}` (available, checked_out),
/// its overflow workers and its waiting checkouts.
async fn pool_gauges(runtime: &Runtime) -> String {
    let pools = runtime.services.pools.statuses(std::time::Duration::from_secs(1)).await;
    if pools.is_empty() {
        return String::new();
    }
    let label = crate::capabilities::telemetry::summary::escape;
    let mut text = String::new();
    let name = "agora_pool_workers";
    text.push_str(&format!(
        "# HELP {name} A worker pool's running workers, free or checked out\n# TYPE {name} gauge\n"
    ));
    for (pool, status) in &pools {
        let pool = label(pool);
        for (state, count) in [("available", status.available), ("checked_out", status.checked_out)] {
            text.push_str(&format!("{name}{{pool=\"{pool}\",state=\"{state}\"}} {count}\n"));
        }
    }
    for (name, help, value) in [
        ("agora_pool_overflow", "Overflow workers of a pool running now (all checked out)", 0),
        ("agora_pool_waiting", "Checkouts waiting for a worker of a pool", 1),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (pool, status) in &pools {
            let count = if value == 0 { status.overflow } else { status.waiting };
            text.push_str(&format!("{name}{{pool=\"{}\"}} {count}\n", label(pool)));
        }
    }
    text
}

/// The routes, matched exactly: `/config` and `/config/<path>`, never `/configX`.
enum Route {
    Health,
    Metrics,
    AllConfig,
    Config(String),
    Unknown,
}

fn route(path: &str) -> Route {
    match path {
        "/health" => Route::Health,
        "/metrics" => Route::Metrics,
        "/config" | "/config/" => Route::AllConfig,
        _ => match path.strip_prefix("/config/") {
            Some(config_path) => Route::Config(config_path.to_string()),
            None => Route::Unknown,
        },
    }
}

async fn serve(runtime: &Runtime, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let config = &runtime.services.config;
    match (request.method().clone(), route(request.uri().path())) {
        (Method::GET, Route::Health) => text(StatusCode::OK, "ok\n"),
        (Method::GET, Route::Metrics) => {
            let mut exposition = runtime.services.telemetry.render();
            exposition.push_str(&host_counters(runtime));
            exposition.push_str(&pool_gauges(runtime).await);
            let mut response = text(StatusCode::OK, exposition);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (Method::GET, Route::AllConfig) => {
            let values: serde_json::Map<String, serde_json::Value> = config
                .list("")
                .into_iter()
                .filter(|(path, _)| !config.is_secret(path))
                .map(|(k, v)| (k, v.into()))
                .collect();
            text(StatusCode::OK, serde_json::Value::Object(values).to_string())
        }
        (Method::GET, Route::Config(path)) if config.is_secret(&path) => {
            text(StatusCode::FORBIDDEN, format!("{path:?} is secret: agents read it, this endpoint never serves it\n"))
        }
        (Method::GET, Route::Config(path)) => match config.get(&path) {
            Ok(Some(value)) => text(StatusCode::OK, value),
            Ok(None) => text(StatusCode::NOT_FOUND, format!("no config value at {path:?}\n")),
            Err(error) => text(StatusCode::BAD_REQUEST, format!("{error:?}\n")),
        },
        (method @ (Method::PUT | Method::DELETE), Route::Config(path)) => {
            let value = if method == Method::PUT {
                match Limited::new(request.into_body(), MAX_VALUE).collect().await {
                    Ok(body) => match String::from_utf8(body.to_bytes().to_vec()) {
                        Ok(value) => Some(value),
                        Err(_) => return text(StatusCode::BAD_REQUEST, "the value must be UTF-8\n"),
                    },
                    Err(_) => {
                        return text(StatusCode::PAYLOAD_TOO_LARGE, format!("values are at most {MAX_VALUE} bytes\n"));
                    }
                }
            } else {
                None
            };
            match crate::capabilities::config::update(runtime, &path, value.clone()) {
                Ok(notified) => match runtime.cluster.get() {
                    Some(cluster) => match cluster.share_config(&path, value).await {
                        Ok(()) => text(
                            StatusCode::OK,
                            format!("updated {path} across the cluster; {notified} subscribers here notified\n"),
                        ),
                        Err(error) => text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "updated {path} on this node only: the cluster's config bucket did not take it ({error})\n"
                            ),
                        ),
                    },
                    None => text(StatusCode::OK, format!("updated {path}; {notified} subscribers notified\n")),
                },
                Err(error @ UpdateError::NotUpdatable(..)) => text(StatusCode::FORBIDDEN, format!("{error}\n")),
                Err(error @ UpdateError::IsTable(_)) => text(StatusCode::CONFLICT, format!("{error}\n")),
                Err(error @ UpdateError::InvalidPath(_)) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
                Err(error @ UpdateError::Full(_)) => text(StatusCode::INSUFFICIENT_STORAGE, format!("{error}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "routes: GET /health, GET /metrics, GET /config, GET|PUT|DELETE /config/<path>, /v1/... (the API)\n",
        ),
    }
}

/// A client for the CLI: one request to a running host's endpoint (with the API's token, when
/// given); returns the status and the body.
pub async fn request(
    address: &Address,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
) -> anyhow::Result<(StatusCode, String)> {
    let response = send(address, token, method, path, body.into()).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A `GET` whose body streams (a followed log): each line to `on_line` as it arrives, until the
/// host ends the stream. A refusal is the status and the whole body, unread by `on_line`.
pub async fn stream(
    address: &Address,
    token: &str,
    path: &str,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<(StatusCode, String)> {
    let response = send(address, Some(token), Method::GET, path, Bytes::new()).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let whole = body.collect().await?.to_bytes();
        return Ok((status, String::from_utf8_lossy(&whole).into_owned()));
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            on_line(String::from_utf8_lossy(&line[..end]).as_ref());
        }
    }
    Ok((status, String::new()))
}

async fn send(
    address: &Address,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Response<Incoming>> {
    let unreachable = |e: std::io::Error| anyhow::anyhow!("cannot reach the host's admin endpoint at {address}: {e}");
    let (stream, host): (Box<dyn Connection>, String) = match address {
        Address::Tcp(socket) => {
            (Box::new(tokio::net::TcpStream::connect(socket).await.map_err(unreachable)?), socket.to_string())
        }
        Address::Unix(path) => {
            (Box::new(tokio::net::UnixStream::connect(path).await.map_err(unreachable)?), "localhost".to_string())
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header(http::header::HOST, host);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    Ok(sender.send_request(request.body(Full::new(body))?).await?)
}
