//! The outbound capability: agents' HTTP requests through the standard
//! `wasi:http/outgoing-handler`, so that any language's WASI HTTP client works, with the host's
//! protection applied per named target.
//!
//! ```toml
//! [outbound.search]
//! url = "http://127.0.0.1:8080/api"     # requests must fall under this origin and path
//! # url = "https://search.internal/api" # TLS, verified against the system's CA store, or
//! # ca_bundle = "certs/internal-ca.pem" # only against these CAs (relative to the manifest)
//! connect_timeout = "2s"
//! response_timeout = "10s"              # to the first byte, and between body chunks
//! pool = { size = 4, overflow = 2, checkout_timeout = "500ms" }
//! rate = { limit = 100, per = "1s", burst = 20 }          # the whole target
//! rate_per_agent = { limit = 10, per = "1s" }             # each agent, by name
//! breaker = { failures = 5, backoff_initial = "1s", backoff_max = "30s", probes = 1 }
//! # or: breaker = { success_rate = 0.9, minimum_calls = 20, window = "10s" }
//!
//! [[agent]]
//! outbound = ["search"]                 # deny by default: only the targets listed
//! ```
//!
//! A request passes, in order: the allow-list (else `error-code.HTTP-request-denied`), the
//! breaker (else a `503` response), the rate limits (else a `429` response), and a pool
//! checkout (else `error-code.connection-limit-reached`). The two synthesized responses carry
//! `retry-after` (seconds), `agora-retry-after-ms`, and `agora-rejected: circuit-open` or
//! `rate-limited`, so that a guest tells them from the target's own answers while an ordinary
//! HTTP client already does the right thing with them. Transport errors, timeouts and `5xx`
//! answers count as failures for the breaker; any other answer as a success.

pub mod breaker;
pub mod pool;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::hooks::Hooks;
use super::{Capability, Entering, Getter, SectionError, Served, Startup, View};
use crate::bindings::Error;
use crate::bindings::outbound::{self as wit, Circuit as WitCircuit, TargetStatus};
use crate::capabilities::rate_limits::{Limiter, LimiterSpec, Refusal};
use crate::manifest::Span;
use crate::runtime::state::AgentState;
use breaker::{Breaker, BreakerSpec, Circuit, Trip};
use pool::{CheckoutError, Pool, PoolSpec};

/// `[outbound.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub url: String,
    /// A PEM file of the CAs an `https` target's certificate must chain to, instead of the
    /// system's store.
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Span,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Span,
    #[serde(default)]
    pub pool: PoolSection,
    pub rate: Option<LimiterSpec>,
    pub rate_per_agent: Option<LimiterSpec>,
    pub breaker: Option<BreakerSection>,
}

fn default_connect_timeout() -> Span {
    Span(Duration::from_secs(5))
}

fn default_response_timeout() -> Span {
    Span(Duration::from_secs(30))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    pub size: u32,
    pub overflow: u32,
    pub checkout_timeout: Span,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection { size: 8, overflow: 0, checkout_timeout: Span(Duration::from_secs(1)) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    pub failures: Option<u32>,
    pub success_rate: Option<f64>,
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
    #[serde(default = "default_window")]
    pub window: Span,
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial: Span,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Span,
    #[serde(default = "default_probes")]
    pub probes: u32,
}

fn default_minimum_calls() -> u32 {
    10
}
fn default_window() -> Span {
    Span(Duration::from_secs(10))
}
fn default_backoff_initial() -> Span {
    Span(Duration::from_secs(1))
}
fn default_backoff_max() -> Span {
    Span(Duration::from_secs(30))
}
fn default_probes() -> u32 {
    1
}

/// Where a target's requests may go: an http or https origin and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl TargetSpec {
    /// Check the values serde cannot; the text says what is wrong, the caller says where.
    pub fn validate(&self) -> Result<Origin, String> {
        let origin = parse_origin(&self.url)?;
        match (&self.ca_bundle, origin.secure) {
            (Some(_), false) => return Err("ca_bundle applies to https targets only".into()),
            (Some(bundle), true) => drop(tls::load_bundle(bundle)?),
            (None, _) => {}
        }
        if let Some(rate) = &self.rate
            && rate.keyed
        {
            return Err("`rate` limits the whole target; per-agent limits go in `rate_per_agent`".into());
        }
        if self.pool.size + self.pool.overflow == 0 {
            return Err("pool: size + overflow must be at least 1".into());
        }
        if let Some(breaker) = &self.breaker {
            breaker.spec()?;
        }
        Ok(origin)
    }
}

