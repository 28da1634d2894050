//! The process's one Prometheus registry (`faultline_` namespace, vLLM names where they mean
//! the same thing). Rendered by `GET /metrics` in OpenMetrics text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `{model}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// `{model, status}`; `status` is the HTTP status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub status: String,
}

/// `{model, reason}`; reason is `queue_full`, `draining` or `engine_unavailable`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub model: String,
    pub reason: String,
}

/// `{reason}` of a connection the server closed: `header_timeout`, `idle_timeout`, `drain`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub reason: String,
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

fn batch_histogram() -> Histogram {
    // 1, 2, 4 … 1024 samples or sequences.
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// Every metric the server exports. Label `model` is a loaded model's name, or `_unknown`
/// for requests naming no loaded model (keeps cardinality bounded).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `faultline_requests_total{model,status}`: finished HTTP requests to model endpoints.
    pub requests: Family<RequestLabels, Counter>,
    /// `faultline_requests_shed_total{model,reason}`: refused by admission control (429/503).
    pub shed: Family<ShedLabels, Counter>,
    /// `faultline_e2e_request_latency_seconds{model}`: arrival → response complete (for
    /// streams: → last token).
    pub e2e_latency: HistogramFamily,
    /// `faultline_request_queue_time_seconds{model}`: arrival → dispatched in a batch / admitted
    /// to the running set.
    pub queue_time: HistogramFamily,
    /// `faultline_batch_size{model}`: samples per classifier batch, sequences per LM step.
    pub batch_size: HistogramFamily,
    /// `faultline_batch_execution_seconds{model}`: compute time of one batch / decode step.
    pub batch_execution: HistogramFamily,
    /// `faultline_time_to_first_token_seconds{model}`: arrival → first generated token.
    pub ttft: HistogramFamily,
    /// `faultline_inter_token_latency_seconds{model}`: gap between consecutive tokens.
    pub itl: HistogramFamily,
    /// `faultline_generation_tokens_total{model}`.
    pub generation_tokens: Family<ModelLabels, Counter>,
    /// `faultline_prompt_tokens_total{model}`.
    pub prompt_tokens: Family<ModelLabels, Counter>,
    /// `faultline_num_requests_waiting{model}`: queued, not yet in a batch / running set.
    pub waiting: Family<ModelLabels, Gauge>,
    /// `faultline_num_requests_running{model}`: in a batch being computed / sequences decoding.
    pub running: Family<ModelLabels, Gauge>,
    /// `faultline_requests_aborted_total{model,reason}`: requests the engine dropped before
    /// finishing them, `reason` `client_gone` (disconnected, or its deadline passed and the
    /// handler gave up) — their slots are freed at the next batch or decode step.
    pub aborted: Family<ShedLabels, Counter>,
    /// `faultline_streams_ended_early_total{model,reason}`: streams cut before their last
    /// token, `reason` `deadline`, `engine_stopped` or `client_gone`.
    pub streams_ended_early: Family<ShedLabels, Counter>,
    /// `faultline_connections_open`: client connections being served.
    pub connections_open: Gauge,
    /// `faultline_connections_rejected_total`: connections refused at `--max-connections`.
    pub connections_rejected: Counter,
    /// `faultline_connections_closed_total{reason}`: connections the server closed.
    pub connections_closed: Family<CloseLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("faultline");
        let requests = Family::default();
        let shed = Family::default();
        let hist = |f: fn() -> Histogram| -> HistogramFamily { Family::new_with_constructor(f) };
        let e2e_latency = hist(latency_histogram);
        let queue_time = hist(latency_histogram);
        let batch_size = hist(batch_histogram);
        let batch_execution = hist(latency_histogram);
        let ttft = hist(latency_histogram);
        let itl = hist(latency_histogram);
        let generation_tokens = Family::default();
        let prompt_tokens = Family::default();
        let waiting = Family::default();
        let running = Family::default();
        let aborted = Family::default();
        let streams_ended_early = Family::default();
        let connections_open = Gauge::default();
        let connections_rejected = Counter::default();
        let connections_closed = Family::default();
        registry.register(
            "requests_aborted",
            "Requests the engine dropped unfinished because their client went away",
            aborted.clone(),
        );
        registry.register(
            "streams_ended_early",
            "Streams cut before their last token, by reason",
            streams_ended_early.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections being served",
            connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections refused because --max-connections were open",
            connections_rejected.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the server, by reason",
            connections_closed.clone(),
        );
        registry.register(
            "requests",
            "Finished requests to model endpoints, by HTTP status",
            requests.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests refused by admission control (queue full, draining, engine down)",
            shed.clone(),
        );
        registry.register(
            "e2e_request_latency_seconds",
            "Request arrival to response complete, seconds",
            e2e_latency.clone(),
        );
        registry.register(
            "request_queue_time_seconds",
            "Request arrival to start of compute, seconds",
            queue_time.clone(),
        );
        registry.register(
            "batch_size",
            "Samples per classifier batch or sequences per LM decode step",
            batch_size.clone(),
        );
        registry.register(
            "batch_execution_seconds",
            "Compute time of one batch or decode step, seconds",
            batch_execution.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Request arrival to first generated token, seconds",
            ttft.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request, seconds",
            itl.clone(),
        );
        registry.register(
            "generation_tokens",
            "Generated tokens",
            generation_tokens.clone(),
        );
        registry.register("prompt_tokens", "Prompt tokens", prompt_tokens.clone());
        registry.register(
            "num_requests_waiting",
            "Requests waiting for a batch or a running slot",
            waiting.clone(),
        );
        registry.register(
            "num_requests_running",
            "Requests in a batch being computed or sequences being decoded",
            running.clone(),
        );
        Self {
            registry,
            requests,
            shed,
            e2e_latency,
            queue_time,
            batch_size,
            batch_execution,
            ttft,
            itl,
            generation_tokens,
            prompt_tokens,
            waiting,
            running,
            aborted,
            streams_ended_early,
            connections_open,
            connections_rejected,
            connections_closed,
        }
    }

    /// The `{model}` label set.
    pub fn model(model: &str) -> ModelLabels {
        ModelLabels {
            model: model.to_string(),
        }
    }

    /// Counts one finished request.
    pub fn request_done(&self, model: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts one connection closed by the server.
    pub fn connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&CloseLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts `n` requests the engine dropped unfinished.
    pub fn requests_aborted(&self, model: &str, reason: &str, n: u64) {
        if n > 0 {
            self.aborted
                .get_or_create(&ShedLabels {
                    model: model.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Counts one stream cut before its last token.
    pub fn stream_ended_early(&self, model: &str, reason: &str) {
        self.streams_ended_early
            .get_or_create(&ShedLabels {
                model: model.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one shed request.
    pub fn request_shed(&self, model: &str, reason: &str) {
        self.shed
            .get_or_create(&ShedLabels {
                model: model.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_faultline_vllm_convention() {
        let m = Metrics::new();
        m.request_done("mlp", 200);
        m.request_shed("mlp", "queue_full");
        m.batch_size
            .get_or_create(&Metrics::model("mlp"))
            .observe(4.0);
        m.waiting.get_or_create(&Metrics::model("mlp")).set(3);
        let text = m.render();
        for needle in [
            "faultline_requests_total{model=\"mlp\",status=\"200\"} 1",
            "faultline_requests_shed_total{model=\"mlp\",reason=\"queue_full\"} 1",
            "faultline_batch_size_sum{model=\"mlp\"} 4.0",
            "faultline_num_requests_waiting{model=\"mlp\"} 3",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
