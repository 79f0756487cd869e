//! The batch evaluator under fuzzing (`allot::fuzzing::evaluate`,
//! `fuzz/fuzz_targets/evaluate.rs`).
//!
//! The fuzzer's bytes become a card (a priced rate with a cap or not, a flat one) and steps on
//! three wallets of two accounts: groups of up to four operations of every kind — amounts
//! from one micro-unit to `Amount::MAX`, quantities up to the wire's 24 digits, holds,
//! charges and grants made before (or none), retries and reused request ids — the clock
//! moving on, and accounts suspended, closed and reopened. Operations are what the API
//! could send: its own checks (positive amounts, an expiry after the effective time, a
//! schedule at most 100 periods in the past) hold.
//!
//! Every group runs twice, as one batch and as one batch per operation, and both must give
//! each operation the same outcome and leave the same wallets ("every operation gets exactly
//! the outcome it would get alone", `ledger/mod.rs`). Checked after every batch:
//! * one outcome per operation, never INTERNAL; an idempotency record for each that
//!   succeeded; a request answered before replays that answer, or is refused as a reused
//!   key when its parameters differ;
//! * a refused (or replayed) operation changes nothing;
//! * no units are created: every grant holds at most what it was granted (remaining plus
//!   the debt it repaid), no charge is refunded beyond its units, each entry's delta is its
//!   units with the sign of its kind, a charge's burns add up to it, and the posted
//!   balance is Σ remaining − debt and the running sum of the deltas (entries hash-chained);
//! * no overdraft beyond the rules: the debt stays within the overdraft limit; a debit,
//!   hold, capture or negative adjustment takes no more than was available, and leaves
//!   the available balance ≥ 0;
//! * a debit is charged its price, and a debit the wallet can afford (no caps, an active
//!   account) is not refused.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use tonic::Code;

use super::{Batch, fixture::*};
use crate::{
    domain::{
        AccountState, Action, Amount, Dimension, GrantKind, LotStatus, MovementKind, Period, Rate,
        Rollover, Schedule, WalletState, wallet::MAX_CATCH_UP_PERIODS,
    },
    error::{Reason, Result},
    fuzzing::Input,
    store::{entity::transaction, idempotency::Key, ledger::ops::*},
};

/// (wallet, account, unit)
const WALLETS: [(&str, &str, &str); 3] = [
    (WALLET, ACCOUNT, "credits"),
    ("wal-2", ACCOUNT, "tokens"),
    ("wal-3", "acc-2", "credits"),
];
const ACCOUNTS: [&str; 3] = [ACCOUNT, "acc-2", "acc-none"];
const UNITS: [&str; 3] = ["credits", "tokens", "gold"];
const REQUEST_TYPES: [&str; 3] = ["chat", "image", "unpriced"];
const STATES: [AccountState; 4] = [
    AccountState::Active,
    AccountState::Active,
    AccountState::Suspended,
    AccountState::Closed,
];
const MINUTE: i64 = 60_000_000;
/// Steps per input: enough for long histories, few enough to keep an execution short.
const MAX_STEPS: usize = 48;

pub fn evaluate(data: &[u8]) {
    let mut input = Input::new(data);
    let card = published(vec![priced_rate(&mut input), flat_rate("image", 0)]);
    let states = [*input.pick(&STATES), *input.pick(&STATES)];
    let wallets: Vec<_> = WALLETS
        .iter()
        .map(|&(id, account, unit)| {
            let state = states[usize::from(account != ACCOUNT)];
            (wallet_model(id, account, unit), state)
        })
        .collect();
    let mut grouped = Run::new(batch_of(card.clone(), &wallets));
    let mut single = Run::new(batch_of(card, &wallets));
    let mut n = 0;
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 16 {
            0 => {
                let minutes = 1 + i64::from(input.u16());
                for run in [&mut grouped, &mut single] {
                    run.batch.now += minutes * MINUTE;
                    run.advance();
                }
            }
            1 => {
                let account = *input.pick(&ACCOUNTS[..2]);
                let state = *input.pick(&STATES);
                for run in [&mut grouped, &mut single] {
                    run.set_state(account, state);
                }
            }
            _ => {
                let now = grouped.batch.now;
                let specs: Vec<Spec> = (0..1 + input.u8() % 4)
                    .map(|_| Spec::read(&mut input, now))
                    .collect();
                let mut ops = [Vec::new(), Vec::new()];
                for spec in &specs {
                    ops[0].push(grouped.op(spec, n));
                    ops[1].push(single.op(spec, n));
                    n += 1;
                }
                let a = grouped.apply_together(&ops[0]);
                let b = single.apply_one_by_one(&ops[1]);
                assert_eq!(a, b, "one batch and one batch per operation disagree");
                assert_eq!(
                    grouped.digest(),
                    single.digest(),
                    "one batch and one batch per operation leave different wallets"
                );
            }
        }
    }
}

// ---- reading operations -------------------------------------------------------------------

