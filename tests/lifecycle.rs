//! The ledger lifecycle end to end over gRPC (issue 3): holds (reserve, capture, release,
//! expiry), refunds, grant expiry / activation / voids, adjustments, spend caps, low-balance
//! thresholds, and the concurrency guarantees (one capture per hold, refunds never beyond the
//! charge, expiry racing debits never double-spends). Time moves with the server's clock,
//! never with sleeps. Every test that builds history ends by checking the ledger: Σ delta of
//! its entries equals the posted balance, `balance_after` runs with it, and each entry's
//! `prev_hash` is the previous entry's `hash`.

mod common;

use std::{collections::BTreeMap, time::Duration};

use allot::proto::{self, GrantState, ReservationState, TransactionKind};
use chrono::{DateTime, Datelike, Months, Utc};
use common::*;
use prost_types::FieldMask;
use rust_decimal::Decimal;
use tonic::{Code, Status};

// ---- helpers -------------------------------------------------------------------------------

/// Moves the server's clock (without sweeping) to exactly `target`, which must lie ahead.
fn move_clock_to(app: &TestApp, target: i64) {
    let now = app.clock.now_micros();
    assert!(target > now, "the clock only moves forward");
    app.clock.advance(target - now);
}

/// The next UTC midnight after the server's now.
fn next_utc_midnight(app: &TestApp) -> i64 {
    let now = DateTime::<Utc>::from_timestamp_micros(app.clock.now_micros()).unwrap();
    now.date_naive()
        .succ_opt()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// 00:00 UTC on the 1st of the month after the server's now.
fn next_month_start(app: &TestApp) -> i64 {
    let now = DateTime::<Utc>::from_timestamp_micros(app.clock.now_micros()).unwrap();
    now.date_naive()
        .with_day(1)
        .unwrap()
        .checked_add_months(Months::new(1))
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// Records whatever fell due, then checks the wallet's ledger: Σ delta = posted, each
/// `balance_after` is the running sum, and the hash chain links every entry to the previous
/// one (the first to ""). Returns the entries, oldest first.
async fn assert_ledger_consistent(app: &TestApp, account_id: &str) -> Vec<proto::Transaction> {
    app.sweep().await;
    let txns = app.history(account_id).await;
    let mut sum = Decimal::ZERO;
    let mut prev_hash = String::new();
    for t in &txns {
        assert_eq!(t.prev_hash, prev_hash, "hash chain broken at {t:?}");
        assert_eq!(t.hash.len(), 64, "entry without a SHA-256 hash: {t:?}");
        sum += dec(&t.delta);
        assert_eq!(
            dec(&t.balance_after),
            sum,
            "balance_after does not follow Σ delta at {t:?}"
        );
        prev_hash = t.hash.clone();
    }
    let balance = app.balance(account_id).await;
    assert_eq!(
        dec(&balance.posted),
        sum,
        "Σ delta of the ledger differs from the posted balance"
    );
    txns
}

async fn grants_by_id(app: &TestApp, wallet_id: &str) -> BTreeMap<String, proto::Grant> {
    app.all_grants(wallet_id)
        .await
        .into_iter()
        .map(|g| (g.id.clone(), g))
        .collect()
}

async fn create_grant(
    app: &TestApp,
    wallet_id: &str,
    amount: &str,
    effective_time: Option<i64>,
    expire_time: Option<i64>,
) -> proto::Grant {
    let mut request = grant_request(wallet_id, amount, "0.01");
    let grant = request.grant.as_mut().expect("grant");
    grant.effective_time = effective_time.map(ts);
    grant.expire_time = expire_time.map(ts);
    app.grants(&app.admin)
        .create_grant(request)
        .await
        .expect("create grant")
        .into_inner()
}

async fn debit(
    app: &TestApp,
    account_id: &str,
    request_type: &str,
    pairs: &[(&str, &str)],
) -> Result<proto::Transaction, Status> {
    let mut request = debit_request(account_id, request_type, &uuid());
    request.quantities = quantities(pairs).into_iter().collect();
    app.ledger(&app.admin)
        .debit(request)
        .await
        .map(|r| r.into_inner().transaction.expect("transaction"))
}

async fn update_wallet(
    app: &TestApp,
    wallet: proto::Wallet,
    paths: &[&str],
) -> Result<proto::Wallet, Status> {
    app.accounts(&app.admin)
        .update_wallet(proto::UpdateWalletRequest {
            wallet: Some(wallet),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
            request_id: uuid(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Sets the wallet's `daily_spend_cap` or `monthly_spend_cap` (`field`, also the update
/// mask) to `cap`; an empty cap removes it.
async fn set_spend_cap(
    app: &TestApp,
    wallet_id: &str,
    field: &str,
    cap: &str,
) -> Result<proto::Wallet, Status> {
    let mut wallet = proto::Wallet {
        id: wallet_id.into(),
        ..Default::default()
    };
    match field {
        "daily_spend_cap" => wallet.daily_spend_cap = cap.into(),
        "monthly_spend_cap" => wallet.monthly_spend_cap = cap.into(),
        other => panic!("not a spend cap: {other}"),
    }
    update_wallet(app, wallet, &[field]).await
}

#[track_caller]
fn assert_balance(balance: &proto::Balance, posted: &str, reserved: &str, available: &str) {
    assert_eq!(
        (
            balance.posted.as_str(),
            balance.reserved.as_str(),
            balance.available.as_str()
        ),
        (posted, reserved, available),
        "(posted, reserved, available) of {balance:?}"
    );
}

#[track_caller]
fn assert_not_open(status: &Status) {
    assert_error(status, Code::FailedPrecondition, "RESERVATION_NOT_OPEN");
}

#[track_caller]
fn assert_spend_cap(status: &Status, period: &str, cap: &str, used: &str, required: &str) {
    let meta = assert_error(status, Code::FailedPrecondition, "SPEND_CAP_REACHED");
    let get = |k: &str| meta.get(k).map(String::as_str);
    assert_eq!(
        (get("period"), get("cap"), get("used"), get("required")),
        (Some(period), Some(cap), Some(used), Some(required)),
        "SPEND_CAP_REACHED metadata: {meta:?}"
    );
}

// ---- holds ---------------------------------------------------------------------------------

#[tokio::test]
async fn reserve_priced_or_explicit_with_default_and_bounded_ttl() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("holder", "100").await;
    let card = app.publish_standard_card().await;

    // Priced by the card: chat with 10,000 estimated output tokens = 1 + 10 × 0.2 = 3.
    let priced = app
        .ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            request_type: "chat".into(),
            quantities: quantities(&[("output_tokens", "10000")])
                .into_iter()
                .collect(),
            request_id: "hold-priced".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(priced.id.starts_with("rsv_"), "{priced:?}");
    assert_eq!(priced.units, "3");
    assert_eq!(priced.state, ReservationState::Open as i32);
    assert_eq!(priced.wallet_id, wallet.id);
    assert_eq!(priced.account_id, account.id);
    assert_eq!(priced.request_type, "chat");
    assert_eq!(priced.rate_card_version, card.version);
    assert_eq!(priced.request_id, "hold-priced");
    // Default TTL: 15 minutes.
    assert_eq!(
        micros_of(priced.expire_time.as_ref()) - micros_of(priced.create_time.as_ref()),
        15 * MINUTE
    );

    // Explicit units: holds exactly that many, no request_type needed.
    let explicit = reserve_units(&app, &account.id, "7.5", None).await.unwrap();
    assert_eq!(explicit.units, "7.5");
    assert_eq!(explicit.state, ReservationState::Open as i32);
    assert_eq!(explicit.request_type, "");
    assert_eq!(
        micros_of(explicit.expire_time.as_ref()) - micros_of(explicit.create_time.as_ref()),
        15 * MINUTE
    );

    // An explicit TTL up to the maximum (24 h) is honoured.
    let long = reserve_units(&app, &account.id, "1", Some(Duration::from_secs(24 * 3600)))
        .await
        .unwrap();
    assert_eq!(
        micros_of(long.expire_time.as_ref()) - micros_of(long.create_time.as_ref()),
        24 * HOUR
    );
    let short = reserve_units(&app, &account.id, "1", Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert_eq!(
        micros_of(short.expire_time.as_ref()) - micros_of(short.create_time.as_ref()),
        90 * SECOND
    );

    // Above the maximum, or zero: TTL_OUT_OF_RANGE, and nothing is held.
    for ttl in [Duration::from_secs(24 * 3600 + 1), Duration::ZERO] {
        let err = reserve_units(&app, &account.id, "1", Some(ttl))
            .await
            .unwrap_err();
        let meta = assert_error(&err, Code::InvalidArgument, "TTL_OUT_OF_RANGE");
        assert_eq!(meta.get("max_seconds").map(String::as_str), Some("86400"));
    }

    // Unknown request types cannot be priced; units and quantities together are ambiguous.
    let err = app
        .ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            request_type: "video".into(),
            quantities: quantities(&[("seconds", "5")]).into_iter().collect(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&err, Code::FailedPrecondition, "UNPRICED_REQUEST_TYPE");
    let err = app
        .ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            request_type: "chat".into(),
            quantities: quantities(&[("output_tokens", "5")]).into_iter().collect(),
            units: "2".into(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&err, Code::InvalidArgument, "INVALID_FIELD");

    // Holds count against available, not posted.
    assert_balance(&app.balance(&account.id).await, "100", "12.5", "87.5");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let reserves = of_kind(&txns, TransactionKind::Reserve);
    assert_eq!(reserves.len(), 4);
    assert_eq!(reserves[0].reservation_id, priced.id);
    assert_eq!(reserves[0].units, "3");
    assert_eq!(reserves[0].delta, "0");
    assert_eq!(reserves[1].reservation_id, explicit.id);
    assert_eq!(reserves[1].units, "7.5");
    app.stop().await;
}

#[tokio::test]
async fn holds_count_against_available() {
    let app = spawn_app().await;
    let (account, _) = app.funded("tight", "10").await;
    app.publish_standard_card().await;

    let hold = reserve_units(&app, &account.id, "8", None).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "10", "8", "2");

    // An image (4 units) no longer fits: the hold took 8 of the 10.
    let err = debit(&app, &account.id, "image", &[]).await.unwrap_err();
    assert_insufficient(&err, "4", "2");
    let err = reserve_units(&app, &account.id, "3", None)
        .await
        .unwrap_err();
    assert_insufficient(&err, "3", "2");
    let second = reserve_units(&app, &account.id, "2", None).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "10", "10", "0");
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_insufficient(&err, "1", "0");

    // Releasing frees the units at once.
    let released = release(&app, &hold.id, "rel-1").await.unwrap();
    assert_eq!(released.state, ReservationState::Released as i32);
    assert_eq!(released.id, hold.id);
    assert_eq!(released.units, "8");
    assert_balance(&app.balance(&account.id).await, "10", "2", "8");
    debit(&app, &account.id, "image", &[]).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "6", "2", "4");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let releases = of_kind(&txns, TransactionKind::Release);
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].reservation_id, hold.id);
    assert_eq!(releases[0].units, "8");
    assert_eq!(releases[0].delta, "0");
    assert!(
        of_kind(&txns, TransactionKind::Reserve)
            .iter()
            .any(|t| t.reservation_id == second.id)
    );
    app.stop().await;
}

#[tokio::test]
async fn capture_below_the_hold_frees_the_rest() {
    let app = spawn_app().await;
    let (account, _) = app.funded("below", "100").await;
    let card = app.publish_standard_card().await;

    // Estimated 20,000 tokens: 1 + 4 = 5 units held.
    let hold = app
        .ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            request_type: "chat".into(),
            quantities: quantities(&[("output_tokens", "20000")])
                .into_iter()
                .collect(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.units, "5");
    assert_balance(&app.balance(&account.id).await, "100", "5", "95");

    // Actual 5,000 tokens: 1 + 1 = 2 units charged; the other 3 are freed.
    let response = app
        .ledger(&app.admin)
        .capture_reservation(proto::CaptureReservationRequest {
            reservation_id: hold.id.clone(),
            quantities: quantities(&[("output_tokens", "5000")])
                .into_iter()
                .collect(),
            request_id: "cap-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!response.replayed);
    let capture = response.transaction.unwrap();
    assert_eq!(kind(&capture), TransactionKind::Capture);
    assert_eq!(capture.units, "2");
    assert_eq!(capture.delta, "-2");
    assert_eq!(capture.balance_after, "98");
    assert_eq!(capture.reservation_id, hold.id);
    assert_eq!(capture.request_type, "chat");
    assert_eq!(capture.rate_card_version, card.version);
    assert_eq!(capture.request_id, "cap-1");
    assert_eq!(capture.burns.len(), 1);
    assert_eq!(capture.burns[0].units, "2");
    assert_balance(&app.balance(&account.id).await, "98", "0", "98");

    // A units-only hold captured with explicit units below the hold.
    let hold2 = reserve_units(&app, &account.id, "10", None).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "98", "10", "88");
    // It has no request_type to price quantities with.
    let err = app
        .ledger(&app.admin)
        .capture_reservation(proto::CaptureReservationRequest {
            reservation_id: hold2.id.clone(),
            quantities: quantities(&[("output_tokens", "1")]).into_iter().collect(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&err, Code::InvalidArgument, "INVALID_FIELD");
    let capture2 = capture_units(&app, &hold2.id, "0.25", "cap-2")
        .await
        .unwrap()
        .transaction
        .unwrap();
    assert_eq!(capture2.units, "0.25");
    assert_eq!(capture2.delta, "-0.25");
    assert_balance(&app.balance(&account.id).await, "97.75", "0", "97.75");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    assert_eq!(of_kind(&txns, TransactionKind::Capture).len(), 2);
    // A capture resolves the hold: no RELEASE entry for the freed rest.
    assert!(of_kind(&txns, TransactionKind::Release).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn capture_above_the_hold_needs_the_difference_available() {
    let app = spawn_app().await;
    let (account, _) = app.funded("above", "10").await;
    app.publish_standard_card().await;

    let a = reserve_units(&app, &account.id, "4", None).await.unwrap();
    let b = reserve_units(&app, &account.id, "3", None).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "10", "7", "3");

    // 8 > 4 held + 3 available: refused, and the hold stays open.
    let err = capture_units(&app, &a.id, "8", "cap-a").await.unwrap_err();
    assert_insufficient(&err, "8", "7");
    assert_balance(&app.balance(&account.id).await, "10", "7", "3");

    // A rejected request leaves no trace: the same request_id works with other parameters.
    let response = capture_units(&app, &a.id, "7", "cap-a").await.unwrap();
    assert!(!response.replayed);
    let captured = response.transaction.unwrap();
    assert_eq!(captured.units, "7");
    assert_eq!(captured.delta, "-7");
    assert_eq!(captured.balance_after, "3");
    assert_balance(&app.balance(&account.id).await, "3", "3", "0");

    // Idempotent replay: the same transaction, replayed, no second charge.
    let replay = capture_units(&app, &a.id, "7", "cap-a").await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.transaction.unwrap(), captured);
    assert_balance(&app.balance(&account.id).await, "3", "3", "0");
    // Same request_id, different parameters.
    let err = capture_units(&app, &a.id, "6", "cap-a").await.unwrap_err();
    assert_error(&err, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");

    // A hold resolves exactly once.
    let err = capture_units(&app, &a.id, "1", "cap-a-again")
        .await
        .unwrap_err();
    assert_not_open(&err);
    let err = release(&app, &a.id, "rel-a").await.unwrap_err();
    assert_not_open(&err);

    let released = release(&app, &b.id, "rel-b").await.unwrap();
    assert_eq!(released.state, ReservationState::Released as i32);
    // Release replays too (the original answer, not an error).
    let replayed = release(&app, &b.id, "rel-b").await.unwrap();
    assert_eq!(replayed, released);
    let err = release(&app, &b.id, "rel-b-again").await.unwrap_err();
    assert_not_open(&err);
    let err = capture_units(&app, &b.id, "1", "cap-b").await.unwrap_err();
    assert_not_open(&err);
    assert_balance(&app.balance(&account.id).await, "3", "0", "3");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    assert_eq!(of_kind(&txns, TransactionKind::Capture).len(), 1);
    assert_eq!(of_kind(&txns, TransactionKind::Release).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn expired_holds_free_their_units_with_a_release_entry() {
    let app = spawn_app().await;
    let (account, _) = app.funded("expiring-holds", "10").await;
    app.publish_standard_card().await;

    let short = reserve_units(&app, &account.id, "6", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let default = reserve_units(&app, &account.id, "3", None).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "10", "9", "1");

    // Past the short hold's expiry: available comes back at once, before any sweep.
    move_clock_to(&app, micros_of(short.expire_time.as_ref()) + SECOND);
    assert_balance(&app.balance(&account.id).await, "10", "3", "7");
    assert!(
        of_kind(&app.history(&account.id).await, TransactionKind::Release).is_empty(),
        "nothing is written before the sweep"
    );
    app.sweep().await;
    let releases = of_kind(&app.history(&account.id).await, TransactionKind::Release);
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].reservation_id, short.id);
    assert_eq!(releases[0].units, "6");
    assert_eq!(releases[0].delta, "0");
    assert_eq!(releases[0].actor, "system");
    assert_eq!(
        micros_of(releases[0].create_time.as_ref()),
        micros_of(short.expire_time.as_ref())
    );
    let err = capture_units(&app, &short.id, "6", uuid().as_str())
        .await
        .unwrap_err();
    assert_not_open(&err);
    let err = release(&app, &short.id, &uuid()).await.unwrap_err();
    assert_not_open(&err);

    // The default 15-minute hold is still open one second before its expiry…
    move_clock_to(&app, micros_of(default.expire_time.as_ref()) - SECOND);
    assert_balance(&app.balance(&account.id).await, "10", "3", "7");
    // …and gone after it: a capture in the same moment (no sweep) already finds it closed.
    move_clock_to(&app, micros_of(default.expire_time.as_ref()) + SECOND);
    assert_balance(&app.balance(&account.id).await, "10", "0", "10");
    let err = capture_units(&app, &default.id, "3", uuid().as_str())
        .await
        .unwrap_err();
    assert_not_open(&err);

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let releases = of_kind(&txns, TransactionKind::Release);
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert_eq!(releases[1].reservation_id, default.id);
    assert_eq!(releases[1].units, "3");
    assert_eq!(
        micros_of(releases[1].create_time.as_ref()),
        micros_of(default.expire_time.as_ref())
    );
    assert!(of_kind(&txns, TransactionKind::Capture).is_empty());
    assert_balance(&app.balance(&account.id).await, "10", "0", "10");
    app.stop().await;
}

// ---- refunds -------------------------------------------------------------------------------

/// A wallet with grant A (5) and grant B (100), and a debit of 8 that burns A 5 then B 3.
async fn split_debit(app: &TestApp, name: &str) -> (String, String, String, String, String) {
    let (account, wallet) = app.funded(name, "").await;
    let a = app.grant(&wallet.id, "5").await;
    let b = app.grant(&wallet.id, "100").await;
    app.publish_standard_card().await;
    // chat, 35,000 tokens: 1 + 7 = 8 units.
    let txn = debit(app, &account.id, "chat", &[("output_tokens", "35000")])
        .await
        .unwrap();
    assert_eq!(txn.units, "8");
    let burns: Vec<(&str, &str)> = txn
        .burns
        .iter()
        .map(|b| (b.grant_id.as_str(), b.units.as_str()))
        .collect();
    assert_eq!(burns, [(a.id.as_str(), "5"), (b.id.as_str(), "3")]);
    (account.id, wallet.id, a.id, b.id, txn.id)
}

#[tokio::test]
async fn full_refund_returns_units_to_their_grants() {
    let app = spawn_app().await;
    let (account, wallet, a, b, debit_id) = split_debit(&app, "full-refund").await;
    assert_balance(&app.balance(&account).await, "97", "0", "97");

    // Default units: everything not yet refunded.
    let refunded = refund(&app, &debit_id, "", "refund-all").await.unwrap();
    assert_eq!(kind(&refunded), TransactionKind::Refund);
    assert_eq!(refunded.units, "8");
    assert_eq!(refunded.delta, "8");
    assert_eq!(refunded.balance_after, "105");
    assert_eq!(refunded.refunded_transaction_id, debit_id);
    assert_eq!(refunded.reason, "request failed");
    assert_eq!(refunded.request_id, "refund-all");
    assert_balance(&app.balance(&account).await, "105", "0", "105");
    let grants = grants_by_id(&app, &wallet).await;
    assert_eq!(grants[&a].remaining, "5");
    assert_eq!(grants[&b].remaining, "100");
    assert_eq!(grants[&a].state, GrantState::Active as i32);

    // Idempotent: same request_id → the same entry, no second effect.
    let again = refund(&app, &debit_id, "", "refund-all").await.unwrap();
    assert_eq!(again, refunded);
    assert_balance(&app.balance(&account).await, "105", "0", "105");
    // A new request: nothing is left to refund.
    let err = refund(&app, &debit_id, "", "refund-more")
        .await
        .unwrap_err();
    let meta = assert_error(&err, Code::FailedPrecondition, "REFUND_EXCEEDS_CHARGE");
    assert_eq!(meta.get("refundable").map(String::as_str), Some("0"));

    let txns = assert_ledger_consistent(&app, &account).await;
    assert_eq!(of_kind(&txns, TransactionKind::Refund).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn partial_refunds_up_to_the_charge() {
    let app = spawn_app().await;
    let (account, wallet, a, b, debit_id) = split_debit(&app, "partial-refund").await;

    // Refunds return the last burns first: B's 3, then A's.
    let first = refund(&app, &debit_id, "3", "r1").await.unwrap();
    assert_eq!(first.units, "3");
    assert_eq!(first.delta, "3");
    assert_eq!(first.burns.len(), 1);
    assert_eq!(first.burns[0].grant_id, b);
    let grants = grants_by_id(&app, &wallet).await;
    assert_eq!(
        (grants[&a].remaining.as_str(), grants[&b].remaining.as_str()),
        ("0", "100")
    );

    let second = refund(&app, &debit_id, "2.5", "r2").await.unwrap();
    assert_eq!(second.units, "2.5");
    assert_eq!(second.burns[0].grant_id, a);
    let grants = grants_by_id(&app, &wallet).await;
    assert_eq!(grants[&a].remaining, "2.5");

    // 2.5 left: asking for 3 is refused and says how much is left.
    let err = refund(&app, &debit_id, "3", "r3").await.unwrap_err();
    let meta = assert_error(&err, Code::FailedPrecondition, "REFUND_EXCEEDS_CHARGE");
    assert_eq!(meta.get("refundable").map(String::as_str), Some("2.5"));
    assert_balance(&app.balance(&account).await, "102.5", "0", "102.5");

    // Default: all not yet refunded.
    let rest = refund(&app, &debit_id, "", "r4").await.unwrap();
    assert_eq!(rest.units, "2.5");
    assert_eq!(rest.balance_after, "105");
    let grants = grants_by_id(&app, &wallet).await;
    assert_eq!(
        (grants[&a].remaining.as_str(), grants[&b].remaining.as_str()),
        ("5", "100")
    );

    for units in ["1", "0.000001", ""] {
        let err = refund(&app, &debit_id, units, &uuid()).await.unwrap_err();
        let meta = assert_error(&err, Code::FailedPrecondition, "REFUND_EXCEEDS_CHARGE");
        assert_eq!(meta.get("refundable").map(String::as_str), Some("0"));
    }
    // Replays of earlier refunds still answer with their entries.
    assert_eq!(refund(&app, &debit_id, "3", "r1").await.unwrap(), first);
    // Zero or negative units are not a refund.
    for units in ["0", "-1"] {
        let err = refund(&app, &debit_id, units, &uuid()).await.unwrap_err();
        assert_error(&err, Code::InvalidArgument, "INVALID_AMOUNT");
    }
    let err = refund(&app, &debit_id, "1", "r1").await.unwrap_err();
    assert_error(&err, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    assert_balance(&app.balance(&account).await, "105", "0", "105");

    let txns = assert_ledger_consistent(&app, &account).await;
    let refunds = of_kind(&txns, TransactionKind::Refund);
    assert_eq!(refunds.len(), 3);
    assert!(
        refunds
            .iter()
            .all(|r| r.refunded_transaction_id == debit_id)
    );
    let total: Decimal = refunds.iter().map(|r| dec(&r.units)).sum();
    assert_eq!(total, Decimal::from(8));
    app.stop().await;
}

#[tokio::test]
async fn refund_of_a_capture_and_what_is_not_refundable() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("refund-capture", "50").await;
    app.publish_standard_card().await;
    let hold = reserve_units(&app, &account.id, "10", None).await.unwrap();
    let capture = capture_units(&app, &hold.id, "6", "cap")
        .await
        .unwrap()
        .transaction
        .unwrap();
    assert_balance(&app.balance(&account.id).await, "44", "0", "44");

    let refunded = refund(&app, &capture.id, "", "refund-capture")
        .await
        .unwrap();
    assert_eq!(kind(&refunded), TransactionKind::Refund);
    assert_eq!(refunded.units, "6");
    assert_eq!(refunded.delta, "6");
    assert_eq!(refunded.refunded_transaction_id, capture.id);
    assert_balance(&app.balance(&account.id).await, "50", "0", "50");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants.values().next().unwrap().remaining, "50");

    // GRANT, RESERVE and REFUND entries are not refundable.
    let txns = app.history(&account.id).await;
    for not_refundable in [
        TransactionKind::Grant,
        TransactionKind::Reserve,
        TransactionKind::Refund,
    ] {
        let entry = &of_kind(&txns, not_refundable)[0];
        let err = refund(&app, &entry.id, "", &uuid()).await.unwrap_err();
        let meta = assert_error(&err, Code::FailedPrecondition, "NOT_REFUNDABLE");
        assert_eq!(
            meta.get("kind").map(String::as_str),
            Some(
                not_refundable
                    .as_str_name()
                    .trim_start_matches("TRANSACTION_KIND_")
            )
        );
    }
    // An unknown transaction.
    let err = refund(&app, "txn_doesnotexist", "", &uuid())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    assert_ledger_consistent(&app, &account.id).await;
    assert_balance(&app.balance(&account.id).await, "50", "0", "50");
    app.stop().await;
}

#[tokio::test]
async fn refund_to_an_expired_grant_expires_again_at_once() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("refund-expired", "").await;
    let expiry = now_second(&app) + HOUR;
    let soon = create_grant(&app, &wallet.id, "10", None, Some(expiry)).await;
    let lasting = create_grant(&app, &wallet.id, "20", None, None).await;
    app.publish_standard_card().await;

    // The expiring grant burns first.
    let image = debit(&app, &account.id, "image", &[]).await.unwrap();
    assert_eq!(image.burns.len(), 1);
    assert_eq!(image.burns[0].grant_id, soon.id);
    assert_balance(&app.balance(&account.id).await, "26", "0", "26");

    app.advance(Duration::from_secs(2 * 3600)).await;
    assert_balance(&app.balance(&account.id).await, "20", "0", "20");

    let refunded = refund(&app, &image.id, "", "late-refund").await.unwrap();
    assert_eq!(kind(&refunded), TransactionKind::Refund);
    assert_eq!(refunded.units, "4");
    assert_eq!(refunded.delta, "4");
    assert_eq!(refunded.balance_after, "24");
    // Posted unchanged net: the units went back to the expired grant and expired again.
    assert_balance(&app.balance(&account.id).await, "20", "0", "20");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&soon.id].state, GrantState::Expired as i32);
    assert_eq!(grants[&soon.id].remaining, "0");
    assert_eq!(grants[&lasting.id].remaining, "20");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let expires = of_kind(&txns, TransactionKind::Expire);
    assert_eq!(expires.len(), 2, "{expires:?}");
    // The first at the grant's expiry (its 6 remaining units)…
    assert_eq!(expires[0].grant_id, soon.id);
    assert_eq!(expires[0].units, "6");
    assert_eq!(expires[0].delta, "-6");
    assert_eq!(micros_of(expires[0].create_time.as_ref()), expiry);
    // …then the refunded 4, right after the REFUND entry.
    let at = txns.iter().position(|t| t.id == refunded.id).unwrap();
    let again = &txns[at + 1];
    assert_eq!(kind(again), TransactionKind::Expire);
    assert_eq!(again.grant_id, soon.id);
    assert_eq!(again.units, "4");
    assert_eq!(again.delta, "-4");
    assert_eq!(again.balance_after, "20");
    assert_eq!(again.refunded_transaction_id, image.id);
    app.stop().await;
}

// ---- grant lifecycle -----------------------------------------------------------------------

#[tokio::test]
async fn grants_expire_at_their_expire_time() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("grant-expiry", "").await;
    let expiry = now_second(&app) + HOUR;
    let expiring = create_grant(&app, &wallet.id, "10", None, Some(expiry)).await;
    let lasting = create_grant(&app, &wallet.id, "5", None, None).await;
    app.publish_standard_card().await;
    debit(&app, &account.id, "one", &[]).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "14", "0", "14");

    // One second before: still counts.
    move_clock_to(&app, expiry - SECOND);
    assert_balance(&app.balance(&account.id).await, "14", "0", "14");
    // At expire_time: excluded at once, even before the sweep writes anything.
    move_clock_to(&app, expiry);
    assert_balance(&app.balance(&account.id).await, "5", "0", "5");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&expiring.id].state, GrantState::Expired as i32);
    assert!(of_kind(&app.history(&account.id).await, TransactionKind::Expire).is_empty());
    // A debit beyond what is live is refused.
    let err = debit(&app, &account.id, "chat", &[("output_tokens", "25000")])
        .await
        .unwrap_err();
    assert_insufficient(&err, "6", "5");

    app.sweep().await;
    let expires = of_kind(&app.history(&account.id).await, TransactionKind::Expire);
    assert_eq!(expires.len(), 1);
    assert_eq!(expires[0].grant_id, expiring.id);
    assert_eq!(expires[0].units, "9");
    assert_eq!(expires[0].delta, "-9");
    assert_eq!(expires[0].balance_after, "5");
    assert_eq!(expires[0].actor, "system");
    assert_eq!(micros_of(expires[0].create_time.as_ref()), expiry);
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&expiring.id].state, GrantState::Expired as i32);
    assert_eq!(grants[&expiring.id].remaining, "0");
    assert_eq!(grants[&lasting.id].remaining, "5");
    // Sweeping again writes nothing more.
    app.sweep().await;
    assert_eq!(
        of_kind(&app.history(&account.id).await, TransactionKind::Expire).len(),
        1
    );
    assert_ledger_consistent(&app, &account.id).await;
    app.stop().await;
}

