//! Admission control: when allot cannot keep up it says "no" at once instead of queueing
//! without bound (the latency of every call, admitted or not, would grow to the client's
//! deadline, and memory with it). A refused call is answered `RESOURCE_EXHAUSTED`, reason
//! `OVERLOADED`, with a `google.rpc.RetryInfo` delay (and `retry_after_ms` in the
//! `ErrorInfo`); nothing of it was applied, so a retry with the same `request_id` after the
//! delay is always safe.
//!
//! Three gates, from the outside in:
//! - **Per connection**: HTTP/2 `max_concurrent_streams` ([`Limits::max_streams_per_connection`]).
//!   A client beyond it waits in its own HTTP/2 stack, not in the server.
//! - **Calls in flight** ([`InFlightLayer`]): at most [`Limits::max_in_flight`] calls are served
//!   at once, reads included (they would otherwise queue on the database pool). Health checks
//!   are exempt, so an overloaded replica is not restarted by its probes.
//! - **The ledger queue** ([`QueueGate`], used by `store::batcher`): an operation is refused
//!   when the queue it would join is not draining in time. The rule is CoDel's (Nichols and
//!   Jacobson, "Controlling Queue Delay"): queueing is fine while it drains, so the gate looks
//!   at how long operations actually *wait*, not how many there are. With operations queued, it
//!   refuses when the last batch left some behind and its oldest operation had waited longer
//!   than [`Limits::max_queue_wait`], or when the batch being applied has run longer than that
//!   (a slow or locked database). A full queue refuses too. The background sweeps (expiry,
//!   schedules) are never refused.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{Status, body::Body, codegen::http};

use crate::{
    error::{Error, Reason},
    store::batcher::Ledger,
    telemetry::metrics,
};

/// How much the service admits (`allot serve --max-in-flight`, `--max-queue-wait`,
/// `--max-streams-per-connection`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls served at once, over all connections (health checks not counted).
    pub max_in_flight: usize,
    /// How long a ledger operation may wait for its batch before new ones are refused.
    pub max_queue_wait: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 512,
            max_queue_wait: Duration::from_millis(50),
            max_streams_per_connection: 1024,
        }
    }
}

/// The shortest and longest retry delay a refusal suggests.
const MIN_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The retry delay suggested while the database is unreachable (the health monitor pings it
/// every second).
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);

/// The answer while the health monitor's ping of the database fails: UNAVAILABLE with a
/// retry delay. `outcome` says whether anything may have been applied. (Why the ping failed
/// is logged by the monitor, never sent: it can name hosts.)
pub fn database_unreachable(outcome: &str) -> Error {
    Error::unavailable(format!(
        "the database is unreachable; {outcome}: retry after {} ms with the same request_id",
        UNREACHABLE_RETRY.as_millis()
    ))
    .retry_after(UNREACHABLE_RETRY)
}

/// The refusal every gate answers with.
pub fn overloaded(what: &str, retry_after: Duration) -> Error {
    let retry_after = retry_after.clamp(MIN_RETRY, MAX_RETRY);
    Error::new(
        tonic::Code::ResourceExhausted,
        Reason::Overloaded,
        format!(
            "allot is overloaded ({what}); nothing was applied: retry after {} ms",
            retry_after.as_millis()
        ),
    )
    .retry_after(retry_after)
}

/// The state of one ledger queue as its worker sees it, read by submitters to decide.
pub struct QueueGate {
    max_wait: Duration,
    base: Instant,
    /// When (ns after `base`, plus one) the worker began applying its current batch; 0 while
    /// it waits for work.
    busy_since: AtomicU64,
    /// How long (ns) the oldest operation of the last batch had waited, if that batch left
    /// operations behind (a standing queue); 0 when it took everything queued.
    standing_wait: AtomicU64,
    /// How long (ns) the last batch took per operation: the drain-time estimate.
    per_op: AtomicU64,
}