fn amount(input: &mut Input) -> Amount {
    Amount::from_micros(match input.u8() % 6 {
        0 => 0,
        1 => i64::from(input.u8()) * UNIT,
        2 => i64::from(input.u16()) * 10_000,
        3 => i64::from(input.u32()),
        4 => i64::MAX - i64::from(input.u16()),
        _ => (input.u64() >> 1) as i64,
    })
}

/// What the API lets through as a positive amount.
fn positive(input: &mut Input) -> Amount {
    Amount::from_micros(amount(input).micros().max(1))
}

fn option<T>(input: &mut Input, read: impl FnOnce(&mut Input) -> T) -> Option<T> {
    input.bool().then(|| read(input))
}

/// Quantities as the API parses them: at most 18 integer and 6 fractional digits.
fn quantities(input: &mut Input) -> BTreeMap<String, Decimal> {
    let count = input.u8() % 3;
    (0..count)
        .map(|_| {
            let name = input.pick(&["tokens", "images", "bogus"]).to_string();
            let micros = match input.u8() % 3 {
                0 => i128::from(input.u16()) * 1_000_000,
                1 => i128::from(input.u64()),
                _ => 10i128.pow(24) - 1 - i128::from(input.u32()),
            };
            (name, Decimal::from_i128_with_scale(micros, 6))
        })
        .collect()
}

/// `chat`: flat + tokens per `per` + images, capped or not.
fn priced_rate(input: &mut Input) -> Rate {
    let per = match input.u8() % 3 {
        0 => Decimal::ONE,
        1 => Decimal::from(1000),
        _ => Decimal::new(i64::from(input.u32()).max(1), 6),
    };
    Rate {
        dimensions: vec![
            Dimension {
                name: "tokens".into(),
                per,
                units: amount(input),
            },
            Dimension {
                name: "images".into(),
                per: Decimal::ONE,
                units: amount(input),
            },
        ],
        max_units: option(input, amount),
        ..flat_rate("chat", amount(input).micros())
    }
}

/// One operation, with references to earlier holds, charges, grants and operations by
/// index (each run resolves them to its own ids).
#[derive(Debug)]
enum Spec {
    Grant {
        wallet: usize,
        amount: Amount,
        priority: i32,
        effective_time: Option<i64>,
        expire_time: Option<i64>,
        unit_price: Decimal,
    },
    Debit {
        account: usize,
        unit: usize,
        request_type: usize,
        quantities: BTreeMap<String, Decimal>,
        max_units: Option<Amount>,
    },
    Reserve {
        account: usize,
        unit: usize,
        request_type: usize,
        quantities: BTreeMap<String, Decimal>,
        units: Option<Amount>,
        ttl_micros: i64,
    },
    Capture {
        hold: usize,
        units: Option<Amount>,
        quantities: BTreeMap<String, Decimal>,
    },
    Release {
        hold: usize,
    },
    Refund {
        charge: usize,
        units: Option<Amount>,
    },
    Adjust {
        wallet: usize,
        units: i64,
    },
    Void {
        grant: usize,
    },
    Update {
        wallet: usize,
        changes: WalletChanges,
    },
    Schedule {
        wallet: usize,
        amount: Amount,
        period: Period,
        start_time: i64,
        end_time: Option<i64>,
        rollover: Rollover,
    },
    Sweep {
        wallet: usize,
    },
    /// The same request again.
    Retry {
        earlier: usize,
    },
    /// An earlier request's id with other parameters.
    Reuse {
        earlier: usize,
    },
}

