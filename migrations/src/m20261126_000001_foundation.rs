//! Accounts, wallets, grants, rate cards, the ledger and the idempotency record.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    ExternalId,
    DisplayName,
    ParentId,
    Ancestry,
    Depth,
    State,
    Labels,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Wallets {
    Table,
    Id,
    AccountId,
    Unit,
    OverdraftLimit,
    Debt,
    Reserved,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    Id,
    WalletId,
    Kind,
    Amount,
    Remaining,
    Priority,
    EffectiveTime,
    ExpireTime,
    UnitPrice,
    Currency,
    ContractRef,
    Voided,
    CreateTime,
}

#[derive(DeriveIden)]
enum RateCards {
    Table,
    Version,
    State,
    Etag,
    EffectiveTime,
    Rates,
    Notes,
    CreateTime,
    PublishTime,
}

#[derive(DeriveIden)]
enum RateCardHead {
    Table,
    Id,
    Generation,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    Seq,
    Id,
    Kind,
    WalletId,
    AccountId,
    Units,
    BalanceAfter,
    RequestType,
    Quantities,
    RateCardVersion,
    RequestId,
    Actor,
    Metadata,
    Burns,
    ProviderCost,
    GrantId,
    CreateTime,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Scope,
    RequestId,
    Method,
    Fingerprint,
    Response,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(string_len(Accounts::Id, 64).primary_key())
                    .col(string_len_uniq(Accounts::ExternalId, 128))
                    .col(text(Accounts::DisplayName))
                    .col(string_len_null(Accounts::ParentId, 64))
                    .col(text(Accounts::Ancestry))
                    .col(integer(Accounts::Depth))
                    .col(string_len(Accounts::State, 16))
                    .col(text(Accounts::Labels))
                    .col(big_integer(Accounts::CreateTime))
                    .col(big_integer(Accounts::UpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("accounts_parent")
                    .table(Accounts::Table)
                    .col(Accounts::ParentId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Wallets::Table)
                    .col(string_len(Wallets::Id, 64).primary_key())
                    .col(string_len(Wallets::AccountId, 64))
                    .col(string_len(Wallets::Unit, 64))
                    .col(big_integer(Wallets::OverdraftLimit))
                    .col(big_integer(Wallets::Debt))
                    .col(big_integer(Wallets::Reserved))
                    .col(big_integer(Wallets::CreateTime))
                    .col(big_integer(Wallets::UpdateTime))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Wallets::Table, Wallets::AccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("wallets_account_unit")
                    .table(Wallets::Table)
                    .col(Wallets::AccountId)
                    .col(Wallets::Unit)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Grants::Table)
                    .col(string_len(Grants::Id, 64).primary_key())
                    .col(string_len(Grants::WalletId, 64))
                    .col(string_len(Grants::Kind, 16))
                    .col(big_integer(Grants::Amount))
                    .col(big_integer(Grants::Remaining))
                    .col(integer(Grants::Priority))
                    .col(big_integer(Grants::EffectiveTime))
                    .col(big_integer_null(Grants::ExpireTime))
                    .col(string_len(Grants::UnitPrice, 40))
                    .col(string_len(Grants::Currency, 8))
                    .col(text(Grants::ContractRef))
                    .col(boolean(Grants::Voided))
                    .col(big_integer(Grants::CreateTime))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Grants::Table, Grants::WalletId)
                            .to(Wallets::Table, Wallets::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("grants_wallet")
                    .table(Grants::Table)
                    .col(Grants::WalletId)
                    .col(Grants::CreateTime)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RateCards::Table)
                    .col(big_pk_auto(RateCards::Version))
                    .col(string_len(RateCards::State, 16))
                    .col(string_len(RateCards::Etag, 64))
                    .col(big_integer_null(RateCards::EffectiveTime))
                    .col(text(RateCards::Rates))
                    .col(text(RateCards::Notes))
                    .col(big_integer(RateCards::CreateTime))
                    .col(big_integer_null(RateCards::PublishTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("rate_cards_in_force")
                    .table(RateCards::Table)
                    .col(RateCards::State)
                    .col(RateCards::EffectiveTime)
                    .to_owned(),
            )
            .await?;

        // One row: debits read it FOR SHARE and publishing locks it FOR UPDATE, so a debit
        // always prices with the card in force when it commits, however many replicas run.
        manager
            .create_table(
                Table::create()
                    .table(RateCardHead::Table)
                    .col(integer(RateCardHead::Id).primary_key())
                    .col(big_integer(RateCardHead::Generation))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RateCardHead::Table)
                    .columns([RateCardHead::Id, RateCardHead::Generation])
                    .values_panic([1.into(), 0.into()])
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Transactions::Table)
                    .col(big_pk_auto(Transactions::Seq))
                    .col(string_len_uniq(Transactions::Id, 64))
                    .col(string_len(Transactions::Kind, 16))
                    .col(string_len(Transactions::WalletId, 64))
                    .col(string_len(Transactions::AccountId, 64))
                    .col(big_integer(Transactions::Units))
                    .col(big_integer(Transactions::BalanceAfter))
                    .col(text(Transactions::RequestType))
                    .col(text(Transactions::Quantities))
                    .col(big_integer_null(Transactions::RateCardVersion))
                    .col(text(Transactions::RequestId))
                    .col(text(Transactions::Actor))
                    .col(text(Transactions::Metadata))
                    .col(text(Transactions::Burns))
                    .col(text(Transactions::ProviderCost))
                    .col(string_len_null(Transactions::GrantId, 64))
                    .col(big_integer(Transactions::CreateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("transactions_wallet_seq")
                    .table(Transactions::Table)
                    .col(Transactions::WalletId)
                    .col(Transactions::Seq)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(string_len(IdempotencyKeys::Scope, 80))
                    .col(string_len(IdempotencyKeys::RequestId, 128))
                    .col(string_len(IdempotencyKeys::Method, 64))
                    .col(string_len(IdempotencyKeys::Fingerprint, 64))
                    .col(blob(IdempotencyKeys::Response))
                    .col(big_integer(IdempotencyKeys::CreateTime))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_keys_age")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreateTime)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Transactions::Table.into_iden(),
            RateCardHead::Table.into_iden(),
            RateCards::Table.into_iden(),
            Grants::Table.into_iden(),
            Wallets::Table.into_iden(),
            Accounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
