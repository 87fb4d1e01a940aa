//! The `telemetry` capability: the `metrics` facade with a Prometheus recorder, per-agent
//! metrics kept by the host, and the agents' own counters, gauges and histograms.
//!
//! ```toml
//! [telemetry]
//! per_agent = true                      # the host's per-agent series (labelled `agent`)
//! quantiles = [0.5, 0.9, 0.99, 0.999]   # reported for every histogram
//! idle_timeout = "5m"                   # series not updated this long leave the endpoint
//! ```
//! The exposition is served at `/metrics` on the host's admin address (`[host] admin`).
//!
//! The per-message path touches only the agent's own cells (plain stores, ~1 ns); each scrape
//! passes what changed to the Prometheus series, and so does an agent's exit. Handle latency
//! goes into per-agent log buckets first (12.5% precision) and reaches its summary as bucket
//! counts. Metrics the agents record themselves are looked up per call (~70 ns, beside a host
//! call's ~150 ns). Series stay `idle_timeout` after their last update, so a restarted agent
//! continues its counters and exited agents' series do not pile up. Summaries (histograms) are
//! the host's own ([`summary`]): quantiles over the last minute, count and sum over all time.

pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use metrics_util::storage::Summary;
use serde::Deserialize;

use super::hooks::{Hooks, HostEvent};
use super::{Capability, Entering, Getter, Leaving, SectionError, Served, Startup, View};
use crate::bindings::{Error, telemetry};
use crate::infra::hashers::IdHasher;
use crate::manifest::Span;
use crate::messaging::AgentId;
use crate::runtime::state::AgentState;
use crate::runtime::stats::{AgentStats, LATENCY_BUCKETS};
use summary::{Buckets, Window};

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub per_agent: bool,
    pub quantiles: Vec<f64>,
    /// A series not updated for this long leaves the endpoint (exited agents' series, above
    /// all: agents spawned under fresh names would otherwise pile up without bound).
    pub idle_timeout: Span,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            per_agent: true,
            quantiles: vec![0.5, 0.9, 0.99, 0.999, 1.0],
            idle_timeout: Span(Duration::from_secs(300)),
        }
    }
}

/// Distinct metrics one agent may create through the interface: a guard against a label or
/// name explosion filling the host's memory.
const MAX_AGENT_METRICS: usize = 256;

/// The process's recorder. The `metrics` facade has one global recorder, so the first host in
/// a process installs it and later ones (tests run several) share it.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

pub struct Telemetry {
    handle: PrometheusHandle,
    per_agent: bool,
    quantiles: Vec<f64>,
    idle_timeout: Duration,
    /// Agents alive now, whose cells the exporter reads at each scrape.
    live: DashMap<AgentId, Arc<LiveAgent>, IdHasher>,
    /// `agora_handle_seconds`, by agent name (a restarted agent continues its series).
    latency: DashMap<Arc<str>, Arc<Mutex<Window<Buckets>>>>,
    /// The agents' own histograms, by (metric, agent).
    histograms: OwnHistograms,
}

