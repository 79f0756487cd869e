//! Prometheus metrics: the names (one place, so docs/OPERATIONS.md and the alerts can rely
//! on them), the exporter on `--metrics-listen`, and the sampler of gauges.
//!
//! Recording goes through the `metrics` facade: without `--metrics-listen` no recorder is
//! installed and every `counter!` / `histogram!` is a no-op.
//!
//! Label values are bounded whatever callers send: methods are the known gRPC paths (others
//! are `unknown`), codes are the 17 gRPC codes, outcomes are `ok` or a reason of the
//! catalogue, and a request type is named only once a debit or hold of it succeeded (the
//! rate card knew it), at most [`MAX_REQUEST_TYPES`] of them; the rest are `other`.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, LazyLock, RwLock},
    time::Duration,
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::error::Error;

pub const RPC_REQUESTS: &str = "allot_rpc_requests_total";
pub const RPC_DURATION: &str = "allot_rpc_duration_seconds";
pub const DEBITS: &str = "allot_debits_total";
pub const HOLDS: &str = "allot_holds_total";
pub const REFUNDS: &str = "allot_refunds_total";
pub const BATCH_SIZE: &str = "allot_ledger_batch_size";
pub const COMMIT_SECONDS: &str = "allot_ledger_commit_seconds";
pub const BATCHES: &str = "allot_ledger_batches_total";
pub const QUEUED: &str = "allot_ledger_queued_operations";
pub const ABANDONED: &str = "allot_ledger_abandoned_operations_total";
pub const REFUSED: &str = "allot_admission_refused_total";
pub const POOL_CONNECTIONS: &str = "allot_db_pool_connections";
pub const POOL_MAX: &str = "allot_db_pool_max_connections";
pub const BACKGROUND_LAG: &str = "allot_background_lag_seconds";
pub const HEALTH_SERVING: &str = "allot_health_serving";
pub const ACCESS_LOG_SKIPPED: &str = "allot_access_log_skipped_total";
pub const WEBHOOK_ATTEMPTS: &str = "allot_webhook_attempts_total";

/// Latency buckets (seconds): from a cached read to a call near its deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch sizes (operations per ledger transaction), up to `batcher::MAX_BATCH`.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Most request types named in labels.
pub const MAX_REQUEST_TYPES: usize = 1000;

/// Installs the Prometheus recorder and serves its text on `addr` (any path, `/metrics` by
/// convention). Must run inside the Tokio runtime.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)?
        .install()
        .map_err(|err| anyhow::anyhow!("cannot serve metrics on {addr}: {err}"))?;
    describe();
    Ok(())
}

fn describe() {
    describe_counter!(
        RPC_REQUESTS,
        "gRPC calls answered, by method and status code"
    );
    describe_histogram!(
        RPC_DURATION,
        metrics::Unit::Seconds,
        "Time from a call's arrival to its response headers, by method"
    );
    describe_counter!(
        DEBITS,
        "Debits the ledger answered (Debit and each BatchDebit item), by request type and outcome"
    );
    describe_counter!(
        HOLDS,
        "Hold operations the ledger answered (reserve, capture, release), by request type and outcome"
    );
    describe_counter!(REFUNDS, "Refunds the ledger answered, by outcome");
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook delivery attempts made by this replica, by outcome (delivered, failed, dead)"
    );
    describe_histogram!(
        BATCH_SIZE,
        "Operations per ledger transaction (group commit)"
    );
    describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time to apply a ledger batch until its commit is durable"
    );
    describe_counter!(
        BATCHES,
        "Ledger batches, by outcome (committed, failed, panicked)"
    );
    describe_gauge!(QUEUED, "Ledger operations waiting for a batch");
    describe_counter!(
        ABANDONED,
        "Ledger operations not applied because their caller was gone (deadline passed, hung up) before their batch began"
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Database connections by pool and state (idle, in_use)"
    );
    describe_gauge!(POOL_MAX, "Most connections a database pool may open");
    describe_gauge!(
        BACKGROUND_LAG,
        metrics::Unit::Seconds,
        "Seconds since a background task (sweeper, checkpointer, prune) last completed a round"
    );
    describe_gauge!(
        HEALTH_SERVING,
        "1 while the health service reports SERVING, else 0"
    );
    describe_counter!(
        REFUSED,
        "Calls and ledger operations refused by gate: OVERLOADED (in_flight, queue_wait, queue_full) or UNAVAILABLE while the database is unreachable (database)"
    );
    describe_counter!(
        ACCESS_LOG_SKIPPED,
        "Calls not written to the access log (over --access-log-rate)"
    );
}

