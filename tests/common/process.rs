//! Real `allot serve` processes (replicas) on one database: started from the built binary on
//! a free port, ready once their health check answers SERVING, killed when dropped (their log
//! tail is printed when the test is failing).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use allot::proto::{
    account_service_client::AccountServiceClient, grant_service_client::GrantServiceClient,
    ledger_service_client::LedgerServiceClient, rate_card_service_client::RateCardServiceClient,
};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{Bearer, SECRET, bearer, token};

/// How long a process may take to migrate and answer.
const STARTUP: Duration = Duration::from_secs(60);

/// The `allot` binary with the caller's `ALLOT_*` settings removed.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_allot"));
    for var in [
        "ALLOT_JWT_HS256_SECRET",
        "ALLOT_JWT_PUBLIC_KEYS",
        "ALLOT_JWT_JWKS",
        "ALLOT_JWT_ISSUER",
        "ALLOT_JWT_AUDIENCE",
        "ALLOT_LISTEN",
        "ALLOT_TOKEN",
        "ALLOT_SERVER",
        "ALLOT_LOG_JSON",
        "ALLOT_MAX_HOLD_TTL",
        "ALLOT_SWEEP_INTERVAL",
        "ALLOT_IDEMPOTENCY_RETENTION",
        "ALLOT_METRICS_LISTEN",
        "ALLOT_HEALTH_LISTEN",
        "ALLOT_TLS_CERT",
        "ALLOT_TLS_KEY",
        "ALLOT_TLS_CLIENT_CA",
        "ALLOT_TLS_CA",
        "ALLOT_TLS_CLIENT_CERT",
        "ALLOT_TLS_CLIENT_KEY",
        "ALLOT_MIGRATE",
        "ALLOT_SHUTDOWN_GRACE",
        "ALLOT_ACCESS_LOG_RATE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ] {
        command.env_remove(var);
    }
    command
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// One running `allot serve`.
pub struct ServerProcess {
    pub name: String,
    pub addr: String,
    pub channel: Channel,
    /// Token for every role on every account.
    pub admin: String,
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `allot serve` on `database_url` with `extra` flags; its stderr goes to a file in
    /// `log_dir`. Returns once the process answers its health check with SERVING; panics with
    /// the process's log if it does not.
    pub async fn start(name: &str, database_url: &str, extra: &[&str], log_dir: &Path) -> Self {
        Self::try_start(name, database_url, extra, log_dir)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// As `start`, but a process that exits or does not serve is an `Err` with its log. Only a
    /// port taken before the process could bind it is tried again (on another port).
    pub async fn try_start(
        name: &str,
        database_url: &str,
        extra: &[&str],
        log_dir: &Path,
    ) -> Result<Self, String> {
        Self::try_start_with_env(name, database_url, extra, &[], None, log_dir).await
    }

    /// As `try_start`, with `env` set for the process (after the defaults: `RUST_LOG` can be
    /// raised).
    pub async fn try_start_with_env(
        name: &str,
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        tls: Option<ClientTlsConfig>,
        log_dir: &Path,
    ) -> Result<Self, String> {
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            let log = log_dir.join(format!("{name}-{attempt}.log"));
            let stderr = File::create(&log).expect("create log file");
            let mut child = binary()
                .current_dir(log_dir)
                .args(["serve", "--check-wallet-cache", "--listen", &addr])
                .args(extra)
                .env("DATABASE_URL", database_url)
                .env("ALLOT_JWT_HS256_SECRET", SECRET)
                .env("RUST_LOG", "warn")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .spawn()
                .expect("spawn allot serve");
            match wait_ready(&mut child, &addr, tls.clone()).await {
                Ok(channel) => {
                    return Ok(ServerProcess {
                        name: name.to_string(),
                        addr,
                        channel,
                        admin: token(&["admin"], &["*"]),
                        child,
                        log,
                    });
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = tail(&log, 40);
                    let port_taken = text.contains("in use") || text.contains("os error 98");
                    failures.push(format!("{addr}: {why}\n{text}"));
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(format!("{name} did not start:\n{}", failures.join("\n")))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `None` while the process runs; its exit status once it has ended.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ledger(&self) -> LedgerServiceClient<InterceptedService<Channel, Bearer>> {
        LedgerServiceClient::with_interceptor(self.channel.clone(), bearer(&self.admin))
    }

    pub fn accounts(&self) -> AccountServiceClient<InterceptedService<Channel, Bearer>> {
        AccountServiceClient::with_interceptor(self.channel.clone(), bearer(&self.admin))
    }

    pub fn grants(&self) -> GrantServiceClient<InterceptedService<Channel, Bearer>> {
        GrantServiceClient::with_interceptor(self.channel.clone(), bearer(&self.admin))
    }

    pub fn rates(&self) -> RateCardServiceClient<InterceptedService<Channel, Bearer>> {
        RateCardServiceClient::with_interceptor(self.channel.clone(), bearer(&self.admin))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({}, {}) ----\n{}",
                self.name,
                self.addr,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

/// Waits until the process at `addr` answers its health check SERVING; the error says why not
/// (it exited, or what the last attempt saw).
pub async fn wait_ready(
    child: &mut Child,
    addr: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("TLS config");
    }
    let deadline = Instant::now() + STARTUP;
    let mut last = String::from("never connected");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status} ({last})"));
        }
        if Instant::now() > deadline {
            return Err(format!("not SERVING within {STARTUP:?} ({last})"));
        }
        match endpoint.connect().await {
            Ok(channel) => {
                let mut health = HealthClient::new(channel.clone());
                let check = health.check(HealthCheckRequest {
                    service: String::new(),
                });
                match tokio::time::timeout(Duration::from_secs(5), check).await {
                    Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                        return Ok(channel);
                    }
                    Ok(Ok(answer)) => last = format!("health {:?}", answer.get_ref().status),
                    Ok(Err(status)) => last = format!("health check: {status:?}"),
                    Err(_) => last = "health check timed out".to_string(),
                }
            }
            Err(err) => last = format!("connect: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The last `lines` lines of a log file.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

/// The overall health status the server reports.
pub async fn health(channel: &Channel) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Waits up to `within` for health to report `status`.
pub async fn health_becomes(channel: &Channel, status: ServingStatus, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if health(channel).await == status as i32 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the `LD_PRELOAD` library `<name>.so` from C `source` into `dir` with the system C
/// compiler (fault-injection shims of the tests).
pub fn build_shim(dir: &Path, name: &str, source: &str) -> PathBuf {
    let code = dir.join(format!("{name}.c"));
    let library = dir.join(format!("{name}.so"));
    std::fs::write(&code, source).expect("write shim source");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&code)
        .args(["-ldl", "-lpthread"])
        .output()
        .expect("run cc (a C compiler is needed for this test)");
    assert!(
        output.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    library
}
