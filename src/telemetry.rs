//! Logs and traces (SPEC O2, O4).
//!
//! - Logs: `logging.level` (changed at run time by [`set_level`]: SIGHUP, `mairust
//!   reload`), `logging.format` `text` or `json`, on standard output or in
//!   `logging.file` with size rotation and gzip of rotated files. A JSON line always has
//!   `timestamp`, `level`, `component`, `message`, and the `request_id` / `session_id`
//!   of the request or SMTP session it belongs to, then the event's own fields. No
//!   control character reaches either format raw ([`escape`]).
//! - Traces: with `telemetry.tracing.enabled`, spans of the `mairust*` crates and the
//!   HTTP root spans of tracing-actix-web go to an OTLP/HTTP collector, sampled at
//!   `sample_rate` (parent-based: a sampled `traceparent` is followed; SMTP transactions
//!   are sampled when they begin, see [`mairust_actors::trace`]). The level filter of the
//!   logs does not apply to them.

pub mod escape;

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;

use anyhow::Context as _;
use mairust_actors::config::{Config, LogFormat, LoggingConfig, TracingConfig};
use mairust_actors::trace;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SamplingResult, SdkTracerProvider, ShouldSample};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// What must outlive the server: the log writer's thread and the trace exporter.
pub struct Telemetry {
    _log_writer: Option<tracing_appender::non_blocking::WorkerGuard>,
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter (graceful shutdown).
    pub fn shutdown(self) {
        if let Some(provider) = &self.traces
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(component = "supervisor", error = %e, "trace export at shutdown failed");
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::new(format!("{level},sqlx=warn,sea_orm=warn,h2=warn,hyper=warn"))
}

/// Sets up logging and tracing for `serve`.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let logging = &config.logging;
    // RUST_LOG, when set, overrides the configured level (for debugging).
    let initial = EnvFilter::try_from_default_env().unwrap_or_else(|_| filter(&logging.level));
    let (level, handle) = reload::Layer::new(initial);
    // Spans with a request_id / session_id are always entered for the log layer, so a
    // warning logged inside a request carries its id even when info is filtered out.
    let level = level.or(filter_fn(has_ids));
    let (writer, guard) = log_writer(logging)?;
    let to_terminal = logging.file.is_none() && std::io::stdout().is_terminal();
    let fmt: BoxedLayer = match logging.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(writer)
            .with_filter(level)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(escape::EscapedFields)
            .with_ansi(to_terminal)
            .with_writer(writer)
            .with_filter(level)
            .boxed(),
    };
    // SpanIds only looks at spans that carry an id: unfiltered, it would switch on every
    // trace-level callsite of every library.
    let ids = SpanIds.with_filter(filter_fn(has_ids));
    let mut layers: Vec<BoxedLayer> = vec![ids.boxed(), fmt];
    let traces = if config.telemetry.tracing.enabled {
        let provider = tracer_provider(&config.telemetry.tracing)?;
        let tracer = provider.tracer("mairust");
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // Per span: no busy/idle clocks and no OpenTelemetry context switch on
                // every poll (nothing here reads that context: parents come from the
                // tracing spans), no source location or thread attributes.
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_location(false)
                .with_threads(false)
                .with_filter(trace_filter())
                .boxed(),
        );
        Some(provider)
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("logging already initialised")?;
    let _ = LEVEL.set(handle);
    Ok(Telemetry {
        _log_writer: guard,
        traces,
    })
}

/// What the trace export sees: the spans of the server's crates and of
/// tracing-actix-web, except untraced SMTP transactions (see
/// [`mairust_actors::trace`]), and as span events only warnings and errors.
fn trace_filter() -> impl tracing_subscriber::layer::Filter<Registry> {
    EnvFilter::new("off,mairust=info,mairust_actors=info,tracing_actix_web=info").and(filter_fn(
        |meta| {
            if meta.is_span() {
                meta.target() != trace::UNTRACED
            } else {
                *meta.level() <= tracing::Level::WARN
            }
        },
    ))
}

/// The exporter's sampler: a root span marked [`trace::FORCE_SAMPLE`] was sampled when
/// its SMTP transaction began and is kept; other new traces are kept at `sample_rate`; a
/// span with a parent follows it (a sampled `traceparent` included).
#[derive(Debug, Clone)]
struct Sampling {
    ratio: Sampler,
}

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let forced = attributes.iter().any(|kv| {
            kv.key.as_str() == trace::FORCE_SAMPLE
                && matches!(kv.value, opentelemetry::Value::I64(p) if p > 0)
        });
        let sampler = if forced {
            &Sampler::AlwaysOn
        } else {
            &self.ratio
        };
        sampler.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

fn tracer_provider(config: &TracingConfig) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(config.traces_url())
        .build()
        .context("telemetry.tracing: cannot build the OTLP exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampling {
            ratio: Sampler::TraceIdRatioBased(config.sample_rate),
        })))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("mairust")
                .build(),
        )
        .build())
}

