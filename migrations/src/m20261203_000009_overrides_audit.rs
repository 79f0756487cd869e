//! Contract prices per account: `account_overrides` holds effective-dated prices of one
//! request type for an account and its sub-accounts, used by pricing ahead of the rate card
//! (`store/overrides.rs`); a record with `cleared` set ends the account's override from its
//! effective time. Ledger entries name the override that priced them (`override_id`).
//!
//! `audit_events`: who changed prices or balances by hand, when, and the state before and
//! after (rate card publishes, override changes, grant voids, adjustments), written in the
//! transaction of the change (`store/audit.rs`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AccountOverrides {
    Table,
    Id,
    AccountId,
    RequestType,
    Rate,
    Cleared,
    EffectiveTime,
    ExpireTime,
    Note,
    Actor,
    CreateTime,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Time,
    Actor,
    Action,
    Resource,
    AccountId,
    Before,
    After,
    RequestId,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    OverrideId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let json = if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            json_binary(AccountOverrides::Rate)
        } else {
            text(AccountOverrides::Rate)
        };
        manager
            .create_table(
                Table::create()
                    .table(AccountOverrides::Table)
                    .col(string_len(AccountOverrides::Id, 64).primary_key())
                    .col(string_len(AccountOverrides::AccountId, 64))
                    .col(text(AccountOverrides::RequestType))
                    .col(json)
                    .col(boolean(AccountOverrides::Cleared))
                    .col(big_integer(AccountOverrides::EffectiveTime))
                    .col(big_integer_null(AccountOverrides::ExpireTime))
                    .col(text(AccountOverrides::Note))
                    .col(text(AccountOverrides::Actor))
                    .col(big_integer(AccountOverrides::CreateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("account_overrides_account")
                    .table(AccountOverrides::Table)
                    .col(AccountOverrides::AccountId)
                    .col(AccountOverrides::RequestType)
                    .col(AccountOverrides::EffectiveTime)
                    .to_owned(),
            )
            .await?;
        let (before, after) = if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            (
                json_binary_null(AuditEvents::Before),
                json_binary_null(AuditEvents::After),
            )
        } else {
            (
                text_null(AuditEvents::Before),
                text_null(AuditEvents::After),
            )
        };
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(string_len(AuditEvents::Id, 64).primary_key())
                    .col(big_integer(AuditEvents::Time))
                    .col(text(AuditEvents::Actor))
                    .col(string_len(AuditEvents::Action, 64))
                    .col(text(AuditEvents::Resource))
                    .col(string_len_null(AuditEvents::AccountId, 64))
                    .col(before)
                    .col(after)
                    .col(text(AuditEvents::RequestId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_account")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::AccountId)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Transactions::Table)
                    .add_column(string_len_null(Transactions::OverrideId, 64))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Transactions::Table)
                    .drop_column(Transactions::OverrideId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AccountOverrides::Table).to_owned())
            .await
    }
}
