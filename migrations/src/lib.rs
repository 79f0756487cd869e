//! allot's schema migrations (sea-orm-migration). Run on `allot serve` start and by
//! `allot migrate`. Amounts are integer micro-units, times integer microseconds since the Unix
//! epoch, so SQLite and PostgreSQL store exactly the same values.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_foundation;
mod m20261127_000002_lifecycle;
mod m20261127_000003_entry_order;
mod m20261128_000004_wallet_version;
mod m20261129_000005_partial_ref_index;
mod m20261130_000006_scope_width;
mod m20261201_000007_typed_json;
mod m20261202_000008_usage_rollup;
mod m20261203_000009_overrides_audit;
mod m20261204_000010_entry_indexes;
mod m20261205_000011_events;
mod m20261206_000012_webhooks;
mod m20261207_000013_grant_expiry_notice;

pub use m20261204_000010_entry_indexes::GRANT_EVENT_KINDS;

pub struct Migrator;

/// Runs `sql` on PostgreSQL only: for changes SQLite does not need (it enforces no declared
/// lengths and stores any value in any column).
async fn on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_foundation::Migration),
            Box::new(m20261127_000002_lifecycle::Migration),
            Box::new(m20261127_000003_entry_order::Migration),
            Box::new(m20261128_000004_wallet_version::Migration),
            Box::new(m20261129_000005_partial_ref_index::Migration),
            Box::new(m20261130_000006_scope_width::Migration),
            Box::new(m20261201_000007_typed_json::Migration),
            Box::new(m20261202_000008_usage_rollup::Migration),
            Box::new(m20261203_000009_overrides_audit::Migration),
            Box::new(m20261204_000010_entry_indexes::Migration),
            Box::new(m20261205_000011_events::Migration),
            Box::new(m20261206_000012_webhooks::Migration),
            Box::new(m20261207_000013_grant_expiry_notice::Migration),
        ]
    }
}