#[tokio::test]
async fn future_grants_count_from_their_effective_time() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("pending", "").await;
    app.publish_standard_card().await;
    let effective = now_second(&app) + DAY;
    let pending = create_grant(&app, &wallet.id, "50", Some(effective), None).await;
    assert_eq!(pending.state, GrantState::Pending as i32);
    assert_eq!(pending.remaining, "50");
    assert_eq!(micros_of(pending.effective_time.as_ref()), effective);
    assert_balance(&app.balance(&account.id).await, "0", "0", "0");
    assert!(
        app.history(&account.id).await.is_empty(),
        "no GRANT entry yet"
    );
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_insufficient(&err, "1", "0");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&pending.id].state, GrantState::Pending as i32);

    // Counted from its effective time, before any sweep.
    move_clock_to(&app, effective + SECOND);
    assert_balance(&app.balance(&account.id).await, "50", "0", "50");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&pending.id].state, GrantState::Active as i32);
    app.sweep().await;
    let txns = app.history(&account.id).await;
    assert_eq!(txns.len(), 1, "{txns:?}");
    assert_eq!(kind(&txns[0]), TransactionKind::Grant);
    assert_eq!(txns[0].grant_id, pending.id);
    assert_eq!(txns[0].units, "50");
    assert_eq!(txns[0].delta, "50");
    assert_eq!(micros_of(txns[0].create_time.as_ref()), effective);
    debit(&app, &account.id, "image", &[]).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "46", "0", "46");
    assert_ledger_consistent(&app, &account.id).await;
    app.stop().await;
}

