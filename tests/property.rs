//! A property test of a wallet's whole life over gRPC: random sequences of grants (priority,
//! price, optional future start, optional expiry), debits, holds and their capture or release,
//! refunds, voids, adjustments and clock moves (with a sweep), each case against a fresh
//! server. After every operation:
//!
//! * the outcome is the one the rules predict (from the balance just before and what the
//!   test knows of holds, charges and grants), and a success moves the balance as it should;
//! * conservation: Σ delta of the wallet's entries = posted; every entry continues the
//!   balance and the hash chain;
//! * posted ≥ −overdraft_limit; available < 0 only while holds are open (a grant expiring
//!   under an open hold);
//! * reserved = Σ the holds the test knows to be open: a hold resolves once (a second capture
//!   or release fails RESERVATION_NOT_OPEN, so does one after its TTL);
//! * the statement since the beginning reconciles (opening 0, closing = posted, in units and
//!   in money per currency);
//! * a rejected operation leaves the database exactly as before (a dump of every table).
//!
//! At the end of a case `allot verify` (`store::verify::verify_snapshot`: one read snapshot,
//! so the running server's sweeps cannot land halfway) must find no mismatch, and every hold
//! the test knows is resolved has exactly one CAPTURE or RELEASE entry.

mod common;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    panic::{AssertUnwindSafe, resume_unwind},
    sync::Mutex,
};

use allot::{
    domain::Amount,
    proto::{self, TransactionKind},
    store::verify,
};
use common::*;
use futures::FutureExt;
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestError, TestRunner},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Statement};
use tonic::{Code, Status};

const UNIT: i64 = 1_000_000;

// ---- the operations ------------------------------------------------------------------------

/// What a grant costs per unit (the cost basis that turns units into money).
#[derive(Debug, Clone, Copy)]
enum Price {
    Free,
    Usd,
    Eur,
}

