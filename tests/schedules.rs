//! Allotment schedules and statements over gRPC, driven by the server's controllable clock
//! (never by sleeps).
//!
//! Schedules: every period kind grants at once for the period that has started and exactly
//! once per later period, anchored to `start_time` (monthly on the 31st → the last day of
//! shorter months); unused units expire or roll over up to the cap; after downtime every
//! missed period is granted once, in order, also when two server replicas and statement
//! readers sweep at the same time; `end_time` stops a schedule and a future start waits.
//!
//! Statements: opening + Σ lines = closing in units and in money per currency over any
//! window; closing is the posted balance at the window's end; expiry that fell due is on the
//! statement without an explicit sweep; scope and roles.
//!
//! History: a wallet's entries are in time order and statements split at any entry's time
//! chain (closing of the first half = opening of the second = the balance of that time) —
//! also after a schedule starting in the past, and with two replicas writing one wallet.

mod common;

use std::{collections::BTreeMap, time::Duration};

use allot::{
    domain::Amount,
    proto::{
        self, GrantState, RolloverPolicy, SchedulePeriod, TransactionKind,
        report_service_client::ReportServiceClient,
    },
};
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use common::*;
use rust_decimal::Decimal;
use tokio::task::JoinHandle;
use tonic::{Code, Status};
use tonic_types::StatusExt;

// ---- helpers -------------------------------------------------------------------------------

fn date(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("a representable time")
}

/// Moves the server's clock to `target` (it then keeps running from there).
fn move_clock_to(app: &TestApp, target: i64) {
    let now = app.clock.now_micros();
    if target > now {
        app.clock.advance(target - now);
    }
}

/// Start of period `k` of a schedule starting at `start`, computed independently of the
/// server (calendar months and years through chrono, which clamps the 31st to month end).
fn period_start(start: i64, period: SchedulePeriod, k: u32) -> i64 {
    let months = |n: u32| {
        date(start)
            .checked_add_months(Months::new(n))
            .expect("in range")
            .timestamp_micros()
    };
    match period {
        SchedulePeriod::Daily => start + i64::from(k) * DAY,
        SchedulePeriod::Weekly => start + i64::from(k) * 7 * DAY,
        SchedulePeriod::Monthly => months(k),
        SchedulePeriod::Yearly => months(12 * k),
        SchedulePeriod::Unspecified => unreachable!(),
    }
}

/// A rate card with `units`: a debit with quantity `n` costs exactly `n` units.
async fn publish_units_card(app: &TestApp) {
    app.publish_card(vec![rate("units", "0", &[("n", "1", "1")], "")])
        .await;
}

async fn spend(app: &TestApp, account_id: &str, units: &str) -> proto::Transaction {
    let mut request = debit_request(account_id, "units", &uuid());
    request.quantities = quantities(&[("n", units)]);
    app.ledger(&app.admin)
        .debit(request)
        .await
        .unwrap_or_else(|status| panic!("debit of {units}: {status:?}"))
        .into_inner()
        .transaction
        .expect("debit transaction")
}

fn schedule_template(
    wallet_id: &str,
    period: SchedulePeriod,
    amount: &str,
) -> proto::AllotmentSchedule {
    proto::AllotmentSchedule {
        wallet_id: wallet_id.into(),
        amount: amount.into(),
        period: period as i32,
        rollover_policy: RolloverPolicy::None as i32,
        unit_price: "0.01".into(),
        currency: "USD".into(),
        contract_ref: "contract-7".into(),
        ..Default::default()
    }
}

