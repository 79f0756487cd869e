//! The real binary as a user runs it: secrets it refuses, the command line's flag positions,
//! negative numbers and `https://`, and PostgreSQL URLs with TLS modes.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use common::{process::free_port, *};

fn binary(dir: &Path) -> Command {
    let mut command = common::process::binary();
    command.env_remove("DATABASE_URL").current_dir(dir);
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A running `allot serve`, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `allot serve` with `args` and waits until its port answers.
async fn serve(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut command = binary(dir);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let served = Served(command.spawn().unwrap());
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("allot serve did not start");
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/allot.db?mode=rwc", dir.display())
}

#[test]
fn short_hs256_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", sqlite_url(dir.path()))
        .env("ALLOT_JWT_HS256_SECRET", "too-short-secret")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("at least 32"), "{}", text(&output));
}

#[cfg(unix)]
#[tokio::test]
async fn the_dev_secret_is_private_from_the_start() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let served = serve(
        dir.path(),
        port,
        &["--dev"],
        &[("DATABASE_URL", &sqlite_url(dir.path()))],
    )
    .await;
    let secret = dir.path().join(".allot-dev-secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let minted = binary(dir.path())
        .args(["token", "--role", "service", "--account", "*"])
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", text(&minted));
    drop(served);

    // A secret file others can read is refused, by `serve --dev` and by `token`.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = binary(dir.path())
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", sqlite_url(dir.path()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("readable or writable by others"),
        "{}",
        text(&output)
    );
    let output = binary(dir.path())
        .args(["token", "--role", "admin", "--account", "*"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("mode 644"), "{}", text(&output));
}

/// Client options before the command name, negative numbers reaching validation, and an
/// `https://` URL that never silently talks plaintext.
#[tokio::test]
async fn the_command_line_as_users_type_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _served = serve(
        dir.path(),
        port,
        &[],
        &[
            ("DATABASE_URL", &sqlite_url(dir.path())),
            ("ALLOT_JWT_HS256_SECRET", SECRET),
        ],
    )
    .await;
    let admin = token(&["admin"], &["*"]);
    let server = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| binary(dir.path()).args(args).output().unwrap();

    let created = run(&[
        "--server",
        &server,
        "--token",
        &admin,
        "--json",
        "accounts",
        "create",
        "--external-id",
        "cli",
    ]);
    assert!(created.status.success(), "{}", text(&created));
    let account: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let account_id = account["id"].as_str().unwrap().to_string();
    let wallet = run(&[
        "wallets",
        "create",
        "--account",
        &account_id,
        "--server",
        &server,
        "--token",
        &admin,
        "--json",
    ]);
    assert!(wallet.status.success(), "{}", text(&wallet));
    let wallet: serde_json::Value = serde_json::from_slice(&wallet.stdout).unwrap();
    let wallet_id = wallet["id"].as_str().unwrap();

    // A negative amount is a value: the server refuses it by its own rule.
    let negative = run(&[
        "--server", &server, "--token", &admin, "grants", "create", "--wallet", wallet_id,
        "--amount", "-100",
    ]);
    assert!(!negative.status.success());
    let said = text(&negative);
    assert!(said.contains("INVALID_AMOUNT"), "{said}");
    assert!(!said.contains("unexpected argument"), "{said}");

    // https:// means TLS: against this plaintext server it fails, saying so.
    let tls = run(&[
        "--server",
        &format!("https://127.0.0.1:{port}"),
        "--token",
        &admin,
        "accounts",
        "list",
    ]);
    assert!(!tls.status.success());
    assert!(text(&tls).contains("over TLS"), "{}", text(&tls));
    let bad_scheme = run(&[
        "--server",
        &format!("ftp://127.0.0.1:{port}"),
        "--token",
        &admin,
        "accounts",
        "list",
    ]);
    assert!(!bad_scheme.status.success());
    assert!(
        text(&bad_scheme).contains("http://"),
        "{}",
        text(&bad_scheme)
    );
}