#[tokio::test]
async fn void_removes_the_remaining_units_once() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("voided", "").await;
    let voided = app.grant(&wallet.id, "30").await;
    let kept = app.grant(&wallet.id, "10").await;
    app.publish_standard_card().await;
    let image = debit(&app, &account.id, "image", &[]).await.unwrap();
    assert_eq!(image.burns[0].grant_id, voided.id);
    assert_balance(&app.balance(&account.id).await, "36", "0", "36");

    let grant = void(&app, &voided.id, "contract cancelled", "void-1")
        .await
        .unwrap();
    assert_eq!(grant.id, voided.id);
    assert_eq!(grant.state, GrantState::Voided as i32);
    assert_eq!(grant.remaining, "0");
    assert_eq!(grant.void_reason, "contract cancelled");
    assert_balance(&app.balance(&account.id).await, "10", "0", "10");
    // Replay: the same answer, no second effect.
    assert_eq!(
        void(&app, &voided.id, "contract cancelled", "void-1")
            .await
            .unwrap(),
        grant
    );
    // A new request: the grant is no longer active.
    let err = void(&app, &voided.id, "again", "void-2").await.unwrap_err();
    assert_error(&err, Code::FailedPrecondition, "GRANT_NOT_ACTIVE");
    assert_balance(&app.balance(&account.id).await, "10", "0", "10");

    // A refund to the voided grant is voided again at once.
    let refunded = refund(&app, &image.id, "", "refund-voided").await.unwrap();
    assert_eq!(refunded.delta, "4");
    assert_balance(&app.balance(&account.id).await, "10", "0", "10");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&voided.id].remaining, "0");
    assert_eq!(grants[&kept.id].remaining, "10");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let voids = of_kind(&txns, TransactionKind::Void);
    assert_eq!(voids.len(), 2, "{voids:?}");
    assert_eq!(voids[0].grant_id, voided.id);
    assert_eq!(voids[0].units, "26");
    assert_eq!(voids[0].delta, "-26");
    assert_eq!(voids[0].reason, "contract cancelled");
    assert_eq!(voids[0].balance_after, "10");
    assert_eq!(voids[1].units, "4");
    assert_eq!(voids[1].delta, "-4");
    assert_eq!(voids[1].refunded_transaction_id, image.id);
    app.stop().await;
}