async fn create_schedule_with(
    app: &TestApp,
    token: &str,
    schedule: proto::AllotmentSchedule,
    request_id: &str,
) -> Result<proto::AllotmentSchedule, Status> {
    app.grants(token)
        .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(schedule),
            request_id: request_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn create_schedule(
    app: &TestApp,
    schedule: proto::AllotmentSchedule,
) -> Result<proto::AllotmentSchedule, Status> {
    create_schedule_with(app, &app.admin, schedule, &uuid()).await
}

async fn list_schedules(app: &TestApp, wallet_id: &str) -> Vec<proto::AllotmentSchedule> {
    app.grants(&app.admin)
        .list_allotment_schedules(proto::ListAllotmentSchedulesRequest {
            wallet_id: wallet_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list schedules")
        .into_inner()
        .allotment_schedules
}

async fn one_schedule(app: &TestApp, wallet_id: &str) -> proto::AllotmentSchedule {
    let mut all = list_schedules(app, wallet_id).await;
    assert_eq!(all.len(), 1, "one schedule: {all:?}");
    all.remove(0)
}

/// The schedule's grants, by effective time.
async fn schedule_grants(app: &TestApp, wallet_id: &str, schedule_id: &str) -> Vec<proto::Grant> {
    let mut grants: Vec<proto::Grant> = app
        .all_grants(wallet_id)
        .await
        .into_iter()
        .filter(|g| g.schedule_id == schedule_id)
        .collect();
    grants.sort_by_key(|g| micros_of(g.effective_time.as_ref()));
    grants
}

fn kinds(ts: &[proto::Transaction]) -> Vec<TransactionKind> {
    ts.iter().map(kind).collect()
}

/// Summarises a ledger entry as (kind, grant, units, delta, time).
fn entry(t: &proto::Transaction) -> (TransactionKind, String, String, String, i64) {
    (
        kind(t),
        t.grant_id.clone(),
        t.units.clone(),
        t.delta.clone(),
        micros_of(t.create_time.as_ref()),
    )
}

async fn grant_with(
    app: &TestApp,
    wallet_id: &str,
    amount: &str,
    priority: i32,
    price: (&str, &str),
    expire_time: Option<i64>,
) -> proto::Grant {
    let mut request = grant_request(wallet_id, amount, price.0);
    let grant = request.grant.as_mut().expect("grant");
    grant.kind = proto::GrantKind::Purchase as i32;
    grant.priority = priority;
    grant.expire_time = expire_time.map(ts);
    grant.currency = price.1.into();
    app.grants(&app.admin)
        .create_grant(request)
        .await
        .expect("create grant")
        .into_inner()
}

// ---- schedules: one period after another ---------------------------------------------------

/// A schedule starting now grants the first period at once; one period later exactly one new
/// grant exists and the unused rest of the previous one expired (EXPIRE entry at the period
/// boundary); sweeping again changes nothing.
async fn grants_once_per_period(period: SchedulePeriod) {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, wallet) = app.funded("periodic", "").await;
    let start = now_second(&app);
    let expected = |k| period_start(start, period, k);

    let mut template = schedule_template(&wallet.id, period, "100");
    template.start_time = Some(ts(start));
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");
    assert!(schedule.id.starts_with("sch_"), "{}", schedule.id);
    assert_eq!(schedule.wallet_id, wallet.id);
    assert_eq!(schedule.amount, "100");
    assert_eq!(schedule.period, period as i32);
    assert_eq!(schedule.rollover_policy, RolloverPolicy::None as i32);
    assert_eq!(
        schedule.kind,
        proto::GrantKind::Contract as i32,
        "kind defaults to CONTRACT"
    );
    assert_eq!(micros_of(schedule.start_time.as_ref()), start);
    assert_eq!(micros_of(schedule.next_grant_time.as_ref()), expected(1));
    assert_eq!(
        list_schedules(&app, &wallet.id).await,
        std::slice::from_ref(&schedule)
    );

    // The first period's grant exists at once.
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    let first = &grants[0];
    assert_eq!(first.schedule_id, schedule.id);
    assert_eq!(first.amount, "100");
    assert_eq!(first.remaining, "100");
    assert_eq!(first.state, GrantState::Active as i32);
    assert_eq!(first.kind, proto::GrantKind::Contract as i32);
    assert_eq!(first.contract_ref, "contract-7");
    assert_eq!(
        (first.unit_price.as_str(), first.currency.as_str()),
        ("0.01", "USD")
    );
    assert_eq!(first.rolled_over, "0");
    assert_eq!(micros_of(first.effective_time.as_ref()), expected(0));
    assert_eq!(micros_of(first.expire_time.as_ref()), expected(1));
    let ledger = app.history(&account.id).await;
    assert_eq!(
        ledger.iter().map(entry).collect::<Vec<_>>(),
        [(
            TransactionKind::Grant,
            first.id.clone(),
            "100".into(),
            "100".into(),
            start
        )]
    );
    assert_eq!(ledger[0].balance_after, "100");
    assert!(!ledger[0].metadata.contains_key("rolled_over"));
    assert_eq!(app.balance(&account.id).await.posted, "100");

    spend(&app, &account.id, "30").await;

    // Just before the next period: nothing new.
    move_clock_to(&app, expected(1) - MINUTE);
    app.sweep().await;
    assert_eq!(
        schedule_grants(&app, &wallet.id, &schedule.id).await.len(),
        1
    );
    assert_eq!(app.history(&account.id).await.len(), 2);

    // One period later: exactly one new grant; the 70 unused units expired at the boundary.
    move_clock_to(&app, expected(1));
    app.sweep().await;
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert_eq!(grants[0].id, first.id);
    assert_eq!(grants[0].state, GrantState::Expired as i32);
    assert_eq!(grants[0].remaining, "0");
    let second = &grants[1];
    assert_eq!(second.amount, "100");
    assert_eq!(second.remaining, "100");
    assert_eq!(second.rolled_over, "0");
    assert_eq!(second.state, GrantState::Active as i32);
    assert_eq!(micros_of(second.effective_time.as_ref()), expected(1));
    assert_eq!(micros_of(second.expire_time.as_ref()), expected(2));
    let ledger = app.history(&account.id).await;
    assert_eq!(
        ledger[2..].iter().map(entry).collect::<Vec<_>>(),
        [
            (
                TransactionKind::Expire,
                first.id.clone(),
                "70".into(),
                "-70".into(),
                expected(1)
            ),
            (
                TransactionKind::Grant,
                second.id.clone(),
                "100".into(),
                "100".into(),
                expected(1)
            ),
        ]
    );
    assert_eq!(ledger.last().unwrap().balance_after, "100");
    assert_eq!(app.balance(&account.id).await.posted, "100");
    let listed = one_schedule(&app, &wallet.id).await;
    assert_eq!(micros_of(listed.next_grant_time.as_ref()), expected(2));

    // Sweeping again grants nothing twice.
    app.sweep().await;
    app.sweep().await;
    assert_eq!(app.history(&account.id).await, ledger);
    assert_eq!(
        schedule_grants(&app, &wallet.id, &schedule.id).await,
        grants
    );
    app.stop().await;
}

#[tokio::test]
async fn daily_schedule_grants_once_per_day() {
    grants_once_per_period(SchedulePeriod::Daily).await;
}

#[tokio::test]
async fn weekly_schedule_grants_once_per_week() {
    grants_once_per_period(SchedulePeriod::Weekly).await;
}

#[tokio::test]
async fn monthly_schedule_grants_once_per_month() {
    grants_once_per_period(SchedulePeriod::Monthly).await;
}

#[tokio::test]
async fn yearly_schedule_grants_once_per_year() {
    grants_once_per_period(SchedulePeriod::Yearly).await;
}

/// CAPPED rollover: min(unused, cap) moves into the next period's grant (`rolled_over`, and
/// `rolled_over` metadata on its GRANT entry); the rest expires.
#[tokio::test]
async fn capped_rollover_moves_up_to_the_cap_and_expires_the_rest() {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, wallet) = app.funded("rollover", "").await;
    let start = now_second(&app);
    let week = |k: i64| start + k * 7 * DAY;
    let mut template = schedule_template(&wallet.id, SchedulePeriod::Weekly, "100");
    template.start_time = Some(ts(start));
    template.rollover_policy = RolloverPolicy::Capped as i32;
    template.rollover_cap = "50".into();
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");
    assert_eq!(schedule.rollover_policy, RolloverPolicy::Capped as i32);
    assert_eq!(schedule.rollover_cap, "50");

    // Week 0: 20 used, 80 unused → 50 roll over, 30 expire.
    spend(&app, &account.id, "20").await;
    let seen = app.history(&account.id).await.len();
    move_clock_to(&app, week(1));
    app.sweep().await;
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[0].state, GrantState::Expired as i32);
    assert_eq!(grants[0].remaining, "0");
    assert_eq!(grants[1].rolled_over, "50");
    assert_eq!(grants[1].remaining, "150");
    assert_eq!(
        grants[1].amount, "150",
        "the allotment plus what rolled into it"
    );
    assert_eq!(micros_of(grants[1].effective_time.as_ref()), week(1));
    assert_eq!(micros_of(grants[1].expire_time.as_ref()), week(2));
    let ledger = app.history(&account.id).await;
    let new = &ledger[seen..];
    assert_eq!(
        new.iter().map(entry).collect::<Vec<_>>(),
        [
            (
                TransactionKind::Expire,
                grants[0].id.clone(),
                "30".into(),
                "-30".into(),
                week(1)
            ),
            (
                TransactionKind::Grant,
                grants[1].id.clone(),
                "100".into(),
                "100".into(),
                week(1)
            ),
        ]
    );
    assert_eq!(
        new[1].metadata.get("rolled_over").map(String::as_str),
        Some("50")
    );
    assert_eq!(new[1].balance_after, "150");
    assert_eq!(app.balance(&account.id).await.posted, "150");

    // Week 1: nothing used, 150 unused → 50 roll over (the cap), 100 expire.
    let seen = ledger.len();
    move_clock_to(&app, week(2));
    app.sweep().await;
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 3);
    assert_eq!(grants[2].rolled_over, "50");
    assert_eq!(grants[2].remaining, "150");
    let ledger = app.history(&account.id).await;
    let new = &ledger[seen..];
    assert_eq!(
        new.iter().map(entry).collect::<Vec<_>>(),
        [
            (
                TransactionKind::Expire,
                grants[1].id.clone(),
                "100".into(),
                "-100".into(),
                week(2)
            ),
            (
                TransactionKind::Grant,
                grants[2].id.clone(),
                "100".into(),
                "100".into(),
                week(2)
            ),
        ]
    );
    assert_eq!(
        new[1].metadata.get("rolled_over").map(String::as_str),
        Some("50")
    );
    assert_eq!(app.balance(&account.id).await.posted, "150");

    // Week 2: 130 used, 20 unused → all 20 roll over, nothing expires.
    spend(&app, &account.id, "130").await;
    let seen = ledger.len() + 1;
    move_clock_to(&app, week(3));
    app.sweep().await;
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 4);
    assert_eq!(grants[2].state, GrantState::Expired as i32);
    assert_eq!(grants[3].rolled_over, "20");
    assert_eq!(grants[3].remaining, "120");
    let ledger = app.history(&account.id).await;
    let new = &ledger[seen..];
    assert_eq!(
        new.iter().map(entry).collect::<Vec<_>>(),
        [(
            TransactionKind::Grant,
            grants[3].id.clone(),
            "100".into(),
            "100".into(),
            week(3)
        )],
        "nothing left to expire"
    );
    assert_eq!(
        new[0].metadata.get("rolled_over").map(String::as_str),
        Some("20")
    );
    assert_eq!(app.balance(&account.id).await.posted, "120");

    // Rolled units keep their money value: the statement closes at what the live grant's
    // units are worth (120 × 0.01 USD), and reconciles.
    let full = statement(&app, &app.admin, by_account(&account.id, None, None))
        .await
        .expect("statement");
    assert_reconciles(&full);
    assert_eq!(full.closing_balance, "120");
    assert_eq!(money_map(&full.closing_money), money_of(&[("USD", "1.2")]));
    app.stop().await;
}