fn parse_origin(url: &str) -> Result<Origin, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("url {url:?}: must start with http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| format!("url {url:?}: no host"))?;
    if has_userinfo(&uri) {
        return Err(format!("url {url:?}: credentials in a URL (user@host) are not accepted"));
    }
    let path = uri.path().trim_end_matches('/').to_string();
    let port = uri.port_u16().unwrap_or(default_port(secure));
    Ok(Origin { secure, host: host.to_ascii_lowercase(), port, path })
}

fn default_port(secure: bool) -> u16 {
    if secure { 443 } else { 80 }
}

/// Whether the URI's authority carries credentials (`user[:password]@`).
fn has_userinfo(uri: &http::Uri) -> bool {
    uri.authority().is_some_and(|authority| authority.as_str().contains('@'))
}

impl BreakerSection {
    pub fn spec(&self) -> Result<BreakerSpec, String> {
        let trip = match (self.failures, self.success_rate) {
            (Some(0), _) => return Err("breaker.failures must be at least 1".into()),
            (Some(n), None) => Trip::ConsecutiveFailures(n),
            (None, Some(rate)) if (0.0..=1.0).contains(&rate) => {
                if self.window.duration() < Duration::from_secs(1) {
                    return Err("breaker.window must be at least 1s".into());
                }
                Trip::SuccessRate { rate, minimum: self.minimum_calls, window: self.window.duration() }
            }
            (None, Some(rate)) => return Err(format!("breaker.success_rate {rate} is outside 0..=1")),
            _ => return Err("breaker: set exactly one of `failures` and `success_rate`".into()),
        };
        if self.backoff_initial.duration().is_zero() || self.backoff_initial.duration() > self.backoff_max.duration() {
            return Err("breaker: needs 0 < backoff_initial <= backoff_max".into());
        }
        Ok(BreakerSpec {
            trip,
            backoff_initial: self.backoff_initial.duration(),
            backoff_max: self.backoff_max.duration(),
            probes: self.probes.max(1),
        })
    }
}

/// One target, ready to carry requests.
pub struct Target {
    pub name: String,
    origin: Origin,
    pool: Arc<Pool>,
    rate: Option<Limiter<()>>,
    rate_per_agent: Option<Limiter<Arc<str>>>,
    breaker: Option<Breaker>,
    response_timeout: Duration,
}

/// The outbound targets of one host.
pub struct Outbound {
    targets: Arc<BTreeMap<String, Arc<Target>>>,
}

