//! Stored rows → domain values: the grants, holds and schedules of a wallet as the money rules
//! see them.

use crate::{
    domain::wallet::DAY_MICROS,
    domain::{
        Amount, Hold, Lot, Rollover, RolloverPolicy, Schedule, SpendCaps, Spent, WalletState,
    },
    store::entity::{grant, reservation, schedule, wallet},
};

pub fn lot(model: &grant::Model) -> Lot {
    Lot {
        grant_id: model.id.clone(),
        remaining: Amount::from_micros(model.remaining),
        priority: model.priority,
        effective_time: model.effective_time,
        expire_time: model.expire_time,
        seq: model.create_time,
        unit_price: model.unit_price.0,
        currency: model.currency.clone(),
        status: model.status,
        repaid: Amount::from_micros(model.repaid),
        period: model.schedule_id.clone().zip(model.period_index),
        expiry_noticed: model.expiry_noticed,
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
        unit_price: model.unit_price.0,
        currency: model.currency.clone(),
    }
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
        expiry_notice: i64::from(model.grant_expiry_notice_days.max(0)) * DAY_MICROS,
    }
}
