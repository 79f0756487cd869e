//! Webhooks (issue 15): endpoints that receive balance events over HTTP, signed as the
//! Standard Webhooks specification has it.
//!
//! * `webhook_endpoints` — a URL, the account it covers (with its sub-accounts; `''`:
//!   every account, admins only), the event types it wants (`''`: all), its signing
//!   secret and, for a while after a rotation, the previous one.
//! * `webhook_fanout` — per wallet, the last event number handed to the endpoints: events
//!   after it still need deliveries. Written by the dispatcher, never by ledger batches, so
//!   a debit pays nothing for webhooks.
//! * `webhook_deliveries` — one event for one endpoint: pending until delivered or
//!   dead-lettered; `(endpoint_id, event_id)` is unique, so fanning out twice adds nothing.
//!   A wallet's deliveries to one endpoint are sent in `sequence` order.
//! * `webhook_attempts` — every attempt of a delivery, with what the endpoint answered.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    AccountId,
    Url,
    EventTypes,
    Enabled,
    Secret,
    PreviousSecret,
    PreviousSecretExpireTime,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum WebhookFanout {
    Table,
    WalletId,
    Sequence,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventId,
    WalletId,
    Sequence,
    EventType,
    State,
    Attempts,
    RetryBase,
    NextAttemptTime,
    CreateTime,
    DoneTime,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    DeliveryId,
    Attempt,
    Time,
    DurationMicros,
    StatusCode,
    Error,
    Response,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(string_len(WebhookEndpoints::Id, 64).primary_key())
                    .col(string_len(WebhookEndpoints::AccountId, 64))
                    .col(string_len(WebhookEndpoints::Url, 2048))
                    .col(text(WebhookEndpoints::EventTypes))
                    .col(boolean(WebhookEndpoints::Enabled))
                    .col(string_len(WebhookEndpoints::Secret, 128))
                    .col(string_len_null(WebhookEndpoints::PreviousSecret, 128))
                    .col(big_integer_null(WebhookEndpoints::PreviousSecretExpireTime))
                    .col(big_integer(WebhookEndpoints::CreateTime))
                    .col(big_integer(WebhookEndpoints::UpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_endpoints_account")
                    .table(WebhookEndpoints::Table)
                    .col(WebhookEndpoints::AccountId)
                    .col(WebhookEndpoints::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookFanout::Table)
                    .col(string_len(WebhookFanout::WalletId, 64).primary_key())
                    .col(big_integer(WebhookFanout::Sequence))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(string_len(WebhookDeliveries::Id, 64).primary_key())
                    .col(string_len(WebhookDeliveries::EndpointId, 64))
                    .col(string_len(WebhookDeliveries::EventId, 64))
                    .col(string_len(WebhookDeliveries::WalletId, 64))
                    .col(big_integer(WebhookDeliveries::Sequence))
                    .col(string_len(WebhookDeliveries::EventType, 64))
                    .col(string_len(WebhookDeliveries::State, 16))
                    .col(integer(WebhookDeliveries::Attempts))
                    .col(integer(WebhookDeliveries::RetryBase))
                    .col(big_integer(WebhookDeliveries::NextAttemptTime))
                    .col(big_integer(WebhookDeliveries::CreateTime))
                    .col(big_integer_null(WebhookDeliveries::DoneTime))
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            (
                "webhook_deliveries_event",
                vec![WebhookDeliveries::EndpointId, WebhookDeliveries::EventId],
                true,
            ),
            // The dispatcher's claim: what is pending and due.
            (
                "webhook_deliveries_due",
                vec![WebhookDeliveries::State, WebhookDeliveries::NextAttemptTime],
                false,
            ),
            // Order per wallet: an earlier pending delivery of the same wallet holds back
            // the later ones.
            (
                "webhook_deliveries_order",
                vec![
                    WebhookDeliveries::EndpointId,
                    WebhookDeliveries::WalletId,
                    WebhookDeliveries::Sequence,
                ],
                false,
            ),
            // An endpoint's deliveries, newest first (ids are time-ordered).
            (
                "webhook_deliveries_endpoint",
                vec![WebhookDeliveries::EndpointId, WebhookDeliveries::Id],
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(WebhookDeliveries::Table);
            for column in columns {
                index.col(column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(string_len(WebhookAttempts::DeliveryId, 64))
                    .col(integer(WebhookAttempts::Attempt))
                    .col(big_integer(WebhookAttempts::Time))
                    .col(big_integer(WebhookAttempts::DurationMicros))
                    .col(integer(WebhookAttempts::StatusCode))
                    .col(text(WebhookAttempts::Error))
                    .col(text(WebhookAttempts::Response))
                    .primary_key(
                        Index::create()
                            .col(WebhookAttempts::DeliveryId)
                            .col(WebhookAttempts::Attempt),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookFanout::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
