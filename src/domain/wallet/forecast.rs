//! Budget forecasts: a wallet's future at a steady burn rate, worked out with the wallet's own
//! rules. A copy of the state is run forward — grants becoming active, expiring, schedule
//! periods starting (rollover included), each applied by [`WalletState::advance`] at its
//! moment — while units are consumed at `per_day` in burn order between those moments. So a
//! forecast expires what the burn order would leave to expire, counts every scheduled
//! allotment and future-dated grant that arrives before the end, and resumes consumption from
//! a grant that arrives after a run-out.
//!
//! Reserved units count as consumed at the start (an open hold is spend on its way). Spend
//! caps and the overdraft are left out: a forecast says when the prepaid units run out.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::{Amount, DAY_MICROS, LotStatus, WalletState, burn_order};

/// The most events a forecast steps through (ten years of daily allotments, each with its
/// expiry, fit): a bound on its cost whatever the wallet holds.
pub const MAX_FORECAST_STEPS: usize = 10_000;

/// What a steady burn does to a wallet up to a moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forecast {
    /// When the available units first reach zero; `None` if they last until the end (or
    /// nothing burns).
    pub runout_time: Option<i64>,
    /// Units left just before the end (what will then expire or carry on).
    pub left: Amount,
    /// Units the burn needs beyond what the grants hold, up to the end.
    pub missing: Amount,
    /// `left` in money at the unit prices of the grants holding it, by currency.
    pub left_money: BTreeMap<String, Decimal>,
    /// `missing` in money at the unit price of the last grant to burn (what more units at
    /// the going price would cost), by currency; empty if no priced grant ever burns.
    pub missing_money: BTreeMap<String, Decimal>,
    /// The units left to burn along the way (for charts): at the start, at each event and
    /// at the end, and 0 at a run-out; at most [`MAX_PATH_POINTS`].
    pub path: Vec<(i64, Amount)>,
}

/// Most points a forecast's path keeps (later ones are dropped, the end point is kept).
pub const MAX_PATH_POINTS: usize = 250;

impl WalletState {
    /// The wallet from `now` until `end` (exclusive) burning `per_day` units a day.
    pub fn forecast(&self, now: i64, per_day: Amount, end: i64) -> Forecast {
        let mut state = self.clone();
        state.caps = Default::default();
        state.holds.clear();
        let held = self.reserved().min(state.posted().max(Amount::ZERO));
        let mut last_price = state.next_to_burn();
        if let Some(burn) = state.burn(held).last() {
            last_price = Some((burn.unit_price, burn.currency.clone()));
        }
        let rate = i128::from(per_day.micros().max(0));
        let mut ids = 0u64;
        let mut new_id = || {
            ids += 1;
            format!("forecast-{ids}")
        };
        let mut forecast = Forecast::default();
        let mut missing: i128 = 0;
        let mut t = now;
        let point = |forecast: &mut Forecast, time: i64, left: Amount| {
            if forecast.path.len() < MAX_PATH_POINTS - 1 {
                forecast.path.push((time, left));
            }
        };
        point(&mut forecast, now, state.posted().max(Amount::ZERO));
        for _ in 0..MAX_FORECAST_STEPS {
            let next = state
                .next_due()
                .filter(|&due| due < end)
                .unwrap_or(end)
                .max(t);
            let need = rate * i128::from(next - t) / i128::from(DAY_MICROS);
            let available = i128::from(state.posted().micros().max(0));
            let take = need.min(available);
            if need > available && forecast.runout_time.is_none() {
                let lasts = available * i128::from(DAY_MICROS) / rate;
                let at = t.saturating_add(lasts as i64);
                forecast.runout_time = Some(at);
                point(&mut forecast, at, Amount::ZERO);
            }
            if take > 0 {
                let burns = state.burn(Amount::from_micros(take as i64));
                if let Some(burn) = burns.last() {
                    last_price = Some((burn.unit_price, burn.currency.clone()));
                }
            }
            missing += need - take;
            if next >= end {
                break;
            }
            point(&mut forecast, next, state.posted().max(Amount::ZERO));
            state.advance(next, &mut new_id);
            // Spent and expired grants play no further part.
            state
                .lots
                .retain(|lot| matches!(lot.status, LotStatus::Active | LotStatus::Pending));
            point(&mut forecast, next, state.posted().max(Amount::ZERO));
            t = next;
        }
        forecast.left = state.posted().max(Amount::ZERO);
        forecast.path.push((end, forecast.left));
        for lot in state.lots.iter().filter(|lot| lot.counts()) {
            add_money(
                &mut forecast.left_money,
                &lot.currency,
                lot.remaining,
                lot.unit_price,
            );
        }
        forecast.missing = Amount::from_micros(i64::try_from(missing).unwrap_or(i64::MAX));
        if let Some((price, currency)) = last_price {
            add_money(
                &mut forecast.missing_money,
                &currency,
                forecast.missing,
                price,
            );
        }
        forecast
    }

    /// The unit price and currency of the grant that burns next, if any.
    fn next_to_burn(&self) -> Option<(Decimal, String)> {
        self.lots
            .iter()
            .filter(|lot| lot.counts() && lot.remaining.is_positive())
            .min_by(|a, b| burn_order(a, b))
            .map(|lot| (lot.unit_price, lot.currency.clone()))
    }
}

