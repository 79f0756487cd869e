//! Wiring: open the store, run migrations, start the ledger batcher, serve every service on a
//! listener until `shutdown` resolves. Shutdown, in this order: health flips to NOT_SERVING
//! and the listener stops accepting (the `draining` token); in-flight requests get
//! [`Settings::shutdown_grace`]; then the background tasks stop (the `stopping` token, a child
//! token per task, waited for by a `TaskTracker`); the batcher applies what is queued; the
//! store closes; then `run` returns.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Server;

use crate::{
    api::Ctx,
    auth::Authenticator,
    clock::Clock,
    health::{Health, Statuses},
    proto::{
        self, account_service_server::AccountServiceServer,
        grant_service_server::GrantServiceServer, ledger_service_server::LedgerServiceServer,
        rate_card_service_server::RateCardServiceServer,
        report_service_server::ReportServiceServer, webhook_service_server::WebhookServiceServer,
    },
    store::{Store, batcher::Ledger, checkpointer, sweeper},
};

/// Largest request accepted (a rate card with many rates is the biggest legitimate one).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Fully-qualified names of allot's services, as health reports them.
pub const SERVICES: [&str; 6] = [
    "allot.v1.AccountService",
    "allot.v1.GrantService",
    "allot.v1.RateCardService",
    "allot.v1.LedgerService",
    "allot.v1.ReportService",
    "allot.v1.WebhookService",
];

pub struct Settings {
    pub database_url: String,
    /// Tests: assert on every ledger batch that the wallet cache agrees with the database.
    pub check_wallet_cache: bool,
    pub limits: crate::api::Limits,
    /// How often this replica looks for wallets with something due (expiry, schedules).
    pub sweep_interval: Duration,
    /// How long idempotency records and events are kept (30 days each by default).
    pub retention: crate::store::sweeper::Retention,
    /// Receives the store and ledger once serving starts (tests drive the sweeper with it).
    pub on_ready: Option<tokio::sync::oneshot::Sender<Handles>>,
    pub auth: Authenticator,
    pub clock: Clock,
    /// How long in-flight requests may take to finish after shutdown begins; long-lived
    /// streams (health `Watch`) are cut after it.
    pub shutdown_grace: Duration,
    /// TLS, the health port, the access log, migrations at start.
    pub exposure: Exposure,
    /// How much is admitted before calls are refused as OVERLOADED (`admission`).
    pub admission: crate::admission::Limits,
    /// How webhooks are delivered (`serve --webhook-*`).
    pub webhooks: crate::webhooks::Settings,
}

/// How the service is reached and watched. The default: plaintext, no separate health port,
/// no access log, migrations applied at start.
#[derive(Default)]
pub struct Exposure {
    /// TLS on the gRPC port.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// A plaintext port serving only `grpc.health.v1` (Kubernetes' gRPC probes cannot speak
    /// TLS).
    pub health_listener: Option<TcpListener>,
    /// Most access-log lines a second (0: none).
    pub access_log_per_second: u32,
    /// Whether to apply pending migrations at start or refuse to start.
    pub migrate: Migrate,
}

/// What `serve` does with migrations the database lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Migrate {
    /// Apply them (under a lock: replicas starting together take turns).
    #[default]
    Auto,
    /// Refuse to start until they are applied (`allot migrate`, e.g. a deployment's Job).
    Check,
}

/// The running service's store and ledger.
#[derive(Clone)]
pub struct Handles {
    pub store: Store,
    pub ledger: Ledger,
    pub retention: crate::store::sweeper::Retention,
}

impl Handles {
    /// Records everything due now and prunes idempotency records and events past their
    /// retention (what the background sweeper does).
    pub async fn sweep(&self) -> crate::error::Result<usize> {
        let swept = crate::store::sweeper::sweep_once(&self.store, &self.ledger).await?;
        crate::store::sweeper::prune(&self.store, self.retention).await?;
        Ok(swept)
    }
}

/// Opens the database and migrates it.
pub async fn open_store(database_url: &str, clock: Clock) -> anyhow::Result<Store> {
    open_store_with(database_url, clock, Migrate::Auto).await
}

