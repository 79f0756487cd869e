//! Issue 10's regressions: extreme values, faults that must stay local, account states,
//! scope holes, reads that must not write, unknown dimensions, long claims, old schedules.
//! Each runs on SQLite and, with `DATABASE_URL=postgres://…`, on PostgreSQL.

mod common;

use std::time::Duration;

use allot::proto::{self, AccountState};
use common::*;
use prost_types::FieldMask;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn serving(app: &TestApp) -> i32 {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

async fn set_state(app: &TestApp, account_id: &str, state: AccountState) {
    app.accounts(&app.admin)
        .update_account(state_request(account_id, state))
        .await
        .expect("set the account's state");
}

async fn entry_count(app: &TestApp) -> i64 {
    let backend = app.handles.store.backend();
    app.handles
        .store
        .connection()
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM transactions",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

// ---- 1. no request can stop the ledger -----------------------------------------------------

/// The grant that used to panic the batch worker is refused at the edge with nothing written;
/// the largest values inside the bounds work end to end (grant, debit, refund, statement).
#[tokio::test]
async fn extreme_prices_are_refused_and_the_bounds_work() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("extreme", "").await;
    let mut grants = app.grants(&app.admin);
    let before = entry_count(&app).await;

    let status = grants
        .create_grant(grant_request(
            &wallet.id,
            "100000000000",
            "999999999999999999",
        ))
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "AMOUNT_OUT_OF_RANGE");
    // The same with a future effective time (used to panic later, in the sweeper).
    let mut future = grant_request(&wallet.id, "100000000000", "999999999999999999");
    future.grant.as_mut().unwrap().effective_time = Some(ts_secs(now_seconds() + 60));
    let status = grants.create_grant(future).await.unwrap_err();
    assert_error(&status, Code::InvalidArgument, "AMOUNT_OUT_OF_RANGE");
    // And on a schedule.
    let status = grants
        .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(proto::AllotmentSchedule {
                wallet_id: wallet.id.clone(),
                amount: "100000000000".into(),
                period: proto::SchedulePeriod::Monthly as i32,
                unit_price: "999999999999999999".into(),
                currency: "USD".into(),
                start_time: Some(ts_secs(now_seconds() + 3600)),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "AMOUNT_OUT_OF_RANGE");
    assert_eq!(
        entry_count(&app).await,
        before,
        "a refused grant wrote nothing"
    );

    // The largest amount at the largest price: money is exact and every read works.
    let max_amount = "9223372036854.775807";
    grants
        .create_grant(grant_request(&wallet.id, max_amount, "1000000000000"))
        .await
        .expect("the largest grant at the largest price");
    let mut ledger = app.ledger(&app.admin);
    let debit = ledger
        .debit(debit_request(&account.id, "image", &uuid()))
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(debit.money[0].amount, "-4000000000000");
    ledger
        .refund(proto::RefundRequest {
            transaction_id: debit.id.clone(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("refund");
    let statement = proto::report_service_client::ReportServiceClient::with_interceptor(
        app.channel.clone(),
        bearer(&app.admin),
    )
    .get_statement(proto::GetStatementRequest {
        account_id: account.id.clone(),
        ..Default::default()
    })
    .await
    .expect("statement")
    .into_inner();
    assert_eq!(statement.closing_balance, max_amount);
    assert_eq!(
        statement.closing_money[0].amount,
        "9223372036854775807000000"
    );
    // A grant beyond the wallet's bound is refused, not wrapped.
    let status = grants
        .create_grant(grant_request(&wallet.id, "1", "0"))
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "BALANCE_OUT_OF_RANGE");
    assert_eq!(serving(&app).await, 1);
    app.stop().await;
}

/// A refund whose units no longer fit the wallet (a grant filled the room the debit freed) is
/// refused; it used to push the balance past its bound.
#[tokio::test]
async fn a_refund_never_overflows_the_balance() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("refund-bound", "4").await;
    let debit = app
        .ledger(&app.admin)
        .debit(debit_request(&account.id, "image", &uuid()))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    app.grants(&app.admin)
        .create_grant(grant_request(&wallet.id, "9223372036854.775807", "0"))
        .await
        .expect("fills the wallet to its bound");
    let status = app
        .ledger(&app.admin)
        .refund(proto::RefundRequest {
            transaction_id: debit.id,
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "BALANCE_OUT_OF_RANGE");
    assert_eq!(
        app.balance(&account.id).await.posted,
        "9223372036854.775807"
    );
    app.stop().await;
}

/// A fault while applying one operation (here a wallet row whose stored balance was corrupted
/// to the edge of its range, so recording a grant overflows) fails that operation alone with
/// INTERNAL; the debits batched with it succeed, the worker keeps serving, health stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_operation_fails_alone() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (_, broken) = app.funded("broken", "10").await;
    let mut healthy = Vec::new();
    for i in 0..8 {
        healthy.push(app.funded(&format!("healthy-{i}"), "1000").await.0);
    }
    let store = &app.handles.store;
    store
        .connection()
        .execute_raw(Statement::from_sql_and_values(
            store.backend(),
            match store.backend() {
                DbBackend::Postgres => "UPDATE wallets SET posted = $1 WHERE id = $2",
                _ => "UPDATE wallets SET posted = ? WHERE id = ?",
            },
            [(i64::MAX - 5).into(), broken.id.clone().into()],
        ))
        .await
        .unwrap();

    for round in 0..3 {
        let mut calls = Vec::new();
        for account in &healthy {
            for n in 0..4 {
                let mut ledger = app.ledger(&app.admin);
                let request = debit_request(&account.id, "one", &format!("d-{round}-{n}"));
                calls.push(tokio::spawn(async move { ledger.debit(request).await }));
            }
        }
        let mut grants = app.grants(&app.admin);
        let faulty = grants.create_grant(grant_request(&broken.id, "1", "0"));
        let (faulty, debits) = tokio::join!(faulty, futures::future::join_all(calls));
        let status = faulty.unwrap_err();
        assert_error(&status, Code::Internal, "INTERNAL");
        assert!(
            !status.message().contains("panick"),
            "the client gets no internals: {status:?}"
        );
        for debit in debits {
            debit
                .unwrap()
                .expect("a batch-mate of the faulty operation");
        }
    }
    for account in &healthy {
        assert_eq!(app.balance(&account.id).await.posted, "988");
    }
    assert_eq!(serving(&app).await, 1, "one bad operation is not an outage");
    app.stop().await;
}

/// Health follows the database: NOT_SERVING while it refuses connections, SERVING again
/// once it accepts them, and debits work again. (PostgreSQL: SQLite is a local file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    let app = spawn_app().await;
    let Some(admin_url) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
    else {
        app.stop().await;
        return;
    };
    app.publish_standard_card().await;
    let (account, _) = app.funded("health", "100").await;
    let name = app
        .db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
    let run = |sql: String| {
        let admin = admin.clone();
        async move { admin.execute_unprepared(&sql).await.unwrap() }
    };
    run(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    run(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .await;
    let mut status = 0;
    for _ in 0..100 {
        status = serving(&app).await;
        if status == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 2, "NOT_SERVING while the database is unreachable");
    let refused = app
        .ledger(&app.admin)
        .debit(debit_request(&account.id, "one", "while-down"))
        .await
        .unwrap_err();
    assert_error(&refused, Code::Unavailable, "UNAVAILABLE");
    assert!(
        !refused.message().contains("pg_") && !refused.message().contains(&name),
        "no database text reaches the client: {refused:?}"
    );
    run(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    for _ in 0..100 {
        status = serving(&app).await;
        if status == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 1, "SERVING again once the database is back");
    app.ledger(&app.admin)
        .debit(debit_request(&account.id, "one", "while-down"))
        .await
        .expect("the refused debit, retried");
    assert_eq!(app.balance(&account.id).await.posted, "99");
    admin.close().await.ok();
    app.stop().await;
}

/// Health follows the ledger's ability to commit: while another connection holds the lock
/// every ledger batch needs (SQLite: the database's write lock; PostgreSQL: the rate-card
/// head), NOT_SERVING; SERVING again once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_ledger_commit() {
    use sea_orm::sqlx::{self, Connection};

    let app = spawn_app().await;
    let wait_for = |wanted: i32| {
        let app = &app;
        async move {
            for _ in 0..150 {
                if serving(app).await == wanted {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(wait_for(1).await, "SERVING at start");
    if app.db.is_postgres() {
        let mut locker = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("LOCK TABLE rate_card_head IN EXCLUSIVE MODE")
            .execute(&mut locker)
            .await
            .unwrap();
        assert!(
            wait_for(2).await,
            "NOT_SERVING while the ledger cannot commit"
        );
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        locker.close().await.unwrap();
    } else {
        let mut locker = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut locker)
            .await
            .unwrap();
        assert!(
            wait_for(2).await,
            "NOT_SERVING while the ledger cannot commit"
        );
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        locker.close().await.unwrap();
    }
    assert!(wait_for(1).await, "SERVING again once it can");
    app.publish_standard_card().await;
    let (account, _) = app.funded("after-lock", "10").await;
    app.ledger(&app.admin)
        .debit(debit_request(&account.id, "one", &uuid()))
        .await
        .expect("debits work again");
    app.stop().await;
}

// ---- 4. long claims -----------------------------------------------------------------------

#[tokio::test]
async fn long_subjects_work_up_to_the_bound_on_both_databases() {
    let app = spawn_app().await;
    let mut claims = claims(&["admin"], &["*"]);
    claims.sub = "s".repeat(255);
    let long = allot::auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    let create = || proto::CreateAccountRequest {
        account: Some(proto::Account {
            external_id: "long-sub".into(),
            ..Default::default()
        }),
        request_id: "long-sub-1".into(),
    };
    let created = app
        .accounts(&long)
        .create_account(create())
        .await
        .expect("a 255-byte sub is a valid caller")
        .into_inner();
    // Its idempotency record works too: the retry replays.
    let replayed = app
        .accounts(&long)
        .create_account(create())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.id, created.id);

    claims.sub = "s".repeat(256);
    let too_long = allot::auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    let status = app
        .accounts(&too_long)
        .list_accounts(proto::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_error(&status, Code::Unauthenticated, "TOKEN_INVALID");
    assert!(status.message().contains("255"), "{status:?}");
    app.stop().await;
}

// ---- 5. old schedules ---------------------------------------------------------------------

#[tokio::test]
async fn schedules_catch_up_a_bounded_number_of_periods() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("old-schedule", "").await;
    let schedule = |start: i64, period: proto::SchedulePeriod| {
        schedule_request(&wallet.id, "10", period, Some(ts_secs(start)))
    };
    let mut grants = app.grants(&app.admin);
    let status = grants
        .create_allotment_schedule(schedule(0, proto::SchedulePeriod::Daily))
        .await
        .unwrap_err();
    let metadata = assert_error(&status, Code::InvalidArgument, "SCHEDULE_START_TOO_EARLY");
    assert_eq!(metadata["max_catch_up_periods"], "100");
    // 100 daily periods is the bound: caught up at once.
    let start = now_seconds() - 99 * DAY_SECS - 60;
    grants
        .create_allotment_schedule(schedule(start, proto::SchedulePeriod::Daily))
        .await
        .expect("100 daily periods");
    assert_eq!(app.balance(&account.id).await.posted, "10");
    let grants_count = app
        .all_transactions(&account.id)
        .await
        .iter()
        .filter(|t| t.kind == proto::TransactionKind::Grant as i32)
        .count();
    assert_eq!(grants_count, 100);
    // One period more is refused.
    let status = grants
        .create_allotment_schedule(schedule(
            now_seconds() - 100 * DAY_SECS - 60,
            proto::SchedulePeriod::Daily,
        ))
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "SCHEDULE_START_TOO_EARLY");
    // Monthly periods reach further back within the same bound.
    grants
        .create_allotment_schedule(schedule(
            now_seconds() - 8 * 365 * DAY_SECS,
            proto::SchedulePeriod::Monthly,
        ))
        .await
        .expect("eight years of monthly periods is 97 periods");
    app.stop().await;
}

// ---- 6. scope holes -----------------------------------------------------------------------

#[tokio::test]
async fn global_objects_need_an_unscoped_token() {
    let app = spawn_app().await;
    let (account, _) = app.funded("scoped-op", "").await;
    for role in ["operator", "admin"] {
        let scoped = token(&[role], &[&account.id]);
        let status = app
            .rates(&scoped)
            .create_rate_card(card_request(vec![rate("x", "1", &[], "")], ""))
            .await
            .unwrap_err();
        assert_error(&status, Code::PermissionDenied, "GLOBAL_SCOPE_REQUIRED");
    }
    // A draft made by an unscoped operator cannot be published with a scoped token either.
    let draft = app
        .rates(&app.admin)
        .create_rate_card(card_request(vec![rate("x", "1", &[], "")], "secret plans"))
        .await
        .unwrap()
        .into_inner();
    let status = app
        .rates(&token(&["operator"], &[&account.id]))
        .publish_rate_card(proto::PublishRateCardRequest {
            version: draft.version,
            etag: draft.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "GLOBAL_SCOPE_REQUIRED");

    // Drafts (and their notes) are for operators only.
    for role in ["service", "procurement", "account_manager"] {
        let reader = token(&[role], &["*"]);
        let status = app
            .rates(&reader)
            .get_rate_card(proto::GetRateCardRequest {
                version: draft.version,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_error(&status, Code::NotFound, "NOT_FOUND");
        let listed = app
            .rates(&reader)
            .list_rate_cards(proto::ListRateCardsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.rate_cards.iter().all(|c| c.version != draft.version));
    }
    let operator = token(&["operator"], &["*"]);
    let seen = app
        .rates(&operator)
        .get_rate_card(proto::GetRateCardRequest {
            version: draft.version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.notes, "secret plans");
    app.stop().await;
}

#[tokio::test]
async fn void_grant_out_of_scope_looks_like_a_missing_grant() {
    let app = spawn_app().await;
    let (mine, _) = app.funded("mine", "").await;
    let (_, theirs) = app.funded("theirs", "").await;
    let grant = app.grant(&theirs.id, "5").await;
    let scoped = token(&["account_manager"], &[&mine.id]);
    let void = |id: &str| proto::VoidGrantRequest {
        id: id.into(),
        reason: "x".into(),
        request_id: uuid(),
    };
    let existing = app
        .grants(&scoped)
        .void_grant(void(&grant.id))
        .await
        .unwrap_err();
    let missing_id = &format!("grt_{}", "0".repeat(32));
    let missing = app
        .grants(&scoped)
        .void_grant(void(missing_id))
        .await
        .unwrap_err();
    assert_error(&existing, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    assert_error(&missing, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    assert!(!existing.message().contains(&theirs.id), "{existing:?}");
    assert_eq!(
        existing.message().replace(&grant.id, "ID"),
        missing.message().replace(missing_id, "ID")
    );
    app.stop().await;
}

// ---- 7. account states --------------------------------------------------------------------

/// Every cell of the state × operation matrix (docs/ARCHITECTURE.md, `domain::account_state`).
#[tokio::test]
async fn the_account_state_matrix_holds_for_every_operation() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    for state in [
        AccountState::Active,
        AccountState::Suspended,
        AccountState::Closed,
    ] {
        let name = format!("{state:?}").to_lowercase();
        let (account, wallet) = app.funded(&name, "1000").await;
        let mut ledger = app.ledger(&app.admin);
        let mut grants = app.grants(&app.admin);
        let mut accounts = app.accounts(&app.admin);
        // Set up while ACTIVE: a debit to refund, two holds, a grant to void.
        let debit = ledger
            .debit(debit_request(&account.id, "image", &uuid()))
            .await
            .unwrap()
            .into_inner()
            .transaction
            .unwrap();
        let hold = |units: &str| proto::ReserveRequest {
            account_id: account.id.clone(),
            request_type: "image".into(),
            units: units.into(),
            request_id: uuid(),
            ..Default::default()
        };
        let to_capture = ledger.reserve(hold("5")).await.unwrap().into_inner();
        let to_release = ledger.reserve(hold("5")).await.unwrap().into_inner();
        let to_void = app.grant(&wallet.id, "7").await;
        if state != AccountState::Active {
            set_state(&app, &account.id, state).await;
        }
        let mut results: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
        results.push((
            "Debit",
            ledger
                .debit(debit_request(&account.id, "one", &uuid()))
                .await
                .map(drop),
        ));
        let batch = ledger
            .batch_debit(proto::BatchDebitRequest {
                debits: vec![debit_request(&account.id, "one", &uuid())],
            })
            .await
            .unwrap()
            .into_inner();
        results.push((
            "BatchDebit",
            match &batch.results[0].result {
                Some(proto::debit_result::Result::Response(_)) => Ok(()),
                Some(proto::debit_result::Result::Error(e)) => {
                    Err(tonic::Status::new(Code::from(e.code), e.reason.clone()))
                }
                None => panic!("no outcome"),
            },
        ));
        results.push(("Reserve", ledger.reserve(hold("1")).await.map(drop)));
        results.push((
            "Capture",
            ledger
                .capture_reservation(proto::CaptureReservationRequest {
                    reservation_id: to_capture.id.clone(),
                    units: "5".into(),
                    request_id: uuid(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ));
        results.push((
            "Release",
            ledger
                .release_reservation(proto::ReleaseReservationRequest {
                    reservation_id: to_release.id.clone(),
                    request_id: uuid(),
                })
                .await
                .map(drop),
        ));
        results.push((
            "Refund",
            ledger
                .refund(proto::RefundRequest {
                    transaction_id: debit.id.clone(),
                    request_id: uuid(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ));
        results.push((
            "CreateGrant",
            grants
                .create_grant(grant_request(&wallet.id, "3", "0"))
                .await
                .map(drop),
        ));
        for units in ["2", "-2"] {
            results.push((
                if units == "2" {
                    "AdjustUp"
                } else {
                    "AdjustDown"
                },
                grants
                    .adjust_balance(proto::AdjustBalanceRequest {
                        wallet_id: wallet.id.clone(),
                        units: units.into(),
                        reason: "matrix".into(),
                        request_id: uuid(),
                    })
                    .await
                    .map(drop),
            ));
        }
        results.push((
            "VoidGrant",
            grants
                .void_grant(proto::VoidGrantRequest {
                    id: to_void.id.clone(),
                    reason: "matrix".into(),
                    request_id: uuid(),
                })
                .await
                .map(drop),
        ));
        results.push((
            "CreateAllotmentSchedule",
            grants
                .create_allotment_schedule(schedule_request(
                    &wallet.id,
                    "1",
                    proto::SchedulePeriod::Monthly,
                    Some(ts_secs(now_seconds() + 3600)),
                ))
                .await
                .map(drop),
        ));
        results.push((
            "UpdateWallet",
            accounts
                .update_wallet(proto::UpdateWalletRequest {
                    wallet: Some(proto::Wallet {
                        id: wallet.id.clone(),
                        daily_spend_cap: "500".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["daily_spend_cap".into()],
                    }),
                    request_id: uuid(),
                })
                .await
                .map(drop),
        ));
        results.push((
            "CreateWallet",
            accounts
                .create_wallet(proto::CreateWalletRequest {
                    wallet: Some(proto::Wallet {
                        account_id: account.id.clone(),
                        unit: "message_units".into(),
                        ..Default::default()
                    }),
                    request_id: uuid(),
                })
                .await
                .map(drop),
        ));
        results.push((
            "CreateSubAccount",
            accounts
                .create_account(proto::CreateAccountRequest {
                    account: Some(proto::Account {
                        external_id: format!("{name}-dept"),
                        parent_id: account.id.clone(),
                        ..Default::default()
                    }),
                    request_id: uuid(),
                })
                .await
                .map(drop),
        ));
        for (operation, result) in results {
            let allowed = match state {
                AccountState::Active => true,
                AccountState::Suspended => {
                    !matches!(operation, "Debit" | "BatchDebit" | "Reserve" | "Capture")
                }
                _ => matches!(operation, "Release" | "VoidGrant"),
            };
            match (allowed, result) {
                (true, Ok(())) => {}
                (false, Err(status)) => {
                    assert_eq!(
                        status.code(),
                        Code::FailedPrecondition,
                        "{state:?} × {operation}: {status:?}"
                    );
                    if operation != "BatchDebit" {
                        assert_error(&status, Code::FailedPrecondition, "ACCOUNT_NOT_ACTIVE");
                    } else {
                        assert_eq!(status.message(), "ACCOUNT_NOT_ACTIVE");
                    }
                }
                (allowed, result) => {
                    panic!("{state:?} × {operation}: allowed {allowed}, got {result:?}")
                }
            }
        }
    }
    app.stop().await;
}

/// A closed account's schedule grants no more periods; a suspended one's keeps granting.
#[tokio::test]
async fn closed_accounts_receive_no_more_allotments() {
    let app = spawn_app().await;
    for (state, expected_grants) in [(AccountState::Suspended, 3), (AccountState::Closed, 1)] {
        let (account, wallet) = app.funded(&format!("alloc-{}", state as i32), "").await;
        app.grants(&app.admin)
            .create_allotment_schedule(schedule_request(
                &wallet.id,
                "10",
                proto::SchedulePeriod::Daily,
                None,
            ))
            .await
            .unwrap();
        set_state(&app, &account.id, state).await;
        app.advance(Duration::from_secs(2 * DAY_SECS as u64 + 60))
            .await;
        let granted = app
            .all_transactions(&account.id)
            .await
            .iter()
            .filter(|t| t.kind == proto::TransactionKind::Grant as i32)
            .count();
        assert_eq!(granted, expected_grants, "{state:?}");
    }
    app.stop().await;
}

// ---- 8. reads never write -----------------------------------------------------------------

/// GetStatement writes nothing, yet shows what fell due and is not recorded yet.
#[tokio::test]
async fn statements_are_reads() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("statement-read", "").await;
    let mut expiring = grant_request(&wallet.id, "25", "0.5");
    expiring.grant.as_mut().unwrap().expire_time = Some(ts_secs(now_seconds() + 3600));
    app.grants(&app.admin).create_grant(expiring).await.unwrap();
    app.clock.advance(2 * 3600 * 1_000_000);
    let before = entry_count(&app).await;
    let procurement = token(&["procurement"], &[&account.id]);
    let statement = proto::report_service_client::ReportServiceClient::with_interceptor(
        app.channel.clone(),
        bearer(&procurement),
    )
    .get_statement(proto::GetStatementRequest {
        account_id: account.id.clone(),
        ..Default::default()
    })
    .await
    .expect("statement")
    .into_inner();
    assert_eq!(
        entry_count(&app).await,
        before,
        "a statement writes nothing"
    );
    assert_eq!(statement.closing_balance, "0");
    let expiry = statement
        .movements
        .iter()
        .find(|t| t.kind == proto::TransactionKind::Expire as i32)
        .expect("the expiry that fell due is shown");
    assert!(expiry.id.is_empty(), "not recorded yet: no id");
    // Once the sweeper records it, the statement shows the same, with an id.
    app.sweep().await;
    assert_eq!(entry_count(&app).await, before + 1);
    app.stop().await;
}

// ---- 10. typos that undercharge -----------------------------------------------------------

#[tokio::test]
async fn unknown_dimensions_are_refused_everywhere() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, _) = app.funded("typo", "1000").await;
    let before = entry_count(&app).await;
    let typo = quantities(&[("output_tokns", "1500")]);
    let check = |status: tonic::Status| {
        let metadata = assert_error(&status, Code::InvalidArgument, "UNKNOWN_DIMENSION");
        assert_eq!(metadata["dimension"], "output_tokns");
        assert_eq!(metadata["known_dimensions"], "output_tokens");
        assert!(status.message().contains("output_tokens"), "{status:?}");
    };
    let mut ledger = app.ledger(&app.admin);
    let mut debit = debit_request(&account.id, "chat", "typo-1");
    debit.quantities = typo.clone();
    check(ledger.debit(debit.clone()).await.unwrap_err());
    check(
        app.rates(&app.admin)
            .quote_price(proto::QuotePriceRequest {
                account_id: account.id.clone(),
                request_type: "chat".into(),
                quantities: typo.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    check(
        ledger
            .reserve(proto::ReserveRequest {
                account_id: account.id.clone(),
                request_type: "chat".into(),
                quantities: typo.clone(),
                request_id: uuid(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    let batch = ledger
        .batch_debit(proto::BatchDebitRequest {
            debits: vec![debit.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    match &batch.results[0].result {
        Some(proto::debit_result::Result::Error(e)) => {
            assert_eq!(e.reason, "UNKNOWN_DIMENSION");
            assert_eq!(e.code, Code::InvalidArgument as i32);
        }
        other => panic!("BatchDebit accepted a typo: {other:?}"),
    }
    let hold = ledger
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            request_type: "chat".into(),
            quantities: quantities(&[("output_tokens", "1000")]),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let entries = entry_count(&app).await;
    check(
        ledger
            .capture_reservation(proto::CaptureReservationRequest {
                reservation_id: hold.id.clone(),
                quantities: typo.clone(),
                request_id: uuid(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(entry_count(&app).await, entries, "refusals write nothing");
    assert_eq!(entries, before + 1, "only the valid hold was written");
    // The refused request_id is free for the corrected request.
    debit.quantities = quantities(&[("output_tokens", "1500")]);
    ledger.debit(debit).await.expect("the corrected debit");
    app.stop().await;
}
