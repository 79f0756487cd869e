use super::*;
use proptest::prelude::*;

const HOUR: i64 = 3_600_000_000;

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
        status: LotStatus::Pending,
        repaid: Amount::ZERO,
        period: None,
        expiry_noticed: false,
    }
}

fn wallet(lots: Vec<Lot>) -> WalletState {
    let mut w = WalletState::default();
    for l in lots {
        w.add_grant(l, 0);
    }
    w
}

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("new-{n}")
    }
}

fn delta_sum(movements: &[Movement]) -> i64 {
    movements.iter().map(|m| m.delta).sum()
}

#[test]
fn burns_priority_then_expiry_then_age() {
    let mut w = wallet(vec![
        lot("old-no-expiry", 10, 0, None, 1),
        lot("late-expiry", 10, 0, Some(500), 2),
        lot("early-expiry", 10, 0, Some(100), 3),
        lot("low-priority", 10, 1, Some(50), 0),
        lot("young-no-expiry", 10, 0, None, 4),
    ]);
    let m = w.debit(units(45), 10).unwrap();
    let order: Vec<_> = m
        .burns
        .iter()
        .map(|b| b.grant_id.clone().unwrap())
        .collect();
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
    assert_eq!(m.burns[4].units, units(5));
    assert_eq!(m.delta, -units(45).micros());
    assert_eq!(w.posted(), units(5));
}

#[test]
fn insufficient_changes_nothing() {
    let mut w = wallet(vec![lot("a", 3, 0, None, 0)]);
    let before = w.clone();
    let err = w.debit(units(4), 0).unwrap_err();
    assert_eq!(
        err,
        Refusal::Insufficient {
            required: units(4),
            available: units(3)
        }
    );
    assert_eq!(w, before);
}

/// The notices among the steps: (grant, time, units left).
fn notices(steps: &[Step]) -> Vec<(&str, i64, Amount)> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::ExpiryNotice {
                grant_id,
                time,
                remaining,
                ..
            } => Some((grant_id.as_str(), *time, *remaining)),
            Step::Move(_) => None,
        })
        .collect()
}

#[test]
fn a_grant_about_to_expire_is_noticed_once_within_the_window() {
    const DAY: i64 = DAY_MICROS;
    let mut w = wallet(vec![
        lot("month", 5, 0, Some(30 * DAY), 1),
        // Lives 3 days in all: shorter than the window, so no notice.
        lot("short", 2, 0, Some(3 * DAY), 2),
        lot("forever", 1, 0, None, 3),
    ]);
    w.expiry_notice = 7 * DAY;
    assert_eq!(
        w.next_due(),
        Some(3 * DAY),
        "the short grant's expiry first"
    );
    let steps = w.advance_steps(23 * DAY - 1, &mut ids());
    assert!(notices(&steps).is_empty(), "{steps:?}");
    assert_eq!(w.next_due(), Some(23 * DAY));
    let steps = w.advance_steps(23 * DAY, &mut ids());
    assert_eq!(notices(&steps), [("month", 23 * DAY, units(5))]);
    assert!(w.lots[0].expiry_noticed);
    assert_eq!(
        w.next_due(),
        Some(30 * DAY),
        "then nothing until the expiry"
    );
    let steps = w.advance_steps(30 * DAY, &mut ids());
    assert!(notices(&steps).is_empty());
    assert_eq!(steps.len(), 1, "the expiry: {steps:?}");

    // A wider window reaches grants at once; a spent grant or a sweep that comes after the
    // expiry sends no notice (the expiry says it all), and 0 sends none at all.
    let mut w = wallet(vec![
        lot("a", 5, 0, Some(40 * DAY), 1),
        lot("spent", 0, 0, Some(40 * DAY), 2),
        lot("late", 1, 0, Some(20 * DAY), 3),
    ]);
    w.expiry_notice = 0;
    assert_eq!(w.next_due(), Some(20 * DAY));
    w.expiry_notice = 30 * DAY;
    let steps = w.advance_steps(10 * DAY, &mut ids());
    assert_eq!(notices(&steps), [("a", 10 * DAY, units(5))]);
    let mut late = wallet(vec![lot("late", 1, 0, Some(20 * DAY), 1)]);
    late.expiry_notice = 7 * DAY;
    let steps = late.advance_steps(21 * DAY, &mut ids());
    assert!(notices(&steps).is_empty(), "{steps:?}");
    assert!(late.lots[0].expiry_noticed);
}