#[tokio::test]
async fn adjustments_up_and_down_with_a_reason() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("adjusted", "10").await;

    let up = adjust(&app, &wallet.id, "15", "goodwill credit")
        .await
        .unwrap();
    assert_eq!(kind(&up), TransactionKind::Adjust);
    assert_eq!(up.units, "15");
    assert_eq!(up.delta, "15");
    assert_eq!(up.balance_after, "25");
    assert_eq!(up.reason, "goodwill credit");
    assert!(up.grant_id.starts_with("grt_"), "{up:?}");
    let grants = grants_by_id(&app, &wallet.id).await;
    let adjustment = &grants[&up.grant_id];
    assert_eq!(adjustment.kind, proto::GrantKind::Adjustment as i32);
    assert_eq!(adjustment.amount, "15");
    assert_balance(&app.balance(&account.id).await, "25", "0", "25");

    let down = adjust(&app, &wallet.id, "-5.5", "billing correction")
        .await
        .unwrap();
    assert_eq!(kind(&down), TransactionKind::Adjust);
    assert_eq!(down.units, "5.5");
    assert_eq!(down.delta, "-5.5");
    assert_eq!(down.balance_after, "19.5");
    assert_eq!(down.reason, "billing correction");
    assert_balance(&app.balance(&account.id).await, "19.5", "0", "19.5");

    // The reason is required.
    let err = adjust(&app, &wallet.id, "5", "").await.unwrap_err();
    assert_invalid(&err, "MISSING_FIELD", "reason");
    let err = adjust(&app, &wallet.id, "0", "nothing").await.unwrap_err();
    assert_error(&err, Code::InvalidArgument, "INVALID_AMOUNT");

    // Never below what available allows (holds included).
    reserve_units(&app, &account.id, "9.5", None).await.unwrap();
    let err = adjust(&app, &wallet.id, "-10.5", "too much")
        .await
        .unwrap_err();
    assert_insufficient(&err, "10.5", "10");
    let err = adjust(&app, &wallet.id, "-1000", "far too much")
        .await
        .unwrap_err();
    assert_insufficient(&err, "1000", "10");
    adjust(&app, &wallet.id, "-10", "all that is free")
        .await
        .unwrap();
    assert_balance(&app.balance(&account.id).await, "9.5", "9.5", "0");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    assert_eq!(of_kind(&txns, TransactionKind::Adjust).len(), 3);
    app.stop().await;
}

