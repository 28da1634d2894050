//! `GET /healthz` and `GET /readyz` bodies.

use serde::{Deserialize, Serialize};

/// Health or readiness verdict; `reasons` is empty when `ok`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `"ok"`, `"unhealthy"`, `"draining"` or `"loading"`.
    pub status: String,
    /// One line per failing engine, naming the model and the symptom.
    #[serde(default)]
    pub reasons: Vec<String>,
}
