//! Balance events and WatchBalance, over gRPC against the real server: every change of a
//! wallet becomes an event in the transaction that makes it, numbered per wallet without
//! gaps; a watch starts with the balance and follows the events, resumes after a number
//! without gaps or repeats, works across replicas, and ends a reader that falls behind.

mod common;

use std::{collections::BTreeMap, time::Duration};

use allot::proto;
use common::*;
use prost_types::FieldMask;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

const SECOND: i64 = 1_000_000;

async fn watch(
    app: &TestApp,
    token: &str,
    wallet_id: &str,
    after: Option<i64>,
) -> Result<Streaming<proto::BalanceEvent>, Status> {
    app.ledger(token)
        .watch_balance(proto::WatchBalanceRequest {
            wallet_id: wallet_id.into(),
            after_sequence: after,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The next `n` messages of the watch (failing the test after 10 s without one).
async fn next(stream: &mut Streaming<proto::BalanceEvent>, n: usize) -> Vec<proto::BalanceEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no event within 10 s after {out:#?}"))
            .expect("watch stream")
            .expect("watch ended");
        out.push(message);
    }
    out
}

/// Nothing arrives for a while.
async fn quiet(stream: &mut Streaming<proto::BalanceEvent>) {
    if let Ok(message) = tokio::time::timeout(Duration::from_millis(700), stream.message()).await {
        panic!("expected no event, got {message:?}");
    }
}

fn kinds(events: &[proto::BalanceEvent]) -> Vec<(i64, &str)> {
    events
        .iter()
        .map(|e| (e.sequence, e.r#type.as_str()))
        .collect()
}

fn available(event: &proto::BalanceEvent) -> &str {
    &event.balance.as_ref().expect("balance").available
}

/// A threshold crossing's threshold and direction.
fn crossing(event: &proto::BalanceEvent) -> (&str, &str) {
    (data(event, "threshold"), data(event, "direction"))
}

fn data<'a>(event: &'a proto::BalanceEvent, key: &str) -> &'a str {
    event.data.get(key).map(String::as_str).unwrap_or("")
}

async fn debit(
    app: &TestApp,
    account_id: &str,
    request_type: &str,
) -> Result<proto::Transaction, Status> {
    app.ledger(&app.admin)
        .debit(debit_request(account_id, request_type, &uuid()))
        .await
        .map(|r| r.into_inner().transaction.expect("transaction"))
}

async fn set_thresholds(app: &TestApp, wallet_id: &str, thresholds: &[&str]) {
    app.accounts(&app.admin)
        .update_wallet(proto::UpdateWalletRequest {
            wallet: Some(proto::Wallet {
                id: wallet_id.into(),
                low_balance_thresholds: thresholds.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["low_balance_thresholds".into()],
            }),
            request_id: uuid(),
        })
        .await
        .expect("update wallet");
}

#[tokio::test]
async fn a_watch_starts_with_the_balance_and_follows_every_change() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("watched", "10").await;
    set_thresholds(&app, &wallet.id, &["5", "2"]).await;

    let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    let snapshot = next(&mut stream, 1).await.remove(0);
    // The grant wrote two events: its entry and its activation.
    assert_eq!(
        kinds(std::slice::from_ref(&snapshot)),
        [(2, "balance.snapshot")]
    );
    assert_eq!(available(&snapshot), "10");
    assert_eq!(snapshot.wallet_id, wallet.id);
    assert_eq!(snapshot.account_id, account.id);
    quiet(&mut stream).await;

    // 10 → 6: one change.
    let first = debit(&app, &account.id, "image").await.unwrap();
    let events = next(&mut stream, 1).await;
    assert_eq!(kinds(&events), [(3, "balance.changed")]);
    assert_eq!(available(&events[0]), "6");
    assert_eq!(data(&events[0], "transaction_id"), first.id);
    assert_eq!(data(&events[0], "kind"), "DEBIT");
    assert_eq!(data(&events[0], "units"), "4");
    assert_eq!(data(&events[0], "delta"), "-4");
    assert!(!events[0].id.is_empty());

    // 6 → 2: through both thresholds, the higher first.
    debit(&app, &account.id, "image").await.unwrap();
    let events = next(&mut stream, 3).await;
    assert_eq!(
        kinds(&events),
        [
            (4, "balance.changed"),
            (5, "balance.threshold_crossed"),
            (6, "balance.threshold_crossed")
        ]
    );
    assert_eq!(crossing(&events[1]), ("5", "down"));
    assert_eq!(crossing(&events[2]), ("2", "down"));
    assert_eq!(available(&events[2]), "2");

    // Refused (4 > 2 available) and replayed requests write no event.
    let err = debit(&app, &account.id, "image").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let request = debit_request(&account.id, "one", &uuid());
    app.ledger(&app.admin).debit(request.clone()).await.unwrap();
    let events = next(&mut stream, 1).await;
    assert_eq!(kinds(&events), [(7, "balance.changed")]);
    let replay = app.ledger(&app.admin).debit(request).await.unwrap();
    assert!(replay.into_inner().replayed);
    quiet(&mut stream).await;

    // 1 → 0: depleted.
    debit(&app, &account.id, "one").await.unwrap();
    let events = next(&mut stream, 2).await;
    assert_eq!(
        kinds(&events),
        [(8, "balance.changed"), (9, "balance.depleted")]
    );
    assert_eq!(available(&events[1]), "0");
    assert_eq!(data(&events[1], "previous_available"), "1");

    // A grant: back above both thresholds, the lower first.
    let grant = app.grant(&wallet.id, "20").await;
    let events = next(&mut stream, 4).await;
    assert_eq!(
        kinds(&events),
        [
            (10, "balance.changed"),
            (11, "grant.activated"),
            (12, "balance.threshold_crossed"),
            (13, "balance.threshold_crossed")
        ]
    );
    assert_eq!(data(&events[1], "grant_id"), grant.id);
    assert_eq!(data(&events[1], "units"), "20");
    assert_eq!(crossing(&events[2]), ("2", "up"));
    assert_eq!(crossing(&events[3]), ("5", "up"));
    assert_eq!(available(&events[3]), "20");

    // A new watch starts from the balance as it is now.
    let mut again = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    let snapshot = next(&mut again, 1).await.remove(0);
    assert_eq!(
        kinds(std::slice::from_ref(&snapshot)),
        [(13, "balance.snapshot")]
    );
    assert_eq!(available(&snapshot), "20");
    app.stop().await;
}

#[tokio::test]
async fn holds_grants_and_schedules_tell_what_fell_due() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("due", "").await;
    let now = app.clock.now_micros();
    let mut request = grant_request(&wallet.id, "30", "0.01");
    request.grant.as_mut().unwrap().expire_time = Some(ts(now + 3600 * SECOND));
    let expiring = app
        .grants(&app.admin)
        .create_grant(request)
        .await
        .unwrap()
        .into_inner();
    let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    assert_eq!(next(&mut stream, 1).await[0].sequence, 2);

    // A hold: reserved goes up, available down.
    let hold = reserve_units(&app, &account.id, "5", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let events = next(&mut stream, 1).await;
    assert_eq!(kinds(&events), [(3, "balance.changed")]);
    assert_eq!(data(&events[0], "kind"), "RESERVE");
    assert_eq!(data(&events[0], "reference_id"), hold.id);
    let balance = events[0].balance.as_ref().unwrap();
    assert_eq!(
        (balance.reserved.as_str(), balance.available.as_str()),
        ("5", "25")
    );

    // Its TTL passes: the sweeper expires it.
    app.advance(Duration::from_secs(120)).await;
    let events = next(&mut stream, 2).await;
    assert_eq!(
        kinds(&events),
        [(4, "balance.changed"), (5, "hold.expired")]
    );
    assert_eq!(data(&events[1], "reservation_id"), hold.id);
    assert_eq!(data(&events[1], "units"), "5");
    assert_eq!(available(&events[1]), "30");

    // The grant's expiry.
    app.advance(Duration::from_secs(3600)).await;
    let events = next(&mut stream, 3).await;
    assert_eq!(
        kinds(&events),
        [
            (6, "balance.changed"),
            (7, "grant.expired"),
            (8, "balance.depleted")
        ]
    );
    assert_eq!(data(&events[1], "grant_id"), expiring.id);
    assert_eq!(data(&events[1], "units"), "30");

    // A daily schedule: its first period now.
    let schedule = app
        .grants(&app.admin)
        .create_allotment_schedule(schedule_request(
            &wallet.id,
            "7",
            proto::SchedulePeriod::Daily,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let events = next(&mut stream, 3).await;
    assert_eq!(
        kinds(&events),
        [
            (9, "balance.changed"),
            (10, "grant.activated"),
            (11, "schedule.period_granted")
        ]
    );
    assert_eq!(data(&events[2], "schedule_id"), schedule.id);
    assert_eq!(data(&events[2], "period_index"), "0");
    assert_eq!(data(&events[2], "units"), "7");
    assert_eq!(data(&events[1], "grant_id"), data(&events[2], "grant_id"));
    app.stop().await;
}

async fn set_notice_days(
    app: &TestApp,
    wallet_id: &str,
    days: u32,
) -> Result<proto::Wallet, Status> {
    app.accounts(&app.admin)
        .update_wallet(proto::UpdateWalletRequest {
            wallet: Some(proto::Wallet {
                id: wallet_id.into(),
                grant_expiry_notice_days: Some(days),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["grant_expiry_notice_days".into()],
            }),
            request_id: uuid(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn expiring_grant(app: &TestApp, wallet_id: &str, units: &str, days: i64) -> proto::Grant {
    let mut request = grant_request(wallet_id, units, "0.01");
    let expiry = app.clock.now_micros() + days * 86_400 * SECOND;
    request.grant.as_mut().unwrap().expire_time = Some(ts(expiry));
    app.grants(&app.admin)
        .create_grant(request)
        .await
        .unwrap()
        .into_inner()
}

/// `grant.expiring`: once per grant, the wallet's notice window (7 days unless set) before
/// the grant expires; a window set wider reaches grants at once; 0 turns it off.
#[tokio::test]
async fn a_grant_about_to_expire_is_announced_once() {
    let app = spawn_app().await;
    let (_, wallet) = app.funded("expiring", "").await;
    assert_eq!(wallet.grant_expiry_notice_days, Some(7), "the default");
    let grant = expiring_grant(&app, &wallet.id, "30", 10).await;
    let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    assert_eq!(next(&mut stream, 1).await[0].sequence, 2);

    // 10 days to go: nothing yet. 3 days later the expiry is 7 days away.
    app.advance(Duration::from_secs(3 * 86_400 - 60)).await;
    quiet(&mut stream).await;
    app.advance(Duration::from_secs(60)).await;
    let events = next(&mut stream, 1).await;
    assert_eq!(kinds(&events), [(3, "grant.expiring")]);
    assert_eq!(data(&events[0], "grant_id"), grant.id);
    assert_eq!(data(&events[0], "units"), "30");
    assert_eq!(data(&events[0], "notice_days"), "7");
    let expire = grant.expire_time.unwrap();
    let expected = chrono::DateTime::from_timestamp(expire.seconds, expire.nanos as u32)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(data(&events[0], "expire_time"), expected);
    assert_eq!(available(&events[0]), "30");
    // Once: more sweeps before the expiry say nothing more.
    app.advance(Duration::from_secs(86_400)).await;
    quiet(&mut stream).await;

    // Widened to 60 days: a grant 40 days from expiry is announced by the update itself.
    let wallet = set_notice_days(&app, &wallet.id, 60).await.unwrap();
    assert_eq!(wallet.grant_expiry_notice_days, Some(60));
    let far = expiring_grant(&app, &wallet.id, "5", 100).await;
    let events = next(&mut stream, 2).await;
    assert_eq!(
        kinds(&events),
        [(4, "balance.changed"), (5, "grant.activated")]
    );
    assert!(!data(&events[1], "expire_time").is_empty());
    quiet(&mut stream).await;
    app.advance(Duration::from_secs(40 * 86_400)).await;
    // The first grant expired on the way, then `far` came within 60 days of its expiry.
    let events = next(&mut stream, 3).await;
    assert_eq!(
        kinds(&events),
        [
            (6, "balance.changed"),
            (7, "grant.expired"),
            (8, "grant.expiring")
        ]
    );
    assert_eq!(data(&events[2], "grant_id"), far.id);
    assert_eq!(data(&events[2], "notice_days"), "60");

    // 0: never. Out of range: refused, nothing changed.
    set_notice_days(&app, &wallet.id, 0).await.unwrap();
    let err = set_notice_days(&app, &wallet.id, 3651).await.unwrap_err();
    assert_invalid(&err, "INVALID_FIELD", "wallet.grant_expiry_notice_days");
    let read = app
        .accounts(&app.admin)
        .get_wallet(proto::GetWalletRequest {
            id: wallet.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.grant_expiry_notice_days, Some(0));
    expiring_grant(&app, &wallet.id, "1", 20).await;
    let events = next(&mut stream, 2).await;
    assert_eq!(
        kinds(&events),
        [(9, "balance.changed"), (10, "grant.activated")]
    );
    app.advance(Duration::from_secs(19 * 86_400)).await;
    quiet(&mut stream).await;
    app.stop().await;
}

/// What counts against a cap (spend and holds) coming up to it is `spend_cap.reached`; the
/// refusals after it write nothing, and the next day starts afresh.
#[tokio::test]
async fn reaching_a_spend_cap_is_an_event() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("capped", "100").await;
    app.accounts(&app.admin)
        .update_wallet(proto::UpdateWalletRequest {
            wallet: Some(proto::Wallet {
                id: wallet.id.clone(),
                daily_spend_cap: "3".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["daily_spend_cap".into()],
            }),
            request_id: uuid(),
        })
        .await
        .expect("cap");
    let mut stream = watch(&app, &app.admin, &wallet.id, None)
        .await
        .expect("watch");
    next(&mut stream, 1).await;
    debit(&app, &account.id, "one").await.expect("1 of 3");
    // A hold counts against the cap too.
    reserve_units(&app, &account.id, "1", None)
        .await
        .expect("hold");
    debit(&app, &account.id, "one").await.expect("3 of 3");
    let events = next(&mut stream, 4).await;
    assert_eq!(
        kinds(&events)[1..]
            .iter()
            .map(|(_, k)| *k)
            .collect::<Vec<_>>(),
        ["balance.changed", "balance.changed", "spend_cap.reached"],
        "{events:#?}"
    );
    let reached = &events[3];
    assert_eq!(reached.data["period"], "daily");
    assert_eq!(reached.data["cap"], "3");
    assert_eq!(reached.data["used"], "3");
    let refused = debit(&app, &account.id, "one").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    quiet(&mut stream).await;
    // A new day: the cap is reached again only when the new day's spend comes up to it.
    app.advance(Duration::from_secs(86_400)).await;
    app.sweep().await;
    let expired = next(&mut stream, 2).await;
    assert_eq!(expired[1].r#type, "hold.expired", "{expired:#?}");
    debit(&app, &account.id, "one").await.expect("a new day");
    let events = next(&mut stream, 1).await;
    assert_eq!(events[0].r#type, "balance.changed");
    quiet(&mut stream).await;
}

#[tokio::test]
async fn a_watch_resumes_after_a_number_without_gaps_or_repeats() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("resume", "1000").await;
    let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    assert_eq!(next(&mut stream, 1).await[0].sequence, 2);
    for _ in 0..5 {
        debit(&app, &account.id, "one").await.unwrap();
    }
    let seen = next(&mut stream, 3).await;
    assert_eq!(seen.last().unwrap().sequence, 5);
    drop(stream);

    // Gone for a while: more debits meanwhile.
    for _ in 0..5 {
        debit(&app, &account.id, "one").await.unwrap();
    }
    let mut resumed = watch(&app, &app.admin, &wallet.id, Some(5)).await.unwrap();
    let events = next(&mut resumed, 7).await;
    let numbers: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(numbers, (6..=12).collect::<Vec<_>>(), "no snapshot, no gap");
    assert_eq!(available(events.last().unwrap()), "990");
    quiet(&mut resumed).await;
    debit(&app, &account.id, "one").await.unwrap();
    assert_eq!(next(&mut resumed, 1).await[0].sequence, 13);

    // From the very beginning, and from the latest.
    let mut all = watch(&app, &app.admin, &wallet.id, Some(0)).await.unwrap();
    let events = next(&mut all, 13).await;
    assert_eq!(events[0].r#type, "balance.changed");
    assert_eq!(data(&events[0], "kind"), "GRANT");
    let mut latest = watch(&app, &app.admin, &wallet.id, Some(13)).await.unwrap();
    quiet(&mut latest).await;

    // A number the wallet never had, or a negative one.
    for after in [14, -1] {
        let err = watch(&app, &app.admin, &wallet.id, Some(after))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{after}: {err:?}");
        let info = err.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "EVENTS_UNAVAILABLE");
        assert_eq!(info.metadata["latest_sequence"], "13");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_watch_names_one_wallet_in_the_callers_scope() {
    let app = spawn_app().await;
    let (mine, wallet) = app.funded("mine", "10").await;
    let (_, theirs) = app.funded("theirs", "10").await;
    let token = token(&["service"], &[&mine.id]);

    // By account and unit, as GetBalance names it.
    let mut stream = app
        .ledger(&token)
        .watch_balance(proto::WatchBalanceRequest {
            account_id: mine.id.clone(),
            unit: "credits".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = next(&mut stream, 1).await.remove(0);
    assert_eq!(snapshot.wallet_id, wallet.id);

    let err = watch(&app, &token, &theirs.id, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = app
        .ledger(&token)
        .watch_balance(proto::WatchBalanceRequest {
            wallet_id: wallet.id.clone(),
            account_id: mine.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = watch(&app, &token, "wal_nope", None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = watch(&app, &app.admin, "wal_nope", None).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    app.stop().await;
}

async fn watch_account(
    app: &TestApp,
    token: &str,
    account_id: &str,
    resume: &[(&str, i64)],
) -> Result<Streaming<proto::BalanceEvent>, Status> {
    app.ledger(token)
        .watch_balance(proto::WatchBalanceRequest {
            account_id: account_id.into(),
            all_wallets: true,
            after_sequences: resume.iter().map(|(w, n)| (w.to_string(), *n)).collect(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// `all_wallets`: every wallet of an account in one stream — a snapshot of each, then each
/// one's events in order; a wallet created meanwhile from its first event; resumed per
/// wallet, where a wallet not named starts with its snapshot.
#[tokio::test]
async fn a_watch_of_an_account_follows_each_of_its_wallets() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, credits) = app.funded("all", "10").await;
    let messages = app.create_wallet(&account.id, "messages", "").await;
    app.grant(&messages.id, "3").await;
    let (_, elsewhere) = app.funded("elsewhere", "10").await;

    let mut stream = watch_account(&app, &app.admin, &account.id, &[])
        .await
        .unwrap();
    let snapshots = next(&mut stream, 2).await;
    let mut seen: Vec<(&str, i64, &str, &str)> = snapshots
        .iter()
        .map(|e| {
            let unit = e.balance.as_ref().unwrap().unit.as_str();
            (e.wallet_id.as_str(), e.sequence, e.r#type.as_str(), unit)
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (credits.id.as_str(), 2, "balance.snapshot", "credits"),
        (messages.id.as_str(), 2, "balance.snapshot", "messages"),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(
        available(&snapshots[0]),
        if snapshots[0].wallet_id == credits.id {
            "10"
        } else {
            "3"
        }
    );

    // A change of one wallet; another account's changes do not come.
    debit(&app, &account.id, "image").await.unwrap();
    app.grant(&elsewhere.id, "1").await;
    let events = next(&mut stream, 1).await;
    assert_eq!(kinds(&events), [(3, "balance.changed")]);
    assert_eq!(events[0].wallet_id, credits.id);
    assert_eq!(available(&events[0]), "6");

    // A wallet created now is followed from its first event (found within a poll).
    let tokens = app.create_wallet(&account.id, "tokens", "").await;
    app.grant(&tokens.id, "5").await;
    let events = next(&mut stream, 2).await;
    assert_eq!(
        kinds(&events),
        [(1, "balance.changed"), (2, "grant.activated")]
    );
    assert!(events.iter().all(|e| e.wallet_id == tokens.id));
    assert_eq!(events[0].balance.as_ref().unwrap().unit, "tokens");
    quiet(&mut stream).await;
    drop(stream);

    // Resumed: credits after its snapshot (its debit comes again), messages where it was;
    // tokens is not named, so it starts with its snapshot.
    let mut stream = watch_account(
        &app,
        &app.admin,
        &account.id,
        &[(credits.id.as_str(), 2), (messages.id.as_str(), 2)],
    )
    .await
    .unwrap();
    let events = next(&mut stream, 2).await;
    assert_eq!(
        (
            events[0].wallet_id.as_str(),
            events[0].sequence,
            events[0].r#type.as_str()
        ),
        (tokens.id.as_str(), 2, "balance.snapshot")
    );
    assert_eq!(
        (
            events[1].wallet_id.as_str(),
            events[1].sequence,
            events[1].r#type.as_str()
        ),
        (credits.id.as_str(), 3, "balance.changed")
    );
    quiet(&mut stream).await;

    // What the request may not combine, and what the caller may not see.
    let refused = |request: proto::WatchBalanceRequest| {
        let ledger = app.ledger(&app.admin);
        async move {
            ledger
                .clone()
                .watch_balance(request)
                .await
                .map(|_| ())
                .unwrap_err()
        }
    };
    let with_unit = refused(proto::WatchBalanceRequest {
        account_id: account.id.clone(),
        unit: "credits".into(),
        all_wallets: true,
        ..Default::default()
    })
    .await;
    assert_invalid(&with_unit, "INVALID_FIELD", "all_wallets");
    let foreign = refused(proto::WatchBalanceRequest {
        account_id: account.id.clone(),
        all_wallets: true,
        after_sequences: [(elsewhere.id.clone(), 1)].into(),
        ..Default::default()
    })
    .await;
    assert_invalid(&foreign, "INVALID_FIELD", "after_sequences");
    let without = refused(proto::WatchBalanceRequest {
        wallet_id: credits.id.clone(),
        after_sequences: [(credits.id.clone(), 1)].into(),
        ..Default::default()
    })
    .await;
    assert_invalid(&without, "INVALID_FIELD", "after_sequences");
    let gone = watch_account(&app, &app.admin, &account.id, &[(credits.id.as_str(), 99)])
        .await
        .unwrap_err();
    assert_error(&gone, Code::OutOfRange, "EVENTS_UNAVAILABLE");
    let other = token(&["service"], &[&elsewhere.account_id]);
    let err = watch_account(&app, &other, &account.id, &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    app.stop().await;
}

/// Events committed by one replica reach a watcher on another (it polls the outbox).
#[tokio::test]
async fn a_watch_on_one_replica_sees_what_another_commits() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("replicated", "100").await;
    let mut stream = watch(&replica, &replica.admin, &wallet.id, None)
        .await
        .unwrap();
    assert_eq!(next(&mut stream, 1).await[0].sequence, 2);
    let mut expected = 2;
    for round in 0..4 {
        // Debits through both, concurrently.
        let (a, b) = tokio::join!(
            debit(&app, &account.id, "one"),
            debit(&replica, &account.id, "one")
        );
        a.unwrap();
        b.unwrap();
        let events = next(&mut stream, 2).await;
        for event in &events {
            expected += 1;
            assert_eq!(event.sequence, expected, "round {round}: {events:?}");
        }
    }
    assert_eq!(available(&next_balance(&app, &wallet.id).await), "92");
    quiet(&mut stream).await;
    replica.stop().await;
    app.stop().await;
}

async fn next_balance(app: &TestApp, wallet_id: &str) -> proto::BalanceEvent {
    let mut stream = watch(app, &app.admin, wallet_id, None).await.unwrap();
    next(&mut stream, 1).await.remove(0)
}

/// A reader that does not read is not buffered without bound: its watch ends with
/// WATCH_LAGGED naming where to resume, and resuming there misses nothing.
#[tokio::test]
async fn a_reader_that_falls_behind_is_told_where_to_resume() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("laggard", "100000").await;
    let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    assert_eq!(next(&mut stream, 1).await[0].sequence, 2);

    // 10,000 debits while the reader reads nothing (beyond what HTTP/2 flow control and
    // the server's send buffer hold, about 3,000 events, and the watch's own 1,024).
    for _ in 0..10 {
        let debits = (0..1000)
            .map(|_| debit_request(&account.id, "one", &uuid()))
            .collect();
        let response = app
            .ledger(&app.admin)
            .batch_debit(proto::BatchDebitRequest { debits })
            .await
            .unwrap()
            .into_inner();
        assert!(
            response
                .results
                .iter()
                .all(|r| matches!(r.result, Some(proto::debit_result::Result::Response(_))))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut last = 2;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("the watch stalled after {last}"))
        {
            Ok(Some(event)) => {
                assert_eq!(event.sequence, last + 1);
                last = event.sequence;
            }
            Ok(None) => panic!("the watch ended without a status after {last}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "WATCH_LAGGED");
    assert_eq!(info.metadata["after_sequence"], last.to_string());
    assert!(
        last < 10002,
        "the buffer is bounded: {last} events were sent"
    );

    let mut resumed = watch(&app, &app.admin, &wallet.id, Some(last))
        .await
        .unwrap();
    let rest = next(&mut resumed, (10002 - last) as usize).await;
    assert_eq!(rest.first().unwrap().sequence, last + 1);
    assert_eq!(rest.last().unwrap().sequence, 10002);
    assert_eq!(available(rest.last().unwrap()), "90000");
    app.stop().await;
}

/// Shutdown ends every watch with UNAVAILABLE and the number to resume after.
#[tokio::test]
async fn shutdown_ends_a_watch_with_where_to_resume() {
    let mut app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("shutdown", "10").await;
    let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
    next(&mut stream, 1).await;
    debit(&app, &account.id, "one").await.unwrap();
    assert_eq!(next(&mut stream, 1).await[0].sequence, 3);
    app.begin_shutdown();
    let status = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch ends")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(info.metadata["after_sequence"], "3");
    app.stop().await;
}

/// Every event of the ledger, read back per wallet: numbered 1, 2, 3 … and as many
/// `balance.changed` as entries.
#[tokio::test]
async fn every_entry_has_its_event_and_numbers_have_no_gaps() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let mut wallets = Vec::new();
    for i in 0..3 {
        wallets.push(app.funded(&format!("count-{i}"), "50").await);
    }
    // Concurrent debits, holds and refunds on the three wallets.
    let mut calls = Vec::new();
    for i in 0..60 {
        let (account, _) = &wallets[i % 3];
        let account_id = account.id.clone();
        let app = &app;
        calls.push(async move {
            match i % 4 {
                0 | 1 => {
                    let _ = debit(app, &account_id, "one").await;
                }
                2 => {
                    if let Ok(t) = debit(app, &account_id, "image").await {
                        let _ = refund(app, &t.id, "2", &uuid()).await;
                    }
                }
                _ => {
                    if let Ok(hold) = reserve_units(app, &account_id, "3", None).await {
                        let _ = release(app, &hold.id, &uuid()).await;
                    }
                }
            }
        });
    }
    futures::future::join_all(calls).await;
    for (account, wallet) in &wallets {
        let mut stream = watch(&app, &app.admin, &wallet.id, Some(0)).await.unwrap();
        let latest = next_balance(&app, &wallet.id).await.sequence;
        let events = next(&mut stream, latest as usize).await;
        let numbers: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(numbers, (1..=latest).collect::<Vec<_>>());
        let changed: BTreeMap<&str, &proto::BalanceEvent> = events
            .iter()
            .filter(|e| e.r#type == "balance.changed")
            .map(|e| (data(e, "transaction_id"), e))
            .collect();
        let entries = app.all_transactions(&account.id).await;
        assert_eq!(
            changed.len(),
            entries.len(),
            "one balance.changed per entry"
        );
        for entry in &entries {
            let event = changed.get(entry.id.as_str()).expect("its event");
            assert_eq!(event.balance.as_ref().unwrap().posted, entry.balance_after);
        }
    }
    app.stop().await;
}

/// Events older than `--event-retention` (30 days) are pruned; a resume from before what
/// is kept is refused with the oldest number kept, and a new watch starts from a snapshot.
#[tokio::test]
async fn events_past_their_retention_are_pruned_and_a_resume_before_them_is_refused() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("pruned", "100").await;
    debit(&app, &account.id, "one").await.unwrap();
    app.advance(Duration::from_secs(20 * 86_400)).await;
    debit(&app, &account.id, "one").await.unwrap();
    // Events 1–3 are now 31 days old, event 4 eleven days.
    app.advance(Duration::from_secs(11 * 86_400)).await;
    debit(&app, &account.id, "one").await.unwrap();
    for after in [0, 2] {
        let err = watch(&app, &app.admin, &wallet.id, Some(after))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{after}: {err:?}");
        let info = err.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "EVENTS_UNAVAILABLE");
        assert_eq!(info.metadata["oldest_sequence"], "4");
    }
    let mut stream = watch(&app, &app.admin, &wallet.id, Some(3)).await.unwrap();
    let events = next(&mut stream, 2).await;
    assert_eq!(
        kinds(&events),
        [(4, "balance.changed"), (5, "balance.changed")]
    );
    assert_eq!(available(&events[1]), "97");
    assert_eq!(next_balance(&app, &wallet.id).await.sequence, 5);
    app.stop().await;
}

/// A change of an account's state is an event of each of its wallets; a rate card's
/// publication is an event of no wallet, numbered by its version.
#[tokio::test]
async fn account_states_and_rate_cards_are_events_too() {
    let app = spawn_app().await;
    let (account, credits) = app.funded("stateful", "10").await;
    let tokens = app.create_wallet(&account.id, "tokens", "5").await;
    let mut watches = Vec::new();
    for wallet in [&credits, &tokens] {
        let mut stream = watch(&app, &app.admin, &wallet.id, None).await.unwrap();
        next(&mut stream, 1).await;
        watches.push(stream);
    }
    app.accounts(&app.admin)
        .update_account(state_request(&account.id, proto::AccountState::Suspended))
        .await
        .unwrap();
    let credit_events = next(&mut watches[0], 1).await;
    assert_eq!(kinds(&credit_events), [(3, "account.state_changed")]);
    assert_eq!(data(&credit_events[0], "previous_state"), "ACTIVE");
    assert_eq!(data(&credit_events[0], "state"), "SUSPENDED");
    assert_eq!(available(&credit_events[0]), "10");
    let token_events = next(&mut watches[1], 1).await;
    assert_eq!(kinds(&token_events), [(1, "account.state_changed")]);
    assert_eq!(available(&token_events[0]), "5", "its overdraft");

    // The same state again, or another field, is no change.
    app.accounts(&app.admin)
        .update_account(state_request(&account.id, proto::AccountState::Suspended))
        .await
        .unwrap();
    quiet(&mut watches[0]).await;

    // A rate card: stored with no wallet, numbered by its version.
    let card = app.publish_standard_card().await;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let stored = allot::store::entity::event::Entity::find()
        .filter(allot::store::entity::event::Column::WalletId.eq(""))
        .all(app.handles.store.connection())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].sequence, card.version);
    assert_eq!(stored[0].data.0["version"], card.version.to_string());
    assert_eq!(
        sea_orm::ActiveEnum::to_value(&stored[0].event_type),
        "rate_card.published"
    );
    app.stop().await;
}

/// `allot watch` through the real binary: the balance, then a line per change as it
/// commits; `--after N --json` resumes as JSON lines; a number beyond the latest fails the
/// command with the server's reason.
#[tokio::test]
async fn the_cli_watches_a_wallet() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, _) = app.funded("cli-watch", "10").await;
    let command = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"));
        command
            .args(args)
            .args(["--server", &format!("http://{}", app.addr)])
            .args(["--token", &app.admin])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let mut child = command(&["watch", "--external-id", "cli-watch"])
        .spawn()
        .expect("run allot watch");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let snapshot = next_line(&mut lines).await;
    assert!(snapshot.contains("balance.snapshot"), "{snapshot}");
    assert!(snapshot.contains("available 10"), "{snapshot}");
    let debited = debit(&app, &account.id, "image").await.unwrap();
    let changed = next_line(&mut lines).await;
    assert!(
        changed.trim_start().starts_with("3  balance.changed"),
        "{changed}"
    );
    assert!(changed.contains("available 6"), "{changed}");
    assert!(
        changed.contains(&format!("transaction_id={}", debited.id)),
        "{changed}"
    );
    child.kill().await.unwrap();

    // Resumed as JSON lines.
    let mut child = command(&[
        "watch",
        "--external-id",
        "cli-watch",
        "--after",
        "2",
        "--json",
    ])
    .spawn()
    .expect("run allot watch");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_line(&mut lines).await;
    let json: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    // int64 as proto3 JSON writes it (a string) or as a number.
    assert_eq!(
        json["sequence"].to_string().trim_matches('"'),
        "3",
        "{json}"
    );
    assert_eq!(json["type"], "balance.changed");
    assert_eq!(json["balance"]["available"], "6");
    child.kill().await.unwrap();

    let output = command(&["watch", "--external-id", "cli-watch", "--after", "99"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("EVENTS_UNAVAILABLE"), "{stderr}");

    // Every wallet of the account, each line naming its wallet and unit; one resumed.
    let wallet = app
        .accounts(&app.admin)
        .list_wallets(proto::ListWalletsRequest {
            account_id: account.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .wallets
        .remove(0);
    let messages = app.create_wallet(&account.id, "messages", "").await;
    let resume = format!("{}=2", wallet.id);
    let mut child = command(&[
        "watch",
        "--external-id",
        "cli-watch",
        "--all-wallets",
        "--resume",
        &resume,
    ])
    .spawn()
    .expect("run allot watch");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_line(&mut lines).await;
    assert!(
        first.starts_with(&format!("{} messages", messages.id)),
        "{first}"
    );
    assert!(first.contains("balance.snapshot"), "{first}");
    let second = next_line(&mut lines).await;
    assert!(
        second.starts_with(&format!("{} credits", wallet.id)),
        "{second}"
    );
    assert!(second.contains("3  balance.changed"), "{second}");
    child.kill().await.unwrap();
    app.stop().await;
}

async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .expect("stdout")
        .expect("a line")
}
