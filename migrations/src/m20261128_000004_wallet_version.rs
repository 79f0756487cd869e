//! A per-wallet version, bumped by every ledger batch that writes anything of the wallet
//! (its row, grants, holds, schedules or entries). A batch reads the wallet row under its
//! lock; when the version matches what the process cached after its last write, the wallet's
//! grants, holds and schedules are taken from memory instead of being read again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Wallets {
    Table,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .add_column(big_integer(Wallets::Version).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .drop_column(Wallets::Version)
                    .to_owned(),
            )
            .await
    }
}
