//! What allot tells the people who run it: logs, the access log, Prometheus metrics and
//! OpenTelemetry traces.
//!
//! * `rpc.rs` — a tower layer around every call: its span, its metrics and its access-log
//!   line; handlers add the call's `request_id` and the access layer its caller (`note_*`).
//! * `metrics.rs` — the metric names, the Prometheus exporter (`--metrics-listen`) and the
//!   sampler of gauges (pools, queues, background lag, health).
//! * this file — the log subscriber, with the OTLP span exporter when it is configured.

pub mod metrics;
pub mod rpc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Whether spans are exported (OTLP configured): the RPC layer and the batcher make spans
/// only then, so a server without tracing pays nothing for them.
static TRACING: AtomicBool = AtomicBool::new(false);

/// The share of calls without a caller's trace context that start a trace (the bits of an
/// `f64`; see [`root_sampled`]).
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0

/// True when spans are exported.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Whether a call without a caller's trace context gets a span (drawn at the root ratio).
pub fn root_sampled() -> bool {
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}

/// The share of root calls to trace, from the standard `OTEL_TRACES_SAMPLER` (and
/// `OTEL_TRACES_SAMPLER_ARG`): `always_on` / `parentbased_always_on` (the default) 1,
/// `always_off` / `parentbased_always_off` 0, `traceidratio` / `parentbased_traceidratio`
/// the argument. allot decides *before* it makes a span (a span made and then dropped by
/// the SDK's sampler cost 14% of the debit rate, docs/BENCHMARKS.md), and always follows the
/// caller's decision when a `traceparent` came with the call: every sampler acts as its
/// `parentbased_` form.
fn root_ratio_from_env() -> f64 {
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    let argument = || {
        std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|arg| arg.trim().parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .unwrap_or(1.0)
    };
    match sampler.trim().to_ascii_lowercase().as_str() {
        "always_off" | "parentbased_always_off" => 0.0,
        "traceidratio" | "parentbased_traceidratio" => argument(),
        _ => 1.0,
    }
}

/// The OTLP span exporter's standard switches: on when an OTLP endpoint is set (for all
/// signals or for traces), unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
pub fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Flushes exported spans when dropped (the end of `serve`).
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {err}");
        }
    }
}

/// Logs to stderr (`RUST_LOG`, default `info`; JSON lines with `json`), and, when
/// [`otlp_configured`], exports allot's spans over OTLP/gRPC (the `OTEL_EXPORTER_OTLP_*`
/// variables: endpoint, headers, timeout, TLS; `OTEL_SERVICE_NAME`, default `allot`). W3C
/// trace context (`traceparent`) from callers becomes the parent of a call's span.
///
/// Must run inside the Tokio runtime (the exporter's client lives there).
pub fn init(json: bool) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout is for command output (the dev token, client results).
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json()
            .with_current_span(false)
            .with_filter(filter)
            .boxed()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        fmt.with_ansi(ansi).with_filter(filter).boxed()
    };
    let provider = if otlp_configured() {
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let Ok(protocol) = std::env::var(name)
                && !protocol.trim().is_empty()
                && !protocol.trim().eq_ignore_ascii_case("grpc")
            {
                anyhow::bail!(
                    "{name}={protocol}: allot exports traces over OTLP/gRPC only; set it to \
                     `grpc` (or unset it) and point OTEL_EXPORTER_OTLP_ENDPOINT at the \
                     collector's gRPC port (usually 4317)"
                );
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "allot".to_string());
        let ratio = root_ratio_from_env();
        ROOT_RATIO.store(ratio.to_bits(), Ordering::Relaxed);
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // Spans are made only for calls chosen to be traced (`root_sampled`, or a sampled
            // caller): the SDK records every span it is given.
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::AlwaysOn,
            )))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        Some(provider)
    } else {
        None
    };
    // Only allot's own spans are exported (not the database driver's), whatever RUST_LOG says.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("allot"))
            .with_filter(Targets::new().with_target("allot", tracing::Level::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if provider.is_some() {
        TRACING.store(true, Ordering::Relaxed);
        tracing::info!(
            root_ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed)),
            "exporting spans over OTLP"
        );
    }
    Ok(Guard { provider })
}
