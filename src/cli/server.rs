//! `allot serve`, `allot migrate`, `allot token`, `allot verify`.

use std::{path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use rand::Rng;

use super::duration::parse_duration;

use crate::{
    auth::{AuthConfig, Authenticator, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, mint_hs256},
    clock::Clock,
    server::{self, Settings},
    store::{DEFAULT_DATABASE_URL, Store, verify},
};

/// Where `serve --dev` keeps its generated secret, so tokens survive restarts and
/// `allot token` can mint more.
pub const DEV_SECRET_FILE: &str = ".allot-dev-secret";

#[derive(Debug, Args, Clone)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE?mode=rwc` or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Args, Clone)]
pub struct JwtArgs {
    /// HS256 shared secret.
    #[arg(long, env = "ALLOT_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// PEM public keys (RS256 / ES256 / EdDSA by key type), comma-separated paths.
    #[arg(long, env = "ALLOT_JWT_PUBLIC_KEYS", value_delimiter = ',')]
    pub jwt_public_keys: Vec<PathBuf>,
    /// A JWKS file; tokens pick their key by `kid`.
    #[arg(long, env = "ALLOT_JWT_JWKS")]
    pub jwt_jwks: Option<PathBuf>,
    /// Expected `iss` claim.
    #[arg(long, env = "ALLOT_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// Expected `aud` claim.
    #[arg(long, env = "ALLOT_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ALLOT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Development mode: sign tokens with a generated secret (kept in .allot-dev-secret) and
    /// print an admin token.
    #[arg(long)]
    pub dev: bool,
    /// Log JSON lines instead of human-readable text.
    #[arg(long, env = "ALLOT_LOG_JSON")]
    pub json_logs: bool,
    /// Longest TTL a Reserve may ask for (holds default to 15 minutes).
    #[arg(long, env = "ALLOT_MAX_HOLD_TTL", default_value = "24h", value_parser = parse_duration)]
    pub max_hold_ttl: Duration,
    /// How often to record what fell due (grant and hold expiry, schedule periods).
    #[arg(long, env = "ALLOT_SWEEP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// How long a request_id is remembered (replayed, or refused with different
    /// parameters); at least 1h.
    #[arg(long, env = "ALLOT_IDEMPOTENCY_RETENTION", default_value = "30d", value_parser = parse_retention)]
    pub idempotency_retention: Duration,
    /// How long balance events are kept (WatchBalance resumes from them); at least 1h.
    #[arg(long, env = "ALLOT_EVENT_RETENTION", default_value = "30d", value_parser = parse_event_retention)]
    pub event_retention: Duration,
    /// Let webhook endpoints be on loopback, private and link-local addresses (refused by
    /// default: SSRF).
    #[arg(long, env = "ALLOT_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// The longest a webhook delivery attempt may take, connecting included.
    #[arg(long, env = "ALLOT_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// The delays between a webhook delivery's attempts, comma-separated; after the last
    /// the delivery is dead (dead-lettered). Each delay is lengthened by up to a fifth at
    /// random.
    #[arg(long, env = "ALLOT_WEBHOOK_RETRY_SCHEDULE",
          default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = parse_schedule)]
    pub webhook_retry_schedule: Schedule,
    /// Serve Prometheus metrics over HTTP on this address (off by default).
    #[arg(long, env = "ALLOT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Also serve `grpc.health.v1` alone, in plaintext, on this address (for Kubernetes gRPC
    /// probes, which cannot speak TLS).
    #[arg(long, env = "ALLOT_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS (re-read when the file changes).
    #[arg(long, env = "ALLOT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (re-read when the file changes).
    #[arg(long, env = "ALLOT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates issued by them (mTLS).
    #[arg(long, env = "ALLOT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Pending migrations at start: `auto` applies them, `check` refuses to start (when a
    /// deployment runs `allot migrate` first).
    #[arg(long, env = "ALLOT_MIGRATE", value_enum, default_value = "auto")]
    pub migrate: server::Migrate,
    /// How long in-flight calls may finish after SIGTERM (health turns NOT_SERVING at once).
    #[arg(long, env = "ALLOT_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Most access-log lines (one per call: method, code, latency, request_id, caller) a
    /// second; 0 turns the access log off.
    #[arg(long, env = "ALLOT_ACCESS_LOG_RATE", default_value_t = 100)]
    pub access_log_rate: u32,
    /// Most calls served at once over all connections (health checks not counted); more are
    /// refused at once with RESOURCE_EXHAUSTED, reason OVERLOADED, and a retry delay.
    #[arg(long, env = "ALLOT_MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// Longest a ledger operation may wait for its batch: while operations wait longer, new
    /// ones are refused (OVERLOADED) instead of queueing.
    #[arg(long, env = "ALLOT_MAX_QUEUE_WAIT", default_value = "50ms", value_parser = parse_duration)]
    pub max_queue_wait: Duration,
    /// Most calls one connection may have open at once (HTTP/2 max_concurrent_streams).
    #[arg(long, env = "ALLOT_MAX_STREAMS_PER_CONNECTION", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams_per_connection: u32,
    /// For tests: every ledger batch also reads what it took from the wallet cache and
    /// asserts the two agree (slower).
    #[arg(long, hide = true)]
    pub check_wallet_cache: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Role(s): service, account_manager, procurement, operator, admin.
    #[arg(long = "role", required = true, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Account id(s) in scope, or `*` for all.
    #[arg(long = "account", required = true, value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// The token's subject (who is calling).
    #[arg(long, default_value = "cli")]
    pub sub: String,
    /// Lifetime, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    at_least_an_hour(text, "idempotency records")
}