impl Price {
    fn wire(self) -> (&'static str, &'static str) {
        match self {
            Price::Free => ("0", ""),
            Price::Usd => ("0.01", "USD"),
            Price::Eur => ("0.02", "EUR"),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// `effective_in` / `lasts`: minutes from now until it counts / from then until it expires.
    Grant {
        amount: i64,
        priority: i32,
        effective_in: Option<i64>,
        lasts: Option<i64>,
        price: Price,
    },
    Debit {
        units: i64,
    },
    Reserve {
        units: i64,
        ttl_minutes: i64,
    },
    /// Captures a hold (any: open, resolved or expired) at `percent` of its units.
    Capture {
        hold: Index,
        percent: i64,
    },
    Release {
        hold: Index,
    },
    /// Refunds a debit or capture: `percent` of its charge (None: all not yet refunded).
    Refund {
        charge: Index,
        percent: Option<i64>,
    },
    Void {
        grant: Index,
    },
    /// Signed units.
    Adjust {
        units: i64,
    },
    /// Moves the clock `minutes` forward, then sweeps.
    Advance {
        minutes: i64,
    },
}

#[derive(Debug, Clone)]
struct Case {
    overdraft: i64,
    steps: Vec<Step>,
}

/// Up to `max` units: mostly whole, sometimes down to the micro-unit.
fn units_up_to(max: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => (1i64..=max).prop_map(|u| u * UNIT),
        1 => 1i64..=max * UNIT,
    ]
}

fn units() -> impl Strategy<Value = i64> {
    units_up_to(120)
}

/// Durations are whole multiples of 5 minutes, so what falls due is never ambiguous against
/// the few real seconds a case takes.
fn minutes() -> impl Strategy<Value = i64> {
    prop_oneof![
        (1i64..=24).prop_map(|n| n * 5),
        (1i64..=72).prop_map(|h| h * 60),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let price = prop_oneof![Just(Price::Free), Just(Price::Usd), Just(Price::Eur)];
    prop_oneof![
        3 => (
            units_up_to(300),
            0i32..3,
            prop::option::weighted(0.25, minutes()),
            prop::option::weighted(0.5, minutes()),
            price,
        )
            .prop_map(|(amount, priority, effective_in, lasts, price)| Step::Grant {
                amount,
                priority,
                effective_in,
                lasts,
                price,
            }),
        4 => units().prop_map(|units| Step::Debit { units }),
        3 => (units(), prop_oneof![Just(5i64), Just(15), Just(60), Just(240)])
            .prop_map(|(units, ttl_minutes)| Step::Reserve { units, ttl_minutes }),
        3 => (any::<Index>(), 10i64..=150)
            .prop_map(|(hold, percent)| Step::Capture { hold, percent }),
        2 => any::<Index>().prop_map(|hold| Step::Release { hold }),
        2 => (any::<Index>(), prop::option::of(1i64..=130))
            .prop_map(|(charge, percent)| Step::Refund { charge, percent }),
        1 => any::<Index>().prop_map(|grant| Step::Void { grant }),
        2 => (units(), any::<bool>()).prop_map(|(units, up)| Step::Adjust {
            units: if up { units } else { -units },
        }),
        2 => minutes().prop_map(|minutes| Step::Advance { minutes }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(0i64), Just(25 * UNIT)],
        prop::collection::vec(step(), 15..=40),
    )
        .prop_map(|(overdraft, steps)| Case { overdraft, steps })
}

// ---- what the test knows -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Open,
    Captured,
    Released,
}

#[derive(Debug)]
struct Hold {
    id: String,
    units: i64,
    expire_time: i64,
    state: HoldState,
}

impl Hold {
    fn open_at(&self, now: i64) -> bool {
        self.state == HoldState::Open && now < self.expire_time
    }
}

#[derive(Debug)]
struct Charge {
    transaction_id: String,
    units: i64,
    refunded: i64,
}

#[derive(Debug)]
struct GrantInfo {
    id: String,
    expire_time: Option<i64>,
    voided: bool,
}

#[derive(Debug, Default)]
struct Model {
    holds: Vec<Hold>,
    charges: Vec<Charge>,
    grants: Vec<GrantInfo>,
}

/// The outcome the rules predict: success, or a FAILED_PRECONDITION with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Refused(&'static str),
}

fn expect_if(ok: bool, reason: &'static str) -> Expect {
    if ok {
        Expect::Ok
    } else {
        Expect::Refused(reason)
    }
}

/// How often each kind of step succeeded or was refused, over all cases (printed at the end,
/// visible with `--nocapture`).
static COVERAGE: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count(step: &Step, outcome: &str) {
    let name = format!("{step:?}");
    let name = name.split([' ', '{']).next().unwrap_or_default();
    *COVERAGE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{name} {outcome}"))
        .or_default() += 1;
}

// ---- helpers -------------------------------------------------------------------------------

fn amount(micros: i64) -> String {
    Amount::from_micros(micros).to_string()
}

/// Every table, every row in primary-key order, every column rendered to text.
async fn dump(conn: &DatabaseConnection) -> String {
    const TABLES: [(&str, &str); 9] = [
        ("accounts", "id"),
        ("wallets", "id"),
        ("grants", "id"),
        ("rate_cards", "version"),
        ("rate_card_head", "id"),
        ("transactions", "seq"),
        ("reservations", "id"),
        ("schedules", "id"),
        ("idempotency_keys", "scope, request_id"),
    ];
    let backend = conn.get_database_backend();
    let mut out = String::new();
    for (table, key) in TABLES {
        let sql = format!("SELECT * FROM {table} ORDER BY {key}");
        let rows = conn
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap_or_else(|err| panic!("dump {table}: {err}"));
        let _ = writeln!(out, "## {table}");
        for row in rows {
            let names = row.column_names();
            let cells: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{name}={}", cell(&row, i)))
                .collect();
            let _ = writeln!(out, "{}", cells.join(" | "));
        }
    }
    out
}