impl Spec {
    fn read(input: &mut Input, now: i64) -> Spec {
        let wallet = |input: &mut Input| usize::from(input.u8()) % WALLETS.len();
        let index = |input: &mut Input| usize::from(input.u8());
        match input.u8() % 14 {
            0 | 1 => {
                let minutes = |i: &mut Input| i64::from(i.u16() as i16) * MINUTE;
                let effective_time = option(input, |i| now + minutes(i));
                // The API checks the expiry against its own clock, which may be behind the
                // batch's: an expiry at or before the batch's time reaches the evaluator too
                // (but never one at or before the effective time).
                let expire_time = option(input, |i| {
                    let expiry = effective_time.unwrap_or(now) + minutes(i);
                    match effective_time {
                        Some(effective) => expiry.max(effective + 1),
                        None => expiry,
                    }
                });
                Spec::Grant {
                    wallet: wallet(input),
                    amount: positive(input),
                    priority: i32::from(input.u8() % 3),
                    effective_time,
                    expire_time,
                    unit_price: *input.pick(&[Decimal::ZERO, Decimal::new(5, 2)]),
                }
            }
            2 | 3 => Spec::Debit {
                account: index(input),
                unit: index(input),
                request_type: index(input),
                quantities: quantities(input),
                max_units: option(input, amount),
            },
            4 => {
                // Units or estimated quantities, not both (the API's rule).
                let units = option(input, positive);
                Spec::Reserve {
                    account: index(input),
                    unit: index(input),
                    request_type: index(input),
                    quantities: if units.is_some() {
                        BTreeMap::new()
                    } else {
                        quantities(input)
                    },
                    units,
                    ttl_micros: (1 + i64::from(input.u16())) * MINUTE,
                }
            }
            5 => {
                // Units or actual quantities: exactly one of them (the API's rule).
                let units = option(input, positive);
                let mut quantities = quantities(input);
                if units.is_some() {
                    quantities.clear();
                } else if quantities.is_empty() {
                    quantities.insert("tokens".into(), Decimal::ONE);
                }
                Spec::Capture {
                    hold: index(input),
                    quantities,
                    units,
                }
            }
            6 => Spec::Release { hold: index(input) },
            7 => Spec::Refund {
                charge: index(input),
                units: option(input, positive),
            },
            8 => Spec::Adjust {
                wallet: wallet(input),
                units: {
                    let units = positive(input).micros();
                    if input.bool() { -units } else { units }
                },
            },
            9 => Spec::Void {
                grant: index(input),
            },
            10 => {
                let cap = |input: &mut Input| option(input, |i| option(i, amount));
                Spec::Update {
                    wallet: wallet(input),
                    changes: WalletChanges {
                        overdraft_limit: option(input, amount),
                        daily_spend_cap: cap(input),
                        monthly_spend_cap: cap(input),
                        low_balance_thresholds: option(input, |i| vec![amount(i)]),
                        grant_expiry_notice_days: option(input, |i| *i.pick(&[0, 1, 7, 30])),
                    },
                }
            }
            11 => {
                let period = *input.pick(&[
                    Period::Daily,
                    Period::Weekly,
                    Period::Monthly,
                    Period::Yearly,
                ]);
                let amount = positive(input);
                let mut start_time = now - i64::from(input.u16()) * 60 * MINUTE;
                let rollover = match option(input, positive) {
                    Some(cap) => Rollover::Capped(cap),
                    None => Rollover::None,
                };
                let probe = Schedule {
                    id: String::new(),
                    amount,
                    period,
                    start_time,
                    end_time: None,
                    rollover,
                    next_period: 0,
                    priority: 0,
                    unit_price: Decimal::ZERO,
                    currency: String::new(),
                };
                if probe.periods_started(now, MAX_CATCH_UP_PERIODS) > MAX_CATCH_UP_PERIODS {
                    start_time = now; // the API refuses an earlier start
                }
                Spec::Schedule {
                    wallet: wallet(input),
                    amount,
                    period,
                    start_time,
                    end_time: option(input, |i| start_time + (1 + i64::from(i.u32())) * MINUTE),
                    rollover,
                }
            }
            12 => {
                if input.bool() {
                    Spec::Retry {
                        earlier: index(input),
                    }
                } else {
                    Spec::Reuse {
                        earlier: index(input),
                    }
                }
            }
            _ => Spec::Sweep {
                wallet: wallet(input),
            },
        }
    }
}

fn key_mut(op: &mut Op) -> Option<&mut Key> {
    Some(match op {
        Op::Debit(op) => &mut op.key,
        Op::Grant(op) => &mut op.key,
        Op::Reserve(op) => &mut op.key,
        Op::Capture(op) => &mut op.key,
        Op::Release(op) => &mut op.key,
        Op::Refund(op) => &mut op.key,
        Op::Void(op) => &mut op.key,
        Op::Adjust(op) => &mut op.key,
        Op::Schedule(op) => &mut op.key,
        Op::UpdateWallet(op) => &mut op.key,
        Op::Sweep { .. } => return None,
    })
}

// ---- one run ------------------------------------------------------------------------------

/// A batch's state carried from step to step (as the database would between batches), with
/// what the harness remembers of what happened.
struct Run {
    batch: Batch,
    /// Every operation sent, in order.
    sent: Vec<Op>,
    /// (wallet, id) of the holds, charges and grants made.
    holds: Vec<(String, String)>,
    charges: Vec<(String, String)>,
    grants: Vec<(String, String)>,
    /// Requests answered: (scope, request_id) → (method, fingerprint, stored answer).
    answered: HashMap<(String, String), (&'static str, String, Vec<u8>)>,
    /// Most units a grant may ever hold (remaining + repaid): by grant id, and by schedule
    /// id for the grants of a schedule.
    grant_bounds: HashMap<String, i64>,
    schedule_bounds: HashMap<String, i128>,
    /// Charge id → (units charged, units refunded).
    refunds: HashMap<String, (i64, i64)>,
}

/// A wallet as the runs compare it (ids differ between runs; nothing else may).
type Digest = Vec<String>;

impl Run {
    fn new(batch: Batch) -> Self {
        Run {
            batch,
            sent: Vec::new(),
            holds: Vec::new(),
            charges: Vec::new(),
            grants: Vec::new(),
            answered: HashMap::new(),
            grant_bounds: HashMap::new(),
            schedule_bounds: HashMap::new(),
            refunds: HashMap::new(),
        }
    }

    /// What `load.rs` does at the start of a batch: every wallet brought up to now.
    fn advance(&mut self) {
        let now = self.batch.now;
        for wallet in self.batch.wallets.values_mut() {
            wallet.advance(now);
        }
        self.check();
    }

