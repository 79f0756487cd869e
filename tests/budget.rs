//! `ReportService.GetBudget` and `GetUsageReport` (issue 12, points 1 and 2) against values
//! worked out by hand on a history driven by the server's clock: burn rates over complete
//! days, run-outs with arrivals before and after them, holds, expiring grants, schedules,
//! roll-ups over sub-accounts, usage by day / week / month, by metadata and by sub-account,
//! money that reconciles with statements, scope and roles.

mod common;

use std::time::Duration;

use allot::proto::{self, Outlook};
use common::*;
use tonic::Code;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

/// Moves the server's clock to one hour past the next UTC midnight; returns that midnight.
fn to_next_day(app: &TestApp) -> i64 {
    let now = app.clock.now_micros();
    let midnight = (now.div_euclid(DAY) + 1) * DAY;
    app.clock.advance(midnight + HOUR - now);
    midnight
}

fn ts(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("a timestamp");
    ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000
}

fn num(text: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|_| panic!("a number: {text:?}"))
}

fn close(actual: &str, expected: f64, what: &str) {
    assert!(
        (num(actual) - expected).abs() < 0.001,
        "{what}: {actual} but expected {expected}"
    );
}

/// A grant of `amount` at `price` USD, effective at `effective` (None: now), expiring at
/// `expire`.
async fn grant_at(
    app: &TestApp,
    wallet_id: &str,
    amount: &str,
    price: &str,
    effective: Option<i64>,
    expire: Option<i64>,
) -> proto::Grant {
    let mut request = grant_request(wallet_id, amount, price);
    let grant = request.grant.as_mut().unwrap();
    grant.effective_time = effective.map(ts);
    grant.expire_time = expire.map(ts);
    app.grants(&app.admin)
        .create_grant(request)
        .await
        .expect("grant")
        .into_inner()
}

async fn debits(app: &TestApp, account_id: &str, n: usize, user: &str) -> Vec<proto::Transaction> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut request = debit_request(account_id, "ten", &uuid());
        request.metadata = [("user".to_string(), user.to_string())].into();
        out.push(
            app.ledger(&app.admin)
                .debit(request)
                .await
                .expect("debit")
                .into_inner()
                .transaction
                .expect("entry"),
        );
    }
    out
}

async fn budget(
    app: &TestApp,
    token: &str,
    request: proto::GetBudgetRequest,
) -> Result<proto::Budget, tonic::Status> {
    app.reports(token)
        .get_budget(request)
        .await
        .map(|r| r.into_inner())
}