// ---- spend caps and thresholds -------------------------------------------------------------

#[tokio::test]
async fn daily_spend_cap_counts_holds_and_resets_at_utc_midnight() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("daily-cap", "1000").await;
    app.publish_standard_card().await;
    // Start one hour into a UTC day, so the test never straddles midnight by accident.
    move_clock_to(&app, next_utc_midnight(&app) + HOUR);
    let updated = set_spend_cap(&app, &wallet.id, "daily_spend_cap", "10")
        .await
        .unwrap();
    assert_eq!(updated.daily_spend_cap, "10");
    assert_eq!(updated.monthly_spend_cap, "");

    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "image", &[]).await.unwrap();
    // A hold counts toward the cap: 8 spent + 2 held = 10.
    let hold = reserve_units(&app, &account.id, "2", None).await.unwrap();
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "daily", "10", "10", "1");
    let err = reserve_units(&app, &account.id, "0.5", None)
        .await
        .unwrap_err();
    assert_spend_cap(&err, "daily", "10", "10", "0.5");
    // Plenty of credits: the cap, not the balance, refuses.
    assert_balance(&app.balance(&account.id).await, "992", "2", "990");

    // Released: 8 used, room for 2 more.
    release(&app, &hold.id, &uuid()).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    // A capture above its hold is held to the cap too; the hold stays open.
    let hold = reserve_units(&app, &account.id, "1", None).await.unwrap();
    let err = capture_units(&app, &hold.id, "2", &uuid())
        .await
        .unwrap_err();
    assert_spend_cap(&err, "daily", "10", "9", "2");
    capture_units(&app, &hold.id, "1", &uuid()).await.unwrap();
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "daily", "10", "10", "1");

    // Just before midnight: still capped. Just after: a fresh day.
    let midnight = next_utc_midnight(&app);
    move_clock_to(&app, midnight - SECOND);
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "daily", "10", "10", "1");
    move_clock_to(&app, midnight + MINUTE);
    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "image", &[]).await.unwrap();
    let err = debit(&app, &account.id, "image", &[]).await.unwrap_err();
    assert_spend_cap(&err, "daily", "10", "8", "4");
    debit(&app, &account.id, "one", &[]).await.unwrap();
    assert_balance(&app.balance(&account.id).await, "981", "0", "981");

    // Removing the cap (masked, empty) lifts the limit.
    let updated = set_spend_cap(&app, &wallet.id, "daily_spend_cap", "")
        .await
        .unwrap();
    assert_eq!(updated.daily_spend_cap, "");
    debit(&app, &account.id, "image", &[]).await.unwrap();
    assert_ledger_consistent(&app, &account.id).await;
    app.stop().await;
}

