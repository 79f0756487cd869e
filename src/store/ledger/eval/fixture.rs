//! A batch without a database, as `load.rs` would leave it: wallets of active accounts,
//! nothing granted yet, and a published card. Shared by the property test (`tests.rs`) and
//! the fuzz harness (`fuzz.rs`).

use std::collections::{BTreeMap, HashMap};

use super::{Batch, Loaded};
use crate::{
    domain::{AccountState, Amount, CardState, Rate},
    store::{
        entity::{rate_card, wallet},
        ledger::ops::Outcome,
        rate_cards::Card,
        wallet_cache::Rows,
    },
};

pub(super) const WALLET: &str = "wal-1";
pub(super) const ACCOUNT: &str = "acc-1";
pub(super) const START: i64 = 1_800_000_000_000_000;
pub(super) const UNIT: i64 = 1_000_000;

/// A new wallet's row: no limits, no entries.
pub(super) fn wallet_model(id: &str, account_id: &str, unit: &str) -> wallet::Model {
    wallet::Model {
        id: id.into(),
        account_id: account_id.into(),
        unit: unit.into(),
        overdraft_limit: 0,
        debt: 0,
        reserved: 0,
        create_time: START,
        update_time: START,
        posted: 0,
        daily_spend_cap: None,
        monthly_spend_cap: None,
        spent_day: 0,
        spent_day_units: 0,
        spent_month: 0,
        spent_month_units: 0,
        low_balance_thresholds: Default::default(),
        next_due_time: None,
        last_hash: String::new(),
        last_entry_time: 0,
        version: 1,
        event_seq: 0,
        grant_expiry_notice_days: crate::domain::wallet::DEFAULT_EXPIRY_NOTICE_DAYS,
    }
}

#[cfg(test)]
pub(super) fn wallet_row() -> wallet::Model {
    wallet_model(WALLET, ACCOUNT, "credits")
}

/// A flat rate for `request_type`.
pub(super) fn flat_rate(request_type: &str, flat: i64) -> Rate {
    Rate {
        request_type: request_type.into(),
        flat_units: Amount::from_micros(flat),
        dimensions: Vec::new(),
        max_units: None,
        route: String::new(),
        provider_cost: String::new(),
        list_prices: Vec::new(),
    }
}

/// Card version 1, published at [`START`].
pub(super) fn published(rates: Vec<Rate>) -> Card {
    rate_card::Model {
        version: 1,
        state: CardState::Published,
        etag: String::new(),
        effective_time: Some(START),
        rates: rate_card::Rates(rates),
        notes: String::new(),
        create_time: START,
        publish_time: Some(START),
    }
}

/// A batch at [`START`] over `wallets` (each with its account's state).
pub(super) fn batch_of(card: Card, wallets: &[(wallet::Model, AccountState)]) -> Batch {
    Batch {
        now: START,
        card: Some(card),
        overrides: Default::default(),
        ancestry: HashMap::new(),
        accounts: wallets
            .iter()
            .map(|(w, state)| (w.account_id.clone(), *state))
            .collect(),
        by_account_unit: wallets
            .iter()
            .map(|(w, _)| ((w.account_id.clone(), w.unit.clone()), w.id.clone()))
            .collect(),
        wallets: wallets
            .iter()
            .map(|(w, state)| (w.id.clone(), Loaded::new(w.clone(), Rows::new(*state))))
            .collect::<BTreeMap<_, _>>(),
        refunded: HashMap::new(),
        records: HashMap::new(),
    }
}

/// One active account's credits wallet and a card pricing `chat` at `flat`.
#[cfg(test)]
pub(super) fn batch(flat: i64) -> Batch {
    batch_of(
        published(vec![flat_rate("chat", flat)]),
        &[(wallet_row(), AccountState::Active)],
    )
}

/// A stand-in for the API's encoding: any deterministic bytes of the outcome do.
pub(super) fn encode(outcome: &Outcome) -> Vec<u8> {
    format!("{outcome:?}").into_bytes()
}