/// Standard output, or the rotating file behind a writer thread (lossless: a full
/// buffer slows logging down rather than dropping lines).
fn log_writer(
    config: &LoggingConfig,
) -> anyhow::Result<(
    tracing_appender::non_blocking::NonBlocking,
    Option<tracing_appender::non_blocking::WorkerGuard>,
)> {
    let Some(path) = &config.file else {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(std::io::stdout());
        return Ok((writer, Some(guard)));
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        mairust_actors::private_dir::create_private_dir(dir)
            .with_context(|| format!("logging.file: cannot create {}", dir.display()))?;
    }
    // Log lines name users, addresses and clients: mode 0600, for the first file and
    // for each one rotation starts.
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true).mode(0o600);
    // Fail here, with the path, rather than inside the writer thread.
    options
        .open(path)
        .with_context(|| format!("logging.file: cannot open {}", path.display()))?;
    let rotation = &config.rotation;
    let bytes = ((rotation.max_size_mb * 1024.0 * 1024.0) as usize).max(1);
    let file = file_rotate::FileRotate::new(
        path,
        file_rotate::suffix::AppendCount::new(rotation.max_files),
        // Cut after the write that passes the size: lines stay whole.
        file_rotate::ContentLimit::BytesSurpassed(bytes),
        if rotation.compress {
            file_rotate::compression::Compression::OnRotate(0)
        } else {
            file_rotate::compression::Compression::None
        },
        Some(options),
    );
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(file);
    Ok((writer, Some(guard)))
}

/// Changes the log level of the running server.
pub fn set_level(level: &str) -> Result<(), String> {
    let handle = LEVEL.get().ok_or("logging is not initialised")?;
    handle.reload(filter(level)).map_err(|e| e.to_string())
}

/// CLI commands log only warnings, to standard error, so their output stays clean.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .fmt_fields(escape::EscapedFields)
        .with_env_filter(EnvFilter::new("warn,sqlx=error"))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Span fields copied into every JSON line logged inside the span.
const SPAN_IDS: [&str; 2] = ["request_id", "session_id"];

/// A span that carries one of [`SPAN_IDS`].
fn has_ids(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && SPAN_IDS.iter().any(|f| meta.fields().field(f).is_some())
}

/// The `request_id` / `session_id` a span was created with.
struct Ids(Vec<(&'static str, String)>);

/// Remembers [`SPAN_IDS`] fields of new spans for [`JsonLines`].
struct SpanIds;

impl<S> Layer<S> for SpanIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut ids = IdVisitor(Vec::new());
        attrs.record(&mut ids);
        if !ids.0.is_empty()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Ids(ids.0));
        }
    }
}

struct IdVisitor(Vec<(&'static str, String)>);

impl Visit for IdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if SPAN_IDS.contains(&field.name()) {
            self.0.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if SPAN_IDS.contains(&field.name()) {
            self.0.push((field.name(), format!("{value:?}")));
        }
    }
}

/// An event's fields as JSON values.
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The component of an event that names none: from the module it comes from.
fn component_of(target: &str) -> &'static str {
    let module = target
        .strip_prefix("mairust_actors::")
        .or_else(|| target.strip_prefix("mairust::"))
        .unwrap_or(target);
    let first = module.split("::").next().unwrap_or("");
    match first {
        "smtp" => "smtp",
        "queue" => "queue",
        "storage" | "database" => "storage",
        "hooks" => "hook",
        "api" | "cli" => "api",
        "audit" => "audit",
        _ if target.starts_with("actix_web") || target.starts_with("tracing_actix_web") => "api",
        _ if target.starts_with("sqlx") || target.starts_with("sea_orm") => "storage",
        _ if target.starts_with("object_store") => "storage",
        _ if target.starts_with("reqwest") => "hook",
        _ => "supervisor",
    }
}

/// One JSON object per line (SPEC O4).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonVisitor(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert(
            "level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        let component = fields
            .remove("component")
            .unwrap_or_else(|| component_of(meta.target()).into());
        line.insert("component".into(), component);
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or_default(),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(Ids(ids)) = span.extensions().get::<Ids>() {
                    for (name, value) in ids {
                        line.insert((*name).into(), value.clone().into());
                    }
                }
            }
        }
        line.extend(fields);
        // The module, unless the event has a `target` of its own (audit entries do).
        line.entry("target").or_insert_with(|| meta.target().into());
        writeln!(writer, "{}", escape::json_line(&Value::Object(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::{Sampler, Sampling, ShouldSample, component_of, trace};
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::SamplingDecision;

    fn decide(sampling: &Sampling, attributes: &[KeyValue]) -> SamplingDecision {
        sampling
            .should_sample(
                None,
                TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736u128),
                "smtp.transaction",
                &SpanKind::Server,
                attributes,
                &[],
            )
            .decision
    }

    #[test]
    fn marked_roots_are_kept_others_sampled_at_the_rate() {
        let none = Sampling {
            ratio: Sampler::TraceIdRatioBased(0.0),
        };
        let all = Sampling {
            ratio: Sampler::TraceIdRatioBased(1.0),
        };
        let marked = [KeyValue::new(trace::FORCE_SAMPLE, 1i64)];
        assert_eq!(decide(&none, &marked), SamplingDecision::RecordAndSample);
        assert_eq!(decide(&none, &[]), SamplingDecision::Drop);
        let unmarked = [KeyValue::new(trace::FORCE_SAMPLE, 0i64)];
        assert_eq!(decide(&none, &unmarked), SamplingDecision::Drop);
        assert_eq!(decide(&all, &[]), SamplingDecision::RecordAndSample);
    }

    #[test]
    fn components_from_targets() {
        assert_eq!(component_of("mairust_actors::smtp::session"), "smtp");
        assert_eq!(component_of("mairust_actors::queue::worker"), "queue");
        assert_eq!(component_of("mairust_actors::storage::actor"), "storage");
        assert_eq!(component_of("mairust_actors::hooks"), "hook");
        assert_eq!(component_of("mairust::api::v1"), "api");
        assert_eq!(component_of("actix_server::builder"), "supervisor");
        assert_eq!(component_of("sqlx::query"), "storage");
    }
}
