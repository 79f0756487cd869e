//! SQLite only: copies the write-ahead log back into the database file from a background
//! task, off the writer's path. Left to SQLite, the connection whose commit pushes the log
//! past `wal_autocheckpoint` pages runs the checkpoint inside that commit — on the one writer
//! every batch waits for (7% of its time in a spread benchmark, docs/BENCHMARKS.md). Here a
//! pooled read connection runs a PASSIVE checkpoint every interval instead (it never blocks
//! the writer or readers), and the writer keeps a much higher automatic threshold
//! (`WRITER_AUTOCHECKPOINT_PAGES`) only as a backstop should this task fall behind.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::health::Health;

/// The checkpointer's name in health reports.
pub const TASK: &str = "checkpointer";

/// How often the log is checkpointed.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The writer's own automatic checkpoint threshold, in pages (SQLite's default is 1,000).
pub const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Checkpoints every [`INTERVAL`] until `stop` is cancelled. Does nothing on PostgreSQL.
pub async fn run(store: Store, health: Health, stop: CancellationToken) {
    if store.is_postgres() {
        return;
    }
    health.task_started(TASK);
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(err) = checkpoint(&store).await {
                    tracing::warn!(error = %err, "WAL checkpoint failed; will retry");
                } else {
                    health.task_ok(TASK);
                    health.round_done(TASK);
                }
            }
        }
    }
}

/// One PASSIVE checkpoint: copies every frame no reader still needs.
async fn checkpoint(store: &Store) -> Result<(), sea_orm::DbErr> {
    store
        .connection()
        .execute_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA wal_checkpoint(PASSIVE)",
        ))
        .await?;
    Ok(())
}
