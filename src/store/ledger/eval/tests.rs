//! Evaluation without a database: random operations against one wallet, checking after each
//! that the ledger's rules hold. (tests/property.rs checks the same rules end to end, over
//! gRPC, on both databases.)

use std::collections::BTreeMap;

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::{
    Loaded,
    fixture::{ACCOUNT, UNIT, WALLET, batch, encode},
};
use crate::{
    domain::{Amount, GrantKind, Period, Rollover},
    store::{chain, entity::transaction, idempotency::Key, ledger::ops::*},
};

#[derive(Debug, Clone)]
enum Step {
    Grant {
        units: i64,
        expire_minutes: Option<i64>,
    },
    Debit {
        max_units: Option<i64>,
    },
    Reserve {
        units: i64,
        ttl_minutes: i64,
    },
    Capture {
        hold: usize,
        units: i64,
    },
    Release {
        hold: usize,
    },
    Refund {
        charge: usize,
        units: Option<i64>,
    },
    Adjust {
        units: i64,
    },
    Void {
        grant: usize,
    },
    Overdraft {
        limit: i64,
    },
    Schedule {
        units: i64,
        past_periods: i64,
    },
    /// Sends an earlier operation again (same key, same parameters).
    Retry {
        earlier: usize,
    },
    /// The clock moves on (what fell due is recorded first, as a batch's load does).
    Wait {
        minutes: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let units = 0..200 * UNIT;
    prop_oneof![
        (units.clone(), proptest::option::of(1..600i64)).prop_map(|(units, expire_minutes)| {
            Step::Grant {
                units,
                expire_minutes,
            }
        }),
        proptest::option::of(0..40 * UNIT).prop_map(|max_units| Step::Debit { max_units }),
        (units.clone(), 1..120i64)
            .prop_map(|(units, ttl_minutes)| Step::Reserve { units, ttl_minutes }),
        (any::<usize>(), units.clone()).prop_map(|(hold, units)| Step::Capture { hold, units }),
        any::<usize>().prop_map(|hold| Step::Release { hold }),
        (any::<usize>(), proptest::option::of(0..60 * UNIT))
            .prop_map(|(charge, units)| Step::Refund { charge, units }),
        (-100 * UNIT..100 * UNIT).prop_map(|units| Step::Adjust { units }),
        any::<usize>().prop_map(|grant| Step::Void { grant }),
        (0..80 * UNIT).prop_map(|limit| Step::Overdraft { limit }),
        (1..50 * UNIT, 0..3i64).prop_map(|(units, past_periods)| Step::Schedule {
            units,
            past_periods
        }),
        any::<usize>().prop_map(|earlier| Step::Retry { earlier }),
        (1..900i64).prop_map(|minutes| Step::Wait { minutes }),
    ]
}

fn key(n: usize, method: &'static str) -> Key {
    Key {
        scope: format!("acct:{ACCOUNT}"),
        request_id: format!("r{n}"),
        method,
        fingerprint: format!("{method}-{n}"),
    }
}

/// What the model of the test remembers of earlier steps.
#[derive(Default)]
struct Seen {
    ops: Vec<(Op, Vec<u8>)>,
    holds: Vec<String>,
    charges: Vec<transaction::Model>,
    grants: Vec<String>,
}

fn pick<T: Clone>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()].clone())
}

fn op_for(step: &Step, n: usize, now: i64, seen: &Seen) -> Option<Op> {
    let wallet_id = WALLET.to_string();
    let actor = "tester".to_string();
    Some(match step {
        Step::Grant {
            units,
            expire_minutes,
        } => Op::Grant(GrantOp {
            key: key(n, "Grant"),
            wallet_id,
            kind: GrantKind::Purchase,
            amount: Amount::from_micros(*units),
            priority: (n % 3) as i32,
            effective_time: None,
            expire_time: expire_minutes.map(|m| now + m * 60_000_000),
            unit_price: Decimal::new(5, 2),
            currency: "USD".into(),
            contract_ref: String::new(),
            actor,
        }),
        Step::Debit { max_units } => Op::Debit(DebitOp {
            key: key(n, "Debit"),
            account_id: ACCOUNT.into(),
            unit: "credits".into(),
            request_type: "chat".into(),
            quantities: BTreeMap::new(),
            metadata: BTreeMap::new(),
            max_units: max_units.map(Amount::from_micros),
            actor,
        }),
        Step::Reserve { units, ttl_minutes } => Op::Reserve(ReserveOp {
            key: key(n, "Reserve"),
            account_id: ACCOUNT.into(),
            unit: "credits".into(),
            request_type: "chat".into(),
            quantities: BTreeMap::new(),
            units: Some(Amount::from_micros(*units)),
            ttl_micros: ttl_minutes * 60_000_000,
            actor,
        }),
        Step::Capture { hold, units } => Op::Capture(CaptureOp {
            key: key(n, "Capture"),
            wallet_id,
            reservation_id: pick(&seen.holds, *hold)?,
            quantities: BTreeMap::new(),
            units: Some(Amount::from_micros(*units)),
            actor,
        }),
        Step::Release { hold } => Op::Release(ReleaseOp {
            key: key(n, "Release"),
            wallet_id,
            reservation_id: pick(&seen.holds, *hold)?,
            actor,
        }),
        Step::Refund { charge, units } => Op::Refund(RefundOp {
            key: key(n, "Refund"),
            wallet_id,
            transaction_id: pick(&seen.charges, *charge)?.id,
            units: units.map(Amount::from_micros),
            reason: "test".into(),
            actor,
        }),
        Step::Adjust { units } => Op::Adjust(AdjustOp {
            key: key(n, "Adjust"),
            wallet_id,
            units: *units,
            reason: "test".into(),
            actor,
        }),
        Step::Void { grant } => Op::Void(VoidOp {
            key: key(n, "Void"),
            wallet_id,
            grant_id: pick(&seen.grants, *grant)?,
            reason: "test".into(),
            actor,
        }),
        Step::Overdraft { limit } => Op::UpdateWallet(WalletUpdateOp {
            key: key(n, "UpdateWallet"),
            wallet_id,
            changes: WalletChanges {
                overdraft_limit: Some(Amount::from_micros(*limit)),
                ..WalletChanges::default()
            },
        }),
        Step::Schedule {
            units,
            past_periods,
        } => Op::Schedule(ScheduleOp {
            key: key(n, "Schedule"),
            wallet_id,
            amount: Amount::from_micros(*units),
            period: Period::Daily,
            start_time: now - past_periods * 86_400_000_000,
            end_time: None,
            rollover: Rollover::None,
            kind: GrantKind::Contract,
            priority: 0,
            unit_price: Decimal::ONE,
            currency: "USD".into(),
            contract_ref: String::new(),
            actor,
        }),
        Step::Retry { .. } | Step::Wait { .. } => return None,
    })
}

