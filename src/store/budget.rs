//! Budgets: a wallet's contract term, what it granted, consumed and holds, its burn rates and
//! forecasts (`domain::wallet::forecast`). Read in one snapshot; nothing is written. Cost per
//! wallet: its row, live grants, holds and schedules (as a debit's batch reads them), its
//! grant rows, the expiry, void and adjustment entries of its term (by the partial index
//! `transactions_grant_events`) and at most 30 days of its usage rollup — never the
//! ledger's debits.
//!
//! Definitions (docs/ARCHITECTURE.md, "Budgets"):
//! * **term**: from the earliest start of the grants in force now (and of schedules that have
//!   granted) to the latest expiry of the grants in force or pending and the end of the
//!   schedules; open-ended when one of them never ends.
//! * **granted**: units of the grants that became effective in the term (voided ones too:
//!   what they held when voided counts as withdrawn).
//! * **expired**, **withdrawn**: units of the term's grants that expired unspent; units
//!   removed by voids and negative adjustments.
//! * **consumed** = granted − remaining − expired − withdrawn (net of refunds; overdraft debt
//!   counts as consumed, as `remaining` is the posted balance).
//! * **burn rate** over N days: units consumed (net of refunds) on the last N complete UTC
//!   days, divided by N — fewer days when the wallet is younger; none on its first day.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr,
};

use super::{
    Store,
    entity::{grant, transaction, usage_day, wallet},
    ledger::wallet_states,
};
use crate::{
    domain::{
        Amount, LotStatus, Movement, MovementKind, WalletState,
        wallet::{
            DAY_MICROS, day_of,
            forecast::{Forecast, add_money},
        },
    },
    error::Result,
};

/// Days ahead an expiry counts as "expiring".
pub const EXPIRING_DAYS: i64 = 30;
/// How far an open-ended term's forecast looks.
pub const OPEN_TERM_DAYS: i64 = 365;
/// Most events a budget lists.
pub const MAX_EVENTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    GrantEffective,
    ScheduledAllotment,
    GrantExpires,
}

/// An arrival or expiry ahead.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub time: i64,
    pub kind: EventKind,
    pub units: Amount,
    pub wallet_id: String,
}

/// One wallet's budget (or, from [`roll_up`], the sum of several).
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// `None` for a roll-up.
    pub wallet: Option<wallet::Model>,
    pub term_start: Option<i64>,
    /// `None`: open-ended.
    pub term_end: Option<i64>,
    pub forecast_end: i64,
    /// Micro-units.
    pub granted: i128,
    pub consumed: i128,
    pub remaining: i128,
    pub reserved: i128,
    pub expiring: i128,
    pub expired: i128,
    pub withdrawn: i128,
    pub upcoming: i128,
    pub burn_7d: Amount,
    pub burn_30d: Amount,
    pub forecast_7d: Forecast,
    pub forecast_30d: Forecast,
    pub remaining_money: BTreeMap<String, Decimal>,
    pub events: Vec<Event>,
}

/// The budgets of `wallets` as of `now`, in one snapshot, in the order given.
pub async fn budgets(store: &Store, wallets: &[String], now: i64) -> Result<Vec<Budget>> {
    let tx = store.read_snapshot().await?;
    let result = read(&tx, wallets, now).await;
    tx.rollback().await?;
    result
}

async fn read(conn: &impl ConnectionTrait, wallets: &[String], now: i64) -> Result<Vec<Budget>> {
    let ids: BTreeSet<String> = wallets.iter().cloned().collect();
    let mut states: BTreeMap<String, (wallet::Model, WalletState, Vec<Movement>)> =
        wallet_states(conn, &ids, now)
            .await?
            .into_iter()
            .map(|loaded| (loaded.0.id.clone(), loaded))
            .collect();
    let burns = burn_by_day(conn, &ids, day_of(now)).await?;
    let mut out = Vec::with_capacity(wallets.len());
    for id in wallets {
        let Some((model, state, due)) = states.remove(id) else {
            continue;
        };
        let days = burns.get(id).cloned().unwrap_or_default();
        out.push(wallet_budget(conn, model, &state, &due, &days, now).await?);
    }
    Ok(out)
}