/// Refunds give back what they return within the same day; a refund of an earlier day's
/// debit must not let today's charges go beyond today's cap.
#[tokio::test]
async fn refunds_and_the_daily_spend_cap() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("cap-refunds", "1000").await;
    app.publish_standard_card().await;
    move_clock_to(&app, next_utc_midnight(&app) + HOUR);
    set_spend_cap(&app, &wallet.id, "daily_spend_cap", "10")
        .await
        .unwrap();

    // Day 1: 10 units, then a same-day refund of 4 makes room for 4 more.
    let first = debit(&app, &account.id, "image", &[]).await.unwrap();
    let second = debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "daily", "10", "10", "1");
    refund(&app, &first.id, "", &uuid()).await.unwrap();
    debit(&app, &account.id, "image", &[]).await.unwrap();
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "daily", "10", "10", "1");

    // Day 2: spend the full cap, then refund a day-1 debit. Today's charges already reached
    // 10; the refund returns yesterday's units and must not open room for more today.
    move_clock_to(&app, next_utc_midnight(&app) + HOUR);
    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    let refunded = refund(&app, &second.id, "", &uuid()).await.unwrap();
    assert_eq!(refunded.units, "4");
    assert_balance(&app.balance(&account.id).await, "984", "0", "984");
    let result = debit(&app, &account.id, "image", &[]).await;
    let charged_today: Decimal = app
        .history(&account.id)
        .await
        .iter()
        .filter(|t| kind(t) == TransactionKind::Debit)
        .filter(|t| micros_of(t.create_time.as_ref()) >= next_utc_midnight(&app) - DAY)
        .map(|t| dec(&t.units))
        .sum();
    let err = result.expect_err(&format!(
        "a refund of yesterday's debit reopened today's cap: {charged_today} units charged today \
         against a daily cap of 10"
    ));
    assert_spend_cap(&err, "daily", "10", "10", "4");
    assert_ledger_consistent(&app, &account.id).await;
    app.stop().await;
}