/// Opens the database and applies its pending migrations, or with [`Migrate::Check`] fails
/// if there are any.
pub async fn open_store_with(
    database_url: &str,
    clock: Clock,
    migrate: Migrate,
) -> anyhow::Result<Store> {
    let store = Store::connect(database_url, clock).await.map_err(|err| {
        anyhow::anyhow!("cannot open database {}: {err}", redact_url(database_url))
    })?;
    match migrate {
        Migrate::Auto => store.migrate().await?,
        // Reads only: migrations this binary knows that are not applied (newer ones it does
        // not know are fine: a rolling upgrade or a rollback runs older pods on them).
        Migrate::Check => {
            if let Some(problem) = crate::store::verify::schema_problem(store.connection()).await? {
                store.close().await;
                anyhow::bail!("{problem} (this server runs with --migrate check)");
            }
        }
    }
    Ok(store)
}

/// Hides the secrets of a database URL for logs and messages: the password in the user
/// part and the `password` / `sslpassword` query parameters. A URL that does not parse is
/// shown as its scheme only (it could hold a secret anywhere).
pub fn redact_url(text: &str) -> String {
    const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];
    let Ok(mut url) = url::Url::parse(text) else {
        return match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(unparsable URL)"),
            None => "(unparsable URL)".to_string(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url
        .query_pairs()
        .any(|(key, _)| SECRET_PARAMS.contains(&key.as_ref()))
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if SECRET_PARAMS.contains(&key.as_ref()) {
                    "***".to_string()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Serves until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let exposure = settings.exposure;
    let store = open_store_with(&settings.database_url, settings.clock, exposure.migrate)
        .await?
        .checking_cache(settings.check_wallet_cache);
    for warning in store.durability_warnings().await? {
        tracing::warn!("{warning}");
    }
    let health = Health::default();
    let admission = settings.admission;
    let (ledger, ledger_worker) = Ledger::start(
        store.clone(),
        crate::api::outcome::encode,
        admission.max_queue_wait,
    );
    // Shutdown begins: health NOT_SERVING, the listener stops accepting, the grace period
    // starts, and balance watches end (UNAVAILABLE, naming where to resume).
    let draining = CancellationToken::new();
    let ctx = Ctx {
        store: store.clone(),
        ledger: ledger.clone(),
        auth: Arc::new(settings.auth),
        limits: settings.limits,
        draining: draining.clone(),
        webhooks: Arc::new(settings.webhooks),
    };
    if let Some(ready) = settings.on_ready {
        let _ = ready.send(Handles {
            store: store.clone(),
            ledger: ledger.clone(),
            retention: settings.retention,
        });
    }
    // In-flight requests finished (or the grace period is over): background tasks stop. Also
    // when `run` ends early or is dropped, so no task outlives it.
    let stopping = CancellationToken::new();
    let _stop_tasks_on_exit = stopping.clone().drop_guard();
    let tasks = TaskTracker::new();
    {
        let (store, ledger, health_, interval, retention) = (
            store.clone(),
            ledger.clone(),
            health.clone(),
            settings.sweep_interval,
            settings.retention,
        );
        tasks.spawn(crate::health::supervise(
            sweeper::TASK,
            health.clone(),
            stopping.child_token(),
            move |stop| {
                sweeper::run(
                    store.clone(),
                    ledger.clone(),
                    health_.clone(),
                    interval,
                    retention,
                    stop,
                )
            },
        ));
    }
    {
        let (store, health_, webhooks) = (store.clone(), health.clone(), ctx.webhooks.clone());
        tasks.spawn(crate::health::supervise(
            crate::webhooks::TASK,
            health.clone(),
            stopping.child_token(),
            move |stop| {
                crate::webhooks::run(store.clone(), health_.clone(), webhooks.clone(), stop)
            },
        ));
    }
    {
        let (store, health_) = (store.clone(), health.clone());
        tasks.spawn(crate::health::supervise(
            checkpointer::TASK,
            health.clone(),
            stopping.child_token(),
            move |stop| checkpointer::run(store.clone(), health_.clone(), stop),
        ));
    }

    {
        let (store, ledger, health) = (store.clone(), ledger.clone(), health.clone());
        tasks.spawn(crate::telemetry::metrics::sample(
            store,
            ledger,
            health,
            stopping.child_token(),
        ));
    }

    if ctx.auth.has_key_files() {
        tasks.spawn(reload_keys(ctx.auth.clone(), stopping.child_token()));
    }

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let services: Vec<&'static str> = SERVICES.into_iter().chain([""]).collect();
    let statuses = Statuses::new(reporter, &services).await;
    tasks.spawn(crate::health::monitor(
        store.clone(),
        health.clone(),
        statuses.clone(),
        stopping.child_token(),
    ));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.ErrorInfo & co., so reflection clients can decode error details.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let addr = listener.local_addr()?;
    if let Some(health_listener) = exposure.health_listener {
        let health_addr = health_listener.local_addr()?;
        let (health_service, stop) = (health_service.clone(), stopping.clone());
        tasks.spawn(async move {
            // Answers NOT_SERVING while the main port drains; stops with the background tasks.
            let served = Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(health_listener),
                    stop.cancelled_owned(),
                )
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the health port failed");
            }
        });
        tracing::info!(addr = %health_addr, "health port (plaintext, grpc.health.v1 only)");
    }
    tracing::info!(
        %addr,
        tls = exposure.tls.is_some(),
        database = %redact_url(&settings.database_url),
        "allot serving"
    );

    let graceful = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
            tracing::info!("shutting down: health NOT_SERVING, finishing in-flight requests");
            statuses.drain().await;
        }
    };

    let router = Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // One client's share of the calls in flight (`admission`).
        .max_concurrent_streams(admission.max_streams_per_connection)
        // Metrics, spans and the access log of every call, refused ones included.
        .layer(crate::telemetry::rpc::TelemetryLayer::new(
            exposure.access_log_per_second,
        ))
        // Overload: refused before authentication, the cheapest answer there is.
        .layer(crate::admission::InFlightLayer::new(
            admission.max_in_flight,
            ledger.clone(),
        ))
        // Authentication and roles for every method, before any handler (`api::access`).
        .layer(crate::api::access::AccessLayer::new(ctx.auth.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AccountServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            GrantServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            RateCardServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            LedgerServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ReportServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            WebhookServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    let serve: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match exposure.tls {
            Some(tls) => {
                Box::pin(router.serve_with_incoming_shutdown(
                    tls.incoming(listener, draining.clone()),
                    graceful,
                ))
            }
            // TCP_NODELAY: a reply's last HTTP/2 frame must not wait ~40 ms for a delayed ACK
            // (tonic's builder setting does not apply to a listener we pass in).
            None => Box::pin(router.serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                graceful,
            )),
        };
    let grace = settings.shutdown_grace;
    let deadline = async move {
        draining.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = serve => result?,
        _ = deadline => tracing::warn!(?grace, "requests still open after the grace period; closing them"),
    }

    // Handlers have returned (or the grace period is over): stop sweeping, apply what is
    // queued, then close.
    stopping.cancel();
    tasks.close();
    tasks.wait().await;
    drop(ctx);
    ledger_worker.shutdown().await;
    store.close().await;
    tracing::info!("allot stopped");
    Ok(())
}