    /// An account's state changes between batches (the next load reads it).
    fn set_state(&mut self, account: &str, state: AccountState) {
        self.batch.accounts.insert(account.to_string(), state);
        for wallet in self.batch.wallets.values_mut() {
            if wallet.model.account_id == account {
                wallet.account_state = state;
                wallet.state.schedules_paused = !state.allows(Action::SchedulePeriod);
            }
        }
        self.advance();
    }

    fn key(account: &str, n: usize, method: &'static str) -> Key {
        Key {
            scope: format!("acct:{account}"),
            request_id: format!("r{n}"),
            method,
            fingerprint: format!("{method}-{n}"),
        }
    }

    /// The `n`th operation, as this run's ids make it.
    fn op(&self, spec: &Spec, n: usize) -> Op {
        let actor = "fuzzer".to_string();
        let wallet = |i: usize| WALLETS[i].0.to_string();
        let account_of = |wallet_id: &str| {
            WALLETS
                .iter()
                .find(|w| w.0 == wallet_id)
                .map_or(ACCOUNT, |w| w.1)
        };
        let pick = |items: &[(String, String)], i: usize, missing: &str| {
            if items.is_empty() {
                (WALLET.to_string(), missing.to_string())
            } else {
                items[i % items.len()].clone()
            }
        };
        match spec {
            Spec::Grant {
                wallet: w,
                amount,
                priority,
                effective_time,
                expire_time,
                unit_price,
            } => Op::Grant(GrantOp {
                key: Self::key(WALLETS[*w].1, n, "Grant"),
                wallet_id: wallet(*w),
                kind: GrantKind::Purchase,
                amount: *amount,
                priority: *priority,
                effective_time: *effective_time,
                expire_time: *expire_time,
                unit_price: *unit_price,
                currency: "USD".into(),
                contract_ref: String::new(),
                actor,
            }),
            Spec::Debit {
                account,
                unit,
                request_type,
                quantities,
                max_units,
            } => {
                let account = ACCOUNTS[account % ACCOUNTS.len()];
                Op::Debit(DebitOp {
                    key: Self::key(account, n, "Debit"),
                    account_id: account.into(),
                    unit: UNITS[unit % UNITS.len()].into(),
                    request_type: REQUEST_TYPES[request_type % REQUEST_TYPES.len()].into(),
                    quantities: quantities.clone(),
                    metadata: BTreeMap::new(),
                    max_units: *max_units,
                    actor,
                })
            }
            Spec::Reserve {
                account,
                unit,
                request_type,
                quantities,
                units,
                ttl_micros,
            } => {
                let account = ACCOUNTS[account % ACCOUNTS.len()];
                Op::Reserve(ReserveOp {
                    key: Self::key(account, n, "Reserve"),
                    account_id: account.into(),
                    unit: UNITS[unit % UNITS.len()].into(),
                    request_type: REQUEST_TYPES[request_type % REQUEST_TYPES.len()].into(),
                    quantities: quantities.clone(),
                    units: *units,
                    ttl_micros: *ttl_micros,
                    actor,
                })
            }
            Spec::Capture {
                hold,
                units,
                quantities,
            } => {
                let (wallet_id, reservation_id) = pick(&self.holds, *hold, "rsv_missing");
                Op::Capture(CaptureOp {
                    key: Self::key(account_of(&wallet_id), n, "Capture"),
                    wallet_id,
                    reservation_id,
                    quantities: quantities.clone(),
                    units: *units,
                    actor,
                })
            }
            Spec::Release { hold } => {
                let (wallet_id, reservation_id) = pick(&self.holds, *hold, "rsv_missing");
                Op::Release(ReleaseOp {
                    key: Self::key(account_of(&wallet_id), n, "Release"),
                    wallet_id,
                    reservation_id,
                    actor,
                })
            }
            Spec::Refund { charge, units } => {
                let (wallet_id, transaction_id) = pick(&self.charges, *charge, "txn_missing");
                Op::Refund(RefundOp {
                    key: Self::key(account_of(&wallet_id), n, "Refund"),
                    wallet_id,
                    transaction_id,
                    units: *units,
                    reason: "fuzz".into(),
                    actor,
                })
            }
            Spec::Adjust { wallet: w, units } => Op::Adjust(AdjustOp {
                key: Self::key(WALLETS[*w].1, n, "Adjust"),
                wallet_id: wallet(*w),
                units: *units,
                reason: "fuzz".into(),
                actor,
            }),
            Spec::Void { grant } => {
                let (wallet_id, grant_id) = pick(&self.grants, *grant, "grt_missing");
                Op::Void(VoidOp {
                    key: Self::key(account_of(&wallet_id), n, "Void"),
                    wallet_id,
                    grant_id,
                    reason: "fuzz".into(),
                    actor,
                })
            }
            Spec::Update { wallet: w, changes } => Op::UpdateWallet(WalletUpdateOp {
                key: Self::key(WALLETS[*w].1, n, "UpdateWallet"),
                wallet_id: wallet(*w),
                changes: changes.clone(),
            }),
            Spec::Schedule {
                wallet: w,
                amount,
                period,
                start_time,
                end_time,
                rollover,
            } => Op::Schedule(ScheduleOp {
                key: Self::key(WALLETS[*w].1, n, "Schedule"),
                wallet_id: wallet(*w),
                amount: *amount,
                period: *period,
                start_time: *start_time,
                end_time: *end_time,
                rollover: *rollover,
                kind: GrantKind::Contract,
                priority: 0,
                unit_price: Decimal::ONE,
                currency: "USD".into(),
                contract_ref: String::new(),
                actor,
            }),
            Spec::Sweep { wallet: w } => Op::Sweep {
                wallet_id: wallet(*w),
            },
            Spec::Retry { .. } | Spec::Reuse { .. } if self.sent.is_empty() => Op::Sweep {
                wallet_id: WALLET.into(),
            },
            Spec::Retry { earlier } => self.sent[earlier % self.sent.len()].clone(),
            Spec::Reuse { earlier } => {
                let mut op = self.sent[earlier % self.sent.len()].clone();
                if let Some(key) = key_mut(&mut op) {
                    key.fingerprint.push_str("-changed");
                }
                op
            }
        }
    }

