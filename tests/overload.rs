//! Under pressure the ledger says no rather than doing work nobody waits for: an operation
//! whose caller is gone before its batch begins — its `grpc-timeout` passed while it queued
//! — is not applied, and a retry with its request_id applies it once.
//!
//! Admission control, through a real `allot serve`: while the ledger cannot drain its queue
//! in time (here: its write path is held) new operations are refused at once with
//! RESOURCE_EXHAUSTED / OVERLOADED and a retry delay, nothing of them is written, and the
//! same request_ids succeed once the pressure is gone; beyond `--max-in-flight` every call
//! but a health check is refused at once.

mod common;

use std::time::{Duration, Instant};

use common::{process::ServerProcess, *};
use sea_orm::sqlx::{self, Connection};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Holds the ledger's write path until dropped (or `release`d): on SQLite the database's
/// write lock, on PostgreSQL the wallet's row lock — what a batch takes first.
enum Blocker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Blocker {
    async fn hold(db: &TestDatabase, wallet_id: &str) -> Blocker {
        if db.is_postgres() {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("SELECT id FROM wallets WHERE id = $1 FOR UPDATE")
                .bind(wallet_id)
                .execute(&mut conn)
                .await
                .unwrap();
            Blocker::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Blocker::Sqlite(conn)
        }
    }

