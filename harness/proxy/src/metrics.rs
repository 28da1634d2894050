//! The proxy's Prometheus metrics: one `prometheus-client` registry, served at
//! `GET /metrics` in the classic text format.
//!
//! | name | labels | what |
//! |---|---|---|
//! | `faultline_proxy_connections_total` | proxy | client connections accepted |
//! | `faultline_proxy_connections_active` | proxy | client connections open now |
//! | `faultline_proxy_upstream_connect_errors_total` | proxy | upstream connects that failed (the client is closed) |
//! | `faultline_proxy_connections_refused_total` | proxy | connections closed at once: the proxy had `MAX_CONNECTIONS_PER_PROXY` open |
//! | `faultline_proxy_received_bytes_total` | proxy, direction | bytes read (upstream: from clients; downstream: from the server) |
//! | `faultline_proxy_sent_bytes_total` | proxy, direction | bytes written after the toxics |
//! | `faultline_proxy_toxic_fired_total` | proxy, toxic, type | times a toxic acted: on a connection's bytes or timer, or on an HTTP message |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    pub proxy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub proxy: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToxicLabels {
    pub proxy: String,
    pub toxic: String,
    pub r#type: String,
}

/// Every metric family the proxy exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Family<ProxyLabels, Counter>,
    pub active: Family<ProxyLabels, Gauge>,
    pub connect_errors: Family<ProxyLabels, Counter>,
    pub refused: Family<ProxyLabels, Counter>,
    pub received: Family<DirectionLabels, Counter>,
    pub sent: Family<DirectionLabels, Counter>,
    pub fired: Family<ToxicLabels, Counter>,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self::default();
        let mut r = Registry::with_prefix("faultline_proxy");
        r.register(
            "connections",
            "Client connections accepted",
            m.connections.clone(),
        );
        r.register(
            "connections_active",
            "Client connections open now",
            m.active.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Upstream connects that failed; the client connection is closed",
            m.connect_errors.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed at once because the proxy had MAX_CONNECTIONS_PER_PROXY open",
            m.refused.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes read by the proxy, by direction (upstream: from clients, downstream: from servers)",
            m.received.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes written by the proxy after the toxics, by direction",
            m.sent.clone(),
        );
        r.register(
            "toxic_fired",
            "Times a toxic acted (on a connection's bytes or timer, or on an HTTP message)",
            m.fired.clone(),
        );
        m.registry = r;
        m
    }

    /// The exposition in the format the `Accept` header asks for (classic text 0.0.4
    /// unless OpenMetrics is preferred, as every `/metrics` of the stack answers), with its
    /// content type.
    pub fn encode(&self, accept: Option<&str>) -> (String, &'static str) {
        let mut om = String::new();
        if prometheus_client::encoding::text::encode(&mut om, &self.registry).is_err() {
            om.clear();
        }
        let format = promtext::negotiate(accept);
        let text = match format {
            promtext::Format::OpenMetrics => om,
            promtext::Format::Text004 => promtext::to_text_004(&om),
        };
        (text, format.content_type())
    }
}