/// The rules that hold after every step, whatever it was.
fn check_wallet(wallet: &Loaded) -> Result<(), TestCaseError> {
    let state = &wallet.state;
    prop_assert_eq!(
        wallet.posted,
        state.posted().micros(),
        "posted = Σ remaining − debt"
    );
    prop_assert!(
        state.debt <= state.overdraft_limit,
        "debt within the overdraft limit"
    );
    let held: i128 = state
        .lots
        .iter()
        .map(|lot| i128::from(lot.remaining.micros()))
        .sum::<i128>()
        + i128::from(state.overdraft_limit.micros());
    prop_assert!(held <= i128::from(i64::MAX), "grants + limit fit an Amount");
    let mut balance = wallet.model.posted;
    let mut prev = wallet.model.last_hash.clone();
    for entry in &wallet.entries {
        balance += entry.delta;
        prop_assert_eq!(
            entry.balance_after,
            balance,
            "balance_after runs on Σ delta"
        );
        prop_assert_eq!(&entry.prev_hash, &prev, "entries chain");
        prop_assert_eq!(&entry.hash, &chain::entry_hash(entry));
        prev = entry.hash.clone();
    }
    prop_assert_eq!(balance, wallet.posted);
    Ok(())
}

fn run(flat: i64, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut batch = batch(flat);
    let mut seen = Seen::default();
    for (n, step) in steps.iter().enumerate() {
        if let Step::Wait { minutes } = step {
            batch.now += minutes * 60_000_000;
            for wallet in batch.wallets.values_mut() {
                wallet.advance(batch.now);
            }
            check_wallet(&batch.wallets[WALLET])?;
            continue;
        }
        if let Step::Retry { earlier } = step {
            let Some((op, first)) = pick(&seen.ops, *earlier) else {
                continue;
            };
            let outcome = batch.evaluate_all(&[op], encode).outcomes.remove(0);
            prop_assert_eq!(outcome, Ok(Outcome::Replayed(first)), "a retry replays");
            continue;
        }
        let Some(op) = op_for(step, n, batch.now, &seen) else {
            continue;
        };
        let before = batch.wallets[WALLET].state.clone();
        let entries_before = batch.wallets[WALLET].entries.len();
        let evaluated = batch.evaluate_all(std::slice::from_ref(&op), encode);
        let wallet = &batch.wallets[WALLET];
        match &evaluated.outcomes[0] {
            Err(_) => {
                // A refused operation changes nothing and leaves no record.
                prop_assert_eq!(&wallet.state, &before);
                prop_assert_eq!(wallet.entries.len(), entries_before);
                prop_assert!(evaluated.records.is_empty());
            }
            Ok(outcome) => {
                prop_assert_eq!(evaluated.records.len(), 1);
                prop_assert_eq!(&evaluated.records[0].response, &encode(outcome));
                seen.ops.push((op.clone(), encode(outcome)));
                match outcome {
                    Outcome::Charged(entry) if matches!(op, Op::Debit(_)) => {
                        // A later batch would load it (`load.rs`) to refund it.
                        batch.refunded.insert(entry.id.clone(), (entry.clone(), 0));
                        seen.charges.push(entry.clone());
                    }
                    Outcome::Reservation(hold) => seen.holds.push(hold.id.clone()),
                    Outcome::Grant { row, .. } => seen.grants.push(row.id.clone()),
                    _ => {}
                }
            }
        }
        check_wallet(&batch.wallets[WALLET])?;
        for (id, (original, refunded)) in &batch.refunded {
            prop_assert!(
                *refunded <= original.units,
                "refunds of {} exceed the charge",
                id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluation_keeps_the_ledger_rules(
        flat in 1..30 * UNIT,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        run(flat, steps)?;
    }
}