#[test]
fn future_grants_activate_and_grants_expire_through_advance() {
    let mut future = lot("future", 7, 0, None, 0);
    future.effective_time = 1_000;
    let mut w = wallet(vec![lot("expiring", 5, 0, Some(100), 1)]);
    assert!(
        w.add_grant(future, 0).is_none(),
        "pending grants do not move the balance"
    );
    assert_eq!(w.posted(), units(5));
    assert_eq!(w.next_due(), Some(100));
    let moved = w.advance(99, &mut ids());
    assert!(moved.is_empty());
    let moved = w.advance(5_000, &mut ids());
    let kinds: Vec<_> = moved.iter().map(|m| (m.kind, m.time)).collect();
    assert_eq!(
        kinds,
        [(MovementKind::Expire, 100), (MovementKind::Grant, 1_000)]
    );
    assert_eq!(delta_sum(&moved), units(2).micros());
    assert_eq!(w.posted(), units(7));
    assert_eq!(w.next_due(), None);
}

#[test]
fn overdraft_becomes_debt_and_grants_repay_it() {
    let mut w = wallet(vec![lot("a", 5, 0, None, 0)]);
    w.overdraft_limit = units(10);
    let m = w.debit(units(12), 0).unwrap();
    assert_eq!(m.burns.last().unwrap().grant_id, None);
    assert_eq!(w.debt, units(7));
    assert_eq!(w.posted(), units(-7));
    assert_eq!(w.available(), units(3));
    assert!(w.debit(units(4), 0).is_err());
    let m = w.add_grant(lot("b", 20, 0, None, 1), 0).unwrap();
    assert_eq!(m.delta, units(20).micros());
    assert_eq!(w.posted(), units(13));
    assert_eq!(w.debt, Amount::ZERO);
    assert_eq!(w.lots[1].repaid, units(7));

    // Refunding the overdrawn part goes back to the grant that repaid it.
    let moved = w.refund(&[(None, units(7))], 0, 0);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].burns[0].grant_id.as_deref(), Some("b"));
    assert_eq!(w.posted(), units(20));
}

#[test]
fn holds_count_against_available_and_resolve_once() {
    let mut w = wallet(vec![lot("a", 10, 0, None, 0)]);
    let m = w.reserve("h1".into(), units(6), HOUR, 0).unwrap();
    assert_eq!(m.delta, 0);
    assert_eq!(w.available(), units(4));
    assert!(w.debit(units(5), 0).is_err());
    // Capture below the hold frees the rest.
    let m = w.capture("h1", units(2), 1).unwrap();
    assert_eq!(m.delta, -units(2).micros());
    assert_eq!(w.available(), units(8));
    assert_eq!(w.capture("h1", units(1), 2), Err(Refusal::HoldNotOpen));
    assert_eq!(w.release("h1", 2), Err(Refusal::HoldNotOpen));
}

#[test]
fn capture_above_the_hold_needs_the_difference() {
    let mut w = wallet(vec![lot("a", 10, 0, None, 0)]);
    w.reserve("h".into(), units(4), HOUR, 0).unwrap();
    w.debit(units(5), 0).unwrap();
    // 1 left beyond the hold: capturing 6 (hold 4 + 2) fails and the hold stays open.
    let before = w.clone();
    assert!(matches!(
        w.capture("h", units(6), 1),
        Err(Refusal::Insufficient { .. })
    ));
    assert_eq!(w, before);
    let m = w.capture("h", units(5), 1).unwrap();
    assert_eq!(m.units, units(5));
    assert_eq!(w.posted(), Amount::ZERO);
}

#[test]
fn expired_holds_are_released_by_advance() {
    let mut w = wallet(vec![lot("a", 10, 0, None, 0)]);
    w.reserve("h".into(), units(4), 100, 0).unwrap();
    let moved = w.advance(100, &mut ids());
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].kind, MovementKind::Release);
    assert_eq!(moved[0].hold_id.as_deref(), Some("h"));
    assert_eq!(w.available(), units(10));
}