/// The label value of an outcome: `ok` or the error's reason.
fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.reason.as_str(),
    }
}

/// Request types that succeeded at least once (the rate card knew them).
static REQUEST_TYPES: LazyLock<RwLock<HashSet<Arc<str>>>> = LazyLock::new(RwLock::default);

/// The label for `request_type`: itself once known, else `other` (a refused request may
/// carry any string; it must not make a new series).
fn request_type_label(request_type: &str, succeeded: bool) -> String {
    let known = |types: &HashSet<Arc<str>>| types.contains(request_type);
    let read = REQUEST_TYPES.read().unwrap_or_else(|e| e.into_inner());
    if known(&read) {
        return request_type.to_string();
    }
    drop(read);
    if succeeded {
        let mut types = REQUEST_TYPES.write().unwrap_or_else(|e| e.into_inner());
        if types.len() < MAX_REQUEST_TYPES {
            types.insert(request_type.into());
            return request_type.to_string();
        }
    }
    "other".to_string()
}

/// A debit the ledger answered.
pub fn debit<T>(request_type: &str, result: &Result<T, Error>) {
    let request_type = request_type_label(request_type, result.is_ok());
    counter!(DEBITS, "request_type" => request_type, "outcome" => outcome(result)).increment(1);
}

/// A hold operation the ledger answered: `reserve` (with its request type), `capture`,
/// `release` (request type empty: the hold's type is not at hand).
pub fn hold<T>(action: &'static str, request_type: &str, result: &Result<T, Error>) {
    let request_type = if request_type.is_empty() {
        String::new()
    } else {
        request_type_label(request_type, result.is_ok())
    };
    counter!(HOLDS, "action" => action, "request_type" => request_type, "outcome" => outcome(result))
        .increment(1);
}

/// A refund the ledger answered.
pub fn refund<T>(result: &Result<T, Error>) {
    counter!(REFUNDS, "outcome" => outcome(result)).increment(1);
}

/// A ledger batch of `size` operations: committed (durable after `elapsed`), failed as a
/// whole, or panicked.
pub fn batch(size: usize, outcome: &'static str, elapsed: Option<Duration>) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
    counter!(BATCHES, "outcome" => outcome).increment(1);
    if let Some(elapsed) = elapsed {
        metrics::histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
    }
}

/// Operations dropped from a batch because their callers were gone.
pub fn abandoned(count: usize) {
    counter!(ABANDONED).increment(count as u64);
}

/// A call or operation refused by admission control (`admission`), by gate.
pub fn refused(gate: &'static str) {
    counter!(REFUSED, "gate" => gate).increment(1);
}

/// The health service's overall status.
pub fn serving(serving: bool) {
    gauge!(HEALTH_SERVING).set(if serving { 1.0 } else { 0.0 });
}

/// How often [`sample`] refreshes the gauges.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Refreshes the gauges that are read rather than counted, every [`SAMPLE_INTERVAL`], until
/// `stop`: pool connections, queued ledger operations, background lag.
pub async fn sample(
    store: crate::store::Store,
    ledger: crate::store::batcher::Ledger,
    health: crate::health::Health,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for pool in store.pools() {
            gauge!(POOL_CONNECTIONS, "pool" => pool.name, "state" => "idle").set(pool.idle as f64);
            gauge!(POOL_CONNECTIONS, "pool" => pool.name, "state" => "in_use")
                .set(pool.size.saturating_sub(pool.idle) as f64);
            gauge!(POOL_MAX, "pool" => pool.name).set(pool.max as f64);
        }
        gauge!(QUEUED).set(ledger.queued() as f64);
        for (task, lag) in health.lags() {
            gauge!(BACKGROUND_LAG, "task" => task).set(lag.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_types_are_named_once_they_succeeded() {
        assert_eq!(request_type_label("metrics-test-unknown", false), "other");
        assert_eq!(
            request_type_label("metrics-test-known", true),
            "metrics-test-known"
        );
        assert_eq!(
            request_type_label("metrics-test-known", false),
            "metrics-test-known"
        );
    }
}
