//! Group commit: ledger operations from concurrent requests queue here and one worker applies
//! whatever has queued as one batch (`ledger::apply`), one transaction per batch. There is no
//! linger: a lone request is applied at once, and while a batch commits the next one fills up,
//! so batch size follows load. A reply is sent only after its batch has committed.

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    Store,
    ledger::{self, Op, Outcome},
};
use crate::error::{Error, Result};

/// The most operations applied in one transaction.
pub const MAX_BATCH: usize = 512;
const QUEUE_DEPTH: usize = 8192;

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// Handle for submitting operations; cheap to clone. The worker stops once every handle is
/// dropped and the queue is drained.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::Sender<Job>,
}

/// The running worker; [`Worker::shutdown`] stops it after the queue drains.
pub struct Worker {
    handle: JoinHandle<()>,
    close: oneshot::Sender<()>,
}

impl Worker {
    /// Refuses new operations (UNAVAILABLE), applies those already queued, and waits.
    pub async fn shutdown(self) {
        let _ = self.close.send(());
        let _ = self.handle.await;
    }
}

impl Ledger {
    pub fn start(store: Store) -> (Ledger, Worker) {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let (close, closed) = oneshot::channel();
        let handle = tokio::spawn(run(store, jobs, closed));
        (Ledger { queue }, Worker { handle, close })
    }

    /// Applies `op` (in some batch) and returns its own outcome.
    pub async fn submit(&self, op: Op) -> Result<Outcome> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Job { op, reply })
            .await
            .map_err(|_| Error::unavailable("the ledger is shutting down"))?;
        outcome
            .await
            .map_err(|_| Error::unavailable("the ledger stopped before answering"))?
    }
}

async fn run(store: Store, mut jobs: mpsc::Receiver<Job>, mut closed: oneshot::Receiver<()>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            n = jobs.recv_many(&mut batch, MAX_BATCH) => n,
            _ = &mut closed, if !jobs.is_closed() => {
                // Stop taking new work; what is queued is still applied below.
                jobs.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let (ops, replies): (Vec<Op>, Vec<_>) =
            batch.drain(..).map(|job| (job.op, job.reply)).unzip();
        match ledger::apply(&store, &ops).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, batch = ops.len(), "ledger batch failed");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