#[test]
fn refunds_return_to_grants_and_expired_ones_expire_again() {
    let mut w = wallet(vec![lot("a", 5, 0, Some(100), 0), lot("b", 5, 0, None, 1)]);
    let m = w.debit(units(8), 10).unwrap();
    assert_eq!(m.burns.len(), 2);
    w.advance(200, &mut ids()); // "a" expires with 0 left: no movement needed
    let moved = w.refund(
        &[(Some("b".into()), units(3)), (Some("a".into()), units(5))],
        10,
        300,
    );
    assert_eq!(moved[0].kind, MovementKind::Refund);
    assert_eq!(moved[0].units, units(8));
    assert_eq!(moved[1].kind, MovementKind::Expire);
    assert_eq!(moved[1].units, units(5));
    assert_eq!(delta_sum(&moved), units(3).micros());
    assert_eq!(w.posted(), units(5));
}

#[test]
fn void_removes_remaining_once() {
    let mut w = wallet(vec![lot("a", 5, 0, None, 0)]);
    let m = w.void("a", 0).unwrap();
    assert_eq!(m.delta, -units(5).micros());
    assert_eq!(w.void("a", 0), Err(Refusal::GrantNotActive));
    assert_eq!(w.posted(), Amount::ZERO);
}

#[test]
fn adjustments_up_and_down() {
    let mut w = wallet(vec![lot("a", 5, 0, None, 0)]);
    let down = w.adjust_down(units(2), 0).unwrap();
    assert_eq!(down.kind, MovementKind::Adjust);
    assert!(w.adjust_down(units(4), 0).is_err());
    let up = w.adjust_up(lot("adj", 10, 0, None, 1), 0);
    assert_eq!(up.kind, MovementKind::Adjust);
    assert_eq!(up.delta, units(10).micros());
    assert_eq!(w.posted(), units(13));
}

#[test]
fn spend_caps_roll_over_at_day_and_month() {
    let day = 86_400_000_000;
    // 2026-01-31T00:00Z
    let jan31 = 1_769_817_600_000_000;
    let mut w = wallet(vec![lot("a", 1_000, 0, None, 0)]);
    w.caps = SpendCaps {
        daily: Some(units(10)),
        monthly: Some(units(25)),
    };
    w.debit(units(8), jan31).unwrap();
    assert!(matches!(
        w.debit(units(3), jan31),
        Err(Refusal::SpendCap {
            period: "daily",
            ..
        })
    ));
    // Holds count toward the cap.
    w.reserve("h".into(), units(2), jan31 + HOUR, jan31)
        .unwrap();
    assert!(w.debit(units(1), jan31).is_err());
    w.release("h", jan31).unwrap();
    // Next day (Feb 1): the daily cap resets, and so does the monthly one.
    w.debit(units(10), jan31 + day).unwrap();
    w.debit(units(10), jan31 + 2 * day).unwrap();
    assert!(matches!(
        w.debit(units(6), jan31 + 3 * day),
        Err(Refusal::SpendCap {
            period: "monthly",
            ..
        })
    ));
    w.debit(units(5), jan31 + 3 * day).unwrap();
}

#[test]
fn refunds_free_cap_room_only_in_the_period_charged() {
    let day = 86_400_000_000;
    let jan10 = 1_768_003_200_000_000; // 2026-01-10T00:00Z
    let mut w = wallet(vec![lot("a", 1_000, 0, None, 0)]);
    w.caps.daily = Some(units(10));
    let yesterday = w.debit(units(4), jan10).unwrap();
    let today = w.debit(units(10), jan10 + day).unwrap();
    let back = |m: &Movement| -> Vec<(Option<String>, Amount)> {
        m.burns
            .iter()
            .map(|b| (b.grant_id.clone(), units(4).min(b.units)))
            .collect()
    };
    w.refund(&back(&yesterday), jan10, jan10 + day);
    assert!(matches!(
        w.debit(units(4), jan10 + day),
        Err(Refusal::SpendCap {
            period: "daily",
            ..
        })
    ));
    // A refund of today's debit does give the room back.
    w.refund(&back(&today), jan10 + day, jan10 + day);
    w.debit(units(4), jan10 + day).unwrap();
}

fn schedule(period: Period, rollover: Rollover) -> Schedule {
    Schedule {
        id: "s".into(),
        amount: units(100),
        period,
        start_time: 1_769_817_600_000_000, // 2026-01-31T00:00Z
        end_time: None,
        rollover,
        next_period: 0,
        priority: 0,
        unit_price: Decimal::ZERO,
        currency: String::new(),
    }
}