    /// The wallet an operation acts on, if it names one that exists.
    fn wallet_of(&self, op: &Op) -> Option<String> {
        match op.account_unit() {
            Some((account, unit)) => self
                .batch
                .by_account_unit
                .get(&(account.to_string(), unit.to_string()))
                .cloned(),
            None => op.wallet_id().map(str::to_string),
        }
        .filter(|id| self.batch.wallets.contains_key(id))
    }

    fn apply_together(&mut self, ops: &[Op]) -> Vec<String> {
        let evaluated = self.batch.evaluate_all(ops, encode);
        assert_eq!(
            evaluated.outcomes.len(),
            ops.len(),
            "one outcome per operation"
        );
        let mut records = evaluated.records.iter();
        for (op, outcome) in ops.iter().zip(&evaluated.outcomes) {
            if let (Some(key), Ok(answer)) = (op.key(), outcome)
                && !matches!(answer, Outcome::Replayed(_))
            {
                let record = records.next().expect("a record for each answer");
                assert_eq!(
                    (&record.scope, &record.request_id),
                    (&key.scope, &key.request_id)
                );
                assert_eq!(record.response, encode(answer));
            }
            self.remember(op, outcome);
        }
        assert!(records.next().is_none(), "a record without an answer");
        self.check();
        evaluated.outcomes.iter().map(project).collect()
    }

    fn apply_one_by_one(&mut self, ops: &[Op]) -> Vec<String> {
        let mut answers = Vec::new();
        for op in ops {
            let before: BTreeMap<String, (WalletState, i64, usize)> = self
                .batch
                .wallets
                .iter()
                .map(|(id, w)| (id.clone(), (w.state.clone(), w.posted, w.entries.len())))
                .collect();
            let price = self.price(op);
            let evaluated = self.batch.evaluate_all(std::slice::from_ref(op), encode);
            assert_eq!(evaluated.outcomes.len(), 1, "one outcome per operation");
            let outcome = &evaluated.outcomes[0];
            let target = self.wallet_of(op);
            for (id, w) in &self.batch.wallets {
                let unchanged = before[id] == (w.state.clone(), w.posted, w.entries.len());
                let may_change = outcome
                    .as_ref()
                    .is_ok_and(|o| !matches!(o, Outcome::Replayed(_)))
                    && target.as_deref() == Some(id.as_str());
                assert!(
                    unchanged || may_change,
                    "{op:?} answered {outcome:?} but changed wallet {id}"
                );
            }
            match outcome {
                Ok(Outcome::Replayed(_)) | Err(_) => {
                    assert!(evaluated.records.is_empty(), "a record of no answer")
                }
                Ok(answer) => {
                    let expected = usize::from(op.key().is_some());
                    assert_eq!(evaluated.records.len(), expected);
                    if let Some(record) = evaluated.records.first() {
                        assert_eq!(record.response, encode(answer));
                    }
                    let id = target.expect("an operation that succeeded has a wallet");
                    let (state, posted, _) = &before[&id];
                    self.check_effect(op, answer, state, *posted, &price, &id);
                }
            }
            if let (Op::Debit(debit), Err(err), Some(Ok(units))) = (op, outcome, &price) {
                // A debit the wallet can afford is charged.
                let id = self.wallet_of(op);
                let affordable = id.as_ref().is_some_and(|id| {
                    let (state, _, _) = &before[id];
                    let active =
                        self.batch.accounts.get(&debit.account_id) == Some(&AccountState::Active);
                    active
                        && state.caps.daily.is_none()
                        && state.caps.monthly.is_none()
                        && *units <= state.available()
                        && debit.max_units.is_none_or(|max| *units <= max)
                });
                let replay = self
                    .answered
                    .contains_key(&(debit.key.scope.clone(), debit.key.request_id.clone()));
                assert!(
                    !affordable || replay,
                    "{op:?} costs {units} and was affordable, but was refused: {err}"
                );
            }
            self.remember(op, outcome);
            self.check();
            answers.push(project(outcome));
        }
        answers
    }

