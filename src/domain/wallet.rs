//! Balance rules and burn order (spec "Balances").
//!
//! * `posted` = Σ remaining of live grants (effective, unexpired, unvoided) − overdraft debt.
//! * `available` = posted − reserved + overdraft_limit; a debit succeeds only if units ≤ available.
//! * Burn order: priority ascending, then earliest `expire_time` (none last), then oldest.
//! * Units a debit takes beyond the live grants become debt (only ever within the overdraft
//!   limit); the next grant that becomes effective repays the debt first.
//!
//! Everything here is pure: times are microseconds since the Unix epoch, passed in.

use std::cmp::Ordering;

use rust_decimal::Decimal;

use super::amount::Amount;

/// A grant as the balance rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub grant_id: String,
    pub remaining: Amount,
    pub priority: i32,
    pub effective_time: i64,
    pub expire_time: Option<i64>,
    /// Creation order (oldest first): the last tie-breaker of the burn order.
    pub seq: i64,
    pub unit_price: Decimal,
    pub currency: String,
    pub voided: bool,
}

impl Lot {
    /// Whether the grant's units count at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        !self.voided
            && self.effective_time <= now
            && self.expire_time.is_none_or(|expiry| now < expiry)
    }
}

/// The order in which grants burn.
pub fn burn_order(a: &Lot, b: &Lot) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| match (a.expire_time, b.expire_time) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.seq.cmp(&b.seq))
        .then_with(|| a.grant_id.cmp(&b.grant_id))
}

/// Units taken from one grant (or, with `grant_id == None`, from the overdraft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burn {
    pub grant_id: Option<String>,
    pub units: Amount,
    pub unit_price: Decimal,
    pub currency: String,
}

impl Burn {
    /// Money value of the burnt units at the grant's unit price.
    pub fn money(&self) -> Decimal {
        (self.units.to_decimal() * self.unit_price).normalize()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("insufficient credits: required {required}, available {available}")]
pub struct Insufficient {
    pub required: Amount,
    pub available: Amount,
}

/// One wallet's balance state: its grants plus wallet-level counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalletState {
    pub overdraft_limit: Amount,
    /// Units drawn beyond the grants (≥ 0, ≤ overdraft_limit when drawn).
    pub debt: Amount,
    pub reserved: Amount,
    pub lots: Vec<Lot>,
}

impl WalletState {
    pub fn posted(&self, now: i64) -> Amount {
        self.lots
            .iter()
            .filter(|lot| lot.is_live(now))
            .fold(Amount::ZERO, |sum, lot| sum.saturating_add(lot.remaining))
            .saturating_sub(self.debt)
    }

    pub fn available(&self, now: i64) -> Amount {
        self.posted(now)
            .saturating_sub(self.reserved)
            .saturating_add(self.overdraft_limit)
    }

    /// Takes `units` in burn order, or changes nothing and reports the shortfall.
    pub fn debit(&mut self, units: Amount, now: i64) -> Result<Vec<Burn>, Insufficient> {
        let available = self.available(now);
        if units > available {
            return Err(Insufficient {
                required: units,
                available,
            });
        }
        let mut order: Vec<usize> = (0..self.lots.len())
            .filter(|&i| self.lots[i].is_live(now) && self.lots[i].remaining.is_positive())
            .collect();
        order.sort_by(|&a, &b| burn_order(&self.lots[a], &self.lots[b]));

        let mut left = units;
        let mut burns = Vec::new();
        for index in order {
            if left.is_zero() {
                break;
            }
            let lot = &mut self.lots[index];
            let take = left.min(lot.remaining);
            lot.remaining = lot.remaining.saturating_sub(take);
            left = left.saturating_sub(take);
            burns.push(Burn {
                grant_id: Some(lot.grant_id.clone()),
                units: take,
                unit_price: lot.unit_price,
                currency: lot.currency.clone(),
            });
        }
        if left.is_positive() {
            self.debt = self.debt.saturating_add(left);
            burns.push(Burn {
                grant_id: None,
                units: left,
                unit_price: Decimal::ZERO,
                currency: String::new(),
            });
        }
        Ok(burns)
    }

    /// How many more units the wallet's grants may hold: Σ remaining of every grant plus the
    /// overdraft limit must fit in an [`Amount`], so no balance can ever overflow.
    pub fn headroom(&self) -> Amount {
        let used: i128 = self
            .lots
            .iter()
            .map(|lot| i128::from(lot.remaining.micros()))
            .sum::<i128>()
            + i128::from(self.overdraft_limit.micros());
        let left = i128::from(i64::MAX) - used;
        Amount::from_micros(i64::try_from(left.max(0)).unwrap_or(i64::MAX))
    }