/// Delays between webhook attempts.
#[derive(Debug, Clone)]
pub struct Schedule(pub Vec<Duration>);

fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let delays = text
        .split(',')
        .map(|part| parse_duration(part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if delays.len() > 20 {
        return Err("at most 20 delays".into());
    }
    Ok(Schedule(delays))
}

fn parse_event_retention(text: &str) -> Result<Duration, String> {
    at_least_an_hour(text, "balance events")
}

fn at_least_an_hour(text: &str, what: &str) -> Result<Duration, String> {
    let retention = parse_duration(text)?;
    if retention < Duration::from_secs(3600) {
        return Err(format!("`{text}`: {what} must be kept at least 1h"));
    }
    Ok(retention)
}

pub fn init_logging(json: bool) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout is for command output (the dev token, client results).
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        let _ = builder.json().with_current_span(false).try_init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let _ = builder.with_ansi(ansi).try_init();
    }
}

fn auth_config(jwt: &JwtArgs, hs256_secret: Option<String>) -> AuthConfig {
    AuthConfig {
        hs256_secret,
        public_key_files: jwt.jwt_public_keys.clone(),
        jwks_file: jwt.jwt_jwks.clone(),
        issuer: jwt.jwt_issuer.clone(),
        audience: jwt.jwt_audience.clone(),
    }
}

/// Reads the dev secret, creating it on first use: atomically, with mode 0600 from the start
/// (never readable by others, not even for a moment), and never overwriting a file.
fn dev_secret() -> anyhow::Result<String> {
    let path = std::path::Path::new(DEV_SECRET_FILE);
    loop {
        if let Some(secret) = read_dev_secret(path)? {
            return Ok(secret);
        }
        let bytes: [u8; 32] = rand::rng().random();
        let secret = hex::encode(bytes);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(secret.as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write {DEV_SECRET_FILE}"))?;
                return Ok(secret);
            }
            // Another process created it meanwhile: read that one.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create {DEV_SECRET_FILE}"));
            }
        }
    }
}

/// The dev secret in `path`, if the file exists; refuses one that others could have read or
/// written (not a regular file, not owned by this user, or group/world permissions).
fn read_dev_secret(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {DEV_SECRET_FILE}")),
    };
    if !metadata.file_type().is_file() {
        bail!("{DEV_SECRET_FILE} is not a regular file; remove it and start again");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if metadata.uid() != rustix::process::getuid().as_raw() {
            bail!(
                "{DEV_SECRET_FILE} belongs to another user (uid {}); remove it and start again",
                metadata.uid()
            );
        }
        if metadata.mode() & 0o077 != 0 {
            bail!(
                "{DEV_SECRET_FILE} is readable or writable by others (mode {:o}); anyone who \
                 read it can mint tokens: remove it and start again (it is re-created with mode 600)",
                metadata.mode() & 0o777
            );
        }
    }
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {DEV_SECRET_FILE}"))?
        .trim()
        .to_string();
    if secret.len() < crate::auth::MIN_HS256_SECRET_BYTES {
        bail!("{DEV_SECRET_FILE} holds no usable secret; remove it and start again");
    }
    Ok(Some(secret))
}