    /// The price of a debit (or a hold or capture priced from quantities), from the card.
    fn price(&self, op: &Op) -> Option<Result<Amount, crate::domain::PricingError>> {
        let card = self.batch.card.as_ref()?;
        let (request_type, quantities) = match op {
            Op::Debit(d) => (d.request_type.clone(), &d.quantities),
            Op::Reserve(r) if r.units.is_none() => (r.request_type.clone(), &r.quantities),
            Op::Capture(c) if c.units.is_none() => {
                let wallet = self.batch.wallets.get(&c.wallet_id)?;
                let hold = wallet
                    .holds
                    .get(&c.reservation_id)
                    .or_else(|| wallet.new_holds.iter().find(|h| h.id == c.reservation_id))?;
                (hold.request_type.clone(), &c.quantities)
            }
            _ => return None,
        };
        Some(card.rate(&request_type)?.price(quantities))
    }

    /// What a successful operation did to its wallet, against what it may do.
    fn check_effect(
        &self,
        op: &Op,
        answer: &Outcome,
        before: &WalletState,
        posted_before: i64,
        price: &Option<Result<Amount, crate::domain::PricingError>>,
        wallet_id: &str,
    ) {
        let wallet = &self.batch.wallets[wallet_id];
        let after = &wallet.state;
        let delta = i128::from(wallet.posted) - i128::from(posted_before);
        let available = i128::from(before.available().micros());
        let priced = || match price {
            Some(Ok(units)) => i128::from(units.micros()),
            other => panic!("{op:?} succeeded without a price: {other:?}"),
        };
        let took = |units: i128, room: i128| {
            assert!(units <= room, "{op:?} took {units} with {room} available");
            assert!(
                after.available().micros() >= 0,
                "{op:?} left {} available",
                after.available()
            );
        };
        match (op, answer) {
            (Op::Debit(d), Outcome::Charged(entry)) => {
                let units = i128::from(entry.units);
                assert_eq!(entry.kind, MovementKind::Debit);
                assert_eq!(units, priced(), "{op:?} charged other than its price");
                assert!(d.max_units.is_none_or(|max| entry.units <= max.micros()));
                assert_eq!(delta, -units);
                took(units, available);
            }
            (Op::Reserve(r), Outcome::Reservation(hold)) => {
                let units = i128::from(hold.units);
                match r.units {
                    Some(explicit) => assert_eq!(hold.units, explicit.micros()),
                    None => assert_eq!(units, priced()),
                }
                assert_eq!(delta, 0);
                assert_eq!(
                    after.reserved().micros(),
                    before.reserved().micros() + hold.units
                );
                took(units, available);
            }
            (Op::Capture(c), Outcome::Charged(entry)) => {
                let held = before
                    .holds
                    .iter()
                    .find(|h| h.id == c.reservation_id)
                    .map(|h| i128::from(h.units.micros()))
                    .expect("a captured hold was open");
                let units = i128::from(entry.units);
                assert_eq!(entry.kind, MovementKind::Capture);
                match c.units {
                    Some(explicit) => assert_eq!(entry.units, explicit.micros()),
                    None => assert_eq!(units, priced()),
                }
                assert_eq!(delta, -units);
                assert_eq!(
                    i128::from(after.reserved().micros()),
                    i128::from(before.reserved().micros()) - held
                );
                took(units, available + held);
            }
            (Op::Release(r), Outcome::Reservation(hold)) => {
                assert_eq!(delta, 0);
                assert_eq!(hold.id, r.reservation_id);
                assert_eq!(
                    after.reserved().micros(),
                    before.reserved().micros() - hold.units
                );
            }
            (Op::Refund(r), Outcome::Entry(entry)) => {
                assert_eq!(entry.kind, MovementKind::Refund);
                assert_eq!(entry.ref_id.as_deref(), Some(r.transaction_id.as_str()));
                if let Some(units) = r.units {
                    assert_eq!(entry.units, units.micros());
                }
                // Units back to a grant that expired (or was voided) leave again at once.
                assert!(
                    0 <= delta && delta <= i128::from(entry.units),
                    "{op:?}: {delta}"
                );
            }
            (Op::Adjust(a), Outcome::Entry(entry)) => {
                assert_eq!(entry.kind, MovementKind::Adjust);
                assert_eq!(delta, i128::from(a.units));
                if a.units < 0 {
                    took(-i128::from(a.units), available);
                }
            }
            (Op::Grant(g), Outcome::Grant { row, .. }) => {
                assert_eq!(row.amount, g.amount.micros());
                let active = g.effective_time.is_none_or(|t| t <= self.batch.now);
                let expected = if active { g.amount.micros() } else { 0 };
                assert_eq!(delta, i128::from(expected), "{op:?}");
            }
            (Op::Void(v), Outcome::Grant { row, .. }) => {
                assert_eq!(row.id, v.grant_id);
                assert_eq!(row.status, LotStatus::Voided);
                let lot = before
                    .lots
                    .iter()
                    .find(|l| l.grant_id == v.grant_id)
                    .expect("a voided grant existed");
                let lost = if lot.status == LotStatus::Active {
                    lot.remaining.micros()
                } else {
                    0
                };
                assert_eq!(delta, -i128::from(lost));
            }
            (Op::UpdateWallet(u), Outcome::Wallet { balance, .. }) => {
                assert_eq!(delta, 0);
                if let Some(limit) = u.changes.overdraft_limit {
                    assert_eq!(after.overdraft_limit, limit);
                }
                assert_eq!(balance, &after.balance(&wallet.thresholds));
            }
            (Op::Schedule(s), Outcome::Schedule(_)) => {
                let cap = match s.rollover {
                    Rollover::Capped(cap) => cap.micros(),
                    Rollover::None => 0,
                };
                // Its last period's grant stays (with what rolled into it); earlier ones may
                // have repaid debt before they expired.
                let most = i128::from(s.amount.micros())
                    + i128::from(cap)
                    + i128::from(before.debt.micros());
                assert!(delta <= most, "{op:?} added {delta}");
            }
            (Op::Sweep { .. }, Outcome::Swept) => assert_eq!(delta, 0),
            _ => panic!("{op:?} answered {answer:?}"),
        }
    }

