//! The layer around every call (outside authentication, so refused calls count too): the
//! call's metrics (`allot_rpc_requests_total`, `allot_rpc_duration_seconds`), its span when
//! spans are exported (`rpc`, child of the caller's W3C `traceparent`), and its access-log
//! line (target `allot::access`: method, code, latency, request_id, caller `sub` — never a
//! token), at most `--access-log-rate` lines a second.
//!
//! What only the handler knows reaches the layer through a task-local [`Note`]: the access
//! layer notes the caller's `sub` ([`note_sub`]), `api::key` every `request_id` it derives a
//! key from ([`note_request_id`]).
//!
//! The code is the `grpc-status` of the response headers (a handler's error); a response
//! without one is OK. A stream that fails after it began is counted by how it began.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tonic::{Code, body::Body, codegen::http};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::{ACCESS_LOG_SKIPPED, RPC_DURATION, RPC_REQUESTS};
use crate::error::code_name;

/// What the handler learns about a call that its span and access-log line carry.
#[derive(Default)]
pub struct Note {
    request_id: OnceLock<String>,
    /// Request ids after the first (BatchDebit carries many).
    more: AtomicUsize,
    sub: OnceLock<String>,
}

tokio::task_local! {
    static NOTE: Arc<Note>;
}

/// Notes a `request_id` of the current call (the first one is the call's; later ones are
/// counted).
pub fn note_request_id(request_id: &str) {
    let _ = NOTE.try_with(|note| {
        if note.request_id.set(request_id.to_string()).is_err() {
            note.more.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Notes who is calling (the token's `sub`, once verified).
pub fn note_sub(sub: &str) {
    let _ = NOTE.try_with(|note| {
        let _ = note.sub.set(sub.to_string());
    });
}

/// Every method's path and the label it goes by (without the leading `/`): allot's methods,
/// health and reflection. Anything else is `unknown`, so a caller cannot mint series.
fn method_label(path: &str) -> &'static str {
    static LABELS: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
        crate::api::access::ROUTES
            .iter()
            .map(|(path, _)| *path)
            .chain([
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Watch",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ])
            .map(|path| (path, &path[1..]))
            .collect()
    });
    LABELS.get(path).copied().unwrap_or("unknown")
}
/// The status code of a response: its `grpc-status` header, else OK.
fn code_of(response: &http::Response<Body>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .map_or(Code::Ok, |value| Code::from_bytes(value.as_bytes()))
}

/// At most `per_second` lines a second; the line after a gap says how many were skipped.
pub struct AccessLog {
    per_second: u32,
    started: Instant,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    second: u64,
    written: u32,
    skipped: u64,
}

impl AccessLog {
    pub fn new(per_second: u32) -> Self {
        AccessLog {
            per_second,
            started: Instant::now(),
            window: Mutex::default(),
        }
    }

    /// `Some(skipped since the last line)` if a line may be written now.
    fn admit(&self) -> Option<u64> {
        if self.per_second == 0 {
            return None;
        }
        let second = self.started.elapsed().as_secs();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.second != second {
            window.second = second;
            window.written = 0;
        }
        if window.written < self.per_second {
            window.written += 1;
            Some(std::mem::take(&mut window.skipped))
        } else {
            window.skipped += 1;
            None
        }
    }

    fn write(&self, method: &str, code: Code, latency: Duration, note: &Note) {
        let Some(skipped) = self.admit() else {
            if self.per_second > 0 {
                metrics::counter!(ACCESS_LOG_SKIPPED).increment(1);
            }
            return;
        };
        tracing::info!(
            target: "allot::access",
            method,
            code = code_name(code),
            latency_ms = latency.as_secs_f64() * 1000.0,
            request_id = note.request_id.get().map_or("", String::as_str),
            more_request_ids = note.more.load(Ordering::Relaxed),
            sub = note.sub.get().map_or("", String::as_str),
            skipped,
            "call"
        );
    }
}

/// The layer; see the module docs.
#[derive(Clone)]
pub struct TelemetryLayer {
    log: Arc<AccessLog>,
}

impl TelemetryLayer {
    pub fn new(access_log_per_second: u32) -> Self {
        TelemetryLayer {
            log: Arc::new(AccessLog::new(access_log_per_second)),
        }
    }
}

impl<S> tower::Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TelemetryService {
            inner,
            log: self.log.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TelemetryService<S> {
    inner: S,
    log: Arc<AccessLog>,
}

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The call's span, a child of the caller's trace context: only when spans are exported, and
/// the caller sampled its trace (or, without one, the call is drawn to start a trace).
fn span(method: &'static str, headers: &http::HeaderMap) -> Span {
    if !super::tracing_enabled() {
        return Span::none();
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    });
    let caller = opentelemetry::trace::TraceContextExt::span(&parent)
        .span_context()
        .clone();
    let traced = if caller.is_valid() {
        caller.is_sampled()
    } else {
        super::root_sampled()
    };
    if !traced {
        return Span::none();
    }
    let (service, name) = method.split_once('/').unwrap_or((method, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = name,
        rpc.grpc.status_code = Empty,
        request_id = Empty,
        sub = Empty,
    );
    let _ = span.set_parent(parent);
    span
}

impl<S> tower::Service<http::Request<Body>> for TelemetryService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = method_label(request.uri().path());
        let span = span(method, request.headers());
        let mut call = Call {
            method,
            started: Instant::now(),
            deadline: request
                .headers()
                .get("grpc-timeout")
                .and_then(|value| parse_grpc_timeout(value.as_bytes())),
            note: Arc::new(Note::default()),
            span: span.clone(),
            log: self.log.clone(),
            answered: false,
        };
        // The access layer authenticates inside `call`, the handler inside the future: both
        // see the note.
        let future = NOTE.sync_scope(call.note.clone(), || {
            let _entered = span.enter();
            self.inner.call(request)
        });
        Box::pin(NOTE.scope(call.note.clone(), async move {
            let result = future.instrument(span).await;
            call.answered(match &result {
                Ok(response) => code_of(response),
                Err(_) => Code::Unknown,
            });
            result
        }))
    }
}

/// One call being served. Recorded when it is answered, or, if it is dropped unanswered
/// (its `grpc-timeout` passed — tonic's deadline layer sits outside this one — or the client
/// went away), when it is dropped: as DEADLINE_EXCEEDED once its deadline is over, else
/// CANCELLED.
struct Call {
    method: &'static str,
    started: Instant,
    deadline: Option<Duration>,
    note: Arc<Note>,
    span: Span,
    log: Arc<AccessLog>,
    answered: bool,
}

impl Call {
    fn answered(&mut self, code: Code) {
        self.answered = true;
        self.record(code);
    }

    fn record(&self, code: Code) {
        let latency = self.started.elapsed();
        let method = self.method;
        metrics::counter!(RPC_REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
        metrics::histogram!(RPC_DURATION, "method" => method).record(latency.as_secs_f64());
        if !self.span.is_none() {
            self.span.record("rpc.grpc.status_code", code as i64);
            if code != Code::Ok {
                self.span.record("otel.status_code", "ERROR");
            }
            if let Some(request_id) = self.note.request_id.get() {
                self.span.record("request_id", request_id.as_str());
            }
            if let Some(sub) = self.note.sub.get() {
                self.span.record("sub", sub.as_str());
            }
        }
        self.log.write(method, code, latency, &self.note);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.answered {
            let expired = self
                .deadline
                .is_some_and(|deadline| self.started.elapsed() >= deadline);
            self.record(if expired {
                Code::DeadlineExceeded
            } else {
                Code::Cancelled
            });
        }
    }
}

/// A `grpc-timeout` header value (digits and a unit: H, M, S, m, u, n), as a duration.
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_writes_at_most_its_rate() {
        let log = AccessLog::new(3);
        let admitted: Vec<_> = (0..5).map(|_| log.admit()).collect();
        assert_eq!(admitted, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(AccessLog::new(0).admit(), None);
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"m"), None);
        assert_eq!(parse_grpc_timeout(b"123456789S"), None);
        assert_eq!(parse_grpc_timeout(b"12x"), None);
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            method_label("/allot.v1.LedgerService/Debit"),
            "allot.v1.LedgerService/Debit"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/allot.v1.LedgerService/Mint"), "unknown");
        assert_eq!(method_label("/x"), "unknown");
    }
}
