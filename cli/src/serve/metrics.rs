//! `GET /metrics`: the server's counters, gauges and histograms in the OpenMetrics text format
//! (which Prometheus scrapes natively), kept and encoded by the `prometheus-client` crate.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Finished at an end-of-generation token or a stop string.
    Stop,
    /// Finished at `max_tokens` or a full context.
    Length,
    /// The client went away, or the drain timeout ended it.
    Cancelled,
    /// The generation failed.
    Error,
    /// Answered 503 without generating (queue full, loading, draining).
    Rejected,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Outcome::Stop => "stop",
            Outcome::Length => "length",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
            Outcome::Rejected => "rejected",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

/// Every metric the server exports. Cloned handles update the same values.
pub struct Metrics {
    registry: Registry,
    /// Requests waiting for a free sequence.
    pub queued: Gauge,
    /// Requests being generated.
    pub running: Gauge,
    requests: Family<OutcomeLabel, Counter>,
    /// Prompt tokens received.
    pub prompt_tokens: Counter,
    /// Prompt tokens computed (cached prefixes excluded).
    pub prompt_tokens_computed: Counter,
    /// Tokens generated.
    pub generated_tokens: Counter,
    tokens_per_second: Gauge<f64, AtomicU64>,
    /// Seconds from a request's arrival to its first generated token.
    pub time_to_first_token: Histogram,
    /// Seconds between two generated tokens of one request.
    pub time_per_output_token: Histogram,
    /// KV positions in pages held by sequences (running requests and cached prefixes).
    pub kv_used: Gauge,
    /// KV cells the server has in all (`-c`, shared by the sequences).
    pub kv_capacity: Gauge,
    rate_window: Mutex<VecDeque<(Instant, u64)>>,
}

/// The window over which `bitnet_generation_tokens_per_second` is computed.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("bitnet");
        let m = Metrics {
            queued: Gauge::default(),
            running: Gauge::default(),
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            prompt_tokens_computed: Counter::default(),
            generated_tokens: Counter::default(),
            tokens_per_second: Gauge::default(),
            // 10 ms .. 164 s and 1 ms .. 16 s.
            time_to_first_token: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            time_per_output_token: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            kv_used: Gauge::default(),
            kv_capacity: Gauge::default(),
            rate_window: Mutex::new(VecDeque::new()),
            registry: Registry::default(),
        };
        registry.register(
            "requests_queued",
            "Requests waiting for a free sequence",
            m.queued.clone(),
        );
        registry.register(
            "requests_running",
            "Requests being generated",
            m.running.clone(),
        );
        registry.register(
            "requests",
            "Requests finished, by outcome",
            m.requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens received",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "prompt_tokens_computed",
            "Prompt tokens computed (cached prefixes excluded)",
            m.prompt_tokens_computed.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            m.generated_tokens.clone(),
        );
        registry.register(
            "generation_tokens_per_second",
            "Tokens generated per second, all requests together, over the last 10 s",
            m.tokens_per_second.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Seconds between consecutive generated tokens of a request",
            m.time_per_output_token.clone(),
        );
        registry.register(
            "kv_cache_used_tokens",
            "KV cache positions in pages held by sequences (running requests and cached prefixes)",
            m.kv_used.clone(),
        );
        registry.register(
            "kv_cache_capacity_tokens",
            "KV cache cells in all (the -c budget)",
            m.kv_capacity.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts a finished request.
    pub fn finished(&self, outcome: Outcome) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Refreshes the tokens/s gauge from the generated-token counter (called every second).
    pub fn update_rate(&self, now: Instant) {
        let Ok(mut window) = self.rate_window.lock() else {
            return;
        };
        let count = self.generated_tokens.get();
        window.push_back((now, count));
        while window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            window.pop_front();
        }
        if let (Some(&(t0, c0)), Some(&(t1, c1))) = (window.front(), window.back()) {
            let secs = t1.duration_since(t0).as_secs_f64();
            self.tokens_per_second.set(if secs > 0.0 {
                (c1 - c0) as f64 / secs
            } else {
                0.0
            });
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_the_prefix() {
        let m = Metrics::new();
        m.generated_tokens.inc_by(5);
        m.finished(Outcome::Stop);
        m.time_to_first_token.observe(0.3);
        let text = m.render();
        for needle in [
            "bitnet_generated_tokens_total 5",
            "bitnet_requests_total{outcome=\"stop\"} 1",
            "bitnet_time_to_first_token_seconds_bucket{le=\"0.32\"} 1",
            "# TYPE bitnet_kv_cache_capacity_tokens gauge",
            "# EOF",
        ] {
            assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
        }
    }

    #[test]
    fn rate_is_tokens_over_the_window() {
        let m = Metrics::new();
        let t0 = Instant::now();
        m.update_rate(t0);
        m.generated_tokens.inc_by(30);
        m.update_rate(t0 + Duration::from_secs(2));
        assert!((m.tokens_per_second.get() - 15.0).abs() < 1e-9);
        // Older samples fall out of the window.
        m.update_rate(t0 + Duration::from_secs(13));
        assert_eq!(m.tokens_per_second.get(), 0.0);
    }
}