    /// Bookkeeping after an outcome, and the idempotency rules.
    fn remember(&mut self, op: &Op, outcome: &Result<Outcome>) {
        if let Err(err) = outcome {
            assert_ne!(err.code, Code::Internal, "{op:?} answered INTERNAL: {err}");
        }
        self.sent.push(op.clone());
        if let Some(key) = op.key() {
            let id = (key.scope.clone(), key.request_id.clone());
            if let Some((method, fingerprint, response)) = self.answered.get(&id) {
                if *method == key.method && *fingerprint == key.fingerprint {
                    assert_eq!(
                        outcome,
                        &Ok(Outcome::Replayed(response.clone())),
                        "{op:?} was answered before"
                    );
                } else {
                    assert!(
                        matches!(outcome, Err(e) if e.reason == Reason::IdempotencyKeyReused),
                        "{op:?} reused a request id: {outcome:?}"
                    );
                }
                return;
            }
            assert!(
                !matches!(outcome, Ok(Outcome::Replayed(_))),
                "{op:?} replayed an answer never given"
            );
            if let Ok(answer) = outcome {
                self.answered
                    .insert(id, (key.method, key.fingerprint.clone(), encode(answer)));
            }
        }
        match (op, outcome) {
            (Op::Debit(_) | Op::Capture(_), Ok(Outcome::Charged(entry))) => {
                self.charges
                    .push((entry.wallet_id.clone(), entry.id.clone()));
                self.refunds.insert(entry.id.clone(), (entry.units, 0));
                // A later batch loads it to refund it (`load.rs`).
                self.batch
                    .refunded
                    .insert(entry.id.clone(), (entry.clone(), 0));
            }
            (Op::Reserve(_), Ok(Outcome::Reservation(hold))) => {
                self.holds.push((hold.wallet_id.clone(), hold.id.clone()));
            }
            (Op::Grant(g), Ok(Outcome::Grant { row, .. })) => {
                self.grants.push((row.wallet_id.clone(), row.id.clone()));
                self.grant_bounds.insert(row.id.clone(), g.amount.micros());
            }
            (Op::Adjust(a), Ok(Outcome::Entry(entry))) if a.units > 0 => {
                let id = entry
                    .grant_id
                    .clone()
                    .expect("an adjustment up makes a grant");
                self.grants.push((entry.wallet_id.clone(), id.clone()));
                self.grant_bounds.insert(id, a.units);
            }
            (Op::Schedule(s), Ok(Outcome::Schedule(model))) => {
                let cap = match s.rollover {
                    Rollover::Capped(cap) => cap.micros(),
                    Rollover::None => 0,
                };
                self.schedule_bounds.insert(
                    model.id.clone(),
                    i128::from(s.amount.micros()) + i128::from(cap),
                );
            }
            (Op::Refund(r), Ok(Outcome::Entry(entry))) => {
                let (charged, refunded) = self
                    .refunds
                    .get_mut(&r.transaction_id)
                    .expect("a refunded charge");
                *refunded += entry.units;
                assert!(
                    *refunded <= *charged,
                    "{refunded} refunded of a charge of {charged}"
                );
            }
            _ => {}
        }
        // Grants of schedules are found from their lots (`check`).
    }

