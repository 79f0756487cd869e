//! Group commit: ledger operations from concurrent requests queue here and one worker applies
//! whatever has queued as one batch (`ledger::apply`), one transaction per batch. There is no
//! linger: a lone request is applied at once, and while a batch commits the next one fills up,
//! so batch size follows load. A reply is sent only after its batch's commit is durable
//! (`log_sync::Durable`).
//!
//! On PostgreSQL several workers run at once (`POSTGRES_WORKERS`), so one batch's round
//! trips and commit overlap with the next batch's; each operation goes to the worker chosen
//! by its idempotency scope (the account), so duplicates of one `request_id` meet in one
//! batch and one wallet's operations usually do too. Workers that do touch the same wallet
//! are ordered by its row lock, as replicas are. SQLite has one writer, so one worker.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    Store,
    ledger::{self, Encode, Op, Outcome},
};
use crate::{
    admission::{self, QueueGate},
    error::{Error, Result},
    health::panic_message,
    telemetry::{self, metrics},
};

/// The most operations applied in one transaction.
pub const MAX_BATCH: usize = 512;
/// Batch workers on PostgreSQL (on SQLite: one). Two overlap one batch's round trips with the
/// other's work; more split the load into smaller batches that cost more CPU per debit on two
/// cores (session 5, docs/BENCHMARKS.md: 1 / 2 / 4 / 8 workers gave 7.7k / 8.2k / 7.2k /
/// 5.1k debits/s spread).
pub const POSTGRES_WORKERS: usize = 2;
const QUEUE_DEPTH: usize = 8192;

struct Job {
    op: Op,
    /// When it was queued (the gate measures how long operations wait).
    queued: Instant,
    reply: oneshot::Sender<Result<Outcome>>,
    /// The submitting call's span, linked from the batch's span (when spans are exported).
    span: Span,
}

/// Handle for submitting operations; cheap to clone. The worker stops once every handle is
/// dropped and the queue is drained.
#[derive(Clone)]
pub struct Ledger {
    /// Tells whether the database answers (`Store::unreachable`).
    store: Store,
    queues: Arc<[mpsc::Sender<Job>]>,
    /// Each queue's admission gate (`admission::QueueGate`).
    gates: Arc<[Arc<QueueGate>]>,
}

/// The running workers; [`Worker::shutdown`] stops them after their queues drain.
pub struct Worker {
    /// Cancelled by `shutdown`, or when this is dropped; each worker holds a child token.
    close: DropGuard,
    workers: TaskTracker,
}

impl Worker {
    /// Refuses new operations (UNAVAILABLE), applies those already queued, and waits.
    pub async fn shutdown(self) {
        self.close.disarm().cancel();
        self.workers.close();
        self.workers.wait().await;
    }
}

impl Ledger {
    /// Starts the workers; `encode` gives the response an operation's idempotency record
    /// stores (the API's encoding of its outcome). New operations are refused (OVERLOADED)
    /// once a queue's operations wait longer than `max_queue_wait` for their batch.
    pub fn start(store: Store, encode: Encode, max_queue_wait: Duration) -> (Ledger, Worker) {
        let count = if store.is_postgres() {
            POSTGRES_WORKERS
        } else {
            1
        };
        let mut queues = Vec::with_capacity(count);
        let mut gates = Vec::with_capacity(count);
        let (close, workers) = (CancellationToken::new(), TaskTracker::new());
        for _ in 0..count {
            let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
            let gate = Arc::new(QueueGate::new(max_queue_wait));
            workers.spawn(run(
                store.clone(),
                encode,
                jobs,
                gate.clone(),
                close.child_token(),
            ));
            queues.push(queue);
            gates.push(gate);
        }
        (
            Ledger {
                store: store.clone(),
                queues: queues.into(),
                gates: gates.into(),
            },
            Worker {
                close: close.drop_guard(),
                workers,
            },
        )
    }