/// One value as text, whatever its type on SQLite or PostgreSQL.
fn cell(row: &QueryResult, i: usize) -> String {
    fn show<T: std::fmt::Debug>(value: Option<T>) -> String {
        value.map_or_else(|| "NULL".to_string(), |v| format!("{v:?}"))
    }
    if let Ok(v) = row.try_get_by_index::<Option<i64>>(i) {
        return show(v);
    }
    if let Ok(v) = row.try_get_by_index::<Option<i32>>(i) {
        return show(v);
    }
    if let Ok(v) = row.try_get_by_index::<Option<bool>>(i) {
        return show(v);
    }
    if let Ok(v) = row.try_get_by_index::<Option<String>>(i) {
        return show(v);
    }
    if let Ok(v) = row.try_get_by_index::<Option<Vec<u8>>>(i) {
        return show(v.map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()));
    }
    if let Ok(v) = row.try_get_by_index::<Option<f64>>(i) {
        return show(v);
    }
    // jsonb on PostgreSQL (text on SQLite, read above).
    if let Ok(v) = row.try_get_by_index::<Option<serde_json::Value>>(i) {
        return show(v);
    }
    panic!("column {i} of {:?}: no readable type", row.column_names());
}

/// The first line where two dumps differ, for the failure message.
fn first_difference(before: &str, after: &str) -> String {
    for (a, b) in before.lines().zip(after.lines()) {
        if a != b {
            return format!("before: {a}\n after: {b}");
        }
    }
    format!(
        "{} lines before, {} after",
        before.lines().count(),
        after.lines().count()
    )
}

// ---- one case ------------------------------------------------------------------------------

struct Run<'a> {
    app: &'a TestApp,
    account_id: String,
    wallet_id: String,
    overdraft: i64,
    model: Model,
}

#[derive(Debug, Clone, Copy)]
struct Balance {
    posted: i64,
    reserved: i64,
    available: i64,
}

