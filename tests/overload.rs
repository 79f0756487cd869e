//! Under pressure the ledger says no rather than doing work nobody waits for: an operation
//! whose caller is gone before its batch begins — its `grpc-timeout` passed while it queued
//! — is not applied, and a retry with its request_id applies it once.

mod common;

use std::time::Duration;

use common::*;
use sea_orm::sqlx::{self, Connection};
use tonic::Code;

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