type Shared<T> = Arc<Mutex<T>>;
/// An agent's name and its window of one histogram.
type Series = (Arc<str>, Shared<Window<Summary>>);
/// One histogram series of an agent's own: (metric, agent) and its window.
type OwnHistograms = DashMap<(Arc<str>, Arc<str>), Shared<Window<Summary>>>;

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Telemetry {
    pub fn install(settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
        let handle = RECORDER.get_or_init(|| {
            // Counters and gauges only: histograms are the host's own summaries (`summary`).
            let recorder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::ALL, Some(settings.idle_timeout.duration()))
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        });
        let handle = handle.clone().map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
        Ok(Telemetry {
            handle,
            per_agent: settings.per_agent,
            quantiles: settings.quantiles.clone(),
            idle_timeout: settings.idle_timeout.duration(),
            live: DashMap::default(),
            latency: DashMap::default(),
            histograms: DashMap::default(),
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let live: Vec<Arc<LiveAgent>> = self.live.iter().map(|entry| entry.value().clone()).collect();
        for agent in live {
            agent.export();
        }
        let mut text = self.handle.render();
        let now = Instant::now();
        let idle = self.idle_timeout;
        self.latency.retain(|_, window| now.saturating_duration_since(lock(window).updated) < idle);
        self.histograms.retain(|_, window| now.saturating_duration_since(lock(window).updated) < idle);

        let latency: BTreeMap<Arc<str>, Shared<Window<Buckets>>> =
            self.latency.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
        let guards: Vec<_> = latency.iter().map(|(agent, window)| (agent, lock(window))).collect();
        summary::render(
            &mut text,
            "agora_handle_seconds",
            Some("Time an agent spent in handle"),
            &self.quantiles,
            guards.iter().map(|(agent, window)| (&***agent, &**window)),
        );
        drop(guards);

        let mut families: BTreeMap<Arc<str>, Vec<Series>> = BTreeMap::new();
        for entry in self.histograms.iter() {
            let (name, agent) = entry.key();
            families.entry(name.clone()).or_default().push((agent.clone(), entry.value().clone()));
        }
        for (name, series) in &mut families {
            series.sort_by(|a, b| a.0.cmp(&b.0));
            let guards: Vec<_> = series.iter().map(|(agent, window)| (agent, lock(window))).collect();
            let windows = guards.iter().map(|(agent, window)| (&***agent, &**window));
            summary::render(&mut text, name, None, &self.quantiles, windows);
        }
        text
    }
}

fn describe() {
    metrics::describe_counter!("agora_messages_in_total", "Messages an agent handled");
    metrics::describe_counter!(
        "agora_messages_batched_total",
        "Of the messages an agent handled, those handed out within a batch after its first (no guest entry of their own)"
    );
    metrics::describe_counter!("agora_messages_out_total", "Messages an agent sent, called or published");
    metrics::describe_gauge!(
        "agora_mailbox_depth",
        "Messages waiting in an agent's mailbox (sampled every 64 messages, and 0 when it goes idle)"
    );
    metrics::describe_counter!("agora_restarts_total", "Restarts of an agent by its supervisor");
    metrics::describe_gauge!("agora_memory_peak_bytes", metrics::Unit::Bytes, "Largest linear memory of an agent");
    metrics::describe_counter!("agora_fuel_consumed_total", "Fuel an agent burned (when compute has a price)");
    metrics::describe_counter!(
        "agora_compute_charged_total",
        "Credits an agent's wallet paid for compute (whole units bought ahead; unused ones are paid back at exit)"
    );
    metrics::describe_counter!(
        "agora_cpu_budget_ticks_total",
        "Epoch ticks (host.tick each) charged to an agent's CPU budget"
    );
}

/// What the exporter has passed on from one agent's cells.
#[derive(Default)]
struct Exported {
    messages_in: u64,
    batched: u64,
    messages_out: u64,
    cpu_ticks: u64,
    fuel: u64,
    charged: u64,
    latency: Vec<u64>,
}

struct LiveAgent {
    name: Arc<str>,
    cells: Arc<AgentStats>,
    exported: Mutex<Exported>,
    latency: Shared<Window<Buckets>>,
}

impl LiveAgent {
    /// Pass what changed since the last export to the Prometheus series.
    fn export(&self) {
        let mut guard = self.exported.lock().unwrap_or_else(|p| p.into_inner());
        let exported = &mut *guard;
        let cells = &self.cells;
        // Looked up on each export rather than held: the recorder drops series idle for longer
        // than `telemetry.idle_timeout`, and a held handle would then count into nothing. A live
        // agent's counters are touched at every export, so only exited agents' series expire.
        let label = [("agent", self.name.to_string())];
        let (messages_in, messages_out, cpu_ticks) =
            (cells.messages_in.get(), cells.messages_out.get(), cells.cpu_ticks.get());
        metrics::counter!("agora_messages_in_total", &label)
            .increment(messages_in.saturating_sub(exported.messages_in));
        let batched = cells.batched.get();
        if batched > exported.batched {
            metrics::counter!("agora_messages_batched_total", &label).increment(batched - exported.batched);
            exported.batched = batched;
        }
        metrics::counter!("agora_messages_out_total", &label)
            .increment(messages_out.saturating_sub(exported.messages_out));
        metrics::counter!("agora_cpu_budget_ticks_total", &label)
            .increment(cpu_ticks.saturating_sub(exported.cpu_ticks));
        let (fuel, charged) = (cells.fuel.get(), cells.charged.get());
        if fuel > 0 {
            metrics::counter!("agora_fuel_consumed_total", &label).increment(fuel.saturating_sub(exported.fuel));
            metrics::counter!("agora_compute_charged_total", &label)
                .increment(charged.saturating_sub(exported.charged));
            (exported.fuel, exported.charged) = (fuel, charged);
        }
        metrics::gauge!("agora_mailbox_depth", &label).set(cells.mailbox_depth.get() as f64);
        metrics::gauge!("agora_memory_peak_bytes", &label).set(cells.memory_peak.get() as f64);
        let now = Instant::now();
        let mut latency = lock(&self.latency);
        latency.touch(now);
        exported.latency.resize(LATENCY_BUCKETS, 0);
        for (bucket, cell) in cells.latency.iter().enumerate() {
            let count = cell.get();
            let new = count.saturating_sub(exported.latency[bucket]);
            if new > 0 {
                latency.record_bucket(bucket, new, now);
                exported.latency[bucket] = count;
            }
        }
        (exported.messages_in, exported.messages_out, exported.cpu_ticks) = (messages_in, messages_out, cpu_ticks);
    }
}

/// One agent's side: the kinds of the metrics it made through the interface.
#[derive(Default)]
pub struct AgentMetrics {
    own: HashMap<String, Kind>,
}

/// `agent="<name>"`.
type AgentLabel = [(&'static str, String); 1];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Capability for Telemetry {
    const GRANT: Option<&'static str> = Some("telemetry");
    type Section = TelemetrySettings;
    type Shared = Telemetry;
    type Agent = AgentMetrics;

    fn validate(section: &TelemetrySettings) -> Result<(), SectionError> {
        if section.quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return Err(SectionError::new("telemetry", "telemetry.quantiles", "quantiles lie in 0..=1"));
        }
        Ok(())
    }

    fn start(section: &TelemetrySettings, _host: &Startup<'_>) -> anyhow::Result<Telemetry> {
        Telemetry::install(section)
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        telemetry::add_to_linker::<_, Served<Self>>(linker, get)
    }

    /// Export the agent's counters while it lives (nothing when per-agent metrics are off).
    fn enter(telemetry: &Telemetry, agent: &Entering<'_>) -> AgentMetrics {
        if telemetry.per_agent {
            let latency = telemetry
                .latency
                .entry(agent.name.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Window::new(Instant::now()))))
                .clone();
            let live =
                LiveAgent { name: agent.name.clone(), cells: agent.stats.clone(), exported: Mutex::default(), latency };
            telemetry.live.insert(agent.id, Arc::new(live));
        }
        AgentMetrics::default()
    }

    /// Export an exiting agent's last figures; its series stay until they go idle (a restart
    /// within that time continues them).
    fn leave(telemetry: &Telemetry, _state: &mut AgentMetrics, agent: &Leaving<'_>) {
        if let Some((_, live)) = telemetry.live.remove(&agent.id) {
            live.export();
        }
    }
}