impl Run<'_> {
    async fn balance(&self) -> Balance {
        let b = self.app.balance(&self.account_id).await;
        assert_eq!(amount_micros(&b.overdraft_limit), self.overdraft);
        Balance {
            posted: amount_micros(&b.posted),
            reserved: amount_micros(&b.reserved),
            available: amount_micros(&b.available),
        }
    }

    /// Runs one step: `None` when it did not apply (nothing to pick), else the outcome,
    /// what the rules predict, and the expected change of (posted, reserved) on success.
    async fn apply(
        &mut self,
        step: &Step,
        before: Balance,
    ) -> Option<(Result<(), Status>, Expect, Option<(i64, i64)>)> {
        let app = self.app;
        let now = app.clock.now_micros();
        let admin = &app.admin;
        Some(match step {
            Step::Grant {
                amount: units,
                priority,
                effective_in,
                lasts,
                price,
            } => {
                let effective = effective_in.map(|m| now + m * MINUTE);
                let expire = lasts.map(|m| effective.unwrap_or(now) + m * MINUTE);
                let (unit_price, currency) = price.wire();
                let result = app
                    .grants(admin)
                    .create_grant(proto::CreateGrantRequest {
                        grant: Some(proto::Grant {
                            wallet_id: self.wallet_id.clone(),
                            kind: proto::GrantKind::Purchase as i32,
                            amount: amount(*units),
                            priority: *priority,
                            effective_time: effective.map(ts),
                            expire_time: expire.map(ts),
                            unit_price: unit_price.into(),
                            currency: currency.into(),
                            ..Default::default()
                        }),
                        request_id: uuid(),
                    })
                    .await;
                let result = result.map(|r| {
                    let g = r.into_inner();
                    self.model.grants.push(GrantInfo {
                        id: g.id,
                        expire_time: g.expire_time.as_ref().map(|t| micros_of(Some(t))),
                        voided: false,
                    });
                });
                let posted = if effective.is_some() { 0 } else { *units };
                (result, Expect::Ok, Some((posted, 0)))
            }
            Step::Debit { units } => {
                let mut request = debit_request(&self.account_id, "units", &uuid());
                request.quantities = quantities(&[("n", &amount(*units))]);
                let result = app.ledger(admin).debit(request).await.map(|r| {
                    let t = r.into_inner().transaction.expect("transaction");
                    assert_eq!(amount_micros(&t.units), *units);
                    self.model.charges.push(Charge {
                        transaction_id: t.id,
                        units: *units,
                        refunded: 0,
                    });
                });
                let expect = expect_if(*units <= before.available, "INSUFFICIENT_CREDITS");
                (result, expect, Some((-units, 0)))
            }
            Step::Reserve { units, ttl_minutes } => {
                let result = app
                    .ledger(admin)
                    .reserve(proto::ReserveRequest {
                        account_id: self.account_id.clone(),
                        units: amount(*units),
                        ttl: Some(prost_types::Duration {
                            seconds: ttl_minutes * 60,
                            nanos: 0,
                        }),
                        request_id: uuid(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| {
                        let hold = r.into_inner();
                        assert_eq!(hold.state, proto::ReservationState::Open as i32);
                        assert_eq!(amount_micros(&hold.units), *units);
                        self.model.holds.push(Hold {
                            id: hold.id,
                            units: *units,
                            expire_time: micros_of(hold.expire_time.as_ref()),
                            state: HoldState::Open,
                        });
                    });
                let expect = expect_if(*units <= before.available, "INSUFFICIENT_CREDITS");
                (result, expect, Some((0, *units)))
            }
            Step::Capture { hold, percent } => {
                if self.model.holds.is_empty() {
                    return None;
                }
                let i = hold.index(self.model.holds.len());
                let hold = &self.model.holds[i];
                let actual = (hold.units * percent / 100).max(1);
                let open = hold.open_at(now);
                let hold_units = hold.units;
                let result = app
                    .ledger(admin)
                    .capture_reservation(proto::CaptureReservationRequest {
                        reservation_id: hold.id.clone(),
                        units: amount(actual),
                        request_id: uuid(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| {
                        let t = r.into_inner().transaction.expect("transaction");
                        assert_eq!(amount_micros(&t.units), actual);
                        self.model.holds[i].state = HoldState::Captured;
                        self.model.charges.push(Charge {
                            transaction_id: t.id,
                            units: actual,
                            refunded: 0,
                        });
                    });
                let expect = if !open {
                    Expect::Refused("RESERVATION_NOT_OPEN")
                } else {
                    expect_if(
                        actual <= before.available + hold_units,
                        "INSUFFICIENT_CREDITS",
                    )
                };
                (result, expect, Some((-actual, -hold_units)))
            }
            Step::Release { hold } => {
                if self.model.holds.is_empty() {
                    return None;
                }
                let i = hold.index(self.model.holds.len());
                let hold = &self.model.holds[i];
                let open = hold.open_at(now);
                let hold_units = hold.units;
                let result = app
                    .ledger(admin)
                    .release_reservation(proto::ReleaseReservationRequest {
                        reservation_id: hold.id.clone(),
                        request_id: uuid(),
                    })
                    .await
                    .map(|r| {
                        let released = r.into_inner();
                        assert_eq!(released.state, proto::ReservationState::Released as i32);
                        self.model.holds[i].state = HoldState::Released;
                    });
                let expect = expect_if(open, "RESERVATION_NOT_OPEN");
                (result, expect, Some((0, -hold_units)))
            }
            Step::Refund { charge, percent } => {
                if self.model.charges.is_empty() {
                    return None;
                }
                let i = charge.index(self.model.charges.len());
                let charge = &self.model.charges[i];
                let refundable = charge.units - charge.refunded;
                let units = percent.map(|p| (charge.units * p / 100).max(1));
                let refunding = units.unwrap_or(refundable);
                let result = app
                    .ledger(admin)
                    .refund(proto::RefundRequest {
                        transaction_id: charge.transaction_id.clone(),
                        units: units.map(amount).unwrap_or_default(),
                        reason: "property test".into(),
                        request_id: uuid(),
                    })
                    .await
                    .map(|r| {
                        let t = r.into_inner();
                        assert_eq!(t.kind, TransactionKind::Refund as i32);
                        assert_eq!(amount_micros(&t.units), refunding);
                        self.model.charges[i].refunded += refunding;
                    });
                let expect = expect_if(
                    refundable > 0 && refunding <= refundable,
                    "REFUND_EXCEEDS_CHARGE",
                );
                // Units returned to a grant that has expired or been voided leave again at
                // once: posted moves by at most `refunding`, checked by conservation.
                (result, expect, None)
            }
            Step::Void { grant } => {
                if self.model.grants.is_empty() {
                    return None;
                }
                let i = grant.index(self.model.grants.len());
                let info = &self.model.grants[i];
                let active = !info.voided && info.expire_time.is_none_or(|t| now < t);
                let result = app
                    .grants(admin)
                    .void_grant(proto::VoidGrantRequest {
                        id: info.id.clone(),
                        reason: "property test".into(),
                        request_id: uuid(),
                    })
                    .await
                    .map(|r| {
                        let g = r.into_inner();
                        assert_eq!(g.state, proto::GrantState::Voided as i32);
                        assert_eq!(g.remaining, "0");
                        self.model.grants[i].voided = true;
                    });
                (result, expect_if(active, "GRANT_NOT_ACTIVE"), None)
            }
            Step::Adjust { units } => {
                let result = app
                    .grants(admin)
                    .adjust_balance(proto::AdjustBalanceRequest {
                        wallet_id: self.wallet_id.clone(),
                        units: amount(*units),
                        reason: "property test".into(),
                        request_id: uuid(),
                    })
                    .await
                    .map(|r| {
                        let t = r.into_inner();
                        assert_eq!(t.kind, TransactionKind::Adjust as i32);
                        assert_eq!(amount_micros(&t.delta), *units);
                        if *units > 0 {
                            assert!(!t.grant_id.is_empty(), "a positive ADJUST makes a grant");
                            self.model.grants.push(GrantInfo {
                                id: t.grant_id,
                                expire_time: None,
                                voided: false,
                            });
                        }
                    });
                let expect = expect_if(
                    *units > 0 || -units <= before.available,
                    "INSUFFICIENT_CREDITS",
                );
                (result, expect, Some((*units, 0)))
            }
            Step::Advance { minutes } => {
                app.clock.advance(minutes * MINUTE);
                app.sweep().await;
                (Ok(()), Expect::Ok, None)
            }
        })
    }

    /// The invariants that hold after every step.
    /// `split`: also check the two halves of the history (every few steps: each statement
    /// costs a sweep transaction).
    async fn check(&self, at_step: &str, split: bool) {
        let app = self.app;
        let balance = self.balance().await;
        let now = app.clock.now_micros();

        // Conservation, running balances, the hash chain.
        let mut entries = app.all_transactions(&self.account_id).await;
        entries.reverse();
        let mut running = 0;
        let mut prev_hash = String::new();
        let mut last_time = i64::MIN;
        for entry in &entries {
            let time = micros_of(entry.create_time.as_ref());
            assert!(
                time >= last_time,
                "{at_step}: {} dated before the entry before it",
                entry.id
            );
            last_time = time;
            running += amount_micros(&entry.delta);
            assert_eq!(
                amount_micros(&entry.balance_after),
                running,
                "{at_step}: balance_after of {entry:?}"
            );
            assert_eq!(
                entry.prev_hash, prev_hash,
                "{at_step}: chain at {}",
                entry.id
            );
            prev_hash = entry.hash.clone();
        }
        assert_eq!(running, balance.posted, "{at_step}: Σ entries = posted");

        // Limits.
        assert!(
            balance.posted >= -self.overdraft,
            "{at_step}: posted {} below −overdraft {}",
            balance.posted,
            self.overdraft
        );
        assert_eq!(
            balance.available,
            balance.posted - balance.reserved + self.overdraft,
            "{at_step}: available = posted − reserved + overdraft"
        );
        if balance.reserved == 0 {
            assert!(
                balance.available >= 0,
                "{at_step}: available < 0 without holds"
            );
        }

        // Holds: reserved is exactly what the test knows to be open.
        let open: i64 = self
            .model
            .holds
            .iter()
            .filter(|h| h.open_at(now))
            .map(|h| h.units)
            .sum();
        assert_eq!(balance.reserved, open, "{at_step}: reserved = Σ open holds");

        // The statement since the beginning reconciles, and so do the two halves of the
        // history split at the middle entry's time: they meet at the balance of that time.
        let full = self.statement(None, None, at_step).await;
        assert_eq!(full.opening_balance, "0", "{at_step}");
        assert_eq!(
            amount_micros(&full.closing_balance),
            balance.posted,
            "{at_step}"
        );
        let count: i64 = full.lines.iter().map(|l| l.count).sum();
        assert_eq!(
            count as usize,
            entries.len(),
            "{at_step}: every entry on the statement"
        );
        if let Some(middle) = entries.get(entries.len() / 2).filter(|_| split) {
            let t = micros_of(middle.create_time.as_ref());
            let held = entries
                .iter()
                .rfind(|e| micros_of(e.create_time.as_ref()) < t)
                .map_or(0, |e| amount_micros(&e.balance_after));
            let upto = self.statement(None, Some(t), at_step).await;
            let from = self.statement(Some(t), None, at_step).await;
            assert_eq!(upto.opening_balance, "0", "{at_step}");
            assert_eq!(
                amount_micros(&upto.closing_balance),
                held,
                "{at_step}: balance at {t}"
            );
            assert_eq!(from.opening_balance, upto.closing_balance, "{at_step}");
            assert_eq!(
                amount_micros(&from.closing_balance),
                balance.posted,
                "{at_step}"
            );
            assert_eq!(upto.closing_money, from.opening_money, "{at_step}");
        }
    }

    /// GetStatement of the account's wallet over [start, end), checked to reconcile in units
    /// and in money per currency.
    async fn statement(
        &self,
        start: Option<i64>,
        end: Option<i64>,
        at_step: &str,
    ) -> proto::Statement {
        let app = self.app;
        let statement = app
            .reports(&app.admin)
            .get_statement(proto::GetStatementRequest {
                account_id: self.account_id.clone(),
                start_time: start.map(ts),
                end_time: end.map(ts),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{at_step}: statement: {s:?}"))
            .into_inner();
        let lines: i64 = statement
            .lines
            .iter()
            .map(|l| amount_micros(&l.units))
            .sum();
        assert_eq!(
            amount_micros(&statement.opening_balance) + lines,
            amount_micros(&statement.closing_balance),
            "{at_step}: opening + Σ lines = closing"
        );
        let mut money = money_map(&statement.opening_money);
        for line in &statement.lines {
            for (currency, value) in money_map(&line.money) {
                *money.entry(currency).or_default() += value;
            }
        }
        money.retain(|_, v| !v.is_zero());
        assert_eq!(
            money,
            money_map(&statement.closing_money),
            "{at_step}: money reconciles per currency"
        );
        statement
    }

    /// `allot verify` finds nothing wrong, and every hold was resolved at most once.
    async fn verify(&self) {
        let conn = self.app.handles.store.connection();
        let report = verify::verify_snapshot(conn).await.expect("verify");
        assert!(report.wallets >= 1 && report.is_ok(), "verify: {report:#?}");
        // Holds resolved once: at most one CAPTURE or RELEASE per hold, and exactly one for
        // every hold that is no longer open.
        let mut resolutions: BTreeMap<String, usize> = BTreeMap::new();
        for entry in self.app.all_transactions(&self.account_id).await {
            let kind = TransactionKind::try_from(entry.kind).expect("kind");
            if matches!(kind, TransactionKind::Capture | TransactionKind::Release) {
                *resolutions.entry(entry.reservation_id.clone()).or_default() += 1;
            }
        }
        let now = self.app.clock.now_micros();
        for hold in &self.model.holds {
            let n = resolutions.get(&hold.id).copied().unwrap_or(0);
            let expected = usize::from(!hold.open_at(now));
            assert_eq!(n, expected, "verify: resolutions of {hold:?}");
        }
    }
}

async fn run_case(case: Case) {
    let app = spawn_app().await;
    let result = AssertUnwindSafe(run_steps(&app, &case))
        .catch_unwind()
        .await;
    app.stop().await;
    if let Err(panic) = result {
        resume_unwind(panic);
    }
}

async fn run_steps(app: &TestApp, case: &Case) {
    app.publish_card(vec![rate("units", "0", &[("n", "1", "1")], "")])
        .await;
    let account = app.create_account("prop", "").await;
    let wallet = app
        .create_wallet(&account.id, "credits", &amount(case.overdraft))
        .await;
    let mut run = Run {
        app,
        account_id: account.id.clone(),
        wallet_id: wallet.id.clone(),
        overdraft: case.overdraft,
        model: Model::default(),
    };
    let conn = app.handles.store.connection();
    for (n, step) in case.steps.iter().enumerate() {
        let at_step = format!("step {n} {step:?}");
        // Nothing is due between steps (durations are multiples of 5 minutes and every clock
        // move sweeps); sweep anyway so the dump only sees this step's doing.
        app.sweep().await;
        let before = run.balance().await;
        let dump_before = match step {
            Step::Advance { .. } => String::new(),
            _ => dump(conn).await,
        };
        let Some((result, expect, moves)) = run.apply(step, before).await else {
            count(step, "skipped");
            continue;
        };
        match expect {
            Expect::Ok => count(step, "ok"),
            Expect::Refused(reason) => count(step, reason),
        }
        match (result, expect) {
            (Ok(()), Expect::Ok) => {
                if !matches!(step, Step::Advance { .. }) {
                    // A success leaves a trace (at least its request_id): the dump sees it.
                    assert!(dump(conn).await != dump_before, "{at_step}: no trace");
                }
                if let Some((posted, reserved)) = moves {
                    let after = run.balance().await;
                    assert_eq!(
                        after.posted - before.posted,
                        posted,
                        "{at_step}: posted moved"
                    );
                    assert_eq!(
                        after.reserved - before.reserved,
                        reserved,
                        "{at_step}: reserved moved"
                    );
                }
            }
            (Err(status), Expect::Refused(reason)) => {
                assert_error(&status, Code::FailedPrecondition, reason);
                let dump_after = dump(conn).await;
                assert!(
                    dump_after == dump_before,
                    "{at_step}: the rejected operation changed the database:\n{}",
                    first_difference(&dump_before, &dump_after)
                );
            }
            (Ok(()), Expect::Refused(reason)) => {
                panic!("{at_step}: succeeded, expected {reason} (balance before {before:?})")
            }
            (Err(status), Expect::Ok) => {
                panic!("{at_step}: expected success (balance before {before:?}), got {status:?}")
            }
        }
        run.check(&at_step, n % 4 == 0 || n + 1 == case.steps.len())
            .await;
    }
    run.verify().await;
}

#[test]
fn random_lifecycles_keep_the_ledger_consistent() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let config = Config {
        cases,
        failure_persistence: None,
        // Each shrink step runs a whole case against a new server: bound the time.
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        runtime.block_on(run_case(case));
        Ok(())
    });
    let coverage = COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!("steps by outcome: {coverage:#?}");
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("{reason}\nminimal failing case: {case:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}
