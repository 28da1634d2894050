//! The process's one Prometheus registry, and its text for `GET /metrics`.
//!
//! Names: faultline's own (`faultline_` namespace, label `model`, base units, counters
//! ending `_total`), or with `--metrics-names vllm` ([`MetricsNames::Vllm`]) vLLM's names,
//! labels (`model_name`, `engine`) and histogram buckets for the families vLLM has, so
//! dashboards built for vLLM work unchanged; the families vLLM has not keep their faultline
//! names. Formats ([`promtext`]): the classic text format 0.0.4 by default, OpenMetrics
//! 1.0 when the scraper's `Accept` prefers it.
//!
//! Not here: the `/metrics` handler (`api::ops`), which refreshes the queue gauges from the
//! engines and picks the format.

pub use crate::config::MetricsNames;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry, Unit};
use promtext::Format;
use std::ops::Deref;

/// `{model}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// `{model, version}` of `faultline_model_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelInfoLabels {
    pub model: String,
    pub version: String,
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

/// vLLM's labels for a model: `{model_name, engine}`. Each model here has one engine,
/// `"0"`, as a single-engine vLLM reports.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct VllmLabels {
    model_name: String,
}

impl EncodeLabelSet for VllmLabels {
    fn encode(&self, mut encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("model_name", self.model_name.as_str()).encode(encoder.encode_label())?;
        ("engine", "0").encode(encoder.encode_label())
    }
}

/// Why a request finished, as vLLM's `finished_reason` label says it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum FinishedReason {
    /// A stop sequence or the end of the output (a classifier's answer).
    Stop,
    /// `max_tokens` generated.
    Length,
    /// Ended before either, e.g. its client went away.
    Abort,
}

impl FinishedReason {
    /// `"stop"`, `"length"` or `"abort"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishedReason::Stop => "stop",
            FinishedReason::Length => "length",
            FinishedReason::Abort => "abort",
        }
    }
}

/// `{model_name, engine, finished_reason}` of `vllm:request_success_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct VllmSuccessLabels {
    model_name: String,
    finished_reason: FinishedReason,
}

impl EncodeLabelSet for VllmSuccessLabels {
    fn encode(&self, mut encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("model_name", self.model_name.as_str()).encode(encoder.encode_label())?;
        ("engine", "0").encode(encoder.encode_label())?;
        ("finished_reason", self.finished_reason.as_str()).encode(encoder.encode_label())
    }
}

/// A family of metrics per model, used like a `Family<ModelLabels, M>`: its label is
/// `model` under faultline names and `model_name` (with `engine`) under vLLM's.
#[derive(Debug)]
pub struct ModelFamily<M, C = fn() -> M> {
    inner: ModelFamilyInner<M, C>,
}

#[derive(Debug)]
enum ModelFamilyInner<M, C> {
    Faultline(Family<ModelLabels, M, C>),
    Vllm(Family<VllmLabels, M, C>),
}

impl<M, C: Clone> Clone for ModelFamily<M, C> {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            ModelFamilyInner::Faultline(f) => ModelFamilyInner::Faultline(f.clone()),
            ModelFamilyInner::Vllm(f) => ModelFamilyInner::Vllm(f.clone()),
        };
        Self { inner }
    }
}

impl<M, C: MetricConstructor<M>> ModelFamily<M, C> {
    fn new(names: MetricsNames, constructor: C) -> Self {
        let inner = match names {
            MetricsNames::Faultline => {
                ModelFamilyInner::Faultline(Family::new_with_constructor(constructor))
            }
            MetricsNames::Vllm => ModelFamilyInner::Vllm(Family::new_with_constructor(constructor)),
        };
        Self { inner }
    }