impl Outbound {
    /// Resolve each target's address once, at start.
    pub fn new(specs: &BTreeMap<String, TargetSpec>) -> anyhow::Result<Outbound> {
        let mut targets = BTreeMap::new();
        for (name, spec) in specs {
            let origin = spec.validate().map_err(|e| anyhow::anyhow!("outbound.{name}: {e}"))?;
            // An IPv6 literal is written in brackets in a URL, and resolved without them.
            let literal = origin.host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            let host = literal.unwrap_or(&origin.host);
            let address: SocketAddr = (host, origin.port)
                .to_socket_addrs()
                .map_err(|e| anyhow::anyhow!("outbound.{name}: cannot resolve {}: {e}", origin.host))?
                .next()
                .ok_or_else(|| anyhow::anyhow!("outbound.{name}: {} has no address", origin.host))?;
            let pool = PoolSpec {
                size: spec.pool.size,
                overflow: spec.pool.overflow,
                checkout_timeout: spec.pool.checkout_timeout.duration(),
                connect_timeout: spec.connect_timeout.duration(),
            };
            let tls = origin
                .secure
                .then(|| tls::Tls::new(host, spec.ca_bundle.as_deref()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("outbound.{name}: {e}"))?;
            let quota = |limit: &Option<LimiterSpec>| limit.as_ref().and_then(LimiterSpec::quota);
            let target = Target {
                name: name.clone(),
                origin,
                pool: Arc::new(Pool::new(address, pool, tls)),
                rate: quota(&spec.rate).map(|q| Limiter::new(q, false)),
                rate_per_agent: quota(&spec.rate_per_agent).map(|q| Limiter::new(q, true)),
                breaker: spec
                    .breaker
                    .as_ref()
                    .map(|b| b.spec().map(|s| Breaker::new(&s)))
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                response_timeout: spec.response_timeout.duration(),
            };
            targets.insert(name.clone(), Arc::new(target));
        }
        let targets = Arc::new(targets);
        if targets.values().any(|t| t.rate_per_agent.is_some()) {
            // Agents come and go (spawned ones under fresh names): forget the refilled ones.
            let every = crate::capabilities::rate_limits::SWEEP_EVERY;
            crate::infra::housekeeping::global().sweep(every, Arc::downgrade(&targets), |targets| {
                for limiter in targets.values().filter_map(|t| t.rate_per_agent.as_ref()) {
                    limiter.housekeep();
                }
            });
        }
        Ok(Outbound { targets })
    }

    pub fn target(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets.get(name)
    }
}

/// Why the host answered instead of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    CircuitOpen,
    RateLimited,
}

impl Rejection {
    pub fn header_value(self) -> &'static str {
        match self {
            Rejection::CircuitOpen => "circuit-open",
            Rejection::RateLimited => "rate-limited",
        }
    }

    fn status(self) -> u16 {
        match self {
            Rejection::CircuitOpen => 503,
            Rejection::RateLimited => 429,
        }
    }
}

type Sent = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>), HttpError>;

/// Rounded up, so that a client that waits exactly that long is never early.
fn ceil_millis(duration: Duration) -> u64 {
    duration.as_nanos().div_ceil(1_000_000) as u64
}

/// The host's answer in the target's place.
fn rejected(rejection: Rejection, retry_after: Duration) -> Sent {
    let millis = ceil_millis(retry_after).max(1);
    let response = http::Response::builder()
        .status(rejection.status())
        .header(http::header::RETRY_AFTER, millis.div_ceil(1000).to_string())
        .header("agora-rejected", rejection.header_value())
        .header("agora-retry-after-ms", millis.to_string())
        .body(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync())
        .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
    Ok((response, Box::new(async { Ok(()) })))
}

fn count(target: &str, outcome: &'static str) {
    metrics::counter!("agora_outbound_requests_total", "target" => target.to_string(), "outcome" => outcome)
        .increment(1);
}

