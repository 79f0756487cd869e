//! `allot verify` (issue 3, "Tamper evidence"): a history built over gRPC verifies; hand edits
//! of an entry, a balance or a hold, and a removed entry, are reported naming what is wrong —
//! by the library pass and by the real `allot verify` binary (exit status 1).

mod common;

use std::time::Duration;

use allot::{
    proto,
    store::{
        entity::transaction,
        verify::{self, Report},
    },
};
use common::*;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

/// What `history` built.
struct History {
    /// The busy wallet: grants (one expired, one voided), debits, a partial refund, an
    /// adjustment, holds (one captured, one released, one still open).
    wallet: String,
    /// A wallet that went into overdraft, was repaid by a grant, and refunded overdrawn units.
    overdrawn: String,
    /// The hold left open.
    open_hold: String,
}

async fn create_grant(app: &TestApp, wallet_id: &str, amount: &str, expire_in: Option<Duration>) {
    let mut request = grant_request(wallet_id, amount, "0.02");
    let grant = request.grant.as_mut().expect("grant");
    grant.kind = proto::GrantKind::Purchase as i32;
    grant.expire_time = expire_in.map(|d| ts(app.clock.now_micros() + d.as_micros() as i64));
    app.grants(&app.admin)
        .create_grant(request)
        .await
        .expect("create grant");
}

