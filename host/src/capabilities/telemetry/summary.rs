//! Summaries kept and rendered by the host: quantiles over a sliding window (three slots of
//! 20 s, as Prometheus client libraries do), with a count and a sum over the series' life.
//!
//! Why not the exporter's own: metrics-exporter-prometheus 0.18.3 drains a histogram's samples
//! newest block first, and its rolling summary opens an empty window at the first sample it
//! is given, then drops every older one. A series' first scrape (and the first after a minute
//! without samples) thus reported the quantiles of its last 64 samples only: for 1..=100 a
//! median of 82. Here samples enter the window in the order they happen.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use metrics_util::storage::Summary;

use crate::runtime::stats::{LATENCY_BUCKETS, latency_midpoint};

const SLOT: Duration = Duration::from_secs(20);
const SLOTS: usize = 3;

/// What one window slot holds: a sketch of arbitrary values, or latency bucket counts.
pub trait Samples {
    fn empty() -> Self;
    fn merge_into(&self, total: &mut Self);
    fn quantile(&self, q: f64) -> Option<f64>;
}

impl Samples for Summary {
    fn empty() -> Self {
        Summary::with_defaults()
    }

    fn merge_into(&self, total: &mut Self) {
        // Both are made by `with_defaults`: the same parameters, so merging cannot fail.
        let _ = total.merge(self);
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        Summary::quantile(self, q)
    }
}

/// Counts per latency bucket (`runtime::stats`): quantiles are bucket midpoints, 12.5% precise.
pub struct Buckets(Vec<u64>);

impl Samples for Buckets {
    fn empty() -> Self {
        Buckets(vec![0; LATENCY_BUCKETS])
    }

    fn merge_into(&self, total: &mut Self) {
        for (sum, count) in total.0.iter_mut().zip(&self.0) {
            *sum += count;
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        // The nearest rank: the smallest bucket holding at least q of the samples.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        self.0
            .iter()
            .position(|count| {
                seen += count;
                seen >= rank
            })
            .map(latency_midpoint)
    }
}

impl Buckets {
    pub fn add(&mut self, bucket: usize, count: u64) {
        self.0[bucket] += count;
    }
}

/// One series: the window's slots, newest first, and the lifetime count and sum.
pub struct Window<S> {
    slots: VecDeque<(Instant, S)>,
    count: u64,
    sum: f64,
    pub updated: Instant,
}

impl<S: Samples> Window<S> {
    pub fn new(now: Instant) -> Self {
        Window { slots: VecDeque::with_capacity(SLOTS), count: 0, sum: 0.0, updated: now }
    }

    /// The slot samples taken at `now` go into, opened when the newest is older than a slot.
    fn current(&mut self, now: Instant) -> &mut S {
        let fresh = self.slots.front().is_some_and(|(begin, _)| now.saturating_duration_since(*begin) < SLOT);
        if !fresh {
            self.slots.push_front((now, S::empty()));
            self.slots.truncate(SLOTS);
        }
        self.updated = now;
        &mut self.slots.front_mut().expect("a slot was just ensured").1
    }

    /// The quantiles over the slots still inside the window at `now`.
    fn quantiles(&self, now: Instant, quantiles: &[f64]) -> Vec<(f64, Option<f64>)> {
        let mut merged = S::empty();
        for (begin, samples) in &self.slots {
            if now.saturating_duration_since(*begin) < SLOT * SLOTS as u32 {
                samples.merge_into(&mut merged);
            }
        }
        quantiles.iter().map(|q| (*q, merged.quantile(*q))).collect()
    }
}

impl Window<Summary> {
    pub fn record(&mut self, value: f64, now: Instant) {
        if !value.is_finite() {
            return;
        }
        self.current(now).add(value);
        self.count += 1;
        self.sum += value;
    }
}

impl Window<Buckets> {
    /// `count` more samples in `bucket`, of `seconds` in all.
    pub fn record_bucket(&mut self, bucket: usize, count: u64, now: Instant) {
        self.current(now).add(bucket, count);
        self.count += count;
        self.sum += latency_midpoint(bucket) * count as f64;
    }