fn of_wallet(wallet_id: &str) -> proto::GetBudgetRequest {
    proto::GetBudgetRequest {
        wallet_id: wallet_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_wallet_budget_matches_the_hand_computed_forecast() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("ten", "10", &[], "")]).await;
    let d0 = to_next_day(&app);
    let (account, wallet) = app.funded("acme", "").await;
    let a = grant_at(&app, &wallet.id, "1000", "0.01", None, Some(d0 + 60 * DAY)).await;
    // Days 0–2: 60 units a day; days 3–9: 30 a day.
    for day in 0..10 {
        debits(&app, &account.id, if day < 3 { 6 } else { 3 }, "alice").await;
        app.clock.advance(DAY);
    }
    // Day 10: 100 units expiring on day 25 (they burn first), 300 arriving on day 30, a hold.
    grant_at(&app, &wallet.id, "100", "0.02", None, Some(d0 + 25 * DAY)).await;
    grant_at(
        &app,
        &wallet.id,
        "300",
        "0.03",
        Some(d0 + 30 * DAY),
        Some(d0 + 60 * DAY),
    )
    .await;
    reserve_units(&app, &account.id, "20", Some(Duration::from_secs(3600)))
        .await
        .expect("hold");

    let b = budget(&app, &app.admin, of_wallet(&wallet.id))
        .await
        .expect("budget");
    let as_of = micros(&b.as_of);
    assert_eq!(b.wallet_id, wallet.id);
    assert_eq!(b.account_id, account.id);
    assert_eq!(micros(&b.term_start_time), micros(&a.effective_time));
    assert_eq!(micros(&b.term_end_time), d0 + 60 * DAY);
    assert_eq!(b.granted, "1100");
    assert_eq!(b.consumed, "390");
    assert_eq!(b.remaining, "710");
    assert_eq!(b.reserved, "20");
    assert_eq!(b.expiring_30d, "100");
    assert_eq!(b.expired, "0");
    assert_eq!(b.upcoming, "300");
    // The last 7 complete days (3–9) and the 10 the wallet has lived.
    assert_eq!(b.burn_rate_7d, "30");
    assert_eq!(b.burn_rate_30d, "39");
    assert_eq!(
        (b.currency.as_str(), b.remaining_money.as_str()),
        ("USD", "8.1")
    );

    // Left to burn now: 710 − 20 held = 690; 300 more on day 30.
    let days_left = (d0 + 60 * DAY - as_of) as f64 / DAY as f64;
    // At 30 a day the 690 last 23 days (to day 33): the 300 arrive first, so 990 in all.
    let f7 = b.forecast_7d.as_ref().unwrap();
    assert_eq!(f7.outlook(), Outlook::RunsOut);
    let runout = micros(&b.runout_time_7d);
    assert_eq!(runout, micros(&f7.runout_time));
    assert!((runout - (as_of + 33 * DAY)).abs() < 1_000_000, "{runout}");
    close(
        &f7.units_missing,
        30.0 * days_left - 990.0,
        "missing at 30/day",
    );
    assert_eq!(f7.units_left, "0");
    // Missing units at the price of the last grant to burn (the one of day 30).
    let money = &f7.money_missing[0];
    assert_eq!(money.currency, "USD");
    close(
        &money.amount,
        num(&f7.units_missing) * 0.03,
        "money missing",
    );
    // At 39 a day the 690 run out before the 300 arrive.
    let f30 = b.forecast_30d.as_ref().unwrap();
    assert_eq!(f30.outlook(), Outlook::RunsOut);
    let expected = as_of + (690.0 / 39.0 * DAY as f64) as i64;
    assert!((micros(&b.runout_time_30d) - expected).abs() < 1_000_000);
    close(
        &f30.units_missing,
        39.0 * days_left - 990.0,
        "missing at 39/day",
    );

    let kinds: Vec<_> = b
        .events
        .iter()
        .map(|e| (e.kind(), e.units.as_str()))
        .collect();
    use proto::budget_event::Kind;
    assert_eq!(
        kinds,
        [
            (Kind::GrantExpires, "100"),
            (Kind::GrantEffective, "300"),
            (Kind::GrantExpires, "610")
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_roll_up_lists_each_sub_account_and_sums_them() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("ten", "10", &[], "")]).await;
    let d0 = to_next_day(&app);
    let (org, org_wallet) = app.funded("org", "").await;
    grant_at(&app, &org_wallet.id, "500", "0.01", None, None).await;
    let dept = app.create_account("dept", &org.id).await;
    let dept_wallet = app.create_wallet(&dept.id, "credits", "").await;
    grant_at(
        &app,
        &dept_wallet.id,
        "200",
        "0.01",
        None,
        Some(d0 + 40 * DAY),
    )
    .await;
    for _ in 0..5 {
        debits(&app, &dept.id, 2, "bob").await;
        app.clock.advance(DAY);
    }

    let b = budget(
        &app,
        &app.admin,
        proto::GetBudgetRequest {
            account_id: org.id.clone(),
            include_sub_accounts: true,
            ..Default::default()
        },
    )
    .await
    .expect("roll-up");
    let as_of = micros(&b.as_of);
    assert_eq!(b.wallet_id, "");
    assert_eq!(b.lines.len(), 2);
    let (own, sub) = (&b.lines[0], &b.lines[1]);
    assert_eq!(
        (own.account_id.as_str(), own.wallet_id.as_str()),
        (org.id.as_str(), org_wallet.id.as_str())
    );
    assert_eq!(sub.account_id, dept.id);

    // The org burns nothing: no run-out, everything left; its term never ends.
    let f = own.forecast_7d.as_ref().unwrap();
    assert_eq!(f.outlook(), Outlook::NoBurn);
    assert!(own.runout_time_7d.is_none() && own.term_end_time.is_none());
    assert_eq!(
        (own.burn_rate_7d.as_str(), f.units_left.as_str()),
        ("0", "500")
    );
    // The department: 100 units in 5 days → 20 a day; 100 left last 5 more days.
    assert_eq!(
        (sub.granted.as_str(), sub.consumed.as_str()),
        ("200", "100")
    );
    assert_eq!(sub.burn_rate_7d, "20");
    assert!((micros(&sub.runout_time_7d) - (as_of + 5 * DAY)).abs() < 1_000_000);
    assert_eq!(micros(&sub.term_end_time), d0 + 40 * DAY);

    // The total: sums, the earliest run-out, open-ended as the org's term is.
    assert_eq!(
        (
            b.granted.as_str(),
            b.consumed.as_str(),
            b.remaining.as_str()
        ),
        ("700", "100", "600")
    );
    assert_eq!(b.burn_rate_7d, "20");
    assert_eq!(b.runout_time_7d, sub.runout_time_7d);
    assert!(b.term_end_time.is_none());
    assert_eq!(b.remaining_money, "6");

    // Without include_sub_accounts: the org's own wallet, no lines.
    let own_only = budget(
        &app,
        &app.admin,
        proto::GetBudgetRequest {
            account_id: org.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("own budget");
    assert!(own_only.lines.is_empty());
    assert_eq!(own_only.granted, "500");
    app.stop().await;
}

#[tokio::test]
async fn scheduled_allotments_count_until_the_term_ends() {
    let app = spawn_app().await;
    let d0 = to_next_day(&app);
    let (_, wallet) = app.funded("sched", "").await;
    let start = app.clock.now_micros();
    app.grants(&app.admin)
        .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(proto::AllotmentSchedule {
                wallet_id: wallet.id.clone(),
                amount: "70".into(),
                period: proto::SchedulePeriod::Weekly as i32,
                start_time: Some(ts(start)),
                end_time: Some(ts(d0 + 28 * DAY)),
                unit_price: "0.5".into(),
                currency: "EUR".into(),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .expect("schedule");
    let b = budget(&app, &app.admin, of_wallet(&wallet.id))
        .await
        .expect("budget");
    assert_eq!(micros(&b.term_start_time), start);
    assert_eq!(micros(&b.term_end_time), d0 + 28 * DAY);
    assert_eq!((b.granted.as_str(), b.remaining.as_str()), ("70", "70"));
    // Periods 2–4 start on days 7, 14 and 21 (plus the hour), before the end.
    assert_eq!(b.upcoming, "210");
    let arrivals: Vec<i64> = b
        .events
        .iter()
        .filter(|e| e.kind() == proto::budget_event::Kind::ScheduledAllotment)
        .map(|e| micros(&e.time))
        .collect();
    assert_eq!(
        arrivals,
        [start + 7 * DAY, start + 14 * DAY, start + 21 * DAY]
    );
    // Nothing burns: just before the end the last period's 70 are left.
    let f = b.forecast_30d.as_ref().unwrap();
    assert_eq!(f.outlook(), Outlook::NoBurn);
    assert_eq!(f.units_left, "70");
    assert_eq!(f.money_left[0].amount, "35");
    assert_eq!(
        (b.currency.as_str(), b.remaining_money.as_str()),
        ("EUR", "35")
    );
    app.stop().await;
}

#[tokio::test]
async fn budget_requests_are_checked_and_scoped() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("scoped", "100").await;
    let (other, _) = app.funded("other", "100").await;
    let procurement = token(&["procurement"], &[&account.id]);
    budget(&app, &procurement, of_wallet(&wallet.id))
        .await
        .expect("procurement reads its own account's budget");
    let denied = budget(
        &app,
        &procurement,
        proto::GetBudgetRequest {
            account_id: other.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let service = token(&["service"], &[&account.id]);
    let refused = budget(&app, &service, of_wallet(&wallet.id))
        .await
        .unwrap_err();
    assert_error(&refused, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let both = budget(
        &app,
        &app.admin,
        proto::GetBudgetRequest {
            account_id: account.id.clone(),
            wallet_id: wallet.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_invalid(&both, "INVALID_FIELD", "account_id");
    let no_wallet = budget(
        &app,
        &app.admin,
        proto::GetBudgetRequest {
            account_id: account.id.clone(),
            unit: "tokens".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(no_wallet.code(), Code::NotFound);
    app.stop().await;
}

async fn usage(
    app: &TestApp,
    token: &str,
    request: proto::GetUsageReportRequest,
) -> Result<proto::UsageReport, tonic::Status> {
    app.reports(token)
        .get_usage_report(request)
        .await
        .map(|r| r.into_inner())
}

/// (period start, account, request type, metadata value, requests, units, money).
fn rows(report: &proto::UsageReport) -> Vec<(i64, String, String, String, i64, String, String)> {
    report
        .rows
        .iter()
        .map(|r| {
            (
                micros(&r.period_start),
                r.account_id.clone(),
                r.request_type.clone(),
                r.metadata_value.clone(),
                r.requests,
                r.units.clone(),
                r.money.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_by_day_metadata_and_sub_account_reconciles_with_statements() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("ten", "10", &[], "")]).await;
    let d0 = to_next_day(&app);
    let (account, wallet) = app.funded("usage", "").await;
    grant_at(&app, &wallet.id, "1000", "0.01", None, None).await;
    let sub = app.create_account("usage-sub", &account.id).await;
    let sub_wallet = app.create_wallet(&sub.id, "credits", "").await;
    grant_at(&app, &sub_wallet.id, "100", "0.02", None, None).await;
    let alice = debits(&app, &account.id, 2, "alice").await;
    debits(&app, &account.id, 1, "bob").await;
    debits(&app, &sub.id, 1, "carol").await;
    app.clock.advance(DAY);
    debits(&app, &account.id, 1, "alice").await;
    refund(&app, &alice[0].id, "5", &uuid())
        .await
        .expect("refund");

    let window = |key: &str, sub_accounts: bool, granularity: proto::Granularity| {
        proto::GetUsageReportRequest {
            account_id: account.id.clone(),
            start_time: Some(ts(d0)),
            end_time: Some(ts(d0 + 2 * DAY)),
            granularity: granularity as i32,
            group_by_metadata_key: key.into(),
            include_sub_accounts: sub_accounts,
            ..Default::default()
        }
    };
    let a = account.id.clone();
    let s = sub.id.clone();
    let row = |day: i64, acct: &str, value: &str, requests: i64, units: &str, money: &str| {
        (
            d0 + day * DAY,
            acct.to_string(),
            "ten".to_string(),
            value.to_string(),
            requests,
            units.to_string(),
            money.to_string(),
        )
    };

    let by_day = usage(&app, &app.admin, window("", false, proto::Granularity::Day))
        .await
        .expect("usage by day");
    // Day 1: one debit of 10, less the 5 refunded of day 0's.
    assert_eq!(
        rows(&by_day),
        [
            row(0, &a, "", 3, "30", "0.3"),
            row(1, &a, "", 1, "5", "0.05")
        ]
    );
    assert_eq!(
        (by_day.total_requests, by_day.total_units.as_str()),
        (4, "35")
    );
    assert_eq!(by_day.total_money[0].amount, "0.35");

    // Money reconciles with the statement of the same window.
    let statement = app
        .reports(&app.admin)
        .get_statement(proto::GetStatementRequest {
            wallet_id: wallet.id.clone(),
            start_time: Some(ts(d0)),
            end_time: Some(ts(d0 + 2 * DAY)),
            ..Default::default()
        })
        .await
        .expect("statement")
        .into_inner();
    let spent: f64 = statement
        .lines
        .iter()
        .filter(|l| {
            matches!(
                l.kind(),
                proto::TransactionKind::Debit
                    | proto::TransactionKind::Capture
                    | proto::TransactionKind::Refund
            )
        })
        .flat_map(|l| l.money.iter())
        .map(|m| num(&m.amount))
        .sum();
    assert!((spent.abs() - 0.35).abs() < 1e-9, "statement money {spent}");

    let by_user = usage(
        &app,
        &app.admin,
        window("user", false, proto::Granularity::Day),
    )
    .await
    .expect("usage by user");
    assert_eq!(
        rows(&by_user),
        [
            row(0, &a, "alice", 2, "20", "0.2"),
            row(0, &a, "bob", 1, "10", "0.1"),
            // The refund counts under the refunded debit's user.
            row(1, &a, "alice", 1, "5", "0.05"),
        ]
    );

    let with_sub = usage(&app, &app.admin, window("", true, proto::Granularity::Day))
        .await
        .expect("usage with sub-accounts");
    let mut expected = vec![
        row(0, &a, "", 3, "30", "0.3"),
        row(0, &s, "", 1, "10", "0.2"),
        row(1, &a, "", 1, "5", "0.05"),
    ];
    expected.sort();
    assert_eq!(rows(&with_sub), expected);

    // A week and a month hold both days unless a boundary falls between them.
    for (granularity, start_of) in [
        (proto::Granularity::Week, week_start as fn(i64) -> i64),
        (proto::Granularity::Month, month_start),
    ] {
        let report = usage(&app, &app.admin, window("", false, granularity))
            .await
            .expect("usage by period");
        let (p0, p1) = (start_of(d0), start_of(d0 + DAY));
        let expected = if p0 == p1 {
            vec![(
                p0,
                a.clone(),
                "ten".to_string(),
                String::new(),
                4,
                "35".to_string(),
                "0.35".to_string(),
            )]
        } else {
            vec![
                (
                    p0,
                    a.clone(),
                    "ten".to_string(),
                    String::new(),
                    3,
                    "30".to_string(),
                    "0.3".to_string(),
                ),
                (
                    p1,
                    a.clone(),
                    "ten".to_string(),
                    String::new(),
                    1,
                    "5".to_string(),
                    "0.05".to_string(),
                ),
            ]
        };
        assert_eq!(rows(&report), expected, "{granularity:?}");
    }
    app.stop().await;
}

fn week_start(micros: i64) -> i64 {
    let day = micros.div_euclid(DAY);
    (day - (day + 3).rem_euclid(7)) * DAY
}

fn month_start(micros: i64) -> i64 {
    use chrono::Datelike;
    let date = chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .date_naive()
        .with_day(1)
        .unwrap();
    date.and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

#[tokio::test]
async fn usage_requests_are_checked_and_scoped() {
    let app = spawn_app().await;
    let (account, _) = app.funded("checked", "100").await;
    let (other, _) = app.funded("elsewhere", "100").await;
    let d0 = (app.clock.now_micros().div_euclid(DAY)) * DAY;
    let request = |start: i64, end: i64, key: &str| proto::GetUsageReportRequest {
        account_id: account.id.clone(),
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        group_by_metadata_key: key.into(),
        ..Default::default()
    };
    let partial = usage(&app, &app.admin, request(d0 + HOUR, d0 + DAY, ""))
        .await
        .unwrap_err();
    assert_invalid(&partial, "INVALID_FIELD", "start_time");
    // Any window when split by metadata, up to 93 days.
    usage(&app, &app.admin, request(d0 + HOUR, d0 + DAY, "user"))
        .await
        .expect("a partial-day window split by metadata");
    let long = usage(&app, &app.admin, request(d0, d0 + 94 * DAY, "user"))
        .await
        .unwrap_err();
    assert_invalid(&long, "REPORT_TOO_LARGE", "end_time");
    let missing = usage(
        &app,
        &app.admin,
        proto::GetUsageReportRequest {
            account_id: account.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_invalid(&missing, "MISSING_FIELD", "start_time");
    let bad_enum = usage(
        &app,
        &app.admin,
        proto::GetUsageReportRequest {
            granularity: 42,
            ..request(d0, d0 + DAY, "")
        },
    )
    .await
    .unwrap_err();
    assert_invalid(&bad_enum, "INVALID_ENUM", "granularity");

    let procurement = token(&["procurement"], &[&account.id]);
    usage(&app, &procurement, request(d0, d0 + DAY, ""))
        .await
        .expect("procurement reads its own usage");
    let out_of_scope = usage(
        &app,
        &procurement,
        proto::GetUsageReportRequest {
            account_id: other.id.clone(),
            ..request(d0, d0 + DAY, "")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(out_of_scope.code(), Code::PermissionDenied);
    let service = token(&["service"], &[&account.id]);
    let refused = usage(&app, &service, request(d0, d0 + DAY, ""))
        .await
        .unwrap_err();
    assert_error(&refused, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn extreme_amounts_saturate_the_rollup_and_never_fail_a_debit() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("huge", "9000000000000", &[], "")])
        .await;
    let d0 = to_next_day(&app);
    let (account, wallet) = app.funded("extreme", "").await;
    let (other, other_wallet) = app.funded("extreme-too", "").await;
    // Twice the most a wallet can hold, spent on one day: more than a 64-bit counter holds.
    for (account, wallet) in [(&account, &wallet), (&other, &other_wallet)] {
        for _ in 0..2 {
            grant_at(&app, &wallet.id, "9000000000000", "1", None, None).await;
            app.ledger(&app.admin)
                .debit(debit_request(&account.id, "huge", &uuid()))
                .await
                .expect("a debit whose rollup counter saturates still succeeds");
        }
    }
    // Every account's margin sums both saturated counters: past 64 bits (SQLite's SUM
    // refuses; the report then sums the rows itself).
    let margin = app
        .reports(&app.admin)
        .get_margin_report(proto::GetMarginReportRequest {
            start_time: Some(ts(d0)),
            end_time: Some(ts(d0 + DAY)),
            ..Default::default()
        })
        .await
        .expect("margin")
        .into_inner();
    assert_eq!(margin.rows.len(), 1, "{margin:#?}");
    assert_eq!(margin.rows[0].requests, 4);
    assert_eq!(margin.rows[0].units, "18446744073709.551614");
    assert_eq!(margin.rows[0].revenue, "18446744073709.551614");
    let report = usage(
        &app,
        &app.admin,
        proto::GetUsageReportRequest {
            account_id: account.id.clone(),
            start_time: Some(ts(d0)),
            end_time: Some(ts(d0 + DAY)),
            ..Default::default()
        },
    )
    .await
    .expect("usage");
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].requests, 2);
    assert_eq!(report.rows[0].units, "9223372036854.775807");
    let b = budget(&app, &app.admin, of_wallet(&wallet.id))
        .await
        .expect("budget");
    assert_eq!(
        (b.granted.as_str(), b.consumed.as_str()),
        ("18000000000000", "18000000000000")
    );
    let verified = allot::store::verify::verify_snapshot(app.handles.store.connection())
        .await
        .expect("verify");
    assert!(verified.is_ok(), "{verified:#?}");
    app.stop().await;
}