/// Adds `units × price` to `money[currency]` (a grant without a currency has no money
/// value; a value beyond a decimal's range is left out rather than wrapped).
pub fn add_money(
    money: &mut BTreeMap<String, Decimal>,
    currency: &str,
    units: Amount,
    price: Decimal,
) {
    if currency.is_empty() || units.is_zero() {
        return;
    }
    let Some(value) = units.to_decimal().checked_mul(price) else {
        return;
    };
    let sum = money.entry(currency.to_string()).or_default();
    if let Some(total) = sum.checked_add(value) {
        *sum = total.normalize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wallet::{Lot, Period, Rollover, Schedule};

    const DAY: i64 = DAY_MICROS;

    fn units(n: i64) -> Amount {
        Amount::from_micros(n * 1_000_000)
    }

    fn lot(id: &str, remaining: i64, effective: i64, expire: Option<i64>, price: &str) -> Lot {
        Lot {
            grant_id: id.into(),
            remaining: units(remaining),
            priority: 0,
            effective_time: effective,
            expire_time: expire,
            seq: effective,
            unit_price: price.parse().unwrap(),
            currency: "USD".into(),
            status: if effective <= 0 {
                LotStatus::Active
            } else {
                LotStatus::Pending
            },
            repaid: Amount::ZERO,
            period: None,
            expiry_noticed: false,
        }
    }

    fn wallet(lots: Vec<Lot>) -> WalletState {
        WalletState {
            lots,
            ..Default::default()
        }
    }

    #[test]
    fn no_burn_never_runs_out_and_leaves_everything() {
        let state = wallet(vec![lot("a", 100, 0, None, "0.5")]);
        let f = state.forecast(0, Amount::ZERO, 30 * DAY);
        assert_eq!(f.runout_time, None);
        assert_eq!(f.left, units(100));
        assert_eq!(f.missing, Amount::ZERO);
        assert_eq!(f.left_money["USD"], Decimal::from(50));
        assert!(f.missing_money.is_empty() || f.missing_money["USD"].is_zero());
    }

    #[test]
    fn a_steady_burn_runs_out_and_misses_the_rest_of_the_term() {
        // 100 units at 10 a day: out after 10 days; 20 more days need 200 units.
        let state = wallet(vec![lot("a", 100, 0, None, "0.5")]);
        let f = state.forecast(0, units(10), 30 * DAY);
        assert_eq!(f.runout_time, Some(10 * DAY));
        assert_eq!(f.left, Amount::ZERO);
        assert_eq!(f.missing, units(200));
        assert_eq!(f.missing_money["USD"], Decimal::from(100));
        assert_eq!(
            f.path,
            [
                (0, units(100)),
                (10 * DAY, Amount::ZERO),
                (30 * DAY, Amount::ZERO)
            ]
        );
    }

    #[test]
    fn units_expiring_unburnt_are_lost_and_arrivals_count() {
        // 50 units expiring on day 2 (burnt first), 100 more that never expire, and 40
        // arriving on day 20. At 20 a day: day 0–2 burns 40 of the 50 (10 expire), the 100
        // last five days (to day 7), then nothing until day 20, when 40 last two days (to 22).
        let state = wallet(vec![
            lot("soon", 50, 0, Some(2 * DAY), "1"),
            lot("later", 100, 0, None, "2"),
            lot("arrives", 40, 20 * DAY, None, "3"),
        ]);
        let f = state.forecast(0, units(20), 30 * DAY);
        assert_eq!(f.runout_time, Some(7 * DAY));
        assert_eq!(f.left, Amount::ZERO);
        // Missing: days 7–20 (13 days) and 22–30 (8 days) at 20 a day.
        assert_eq!(f.missing, units(21 * 20));
        // The last grant to burn was the one that arrived (price 3).
        assert_eq!(f.missing_money["USD"], Decimal::from(21 * 20 * 3));
    }

    #[test]
    fn holds_count_as_spent_and_schedules_grant_each_period() {
        let mut state = wallet(vec![lot("a", 10, 0, None, "1")]);
        state.holds.push(super::super::Hold {
            id: "h".into(),
            units: units(10),
            expire_time: 100 * DAY,
        });
        state.schedules.push(Schedule {
            id: "s".into(),
            amount: units(70),
            period: Period::Weekly,
            start_time: 7 * DAY,
            end_time: None,
            rollover: Rollover::None,
            next_period: 0,
            priority: 0,
            unit_price: "0.1".parse().unwrap(),
            currency: "USD".into(),
        });
        // The hold takes the 10 units; 70 a week arrive from day 7 and burn at 5 a day: 35
        // of each week's 70 burn, 35 expire; just before day 28 the fourth week's grant
        // (from day 21) holds 35.
        let f = state.forecast(0, units(5), 28 * DAY);
        assert_eq!(f.runout_time, Some(0));
        assert_eq!(f.missing, units(35));
        assert_eq!(f.left, units(35));
        assert_eq!(f.left_money["USD"], "3.5".parse::<Decimal>().unwrap());
    }

    #[test]
    fn a_forecast_is_bounded_in_steps() {
        // A daily schedule over thirty years stops after MAX_FORECAST_STEPS events.
        let mut state = wallet(vec![]);
        state.schedules.push(Schedule {
            id: "s".into(),
            amount: units(1),
            period: Period::Daily,
            start_time: DAY,
            end_time: None,
            rollover: Rollover::None,
            next_period: 0,
            priority: 0,
            unit_price: Decimal::ONE,
            currency: "USD".into(),
        });
        let f = state.forecast(0, units(1), 30 * 365 * DAY);
        assert!(f.left <= units(1));
    }
}
