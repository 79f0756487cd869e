//! Test harness: starts the real allot server on an ephemeral port against a fresh database
//! (a temp SQLite file, or a new PostgreSQL database when `DATABASE_URL` is a postgres URL)
//! and talks to it with the generated gRPC clients.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use allot::{
    auth::{AuthConfig, Authenticator, Claims, mint_hs256},
    clock::Clock,
    proto::{
        self, account_service_client::AccountServiceClient,
        grant_service_client::GrantServiceClient, ledger_service_client::LedgerServiceClient,
        rate_card_service_client::RateCardServiceClient,
        report_service_client::ReportServiceClient,
    },
    server::{self, Settings},
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
mod assert;
pub mod process;
pub mod reads;
mod requests;
mod time;
mod values;

// Not every test crate uses every helper.
#[allow(unused_imports)]
pub use assert::*;
#[allow(unused_imports)]
pub use requests::*;
#[allow(unused_imports)]
pub use time::*;
#[allow(unused_imports)]
pub use values::*;

pub const SECRET: &str = "test-secret-for-allot-integration-tests";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh database URL for one test, and how to drop it afterwards.
pub struct TestDatabase {
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(base) if base.starts_with("postgres") => {
                let name = format!("allot_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&base)
                    .await
                    .expect("connect to DATABASE_URL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = allot::cli::bench::replace_database(&base, &name);
                TestDatabase {
                    url,
                    admin_url: Some(base),
                    name,
                    _dir: None,
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("allot.db");
                TestDatabase {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    admin_url: None,
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.admin_url.is_some()
    }

    pub async fn drop_database(&self) {
        if let Some(admin_url) = &self.admin_url
            && let Ok(admin) = Database::connect(admin_url).await
        {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = admin.execute_unprepared(&sql).await;
            admin.close().await.ok();
        }
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub db: TestDatabase,
    /// The server's clock: `app.clock.advance(micros)` moves time for the server.
    pub clock: Clock,
    /// The server's store and ledger (for `sweep` and direct database checks).
    pub handles: server::Handles,
    /// Token for every role on every account.
    pub admin: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Auth configuration of the test server: the HS256 secret, the RSA/EC/Ed25519 public keys
/// and the JWKS file from tests/fixtures.
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        hs256_secret: Some(SECRET.to_string()),
        public_key_files: vec![
            fixture("rsa_public.pem"),
            fixture("ec_public.pem"),
            fixture("ed_public.pem"),
        ],
        jwks_file: Some(fixture("jwks.json")),
        ..AuthConfig::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(auth_config()).await
}

pub async fn spawn_app_with(auth: AuthConfig) -> TestApp {
    let db = TestDatabase::create().await;
    spawn_on(db, auth, Clock::system()).await
}

/// A server on a database the test prepared (it migrates what is not applied yet).
pub async fn spawn_app_on(db: TestDatabase) -> TestApp {
    spawn_on(db, auth_config(), Clock::system()).await
}

impl TestApp {
    /// A second server (another replica) on the same database; stopping it leaves the
    /// database alone.
    pub async fn spawn_replica(&self) -> TestApp {
        self.replica_on(Clock::system()).await
    }

    /// A second server on the same database and the same clock: moving `app.clock` moves
    /// both.
    pub async fn spawn_replica_sharing_clock(&self) -> TestApp {
        self.replica_on(self.clock.clone()).await
    }

    async fn replica_on(&self, clock: Clock) -> TestApp {
        let db = TestDatabase {
            url: self.db.url.clone(),
            admin_url: None,
            name: String::new(),
            _dir: None,
        };
        spawn_on(db, auth_config(), clock).await
    }
}

/// Webhooks in tests: the receivers listen on loopback, attempts time out after 2 s and
/// retries come fast (three, then dead).
pub fn webhook_settings() -> allot::webhooks::Settings {
    allot::webhooks::Settings {
        allow_private: true,
        timeout: Duration::from_secs(2),
        retries: vec![
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_millis(800),
        ],
        ..Default::default()
    }
}

/// A server whose webhooks are delivered as `webhooks` says.
pub async fn spawn_app_with_webhooks(webhooks: allot::webhooks::Settings) -> TestApp {
    let db = TestDatabase::create().await;
    spawn_with(db, auth_config(), Clock::system(), webhooks).await
}

async fn spawn_on(db: TestDatabase, auth: AuthConfig, clock: Clock) -> TestApp {
    spawn_with(db, auth, clock, webhook_settings()).await
}

async fn spawn_with(
    db: TestDatabase,
    auth: AuthConfig,
    clock: Clock,
    webhooks: allot::webhooks::Settings,
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ready_tx, ready_rx) = oneshot::channel();
    let settings = Settings {
        check_wallet_cache: true,
        database_url: db.url.clone(),
        auth: Authenticator::from_config(&auth).expect("auth config"),
        clock: clock.clone(),
        shutdown_grace: Duration::from_secs(2),
        exposure: Default::default(),
        // Admission control has tests of its own (tests/overload.rs); here a slow batch on a
        // busy test machine must not refuse a test's calls.
        admission: allot::admission::Limits {
            max_queue_wait: Duration::from_secs(30),
            max_in_flight: 100_000,
            ..Default::default()
        },
        limits: allot::api::Limits::default(),
        // Tests sweep explicitly (`app.sweep()`), after moving the clock.
        sweep_interval: Duration::from_secs(3600),
        retention: Default::default(),
        on_ready: Some(ready_tx),
        webhooks,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server::run(listener, settings, async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5));
    // The server migrates before serving: wait until it answers.
    let mut channel_ready = None;
    for _ in 0..200 {
        if let Ok(ch) = channel.connect().await {
            channel_ready = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let channel = channel_ready.expect("server did not start");
    let handles = ready_rx.await.expect("server handles");
    let admin = token(&["admin"], &["*"]);
    TestApp {
        addr,
        channel,
        db,
        clock,
        handles,
        admin,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// Moves the server's clock forward, then records everything that fell due (what the
    /// background sweeper would do).
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by.as_micros() as i64);
        self.sweep().await;
    }

    /// Records everything due now.
    pub async fn sweep(&self) {
        self.handles.sweep().await.expect("sweep");
    }

    /// Begins a graceful shutdown (health flips to NOT_SERVING).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server gracefully and drops the test database.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            let result = handle.await.expect("server task");
            result.expect("server exited with an error");
        }
        self.db.drop_database().await;
    }

    pub fn accounts(
        &self,
        token: &str,
    ) -> AccountServiceClient<InterceptedService<Channel, Bearer>> {
        AccountServiceClient::with_interceptor(self.channel.clone(), bearer(token))
    }

    pub fn grants(&self, token: &str) -> GrantServiceClient<InterceptedService<Channel, Bearer>> {
        GrantServiceClient::with_interceptor(self.channel.clone(), bearer(token))
    }

    pub fn rates(&self, token: &str) -> RateCardServiceClient<InterceptedService<Channel, Bearer>> {
        RateCardServiceClient::with_interceptor(self.channel.clone(), bearer(token))
    }

    pub fn reports(&self, token: &str) -> ReportServiceClient<InterceptedService<Channel, Bearer>> {
        ReportServiceClient::with_interceptor(self.channel.clone(), bearer(token))
    }

    pub fn ledger(&self, token: &str) -> LedgerServiceClient<InterceptedService<Channel, Bearer>> {
        LedgerServiceClient::with_interceptor(self.channel.clone(), bearer(token))
    }

    pub fn webhooks(
        &self,
        token: &str,
    ) -> proto::webhook_service_client::WebhookServiceClient<InterceptedService<Channel, Bearer>>
    {
        proto::webhook_service_client::WebhookServiceClient::with_interceptor(
            self.channel.clone(),
            bearer(token),
        )
    }

    // ---- fixtures through the API ----------------------------------------------------------

    pub async fn create_account(&self, external_id: &str, parent_id: &str) -> proto::Account {
        self.accounts(&self.admin)
            .create_account(proto::CreateAccountRequest {
                account: Some(proto::Account {
                    external_id: external_id.into(),
                    display_name: format!("{external_id} Inc."),
                    parent_id: parent_id.into(),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await
            .expect("create account")
            .into_inner()
    }

    pub async fn create_wallet(
        &self,
        account_id: &str,
        unit: &str,
        overdraft: &str,
    ) -> proto::Wallet {
        self.accounts(&self.admin)
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: account_id.into(),
                    unit: unit.into(),
                    overdraft_limit: overdraft.into(),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await
            .expect("create wallet")
            .into_inner()
    }

    pub async fn grant(&self, wallet_id: &str, amount: &str) -> proto::Grant {
        self.grants(&self.admin)
            .create_grant(grant_request(wallet_id, amount, "0.01"))
            .await
            .expect("create grant")
            .into_inner()
    }

    /// Publishes a card with `chat` (1 unit + 0.2 per 1,000 output tokens, max 50) and
    /// `image` (4 units flat), plus `one` (exactly 1 unit).
    pub async fn publish_standard_card(&self) -> proto::RateCard {
        self.publish_card(vec![
            rate("chat", "1", &[("output_tokens", "1000", "0.2")], "50"),
            rate("image", "4", &[], ""),
            rate("one", "1", &[], ""),
        ])
        .await
    }

    pub async fn publish_card(&self, rates: Vec<proto::Rate>) -> proto::RateCard {
        let mut client = self.rates(&self.admin);
        let draft = client
            .create_rate_card(card_request(rates, "test card"))
            .await
            .expect("create rate card")
            .into_inner();
        client
            .publish_rate_card(publish_request(&draft))
            .await
            .expect("publish rate card")
            .into_inner()
    }

    /// Account + `credits` wallet + one grant of `amount` (if non-empty).
    pub async fn funded(&self, external_id: &str, amount: &str) -> (proto::Account, proto::Wallet) {
        let account = self.create_account(external_id, "").await;
        let wallet = self.create_wallet(&account.id, "credits", "").await;
        if !amount.is_empty() {
            self.grant(&wallet.id, amount).await;
        }
        (account, wallet)
    }
}

pub fn claims(roles: &[&str], accounts: &[&str]) -> Claims {
    Claims {
        sub: "test-caller".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        iss: "allot".into(),
        aud: "allot".into(),
        exp: (chrono::Utc::now().timestamp() + 3600) as u64,
    }
}

/// An HS256 token signed with the test secret.
pub fn token(roles: &[&str], accounts: &[&str]) -> String {
    mint_hs256(SECRET.as_bytes(), &claims(roles, accounts)).expect("mint")
}

pub use allot::cli::client::Bearer;

/// Sends `authorization: Bearer <token>` (nothing for an empty token).
pub fn bearer(token: &str) -> Bearer {
    Bearer::new(Some(token)).expect("printable token")
}

/// Sends `authorization` exactly as given (or not at all).
pub fn raw_bearer(header: Option<&str>) -> Bearer {
    Bearer::header(header.map(|h| h.parse().expect("ASCII header value")))
}
