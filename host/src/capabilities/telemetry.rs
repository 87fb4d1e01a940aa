//! The `telemetry` capability: the `metrics` facade with a Prometheus recorder, per-agent
//! metrics kept by the host, and the agents' own counters, gauges and histograms.
//!
//! ```toml
//! [telemetry]
//! per_agent = true                      # the host's per-agent series (labelled `agent`)
//! quantiles = [0.5, 0.9, 0.99, 0.999]   # reported for every histogram
//! ```
//! The exposition is served at `/metrics` on the host's admin address (`[host] admin`).
//!
//! The hot path holds metric handles (an atomic add, ~5 ns) rather than naming the metric on
//! each update (a registry lookup, ~60 ns): each agent resolves its handles once at start.
//! Series stay after an agent exits, so a restarted agent continues its counters.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;

use crate::capabilities::Grant;
use crate::runtime::bindings::{Error, telemetry};
use crate::runtime::state::AgentState;

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub per_agent: bool,
    pub quantiles: Vec<f64>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings { per_agent: true, quantiles: vec![0.5, 0.9, 0.99, 0.999, 1.0] }
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
    pub per_agent: bool,
}

impl Telemetry {
    pub fn install(settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
        let handle = RECORDER.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_quantiles(&settings.quantiles)
                .map_err(|e| format!("telemetry.quantiles: {e}"))?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            // Histograms buffer samples until upkeep folds them in; without it they grow
            // without bound between scrapes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("agora-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(handle)
        });
        let handle = handle.clone().map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
        Ok(Telemetry { handle, per_agent: settings.per_agent })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn describe() {
    metrics::describe_counter!("agora_messages_in_total", "Messages an agent handled");
    metrics::describe_counter!("agora_messages_out_total", "Messages an agent sent, called or published");
    metrics::describe_gauge!("agora_mailbox_depth", "Messages waiting in an agent's mailbox after its last handle");
    metrics::describe_counter!("agora_restarts_total", "Restarts of an agent by its supervisor");
    metrics::describe_histogram!("agora_handle_seconds", metrics::Unit::Seconds, "Time an agent spent in handle");
    metrics::describe_gauge!("agora_memory_peak_bytes", metrics::Unit::Bytes, "Largest linear memory of an agent");
    metrics::describe_counter!(
        "agora_cpu_budget_ticks_total",
        "Epoch ticks (host.tick each) charged to an agent's CPU budget"
    );
}

/// The host's held handles for one agent's series.
pub struct AgentMetrics {
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub mailbox_depth: Gauge,
    pub handle_seconds: Histogram,
    pub memory_peak: Gauge,
    pub cpu_ticks: Counter,
    /// Metrics the agent made through the interface.
    own: HashMap<String, Own>,
}

enum Own {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl AgentMetrics {
    /// Handles for `agent`; no-op handles when per-agent metrics are off.
    pub fn new(agent: &str, enabled: bool) -> AgentMetrics {
        if !enabled {
            return AgentMetrics {
                messages_in: Counter::noop(),
                messages_out: Counter::noop(),
                mailbox_depth: Gauge::noop(),
                handle_seconds: Histogram::noop(),
                memory_peak: Gauge::noop(),
                cpu_ticks: Counter::noop(),
                own: HashMap::new(),
            };
        }
        let label = [("agent", agent.to_string())];
        AgentMetrics {
            messages_in: metrics::counter!("agora_messages_in_total", &label),
            messages_out: metrics::counter!("agora_messages_out_total", &label),
            mailbox_depth: metrics::gauge!("agora_mailbox_depth", &label),
            handle_seconds: metrics::histogram!("agora_handle_seconds", &label),
            memory_peak: metrics::gauge!("agora_memory_peak_bytes", &label),
            cpu_ticks: metrics::counter!("agora_cpu_budget_ticks_total", &label),
            own: HashMap::new(),
        }
    }
}

/// Counted by the supervisor, which outlives the agent's handles.
pub fn record_restart(agent: &str) {
    metrics::counter!("agora_restarts_total", "agent" => agent.to_string()).increment(1);
}

fn check_metric_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid { Ok(()) } else { Err(Error::Invalid(format!("metric name {name:?}: use 1-64 of a-z 0-9 _"))) }
}

impl AgentState {
    /// The agent's own metric `name`, created on first use with the kind of that use.
    fn own_metric(&mut self, name: &str, make: fn(String, &[(&'static str, String)]) -> Own) -> Result<&Own, Error> {
        self.require(Grant::Telemetry)?;
        if !self.metrics.own.contains_key(name) {
            check_metric_name(name)?;
            if self.metrics.own.len() >= MAX_AGENT_METRICS {
                return Err(Error::Invalid(format!("an agent may have at most {MAX_AGENT_METRICS} metrics")));
            }
            let metric = make(format!("agora_agent_{name}"), &[("agent", self.name.to_string())]);
            self.metrics.own.insert(name.to_string(), metric);
        }
        Ok(&self.metrics.own[name])
    }
}

fn kind_clash(name: &str, kind: &str) -> Error {
    Error::Invalid(format!("metric {name:?} is not a {kind}: a name keeps the kind of its first use"))
}

impl telemetry::Host for AgentState {
    fn counter_add(&mut self, name: String, value: u64) -> Result<(), Error> {
        match self.own_metric(&name, |n, l| Own::Counter(metrics::counter!(n, l)))? {
            Own::Counter(counter) => {
                counter.increment(value);
                Ok(())
            }
            _ => Err(kind_clash(&name, "counter")),
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) -> Result<(), Error> {
        match self.own_metric(&name, |n, l| Own::Gauge(metrics::gauge!(n, l)))? {
            Own::Gauge(gauge) => {
                gauge.set(value);
                Ok(())
            }
            _ => Err(kind_clash(&name, "gauge")),
        }
    }

    fn histogram_record(&mut self, name: String, value: f64) -> Result<(), Error> {
        match self.own_metric(&name, |n, l| Own::Histogram(metrics::histogram!(n, l)))? {
            Own::Histogram(histogram) => {
                histogram.record(value);
                Ok(())
            }
            _ => Err(kind_clash(&name, "histogram")),
        }
    }
}