impl Target {
    /// Whether `uri` falls under this target's origin and path. A path with dot segments (plain
    /// or percent-encoded) or backslashes is refused outright: a server that normalizes it could
    /// be led outside the allowed prefix.
    fn covers(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        // `user@host` would reach the upstream's `Host` header as written.
        if has_userinfo(uri) {
            return false;
        }
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return false,
        };
        let port = uri.port_u16().unwrap_or(default_port(secure));
        let path = uri.path();
        let lowered = path.to_ascii_lowercase();
        let escapes =
            lowered.contains("%2e") || lowered.contains("%2f") || lowered.contains("%5c") || path.contains('\\');
        if escapes || path.split('/').any(|segment| segment == "." || segment == "..") {
            return false;
        }
        let under_path = self.origin.path.is_empty()
            || path == self.origin.path
            || path.strip_prefix(&self.origin.path).is_some_and(|rest| rest.starts_with('/'));
        secure == self.origin.secure
            && host.eq_ignore_ascii_case(&self.origin.host)
            && port == self.origin.port
            && under_path
    }

    async fn send(
        &self,
        agent: &Arc<str>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Sent {
        let permit = match self.breaker.as_ref().map(Breaker::permit).transpose() {
            Ok(permit) => permit,
            Err(retry_after) => {
                count(&self.name, "circuit_open");
                return rejected(Rejection::CircuitOpen, retry_after);
            }
        };
        let limited = self
            .rate_per_agent
            .as_ref()
            .map_or(Ok(()), |limiter| limiter.check(agent))
            .and_then(|()| self.rate.as_ref().map_or(Ok(()), |limiter| limiter.check(&())));
        if let Err(refusal) = limited {
            // One cell at a time is never more than the burst; only `Limited` happens here.
            let retry_after = match refusal {
                Refusal::Limited(after) => after,
                Refusal::ExceedsBurst(_) => Duration::from_secs(1),
            };
            count(&self.name, "rate_limited");
            return rejected(Rejection::RateLimited, retry_after);
        }
        let mut checkout = match self.pool.checkout().await {
            Ok(checkout) => checkout,
            Err(CheckoutError::Timeout) => {
                count(&self.name, "pool_timeout");
                return Err(HttpError::ConnectionLimitReached);
            }
            Err(CheckoutError::Connect(error)) => {
                count(&self.name, "error");
                if let Some(permit) = permit {
                    permit.record(false);
                }
                return Err(error);
            }
        };
        // On the wire the request line carries only the path; the origin is in `host`.
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        // A guest may ask for shorter timeouts than the target's, never longer: a connection is
        // a shared resource of the pool.
        let capped = |asked: Option<Duration>| asked.map_or(self.response_timeout, |t| t.min(self.response_timeout));
        let first_byte = capped(options.and_then(|o| o.first_byte_timeout));
        let between_bytes = capped(options.and_then(|o| o.between_bytes_timeout));
        let sender = checkout.sender.as_mut().expect("a checkout holds a connection");
        let sent = tokio::time::timeout(first_byte, sender.send_request(request)).await;
        let response = match sent {
            Ok(Ok(response)) => response,
            failed => {
                count(&self.name, "error");
                if let Some(permit) = permit {
                    permit.record(false);
                }
                return Err(match failed {
                    Err(_) => HttpError::ConnectionReadTimeout,
                    Ok(Err(error)) => HttpError::from(error),
                    Ok(Ok(_)) => unreachable!(),
                });
            }
        };
        let server_error = response.status().is_server_error();
        count(&self.name, if server_error { "server_error" } else { "ok" });
        if let Some(permit) = permit {
            permit.record(!server_error);
        }
        let response = response.map(|incoming| PooledBody::new(incoming, checkout, between_bytes).boxed_unsync());
        Ok((response, Box::new(async { Ok(()) })))
    }

    pub fn status(&self) -> (Circuit, Option<Duration>, u32, u32) {
        let (circuit, retry_after) = match &self.breaker {
            Some(breaker) => (breaker.circuit(), breaker.retry_after()),
            None => (Circuit::Closed, None),
        };
        (circuit, retry_after, self.pool.in_use(), self.pool.capacity())
    }
}

