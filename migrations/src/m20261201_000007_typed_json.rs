//! JSON columns become `jsonb` on PostgreSQL: account labels, wallet thresholds, rate card
//! rates, entry quantities, metadata and burns, hold quantities. The database then refuses
//! text that is not JSON, and the service reads each column as its Rust type
//! (`store::columns`), so a value of the wrong shape is an error, never a default.
//!
//! The conversion rewrites the five tables (PostgreSQL takes an exclusive lock on each while
//! it does). It fails, and changes nothing, if a stored value is not JSON: `allot verify`
//! names such rows. SQLite keeps the text it has (its columns take any value), so only
//! PostgreSQL changes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (table, column, default) of every JSON column.
const COLUMNS: [(&str, &str, Option<&str>); 7] = [
    ("accounts", "labels", None),
    ("wallets", "low_balance_thresholds", Some("'[]'")),
    ("rate_cards", "rates", None),
    ("transactions", "quantities", None),
    ("transactions", "metadata", None),
    ("transactions", "burns", None),
    ("reservations", "quantities", None),
];

fn alter(to: &str) -> String {
    COLUMNS
        .iter()
        .map(|(table, column, default)| {
            let mut sql = String::new();
            if default.is_some() {
                sql += &format!(r#"ALTER TABLE "{table}" ALTER COLUMN "{column}" DROP DEFAULT; "#);
            }
            sql += &format!(
                r#"ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {to} USING "{column}"::{to}; "#
            );
            if let Some(default) = default {
                sql += &format!(
                    r#"ALTER TABLE "{table}" ALTER COLUMN "{column}" SET DEFAULT {default}::{to}; "#
                );
            }
            sql
        })
        .collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, &alter("jsonb")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, &alter("text")).await
    }
}