/// Reads the token key files (PEM public keys, JWKS) again every
/// [`crate::tls::RELOAD_INTERVAL`] until `stop`, so a key added for rotation (a new `kid`) is
/// accepted, and one removed refused, without a restart. Files that do not load are logged
/// once and the keys in use kept.
async fn reload_keys(auth: Arc<Authenticator>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(crate::tls::RELOAD_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let reloading = auth.clone();
        match tokio::task::spawn_blocking(move || reloading.reload()).await {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!("token keys reloaded");
                }
                last_error = None;
            }
            Ok(Err(err)) => {
                let text = err.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "token key files do not load; keeping the keys in use");
                    last_error = Some(text);
                }
            }
            Err(_) => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_every_password() {
        assert_eq!(
            redact_url("postgres://allot:s3cret@db:5432/allot"),
            "postgres://allot:***@db:5432/allot"
        );
        assert_eq!(
            redact_url("postgres://allot@db/allot?password=s3cret&sslmode=require"),
            "postgres://allot@db/allot?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/allot?sslpassword=k&user=allot"),
            "postgres://db/allot?sslpassword=***&user=allot"
        );
        assert_eq!(
            redact_url("sqlite://allot.db?mode=rwc"),
            "sqlite://allot.db?mode=rwc"
        );
        assert!(!redact_url("postgres://u:p@[bad/x?password=zz").contains("zz"));
    }
}