#[test]
fn monthly_periods_stay_anchored_to_the_start_day() {
    let s = schedule(Period::Monthly, Rollover::None);
    let day = |k| {
        DateTime::<Utc>::from_timestamp_micros(s.period_start(k).unwrap())
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    assert_eq!(day(0), "2026-01-31");
    assert_eq!(day(1), "2026-02-28");
    assert_eq!(day(2), "2026-03-31");
    assert_eq!(day(13), "2027-02-28");
    let y = schedule(Period::Yearly, Rollover::None);
    assert!(y.period_start(1).unwrap() > y.period_start(0).unwrap());
}

#[test]
fn schedules_catch_up_with_capped_rollover() {
    let mut w = WalletState {
        schedules: vec![schedule(Period::Daily, Rollover::Capped(units(30)))],
        ..Default::default()
    };
    let start = w.schedules[0].start_time;
    let day = 86_400_000_000;
    // Three periods fall due at once (downtime).
    let moved = w.advance(start + 2 * day + 1, &mut ids());
    let grants: Vec<_> = moved
        .iter()
        .filter(|m| m.kind == MovementKind::Grant)
        .map(|m| (m.units, m.rolled_over))
        .collect();
    assert_eq!(
        grants,
        [
            (units(100), Amount::ZERO),
            (units(100), units(30)),
            (units(100), units(30))
        ]
    );
    let expired: Vec<_> = moved
        .iter()
        .filter(|m| m.kind == MovementKind::Expire)
        .map(|m| m.units)
        .collect();
    // Period 1 held 100 + 30 rolled: 30 roll on, 100 expire.
    assert_eq!(expired, [units(70), units(100)]);
    assert_eq!(w.posted(), units(130));
    assert_eq!(delta_sum(&moved), units(130).micros());
    assert_eq!(w.schedules[0].next_period, 3);
    // Nothing more is due until the next period.
    assert!(w.advance(start + 2 * day + 2, &mut ids()).is_empty());
}

#[test]
fn schedules_stop_at_their_end() {
    let mut s = schedule(Period::Weekly, Rollover::None);
    s.end_time = Some(s.start_time + 14 * 86_400_000_000);
    let start = s.start_time;
    let mut w = WalletState {
        schedules: vec![s],
        ..Default::default()
    };
    let moved = w.advance(start + 100 * 86_400_000_000, &mut ids());
    let grants = moved
        .iter()
        .filter(|m| m.kind == MovementKind::Grant)
        .count();
    assert_eq!(grants, 2);
    assert_eq!(
        w.posted(),
        Amount::ZERO,
        "the last period's grant expired too"
    );
}

#[test]
fn headroom_keeps_balances_in_range() {
    let mut w = WalletState {
        overdraft_limit: Amount::from_micros(10),
        ..Default::default()
    };
    assert_eq!(w.headroom().micros(), i64::MAX - 10);
    let mut big = lot("big", 0, 0, None, 0);
    big.remaining = Amount::from_micros(i64::MAX - 10);
    w.add_grant(big, 0);
    assert_eq!(w.headroom(), Amount::ZERO);
    assert_eq!(w.available(), Amount::MAX);
}

#[test]
fn money_is_units_times_unit_price() {
    let burn = Burn {
        grant_id: Some("g".into()),
        units: Amount::parse("2.5").unwrap(),
        unit_price: Decimal::new(4, 2),
        currency: "USD".into(),
    };
    assert_eq!(burn.money(), Some(Decimal::new(1, 1)));
}

/// A random operation on a wallet.
#[derive(Debug, Clone)]
enum Op {
    Grant(i64, i32, Option<i64>, i64),
    Debit(i64),
    Reserve(i64, i64),
    Capture(usize, i64),
    Release(usize),
    Refund(usize, i64),
    Void(usize),
    AdjustDown(i64),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1i64..500, 0i32..3, proptest::option::of(1i64..50), 0i64..20)
            .prop_map(|(a, p, e, f)| Op::Grant(a, p, e, f)),
        (1i64..200).prop_map(Op::Debit),
        (1i64..200, 1i64..30).prop_map(|(u, t)| Op::Reserve(u, t)),
        (0usize..8, 1i64..250).prop_map(|(h, u)| Op::Capture(h, u)),
        (0usize..8).prop_map(Op::Release),
        (0usize..16, 1i64..200).prop_map(|(d, u)| Op::Refund(d, u)),
        (0usize..8).prop_map(Op::Void),
        (1i64..100).prop_map(Op::AdjustDown),
        (0i64..10).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Conservation and the floor, whatever happens: Σ movement deltas equals `posted`,
    /// `posted` equals Σ active remaining − debt, an operation that checks `available` never
    /// leaves it below zero, debt stays within the overdraft limit, `posted` never drops
    /// below −overdraft_limit, and a refused operation changes nothing.
    #[test]
    fn every_sequence_conserves_units(
        ops in proptest::collection::vec(op(), 1..60),
        overdraft in 0i64..50,
        schedule_on in any::<bool>(),
    ) {
        let tick = 1_000_000i64; // one second per step
        let mut w = WalletState { overdraft_limit: units(overdraft), ..Default::default() };
        if schedule_on {
            let mut s = schedule(Period::Daily, Rollover::Capped(units(20)));
            s.start_time = 0;
            w.schedules.push(s);
        }
        let mut now = 0i64;
        let mut ids = ids();
        let mut posted_by_movements: i64 = 0;
        let mut holds: Vec<String> = Vec::new();
        let mut debits: Vec<Vec<(Option<String>, Amount)>> = Vec::new();
        let mut grants: Vec<String> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            now += tick;
            let moved = w.advance(now, &mut ids);
            posted_by_movements += delta_sum(&moved);
            let before = w.clone();
            let checks_available = matches!(op, Op::Debit(_) | Op::Reserve(..) | Op::Capture(..) | Op::AdjustDown(_));
            let result: Result<Vec<Movement>, Refusal> = match op {
                Op::Grant(a, p, e, f) => {
                    let mut l = lot(&format!("g{step}"), a, p, e.map(|e| now + e * tick), step as i64);
                    l.effective_time = now + f * tick / 4;
                    grants.push(l.grant_id.clone());
                    Ok(w.add_grant(l, now).into_iter().collect())
                }
                Op::Debit(u) => w.debit(units(u), now).map(|m| {
                    debits.push(m.burns.iter().map(|b| (b.grant_id.clone(), b.units)).collect());
                    vec![m]
                }),
                Op::Reserve(u, t) => {
                    let id = format!("h{step}");
                    w.reserve(id.clone(), units(u), now + t * tick, now).map(|m| {
                        holds.push(id);
                        vec![m]
                    })
                }
                Op::Capture(h, u) => match holds.get(h) {
                    Some(id) => w.capture(id, units(u), now).map(|m| {
                        debits.push(m.burns.iter().map(|b| (b.grant_id.clone(), b.units)).collect());
                        vec![m]
                    }),
                    None => Ok(vec![]),
                },
                Op::Release(h) => match holds.get(h) {
                    Some(id) => w.release(id, now).map(|m| vec![m]),
                    None => Ok(vec![]),
                },
                Op::Refund(d, u) => match debits.get_mut(d) {
                    Some(refundable) => {
                        // Return up to `u` units, last burn first, never more than taken.
                        let mut want = units(u);
                        let mut returns = Vec::new();
                        for (grant_id, left) in refundable.iter_mut().rev() {
                            let take = want.min(*left);
                            if take.is_positive() {
                                returns.push((grant_id.clone(), take));
                                *left = left.saturating_sub(take);
                                want = want.saturating_sub(take);
                            }
                        }
                        Ok(w.refund(&returns, now, now))
                    }
                    None => Ok(vec![]),
                },
                Op::Void(g) => match grants.get(g) {
                    Some(id) => w.void(id, now).map(|m| vec![m]),
                    None => Ok(vec![]),
                },
                Op::AdjustDown(u) => w.adjust_down(units(u), now).map(|m| vec![m]),
                Op::Advance(n) => {
                    now += n * tick;
                    Ok(w.advance(now, &mut ids))
                }
            };
            match result {
                Ok(moved) => {
                    posted_by_movements += delta_sum(&moved);
                    if checks_available && !moved.is_empty() {
                        prop_assert!(w.available() >= Amount::ZERO);
                    }
                }
                Err(_) => prop_assert_eq!(&w, &before, "a refusal changed the wallet"),
            }
            prop_assert_eq!(posted_by_movements, w.posted().micros());
            let active: i64 = w.lots.iter().filter(|l| l.counts()).map(|l| l.remaining.micros()).sum();
            prop_assert_eq!(active - w.debt.micros(), w.posted().micros());
            prop_assert!(w.debt <= w.overdraft_limit);
            // Expiry under an open hold may push `available` below zero, never `posted`
            // below the overdraft floor.
            prop_assert!(w.posted().micros() >= -w.overdraft_limit.micros());
            prop_assert!(w.lots.iter().all(|l| l.remaining >= Amount::ZERO));
        }
    }
}
