//! Balance events (issue 15): `events` is the transactional outbox — every event is written
//! in the transaction of the ledger change that causes it, so none is lost and none is
//! invented. Each wallet numbers its events 1, 2, 3 … without gaps (`sequence`); the wallet's
//! last number is `wallets.event_seq`, moved on under the wallet's lock by the batch that
//! writes them. `(wallet_id, sequence)` is unique: watchers read a wallet's events after a
//! number through it. Ids are `evt_` + UUIDv7 (time-ordered), so pruning old events walks
//! the primary key.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    WalletId,
    AccountId,
    Sequence,
    EventType,
    Time,
    Posted,
    Reserved,
    Available,
    OverdraftLimit,
    Data,
}

#[derive(DeriveIden)]
enum Wallets {
    Table,
    EventSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let data = if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            json_binary(Events::Data)
        } else {
            text(Events::Data)
        };
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(string_len(Events::Id, 64).primary_key())
                    .col(string_len(Events::WalletId, 64))
                    .col(string_len(Events::AccountId, 64))
                    .col(big_integer(Events::Sequence))
                    .col(string_len(Events::EventType, 64))
                    .col(big_integer(Events::Time))
                    .col(big_integer(Events::Posted))
                    .col(big_integer(Events::Reserved))
                    .col(big_integer(Events::Available))
                    .col(big_integer(Events::OverdraftLimit))
                    .col(data)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_wallet_sequence")
                    .table(Events::Table)
                    .col(Events::WalletId)
                    .col(Events::Sequence)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .add_column(big_integer(Wallets::EventSeq).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Wallets::Table)
                    .drop_column(Wallets::EventSeq)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
