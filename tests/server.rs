//! The process around the API: health, reflection, startup refusal without keys, graceful
//! shutdown of the real binary on SIGTERM.

mod common;

use std::{process::Command, time::Duration};

use allot::proto;
use common::{process::binary, *};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn health_and_reflection() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "allot.v1.LedgerService", "allot.v1.AccountService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }

    let mut v1_client =
        v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1_client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "allot.v1.AccountService",
        "allot.v1.GrantService",
        "allot.v1.RateCardService",
        "allot.v1.LedgerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "allot.v1.LedgerService".into(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
    app.stop().await;
}

/// Shutdown flips health to NOT_SERVING for watchers, and a stream left open does not keep
/// the server alive past the grace period.
#[tokio::test]
async fn shutdown_flips_health_and_ends() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "allot.v1.LedgerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    app.begin_shutdown();
    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // The watch stream is still open; stop() returns once the grace period has passed.
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("server stopped within the grace period");
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_app().await;
    let huge = "x".repeat(5 * 1024 * 1024);
    let status = app
        .accounts(&app.admin)
        .create_account(proto::CreateAccountRequest {
            account: Some(proto::Account {
                external_id: "big".into(),
                display_name: huge,
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn serve_refuses_to_start_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/a.db?mode=rwc", dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no token keys configured"), "{stderr}");
    assert!(stderr.contains("--dev"), "{stderr}");
}

/// Starts the real binary, waits for SERVING, sends SIGTERM while a debit stream is in
/// flight: health flips, acknowledged debits are all in the ledger, the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Returns once the process answers its health check with SERVING.
    let mut server = process::ServerProcess::start("sigterm", &db.url, &[], dir.path()).await;

    // Provision through the binary's API.
    let mut accounts = server.accounts();
    let account = accounts
        .create_account(new_account("drain", ""))
        .await
        .unwrap()
        .into_inner();
    let wallet = accounts
        .create_wallet(wallet_request(&account.id))
        .await
        .unwrap()
        .into_inner();
    server
        .grants()
        .create_grant(proto::CreateGrantRequest {
            grant: Some(proto::Grant {
                wallet_id: wallet.id.clone(),
                kind: proto::GrantKind::Contract as i32,
                amount: "1000000".into(),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .unwrap();
    let mut rates = server.rates();
    let draft = rates
        .create_rate_card(card_request(vec![rate("one", "1", &[], "")], ""))
        .await
        .unwrap()
        .into_inner();
    rates
        .publish_rate_card(proto::PublishRateCardRequest {
            version: draft.version,
            etag: draft.etag,
            ..Default::default()
        })
        .await
        .unwrap();

    // Debit continuously from several tasks, then SIGTERM mid-stream.
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut ledger = server.ledger();
        let account_id = account.id.clone();
        workers.push(tokio::spawn(async move {
            let mut acknowledged = 0u32;
            for i in 0..10_000 {
                let request = debit_request(&account_id, "one", &format!("drain-{w}-{i}"));
                match ledger.debit(request).await {
                    Ok(_) => acknowledged += 1,
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    let mut acknowledged = 0;
    for worker in workers {
        acknowledged += worker.await.unwrap();
    }
    let status = loop {
        if let Some(status) = server.exit_status() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(acknowledged > 0, "no debit went through before shutdown");

    // Every acknowledged debit is in the database: restart on the same database and look.
    let app_db = db;
    let store = allot::server::open_store(&app_db.url, allot::clock::Clock::system())
        .await
        .unwrap();
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let debits = allot::store::entity::transaction::Entity::find()
        .filter(allot::store::entity::transaction::Column::Kind.eq("DEBIT"))
        .count(store.connection())
        .await
        .unwrap();
    assert!(
        debits >= u64::from(acknowledged),
        "{debits} in the ledger < {acknowledged} acknowledged"
    );
    store.close().await;
    app_db.drop_database().await;
}

/// SQLite: the background checkpointer copies the write-ahead log into the database file
/// while the server runs. (The writer's own automatic checkpoint is only a backstop at
/// thousands of pages, which these few writes are far from; new pages reach the database
/// file only through a checkpoint.)
/// SQLite: the writer commits without waiting for the disk (`synchronous=NORMAL`) and every
/// acknowledgement waits for a sync of the log that began after its commit (`log_sync`).
#[tokio::test]
async fn sqlite_acknowledges_a_debit_only_after_its_commit_is_synced() {
    let app = spawn_app().await;
    let store = app.handles.store.clone();
    if app.db.is_postgres() {
        assert!(store.log_counts().is_none(), "PostgreSQL commits durably");
        app.stop().await;
        return;
    }
    app.publish_standard_card().await;
    let (account, _) = app.funded("sync", "1000").await;
    let mut ledger = app.ledger(&app.admin);
    for i in 0..30 {
        let (committed_before, _, _) = store.log_counts().expect("SQLite file database");
        ledger
            .debit(debit_request(&account.id, "one", &format!("sync-{i}")))
            .await
            .expect("debit");
        let (committed, synced, _) = store.log_counts().expect("counts");
        assert!(committed > committed_before, "the debit committed");
        assert!(
            synced >= committed,
            "debit {i} was acknowledged before its commit was synced ({synced} of {committed})"
        );
    }
    // Concurrent debits share syncs: fewer syncs than commits.
    let (_, _, syncs_before) = store.log_counts().expect("counts");
    let (committed_before, _, _) = store.log_counts().expect("counts");
    let mut calls = Vec::new();
    for i in 0..64 {
        let mut ledger = app.ledger(&app.admin);
        let request = debit_request(&account.id, "one", &format!("sync-many-{i}"));
        calls.push(tokio::spawn(async move { ledger.debit(request).await }));
    }
    for call in calls {
        call.await.expect("task").expect("debit");
    }
    let (committed, synced, syncs) = store.log_counts().expect("counts");
    assert!(synced >= committed, "every acknowledged commit was synced");
    assert!(committed > committed_before);
    assert!(syncs - syncs_before <= committed - committed_before);
    app.stop().await;
}

#[tokio::test]
async fn sqlite_log_is_checkpointed_in_the_background() {
    let app = spawn_app().await;
    if app.db.is_postgres() {
        app.stop().await;
        return;
    }
    let path = app
        .db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .expect("path")
        .to_string();
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    app.publish_standard_card().await;
    let (account, _) = app.funded("wal", "1000").await;
    // Let a checkpoint take what start-up and seeding wrote.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = size();
    let mut ledger = app.ledger(&app.admin);
    for i in 0..200 {
        ledger
            .debit(debit_request(&account.id, "one", &format!("wal-{i}")))
            .await
            .expect("debit");
    }
    let mut grown = false;
    for _ in 0..40 {
        if size() > before {
            grown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        grown,
        "database file still {before} bytes: the log was not checkpointed"
    );
    app.stop().await;
}