fn claims(
    sub: &str,
    roles: Vec<String>,
    accounts: Vec<String>,
    ttl: Duration,
    jwt: &JwtArgs,
) -> Claims {
    let exp = (chrono::Utc::now().timestamp().max(0) as u64).saturating_add(ttl.as_secs());
    Claims {
        sub: sub.to_string(),
        roles,
        accounts,
        iss: jwt.jwt_issuer.clone(),
        aud: jwt.jwt_audience.clone(),
        exp,
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init(args.json_logs)?;
    let mut secret = args.jwt.jwt_hs256_secret.clone();
    if args.dev && secret.is_none() {
        secret = Some(dev_secret()?);
    }
    let auth = Authenticator::from_config(&auth_config(&args.jwt, secret.clone()))?;
    if !auth.has_keys() {
        bail!(
            "no token keys configured: set ALLOT_JWT_HS256_SECRET, ALLOT_JWT_PUBLIC_KEYS or \
             ALLOT_JWT_JWKS (or their --jwt-… flags), or run `allot serve --dev` for a local \
             development server"
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::ServerTls::load(crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        })?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let health_listener = match &args.health_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--health-listen)"))?,
        ),
        None => None,
    };
    if let Some(addr) = args.metrics_listen {
        crate::telemetry::metrics::install(addr)?;
        tracing::info!(%addr, "metrics (Prometheus text)");
    }
    if args.dev {
        let secret = secret.unwrap_or_default();
        let admin = claims(
            "dev-admin",
            vec!["admin".into()],
            vec!["*".into()],
            Duration::from_secs(30 * 86_400),
            &args.jwt,
        );
        let token = mint_hs256(secret.as_bytes(), &admin)?;
        let addr = listener.local_addr()?;
        println!("allot dev mode — tokens are signed with the secret in {DEV_SECRET_FILE}");
        println!("admin token (30 days; mint others with `allot token --role … --account …`):\n");
        println!("  export ALLOT_TOKEN={token}\n");
        if tls.is_some() {
            println!(
                "then: allot accounts list --server https://{addr} (--tls-ca FILE for a private CA)"
            );
        } else {
            println!("then: allot accounts list --server http://{addr}");
            println!(
                "  or: grpcurl -plaintext -H \"authorization: Bearer $ALLOT_TOKEN\" {addr} list\n"
            );
        }
    }
    let settings = Settings {
        check_wallet_cache: args.check_wallet_cache,
        database_url: args.database.database_url,
        auth,
        clock: Clock::system(),
        shutdown_grace: args.shutdown_grace,
        exposure: server::Exposure {
            tls,
            health_listener,
            access_log_per_second: args.access_log_rate,
            migrate: args.migrate,
        },
        limits: crate::api::Limits {
            max_hold_ttl: args.max_hold_ttl,
            ..Default::default()
        },
        admission: crate::admission::Limits {
            max_in_flight: args.max_in_flight as usize,
            max_queue_wait: args.max_queue_wait,
            max_streams_per_connection: args.max_streams_per_connection,
        },
        sweep_interval: args.sweep_interval,
        retention: crate::store::sweeper::Retention {
            idempotency: args.idempotency_retention,
            events: args.event_retention,
        },
        webhooks: crate::webhooks::Settings {
            allow_private: args.webhook_allow_private,
            timeout: args.webhook_timeout,
            retries: args.webhook_retry_schedule.0,
            ..Default::default()
        },
        on_ready: None,
    };
    server::run(listener, settings, server::shutdown_signal()).await
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    init_logging(false);
    let store = server::open_store(&args.database.database_url, Clock::system()).await?;
    store.close().await;
    println!(
        "migrations applied to {}",
        server::redact_url(&args.database.database_url)
    );
    Ok(())
}

/// `allot verify`: walks every wallet's hash chain and checks its stored balances against
/// its entries (read only; does not migrate). Prints a summary, or each mismatch and their
/// count and fails.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let shown = server::redact_url(url);
    if url.starts_with("sqlite:") {
        // Connecting would create a missing file (`mode=rwc`): say so instead.
        let options = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL {shown}"))?;
        let path = options.get_filename();
        if !url.contains(":memory:") && !path.exists() {
            bail!("database file {} does not exist ({shown})", path.display());
        }
    }
    let store = Store::connect(url, Clock::system())
        .await
        .with_context(|| format!("cannot open database {shown}"))?;
    let result = verify_store(&store).await;
    store.close().await;
    let report = result.with_context(|| format!("cannot verify {shown}"))?;
    let summary = format!(
        "verified {} wallet{}, {} entr{}",
        report.wallets,
        if report.wallets == 1 { "" } else { "s" },
        report.entries,
        if report.entries == 1 { "y" } else { "ies" },
    );
    if report.is_ok() {
        println!("{summary}: OK");
        return Ok(());
    }
    for mismatch in &report.mismatches {
        println!("{mismatch}");
    }
    let count = report.mismatches.len();
    let mismatches = format!("{count} mismatch{}", if count == 1 { "" } else { "es" });
    println!("{summary}: {mismatches}");
    bail!("the ledger does not verify: {mismatches}")
}

async fn verify_store(store: &Store) -> anyhow::Result<verify::Report> {
    if let Some(problem) = verify::schema_problem(store.connection()).await? {
        bail!(problem);
    }
    Ok(verify::verify_snapshot(store.connection()).await?)
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = match &args.jwt.jwt_hs256_secret {
        Some(secret) => secret.clone(),
        None => read_dev_secret(std::path::Path::new(DEV_SECRET_FILE))?.ok_or_else(|| {
            anyhow::anyhow!(
                "no HS256 secret: set ALLOT_JWT_HS256_SECRET (or --jwt-hs256-secret), or run \
                 `allot serve --dev` here first to create {DEV_SECRET_FILE}"
            )
        })?,
    };
    for role in &args.roles {
        role.parse::<crate::auth::Role>().map_err(|_| {
            anyhow::anyhow!(
                "unknown role `{role}` (service, account_manager, procurement, operator, admin)"
            )
        })?;
    }
    let claims = claims(
        &args.sub,
        args.roles.clone(),
        args.accounts.clone(),
        args.ttl,
        &args.jwt,
    );
    println!("{}", mint_hs256(secret.as_bytes(), &claims)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_duration_of_at_least_an_hour() {
        assert_eq!(parse_retention("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_retention("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_retention("59m").unwrap_err().contains("at least 1h"));
        assert!(parse_retention("soon").is_err());
    }
}