/// After downtime (the clock moved five periods, nobody swept), one sweep grants every missed
/// period exactly once, in order, each at its own period start, rolling over along the way;
/// more sweeps add nothing.
#[tokio::test]
async fn catch_up_after_downtime_grants_every_missed_period_once_in_order() {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, wallet) = app.funded("catch-up", "").await;
    let start = now_second(&app);
    let day = |k: i64| start + k * DAY;
    let mut template = schedule_template(&wallet.id, SchedulePeriod::Daily, "100");
    template.start_time = Some(ts(start));
    template.rollover_policy = RolloverPolicy::Capped as i32;
    template.rollover_cap = "30".into();
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");
    let first = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(first.len(), 1);

    app.clock.advance(5 * DAY + HOUR);
    // Balances never lag the clock, even before a sweep.
    assert_eq!(app.balance(&account.id).await.posted, "130");
    app.sweep().await;

    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 6, "exactly 5 new grants: {grants:?}");
    assert_eq!(grants[0].id, first[0].id);
    for (k, grant) in grants.iter().enumerate() {
        let k = k as i64;
        assert_eq!(
            micros_of(grant.effective_time.as_ref()),
            day(k),
            "grant {k}"
        );
        assert_eq!(
            micros_of(grant.expire_time.as_ref()),
            day(k + 1),
            "grant {k}"
        );
        let rolled = if k == 0 { "0" } else { "30" };
        assert_eq!(grant.rolled_over, rolled, "grant {k}");
        if k < 5 {
            assert_eq!(grant.state, GrantState::Expired as i32, "grant {k}");
            assert_eq!(grant.remaining, "0", "grant {k}");
        } else {
            assert_eq!(grant.state, GrantState::Active as i32);
            assert_eq!(grant.remaining, "130");
        }
    }
    // Ids are time-ordered: created in period order.
    let mut ids: Vec<&String> = grants.iter().map(|g| &g.id).collect();
    ids.sort();
    assert_eq!(ids, grants.iter().map(|g| &g.id).collect::<Vec<_>>());

    let ledger = app.history(&account.id).await;
    let mut expected = vec![(
        TransactionKind::Grant,
        grants[0].id.clone(),
        "100".to_string(),
        "100".to_string(),
        day(0),
    )];
    for k in 1..6 {
        let expired = if k == 1 { "70" } else { "100" };
        let prev = &grants[k - 1].id;
        expected.push((
            TransactionKind::Expire,
            prev.clone(),
            expired.into(),
            format!("-{expired}"),
            day(k as i64),
        ));
        expected.push((
            TransactionKind::Grant,
            grants[k].id.clone(),
            "100".into(),
            "100".into(),
            day(k as i64),
        ));
    }
    assert_eq!(ledger.iter().map(entry).collect::<Vec<_>>(), expected);
    for t in ledger
        .iter()
        .skip(1)
        .filter(|t| kind(t) == TransactionKind::Grant)
    {
        assert_eq!(
            t.metadata.get("rolled_over").map(String::as_str),
            Some("30")
        );
        assert_eq!(t.balance_after, "130");
    }
    assert_eq!(app.balance(&account.id).await.posted, "130");
    assert_eq!(
        micros_of(
            one_schedule(&app, &wallet.id)
                .await
                .next_grant_time
                .as_ref()
        ),
        day(6)
    );

    // Sweeping twice more: no duplicates.
    app.sweep().await;
    app.sweep().await;
    assert_eq!(
        schedule_grants(&app, &wallet.id, &schedule.id).await,
        grants
    );
    assert_eq!(app.history(&account.id).await, ledger);
    app.stop().await;
}