    /// Operations queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.queues
            .iter()
            .map(|queue| queue.max_capacity() - queue.capacity())
            .sum()
    }

    /// The queues' admission gates (the in-flight gate's retry delay follows them).
    pub fn gates(&self) -> Arc<[Arc<QueueGate>]> {
        self.gates.clone()
    }

    /// Refuses when every queue would refuse a new operation now (the check the admission
    /// layer makes before a ledger write is even decoded); uncounted.
    pub fn refusing(&self) -> Result<(), Error> {
        let mut refusal = None;
        for (queue, gate) in self.queues.iter().zip(self.gates.iter()) {
            match gate.check(queue.max_capacity() - queue.capacity()) {
                Ok(()) => return Ok(()),
                Err(err) => refusal = Some(err),
            }
        }
        refusal.map_or(Ok(()), Err)
    }

    /// True while the health monitor's ping of the database fails.
    pub fn unreachable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.store.unreachable()
    }

    /// Applies `op` (in some batch) and returns its own outcome; refuses it at once
    /// (OVERLOADED, nothing applied) when its queue is not draining in time or is full.
    pub async fn submit(&self, op: Op) -> Result<Outcome> {
        let shard = shard(&op, self.queues.len());
        let queue = &self.queues[shard];
        self.gates[shard].admit(queue.max_capacity() - queue.capacity())?;
        self.enqueue(queue, op, false).await
    }

    /// Applies `op` however long its queue is (the background sweeps: expiry and schedules
    /// must happen, and a sweep waits rather than failing).
    pub async fn submit_unrefused(&self, op: Op) -> Result<Outcome> {
        let queue = &self.queues[shard(&op, self.queues.len())];
        self.enqueue(queue, op, true).await
    }

    async fn enqueue(&self, queue: &mpsc::Sender<Job>, op: Op, wait: bool) -> Result<Outcome> {
        let (reply, outcome) = oneshot::channel();
        let span = if telemetry::tracing_enabled() {
            Span::current()
        } else {
            Span::none()
        };
        let job = Job {
            op,
            queued: Instant::now(),
            reply,
            span,
        };
        if wait {
            queue
                .send(job)
                .await
                .map_err(|_| Error::unavailable("the ledger is shutting down"))?;
        } else {
            queue.try_send(job).map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::refused("queue_full");
                    admission::overloaded("the ledger queue is full", Duration::from_millis(100))
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Error::unavailable("the ledger is shutting down")
                }
            })?;
        }
        outcome
            .await
            .map_err(|_| Error::unavailable("the ledger stopped before answering"))?
    }
}

/// The worker for `op`: by idempotency scope (the account), else by wallet.
fn shard(op: &Op, workers: usize) -> usize {
    if workers == 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    match (op.key(), op.wallet_id()) {
        (Some(key), _) => key.scope.hash(&mut hasher),
        (None, Some(wallet)) => wallet.hash(&mut hasher),
        (None, None) => {}
    }
    (hasher.finish() % workers as u64) as usize
}