impl Hooks for Telemetry {
    fn observe(_telemetry: &Telemetry, event: &HostEvent<'_>) {
        if let HostEvent::ChildRestarted { agent, .. } = event {
            metrics::counter!("agora_restarts_total", "agent" => agent.to_string()).increment(1);
        }
    }
}

fn check_metric_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid { Ok(()) } else { Err(Error::Invalid(format!("metric name {name:?}: use 1-64 of a-z 0-9 _"))) }
}

impl View<'_, Telemetry> {
    /// The Prometheus name and label of the agent's own metric `name`, checked against the
    /// kind of its first use and the per-agent limit. The handle is looked up per call (not
    /// held), so that the recorder may expire a series the agent no longer updates.
    fn own_metric(&mut self, name: &str, kind: Kind) -> Result<(String, AgentLabel), Error> {
        self.require()?;
        match self.state.own.get(name) {
            Some(known) if *known == kind => {}
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "metric {name:?} has another kind: a name keeps the kind of its first use"
                )));
            }
            None => {
                check_metric_name(name)?;
                if self.state.own.len() >= MAX_AGENT_METRICS {
                    return Err(Error::Invalid(format!("an agent may have at most {MAX_AGENT_METRICS} metrics")));
                }
                self.state.own.insert(name.to_string(), kind);
            }
        }
        Ok((format!("agora_agent_{name}"), [("agent", self.name.to_string())]))
    }
}

impl telemetry::Host for View<'_, Telemetry> {
    fn counter_add(&mut self, name: String, value: u64) -> Result<(), Error> {
        let (name, label) = self.own_metric(&name, Kind::Counter)?;
        metrics::counter!(name, &label).increment(value);
        Ok(())
    }

    fn gauge_set(&mut self, name: String, value: f64) -> Result<(), Error> {
        let (name, label) = self.own_metric(&name, Kind::Gauge)?;
        metrics::gauge!(name, &label).set(value);
        Ok(())
    }

    fn histogram_record(&mut self, name: String, value: f64) -> Result<(), Error> {
        let (name, label) = self.own_metric(&name, Kind::Histogram)?;
        let [(_, agent)] = label;
        let key = (Arc::<str>::from(name), Arc::<str>::from(agent));
        let now = Instant::now();
        let window =
            self.shared.histograms.entry(key).or_insert_with(|| Arc::new(Mutex::new(Window::new(now)))).clone();
        lock(&window).record(value, now);
        Ok(())
    }
}