impl QueueGate {
    pub fn new(max_wait: Duration) -> Self {
        QueueGate {
            max_wait,
            base: Instant::now(),
            busy_since: AtomicU64::new(0),
            standing_wait: AtomicU64::new(0),
            per_op: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether an operation may join a queue holding `queued` operations; the refusal says
    /// when to retry (the time the queue should take to drain).
    pub fn admit(&self, queued: usize) -> Result<(), Error> {
        self.check(queued)
            .inspect_err(|_| metrics::refused("queue_wait"))
    }

    /// [`QueueGate::admit`] without counting the refusal.
    pub fn check(&self, queued: usize) -> Result<(), Error> {
        if queued == 0 {
            return Ok(());
        }
        let standing = Duration::from_nanos(self.standing_wait.load(Ordering::Relaxed));
        let busy_since = self.busy_since.load(Ordering::Relaxed);
        let busy = if busy_since == 0 {
            Duration::ZERO
        } else {
            let now = self.nanos(Instant::now());
            Duration::from_nanos(now.saturating_sub(busy_since - 1))
        };
        if standing <= self.max_wait && busy <= self.max_wait {
            return Ok(());
        }
        let per_op = Duration::from_nanos(self.per_op.load(Ordering::Relaxed));
        let drain = per_op.saturating_mul(u32::try_from(queued).unwrap_or(u32::MAX));
        Err(overloaded(
            "ledger operations wait too long for their batch",
            drain.max(standing),
        ))
    }

    /// The worker took a batch whose oldest operation was queued at `oldest`; `left` are still
    /// queued.
    pub fn took(&self, oldest: Instant, left: usize) {
        let now = Instant::now();
        let waited = if left == 0 {
            0
        } else {
            u64::try_from(now.saturating_duration_since(oldest).as_nanos()).unwrap_or(u64::MAX)
        };
        self.standing_wait.store(waited, Ordering::Relaxed);
        self.busy_since
            .store(self.nanos(now).saturating_add(1), Ordering::Relaxed);
    }

    /// The worker finished applying a batch of `size` operations that took `elapsed`.
    pub fn applied(&self, size: usize, elapsed: Duration) {
        self.busy_since.store(0, Ordering::Relaxed);
        if size == 0 {
            return;
        }
        let per_op = elapsed.as_nanos() / size as u128;
        self.per_op
            .store(u64::try_from(per_op).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The tower layer in front of every call (health checks exempt): caps the calls in flight,
/// and refuses a ledger write while every ledger queue is refusing, before the call is
/// authenticated or decoded (under overload a refusal must cost next to nothing, or refusing
/// takes the CPU the admitted calls need).
#[derive(Clone)]
pub struct InFlightLayer {
    slots: Arc<Semaphore>,
    max: usize,
    ledger: Ledger,
}

impl InFlightLayer {
    /// `ledger`: its queues' gates refuse writes early, and their drain time sets the retry
    /// delay of a refusal.
    pub fn new(max_in_flight: usize, ledger: Ledger) -> Self {
        let max = max_in_flight.max(1);
        InFlightLayer {
            slots: Arc::new(Semaphore::new(max)),
            max,
            ledger,
        }
    }
}

/// The methods that submit ledger operations (the queue gate applies to them).
const LEDGER_WRITES: [&str; 11] = [
    "/allot.v1.LedgerService/Debit",
    "/allot.v1.LedgerService/BatchDebit",
    "/allot.v1.LedgerService/Reserve",
    "/allot.v1.LedgerService/CaptureReservation",
    "/allot.v1.LedgerService/ReleaseReservation",
    "/allot.v1.LedgerService/Refund",
    "/allot.v1.GrantService/CreateGrant",
    "/allot.v1.GrantService/VoidGrant",
    "/allot.v1.GrantService/AdjustBalance",
    "/allot.v1.GrantService/CreateAllotmentSchedule",
    "/allot.v1.AccountService/UpdateWallet",
];

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    layer: InFlightLayer,
}

/// Calls that never count against the cap: health checks (an overloaded replica must still
/// answer its probes).
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl<S> tower::Service<http::Request<Body>> for InFlight<S>
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
        let path = request.uri().path();
        if exempt(path) {
            return Box::pin(self.inner.call(request));
        }
        // The database does not answer: every API call would wait out its deadline.
        let api = path.starts_with("/allot.v1.");
        let mut unreachable = self.layer.ledger.unreachable();
        let down = *unreachable.borrow_and_update();
        let refusal = match down {
            true if api => Some(("database", database_unreachable("nothing was applied"))),
            _ if LEDGER_WRITES.contains(&path) => self
                .layer
                .ledger
                .refusing()
                .err()
                .map(|refusal| ("queue_wait", refusal)),
            _ => None,
        };
        if let Some((gate, refusal)) = refusal {
            metrics::refused(gate);
            let status: Status = refusal.into();
            return Box::pin(async move { Ok(status.into_http()) });
        }
        match self.layer.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    // A call in flight when the database stops answering is not left to wait
                    // out its deadline: it is answered UNAVAILABLE as soon as the health
                    // monitor's ping fails (its outcome is unknown; a retry with the same
                    // request_id applies it once).
                    let response = tokio::select! {
                        biased;
                        response = call => response,
                        _ = unreachable.wait_for(|down| *down), if api => {
                            metrics::refused("database");
                            let status: Status =
                                database_unreachable("the outcome is unknown").into();
                            Ok(status.into_http())
                        }
                    };
                    drop(slot);
                    response
                })
            }
            Err(_) => {
                metrics::refused("in_flight");
                // Calls in flight finish about as fast as the ledger drains.
                let retry = self.layer.drain_time();
                let status: Status = overloaded("too many calls in flight", retry).into();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

impl InFlightLayer {
    /// About how long the calls in flight take to finish: as long as the ledger takes to apply
    /// that many operations.
    fn drain_time(&self) -> Duration {
        let per_op = self
            .ledger
            .gates()
            .iter()
            .map(|gate| gate.per_op.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        Duration::from_nanos(per_op).saturating_mul(u32::try_from(self.max).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_writes_are_methods_of_the_api() {
        for path in LEDGER_WRITES {
            assert!(
                crate::api::access::ROUTES
                    .iter()
                    .any(|(route, _)| *route == path),
                "{path} is not a method"
            );
        }
    }

    #[test]
    fn a_queue_that_drains_is_admitted_and_one_that_stands_is_not() {
        // Made a second ago, so that a batch can have begun "60 ms ago" below.
        let gate = QueueGate {
            base: Instant::now() - Duration::from_secs(1),
            ..QueueGate::new(Duration::from_millis(50))
        };
        assert!(gate.check(0).is_ok());
        assert!(
            gate.check(100).is_ok(),
            "nothing applied yet: no standing queue"
        );

        // A batch left operations behind, its oldest had waited 10 ms: fine.
        let now = Instant::now();
        gate.took(now - Duration::from_millis(10), 5);
        gate.applied(100, Duration::from_millis(5));
        assert!(gate.check(5).is_ok());

        // The oldest had waited 80 ms and some were left: refused while any are queued, with
        // a retry delay of at least that standing wait.
        gate.took(now - Duration::from_millis(80), 5);
        gate.applied(100, Duration::from_millis(5));
        let refusal = gate.check(5).unwrap_err();
        assert_eq!(refusal.code, tonic::Code::ResourceExhausted);
        assert!(refusal.retry_after.unwrap() >= Duration::from_millis(80));
        assert!(gate.check(0).is_ok(), "an empty queue is always admitted");

        // A batch that took everything clears it.
        gate.took(Instant::now(), 0);
        gate.applied(1, Duration::from_millis(1));
        assert!(gate.check(5).is_ok());

        // A batch running longer than the bound (a stalled database): refused.
        gate.took(Instant::now(), 0);
        assert!(gate.check(1).is_ok(), "a batch that just began");
        let began = gate.busy_since.load(Ordering::Relaxed);
        gate.busy_since.store(began - 60_000_000, Ordering::Relaxed);
        assert!(gate.check(1).is_err());
        gate.applied(1, Duration::from_millis(60));
        assert!(gate.check(1).is_ok());
    }
}
