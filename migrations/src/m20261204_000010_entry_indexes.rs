//! One index for a wallet's entries, in place of two: `transactions_wallet_time_seq`
//! `(wallet_id, create_time, seq)` replaces `transactions_wallet_seq` `(wallet_id, seq)` and
//! `transactions_wallet_time` `(wallet_id, create_time)`. A wallet's entries are never dated
//! before the one written before them (the ledger dates each entry at least at the wallet's
//! `last_entry_time`, since migration 3, and `allot verify` checks it), so within a wallet
//! `(create_time, seq)` order is `seq` order: the one index serves the paged history, the
//! statements and verification (in that order) and the time windows of the reports. Every
//! debit wrote both indexes; now it writes one.
//!
//! And `transactions_grant_events`: a wallet's expiry, void and adjustment entries by time,
//! partial (debits — most entries — are not in it, so it costs the debit path nothing). A
//! budget reads those of its term; it read every entry of the term before. Queries name the
//! kinds with [`GRANT_EVENT_KINDS`]'s literal text, which is what lets SQLite use the index.

use sea_orm_migration::prelude::*;

/// The partial index's condition, written exactly so in the queries that use it.
pub const GRANT_EVENT_KINDS: &str = r#""kind" IN ('EXPIRE', 'VOID', 'ADJUST')"#;

#[derive(DeriveMigrationName)]
pub struct Migration;

// One call each way: the statements must run on one connection (as in migration 5).

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                r#"CREATE INDEX "transactions_wallet_time_seq" ON "transactions" ("wallet_id", "create_time", "seq");
                CREATE INDEX "transactions_grant_events" ON "transactions" ("wallet_id", "create_time") WHERE {GRANT_EVENT_KINDS};
                DROP INDEX "transactions_wallet_seq";
                DROP INDEX "transactions_wallet_time""#
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"CREATE INDEX "transactions_wallet_seq" ON "transactions" ("wallet_id", "seq");
                CREATE INDEX "transactions_wallet_time" ON "transactions" ("wallet_id", "create_time");
                DROP INDEX "transactions_grant_events";
                DROP INDEX "transactions_wallet_time_seq""#,
            )
            .await?;
        Ok(())
    }
}