/// A response body that holds its connection until it ends, and fails when the target goes
/// quiet for longer than the response timeout.
struct PooledBody {
    incoming: hyper::body::Incoming,
    _checkout: pool::Checkout,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl PooledBody {
    fn new(incoming: hyper::body::Incoming, checkout: pool::Checkout, idle: Duration) -> PooledBody {
        PooledBody { incoming, _checkout: checkout, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(context) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(HttpError::from(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.deadline.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

/// The per-agent side: which targets this agent may reach.
/// The targets one agent may reach; `wasi:http` sends its requests through these hooks.
#[derive(Default)]
pub struct AgentOutbound {
    pub agent: Arc<str>,
    pub allowed: Vec<Arc<Target>>,
    /// Every target of the host, to tell a denied agent which one it lacks.
    every: Arc<BTreeMap<String, Arc<Target>>>,
    /// Denials already explained in the log (the first per URL origin).
    explained: Vec<String>,
}

impl AgentOutbound {
    pub fn new(agent: Arc<str>, granted: &[String], outbound: &Outbound) -> AgentOutbound {
        AgentOutbound {
            agent,
            allowed: granted.iter().filter_map(|name| outbound.target(name).cloned()).collect(),
            every: outbound.targets.clone(),
            explained: Vec::new(),
        }
    }

    /// What the manifest must add for `uri` to be allowed, once per origin; None when told.
    fn explain(&mut self, uri: &http::Uri) -> Option<String> {
        let origin = format!("{}://{}", uri.scheme_str().unwrap_or("?"), uri.authority().map_or("?", |a| a.as_str()));
        if self.explained.contains(&origin) || self.explained.len() >= 64 {
            return None;
        }
        self.explained.push(origin.clone());
        Some(match self.every.values().find(|target| target.covers(uri)) {
            Some(target) => format!("add \"{}\" to the agent's `outbound` list in the manifest", target.name),
            None => format!(
                "no [outbound.*] target of the manifest covers {origin}{}: declare one (`url = ...`) and add \
                 its name to the agent's `outbound` list",
                uri.path()
            ),
        })
    }
}

/// Per-agent state: its `wasi:http` context and its targets.
pub struct AgentHttp {
    http: WasiHttpCtx,
    pub targets: AgentOutbound,
}

impl Default for AgentHttp {
    /// No targets.
    fn default() -> Self {
        AgentHttp { http: WasiHttpCtx::new(), targets: AgentOutbound::default() }
    }
}

/// Outbound HTTP as a capability. It has no grant of its own: an agent reaches the targets its
/// manifest entry lists (`outbound = [...]`), and nothing else.
impl Capability for Outbound {
    const GRANT: Option<&'static str> = None;
    /// `[outbound.<name>]`.
    type Section = BTreeMap<String, TargetSpec>;
    type Shared = Outbound;
    type Agent = AgentHttp;

    fn resolve_paths(section: &mut Self::Section, base_dir: &Path) {
        for target in section.values_mut() {
            if let Some(bundle) = &mut target.ca_bundle
                && bundle.is_relative()
            {
                *bundle = base_dir.join(&*bundle);
            }
        }
    }

    fn validate(section: &Self::Section) -> Result<(), SectionError> {
        for (name, target) in section {
            if let Err(message) = target.validate() {
                let key = format!("outbound.{name}");
                return Err(SectionError::new(key.clone(), key, message));
            }
        }
        Ok(())
    }

    fn start(section: &Self::Section, _host: &Startup<'_>) -> anyhow::Result<Outbound> {
        Outbound::new(section)
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
        wit::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(outbound: &Outbound, agent: &Entering<'_>) -> AgentHttp {
        let targets = AgentOutbound::new(agent.name.clone(), &agent.spec.outbound, outbound);
        AgentHttp { http: WasiHttpCtx::new(), targets }
    }
}

impl Hooks for Outbound {}

impl WasiHttpView for AgentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let AgentHttp { http, targets } = <Outbound as super::Member>::state(&mut self.capabilities);
        WasiHttpCtxView { ctx: http, table: &mut self.table, hooks: targets }
    }
}

impl WasiHttpHooks for AgentOutbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let target = self.allowed.iter().find(|t| t.covers(request.uri())).cloned();
        if target.is_none() {
            let uri = request.uri();
            match self.explain(uri) {
                Some(fix) => tracing::warn!(event = "outbound_denied", agent = %self.agent, uri = %uri, fix = %fix,
                    "agent {} may not reach {uri}: {fix}", self.agent),
                None => tracing::debug!(event = "outbound_denied", agent = %self.agent, uri = %uri,
                    "outbound request outside the agent's granted targets"),
            }
            metrics::counter!("agora_outbound_denied_total", "agent" => self.agent.to_string()).increment(1);
        }
        let agent = self.agent.clone();
        Box::new(async move {
            let Some(target) = target else { return Err(HttpError::HttpRequestDenied) };
            target.send(&agent, request, options).await
        })
    }
}

impl wit::Host for View<'_, Outbound> {
    fn status(&mut self, target: String) -> Result<TargetStatus, Error> {
        let Some(found) = self.state.targets.allowed.iter().find(|t| t.name == target) else {
            return Err(if self.shared.target(&target).is_some() { Error::Denied } else { Error::NotFound });
        };
        let (circuit, retry_after, in_use, capacity) = found.status();
        Ok(TargetStatus {
            circuit: match circuit {
                Circuit::Closed => WitCircuit::Closed,
                Circuit::Open => WitCircuit::Open,
                Circuit::HalfOpen => WitCircuit::HalfOpen,
            },
            retry_after_ms: retry_after.map(ceil_millis),
            in_use,
            capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Arc<Target> {
        let spec: TargetSpec = toml::from_str(&format!("url = {url:?}")).unwrap();
        let outbound = Outbound::new(&BTreeMap::from([("t".to_string(), spec)])).unwrap();
        outbound.target("t").unwrap().clone()
    }

    #[test]
    fn origins_take_scheme_host_port_and_path_and_refuse_credentials() {
        let origin = parse_origin("https://API.Example.com/v1/").unwrap();
        assert_eq!(origin, Origin { secure: true, host: "api.example.com".into(), port: 443, path: "/v1".into() });
        assert_eq!(parse_origin("http://[::1]:8080").unwrap().port, 8080);
        assert_eq!(parse_origin("http://127.0.0.1").unwrap().port, 80);
        assert!(parse_origin("ftp://127.0.0.1/").unwrap_err().contains("http:// or https://"));
        assert!(parse_origin("http://user:pw@127.0.0.1/").unwrap_err().contains("credentials"));
        assert!(parse_origin("127.0.0.1:80").is_err(), "no scheme");
    }

    #[tokio::test]
    async fn a_target_covers_its_origin_under_its_path_and_nothing_that_could_leave_it() {
        let api = target("http://127.0.0.1:9/api");
        let covers = |uri: &str| api.covers(&uri.parse().unwrap());
        for inside in ["http://127.0.0.1:9/api", "http://127.0.0.1:9/api/", "http://127.0.0.1:9/api/a/b?q=1"] {
            assert!(covers(inside), "{inside}");
        }
        for outside in [
            "http://127.0.0.1:9/apix",
            "http://127.0.0.1:9/",
            "http://127.0.0.1:9/api/../admin",
            "http://127.0.0.1:9/api/./a",
            "http://127.0.0.1:9/api/%2E%2E/admin",
            "http://127.0.0.1:9/api/a%2fb",
            "http://127.0.0.1:9/api\\..\\admin",
            "https://127.0.0.1:9/api",
            "http://127.0.0.1:10/api",
            "http://127.0.0.2:9/api",
            "http://user@127.0.0.1:9/api",
        ] {
            assert!(!covers(outside), "{outside}");
        }
        let whole = target("http://localhost:9");
        assert!(whole.covers(&"http://LOCALHOST:9/anything".parse().unwrap()), "host names match in any case");
    }

    #[test]
    fn a_rejection_rounds_its_retry_after_up() {
        let headers = |retry_after: Duration| {
            let (response, _) = rejected(Rejection::RateLimited, retry_after).unwrap();
            assert_eq!(response.status(), 429);
            let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
            (header("agora-retry-after-ms"), header("retry-after"), header("agora-rejected"))
        };
        assert_eq!(headers(Duration::from_micros(1200)), ("2".into(), "1".into(), "rate-limited".into()));
        assert_eq!(headers(Duration::ZERO).0, "1", "never zero: a retry at once would be refused again");
        assert_eq!(headers(Duration::from_millis(2500)), ("2500".into(), "3".into(), "rate-limited".into()));
        let (open, _) = rejected(Rejection::CircuitOpen, Duration::from_secs(1)).unwrap();
        assert_eq!((open.status().as_u16(), open.headers()["agora-rejected"].to_str().unwrap()), (503, "circuit-open"));
    }
}