/// Units consumed per day (net of refunds) on the 30 complete days before `today`.
async fn burn_by_day(
    conn: &impl ConnectionTrait,
    ids: &BTreeSet<String>,
    today: i64,
) -> Result<BTreeMap<String, BTreeMap<i64, i128>>> {
    let rows: Vec<(String, i64, i64)> = usage_day::Entity::find()
        .select_only()
        .column(usage_day::Column::WalletId)
        .column(usage_day::Column::Day)
        .column(usage_day::Column::Units)
        .filter(usage_day::Column::WalletId.is_in(ids.iter().cloned()))
        .filter(usage_day::Column::Day.gte(today - 30))
        .filter(usage_day::Column::Day.lt(today))
        .into_tuple()
        .all(conn)
        .await?;
    let mut out: BTreeMap<String, BTreeMap<i64, i128>> = BTreeMap::new();
    for (wallet, day, units) in rows {
        *out.entry(wallet).or_default().entry(day).or_default() += i128::from(units);
    }
    Ok(out)
}

/// Units per day over the last `window` complete days (fewer for a younger wallet).
fn burn_rate(days: &BTreeMap<i64, i128>, today: i64, created: i64, window: i64) -> Amount {
    let span = window.min(today - day_of(created));
    if span <= 0 {
        return Amount::ZERO;
    }
    let used: i128 = days.range(today - span..today).map(|(_, u)| *u).sum();
    let rate = (used / i128::from(span)).max(0);
    Amount::from_micros(i64::try_from(rate).unwrap_or(i64::MAX))
}

async fn wallet_budget(
    conn: &impl ConnectionTrait,
    model: wallet::Model,
    state: &WalletState,
    due: &[Movement],
    days: &BTreeMap<i64, i128>,
    now: i64,
) -> Result<Budget> {
    let today = day_of(now);
    let active: Vec<_> = state.lots.iter().filter(|l| l.counts()).collect();
    let pending: Vec<_> = state
        .lots
        .iter()
        .filter(|l| l.status == LotStatus::Pending)
        .collect();
    let schedule_starts = state
        .schedules
        .iter()
        .filter(|s| s.next_period > 0)
        .map(|s| s.start_time);
    let term_start = active
        .iter()
        .map(|l| l.effective_time)
        .chain(schedule_starts)
        .min();
    let open = active
        .iter()
        .chain(&pending)
        .any(|l| l.expire_time.is_none())
        || state.schedules.iter().any(|s| s.end_time.is_none());
    let term_end = if open {
        None
    } else {
        active
            .iter()
            .chain(&pending)
            .filter_map(|l| l.expire_time)
            .chain(state.schedules.iter().filter_map(|s| s.end_time))
            .max()
    };
    let forecast_end = term_end
        .unwrap_or_else(|| now.saturating_add(OPEN_TERM_DAYS * DAY_MICROS))
        .max(now);

    let mut budget = Budget {
        term_start,
        term_end,
        forecast_end,
        remaining: i128::from(state.posted().micros()),
        reserved: i128::from(state.reserved().micros()),
        ..Budget::default()
    };
    for lot in &active {
        add_money(
            &mut budget.remaining_money,
            &lot.currency,
            lot.remaining,
            lot.unit_price,
        );
        if lot
            .expire_time
            .is_some_and(|t| t <= now.saturating_add(EXPIRING_DAYS * DAY_MICROS))
        {
            budget.expiring += i128::from(lot.remaining.micros());
        }
    }
    if let Some(start) = term_start {
        term_movements(conn, &model, state, due, start, now, &mut budget).await?;
    }
    budget.consumed = budget.granted - budget.remaining - budget.expired - budget.withdrawn;
    budget.events = events(&model.id, state, now, forecast_end);
    budget.upcoming = budget
        .events
        .iter()
        .filter(|e| e.kind != EventKind::GrantExpires)
        .map(|e| i128::from(e.units.micros()))
        .sum();
    budget.events.truncate(MAX_EVENTS);
    budget.burn_7d = burn_rate(days, today, model.create_time, 7);
    budget.burn_30d = burn_rate(days, today, model.create_time, 30);
    budget.forecast_7d = state.forecast(now, budget.burn_7d, forecast_end);
    budget.forecast_30d = state.forecast(now, budget.burn_30d, forecast_end);
    budget.wallet = Some(model);
    Ok(budget)
}

