//! Reading what the server answers: decimals, amounts, transaction kinds, money.

use std::collections::BTreeMap;

use allot::{
    domain::Amount,
    proto::{self, TransactionKind},
};
use rust_decimal::Decimal;

/// A decimal the server wrote (an empty string is not one).
#[track_caller]
pub fn dec(text: &str) -> Decimal {
    text.parse()
        .unwrap_or_else(|err| panic!("`{text}` is not a decimal: {err}"))
}

/// An amount in micro-units.
#[track_caller]
pub fn amount_micros(text: &str) -> i64 {
    Amount::parse(text)
        .unwrap_or_else(|err| panic!("`{text}` is not an amount: {err}"))
        .micros()
}

#[track_caller]
pub fn kind(t: &proto::Transaction) -> TransactionKind {
    TransactionKind::try_from(t.kind).expect("known kind")
}

/// The entries of one kind, in their order.
pub fn of_kind(txns: &[proto::Transaction], wanted: TransactionKind) -> Vec<proto::Transaction> {
    txns.iter().filter(|t| kind(t) == wanted).cloned().collect()
}

/// Money summed per currency, without zeros.
pub fn money_map(money: &[proto::Money]) -> BTreeMap<String, Decimal> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    for m in money {
        *out.entry(m.currency.clone()).or_default() += dec(&m.amount);
    }
    out.retain(|_, v| !v.is_zero());
    out
}