    /// The metric of one model, created on first use.
    pub fn get_or_create(&self, labels: &ModelLabels) -> impl Deref<Target = M> + '_ {
        match &self.inner {
            ModelFamilyInner::Faultline(f) => f.get_or_create(labels),
            ModelFamilyInner::Vllm(f) => f.get_or_create(&VllmLabels {
                model_name: labels.model.clone(),
            }),
        }
    }
}

impl<M: TypedMetric, C> TypedMetric for ModelFamily<M, C> {
    const TYPE: MetricType = M::TYPE;
}

impl<M, C> EncodeMetric for ModelFamily<M, C>
where
    M: EncodeMetric + TypedMetric,
    C: MetricConstructor<M>,
{
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match &self.inner {
            ModelFamilyInner::Faultline(f) => f.encode(encoder),
            ModelFamilyInner::Vllm(f) => f.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;
/// A per-model histogram whose buckets depend on the names in use.
pub type ModelHistograms = ModelFamily<Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

fn batch_histogram() -> Histogram {
    // 1, 2, 4 … 1024 samples or sequences.
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// vLLM's buckets (`vllm/v1/metrics/loggers.py`), so its dashboards' `le` values exist.
const VLLM_TTFT_BUCKETS_S: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const VLLM_ITL_BUCKETS_S: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const VLLM_REQUEST_LATENCY_BUCKETS_S: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

fn vllm_ttft_histogram() -> Histogram {
    Histogram::new(VLLM_TTFT_BUCKETS_S)
}

fn vllm_itl_histogram() -> Histogram {
    Histogram::new(VLLM_ITL_BUCKETS_S)
}

fn vllm_request_latency_histogram() -> Histogram {
    Histogram::new(VLLM_REQUEST_LATENCY_BUCKETS_S)
}

/// A family's name and help under faultline names (`faultline_` is prepended), and under
/// vLLM's where vLLM has it. Help is written without its final period, which
/// `prometheus-client` adds. Seconds families give their name without `_seconds`: the unit
/// adds it (and a `# UNIT` line in OpenMetrics).
struct Desc {
    faultline: (&'static str, &'static str),
    vllm: Option<(&'static str, &'static str)>,
    unit: Option<Unit>,
}

impl Desc {
    fn register(self, registry: &mut Registry, names: MetricsNames, metric: impl Metric) {
        let (name, help) = match (names, self.vllm) {
            (MetricsNames::Vllm, Some((name, help))) => (name.to_string(), help),
            _ => (format!("faultline_{}", self.faultline.0), self.faultline.1),
        };
        match self.unit {
            Some(unit) => registry.register_with_unit(name, help, unit, metric),
            None => registry.register(name, help, metric),
        }
    }
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
    /// `faultline_e2e_request_latency_seconds{model}` (`vllm:e2e_request_latency_seconds`):
    /// arrival → response complete (for streams: → last token).
    pub e2e_latency: ModelHistograms,
    /// `faultline_request_queue_time_seconds{model}` (`vllm:request_queue_time_seconds`):
    /// arrival → dispatched in a batch / admitted to the running set.
    pub queue_time: ModelHistograms,
    /// `faultline_batch_size{model}`: samples per classifier batch, sequences per LM step.
    pub batch_size: HistogramFamily,
    /// `faultline_batch_execution_seconds{model}`: compute time of one batch / decode step.
    pub batch_execution: HistogramFamily,
    /// `faultline_time_to_first_token_seconds{model}` (`vllm:time_to_first_token_seconds`):
    /// arrival → first generated token.
    pub ttft: ModelHistograms,
    /// `faultline_inter_token_latency_seconds{model}` (`vllm:inter_token_latency_seconds`
    /// and its older name `vllm:time_per_output_token_seconds`): gap between consecutive
    /// tokens.
    pub itl: ModelHistograms,
    /// `faultline_generation_tokens_total{model}` (`vllm:generation_tokens_total`).
    pub generation_tokens: ModelFamily<Counter>,
    /// `faultline_prompt_tokens_total{model}` (`vllm:prompt_tokens_total`).
    pub prompt_tokens: ModelFamily<Counter>,
    /// `faultline_num_requests_waiting{model}` (`vllm:num_requests_waiting`): queued, not yet
    /// in a batch / running set.
    pub waiting: ModelFamily<Gauge>,
    /// `faultline_num_requests_running{model}` (`vllm:num_requests_running`): in a batch
    /// being computed / sequences decoding.
    pub running: ModelFamily<Gauge>,
    /// `faultline_model_info{model,version}`: 1 for the version each model serves (set at
    /// every scrape; a replaced version's series disappears).
    pub model_info: Family<ModelInfoLabels, Gauge>,
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
    /// `vllm:request_success_total{model_name,engine,finished_reason}`, under vLLM names
    /// only; see [`Metrics::request_finished`].
    request_success: Option<Family<VllmSuccessLabels, Counter>>,
}

impl Metrics {
    /// A registry with faultline names.
    pub fn new() -> Self {
        Self::with_names(MetricsNames::Faultline)
    }

    /// A registry with `names`.
    pub fn with_names(names: MetricsNames) -> Self {
        let vllm = names == MetricsNames::Vllm;
        let mut registry = Registry::default();
        let requests = Family::default();
        let shed = Family::default();
        let histograms = |faultline: fn() -> Histogram, vllm: fn() -> Histogram| {
            ModelFamily::new(
                names,
                if names == MetricsNames::Vllm {
                    vllm
                } else {
                    faultline
                },
            )
        };
        let e2e_latency = histograms(latency_histogram, vllm_request_latency_histogram);
        let queue_time = histograms(latency_histogram, vllm_request_latency_histogram);
        let batch_size = Family::new_with_constructor(batch_histogram as fn() -> Histogram);
        let batch_execution = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let ttft = histograms(latency_histogram, vllm_ttft_histogram);
        let itl = histograms(latency_histogram, vllm_itl_histogram);
        let generation_tokens = ModelFamily::new(names, Counter::default as fn() -> Counter);
        let prompt_tokens = ModelFamily::new(names, Counter::default as fn() -> Counter);
        let waiting = ModelFamily::new(names, Gauge::default as fn() -> Gauge);
        let running = ModelFamily::new(names, Gauge::default as fn() -> Gauge);
        let aborted = Family::default();
        let streams_ended_early = Family::default();
        let connections_open = Gauge::default();
        let connections_rejected = Counter::default();
        let connections_closed = Family::default();
        let request_success = vllm.then(Family::default);
        let faultline_only = |name, help| Desc {
            faultline: (name, help),
            vllm: None,
            unit: None,
        };
        faultline_only(
            "requests_aborted",
            "Requests the engine dropped unfinished because their client went away",
        )
        .register(&mut registry, names, aborted.clone());
        faultline_only(
            "streams_ended_early",
            "Streams cut before their last token, by reason",
        )
        .register(&mut registry, names, streams_ended_early.clone());
        faultline_only("connections_open", "Client connections being served").register(
            &mut registry,
            names,
            connections_open.clone(),
        );
        faultline_only(
            "connections_rejected",
            "Connections refused because --max-connections were open",
        )
        .register(&mut registry, names, connections_rejected.clone());
        faultline_only(
            "connections_closed",
            "Connections closed by the server, by reason",
        )
        .register(&mut registry, names, connections_closed.clone());
        faultline_only(
            "requests",
            "Finished requests to model endpoints, by HTTP status",
        )
        .register(&mut registry, names, requests.clone());
        faultline_only(
            "requests_shed",
            "Requests refused by admission control (queue full, draining, engine down)",
        )
        .register(&mut registry, names, shed.clone());
        Desc {
            faultline: (
                "e2e_request_latency",
                "Request arrival to response complete (streams: to the last token)",
            ),
            vllm: Some((
                "vllm:e2e_request_latency",
                "Histogram of e2e request latency in seconds",
            )),
            unit: Some(Unit::Seconds),
        }
        .register(&mut registry, names, e2e_latency.clone());
        Desc {
            faultline: ("request_queue_time", "Request arrival to start of compute"),
            vllm: Some((
                "vllm:request_queue_time",
                "Histogram of time spent in WAITING phase for request",
            )),
            unit: Some(Unit::Seconds),
        }
        .register(&mut registry, names, queue_time.clone());
        faultline_only(
            "batch_size",
            "Samples per classifier batch or sequences per LM decode step",
        )
        .register(&mut registry, names, batch_size.clone());
        Desc {
            faultline: (
                "batch_execution",
                "Compute time of one batch or decode step",
            ),
            vllm: None,
            unit: Some(Unit::Seconds),
        }
        .register(&mut registry, names, batch_execution.clone());
        Desc {
            faultline: (
                "time_to_first_token",
                "Request arrival to first generated token",
            ),
            vllm: Some((
                "vllm:time_to_first_token",
                "Histogram of time to first token in seconds",
            )),
            unit: Some(Unit::Seconds),
        }
        .register(&mut registry, names, ttft.clone());
        Desc {
            faultline: (
                "inter_token_latency",
                "Time between consecutive generated tokens of one request",
            ),
            vllm: Some((
                "vllm:inter_token_latency",
                "Histogram of inter-token latency in seconds",
            )),
            unit: Some(Unit::Seconds),
        }
        .register(&mut registry, names, itl.clone());
        if vllm {
            // vLLM 0.10 and 0.11 export the same figure under its older name too, which
            // older dashboards chart.
            registry.register_with_unit(
                "vllm:time_per_output_token",
                "Histogram of time per output token in seconds",
                Unit::Seconds,
                itl.clone(),
            );
        }
        Desc {
            faultline: ("generation_tokens", "Generated tokens"),
            vllm: Some((
                "vllm:generation_tokens",
                "Number of generation tokens processed",
            )),
            unit: None,
        }
        .register(&mut registry, names, generation_tokens.clone());
        Desc {
            faultline: ("prompt_tokens", "Prompt tokens"),
            vllm: Some(("vllm:prompt_tokens", "Number of prefill tokens processed")),
            unit: None,
        }
        .register(&mut registry, names, prompt_tokens.clone());
        Desc {
            faultline: (
                "num_requests_waiting",
                "Requests waiting for a batch or a running slot",
            ),
            vllm: Some((
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed",
            )),
            unit: None,
        }
        .register(&mut registry, names, waiting.clone());
        Desc {
            faultline: (
                "num_requests_running",
                "Requests in a batch being computed or sequences being decoded",
            ),
            vllm: Some((
                "vllm:num_requests_running",
                "Number of requests in model execution batches",
            )),
            unit: None,
        }
        .register(&mut registry, names, running.clone());
        let model_info = Family::<ModelInfoLabels, Gauge>::default();
        registry.register(
            "faultline_model_info",
            "The version each loaded model serves (always 1)",
            model_info.clone(),
        );
        if let Some(success) = &request_success {
            registry.register(
                "vllm:request_success",
                "Count of successfully processed requests",
                success.clone(),
            );
        }
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
            model_info,
            aborted,
            streams_ended_early,
            connections_open,
            connections_rejected,
            connections_closed,
            request_success,
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

    /// Counts one request (for the LM: one sequence) that ran to its end, in
    /// `vllm:request_success_total{finished_reason}` under vLLM names; under faultline names
    /// `faultline_requests_total` counts it by status and this does nothing.
    pub fn request_finished(&self, model: &str, reason: FinishedReason) {
        if let Some(success) = &self.request_success {
            success
                .get_or_create(&VllmSuccessLabels {
                    model_name: model.to_string(),
                    finished_reason: reason,
                })
                .inc();
        }
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

    /// Every metric, in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut om = String::new();
        // Writing to a String cannot fail; an error here is a bug in an encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut om, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        match format {
            Format::OpenMetrics => om,
            Format::Text004 => promtext::to_text_004(&om),
        }
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

    fn exercised(names: MetricsNames) -> Metrics {
        let m = Metrics::with_names(names);
        let mlp = Metrics::model("mlp");
        m.request_done("mlp", 200);
        m.request_shed("mlp", "queue_full");
        m.batch_size.get_or_create(&mlp).observe(4.0);
        m.waiting.get_or_create(&mlp).set(3);
        m.ttft.get_or_create(&mlp).observe(0.003);
        m.itl.get_or_create(&mlp).observe(0.02);
        m.e2e_latency.get_or_create(&mlp).observe(0.4);
        m.prompt_tokens.get_or_create(&mlp).inc_by(5);
        m.request_finished("mlp", FinishedReason::Length);
        m
    }

    #[test]
    fn names_follow_the_faultline_convention() {
        let text = exercised(MetricsNames::Faultline).render(Format::Text004);
        for needle in [
            "faultline_requests_total{model=\"mlp\",status=\"200\"} 1",
            "faultline_requests_shed_total{model=\"mlp\",reason=\"queue_full\"} 1",
            "faultline_batch_size_sum{model=\"mlp\"} 4.0",
            "faultline_num_requests_waiting{model=\"mlp\"} 3",
            "faultline_prompt_tokens_total{model=\"mlp\"} 5",
            "faultline_time_to_first_token_seconds_bucket{le=\"0.0032\",model=\"mlp\"} 1",
            "# TYPE faultline_requests_total counter",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("vllm"), "{text}");
    }

    #[test]
    fn vllm_names_labels_and_buckets_replace_the_families_vllm_has() {
        let text = exercised(MetricsNames::Vllm).render(Format::Text004);
        for needle in [
            "vllm:num_requests_waiting{model_name=\"mlp\",engine=\"0\"} 3",
            "vllm:prompt_tokens_total{model_name=\"mlp\",engine=\"0\"} 5",
            "# TYPE vllm:prompt_tokens_total counter",
            "vllm:time_to_first_token_seconds_bucket{le=\"0.005\",model_name=\"mlp\",engine=\"0\"} 1",
            "vllm:inter_token_latency_seconds_bucket{le=\"0.025\",model_name=\"mlp\",engine=\"0\"} 1",
            "vllm:time_per_output_token_seconds_bucket{le=\"0.025\",model_name=\"mlp\",engine=\"0\"} 1",
            "vllm:e2e_request_latency_seconds_bucket{le=\"0.5\",model_name=\"mlp\",engine=\"0\"} 1",
            "vllm:request_success_total{model_name=\"mlp\",engine=\"0\",finished_reason=\"length\"} 1",
            // Families vLLM has not keep faultline's names and label.
            "faultline_requests_total{model=\"mlp\",status=\"200\"} 1",
            "faultline_batch_size_sum{model=\"mlp\"} 4.0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        for gone in [
            "faultline_num_requests_waiting",
            "faultline_prompt_tokens",
            "faultline_time_to_first_token",
        ] {
            assert!(!text.contains(gone), "{gone} still in\n{text}");
        }
    }

    #[test]
    fn openmetrics_keeps_family_names_units_and_eof() {
        let text = exercised(MetricsNames::Faultline).render(Format::OpenMetrics);
        assert!(
            text.contains("# TYPE faultline_requests counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT faultline_time_to_first_token_seconds seconds\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn help_texts_need_no_escaping() {
        // `prometheus-client` writes help as given; both formats would need `\` and newlines
        // escaped, so none may occur.
        for names in [MetricsNames::Faultline, MetricsNames::Vllm] {
            let text = exercised(names).render(Format::OpenMetrics);
            for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
                assert!(!line.contains('\\'), "{line}");
            }
        }
    }
}