/// No period starts at or after `end_time`: the last period's grant still expires at its end,
/// and nothing more is granted.
#[tokio::test]
async fn end_time_stops_the_schedule() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("ending", "").await;
    let start = now_second(&app);
    let mut template = schedule_template(&wallet.id, SchedulePeriod::Daily, "100");
    template.start_time = Some(ts(start));
    template.end_time = Some(ts(start + 2 * DAY));
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");
    assert_eq!(micros_of(schedule.end_time.as_ref()), start + 2 * DAY);
    assert_eq!(micros_of(schedule.next_grant_time.as_ref()), start + DAY);

    app.advance(Duration::from_secs(5 * 86_400)).await;
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 2, "periods 0 and 1 only: {grants:?}");
    assert_eq!(micros_of(grants[0].effective_time.as_ref()), start);
    assert_eq!(micros_of(grants[1].effective_time.as_ref()), start + DAY);
    assert!(grants.iter().all(|g| g.state == GrantState::Expired as i32));
    let ledger = app.history(&account.id).await;
    assert_eq!(
        ledger.iter().map(entry).collect::<Vec<_>>(),
        [
            (
                TransactionKind::Grant,
                grants[0].id.clone(),
                "100".into(),
                "100".into(),
                start
            ),
            (
                TransactionKind::Expire,
                grants[0].id.clone(),
                "100".into(),
                "-100".into(),
                start + DAY
            ),
            (
                TransactionKind::Grant,
                grants[1].id.clone(),
                "100".into(),
                "100".into(),
                start + DAY
            ),
            (
                TransactionKind::Expire,
                grants[1].id.clone(),
                "100".into(),
                "-100".into(),
                start + 2 * DAY
            ),
        ]
    );
    assert_eq!(app.balance(&account.id).await.posted, "0");
    let listed = one_schedule(&app, &wallet.id).await;
    assert_eq!(listed.next_grant_time, None, "ended: {listed:?}");

    app.advance(Duration::from_secs(3 * 86_400)).await;
    assert_eq!(
        schedule_grants(&app, &wallet.id, &schedule.id).await.len(),
        2
    );
    assert_eq!(app.history(&account.id).await, ledger);
    app.stop().await;
}

/// A schedule starting in the future grants nothing until its start.
#[tokio::test]
async fn future_start_grants_nothing_until_then() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("future", "").await;
    let start = now_second(&app) + 3 * DAY;
    let mut template = schedule_template(&wallet.id, SchedulePeriod::Weekly, "70");
    template.start_time = Some(ts(start));
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");
    assert_eq!(micros_of(schedule.next_grant_time.as_ref()), start);
    assert!(app.all_grants(&wallet.id).await.is_empty());
    assert!(app.history(&account.id).await.is_empty());
    assert_eq!(app.balance(&account.id).await.posted, "0");

    app.advance(Duration::from_secs(2 * 86_400)).await;
    move_clock_to(&app, start - MINUTE);
    app.sweep().await;
    assert!(app.all_grants(&wallet.id).await.is_empty());
    assert!(app.history(&account.id).await.is_empty());
    assert_eq!(app.balance(&account.id).await.posted, "0");

    move_clock_to(&app, start);
    app.sweep().await;
    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 1);
    assert_eq!(micros_of(grants[0].effective_time.as_ref()), start);
    assert_eq!(micros_of(grants[0].expire_time.as_ref()), start + 7 * DAY);
    assert_eq!(
        app.history(&account.id)
            .await
            .iter()
            .map(entry)
            .collect::<Vec<_>>(),
        [(
            TransactionKind::Grant,
            grants[0].id.clone(),
            "70".into(),
            "70".into(),
            start
        )]
    );
    assert_eq!(app.balance(&account.id).await.posted, "70");
    assert_eq!(
        micros_of(
            one_schedule(&app, &wallet.id)
                .await
                .next_grant_time
                .as_ref()
        ),
        start + 7 * DAY
    );
    app.stop().await;
}

/// Monthly on the 31st: Jan 31, then the last day of February (28th or 29th), Mar 31,
/// Apr 30, May 31 — anchored to the start, not drifting to the 28th.
#[tokio::test]
async fn monthly_on_the_31st_grants_on_the_last_day_of_shorter_months() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("month-end", "").await;
    let now = date(app.clock.now_micros());
    let jan31 = |year| Utc.with_ymd_and_hms(year, 1, 31, 0, 0, 0).unwrap();
    let start = if jan31(now.year()) > now {
        jan31(now.year())
    } else {
        jan31(now.year() + 1)
    };
    let year = start.year();
    let feb_end = NaiveDate::from_ymd_opt(year, 3, 1)
        .unwrap()
        .pred_opt()
        .unwrap()
        .day();
    let leap = NaiveDate::from_ymd_opt(year, 2, 29).is_some();
    assert_eq!(feb_end, if leap { 29 } else { 28 });
    let expected: Vec<i64> = [(1, 31), (2, feb_end), (3, 31), (4, 30), (5, 31)]
        .into_iter()
        .map(|(month, day)| {
            Utc.with_ymd_and_hms(year, month, day, 0, 0, 0)
                .unwrap()
                .timestamp_micros()
        })
        .collect();

    let mut template = schedule_template(&wallet.id, SchedulePeriod::Monthly, "1000");
    template.start_time = Some(ts(start.timestamp_micros()));
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");
    assert_eq!(micros_of(schedule.next_grant_time.as_ref()), expected[0]);
    assert!(app.all_grants(&wallet.id).await.is_empty());

    for k in 0..4 {
        move_clock_to(&app, expected[k]);
        app.sweep().await;
        let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
        assert_eq!(grants.len(), k + 1, "month {k}: {grants:?}");
        let grant = &grants[k];
        assert_eq!(
            micros_of(grant.effective_time.as_ref()),
            expected[k],
            "month {k} starts {}",
            date(expected[k])
        );
        assert_eq!(
            micros_of(grant.expire_time.as_ref()),
            expected[k + 1],
            "month {k} ends {}",
            date(expected[k + 1])
        );
        assert_eq!(grant.remaining, "1000");
        assert_eq!(
            micros_of(
                one_schedule(&app, &wallet.id)
                    .await
                    .next_grant_time
                    .as_ref()
            ),
            expected[k + 1]
        );
        if k > 0 {
            assert_eq!(grants[k - 1].state, GrantState::Expired as i32);
        }
    }
    let ledger = app.history(&account.id).await;
    let grant_times: Vec<i64> = ledger
        .iter()
        .filter(|t| kind(t) == TransactionKind::Grant)
        .map(|t| micros_of(t.create_time.as_ref()))
        .collect();
    assert_eq!(grant_times, expected[..4]);
    let expire_times: Vec<i64> = ledger
        .iter()
        .filter(|t| kind(t) == TransactionKind::Expire)
        .map(|t| micros_of(t.create_time.as_ref()))
        .collect();
    assert_eq!(expire_times, expected[1..4]);
    app.stop().await;
}

// ---- schedules: several replicas -----------------------------------------------------------

