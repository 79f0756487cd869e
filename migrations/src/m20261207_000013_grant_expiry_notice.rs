//! `grant.expiring` (issue 15): each wallet says how many days before an active grant expires
//! it is told (`wallets.grant_expiry_notice_days`, 7 by default, 0 for never), and each grant
//! remembers that it was told (`grants.expiry_noticed`), so the notice is sent once.
//!
//! The sweeper finds wallets by `next_due_time`, which was worked out before notices existed:
//! wallets with an active grant that expires are made due now, so the first sweep works the
//! time out again (and sends what is due already).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Wallets {
    Table,
    GrantExpiryNoticeDays,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    ExpiryNoticed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .add_column(integer(Wallets::GrantExpiryNoticeDays).default(7))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .add_column(boolean(Grants::ExpiryNoticed).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE wallets SET next_due_time = 0 WHERE id IN (SELECT wallet_id FROM grants \
                 WHERE status = 'ACTIVE' AND expire_time IS NOT NULL)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .drop_column(Grants::ExpiryNoticed)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .drop_column(Wallets::GrantExpiryNoticeDays)
                    .to_owned(),
            )
            .await
    }
}