async fn run(
    store: Store,
    encode: Encode,
    mut jobs: mpsc::Receiver<Job>,
    gate: Arc<QueueGate>,
    closed: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Batches committed whose replies wait for their commit to be durable.
    let mut replying = tokio::task::JoinSet::new();
    loop {
        while replying.try_join_next().is_some() {}
        let received = tokio::select! {
            biased;
            n = jobs.recv_many(&mut batch, MAX_BATCH) => n,
            _ = closed.cancelled(), if !jobs.is_closed() => {
                // Stop taking new work; what is queued is still applied below.
                jobs.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        if let Some(first) = batch.first() {
            gate.took(first.queued, jobs.len());
        }
        // An operation whose caller is gone before its batch begins (its grpc-timeout passed,
        // or it hung up) is not applied: nobody would learn its outcome, and a retry with its
        // request_id applies it once.
        let waiting = batch.len();
        batch.retain(|job| !job.reply.is_closed());
        if batch.len() < waiting {
            metrics::abandoned(waiting - batch.len());
        }
        if batch.is_empty() {
            gate.applied(0, Duration::ZERO);
            continue;
        }
        let started = Instant::now();
        let span = commit_span(&batch);
        let (ops, replies): (Vec<Op>, Vec<_>) =
            batch.drain(..).map(|job| (job.op, job.reply)).unzip();
        let size = ops.len();
        let applied = AssertUnwindSafe(ledger::apply(&store, &ops, encode))
            .catch_unwind()
            .instrument(span.clone())
            .await;
        gate.applied(size, started.elapsed());
        match applied {
            Ok(Ok((outcomes, durable))) => {
                // Reply once the commit is durable; meanwhile the next batch goes ahead (on
                // SQLite its work overlaps this one's log sync, see `log_sync`).
                replying.spawn(
                    async move {
                        match durable.wait().await {
                            Ok(()) => {
                                metrics::batch(size, "committed", Some(started.elapsed()));
                                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                    let _ = reply.send(outcome);
                                }
                            }
                            Err(err) => {
                                metrics::batch(size, "failed", None);
                                fail(replies, &err);
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Ok(Err(err)) => {
                metrics::batch(size, "failed", None);
                tracing::warn!(error = %err, batch = ops.len(), "ledger batch failed");
                fail(replies, &err);
            }
            Err(panic) => {
                metrics::batch(size, "panicked", None);
                tracing::error!(
                    panic = %panic_message(panic.as_ref()),
                    batch = ops.len(),
                    "a ledger batch hit an internal fault; applying its operations one at a time"
                );
                one_by_one(&store, encode, ops, replies).await;
            }
        }
    }
    while replying.join_next().await.is_some() {}
}

/// Request ids a batch's span lists (the rest are counted).
const SPAN_REQUEST_IDS: usize = 16;

/// The span of one batch commit (when spans are exported): its size, the first request ids,
/// and a link to the span of every call whose operation it carries.
fn commit_span(jobs: &[Job]) -> Span {
    // Only batches that serve a traced call (a sampled one) get a span.
    if !telemetry::tracing_enabled() || jobs.iter().all(|job| job.span.is_none()) {
        return Span::none();
    }
    let ids: Vec<&str> = jobs
        .iter()
        .filter_map(|job| job.op.key().map(|key| key.request_id.as_str()))
        .collect();
    let mut listed = ids
        .iter()
        .take(SPAN_REQUEST_IDS)
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    if ids.len() > SPAN_REQUEST_IDS {
        listed.push_str(&format!(",…(+{})", ids.len() - SPAN_REQUEST_IDS));
    }
    let span = tracing::info_span!(
        "ledger.commit",
        otel.name = "ledger.commit",
        operations = jobs.len(),
        request_ids = listed,
    );
    for job in jobs {
        let context = job.span.context();
        let linked = opentelemetry::trace::TraceContextExt::span(&context)
            .span_context()
            .clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
    span
}

/// After a batch panicked (a bug): applies each of its operations in a batch of its own, so
/// the faulty one fails alone (INTERNAL, logged with its request_id) and the rest are applied
/// as they would have been.
async fn one_by_one(
    store: &Store,
    encode: Encode,
    ops: Vec<Op>,
    replies: Vec<oneshot::Sender<Result<Outcome>>>,
) {
    for (op, reply) in ops.into_iter().zip(replies) {
        let outcome =
            match AssertUnwindSafe(ledger::apply(store, std::slice::from_ref(&op), encode))
                .catch_unwind()
                .await
            {
                Ok(Ok((mut outcomes, durable))) => match durable.wait().await {
                    Ok(()) => outcomes
                        .pop()
                        .unwrap_or_else(|| Err(Error::internal("the ledger returned no outcome"))),
                    Err(err) => Err(err),
                },
                Ok(Err(err)) => Err(err),
                Err(panic) => {
                    tracing::error!(
                        panic = %panic_message(panic.as_ref()),
                        request_id = op.key().map_or("", |k| k.request_id.as_str()),
                        scope = op.key().map_or("", |k| k.scope.as_str()),
                        wallet_id = op.wallet_id().unwrap_or(""),
                        "a ledger operation hit an internal fault; it was not applied"
                    );
                    Err(Error::internal(
                        "the operation hit an internal fault and was not applied",
                    ))
                }
            };
        let _ = reply.send(outcome);
    }
}

/// Answers every operation of a batch with `err`.
fn fail(replies: Vec<oneshot::Sender<Result<Outcome>>>, err: &Error) {
    for reply in replies {
        let _ = reply.send(Err(err.clone()));
    }
}
