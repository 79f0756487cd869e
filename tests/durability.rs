//! Durability guards (issue 14, point 3), through the real binary:
//!
//! * SQLite: a failed `fdatasync` is final ("fsyncgate"). A shim loaded with `LD_PRELOAD`
//!   makes every `fsync`/`fdatasync` of the server fail with EIO while a trigger file exists.
//!   From the first failure on, no call is acknowledged (UNAVAILABLE), health turns
//!   NOT_SERVING, and both stay so after the disk "recovers" (a later sync that succeeds
//!   proves nothing about the pages the failed one dropped); a restart serves again, and the
//!   request that was in doubt is applied exactly once when retried.
//! * PostgreSQL: a server whose commits return before their WAL is flushed
//!   (`synchronous_commit = off`) is named in a warning at start.

mod common;

use std::time::Duration;

use common::{
    process::{ServerProcess, build_shim, health, health_becomes},
    *,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// `fsync` and `fdatasync` that fail with EIO while the file named by
/// `ALLOT_TEST_FAIL_SYNC_WHEN` exists, and call the real ones otherwise.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("ALLOT_TEST_FAIL_SYNC_WHEN");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
"#;

#[tokio::test]
async fn a_failed_log_sync_stops_acknowledgements_until_restart() {
    let app = spawn_app().await;
    if app.db.is_postgres() {
        eprintln!("PostgreSQL syncs its own WAL (see the synchronous_commit test); SQLite only");
        app.stop().await;
        return;
    }
    let (account, _) = app.funded("synced", "1000").await;
    app.publish_standard_card().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shim = build_shim(dir.path(), "failsync", SHIM);
    let trigger = dir.path().join("fail-syncs");
    let shim_env = shim.to_str().expect("utf-8 path").to_string();
    let trigger_env = trigger.to_str().expect("utf-8 path").to_string();
    let server = ServerProcess::try_start_with_env(
        "failsync",
        &app.db.url,
        &[],
        &[
            ("LD_PRELOAD", shim_env.as_str()),
            ("ALLOT_TEST_FAIL_SYNC_WHEN", trigger_env.as_str()),
        ],
        None,
        dir.path(),
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"));

    // The shim is loaded and harmless while the trigger is absent.
    let before = uuid();
    server
        .ledger()
        .debit(debit_request(&account.id, "one", &before))
        .await
        .expect("a debit while syncs work");

    // The disk fails: the debit in flight is not acknowledged.
    std::fs::write(&trigger, b"").expect("trigger");
    let doubtful = uuid();
    let status = server
        .ledger()
        .debit(debit_request(&account.id, "one", &doubtful))
        .await
        .expect_err("a debit whose commit cannot be synced is not acknowledged");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        health_becomes(
            &server.channel,
            ServingStatus::NotServing,
            Duration::from_secs(5)
        )
        .await,
        "health turns NOT_SERVING after a failed sync"
    );

    // The disk "recovers": nothing changes, a successful sync now proves nothing.
    std::fs::remove_file(&trigger).expect("trigger off");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = uuid();
    let status = server
        .ledger()
        .debit(debit_request(&account.id, "one", &later))
        .await
        .expect_err("no acknowledgement after a failed sync, even once syncs work again");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("restart"), "{status:?}");
    assert_eq!(
        health(&server.channel).await,
        ServingStatus::NotServing as i32,
        "health stays NOT_SERVING until a restart"
    );
    let log = server.log_text();
    assert!(log.contains("syncing the SQLite WAL failed"), "{log}");

    // A restart (after a crash: SIGKILL) recovers from what the disk holds.
    drop(server);
    let server = ServerProcess::start("restarted", &app.db.url, &[], dir.path()).await;
    for id in [&doubtful, &later, &doubtful] {
        server
            .ledger()
            .debit(debit_request(&account.id, "one", id))
            .await
            .expect("a retry after the restart");
    }
    let mut applied: Vec<String> = app
        .all_transactions(&account.id)
        .await
        .into_iter()
        .filter(|t| kind(t) == allot::proto::TransactionKind::Debit)
        .map(|t| t.request_id)
        .collect();
    applied.sort();
    let mut expected = vec![before, doubtful, later];
    expected.sort();
    assert_eq!(applied, expected, "each request applied exactly once");
    assert_eq!(app.balance(&account.id).await.posted, "997");
    drop(server);
    app.stop().await;
}

#[tokio::test]
async fn a_database_that_acknowledges_unflushed_commits_is_named_at_start() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    if !app.db.is_postgres() {
        // SQLite: allot syncs its log itself; nothing to warn about.
        let server = ServerProcess::start("sqlite", &app.db.url, &[], dir.path()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = server.log_text();
        assert!(!log.contains("synchronous_commit"), "{log}");
        drop(server);
        app.stop().await;
        return;
    }
    // The connection's own setting, as a role or database setting would give it.
    let separator = if app.db.url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{separator}options=-c%20synchronous_commit%3Doff",
        app.db.url
    );
    let server = ServerProcess::start("async-commit", &url, &[], dir.path()).await;
    let log = server.log_text();
    assert!(
        log.contains("synchronous_commit = off") && log.contains("WARN"),
        "{log}"
    );
    // The default setting is not warned about.
    let plain = ServerProcess::start("sync-commit", &app.db.url, &[], dir.path()).await;
    let log = plain.log_text();
    assert!(!log.contains("synchronous_commit"), "{log}");
    drop((server, plain));
    app.stop().await;
}