    /// The rules that hold after every batch.
    fn check(&self) {
        for (id, wallet) in &self.batch.wallets {
            let state = &wallet.state;
            assert_eq!(
                wallet.posted,
                state.posted().micros(),
                "{id}: posted = Σ remaining − debt"
            );
            assert!(
                Amount::ZERO <= state.debt && state.debt <= state.overdraft_limit,
                "{id}: debt {} beyond the overdraft limit {}",
                state.debt,
                state.overdraft_limit
            );
            let held: i128 = state
                .lots
                .iter()
                .map(|l| i128::from(l.remaining.micros()))
                .sum::<i128>()
                + i128::from(state.overdraft_limit.micros());
            assert!(
                held <= i128::from(i64::MAX),
                "{id}: grants + limit overflow"
            );
            for lot in &state.lots {
                assert!(lot.remaining.micros() >= 0 && lot.repaid.micros() >= 0);
                if matches!(lot.status, LotStatus::Expired | LotStatus::Voided) {
                    assert!(lot.remaining.is_zero(), "{id}: a dead grant holds units");
                }
                let bound = match &lot.period {
                    Some((schedule, _)) => *self
                        .schedule_bounds
                        .get(schedule)
                        .expect("a schedule the harness made"),
                    None => i128::from(
                        *self
                            .grant_bounds
                            .get(&lot.grant_id)
                            .unwrap_or_else(|| panic!("{id}: grant {lot:?} nobody made")),
                    ),
                };
                let holds = i128::from(lot.remaining.micros()) + i128::from(lot.repaid.micros());
                assert!(
                    holds <= bound,
                    "{id}: grant {} holds {holds} of {bound} granted",
                    lot.grant_id
                );
            }
            assert!(state.holds.iter().all(|h| h.units.micros() >= 0));
            let mut balance = wallet.model.posted;
            let mut prev = wallet.model.last_hash.clone();
            for entry in &wallet.entries {
                check_entry(entry);
                balance = balance
                    .checked_add(entry.delta)
                    .expect("the running balance fits");
                assert_eq!(
                    entry.balance_after, balance,
                    "balance_after runs on Σ delta"
                );
                assert_eq!(entry.prev_hash, prev, "entries chain");
                assert_eq!(entry.hash, crate::store::chain::entry_hash(entry));
                prev = entry.hash.clone();
            }
            assert_eq!(balance, wallet.posted, "{id}: posted is Σ delta");
        }
        for (charge, (_, done)) in &self.batch.refunded {
            let (charged, refunded) = self.refunds[charge];
            assert_eq!(*done, refunded, "refunded units of {charge}");
            assert!(refunded <= charged);
        }
    }

    /// What both runs must agree on (no ids).
    fn digest(&self) -> Digest {
        let mut digest = Vec::new();
        for (id, wallet) in &self.batch.wallets {
            let s = &wallet.state;
            digest.push(format!(
                "{id} posted={} debt={} limit={} reserved={} caps={:?} spent={:?}",
                wallet.posted,
                s.debt,
                s.overdraft_limit,
                s.reserved(),
                s.caps,
                s.spent
            ));
            for lot in &s.lots {
                digest.push(format!(
                    "  lot {} {:?} repaid={} p={} exp={:?}",
                    lot.remaining, lot.status, lot.repaid, lot.priority, lot.expire_time
                ));
            }
            for entry in &wallet.entries {
                digest.push(format!(
                    "  entry {:?} units={} delta={} after={}",
                    entry.kind, entry.units, entry.delta, entry.balance_after
                ));
            }
        }
        digest
    }
}

/// An entry's units and delta agree with its kind; a charge's burns add up to it.
fn check_entry(entry: &transaction::Model) {
    let (units, delta) = (entry.units, entry.delta);
    assert!(units >= 0, "{entry:?}");
    let ok = match entry.kind {
        MovementKind::Grant | MovementKind::Refund => delta == units,
        MovementKind::Debit | MovementKind::Capture | MovementKind::Expire => delta == -units,
        MovementKind::Reserve | MovementKind::Release => delta == 0,
        // A pending grant voided takes nothing from the balance.
        MovementKind::Void => delta == -units || delta == 0,
        MovementKind::Adjust => delta == units || delta == -units,
    };
    assert!(ok, "{:?} of {units} units has delta {delta}", entry.kind);
    if matches!(entry.kind, MovementKind::Debit | MovementKind::Capture) {
        let burnt: i128 = entry
            .burns
            .0
            .iter()
            .map(|b| i128::from(b.units.micros()))
            .sum();
        assert_eq!(burnt, i128::from(units), "burns of {entry:?}");
    }
}

/// An outcome without its ids.
fn project(outcome: &Result<Outcome>) -> String {
    match outcome {
        Err(err) => format!("error {:?} {}", err.code, err.reason),
        Ok(Outcome::Charged(e)) | Ok(Outcome::Entry(e)) => {
            format!("{:?} {} {} {}", e.kind, e.units, e.delta, e.balance_after)
        }
        Ok(Outcome::Grant { row, .. }) => {
            format!("grant {} {} {:?}", row.amount, row.remaining, row.status)
        }
        Ok(Outcome::Reservation(h)) => format!("hold {} {:?}", h.units, h.state),
        Ok(Outcome::Schedule(s)) => format!("schedule {} {}", s.amount, s.next_period),
        Ok(Outcome::Wallet { balance, .. }) => format!("wallet {balance:?}"),
        Ok(Outcome::Swept) => "swept".into(),
        Ok(Outcome::Replayed(_)) => "replayed".into(),
    }
}
