//! `telemetry`: Prometheus metrics and OpenTelemetry traces.

use serde::Deserialize;

use super::{ConfigError, after_http_scheme};

/// OpenTelemetry (SPEC O2).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub tracing: TracingConfig,
    pub metrics: MetricsConfig,
}

impl TelemetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.tracing.validate()
    }
}

/// Prometheus metrics (SPEC O1) at `GET /metrics` on the HTTP address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// false: no /metrics and nothing counted on the SMTP path.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TraceExporter {
    /// OTLP over HTTP with protobuf bodies (a collector's port 4318, Jaeger, Tempo).
    #[default]
    Otlp,
}

/// One trace per SMTP transaction and per API request, exported over OTLP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    pub enabled: bool,
    pub exporter: TraceExporter,
    /// The collector's OTLP/HTTP address; `/v1/traces` is added unless given.
    pub endpoint: String,
    /// Share of new traces kept, 0 to 1 (a `traceparent` that is sampled is followed).
    pub sample_rate: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            exporter: TraceExporter::Otlp,
            endpoint: "http://127.0.0.1:4318".into(),
            sample_rate: 1.0,
        }
    }
}

impl TracingConfig {
    /// The full OTLP/HTTP traces URL.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(ConfigError::new(
                "telemetry.tracing.sample_rate",
                "must be between 0 and 1",
            ));
        }
        if self.enabled && after_http_scheme(&self.endpoint).is_none() {
            return Err(ConfigError::new(
                "telemetry.tracing.endpoint",
                "must be an http:// or https:// URL (OTLP/HTTP, e.g. http://collector:4318)",
            ));
        }
        Ok(())
    }
}