/// Granted, expired and withdrawn units of the term that started at `start`: the grant rows,
/// the recorded expiry, void and adjustment entries since then, and what fell due but is not
/// recorded yet (`due`).
async fn term_movements(
    conn: &impl ConnectionTrait,
    model: &wallet::Model,
    state: &WalletState,
    due: &[Movement],
    start: i64,
    now: i64,
    budget: &mut Budget,
) -> Result<()> {
    // A schedule grant's amount includes what rolled into it from the period before.
    let grants: Vec<(String, i64, i64)> = grant::Entity::find()
        .select_only()
        .column(grant::Column::Id)
        .column(grant::Column::Amount)
        .column(grant::Column::RolledOver)
        .filter(grant::Column::WalletId.eq(model.id.as_str()))
        .filter(grant::Column::EffectiveTime.gte(start))
        .filter(grant::Column::EffectiveTime.lte(now))
        .into_tuple()
        .all(conn)
        .await?;
    let mut term: BTreeSet<String> = BTreeSet::new();
    for (id, amount, rolled_over) in grants {
        budget.granted += i128::from(amount) - i128::from(rolled_over);
        term.insert(id);
    }
    // Schedule grants that became effective in memory only (not recorded yet).
    for lot in state
        .lots
        .iter()
        .filter(|l| l.grant_id.starts_with("preview-"))
    {
        if lot.effective_time >= start && lot.effective_time <= now {
            let rolled = due
                .iter()
                .find(|m| m.grant_id.as_deref() == Some(lot.grant_id.as_str()))
                .map_or(Amount::ZERO, |m| m.units);
            budget.granted += i128::from(rolled.micros());
            term.insert(lot.grant_id.clone());
        }
    }
    let recorded: Vec<(MovementKind, Option<String>, i64)> = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::Kind)
        .column(transaction::Column::GrantId)
        .column(transaction::Column::Delta)
        .filter(transaction::Column::WalletId.eq(model.id.as_str()))
        .filter(transaction::Column::CreateTime.gte(start))
        // In these words, so that SQLite uses the partial index of exactly these entries.
        .filter(Expr::cust(migration::GRANT_EVENT_KINDS))
        .into_tuple()
        .all(conn)
        .await?;
    let unrecorded = due.iter().map(|m| (m.kind, m.grant_id.clone(), m.delta));
    for (kind, grant_id, delta) in recorded.into_iter().chain(unrecorded) {
        let of_term = grant_id.as_ref().is_some_and(|id| term.contains(id));
        match kind {
            MovementKind::Expire if of_term => budget.expired -= i128::from(delta),
            MovementKind::Void if of_term => budget.withdrawn -= i128::from(delta),
            MovementKind::Adjust if delta < 0 => budget.withdrawn -= i128::from(delta),
            _ => {}
        }
    }
    Ok(())
}

