//! The background sweeper: finds wallets with something due (grants becoming active or
//! expiring, holds expiring, schedule periods starting — `wallets.next_due_time`) and sends
//! each a `Sweep` through the ledger, which records what fell due. Every replica may run one:
//! sweeps lock the wallet like any other batch and are idempotent, so two replicas sweeping
//! the same wallet write its entries once.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{
    Store,
    batcher::Ledger,
    ledger::{self, Op},
};
use crate::error::Result;

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
                .map(|wallet_id| ledger.submit(Op::Sweep { wallet_id })),
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

/// Sweeps every `interval` until `stop` fires.
pub async fn run(
    store: Store,
    ledger: Ledger,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {
                if let Err(err) = sweep_once(&store, &ledger).await {
                    tracing::warn!(error = %err, "sweep failed; will retry");
                }
            }
        }
    }
}
