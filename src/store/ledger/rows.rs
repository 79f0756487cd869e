//! Stored rows ↔ domain values: how grants, holds, schedules, wallets and burns are kept in
//! the database.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    domain::{
        Amount, Burn, Hold, Lot, Rollover, RolloverPolicy, Schedule, SpendCaps, Spent, WalletState,
        amount::format_decimal,
    },
    error::{Error, Result},
    store::entity::{grant, reservation, schedule, transaction, wallet},
};

/// One burn as stored on a ledger entry (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBurn {
    /// Empty when the units came from (or went back to) the overdraft.
    pub grant_id: String,
    pub units: Amount,
    pub unit_price: String,
    pub currency: String,
    pub money: String,
}

impl From<&Burn> for StoredBurn {
    fn from(burn: &Burn) -> Self {
        let money = match burn.money() {
            Some(money) => format_decimal(money),
            None => {
                // Only a grant stored before unit prices were bounded can get here.
                tracing::error!(
                    grant_id = burn.grant_id.as_deref().unwrap_or(""),
                    units = %burn.units,
                    unit_price = %burn.unit_price,
                    "money value out of range; recorded without one"
                );
                String::new()
            }
        };
        StoredBurn {
            grant_id: burn.grant_id.clone().unwrap_or_default(),
            units: burn.units,
            unit_price: format_decimal(burn.unit_price),
            currency: burn.currency.clone(),
            money,
        }
    }
}

pub fn lot(model: &grant::Model) -> Lot {
    Lot {
        grant_id: model.id.clone(),
        remaining: Amount::from_micros(model.remaining),
        priority: model.priority,
        effective_time: model.effective_time,
        expire_time: model.expire_time,
        seq: model.create_time,
        unit_price: model.unit_price.parse().unwrap_or_default(),
        currency: model.currency.clone(),
        status: model.status,
        repaid: Amount::from_micros(model.repaid),
        period: model.schedule_id.clone().zip(model.period_index),
    }
}

pub fn domain_schedule(model: &schedule::Model) -> Schedule {
    Schedule {
        id: model.id.clone(),
        amount: Amount::from_micros(model.amount),
        period: model.period,
        start_time: model.start_time,
        end_time: model.end_time,
        rollover: match model.rollover_cap {
            Some(cap) if model.rollover_policy == RolloverPolicy::Capped => {
                Rollover::Capped(Amount::from_micros(cap))
            }
            _ => Rollover::None,
        },
        next_period: model.next_period,
        priority: model.priority,
        unit_price: model.unit_price.parse().unwrap_or_default(),
        currency: model.currency.clone(),
    }
}

pub fn thresholds(model: &wallet::Model) -> Vec<Amount> {
    serde_json::from_str(&model.low_balance_thresholds).unwrap_or_default()
}

/// A wallet's state as stored (not yet advanced to any time).
pub(super) fn wallet_state(
    model: &wallet::Model,
    grants: &[&grant::Model],
    holds: &[&reservation::Model],
    schedules: &[&schedule::Model],
) -> WalletState {
    WalletState {
        overdraft_limit: Amount::from_micros(model.overdraft_limit),
        debt: Amount::from_micros(model.debt),
        lots: grants.iter().map(|g| lot(g)).collect(),
        holds: holds
            .iter()
            .map(|h| Hold {
                id: h.id.clone(),
                units: Amount::from_micros(h.units),
                expire_time: h.expire_time,
            })
            .collect(),
        caps: SpendCaps {
            daily: model.daily_spend_cap.map(Amount::from_micros),
            monthly: model.monthly_spend_cap.map(Amount::from_micros),
        },
        spent: Spent {
            day: model.spent_day,
            day_units: Amount::from_micros(model.spent_day_units),
            month: model.spent_month,
            month_units: Amount::from_micros(model.spent_month_units),
        },
        schedules: schedules.iter().map(|s| domain_schedule(s)).collect(),
        schedules_paused: false,
    }
}

// ---- loading -------------------------------------------------------------------------------

pub(super) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

pub(super) fn quantity_strings(quantities: &BTreeMap<String, Decimal>) -> BTreeMap<String, String> {
    quantities
        .iter()
        .map(|(k, v)| (k.clone(), format_decimal(*v)))
        .collect()
}
/// The burns stored on an entry; a row that does not parse is reported, never read as none.
pub fn stored_burns(entry: &transaction::Model) -> Result<Vec<StoredBurn>> {
    serde_json::from_str(&entry.burns).map_err(|err| {
        tracing::error!(transaction_id = %entry.id, error = %err, "stored burns unreadable");
        Error::internal(format!("the burns of entry `{}` are unreadable", entry.id))
    })
}
