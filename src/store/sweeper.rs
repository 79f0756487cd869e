//! The background sweeper: finds wallets with something due (grants becoming active or
//! expiring, holds expiring, schedule periods starting — `wallets.next_due_time`) and sends
//! each a `Sweep` through the ledger, which records what fell due. Every replica may run one:
//! sweeps lock the wallet like any other batch and are idempotent, so two replicas sweeping
//! the same wallet write its entries once.
//!
//! It also deletes idempotency records and balance events older than their retention (at
//! most once a minute).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{
    Store,
    batcher::Ledger,
    events, idempotency,
    ledger::{self, Op},
};
use crate::{error::Result, health::Health};

/// Wallets swept per round.
const ROUND: u64 = 256;

/// Sweeps every wallet that is due now; returns how many were swept.
pub async fn sweep_once(store: &Store, ledger: &Ledger) -> Result<usize> {
    let mut swept = 0;
    loop {
        let now = store.clock.now_micros();
        let due = ledger::due_wallets(store.connection(), now, ROUND).await?;
        if due.is_empty() {
            return Ok(swept);
        }
        let count = due.len();
        let results = futures::future::join_all(
            due.into_iter()
                .map(|wallet_id| ledger.submit_unrefused(Op::Sweep { wallet_id })),
        )
        .await;
        for result in results {
            result?;
        }
        swept += count;
        if (count as u64) < ROUND {
            return Ok(swept);
        }
    }
}

/// How often the sweeper prunes idempotency records.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How long what the ledger keeps only for a while is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Idempotency records (`serve --idempotency-retention`).
    pub idempotency: Duration,
    /// Balance events (`serve --event-retention`).
    pub events: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            idempotency: idempotency::DEFAULT_RETENTION,
            events: events::DEFAULT_RETENTION,
        }
    }
}

/// Deletes idempotency records and events older than their retention; returns how many.
pub async fn prune(store: &Store, retention: Retention) -> Result<u64> {
    let before = |kept: Duration| {
        let kept = i64::try_from(kept.as_micros()).unwrap_or(i64::MAX);
        store.clock.now_micros().saturating_sub(kept)
    };
    let records = idempotency::prune(store, before(retention.idempotency)).await?;
    if records > 0 {
        tracing::info!(
            deleted = records,
            "pruned idempotency records past their retention"
        );
    }
    let old_events = events::prune(store, before(retention.events)).await?;
    if old_events > 0 {
        tracing::info!(
            deleted = old_events,
            "pruned balance events past their retention"
        );
    }
    let deliveries = super::webhooks::prune(store, before(retention.events)).await?;
    if deliveries > 0 {
        tracing::info!(
            deleted = deliveries,
            "pruned webhook deliveries past the event retention"
        );
    }
    Ok(records + old_events + deliveries)
}

/// The sweeper's name in health reports.
pub const TASK: &str = "sweeper";
/// The pruning of idempotency records and events, in the lag metric.
pub const PRUNE: &str = "prune";

/// Sweeps every `interval` (and prunes idempotency records and events past their
/// `retention` every minute) until `stop` is cancelled. Each round that completes marks the task up in `health`.
pub async fn run(
    store: Store,
    ledger: Ledger,
    health: Health,
    interval: Duration,
    retention: Retention,
    stop: CancellationToken,
) {
    health.task_started(TASK);
    health.task_started(PRUNE);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {
                match sweep_once(&store, &ledger).await {
                    Ok(_) => health.round_done(TASK),
                    Err(err) => tracing::warn!(error = %err, "sweep failed; will retry"),
                }
                if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    pruned_at = Some(tokio::time::Instant::now());
                    match prune(&store, retention).await {
                        Ok(_) => health.round_done(PRUNE),
                        Err(err) => tracing::warn!(
                            error = %err,
                            "pruning idempotency records and events failed; will retry"
                        ),
                    }
                }
                health.task_ok(TASK);
            }
        }
    }
}
