//! The time of each wallet's latest ledger entry, so new entries are never dated before it
//! (entries of a wallet stay in time order, which statements rely on).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Wallets {
    Table,
    LastEntryTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .add_column(big_integer(Wallets::LastEntryTime).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE wallets SET last_entry_time = COALESCE((SELECT MAX(create_time) \
                 FROM transactions t WHERE t.wallet_id = wallets.id), 0)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .drop_column(Wallets::LastEntryTime)
                    .to_owned(),
            )
            .await
    }
}