#[tokio::test]
async fn monthly_spend_cap_resets_on_the_first_of_the_month() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("monthly-cap", "1000").await;
    app.publish_standard_card().await;
    // Start one hour into a month.
    move_clock_to(&app, next_month_start(&app) + HOUR);
    set_spend_cap(&app, &wallet.id, "monthly_spend_cap", "10")
        .await
        .unwrap();

    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "image", &[]).await.unwrap();
    let err = debit(&app, &account.id, "image", &[]).await.unwrap_err();
    assert_spend_cap(&err, "monthly", "10", "8", "4");
    let hold = reserve_units(&app, &account.id, "2", None).await.unwrap();
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "monthly", "10", "10", "1");
    capture_units(&app, &hold.id, "2", &uuid()).await.unwrap();

    // A new day is not a new month.
    move_clock_to(&app, next_utc_midnight(&app) + HOUR);
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "monthly", "10", "10", "1");

    // The 1st of the next month: a fresh month.
    let month = next_month_start(&app);
    move_clock_to(&app, month - SECOND);
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "monthly", "10", "10", "1");
    move_clock_to(&app, month + MINUTE);
    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "image", &[]).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    debit(&app, &account.id, "one", &[]).await.unwrap();
    let err = debit(&app, &account.id, "one", &[]).await.unwrap_err();
    assert_spend_cap(&err, "monthly", "10", "10", "1");
    assert_balance(&app.balance(&account.id).await, "980", "0", "980");
    assert_ledger_consistent(&app, &account.id).await;
    app.stop().await;
}

#[tokio::test]
async fn low_balance_thresholds_are_reported_when_crossed() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("thresholds", "150").await;
    app.publish_standard_card().await;
    let updated = update_wallet(
        &app,
        proto::Wallet {
            id: wallet.id.clone(),
            low_balance_thresholds: vec!["100".into(), "10".into()],
            ..Default::default()
        },
        &["low_balance_thresholds"],
    )
    .await
    .unwrap();
    assert_eq!(updated.low_balance_thresholds, ["100", "10"]);
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "150");
    assert!(balance.crossed_thresholds.is_empty(), "{balance:?}");

    // chat is capped at 50 units per request.
    let big = [("output_tokens", "1000000")];
    debit(&app, &account.id, "chat", &big).await.unwrap();
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "100");
    assert_eq!(balance.crossed_thresholds, ["100"], "at or above available");

    debit(&app, &account.id, "chat", &big).await.unwrap();
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "50");
    assert_eq!(balance.crossed_thresholds, ["100"]);

    // A hold lowers available too: 50 − 39.5 = 10.5, still above 10…
    let hold = reserve_units(&app, &account.id, "39.5", None)
        .await
        .unwrap();
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "10.5");
    assert_eq!(balance.crossed_thresholds, ["100"]);
    // …then 0.5 more captured: exactly 10.
    capture_units(&app, &hold.id, "40", &uuid()).await.unwrap();
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "10");
    assert_eq!(balance.crossed_thresholds, ["100", "10"]);

    debit(&app, &account.id, "image", &[]).await.unwrap();
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "6");
    assert_eq!(balance.crossed_thresholds, ["100", "10"]);
    assert_ledger_consistent(&app, &account.id).await;
    app.stop().await;
}

