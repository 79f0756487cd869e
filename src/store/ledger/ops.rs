//! The operation language of the ledger: what can be asked of a batch, and what each
//! operation did.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::{
    domain::{Action, Amount, Balance, GrantKind, Period, Rollover},
    store::{
        entity::{grant, reservation, schedule, transaction, wallet},
        idempotency::Key,
    },
};

#[derive(Debug, Clone)]
pub struct DebitOp {
    pub key: Key,
    pub account_id: String,
    pub unit: String,
    pub request_type: String,
    pub quantities: BTreeMap<String, Decimal>,
    pub metadata: BTreeMap<String, String>,
    pub max_units: Option<Amount>,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct GrantOp {
    pub key: Key,
    pub wallet_id: String,
    pub kind: GrantKind,
    pub amount: Amount,
    pub priority: i32,
    pub effective_time: Option<i64>,
    pub expire_time: Option<i64>,
    pub unit_price: Decimal,
    pub currency: String,
    pub contract_ref: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ReserveOp {
    pub key: Key,
    pub account_id: String,
    pub unit: String,
    pub request_type: String,
    pub quantities: BTreeMap<String, Decimal>,
    /// Explicit units (otherwise priced from `request_type` + `quantities`).
    pub units: Option<Amount>,
    pub ttl_micros: i64,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct CaptureOp {
    pub key: Key,
    pub wallet_id: String,
    pub reservation_id: String,
    pub quantities: BTreeMap<String, Decimal>,
    pub units: Option<Amount>,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ReleaseOp {
    pub key: Key,
    pub wallet_id: String,
    pub reservation_id: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct RefundOp {
    pub key: Key,
    pub wallet_id: String,
    pub transaction_id: String,
    pub units: Option<Amount>,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct VoidOp {
    pub key: Key,
    pub wallet_id: String,
    pub grant_id: String,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct AdjustOp {
    pub key: Key,
    pub wallet_id: String,
    /// Signed micro-units.
    pub units: i64,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ScheduleOp {
    pub key: Key,
    pub wallet_id: String,
    pub amount: Amount,
    pub period: Period,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub rollover: Rollover,
    pub kind: GrantKind,
    pub priority: i32,
    pub unit_price: Decimal,
    pub currency: String,
    pub contract_ref: String,
    pub actor: String,
}

/// Changes to a wallet's limits (each `None` leaves the setting as it is).
#[derive(Debug, Clone, Default)]
pub struct WalletChanges {
    pub overdraft_limit: Option<Amount>,
    pub daily_spend_cap: Option<Option<Amount>>,
    pub monthly_spend_cap: Option<Option<Amount>>,
    pub low_balance_thresholds: Option<Vec<Amount>>,
    /// Days before an active grant expires that `grant.expiring` is sent (0: never).
    pub grant_expiry_notice_days: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct WalletUpdateOp {
    pub key: Key,
    pub wallet_id: String,
    pub changes: WalletChanges,
}

#[derive(Debug, Clone)]
pub enum Op {
    Debit(DebitOp),
    Grant(GrantOp),
    Reserve(ReserveOp),
    Capture(CaptureOp),
    Release(ReleaseOp),
    Refund(RefundOp),
    Void(VoidOp),
    Adjust(AdjustOp),
    Schedule(ScheduleOp),
    UpdateWallet(WalletUpdateOp),
    /// Brings a wallet up to now (expiry, schedules) without any other change.
    Sweep {
        wallet_id: String,
    },
}

impl Op {
    pub(crate) fn key(&self) -> Option<&Key> {
        Some(match self {
            Op::Debit(op) => &op.key,
            Op::Grant(op) => &op.key,
            Op::Reserve(op) => &op.key,
            Op::Capture(op) => &op.key,
            Op::Release(op) => &op.key,
            Op::Refund(op) => &op.key,
            Op::Void(op) => &op.key,
            Op::Adjust(op) => &op.key,
            Op::Schedule(op) => &op.key,
            Op::UpdateWallet(op) => &op.key,
            Op::Sweep { .. } => return None,
        })
    }

    /// The wallet, when the operation names it directly.
    pub(crate) fn wallet_id(&self) -> Option<&str> {
        Some(match self {
            Op::Debit(_) | Op::Reserve(_) => return None,
            Op::Grant(op) => &op.wallet_id,
            Op::Capture(op) => &op.wallet_id,
            Op::Release(op) => &op.wallet_id,
            Op::Refund(op) => &op.wallet_id,
            Op::Void(op) => &op.wallet_id,
            Op::Adjust(op) => &op.wallet_id,
            Op::Schedule(op) => &op.wallet_id,
            Op::UpdateWallet(op) => &op.wallet_id,
            Op::Sweep { wallet_id } => wallet_id,
        })
    }

    /// What the operation does as far as its account's state is concerned (`None`: sweeps,
    /// which only record what fell due).
    pub(super) fn action(&self) -> Option<Action> {
        Some(match self {
            Op::Debit(_) => Action::Debit,
            Op::Reserve(_) => Action::Reserve,
            Op::Capture(_) => Action::Capture,
            Op::Release(_) => Action::Release,
            Op::Refund(_) => Action::Refund,
            Op::Grant(_) => Action::Grant,
            Op::Adjust(_) => Action::Adjust,
            Op::Void(_) => Action::Void,
            Op::Schedule(_) => Action::CreateSchedule,
            Op::UpdateWallet(_) => Action::UpdateWallet,
            Op::Sweep { .. } => return None,
        })
    }

    /// Debits and holds name (account, unit).
    pub(super) fn account_unit(&self) -> Option<(&str, &str)> {
        match self {
            Op::Debit(op) => Some((&op.account_id, &op.unit)),
            Op::Reserve(op) => Some((&op.account_id, &op.unit)),
            _ => None,
        }
    }
}

/// What an operation did, in the store's own terms (the API turns it into its response).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A debit or capture: the entry it wrote.
    Charged(transaction::Model),
    /// A grant created or voided, as it stands after the batch (`now`: the batch's time).
    Grant {
        row: grant::Model,
        now: i64,
    },
    /// A hold placed or released.
    Reservation(reservation::Model),
    /// A refund or adjustment: its (first) entry.
    Entry(transaction::Model),
    Schedule(schedule::Model),
    /// A wallet whose limits changed, with its balance after.
    Wallet {
        row: wallet::Model,
        balance: Balance,
    },
    Swept,
    /// The request was answered before: the response stored then (its parameters were
    /// checked against the key's fingerprint).
    Replayed(Vec<u8>),
}

/// Turns an outcome into the response bytes stored in its idempotency record (the API's
/// encoding: the store never builds wire messages itself).
pub type Encode = fn(&Outcome) -> Vec<u8>;
