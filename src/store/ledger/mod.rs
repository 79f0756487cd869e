//! The ledger: a batch of operations applied in one database transaction (group commit).
//!
//! - `ops.rs` — the operation language (`Op`) and what each operation did (`Outcome`);
//! - `load.rs` — taking the batch's locks and reading its state under them;
//! - `eval.rs` — evaluation, a pure function of (state, operations, now, prices) that uses
//!   the money rules in `domain` and turns their movements into hash-chained entries;
//! - `write.rs` — the rows a batch writes (`effects`, pure) and the writer per database;
//! - `rows.rs` — stored rows ↔ domain values;
//! - `reads.rs` — reads outside batches (balances, statements' pending entries, lists).
//!
//! One attempt, in this order (the order is what makes it safe with several replicas):
//! 1. lock the rate-card head FOR SHARE; resolve every operation's wallet, then lock all
//!    wallets `ORDER BY id FOR UPDATE` and load their grants, open holds and schedules;
//!    read what was refunded already, account states, then "now" and the card in force;
//! 2. bring every wallet up to "now" (`WalletState::advance`: grants becoming active or
//!    expiring, holds expiring, schedule periods starting), recording each as an entry;
//! 3. load the idempotency records of every `request_id` in the batch;
//! 4. evaluate each operation in arrival order — a rejected operation changes nothing, the
//!    others go on; a request answered before replays its stored answer;
//! 5. write what changed (grants, holds, schedules, wallets), the ledger entries and the
//!    idempotency records; if another replica committed one of the keys first, roll back
//!    and retry the batch.
//!
//! Every operation gets exactly the outcome it would get alone.

mod eval;
mod load;
mod ops;
mod reads;
mod rows;
mod write;

pub use ops::{
    AdjustOp, CaptureOp, DebitOp, Encode, GrantOp, Op, Outcome, RefundOp, ReleaseOp, ReserveOp,
    ScheduleOp, VoidOp, WalletChanges, WalletUpdateOp,
};
pub use reads::{
    balance, due_wallets, find_grant, find_reservation, find_transaction, list_grants,
    list_schedules, list_transactions, pending_entries, wallet_balance, wallet_states,
};
pub use rows::{domain_schedule, lot};

/// The evaluator's fuzzing harness (`allot::fuzzing::evaluate`).
#[cfg(any(test, fuzzing))]
pub(crate) use eval::fuzz::evaluate as fuzz_evaluate;

use super::{Store, is_postgres, log_sync::Durable};
use crate::error::{Error, Result};
use write::Writer;

/// The actor recorded on entries the ledger writes by itself (expiry, schedules).
pub const SYSTEM_ACTOR: &str = "system";

/// Applies `ops` in one transaction, retrying the whole batch on write conflicts. The outer
/// `Err` is for failures that hit the whole batch (database unreachable). The outcomes may be
/// sent once the returned [`Durable`] has been waited for; `encode` gives the response each
/// idempotency record stores.
pub async fn apply(
    store: &Store,
    ops: &[Op],
    encode: Encode,
) -> Result<(Vec<Result<Outcome>>, Durable)> {
    const ATTEMPTS: usize = 5;
    let mut last = Error::aborted("ledger batch kept conflicting");
    for attempt in 0..ATTEMPTS {
        match apply_once(store, ops, encode).await {
            Ok(Some(applied)) => return Ok(applied),
            Ok(None) => {
                last = Error::aborted("another writer committed a request_id of this batch");
            }
            Err(err) if err.is_retryable() => last = err,
            Err(err) => return Err(err),
        }
        tokio::time::sleep(std::time::Duration::from_millis(2 << attempt)).await;
    }
    Err(last)
}

/// One attempt. `Ok(None)`: an idempotency key raced with another replica; retry.
async fn apply_once(
    store: &Store,
    ops: &[Op],
    encode: Encode,
) -> Result<Option<(Vec<Result<Outcome>>, Durable)>> {
    let write = store.begin_write().await?;
    let mut batch = load::lock_and_load(store, &write.tx, ops).await?;
    let evaluated = batch.evaluate_all(ops, encode);
    let effects = write::effects(&batch, evaluated.records);
    let written = if is_postgres(&write.tx) {
        write::Postgres::write(&write.tx, &effects).await?
    } else {
        write::Sqlite::write(&write.tx, &effects).await?
    };
    if !written {
        write.tx.rollback().await?;
        return Ok(None);
    }
    // If the commit fails the cache is left as it was: its entries carry the versions from
    // before this batch, which match the database only if the batch did not commit.
    // Watchers of this process learn which wallets have new events (nobody watching: no
    // list to make on the debit path).
    let mut announced = Vec::new();
    if store.events.watched() {
        announced.extend(effects.events.iter().map(|e| e.wallet_id.clone()));
        announced.dedup();
    }
    let durable = write
        .commit_pending()
        .await?
        .announce(&store.events, announced);
    for (id, version, rows) in effects.cache {
        store.wallets.put(&id, version, rows);
    }
    Ok(Some((evaluated.outcomes, durable)))
}