/// Arrivals (future-dated grants, schedule periods) and expiries of units held, from `now` to
/// `end`, in time order (at most a few more than [`MAX_EVENTS`] are worked out).
fn events(wallet_id: &str, state: &WalletState, now: i64, end: i64) -> Vec<Event> {
    let event = |time, kind, units| Event {
        time,
        kind,
        units,
        wallet_id: wallet_id.to_string(),
    };
    let mut events = Vec::new();
    for lot in &state.lots {
        match lot.status {
            LotStatus::Pending if lot.effective_time < end => events.push(event(
                lot.effective_time,
                EventKind::GrantEffective,
                lot.remaining,
            )),
            LotStatus::Active if lot.remaining.is_positive() => {
                if let Some(expire) = lot.expire_time.filter(|&t| t > now && t <= end) {
                    events.push(event(expire, EventKind::GrantExpires, lot.remaining));
                }
            }
            _ => {}
        }
    }
    for schedule in state.schedules.iter().filter(|_| !state.schedules_paused) {
        let periods = (schedule.next_period..).take(MAX_EVENTS + 1);
        for start in periods.map_while(|k| schedule.period_start(k)) {
            if start >= end || schedule.end_time.is_some_and(|e| start >= e) {
                break;
            }
            events.push(event(start, EventKind::ScheduledAllotment, schedule.amount));
        }
    }
    events.sort();
    events
}

/// The sum of `lines` (a roll-up): figures added, run-outs the earliest line's.
pub fn roll_up(lines: &[Budget]) -> Budget {
    let mut total = Budget::default();
    for line in lines {
        total.term_start = match (total.term_start, line.term_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.forecast_end = total.forecast_end.max(line.forecast_end);
        total.granted += line.granted;
        total.consumed += line.consumed;
        total.remaining += line.remaining;
        total.reserved += line.reserved;
        total.expiring += line.expiring;
        total.expired += line.expired;
        total.withdrawn += line.withdrawn;
        total.upcoming += line.upcoming;
        total.burn_7d = total.burn_7d.saturating_add(line.burn_7d);
        total.burn_30d = total.burn_30d.saturating_add(line.burn_30d);
        add_forecast(&mut total.forecast_7d, &line.forecast_7d);
        add_forecast(&mut total.forecast_30d, &line.forecast_30d);
        merge_money(&mut total.remaining_money, &line.remaining_money);
        total.events.extend(line.events.iter().cloned());
    }
    // Open-ended if any line is; else the latest end.
    total.term_end = if lines.iter().any(|l| l.term_end.is_none()) {
        None
    } else {
        lines.iter().filter_map(|l| l.term_end).max()
    };
    total.events.sort();
    total.events.truncate(MAX_EVENTS);
    total
}

fn add_forecast(total: &mut Forecast, line: &Forecast) {
    total.runout_time = match (total.runout_time, line.runout_time) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    total.left = total.left.saturating_add(line.left);
    total.missing = total.missing.saturating_add(line.missing);
    merge_money(&mut total.left_money, &line.left_money);
    merge_money(&mut total.missing_money, &line.missing_money);
}

fn merge_money(total: &mut BTreeMap<String, Decimal>, line: &BTreeMap<String, Decimal>) {
    for (currency, value) in line {
        let sum = total.entry(currency.clone()).or_default();
        if let Some(added) = sum.checked_add(*value) {
            *sum = added;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_rates_count_complete_days_and_young_wallets_fewer() {
        let days = BTreeMap::from([(90, 7_000_000), (95, 14_000_000), (99, 7_000_000)]);
        // Today is day 100: the last 7 complete days are 93..=99.
        assert_eq!(burn_rate(&days, 100, 0, 7), Amount::from_micros(3_000_000));
        assert_eq!(
            burn_rate(&days, 100, 0, 30),
            Amount::from_micros(28_000_000 / 30)
        );
        // Created on day 96: four complete days (96..=99).
        assert_eq!(
            burn_rate(&days, 100, 96 * DAY_MICROS + 5, 30),
            Amount::from_micros(7_000_000 / 4)
        );
        // Created today: no complete day yet.
        assert_eq!(burn_rate(&days, 100, 100 * DAY_MICROS, 7), Amount::ZERO);
    }
}