    /// Adds a grant; if it is live now, it first repays overdraft debt. Returns what it repaid.
    pub fn add_grant(&mut self, mut lot: Lot, now: i64) -> Amount {
        let repaid = if lot.is_live(now) {
            lot.remaining.min(self.debt)
        } else {
            Amount::ZERO
        };
        lot.remaining = lot.remaining.saturating_sub(repaid);
        self.debt = self.debt.saturating_sub(repaid);
        self.lots.push(lot);
        repaid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn units(n: i64) -> Amount {
        Amount::from_units(n).unwrap()
    }

    fn lot(id: &str, remaining: i64, priority: i32, expire: Option<i64>, seq: i64) -> Lot {
        Lot {
            grant_id: id.into(),
            remaining: units(remaining),
            priority,
            effective_time: 0,
            expire_time: expire,
            seq,
            unit_price: Decimal::new(1, 2),
            currency: "USD".into(),
            voided: false,
        }
    }

    #[test]
    fn burns_priority_then_expiry_then_age() {
        let mut wallet = WalletState {
            lots: vec![
                lot("old-no-expiry", 10, 0, None, 1),
                lot("late-expiry", 10, 0, Some(500), 2),
                lot("early-expiry", 10, 0, Some(100), 3),
                lot("low-priority", 10, 1, Some(50), 0),
                lot("young-no-expiry", 10, 0, None, 4),
            ],
            ..Default::default()
        };
        let burns = wallet.debit(units(45), 10).unwrap();
        let order: Vec<_> = burns.iter().map(|b| b.grant_id.clone().unwrap()).collect();
        assert_eq!(
            order,
            [
                "early-expiry",
                "late-expiry",
                "old-no-expiry",
                "young-no-expiry",
                "low-priority"
            ]
        );
        assert_eq!(burns[4].units, units(5));
        assert_eq!(wallet.posted(10), units(5));
    }

    #[test]
    fn insufficient_changes_nothing() {
        let mut wallet = WalletState {
            lots: vec![lot("a", 3, 0, None, 0)],
            ..Default::default()
        };
        let before = wallet.clone();
        let err = wallet.debit(units(4), 0).unwrap_err();
        assert_eq!(err.required, units(4));
        assert_eq!(err.available, units(3));
        assert_eq!(wallet, before);
    }

    #[test]
    fn expired_and_future_grants_do_not_count() {
        let mut future = lot("future", 7, 0, None, 0);
        future.effective_time = 1_000;
        let wallet = WalletState {
            lots: vec![lot("expired", 5, 0, Some(100), 1), future],
            ..Default::default()
        };
        assert_eq!(wallet.posted(50), units(5));
        assert_eq!(wallet.posted(100), Amount::ZERO);
        assert_eq!(wallet.posted(1_000), units(7));
    }

    #[test]
    fn overdraft_becomes_debt_and_grants_repay_it() {
        let mut wallet = WalletState {
            overdraft_limit: units(10),
            lots: vec![lot("a", 5, 0, None, 0)],
            ..Default::default()
        };
        let burns = wallet.debit(units(12), 0).unwrap();
        assert_eq!(burns.last().unwrap().grant_id, None);
        assert_eq!(wallet.debt, units(7));
        assert_eq!(wallet.posted(0), units(-7));
        assert_eq!(wallet.available(0), units(3));
        assert!(wallet.debit(units(4), 0).is_err());
        let repaid = wallet.add_grant(lot("b", 20, 0, None, 1), 0);
        assert_eq!(repaid, units(7));
        assert_eq!(wallet.posted(0), units(13));
        assert_eq!(wallet.debt, Amount::ZERO);
    }

    #[test]
    fn headroom_keeps_balances_in_range() {
        let mut wallet = WalletState {
            overdraft_limit: Amount::from_micros(10),
            ..Default::default()
        };
        assert_eq!(wallet.headroom().micros(), i64::MAX - 10);
        let mut big = lot("big", 0, 0, None, 0);
        big.remaining = Amount::from_micros(i64::MAX - 10);
        wallet.add_grant(big, 0);
        assert_eq!(wallet.headroom(), Amount::ZERO);
        assert_eq!(wallet.available(0), Amount::MAX);
    }

    #[test]
    fn money_is_units_times_unit_price() {
        let burn = Burn {
            grant_id: Some("g".into()),
            units: Amount::parse("2.5").unwrap(),
            unit_price: Decimal::new(4, 2),
            currency: "USD".into(),
        };
        assert_eq!(burn.money(), Decimal::new(1, 1));
    }

    proptest! {
        /// Conservation and the floor: whatever sequence of debits, posted always equals the
        /// granted total minus what was acknowledged, and available never drops below zero.
        #[test]
        fn debits_conserve_units(
            grants in proptest::collection::vec((1i64..1_000, 0i32..3, proptest::option::of(1i64..100)), 1..8),
            debits in proptest::collection::vec(1i64..400, 1..40),
            overdraft in 0i64..50,
        ) {
            let mut wallet = WalletState { overdraft_limit: units(overdraft), ..Default::default() };
            let now = 0;
            let mut granted = Amount::ZERO;
            for (seq, (amount, priority, expiry)) in grants.iter().enumerate() {
                wallet.add_grant(lot(&format!("g{seq}"), *amount, *priority, *expiry, seq as i64), now);
                granted = granted.saturating_add(units(*amount));
            }
            let mut taken = Amount::ZERO;
            for d in debits {
                let before = wallet.clone();
                match wallet.debit(units(d), now) {
                    Ok(burns) => {
                        let burnt = burns.iter().fold(Amount::ZERO, |s, b| s.saturating_add(b.units));
                        prop_assert_eq!(burnt, units(d));
                        taken = taken.saturating_add(units(d));
                    }
                    Err(_) => prop_assert_eq!(&wallet, &before),
                }
                prop_assert!(wallet.available(now) >= Amount::ZERO);
                prop_assert!(wallet.debt <= wallet.overdraft_limit);
                prop_assert_eq!(wallet.posted(now), granted.saturating_sub(taken));
            }
        }
    }
}