async fn debit(app: &TestApp, account_id: &str, request_type: &str) -> proto::Transaction {
    let service = token(&["service"], &["*"]);
    app.ledger(&service)
        .debit(proto::DebitRequest {
            account_id: account_id.into(),
            request_type: request_type.into(),
            quantities: if request_type == "chat" {
                quantities(&[("output_tokens", "2500")])
            } else {
                Default::default()
            },
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .expect("transaction")
}

/// Builds a history that touches every kind of entry, on two wallets.
async fn history(app: &TestApp) -> History {
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("acme", "100").await;

    // A grant that expires a minute in (burnt first, units left), one that is voided., one that is voided.
    create_grant(app, &wallet.id, "20", Some(Duration::from_secs(60))).await;
    let voided = app.grant(&wallet.id, "30").await;
    void(app, &voided.id, "issued twice", &uuid())
        .await
        .expect("void grant");

    let chat = debit(app, &account.id, "chat").await;
    let image = debit(app, &account.id, "image").await;
    debit(app, &account.id, "one").await;
    refund(app, &image.id, "1.5", &uuid())
        .await
        .expect("refund");
    refund(app, &chat.id, "", &uuid()).await.expect("refund");
    for units in ["2.25", "-1"] {
        adjust(app, &wallet.id, units, "goodwill")
            .await
            .expect("adjust balance");
    }

    let captured = reserve_units(app, &account.id, "5", None)
        .await
        .expect("reserve");
    capture_units(app, &captured.id, "3.5", &uuid())
        .await
        .expect("capture");
    let released = reserve_units(app, &account.id, "2", None)
        .await
        .expect("reserve");
    release(app, &released.id, &uuid()).await.expect("release");
    let open = reserve_units(app, &account.id, "6", None)
        .await
        .expect("reserve");

    // Overdraft: 3 granted, 8 spent (debt 5), repaid by the next grant; then a refund of
    // overdrawn units goes back to the grant that repaid them.
    let other = app.create_account("beta", "").await;
    let overdrawn = app.create_wallet(&other.id, "credits", "10").await;
    app.grant(&overdrawn.id, "3").await;
    debit(app, &other.id, "image").await;
    let second = debit(app, &other.id, "image").await;
    app.grant(&overdrawn.id, "20").await;
    refund(app, &second.id, "4", &uuid()).await.expect("refund");
    debit(app, &other.id, "one").await;

    // The 20-unit grant expires (EXPIRE entry, written by the sweep).
    app.advance(Duration::from_secs(120)).await;
    History {
        wallet: wallet.id,
        overdrawn: overdrawn.id,
        open_hold: open.id,
    }
}

async fn entries(app: &TestApp, wallet_id: &str) -> Vec<transaction::Model> {
    transaction::Entity::find()
        .filter(transaction::Column::WalletId.eq(wallet_id))
        .order_by_asc(transaction::Column::Seq)
        .all(app.handles.store.connection())
        .await
        .expect("entries")
}

async fn run_verify(app: &TestApp) -> Report {
    verify::verify_snapshot(app.handles.store.connection())
        .await
        .expect("verify runs")
}

async fn sql(app: &TestApp, statement: &str) {
    let result = app
        .handles
        .store
        .connection()
        .execute_unprepared(statement)
        .await
        .unwrap_or_else(|err| panic!("{statement}: {err}"));
    assert_eq!(result.rows_affected(), 1, "{statement}");
}

/// Runs the real `allot verify` against the app's database: (success, stdout, stderr).
async fn verify_binary(url: &str) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .arg("verify")
        .env("DATABASE_URL", url)
        .output()
        .await
        .expect("run allot verify");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_ok(report: &Report) {
    assert!(
        report.is_ok(),
        "unexpected mismatches: {:#?}",
        report.mismatches
    );
}

/// Asserts the binary fails and its output names `needle`; returns stdout.
async fn assert_binary_reports(app: &TestApp, needle: &str) -> String {
    let (ok, stdout, stderr) = verify_binary(&app.db.url).await;
    assert!(
        !ok,
        "allot verify passed on tampered data:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains(needle),
        "`{needle}` not in the output:\n{stdout}"
    );
    assert!(stdout.contains("mismatch"), "no count in:\n{stdout}");
    assert!(stderr.contains("error:"), "stderr: {stderr}");
    stdout
}

#[tokio::test]
async fn untampered_history_verifies() {
    let app = spawn_app().await;
    let history = history(&app).await;
    let kinds: std::collections::BTreeSet<String> = entries(&app, &history.wallet)
        .await
        .into_iter()
        .chain(entries(&app, &history.overdrawn).await)
        .map(|e| e.kind.as_str().to_string())
        .collect();
    for kind in [
        "GRANT", "DEBIT", "RESERVE", "CAPTURE", "RELEASE", "REFUND", "EXPIRE", "VOID", "ADJUST",
    ] {
        assert!(
            kinds.contains(kind),
            "history has no {kind} entry: {kinds:?}"
        );
    }

    let report = run_verify(&app).await;
    assert_ok(&report);
    assert_eq!(report.wallets, 2);
    let total =
        entries(&app, &history.wallet).await.len() + entries(&app, &history.overdrawn).await.len();
    assert_eq!(report.entries, total as u64);
    assert_ok(
        &verify::verify_snapshot(app.handles.store.connection())
            .await
            .expect("verify in a snapshot"),
    );

    let (ok, stdout, stderr) = verify_binary(&app.db.url).await;
    assert!(ok, "allot verify failed:\n{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("verified 2 wallets, {total} entries: OK")),
        "stdout: {stdout}"
    );
    app.stop().await;
}

/// Concurrent debits, holds (captured, released, left to expire), refunds and adjustments on
/// a few wallets, with grants and holds expiring under a moving clock: the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_traffic_verifies() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.publish_standard_card().await;
    let mut accounts = Vec::new();
    for i in 0..3 {
        let account = app.create_account(&format!("busy-{i}"), "").await;
        let wallet = app.create_wallet(&account.id, "credits", "4").await;
        app.grant(&wallet.id, "40").await;
        create_grant(&app, &wallet.id, "15", Some(Duration::from_secs(90))).await;
        accounts.push((account.id, wallet.id));
    }
    let mut tasks = Vec::new();
    for n in 0..48usize {
        let app = app.clone();
        let (account, wallet) = accounts[(n / 6) % accounts.len()].clone();
        tasks.push(tokio::spawn(async move {
            let service = token(&["service"], &["*"]);
            let mut ledger = app.ledger(&service);
            let request_type = ["chat", "image", "one"][(n / 2) % 3];
            match n % 6 {
                0 | 1 => {
                    let debit = ledger
                        .debit(proto::DebitRequest {
                            account_id: account.clone(),
                            request_type: request_type.into(),
                            request_id: uuid(),
                            ..Default::default()
                        })
                        .await;
                    if let (Ok(debit), true) = (debit, n % 4 == 0) {
                        let id = debit.into_inner().transaction.unwrap().id;
                        let _ = app
                            .ledger(&app.admin)
                            .refund(proto::RefundRequest {
                                transaction_id: id,
                                units: "0.5".into(),
                                reason: "partial".into(),
                                request_id: uuid(),
                            })
                            .await;
                    }
                }
                2 | 3 => {
                    let hold = ledger
                        .reserve(proto::ReserveRequest {
                            account_id: account.clone(),
                            units: "2".into(),
                            ttl: Some(prost_types::Duration {
                                seconds: 45,
                                nanos: 0,
                            }),
                            request_id: uuid(),
                            ..Default::default()
                        })
                        .await;
                    if let Ok(hold) = hold {
                        let id = hold.into_inner().id;
                        let _ = if n % 6 == 2 {
                            ledger
                                .capture_reservation(proto::CaptureReservationRequest {
                                    reservation_id: id,
                                    units: ["1", "2", "2.5"][n % 3].into(),
                                    request_id: uuid(),
                                    ..Default::default()
                                })
                                .await
                                .map(|_| ())
                        } else if n % 12 == 3 {
                            ledger
                                .release_reservation(proto::ReleaseReservationRequest {
                                    reservation_id: id,
                                    request_id: uuid(),
                                })
                                .await
                                .map(|_| ())
                        } else {
                            Ok(()) // left to expire
                        };
                    }
                }
                4 => {
                    let _ = app
                        .grants(&app.admin)
                        .adjust_balance(proto::AdjustBalanceRequest {
                            wallet_id: wallet,
                            units: if n % 12 == 4 { "1.5" } else { "-0.75" }.into(),
                            reason: "correction".into(),
                            request_id: uuid(),
                        })
                        .await;
                }
                _ => app.advance(Duration::from_secs(20)).await,
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    app.advance(Duration::from_secs(120)).await;
    let report = run_verify(&app).await;
    assert_ok(&report);
    assert_eq!(report.wallets, 3);
    for (account, wallet) in &accounts {
        let kinds: std::collections::BTreeSet<String> = entries(&app, wallet)
            .await
            .into_iter()
            .map(|e| e.kind.as_str().to_string())
            .collect();
        assert!(
            kinds.contains("EXPIRE") && kinds.contains("RELEASE"),
            "{kinds:?}"
        );
        assert_eq!(app.balance(account).await.reserved, "0");
    }
    let (ok, stdout, stderr) = verify_binary(&app.db.url).await;
    assert!(ok && stdout.contains(": OK"), "{stdout}{stderr}");
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("app still shared"),
    }
}

/// Allotment schedules roll units over (and expire the rest) across days: still verifies.
#[tokio::test]
async fn schedules_with_rollover_verify() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("scheduled", "").await;
    app.grants(&app.admin)
        .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(proto::AllotmentSchedule {
                wallet_id: wallet.id.clone(),
                amount: "10".into(),
                period: proto::SchedulePeriod::Daily as i32,
                start_time: Some(ts(app.clock.now_micros())),
                rollover_policy: proto::RolloverPolicy::Capped as i32,
                rollover_cap: "4".into(),
                unit_price: "0.05".into(),
                currency: "USD".into(),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .expect("create schedule");
    app.sweep().await;
    for day in 0..4 {
        for _ in 0..day {
            debit(&app, &account.id, "image").await;
        }
        app.advance(Duration::from_secs(86_400)).await;
    }
    let kinds: std::collections::BTreeSet<String> = entries(&app, &wallet.id)
        .await
        .into_iter()
        .map(|e| e.kind.as_str().to_string())
        .collect();
    assert!(
        kinds.contains("EXPIRE") && kinds.contains("GRANT"),
        "{kinds:?}"
    );
    assert_ok(&run_verify(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn edited_entries_are_named() {
    let app = spawn_app().await;
    let history = history(&app).await;
    let chain = entries(&app, &history.wallet).await;
    let debit = chain
        .iter()
        .find(|e| e.kind.as_str() == "DEBIT")
        .expect("a debit")
        .clone();

    // (b) More units on a debit: its hash no longer matches, nor its delta.
    sql(
        &app,
        &format!(
            "UPDATE transactions SET units = units + 1000000 WHERE id = '{}'",
            debit.id
        ),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(!report.is_ok());
    assert!(
        report
            .for_entry(&debit.id)
            .any(|m| m.problem.contains("hash does not match its content")),
        "{report:#?}"
    );
    // (The usage rollup sums the entry's burns, which the edit left alone.)
    assert!(
        report
            .mismatches
            .iter()
            .all(|m| m.entry_id.as_deref() == Some(debit.id.as_str())
                && m.wallet_id == history.wallet),
        "only the edited entry is at fault: {report:#?}"
    );
    assert_binary_reports(&app, &debit.id).await;

    // Restored, it verifies again.
    sql(
        &app,
        &format!(
            "UPDATE transactions SET units = {} WHERE id = '{}'",
            debit.units, debit.id
        ),
    )
    .await;
    assert_ok(&run_verify(&app).await);

    // A changed balance_after in the middle of the chain: that entry, and only it.
    let middle = &chain[chain.len() / 2];
    sql(
        &app,
        &format!(
            "UPDATE transactions SET balance_after = balance_after - 2000000 WHERE id = '{}'",
            middle.id
        ),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(
        report.for_entry(&middle.id).any(|m| m.problem
            == format!(
                "entry {} balance_after {} but the entries up to it sum to {}",
                middle.id,
                units(middle.balance_after - 2_000_000),
                units(middle.balance_after)
            )),
        "{report:#?}"
    );
    assert!(
        report
            .mismatches
            .iter()
            .all(|m| m.entry_id.as_deref() == Some(middle.id.as_str())),
        "{report:#?}"
    );
    let stdout = assert_binary_reports(&app, &middle.id).await;
    assert!(stdout.contains(&history.wallet), "{stdout}");
    sql(
        &app,
        &format!(
            "UPDATE transactions SET balance_after = {} WHERE id = '{}'",
            middle.balance_after, middle.id
        ),
    )
    .await;
    assert_ok(&run_verify(&app).await);

    // A rewritten hash (to hide an edit) breaks the link from the next entry.
    let next = &chain[chain.len() / 2 + 1];
    sql(
        &app,
        &format!(
            "UPDATE transactions SET hash = '{}' WHERE id = '{}'",
            "0".repeat(64),
            middle.id
        ),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(report.for_entry(&middle.id).next().is_some(), "{report:#?}");
    assert!(
        report
            .for_entry(&next.id)
            .any(|m| m.problem.contains("chain is broken")),
        "{report:#?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn edited_wallet_balances_are_reported() {
    let app = spawn_app().await;
    let history = history(&app).await;
    let wallet =
        allot::store::accounts::find_wallet_by_id(app.handles.store.connection(), &history.wallet)
            .await
            .expect("read wallet")
            .expect("wallet exists");
    assert_eq!(wallet.reserved, 6_000_000);

    // (c) posted.
    sql(
        &app,
        &format!(
            "UPDATE wallets SET posted = posted + 5000000 WHERE id = '{}'",
            wallet.id
        ),
    )
    .await;
    let report = run_verify(&app).await;
    let expected = format!(
        "wallet posted {} but its entries sum to {}",
        units(wallet.posted + 5_000_000),
        units(wallet.posted)
    );
    assert!(
        report
            .for_wallet(&wallet.id)
            .any(|m| m.entry_id.is_none() && m.problem == expected),
        "{report:#?}"
    );
    assert!(report.mismatches.iter().all(|m| m.wallet_id == wallet.id));
    assert_binary_reports(&app, &expected).await;
    sql(
        &app,
        &format!(
            "UPDATE wallets SET posted = {} WHERE id = '{}'",
            wallet.posted, wallet.id
        ),
    )
    .await;
    assert_ok(&run_verify(&app).await);

    // (e) The open hold's units, then `reserved` itself.
    sql(
        &app,
        &format!(
            "UPDATE reservations SET units = 1000000 WHERE id = '{}' AND state = 'OPEN'",
            history.open_hold
        ),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(
        report
            .for_wallet(&wallet.id)
            .any(|m| m.problem == "wallet reserved 6 but its open holds (1) sum to 1"),
        "{report:#?}"
    );
    assert_binary_reports(&app, "wallet reserved 6").await;
    sql(
        &app,
        &format!(
            "UPDATE reservations SET units = 6000000 WHERE id = '{}'",
            history.open_hold
        ),
    )
    .await;
    assert_ok(&run_verify(&app).await);
    sql(
        &app,
        &format!("UPDATE wallets SET reserved = 0 WHERE id = '{}'", wallet.id),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(
        report
            .for_wallet(&wallet.id)
            .any(|m| m.problem == "wallet reserved 0 but its open holds (1) sum to 6"),
        "{report:#?}"
    );
    sql(
        &app,
        &format!(
            "UPDATE wallets SET reserved = {} WHERE id = '{}'",
            wallet.reserved, wallet.id
        ),
    )
    .await;
    assert_ok(&run_verify(&app).await);

    // A grant's remaining units (the other side of `posted`), and the chain head.
    let overdrawn = allot::store::accounts::find_wallet_by_id(
        app.handles.store.connection(),
        &history.overdrawn,
    )
    .await
    .expect("read wallet")
    .expect("wallet exists");
    sql(
        &app,
        &format!(
            "UPDATE wallets SET debt = debt + 1000000, last_hash = '' WHERE id = '{}'",
            overdrawn.id
        ),
    )
    .await;
    let report = run_verify(&app).await;
    let problems: Vec<&str> = report
        .for_wallet(&overdrawn.id)
        .map(|m| m.problem.as_str())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("active grants hold")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("wallet last_hash ''")),
        "{problems:#?}"
    );
    assert_eq!(report.mismatches.len(), 2, "{report:#?}");
    app.stop().await;
}

#[tokio::test]
async fn removed_entry_breaks_the_chain() {
    let app = spawn_app().await;
    let history = history(&app).await;
    let chain = entries(&app, &history.wallet).await;
    // (d) A debit from the middle of the chain disappears.
    let index = chain
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, e)| e.kind.as_str() == "DEBIT")
        .map(|(i, _)| i)
        .expect("a debit");
    let (before, removed, after) = (&chain[index - 1], &chain[index], &chain[index + 1]);
    sql(
        &app,
        &format!("DELETE FROM transactions WHERE id = '{}'", removed.id),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(
        report
            .for_entry(&after.id)
            .any(|m| m.problem.contains(&format!(
                "does not match the hash {} of the entry before it ({})",
                &before.hash[..12],
                before.id
            ))),
        "{report:#?}"
    );
    assert!(
        report
            .for_wallet(&history.wallet)
            .any(|m| m.problem.starts_with("wallet posted")),
        "{report:#?}"
    );
    // Every later balance_after is off by the removed delta: counted, not listed.
    let shifted = format!(
        "entries after entry {} have their balance_after off by the same",
        after.id
    );
    assert!(
        report
            .for_wallet(&history.wallet)
            .any(|m| m.problem.contains(&shifted)),
        "{report:#?}"
    );
    // (Its usage rollup still counts the removed entry: one more.)
    assert!(report.mismatches.len() <= 6, "{report:#?}");
    assert_eq!(report.entries as usize, {
        entries(&app, &history.wallet).await.len() + entries(&app, &history.overdrawn).await.len()
    });
    let stdout = assert_binary_reports(&app, &after.id).await;
    assert!(stdout.contains("chain is broken"), "{stdout}");

    // The first entry of the other wallet goes too.
    let other = entries(&app, &history.overdrawn).await;
    sql(
        &app,
        &format!("DELETE FROM transactions WHERE id = '{}'", other[0].id),
    )
    .await;
    let report = run_verify(&app).await;
    assert!(
        report.for_entry(&other[1].id).any(|m| m
            .problem
            .contains("is the wallet's first but has prev_hash")),
        "{report:#?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn verify_needs_a_migrated_database() {
    let db = TestDatabase::create().await;
    if !db.is_postgres() {
        // A missing SQLite file is reported, not created.
        let (ok, stdout, stderr) = verify_binary(&db.url).await;
        assert!(!ok, "{stdout}{stderr}");
        assert!(stderr.contains("does not exist"), "stderr: {stderr}");
        let path = db
            .url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap();
        assert!(!std::path::Path::new(path).exists());
        std::fs::File::create(path).expect("create an empty database file");
    }
    let (ok, stdout, stderr) = verify_binary(&db.url).await;
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains("no allot schema"), "stderr: {stderr}");
    // And it did not create the schema.
    let (ok, _, stderr) = verify_binary(&db.url).await;
    assert!(!ok && stderr.contains("no allot schema"), "{stderr}");
    db.drop_database().await;
}

/// Micro-units as the decimal string `verify` prints.
fn units(micros: i64) -> String {
    allot::domain::amount::format_decimal(rust_decimal::Decimal::new(micros, 6))
}

/// A stored state or kind that is none of its type's values is never read as a default: the
/// requests that need the row fail with INTERNAL and change nothing, and `allot verify` names
/// the row. Put back, everything works again.
#[tokio::test]
async fn unreadable_stored_values_are_errors_and_reported() {
    use allot::store::entity::{account, grant};
    let app = spawn_app().await;
    let history = history(&app).await;
    let conn = app.handles.store.connection();
    let wallet = allot::store::accounts::find_wallet_by_id(conn, &history.wallet)
        .await
        .expect("read wallet")
        .expect("wallet exists");
    let active = grant::Entity::find()
        .filter(grant::Column::WalletId.eq(wallet.id.as_str()))
        .filter(grant::Column::Status.eq(allot::domain::LotStatus::Active))
        .one(conn)
        .await
        .expect("read grants")
        .expect("an active grant");
    let overdrawn = allot::store::accounts::find_wallet_by_id(conn, &history.overdrawn)
        .await
        .expect("read wallet")
        .expect("wallet exists");
    let before = balance_of(&app, &wallet.account_id).await;

    sql(
        &app,
        &format!(
            "UPDATE grants SET status = 'ACTIV' WHERE id = '{}'",
            active.id
        ),
    )
    .await;
    sql(
        &app,
        &format!(
            "UPDATE accounts SET state = 'FROZEN' WHERE id = '{}'",
            overdrawn.account_id
        ),
    )
    .await;

    // The requests that read those rows fail; nothing is taken as ACTIVE.
    let service = token(&["service"], &["*"]);
    for account_id in [&wallet.account_id, &overdrawn.account_id] {
        let status = app
            .ledger(&service)
            .debit(proto::DebitRequest {
                account_id: account_id.clone(),
                request_type: "one".into(),
                request_id: uuid(),
                ..Default::default()
            })
            .await
            .expect_err("a debit on a corrupt row must fail");
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert!(
            !status.message().contains("ACTIV") && !status.message().contains("FROZEN"),
            "database text leaked: {status:?}"
        );
    }
    let account = account::Entity::find_by_id(overdrawn.account_id.clone())
        .one(conn)
        .await;
    assert!(account.is_err(), "a corrupt state reads as an error");

    let report = run_verify(&app).await;
    let grant_problem = report
        .for_wallet(&wallet.id)
        .find(|m| m.problem.contains("ACTIV"))
        .unwrap_or_else(|| panic!("grant not reported: {:#?}", report.mismatches));
    assert!(
        grant_problem.problem.contains(&active.id),
        "{grant_problem}"
    );
    assert!(
        report.mismatches.iter().any(|m| m.wallet_id.is_empty()
            && m.problem.contains(&overdrawn.account_id)
            && m.problem.contains("`FROZEN`")),
        "account not reported: {:#?}",
        report.mismatches
    );
    let stdout = assert_binary_reports(&app, "`ACTIV`").await;
    assert!(stdout.contains("`FROZEN`"), "{stdout}");

    // Put back: verify passes, and the wallet answers as before.
    sql(
        &app,
        &format!(
            "UPDATE grants SET status = 'ACTIVE' WHERE id = '{}'",
            active.id
        ),
    )
    .await;
    sql(
        &app,
        &format!(
            "UPDATE accounts SET state = 'ACTIVE' WHERE id = '{}'",
            overdrawn.account_id
        ),
    )
    .await;
    assert_ok(&run_verify(&app).await);
    assert_eq!(balance_of(&app, &wallet.account_id).await, before);
    debit(&app, &wallet.account_id, "one").await;
    app.stop().await;
}

async fn balance_of(app: &TestApp, account_id: &str) -> String {
    app.ledger(&app.admin)
        .get_balance(proto::GetBalanceRequest {
            account_id: account_id.into(),
            unit: "credits".into(),
            ..Default::default()
        })
        .await
        .expect("balance")
        .into_inner()
        .posted
}

/// Stored JSON and decimal text that does not parse is named by `allot verify` (the service
/// still reads it with a default until those columns are typed JSON).
#[tokio::test]
async fn unreadable_stored_text_is_reported() {
    use allot::store::entity::grant;
    let app = spawn_app().await;
    let history = history(&app).await;
    let conn = app.handles.store.connection();
    let grant = grant::Entity::find()
        .filter(grant::Column::WalletId.eq(history.wallet.as_str()))
        .one(conn)
        .await
        .expect("read grants")
        .expect("a grant");
    let entry = entries(&app, &history.wallet).await.remove(0);
    let overdrawn = allot::store::accounts::find_wallet_by_id(conn, &history.overdrawn)
        .await
        .expect("read wallet")
        .expect("wallet exists");
    let restore = [
        format!(
            "UPDATE grants SET unit_price = '{}' WHERE id = '{}'",
            grant.unit_price.0, grant.id
        ),
        format!(
            "UPDATE wallets SET low_balance_thresholds = '[]' WHERE id = '{}'",
            history.overdrawn
        ),
        format!(
            "UPDATE transactions SET metadata = '{}' WHERE id = '{}'",
            allot::store::columns::json_text(&entry.metadata),
            entry.id
        ),
    ];
    // Valid JSON of the wrong shape: PostgreSQL's jsonb refuses text that is not JSON at
    // all, so this is what corruption can look like there (SQLite takes either).
    sql(
        &app,
        &format!(
            "UPDATE grants SET unit_price = '0.0x2' WHERE id = '{}'",
            grant.id
        ),
    )
    .await;
    sql(
        &app,
        &format!(
            "UPDATE wallets SET low_balance_thresholds = '[1]' WHERE id = '{}'",
            history.overdrawn
        ),
    )
    .await;
    sql(
        &app,
        &format!(
            "UPDATE transactions SET metadata = '{{\"user\": 7}}' WHERE id = '{}'",
            entry.id
        ),
    )
    .await;

    let report = run_verify(&app).await;
    let named = |needle: &str| {
        assert!(
            report.mismatches.iter().any(|m| m.problem.contains(needle)),
            "`{needle}` not reported: {:#?}",
            report.mismatches
        )
    };
    named(&format!("grant {} has unreadable unit_price", grant.id));
    named(&format!(
        "wallet {} has unreadable low_balance_thresholds",
        history.overdrawn
    ));
    named(&format!("entry {} has unreadable metadata", entry.id));
    assert_binary_reports(&app, "unreadable unit_price").await;
    // The service does not read them as defaults: a read of the wallet fails.
    let status = app
        .ledger(&token(&["admin"], &["*"]))
        .get_balance(proto::GetBalanceRequest {
            account_id: overdrawn.account_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a wallet with unreadable thresholds cannot be read");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(
        !status.message().contains("[1]"),
        "database text leaked: {status:?}"
    );

    for statement in &restore {
        sql(&app, statement).await;
    }
    assert_ok(&run_verify(&app).await);
    app.stop().await;
}

/// Verification walks a wallet's entries in time order (the one index on them): an entry
/// dated before one written earlier is named, and the chain check sees it out of place.
#[tokio::test]
async fn an_entry_dated_back_is_named() {
    let app = spawn_app().await;
    let history = history(&app).await;
    let chain = entries(&app, &history.wallet).await;
    assert!(chain.len() > 4, "{chain:#?}");
    let (first, moved) = (&chain[0], &chain[3]);
    sql(
        &app,
        &format!(
            "UPDATE transactions SET create_time = {} WHERE id = '{}'",
            first.create_time - 1,
            moved.id
        ),
    )
    .await;
    let report = run_verify(&app).await;
    let expected = format!(
        "entry {} is dated before the entry written before it ({})",
        moved.id, first.id
    );
    assert!(
        report.for_entry(&moved.id).any(|m| m.problem == expected),
        "{report:#?}"
    );
    assert!(
        report
            .mismatches
            .iter()
            .any(|m| m.problem.contains("chain is broken")),
        "{report:#?}"
    );
}

/// A wallet's events are numbered without a gap up to `event_seq`: a deleted event in the
/// middle, or a wallet whose number runs behind its events, is named; pruning the oldest
/// ones is not a gap.
#[tokio::test]
async fn lost_events_are_named() {
    let app = spawn_app().await;
    let history = history(&app).await;
    assert_ok(&run_verify(&app).await);
    let wallet = &history.wallet;

    sql(
        &app,
        &format!("DELETE FROM events WHERE wallet_id = '{wallet}' AND sequence = 5"),
    )
    .await;
    let report = run_verify(&app).await;
    assert_eq!(
        report
            .for_wallet(wallet)
            .map(|m| m.problem.as_str())
            .collect::<Vec<_>>(),
        ["its events skip from 4 to 6"],
        "{report:#?}"
    );

    // The oldest ones gone (as pruning leaves them): fine.
    let pruned = app
        .handles
        .store
        .connection()
        .execute_unprepared(&format!(
            "DELETE FROM events WHERE wallet_id = '{wallet}' AND sequence < 6"
        ))
        .await
        .unwrap();
    assert_eq!(pruned.rows_affected(), 4);
    assert_ok(&run_verify(&app).await);

    sql(
        &app,
        &format!("UPDATE wallets SET event_seq = event_seq - 1 WHERE id = '{wallet}'"),
    )
    .await;
    let report = run_verify(&app).await;
    let problems: Vec<&str> = report
        .for_wallet(wallet)
        .map(|m| m.problem.as_str())
        .collect();
    assert_eq!(problems.len(), 1, "{report:#?}");
    assert!(
        problems[0].starts_with("its latest event is number "),
        "{problems:?}"
    );
    app.stop().await;
}