    /// A live series with nothing new is still current.
    pub fn touch(&mut self, now: Instant) {
        self.updated = now;
    }
}

/// One summary family in Prometheus' text format: `# TYPE`, then per series its quantiles (a
/// quantile over an empty window is left out), `_sum` and `_count`.
pub fn render<'a, S: Samples + 'a>(
    out: &mut String,
    name: &str,
    help: Option<&str>,
    quantiles: &[f64],
    series: impl IntoIterator<Item = (&'a str, &'a Window<S>)>,
) {
    let now = Instant::now();
    let mut header = false;
    for (agent, window) in series {
        if !header {
            if let Some(help) = help {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} summary");
            header = true;
        }
        let agent = escape(agent);
        for (q, value) in window.quantiles(now, quantiles) {
            if let Some(value) = value {
                let _ = writeln!(out, "{name}{{agent=\"{agent}\",quantile=\"{q}\"}} {value}");
            }
        }
        let _ = writeln!(out, "{name}_sum{{agent=\"{agent}\"}} {}", window.sum);
        let _ = writeln!(out, "{name}_count{{agent=\"{agent}\"}} {}", window.count);
    }
}

/// A label value as the text format wants it.
pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_in_one_window_give_their_quantiles() {
        let now = Instant::now();
        let mut window = Window::<Summary>::new(now);
        for v in 1..=100 {
            window.record(v as f64, now);
        }
        let quantiles = window.quantiles(now, &[0.5, 0.9, 1.0]);
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= want * 0.01 + 1.0);
        assert!(
            near(quantiles[0].1, 50.0) && near(quantiles[1].1, 90.0) && near(quantiles[2].1, 100.0),
            "{quantiles:?}"
        );
        assert_eq!((window.count, window.sum), (100, 5050.0));
    }

    #[test]
    fn old_slots_leave_the_window_but_not_the_count() {
        let start = Instant::now();
        let mut window = Window::<Summary>::new(start);
        window.record(1000.0, start);
        let later = start + SLOT * 4;
        window.record(1.0, later);
        assert_eq!(window.quantiles(later, &[1.0])[0].1, Some(1.0), "the old sample left the window");
        assert_eq!(window.count, 2);
        assert_eq!(window.slots.len(), 2);
        window.record(2.0, later + SLOT);
        window.record(3.0, later + SLOT * 2);
        window.record(4.0, later + SLOT * 3);
        assert_eq!(window.slots.len(), SLOTS, "at most three slots are kept");
    }

    #[test]
    fn bucket_quantiles_are_the_nearest_rank_midpoints() {
        let now = Instant::now();
        let mut window = Window::<Buckets>::new(now);
        window.record_bucket(10, 90, now);
        window.record_bucket(20, 10, now);
        let quantiles = window.quantiles(now, &[0.5, 0.9, 0.91, 1.0]);
        let values: Vec<f64> = quantiles.iter().map(|(_, v)| v.unwrap()).collect();
        assert_eq!(values, [latency_midpoint(10), latency_midpoint(10), latency_midpoint(20), latency_midpoint(20)]);
        assert_eq!(window.count, 100);
    }

    #[test]
    fn the_text_format_escapes_labels_and_skips_empty_quantiles() {
        let now = Instant::now();
        let window = Window::<Summary>::new(now);
        let mut out = String::new();
        render(&mut out, "agora_x", Some("help"), &[0.5], [("a\"b", &window)]);
        assert_eq!(
            out,
            "# HELP agora_x help\n# TYPE agora_x summary\nagora_x_sum{agent=\"a\\\"b\"} 0\nagora_x_count{agent=\"a\\\"b\"} 0\n"
        );
    }
}
