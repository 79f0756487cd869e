//! Requests: builders for the messages the tests send, and the lifecycle operations as the
//! admin (each with a fresh or given request_id), answering the server's `Result`.

use std::{collections::BTreeMap, time::Duration};

use allot::proto;
use tonic::Status;

use super::TestApp;

pub fn rate(request_type: &str, flat: &str, dims: &[(&str, &str, &str)], max: &str) -> proto::Rate {
    proto::Rate {
        request_type: request_type.into(),
        flat_units: flat.into(),
        dimensions: dims
            .iter()
            .map(|(name, per, units)| proto::Dimension {
                name: (*name).into(),
                per: (*per).into(),
                units: (*units).into(),
            })
            .collect(),
        max_units: max.into(),
        route: "provider/model-a".into(),
        provider_cost: "0.001".into(),
        list_prices: Vec::new(),
    }
}

/// A CONTRACT grant of `amount` at `unit_price` USD, with a fresh request_id.
pub fn grant_request(wallet_id: &str, amount: &str, unit_price: &str) -> proto::CreateGrantRequest {
    proto::CreateGrantRequest {
        grant: Some(proto::Grant {
            wallet_id: wallet_id.into(),
            kind: proto::GrantKind::Contract as i32,
            amount: amount.into(),
            unit_price: unit_price.into(),
            currency: "USD".into(),
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

/// Sets an account's state (update mask `state`), with a fresh request_id.
pub fn state_request(account_id: &str, state: proto::AccountState) -> proto::UpdateAccountRequest {
    proto::UpdateAccountRequest {
        account: Some(proto::Account {
            id: account_id.into(),
            state: state as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["state".into()],
        }),
        request_id: uuid(),
    }
}

pub fn debit_request(
    account_id: &str,
    request_type: &str,
    request_id: &str,
) -> proto::DebitRequest {
    proto::DebitRequest {
        account_id: account_id.into(),
        request_type: request_type.into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

pub fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn reserve_units(
    app: &TestApp,
    account_id: &str,
    units: &str,
    ttl: Option<Duration>,
) -> Result<proto::Reservation, Status> {
    app.ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: account_id.into(),
            units: units.into(),
            ttl: ttl.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn capture_units(
    app: &TestApp,
    reservation_id: &str,
    units: &str,
    request_id: &str,
) -> Result<proto::DebitResponse, Status> {
    app.ledger(&app.admin)
        .capture_reservation(proto::CaptureReservationRequest {
            reservation_id: reservation_id.into(),
            units: units.into(),
            request_id: request_id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn release(
    app: &TestApp,
    reservation_id: &str,
    request_id: &str,
) -> Result<proto::Reservation, Status> {
    app.ledger(&app.admin)
        .release_reservation(proto::ReleaseReservationRequest {
            reservation_id: reservation_id.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn refund(
    app: &TestApp,
    transaction_id: &str,
    units: &str,
    request_id: &str,
) -> Result<proto::Transaction, Status> {
    app.ledger(&app.admin)
        .refund(proto::RefundRequest {
            transaction_id: transaction_id.into(),
            units: units.into(),
            reason: "request failed".into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn adjust(
    app: &TestApp,
    wallet_id: &str,
    units: &str,
    reason: &str,
) -> Result<proto::Transaction, Status> {
    app.grants(&app.admin)
        .adjust_balance(proto::AdjustBalanceRequest {
            wallet_id: wallet_id.into(),
            units: units.into(),
            reason: reason.into(),
            request_id: uuid(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn void(
    app: &TestApp,
    grant_id: &str,
    reason: &str,
    request_id: &str,
) -> Result<proto::Grant, Status> {
    app.grants(&app.admin)
        .void_grant(proto::VoidGrantRequest {
            id: grant_id.into(),
            reason: reason.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// An account under `parent_id` (or a root account), with a fresh request_id.
pub fn new_account(external_id: &str, parent_id: &str) -> proto::CreateAccountRequest {
    proto::CreateAccountRequest {
        account: Some(proto::Account {
            external_id: external_id.into(),
            parent_id: parent_id.into(),
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

/// The account's wallet in the default unit, with a fresh request_id.
pub fn wallet_request(account_id: &str) -> proto::CreateWalletRequest {
    proto::CreateWalletRequest {
        wallet: Some(proto::Wallet {
            account_id: account_id.into(),
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

/// Publishes `draft` now, with a fresh request_id.
pub fn publish_request(draft: &proto::RateCard) -> proto::PublishRateCardRequest {
    proto::PublishRateCardRequest {
        version: draft.version,
        etag: draft.etag.clone(),
        effective_time: None,
        request_id: uuid(),
    }
}

/// A schedule of `amount` per `period` on the wallet from `start_time` (or now), everything
/// else left to the server's defaults, with a fresh request_id.
pub fn schedule_request(
    wallet_id: &str,
    amount: &str,
    period: proto::SchedulePeriod,
    start_time: Option<prost_types::Timestamp>,
) -> proto::CreateAllotmentScheduleRequest {
    proto::CreateAllotmentScheduleRequest {
        allotment_schedule: Some(proto::AllotmentSchedule {
            wallet_id: wallet_id.into(),
            amount: amount.into(),
            period: period as i32,
            start_time,
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

/// A draft rate card with `rates` and `notes`, with a fresh request_id.
pub fn card_request(rates: Vec<proto::Rate>, notes: &str) -> proto::CreateRateCardRequest {
    proto::CreateRateCardRequest {
        rate_card: Some(proto::RateCard {
            rates,
            notes: notes.into(),
            ..Default::default()
        }),
        request_id: uuid(),
    }
}