/// Two replicas sweeping at once, and statement readers (GetStatement sweeps the wallet) on
/// both, after three missed periods: still exactly one grant per period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sweeps_on_two_replicas_grant_each_period_once() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("replicas", "").await;
    let replica = app.spawn_replica_sharing_clock().await;
    let start = now_second(&app);
    let mut template = schedule_template(&wallet.id, SchedulePeriod::Daily, "100");
    template.start_time = Some(ts(start));
    let schedule = create_schedule(&app, template)
        .await
        .expect("create schedule");

    app.clock.advance(3 * DAY + HOUR);
    let mut tasks: Vec<JoinHandle<Result<(), String>>> = Vec::new();
    for i in 0..12 {
        let handles = if i % 2 == 0 {
            app.handles.clone()
        } else {
            replica.handles.clone()
        };
        tasks.push(tokio::spawn(async move {
            handles.sweep().await.map(|_| ()).map_err(|e| e.to_string())
        }));
        let channel = if i % 2 == 0 {
            app.channel.clone()
        } else {
            replica.channel.clone()
        };
        let mut client = ReportServiceClient::with_interceptor(channel, bearer(&app.admin));
        let account_id = account.id.clone();
        tasks.push(tokio::spawn(async move {
            let statement = client
                .get_statement(proto::GetStatementRequest {
                    account_id,
                    ..Default::default()
                })
                .await
                .map_err(|s| format!("{s:?}"))?
                .into_inner();
            let closing = amount_micros(&statement.closing_balance);
            let lines: i64 = statement
                .lines
                .iter()
                .map(|l| amount_micros(&l.units))
                .sum();
            if amount_micros(&statement.opening_balance) + lines != closing {
                return Err(format!("statement does not reconcile: {statement:?}"));
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("sweep or statement");
    }

    let grants = schedule_grants(&app, &wallet.id, &schedule.id).await;
    assert_eq!(grants.len(), 4, "periods 0..=3 once each: {grants:?}");
    for (k, grant) in grants.iter().enumerate() {
        assert_eq!(
            micros_of(grant.effective_time.as_ref()),
            start + k as i64 * DAY
        );
    }
    let ledger = app.history(&account.id).await;
    assert_eq!(
        kinds(&ledger),
        [
            TransactionKind::Grant,
            TransactionKind::Expire,
            TransactionKind::Grant,
            TransactionKind::Expire,
            TransactionKind::Grant,
            TransactionKind::Expire,
            TransactionKind::Grant,
        ]
    );
    for grant in &grants {
        let entries = ledger
            .iter()
            .filter(|t| t.grant_id == grant.id && kind(t) == TransactionKind::Grant)
            .count();
        assert_eq!(entries, 1, "one GRANT entry for {}", grant.id);
    }
    assert_eq!(app.balance(&account.id).await.posted, "100");
    replica.stop().await;
    app.stop().await;
}

// ---- schedules: validation, roles, idempotency ----------------------------------------------

#[tokio::test]
async fn schedule_validation_roles_and_idempotency() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("validated", "").await;
    let (other, _) = app.funded("someone-else", "").await;
    let start = now_second(&app);
    let valid = || {
        let mut s = schedule_template(&wallet.id, SchedulePeriod::Monthly, "100");
        s.start_time = Some(ts(start));
        s
    };

    // (what is wrong, the request, the field named, the reason if it is fixed).
    let cases = [
        (
            "missing period",
            proto::AllotmentSchedule {
                period: SchedulePeriod::Unspecified as i32,
                ..valid()
            },
            "allotment_schedule.period",
            Some("MISSING_FIELD"),
        ),
        (
            "end before start",
            proto::AllotmentSchedule {
                end_time: Some(ts(start - DAY)),
                ..valid()
            },
            "allotment_schedule.end_time",
            Some("INVALID_FIELD"),
        ),
        (
            "end at start",
            proto::AllotmentSchedule {
                end_time: Some(ts(start)),
                ..valid()
            },
            "allotment_schedule.end_time",
            Some("INVALID_FIELD"),
        ),
        (
            "rollover_cap with policy NONE",
            proto::AllotmentSchedule {
                rollover_cap: "10".into(),
                ..valid()
            },
            "allotment_schedule.rollover_cap",
            Some("INVALID_FIELD"),
        ),
        (
            "rollover_cap without a policy",
            proto::AllotmentSchedule {
                rollover_policy: RolloverPolicy::Unspecified as i32,
                rollover_cap: "10".into(),
                ..valid()
            },
            "allotment_schedule.rollover_cap",
            Some("INVALID_FIELD"),
        ),
        (
            "CAPPED without a cap",
            proto::AllotmentSchedule {
                rollover_policy: RolloverPolicy::Capped as i32,
                ..valid()
            },
            "allotment_schedule.rollover_cap",
            None,
        ),
        (
            "zero amount",
            proto::AllotmentSchedule {
                amount: "0".into(),
                ..valid()
            },
            "allotment_schedule.amount",
            None,
        ),
        (
            "unknown period",
            proto::AllotmentSchedule {
                period: 42,
                ..valid()
            },
            "allotment_schedule.period",
            None,
        ),
    ];
    for (name, schedule, field, reason) in cases {
        let status = create_schedule(&app, schedule).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let info = status.get_error_details().error_info().cloned();
        let info = info.unwrap_or_else(|| panic!("{name}: no ErrorInfo in {status:?}"));
        assert_eq!(
            info.metadata.get("field").map(String::as_str),
            Some(field),
            "{name}: {status:?}"
        );
        if let Some(reason) = reason {
            assert_eq!(info.reason, reason, "{name}: {status:?}");
        }
    }
    // Missing schedule altogether.
    let status = app
        .grants(&app.admin)
        .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
            allotment_schedule: None,
            request_id: uuid(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(list_schedules(&app, &wallet.id).await.is_empty());
    assert!(app.all_grants(&wallet.id).await.is_empty());
    assert!(app.history(&account.id).await.is_empty());

    // Roles and scope: procurement reads but does not provision; an account manager of
    // another account is out of scope.
    let procurement = token(&["procurement"], &[&account.id]);
    let status = create_schedule_with(&app, &procurement, valid(), &uuid())
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let elsewhere = token(&["account_manager"], &[&other.id]);
    let status = create_schedule_with(&app, &elsewhere, valid(), &uuid())
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");

    // Idempotent: the same request_id answers with the same schedule and grants once.
    let manager = token(&["account_manager"], &[&account.id]);
    let created = create_schedule_with(&app, &manager, valid(), "sched-1")
        .await
        .expect("create");
    let again = create_schedule_with(&app, &manager, valid(), "sched-1")
        .await
        .expect("replay");
    assert_eq!(created, again);
    let status = create_schedule_with(
        &app,
        &manager,
        proto::AllotmentSchedule {
            amount: "200".into(),
            ..valid()
        },
        "sched-1",
    )
    .await
    .unwrap_err();
    assert_error(&status, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.all_grants(&wallet.id).await.len(), 1);
    assert_eq!(app.history(&account.id).await.len(), 1);

    // Procurement in scope may list.
    let listed = app
        .grants(&procurement)
        .list_allotment_schedules(proto::ListAllotmentSchedulesRequest {
            wallet_id: wallet.id.clone(),
            ..Default::default()
        })
        .await
        .expect("procurement lists schedules")
        .into_inner()
        .allotment_schedules;
    assert_eq!(listed, [created]);
    let status = app
        .grants(&token(&["procurement"], &[&other.id]))
        .list_allotment_schedules(proto::ListAllotmentSchedulesRequest {
            wallet_id: wallet.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    app.stop().await;
}

// ---- statements ----------------------------------------------------------------------------

fn add_money(into: &mut BTreeMap<String, Decimal>, money: &[proto::Money]) {
    for (currency, value) in money_map(money) {
        *into.entry(currency).or_insert(Decimal::ZERO) += value;
    }
    into.retain(|_, v| !v.is_zero());
}

/// Everything a statement promises about itself: opening + Σ lines = closing (units and
/// money per currency), lines are the movements grouped by kind with counts, movements lie in
/// the window, oldest first, each continuing the balance. Returns what is broken.
fn reconcile_problems(statement: &proto::Statement) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, problem: String| {
        if !ok {
            problems.push(problem);
        }
    };
    let opening = amount_micros(&statement.opening_balance);
    let closing = amount_micros(&statement.closing_balance);
    let lines: i64 = statement
        .lines
        .iter()
        .map(|l| amount_micros(&l.units))
        .sum();
    check(
        opening + lines == closing,
        format!("units: opening {opening} + lines {lines} ≠ closing {closing} (micro-units)"),
    );

    let mut by_kind: BTreeMap<i32, (i64, i64, BTreeMap<String, Decimal>)> = BTreeMap::new();
    let mut running = opening;
    let start = micros_of(statement.start_time.as_ref());
    let end = micros_of(statement.end_time.as_ref());
    let mut last_time = i64::MIN;
    for movement in &statement.movements {
        let time = micros_of(movement.create_time.as_ref());
        check(
            start <= time && time < end,
            format!("movement {} outside the window", movement.id),
        );
        check(
            time >= last_time,
            format!(
                "movement {} is dated before the one listed before it",
                movement.id
            ),
        );
        last_time = time;
        running += amount_micros(&movement.delta);
        check(
            amount_micros(&movement.balance_after) == running,
            format!(
                "movement {} balance_after {} ≠ running balance {}",
                movement.id,
                movement.balance_after,
                Amount::from_micros(running)
            ),
        );
        let line = by_kind.entry(movement.kind).or_default();
        line.0 += 1;
        line.1 += amount_micros(&movement.delta);
        add_money(&mut line.2, &movement.money);
    }
    check(
        running == closing,
        "the movements do not end at the closing balance".into(),
    );
    let lines: BTreeMap<i32, (i64, i64, BTreeMap<String, Decimal>)> = statement
        .lines
        .iter()
        .map(|l| {
            (
                l.kind,
                (l.count, amount_micros(&l.units), money_map(&l.money)),
            )
        })
        .collect();
    check(
        lines.len() == statement.lines.len(),
        "more than one line of a kind".into(),
    );
    check(
        lines == by_kind,
        format!("lines {lines:?} do not group the movements by kind {by_kind:?}"),
    );

    let mut money = money_map(&statement.opening_money);
    for line in &statement.lines {
        add_money(&mut money, &line.money);
    }
    let closing_money = money_map(&statement.closing_money);
    check(
        money == closing_money,
        format!("money: opening + lines = {money:?} ≠ closing {closing_money:?}"),
    );
    problems
}

#[track_caller]
fn assert_reconciles(statement: &proto::Statement) {
    let problems = reconcile_problems(statement);
    assert!(problems.is_empty(), "{problems:#?}\nin {statement:#?}");
}

async fn statement(
    app: &TestApp,
    token: &str,
    request: proto::GetStatementRequest,
) -> Result<proto::Statement, Status> {
    app.reports(token)
        .get_statement(request)
        .await
        .map(tonic::Response::into_inner)
}

fn by_account(
    account_id: &str,
    start: Option<i64>,
    end: Option<i64>,
) -> proto::GetStatementRequest {
    proto::GetStatementRequest {
        account_id: account_id.into(),
        start_time: start.map(ts),
        end_time: end.map(ts),
        ..Default::default()
    }
}

fn lines(statement: &proto::Statement) -> Vec<(TransactionKind, i64, String)> {
    statement
        .lines
        .iter()
        .map(|l| {
            (
                TransactionKind::try_from(l.kind).expect("kind"),
                l.count,
                l.units.clone(),
            )
        })
        .collect()
}

fn sorted(mut lines: Vec<(TransactionKind, i64, String)>) -> Vec<(TransactionKind, i64, String)> {
    lines.sort_by_key(|l| l.0 as i32);
    lines
}

fn money_of(pairs: &[(&str, &str)]) -> BTreeMap<String, Decimal> {
    pairs
        .iter()
        .map(|(c, v)| (c.to_string(), dec(v)))
        .filter(|(_, v)| !v.is_zero())
        .collect()
}

/// Grants, debits, a partial refund, a hold and its capture, adjustments in both directions,
/// two currencies: every window reconciles, the full one closes at the posted balance, past
/// windows show the balance of their time.
#[tokio::test]
async fn statements_reconcile_in_units_and_money_over_any_window() {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, wallet) = app.funded("statements", "").await;
    grant_with(&app, &wallet.id, "1000", 0, ("0.01", "USD"), None).await;
    grant_with(&app, &wallet.id, "500", 1, ("0.02", "EUR"), None).await;
    app.clock.advance(MINUTE);
    let d1 = spend(&app, &account.id, "100").await;
    app.clock.advance(MINUTE);
    let d2 = spend(&app, &account.id, "950").await;
    assert_eq!(d2.balance_after, "450");
    app.clock.advance(MINUTE);
    app.ledger(&app.admin)
        .refund(proto::RefundRequest {
            transaction_id: d1.id.clone(),
            units: "40".into(),
            reason: "failed request".into(),
            request_id: uuid(),
        })
        .await
        .expect("refund");
    app.clock.advance(MINUTE);
    let hold = reserve_units(&app, &account.id, "10", None)
        .await
        .expect("reserve");
    capture_units(&app, &hold.id, "8", &uuid())
        .await
        .expect("capture");
    app.clock.advance(MINUTE);
    for units in ["25", "-5"] {
        adjust(&app, &wallet.id, units, "correction")
            .await
            .expect("adjust");
    }
    app.clock.advance(MINUTE);
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.posted, "502");

    // The whole history, by account and by wallet.
    let full = statement(&app, &app.admin, by_account(&account.id, None, None))
        .await
        .expect("statement");
    assert_reconciles(&full);
    assert_eq!(full.wallet_id, wallet.id);
    assert_eq!(full.account_id, account.id);
    assert_eq!(full.unit, "credits");
    assert_eq!(full.opening_balance, "0");
    assert_eq!(full.closing_balance, balance.posted);
    assert_eq!(
        sorted(lines(&full)),
        [
            (TransactionKind::Grant, 2, "1500".to_string()),
            (TransactionKind::Debit, 2, "-1050".to_string()),
            (TransactionKind::Reserve, 1, "0".to_string()),
            (TransactionKind::Capture, 1, "-8".to_string()),
            (TransactionKind::Refund, 1, "40".to_string()),
            (TransactionKind::Adjust, 2, "20".to_string()),
        ]
    );
    assert_eq!(full.movements.len(), 9);
    assert!(money_map(&full.opening_money).is_empty());
    // Money closes at what the remaining units are worth: USD 27 × 0.01, EUR 450 × 0.02
    // (the adjustment grant has no price).
    assert_eq!(
        money_map(&full.closing_money),
        money_of(&[("USD", "0.27"), ("EUR", "9")])
    );
    let mut worth: BTreeMap<String, Decimal> = BTreeMap::new();
    for g in app.all_grants(&wallet.id).await {
        if !g.currency.is_empty() {
            *worth.entry(g.currency.clone()).or_default() += dec(&g.remaining) * dec(&g.unit_price);
        }
    }
    worth.retain(|_, v| !v.is_zero());
    assert_eq!(money_map(&full.closing_money), worth);

    let by_wallet = statement(
        &app,
        &app.admin,
        proto::GetStatementRequest {
            wallet_id: wallet.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("statement by wallet");
    assert_reconciles(&by_wallet);
    assert_eq!(by_wallet.opening_balance, full.opening_balance);
    assert_eq!(by_wallet.closing_balance, full.closing_balance);
    assert_eq!(by_wallet.lines, full.lines);
    assert_eq!(by_wallet.movements, full.movements);

    // A window ending at the second debit (exclusive) shows the balance of that time.
    let t1 = micros_of(d1.create_time.as_ref());
    let t2 = micros_of(d2.create_time.as_ref());
    assert!(t1 < t2);
    let before = statement(&app, &app.admin, by_account(&account.id, None, Some(t2)))
        .await
        .expect("statement");
    assert_reconciles(&before);
    assert_eq!(before.opening_balance, "0");
    assert_eq!(before.closing_balance, d1.balance_after);
    assert_eq!(before.closing_balance, "1400");
    assert_eq!(
        sorted(lines(&before)),
        [
            (TransactionKind::Grant, 2, "1500".to_string()),
            (TransactionKind::Debit, 1, "-100".to_string()),
        ]
    );
    assert_eq!(
        money_map(&before.closing_money),
        money_of(&[("USD", "9"), ("EUR", "10")])
    );

    // Between the two debits: opening before the first, closing after it.
    let between = statement(
        &app,
        &app.admin,
        by_account(&account.id, Some(t1), Some(t2)),
    )
    .await
    .expect("statement");
    assert_reconciles(&between);
    assert_eq!(between.opening_balance, "1500");
    assert_eq!(between.closing_balance, "1400");
    assert_eq!(
        lines(&between),
        [(TransactionKind::Debit, 1, "-100".to_string())]
    );
    assert_eq!(
        money_map(&between.opening_money),
        money_of(&[("USD", "10"), ("EUR", "10")])
    );
    assert_eq!(
        money_map(&between.closing_money),
        money_of(&[("USD", "9"), ("EUR", "10")])
    );

    // From the second debit on: opens where the earlier window closed.
    let after = statement(&app, &app.admin, by_account(&account.id, Some(t2), None))
        .await
        .expect("statement");
    assert_reconciles(&after);
    assert_eq!(after.opening_balance, "1400");
    assert_eq!(after.closing_balance, "502");
    assert_eq!(after.movements.len(), 6);
    assert_eq!(
        money_map(&after.opening_money),
        money_map(&before.closing_money)
    );

    // An empty window: opening = closing.
    let empty = statement(
        &app,
        &app.admin,
        by_account(&account.id, Some(t1), Some(t1)),
    )
    .await
    .expect("statement");
    assert_reconciles(&empty);
    assert_eq!(empty.opening_balance, "1500");
    assert_eq!(empty.closing_balance, "1500");
    assert!(empty.lines.is_empty() && empty.movements.is_empty());
    app.stop().await;
}

/// A statement whose window covers a grant's expiry shows the EXPIRE line even though nobody
/// swept (GetStatement sweeps the wallet first); the expiry is dated when it fell due.
#[tokio::test]
async fn statement_includes_expiry_without_an_explicit_sweep() {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, wallet) = app.funded("expiring", "").await;
    let expire = app.clock.now_micros() + HOUR;
    let expiring = grant_with(&app, &wallet.id, "100", 0, ("0.5", "USD"), Some(expire)).await;
    grant_with(&app, &wallet.id, "50", 0, ("0.1", "USD"), None).await;
    // Burns the expiring grant first (earliest expiry).
    spend(&app, &account.id, "30").await;

    app.clock.advance(2 * HOUR);
    let full = statement(&app, &app.admin, by_account(&account.id, None, None))
        .await
        .expect("statement");
    assert_reconciles(&full);
    assert_eq!(
        sorted(lines(&full)),
        [
            (TransactionKind::Grant, 2, "150".to_string()),
            (TransactionKind::Debit, 1, "-30".to_string()),
            (TransactionKind::Expire, 1, "-70".to_string()),
        ]
    );
    let expired = full
        .movements
        .iter()
        .find(|t| kind(t) == TransactionKind::Expire)
        .expect("EXPIRE movement");
    assert_eq!(expired.grant_id, expiring.id);
    assert_eq!(micros_of(expired.create_time.as_ref()), expire);
    assert_eq!(full.closing_balance, "50");
    assert_eq!(app.balance(&account.id).await.posted, "50");
    assert_eq!(money_map(&full.closing_money), money_of(&[("USD", "5")]));

    // Up to the expiry (exclusive): the units were still there.
    let before = statement(
        &app,
        &app.admin,
        by_account(&account.id, None, Some(expire)),
    )
    .await
    .expect("statement");
    assert_reconciles(&before);
    assert_eq!(before.closing_balance, "120");
    assert_eq!(money_map(&before.closing_money), money_of(&[("USD", "40")]));
    // The expiry is recorded once, however many statements ask.
    let again = statement(&app, &app.admin, by_account(&account.id, None, None))
        .await
        .expect("statement");
    assert_eq!(again.movements, full.movements);
    app.stop().await;
}

/// Procurement reads its own account's statement (and its sub-accounts'); another account's
/// token is refused before anything is read; roles without read access are refused.
#[tokio::test]
async fn statement_scope_roles_and_validation() {
    let app = spawn_app().await;
    let parent = app.create_account("parent-co", "").await;
    let child = app.create_account("child-dept", &parent.id).await;
    let child_wallet = app.create_wallet(&child.id, "credits", "").await;
    app.grant(&child_wallet.id, "10").await;
    let (other, other_wallet) = app.funded("other-co", "5").await;

    let read = |token: String, request: proto::GetStatementRequest| {
        let app = &app;
        async move { statement(app, &token, request).await }
    };
    let child_by_account = by_account(&child.id, None, None);
    let child_by_wallet = proto::GetStatementRequest {
        wallet_id: child_wallet.id.clone(),
        ..Default::default()
    };

    for scope in [&child.id, &parent.id] {
        for request in [child_by_account.clone(), child_by_wallet.clone()] {
            let s = read(token(&["procurement"], &[scope]), request)
                .await
                .expect("procurement in scope reads");
            assert_reconciles(&s);
            assert_eq!(s.closing_balance, "10");
        }
    }
    for request in [child_by_account.clone(), child_by_wallet.clone()] {
        let status = read(token(&["procurement"], &[&other.id]), request)
            .await
            .unwrap_err();
        assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    }
    let status = read(token(&["operator"], &["*"]), child_by_account.clone())
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    // The other account's own token reads its own statement.
    let s = read(
        token(&["procurement"], &[&other.id]),
        proto::GetStatementRequest {
            wallet_id: other_wallet.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("own statement");
    assert_eq!(s.closing_balance, "5");
    let status = read(String::new(), child_by_account.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Validation.
    let now = app.clock.now_micros();
    for (name, request) in [
        (
            "both account and wallet",
            proto::GetStatementRequest {
                account_id: child.id.clone(),
                wallet_id: child_wallet.id.clone(),
                ..Default::default()
            },
        ),
        (
            "neither account nor wallet",
            proto::GetStatementRequest::default(),
        ),
        (
            "end before start",
            by_account(&child.id, Some(now), Some(now - HOUR)),
        ),
    ] {
        let status = read(app.admin.clone(), request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    }
    let status = read(
        app.admin.clone(),
        proto::GetStatementRequest {
            unit: "message_units".into(),
            ..by_account(&child.id, None, None)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

// ---- history: entries in time order, statements split anywhere -----------------------------

/// A statement's promise at any boundary `t`: the ledger in seq order is in time order (what
/// `statements::build` relies on), and statements split at `t` both succeed, reconcile and
/// chain — statement(…, t).closing = statement(t, …).opening = the balance after the last
/// entry dated before `t`.
async fn assert_history_consistent(app: &TestApp, account_id: &str) {
    let ledger = app.history(account_id).await;
    let time = |t: &proto::Transaction| micros_of(t.create_time.as_ref());
    let out_of_order: Vec<String> = ledger
        .windows(2)
        .filter(|w| time(&w[1]) < time(&w[0]))
        .map(|w| {
            format!(
                "{} ({}) is recorded after {} ({})",
                w[1].id,
                date(time(&w[1])),
                w[0].id,
                date(time(&w[0]))
            )
        })
        .collect();
    let mut broken = Vec::new();
    let mut boundaries: Vec<i64> = ledger.iter().map(time).collect();
    boundaries.sort();
    boundaries.dedup();
    for t in boundaries {
        let upto = statement(app, &app.admin, by_account(account_id, None, Some(t))).await;
        let from = statement(app, &app.admin, by_account(account_id, Some(t), None)).await;
        match (upto, from) {
            (Ok(upto), Ok(from)) => {
                for (name, s) in [("up to", &upto), ("from", &from)] {
                    for problem in reconcile_problems(s) {
                        broken.push(format!("statement {name} {}: {problem}", date(t)));
                    }
                }
                // The balance after the latest entry (in ledger order) dated before t.
                let held = ledger
                    .iter()
                    .rfind(|e| time(e) < t)
                    .map_or_else(|| "0".to_string(), |e| e.balance_after.clone());
                if upto.closing_balance != from.opening_balance || upto.closing_balance != held {
                    broken.push(format!(
                        "split at {}: closing {} / opening {} / ledger held {held}",
                        date(t),
                        upto.closing_balance,
                        from.opening_balance
                    ));
                }
            }
            (upto, from) => broken.push(format!(
                "split at {}: {:?} / {:?}",
                date(t),
                upto.err().map(|s| (s.code(), s.message().to_string())),
                from.err().map(|s| (s.code(), s.message().to_string())),
            )),
        }
    }
    assert!(
        out_of_order.is_empty() && broken.is_empty(),
        "{} of {} entries out of time order: {:#?}\n{} broken statement splits (first 5): {:#?}",
        out_of_order.len(),
        ledger.len(),
        out_of_order.iter().take(5).collect::<Vec<_>>(),
        broken.len(),
        broken.iter().take(5).collect::<Vec<_>>()
    );
}

/// A schedule whose start lies in the past, on a wallet that already has entries: whatever
/// the server does with the missed periods, the history stays in time order and statements
/// split anywhere reconcile (or the start is refused).
#[tokio::test]
async fn schedule_starting_in_the_past_keeps_the_history_consistent() {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, wallet) = app.funded("past-start", "1000").await;
    app.clock.advance(MINUTE);
    spend(&app, &account.id, "100").await;
    let start = now_second(&app) - 3 * DAY - HOUR;
    let mut template = schedule_template(&wallet.id, SchedulePeriod::Daily, "50");
    template.start_time = Some(ts(start));
    match create_schedule(&app, template).await {
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{status:?}"),
        Ok(_) => {
            // Conservation holds however the periods were recorded.
            let balance = app.balance(&account.id).await;
            let sum: i64 = app
                .history(&account.id)
                .await
                .iter()
                .map(|t| amount_micros(&t.delta))
                .sum();
            assert_eq!(sum, amount_micros(&balance.posted));
            assert_history_consistent(&app, &account.id).await;
        }
    }
    app.stop().await;
}

/// Two replicas debiting one wallet at once: the entries each commits stay in time order, so
/// statements split at any entry reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_writing_one_wallet_keep_its_history_in_time_order() {
    let app = spawn_app().await;
    publish_units_card(&app).await;
    let (account, _) = app.funded("two-writers", "100000").await;
    let replica = app.spawn_replica_sharing_clock().await;
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let channel = if i % 2 == 0 {
            app.channel.clone()
        } else {
            replica.channel.clone()
        };
        let mut client = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
            channel,
            bearer(&app.admin),
        );
        let mut request = debit_request(&account.id, "units", &uuid());
        request.quantities = quantities(&[("n", "1")]);
        tasks.push(tokio::spawn(async move { client.debit(request).await }));
    }
    for task in tasks {
        task.await.expect("task").expect("debit");
    }
    assert_eq!(app.balance(&account.id).await.posted, "98000");
    assert_history_consistent(&app, &account.id).await;
    replica.stop().await;
    app.stop().await;
}
