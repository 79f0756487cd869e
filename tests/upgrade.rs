//! Upgrading a database an earlier allot wrote. `fixtures/schema6_history.sql` holds the rows
//! the binary at commit 6b41b3e wrote for the README's CLI steps plus labels and metadata,
//! when JSON columns were text (schema 6). Migration 7 makes them `jsonb` on PostgreSQL and the
//! service reads them as typed values: the history must still verify (every entry's hash
//! still matches its content), read as it did, and take new entries after the old ones.

mod common;

use allot::{proto, store::verify};
use common::*;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database};

const HISTORY: &str = include_str!("fixtures/schema6_history.sql");

/// A database at schema 6 holding the fixture's rows.
async fn schema6_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    let conn = Database::connect(&db.url).await.expect("connect");
    Migrator::up(&conn, Some(6))
        .await
        .expect("migrate to schema 6");
    for statement in HISTORY
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with("--"))
    {
        conn.execute_unprepared(statement)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
    if db.is_postgres() {
        // The rows came with their keys: move the sequences past them, as inserting them
        // through the service would have.
        for (table, column) in [("transactions", "seq"), ("rate_cards", "version")] {
            conn.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 (SELECT max({column}) FROM {table}))"
            ))
            .await
            .expect("set sequence");
        }
    }
    conn.close().await.expect("close");
    db
}

async fn verified(app: &TestApp) -> verify::Report {
    let report = verify::verify_snapshot(app.handles.store.connection())
        .await
        .expect("verify runs");
    assert!(report.is_ok(), "{report:#?}");
    report
}

#[tokio::test]
async fn a_history_written_before_typed_json_upgrades_verifies_and_reads_as_before() {
    let app = spawn_app_on(schema6_database().await).await;
    let before = verified(&app).await;
    assert!(before.entries >= 9, "{before:#?}");

    let admin = app.admin.clone();
    let account = app
        .all_accounts(&admin)
        .await
        .into_iter()
        .find(|a| a.external_id == "acme")
        .expect("the account");
    assert_eq!(account.labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(
        account.labels.get("cost.center").map(String::as_str),
        Some("42")
    );

    let history = app.history(&account.id).await;
    let first = history
        .iter()
        .find(|t| t.request_id == "req-0001")
        .expect("the first debit");
    assert_eq!(
        first.quantities.get("output_tokens").map(String::as_str),
        Some("1500")
    );
    assert_eq!(
        first.quantities.get("input_tokens").map(String::as_str),
        Some("700")
    );
    assert_eq!(first.metadata.get("user").map(String::as_str), Some("u-17"));
    assert_eq!(first.burns.len(), 1);
    assert_eq!(first.burns[0].unit_price, "0.002");
    assert_eq!(first.burns[0].currency, "USD");
    assert_eq!(first.money.len(), 1, "{first:?}");

    let balance = app.balance(&account.id).await;
    let wallets = app
        .accounts(&admin)
        .list_wallets(proto::ListWalletsRequest {
            account_id: account.id.clone(),
            ..Default::default()
        })
        .await
        .expect("wallets")
        .into_inner()
        .wallets;
    assert_eq!(
        wallets[0].low_balance_thresholds,
        ["1000", "99999.5"],
        "{wallets:?}"
    );
    assert_eq!(
        balance.crossed_thresholds,
        ["99999.5"],
        "the balance is below 99,999.5 and above 1,000: {balance:?}"
    );

    let card = app
        .rates(&admin)
        .get_rate_card(proto::GetRateCardRequest::default())
        .await
        .expect("card in force")
        .into_inner();
    let chat = card
        .rates
        .iter()
        .find(|r| r.request_type == "chat.message")
        .expect("chat.message is priced");
    assert_eq!(chat.route, "openai/gpt-4o");
    assert_eq!(chat.dimensions.len(), 2);

    // New entries chain after the old ones, and the whole history still verifies.
    let debit = app
        .ledger(&admin)
        .debit(proto::DebitRequest {
            external_id: "acme".into(),
            request_type: "chat.message".into(),
            request_id: "after-upgrade".into(),
            metadata: [("user".to_string(), "u-18".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("a debit after the upgrade")
        .into_inner()
        .transaction
        .expect("its entry");
    // (A hold of the fixture may have expired in between: its entry comes first then.)
    let now = app.history(&account.id).await;
    let at = now
        .iter()
        .position(|t| t.id == debit.id)
        .expect("the new debit");
    assert!(at >= history.len(), "after every old entry");
    assert_eq!(
        debit.prev_hash,
        now[at - 1].hash,
        "chained after the entry before it"
    );
    let after = verified(&app).await;
    assert!(after.entries > before.entries);
    app.stop().await;
}
