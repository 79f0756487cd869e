//! `transactions_ref` indexes only entries that have a `ref_id` (holds' entries and refunds):
//! a debit — most entries — has none, and each one was still an index insertion on the hot
//! path. Lookups by `ref_id` (`=` / `IN`) imply `ref_id IS NOT NULL`, so both SQLite and
//! PostgreSQL still use the index for them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

// One call each way: the statements must run on one connection (on SQLite a pooled
// connection that did not drop the index would still see it, and refuse to create it).

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"DROP INDEX "transactions_ref";
                CREATE INDEX "transactions_ref" ON "transactions" ("ref_id") WHERE "ref_id" IS NOT NULL"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"DROP INDEX "transactions_ref";
                CREATE INDEX "transactions_ref" ON "transactions" ("ref_id")"#,
            )
            .await?;
        Ok(())
    }
}