// ---- concurrency ---------------------------------------------------------------------------

/// 100 concurrent captures of one hold with different request_ids: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_captures_of_one_hold_resolve_it_once() {
    let app = spawn_app().await;
    let (account, _) = app.funded("race-capture", "100").await;
    app.publish_standard_card().await;
    let hold = reserve_units(&app, &account.id, "10", None).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut client = app.ledger(&app.admin);
        // Different amounts, so the ledger shows which capture won.
        let request = proto::CaptureReservationRequest {
            reservation_id: hold.id.clone(),
            units: format!("{}", i % 10 + 1),
            request_id: format!("capture-{i}"),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            client.capture_reservation(request).await
        }));
    }
    let mut winners = Vec::new();
    let mut not_open = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => winners.push(response.into_inner()),
            Err(status) => {
                assert_not_open(&status);
                not_open += 1;
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(not_open, 99);
    let won = winners.pop().unwrap().transaction.unwrap();
    let charged = dec(&won.units);
    let posted = Decimal::from(100) - charged;
    let balance = app.balance(&account.id).await;
    assert_eq!(dec(&balance.posted), posted);
    assert_eq!(balance.reserved, "0");
    assert_eq!(dec(&balance.available), posted);

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let captures = of_kind(&txns, TransactionKind::Capture);
    assert_eq!(captures.len(), 1);
    assert_eq!(captures[0].id, won.id);
    assert!(of_kind(&txns, TransactionKind::Release).is_empty());
    app.stop().await;
}

/// 50 concurrent refunds of 1 unit of a 20-unit debit: exactly 20 succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_the_charge() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("race-refund", "100").await;
    app.publish_standard_card().await;
    // chat, 95,000 tokens: 1 + 19 = 20 units.
    let charged = debit(&app, &account.id, "chat", &[("output_tokens", "95000")])
        .await
        .unwrap();
    assert_eq!(charged.units, "20");
    assert_balance(&app.balance(&account.id).await, "80", "0", "80");

    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut client = app.ledger(&app.admin);
        let request = proto::RefundRequest {
            transaction_id: charged.id.clone(),
            units: "1".into(),
            reason: "partial failure".into(),
            request_id: format!("refund-{i}"),
        };
        tasks.push(tokio::spawn(async move { client.refund(request).await }));
    }
    let mut ok = 0;
    let mut exceeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                let txn = response.into_inner();
                assert_eq!(kind(&txn), TransactionKind::Refund);
                assert_eq!(txn.units, "1");
                ok += 1;
            }
            Err(status) => {
                let meta = assert_error(&status, Code::FailedPrecondition, "REFUND_EXCEEDS_CHARGE");
                assert_eq!(meta.get("refundable").map(String::as_str), Some("0"));
                exceeded += 1;
            }
        }
    }
    assert_eq!(ok, 20);
    assert_eq!(exceeded, 30);
    assert_balance(&app.balance(&account.id).await, "100", "0", "100");
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants.values().next().unwrap().remaining, "100");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    let refunds = of_kind(&txns, TransactionKind::Refund);
    assert_eq!(refunds.len(), 20);
    assert!(
        refunds
            .iter()
            .all(|r| r.refunded_transaction_id == charged.id)
    );
    app.stop().await;
}

/// A grant of 10 expiring at T and a grant of 5 without expiry; 30 concurrent 1-unit debits
/// while the clock passes T: nothing burns the expiring grant at or after T, what it lost to
/// debits and to expiry adds up to its 10, and nothing is spent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_racing_debits_never_double_spends() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("race-expiry", "").await;
    app.publish_standard_card().await;
    let expiry = now_second(&app) + 30 * SECOND;
    let expiring = create_grant(&app, &wallet.id, "10", None, Some(expiry)).await;
    let lasting = create_grant(&app, &wallet.id, "5", None, None).await;
    assert_balance(&app.balance(&account.id).await, "15", "0", "15");

    // Each debit reports when it is answered, so the clock can move once the first wave is
    // under way (at least one answered, the rest in flight).
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for i in 0..30 {
        if i == 15 {
            // Midway: move the server's clock past T while the first debits are in flight.
            done_rx.recv().await.expect("a first-wave debit answered");
            move_clock_to(&app, expiry + MINUTE);
        }
        let mut client = app.ledger(&app.admin);
        let request = debit_request(&account.id, "one", &format!("race-{i}"));
        let done = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            let result = client.debit(request).await;
            let _ = done.send(());
            result
        }));
    }
    let mut debits = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => debits.push(response.into_inner().transaction.unwrap()),
            Err(status) => assert_insufficient(&status, "1", "0"),
        }
    }

    let mut from_expiring = Decimal::ZERO;
    let mut from_lasting = Decimal::ZERO;
    for txn in &debits {
        assert_eq!(txn.units, "1");
        for burn in &txn.burns {
            if burn.grant_id == expiring.id {
                assert!(
                    micros_of(txn.create_time.as_ref()) < expiry,
                    "burnt the expiring grant at or after its expiry: {txn:?}"
                );
                from_expiring += dec(&burn.units);
            } else {
                assert_eq!(burn.grant_id, lasting.id, "{txn:?}");
                from_lasting += dec(&burn.units);
            }
        }
    }
    assert!(
        debits.len() <= 15,
        "{} debits from 15 live units",
        debits.len()
    );
    assert_eq!(
        Decimal::from(debits.len() as i64),
        from_expiring + from_lasting
    );
    // 30 debits exhaust whatever was live: the lasting grant always ends empty.
    assert_eq!(from_lasting, Decimal::from(5));
    assert_balance(&app.balance(&account.id).await, "0", "0", "0");

    let txns = assert_ledger_consistent(&app, &account.id).await;
    for t in &txns {
        assert!(
            dec(&t.balance_after) >= Decimal::ZERO,
            "posted went negative: {t:?}"
        );
    }
    let expired: Decimal = of_kind(&txns, TransactionKind::Expire)
        .iter()
        .map(|t| {
            assert_eq!(t.grant_id, expiring.id);
            assert_eq!(micros_of(t.create_time.as_ref()), expiry);
            dec(&t.units)
        })
        .sum();
    assert_eq!(
        from_expiring + expired,
        Decimal::from(10),
        "the expiring grant's 10 units were either spent before T or expired at T"
    );
    let grants = grants_by_id(&app, &wallet.id).await;
    assert_eq!(grants[&expiring.id].remaining, "0");
    assert_eq!(grants[&lasting.id].remaining, "0");
    app.stop().await;
}