    async fn release(self) {
        match self {
            Blocker::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Blocker::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn an_operation_whose_deadline_passed_in_the_queue_is_not_applied() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("deadline", "100").await;
    app.publish_standard_card().await;
    let blocker = Blocker::hold(&app.db, &wallet.id).await;

    // A debit without a deadline takes the ledger and waits on the lock...
    let first_id = uuid();
    let first = {
        let mut ledger = app.ledger(&app.admin);
        let request = debit_request(&account.id, "one", &first_id);
        tokio::spawn(async move { ledger.debit(request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and one with 200 ms to live queues behind it and runs out of time.
    let late_id = uuid();
    let mut late = tonic::Request::new(debit_request(&account.id, "one", &late_id));
    late.set_timeout(Duration::from_millis(200));
    let status = app
        .ledger(&app.admin)
        .debit(late)
        .await
        .expect_err("the deadline passed while the ledger was held");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // The server dropped it by now (its deadline is the same as the client's).
    tokio::time::sleep(Duration::from_millis(100)).await;
    blocker.release().await;
    first
        .await
        .unwrap()
        .expect("the first debit went through once the ledger was free");

    let ids = |txns: Vec<allot::proto::Transaction>| -> Vec<String> {
        txns.into_iter()
            .filter(|t| kind(t) == allot::proto::TransactionKind::Debit)
            .map(|t| t.request_id)
            .collect()
    };
    let debits = ids(app.all_transactions(&account.id).await);
    assert_eq!(debits, vec![first_id.clone()], "the late debit was applied");
    assert_eq!(app.balance(&account.id).await.posted, "99");

    // Its retry (same request_id) is applied, once.
    for _ in 0..2 {
        app.ledger(&app.admin)
            .debit(debit_request(&account.id, "one", &late_id))
            .await
            .expect("the retry");
    }
    let debits = ids(app.all_transactions(&account.id).await);
    assert_eq!(debits.len(), 2, "{debits:?}");
    assert!(debits.contains(&late_id));
    assert_eq!(app.balance(&account.id).await.posted, "98");
    app.stop().await;
}

/// Asserts an OVERLOADED refusal with its retry delay (RetryInfo and `retry_after_ms`).
fn assert_overloaded(status: &Status) {
    let metadata = assert_error(status, Code::ResourceExhausted, "OVERLOADED");
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo delay");
    assert!(
        delay >= Duration::from_millis(10) && delay <= Duration::from_secs(5),
        "{delay:?}"
    );
    assert_eq!(
        metadata.get("retry_after_ms").map(String::as_str),
        Some(delay.as_millis().to_string().as_str()),
        "{metadata:?}"
    );
}

/// Debit request ids of an account's ledger.
async fn debit_ids(app: &TestApp, account_id: &str) -> Vec<String> {
    app.all_transactions(account_id)
        .await
        .into_iter()
        .filter(|t| kind(t) == allot::proto::TransactionKind::Debit)
        .map(|t| t.request_id)
        .collect()
}

#[tokio::test]
async fn a_ledger_that_cannot_drain_refuses_at_once_and_recovers() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("stalled", "1000").await;
    app.publish_standard_card().await;
    let logs = tempfile::tempdir().expect("log dir");
    let server = ServerProcess::start(
        "admission",
        &app.db.url,
        &["--max-queue-wait", "100ms"],
        logs.path(),
    )
    .await;
    let blocker = Blocker::hold(&app.db, &wallet.id).await;

    // One debit takes the ledger and waits on the lock; after the queue-wait bound, the
    // ledger is known to be stalled.
    let first_id = uuid();
    let first = {
        let mut ledger = server.ledger();
        let request = debit_request(&account.id, "one", &first_id);
        tokio::spawn(async move { ledger.debit(request).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;

    // 30 more at once: the first to arrive (or the first few, if they race it to the queue)
    // queue behind it, the rest are refused at once.
    let ids: Vec<String> = (0..30).map(|_| uuid()).collect();
    let started = Instant::now();
    let calls = ids.iter().map(|id| {
        let mut ledger = server.ledger();
        let request = debit_request(&account.id, "one", id);
        async move {
            let result = ledger.debit(request).await;
            (result, Instant::now())
        }
    });
    let pending: Vec<_> = calls.map(tokio::spawn).collect();
    // The refusals come back while the ledger is still held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut refused = Vec::new();
    let mut waiting = Vec::new();
    for (id, call) in ids.iter().zip(pending) {
        if call.is_finished() {
            let (result, at) = call.await.unwrap();
            let status = result.expect_err("nothing is applied while the ledger is held");
            assert_overloaded(&status);
            assert!(
                at - started < Duration::from_millis(1000),
                "{:?}",
                at - started
            );
            refused.push(id.clone());
        } else {
            waiting.push((id.clone(), call));
        }
    }
    assert!(
        waiting.len() <= 5 && refused.len() >= 25,
        "{} queued, {} refused",
        waiting.len(),
        refused.len()
    );

    blocker.release().await;
    first
        .await
        .unwrap()
        .expect("the first debit, once the ledger is free");
    let mut admitted = vec![first_id];
    for (id, call) in waiting {
        let (result, _) = call.await.unwrap();
        result.expect("a queued debit, once the ledger is free");
        admitted.push(id);
    }
    // Nothing refused was written.
    let mut applied = debit_ids(&app, &account.id).await;
    applied.sort();
    admitted.sort();
    assert_eq!(applied, admitted);

    // Back to normal: each refused request_id is applied once when sent again, and twice
    // sent is still once.
    for id in refused.iter().chain(refused.iter()) {
        server
            .ledger()
            .debit(debit_request(&account.id, "one", id))
            .await
            .expect("a retry after the pressure is gone");
    }
    assert_eq!(debit_ids(&app, &account.id).await.len(), 31);
    assert_eq!(app.balance(&account.id).await.posted, "969");
    drop(server);
    app.stop().await;
}

#[tokio::test]
async fn calls_beyond_the_in_flight_cap_are_refused_but_health_answers() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("capped", "1000").await;
    app.publish_standard_card().await;
    let logs = tempfile::tempdir().expect("log dir");
    let server = ServerProcess::start(
        "in-flight",
        &app.db.url,
        // Only the in-flight cap refuses here.
        &["--max-in-flight", "3", "--max-queue-wait", "1h"],
        logs.path(),
    )
    .await;
    let blocker = Blocker::hold(&app.db, &wallet.id).await;

    // Three debits fill the cap: they wait on the held ledger.
    let ids: Vec<String> = (0..3).map(|_| uuid()).collect();
    let held: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut ledger = server.ledger();
            let request = debit_request(&account.id, "one", id);
            tokio::spawn(async move { ledger.debit(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A fourth debit and a read are refused at once; nothing is written for the debit.
    let refused_id = uuid();
    let started = Instant::now();
    let status = server
        .ledger()
        .debit(debit_request(&account.id, "one", &refused_id))
        .await
        .expect_err("over the cap");
    assert_overloaded(&status);
    let status = server
        .ledger()
        .get_balance(allot::proto::GetBalanceRequest {
            account_id: account.id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("reads count too");
    assert_overloaded(&status);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Health checks are not counted: probes keep answering.
    let answer = tonic_health::pb::health_client::HealthClient::new(server.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers over the cap")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    blocker.release().await;
    for call in held {
        call.await.unwrap().expect("a debit within the cap");
    }
    // The slots are free again: the refused request_id is applied, once.
    server
        .ledger()
        .debit(debit_request(&account.id, "one", &refused_id))
        .await
        .expect("after the cap frees up");
    let mut applied = debit_ids(&app, &account.id).await;
    applied.sort();
    let mut expected = ids.clone();
    expected.push(refused_id);
    expected.sort();
    assert_eq!(applied, expected);
    drop(server);
    app.stop().await;
}