/// PostgreSQL: `sslmode=require` and `verify-full` with the server's CA work; `verify-full`
/// against a host name the certificate does not name is refused at start.
#[tokio::test]
async fn postgres_tls_modes() {
    let db = TestDatabase::create().await;
    if !db.is_postgres() {
        return;
    }
    use sea_orm::ConnectionTrait;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let show = |name: &'static str| {
        let conn = conn.clone();
        async move {
            conn.query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SHOW {name}"),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<String>(0)
            .unwrap()
        }
    };
    let ssl = show("ssl").await;
    let cert = show("ssl_cert_file").await;
    conn.close().await.ok();
    if ssl != "on" || std::fs::read(&cert).is_err() {
        eprintln!("PostgreSQL without TLS (or its certificate unreadable): nothing to check");
        db.drop_database().await;
        return;
    }
    let with = |host: &str, query: &str| {
        let url = url::Url::parse(&db.url).unwrap();
        format!(
            "postgres://{}@{host}:{}{}?{query}",
            url.username(),
            url.port().unwrap_or(5432),
            url.path()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    for url in [
        with("127.0.0.1", "sslmode=require"),
        with(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={cert}"),
        ),
    ] {
        let output = binary(dir.path())
            .args(["migrate"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(output.status.success(), "{url}: {}", text(&output));
        let verified = binary(dir.path())
            .args(["verify"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(verified.status.success(), "{url}: {}", text(&verified));
    }
    let wrong_host = with(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={cert}"),
    );
    let output = binary(dir.path())
        .args(["migrate"])
        .env("DATABASE_URL", &wrong_host)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a certificate for localhost is not 127.0.0.1's"
    );
    // The Helm chart passes database TLS as libpq's variables (the URL is a Secret it cannot
    // edit): the driver takes them as defaults of a URL that names no sslmode.
    let plain_localhost = with("localhost", "");
    let by_env = binary(dir.path())
        .args(["migrate"])
        .env("DATABASE_URL", &plain_localhost)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &cert)
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{}", text(&by_env));
    let wrong_ca = binary(dir.path())
        .args(["migrate"])
        .env("DATABASE_URL", &plain_localhost)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", fixture("rsa_public.pem"))
        .output()
        .unwrap();
    assert!(
        !wrong_ca.status.success(),
        "PGSSLMODE=verify-full with a CA that did not sign the server's certificate connected"
    );
    db.drop_database().await;
}

/// `allot bench --history` builds a dated history through the API and times every report;
/// run again on the same SQLite file it measures that history instead of building another.
#[test]
fn bench_history_times_every_report_and_reuses_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("history.db").display()
    );
    let run = || {
        let output = binary(dir.path())
            .args(["bench", "--database-url", &url, "--history", "3000"])
            .args([
                "--history-days",
                "3",
                "--wallets",
                "20",
                "--report-calls",
                "1",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let built = run();
    assert_eq!(built["debits"], 3000, "{built:#}");
    assert_eq!(built["refunds"], 6, "{built:#}");
    assert_eq!(built["refused"], serde_json::json!({}), "{built:#}");
    assert_eq!(built["accounts"], 20);
    let reports = built["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 13, "{built:#}");
    for report in reports {
        let name = report["report"].as_str().unwrap();
        assert!(
            report["calls"] == 1 && report["p50_ms"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        // Every report has rows: three request types, users, two audited publishes.
        assert!(report["rows"].as_u64().unwrap() > 0, "{name}: {report}");
        if name.starts_with("GetPriceTransparency") {
            assert_eq!(report["rows"], 3, "one row per request type: {report}");
        }
    }

    let again = run();
    assert_eq!(again["debits"], serde_json::Value::Null, "{again:#}");
    assert_eq!(again["accounts"], 20);
    assert_eq!(again["reports"].as_array().unwrap().len(), 13);
}
