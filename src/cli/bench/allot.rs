//! The allot side of a bench run: the in-process server, seeding over gRPC, the debit
//! [`Driver`], and the final balance check.

use std::{
    str::FromStr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use rust_decimal::Decimal;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{
    Code, Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

use super::load::{Outcome, Target};
use crate::{
    auth::{AuthConfig, Authenticator, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, mint_hs256},
    clock::Clock,
    error::code_name,
    proto::{
        self, account_service_client::AccountServiceClient,
        grant_service_client::GrantServiceClient, ledger_service_client::LedgerServiceClient,
        rate_card_service_client::RateCardServiceClient,
        report_service_client::ReportServiceClient,
    },
    server::{self, Settings},
};

/// The request type the bench debits; the rate card prices it at exactly 1 unit.
pub const REQUEST_TYPE: &str = "allot-bench";
/// Units granted to every wallet: enough that no debit fails for lack of credit.
pub const GRANT_UNITS: i64 = 1_000_000_000;
const MICROS: i64 = 1_000_000;

type Authed = InterceptedService<Channel, Bearer>;
pub type LedgerClient = LedgerServiceClient<Authed>;

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(AsciiMetadataValue);

impl Bearer {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Bearer(
            format!("Bearer {token}")
                .parse()
                .context("the token is not valid ASCII metadata")?,
        ))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The allot server running inside this process.
pub struct InProcess {
    pub url: String,
    /// An admin token for all accounts, signed with this run's random secret.
    pub token: String,
    /// Cancelled by `stop`, or when this is dropped: the server then shuts down.
    shutdown: DropGuard,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts `server::run` on an ephemeral port (as `allot serve` would: default limits, the
    /// sweeper every second) and waits until it has migrated the database.
    pub async fn start(
        database_url: &str,
        webhooks: crate::webhooks::Settings,
    ) -> anyhow::Result<InProcess> {
        Self::start_with(database_url, Clock::system(), webhooks).await
    }

    /// [`InProcess::start`] with the server's clock (`--history` moves it).
    pub async fn start_with_clock(database_url: &str, clock: Clock) -> anyhow::Result<InProcess> {
        Self::start_with(database_url, clock, Default::default()).await
    }

    async fn start_with(
        database_url: &str,
        clock: Clock,
        webhooks: crate::webhooks::Settings,
    ) -> anyhow::Result<InProcess> {
        let secret: [u8; 32] = rand::random();
        let secret = hex::encode(secret);
        let auth = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(secret.clone()),
            ..AuthConfig::default()
        })?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let settings = Settings {
            check_wallet_cache: false,
            database_url: database_url.to_string(),
            limits: crate::api::Limits::default(),
            sweep_interval: Duration::from_secs(1),
            retention: Default::default(),
            on_ready: Some(ready_tx),
            auth,
            clock,
            shutdown_grace: Duration::from_secs(5),
            exposure: Default::default(),
            admission: Default::default(),
            webhooks,
        };
        let shutdown = CancellationToken::new();
        let mut handle = tokio::spawn(server::run(
            listener,
            settings,
            shutdown.clone().cancelled_owned(),
        ));
        tokio::select! {
            ready = ready_rx => {
                if ready.is_err() {
                    // The server dropped `on_ready` without sending: it failed to start.
                    return match (&mut handle).await {
                        Ok(Err(err)) => Err(err.context("the allot server did not start")),
                        _ => bail!("the allot server did not start"),
                    };
                }
            }
            result = &mut handle => {
                return match result {
                    Ok(Err(err)) => Err(err.context("the allot server did not start")),
                    _ => bail!("the allot server stopped while starting"),
                };
            }
        }
        let claims = Claims {
            sub: "allot-bench".into(),
            roles: vec!["admin".into()],
            accounts: vec!["*".into()],
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            exp: chrono::Utc::now().timestamp().max(0) as u64 + 7 * 86_400,
        };
        Ok(InProcess {
            url: format!("http://{addr}"),
            token: mint_hs256(secret.as_bytes(), &claims)?,
            shutdown: shutdown.drop_guard(),
            handle,
        })
    }

    /// Shuts the server down gracefully (the batcher drains, the store closes).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.disarm().cancel();
        self.handle
            .await
            .context("the allot server task panicked")?
    }
}

/// Clients for the services the bench calls, over `connections` HTTP/2 connections.
#[derive(Clone)]
pub struct Clients {
    channels: Vec<Channel>,
    bearer: Bearer,
}

impl Clients {
    pub async fn connect(
        url: &str,
        token: &str,
        connections: usize,
        tls: &crate::tls::ClientTlsArgs,
    ) -> anyhow::Result<Clients> {
        // The same rule as every client command: https:// is TLS, http:// plaintext.
        let endpoint = crate::cli::client::endpoint(url, tls)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            channels.push(
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?,
            );
        }
        Ok(Clients {
            channels,
            bearer: Bearer::new(token)?,
        })
    }

    fn channel(&self, lane: usize) -> Channel {
        self.channels[lane % self.channels.len()].clone()
    }

    pub fn ledger(&self, lane: usize) -> LedgerClient {
        LedgerServiceClient::with_interceptor(self.channel(lane), self.bearer.clone())
    }

    pub fn accounts(&self, lane: usize) -> AccountServiceClient<Authed> {
        AccountServiceClient::with_interceptor(self.channel(lane), self.bearer.clone())
    }

    pub fn grants(&self, lane: usize) -> GrantServiceClient<Authed> {
        GrantServiceClient::with_interceptor(self.channel(lane), self.bearer.clone())
    }

    pub fn reports(&self, lane: usize) -> ReportServiceClient<Authed> {
        ReportServiceClient::with_interceptor(self.channel(lane), self.bearer.clone())
    }

    pub fn rates(&self) -> RateCardServiceClient<Authed> {
        RateCardServiceClient::with_interceptor(self.channel(0), self.bearer.clone())
    }
}

/// Registers a webhook endpoint for every account at `url` (`types`: empty for all); the
/// note the report prints.
pub async fn webhook_endpoint(
    clients: &Clients,
    url: &str,
    types: &[String],
) -> anyhow::Result<String> {
    let mut client = crate::proto::webhook_service_client::WebhookServiceClient::with_interceptor(
        clients.channel(0),
        clients.bearer.clone(),
    );
    let endpoint = client
        .create_webhook_endpoint(crate::proto::CreateWebhookEndpointRequest {
            endpoint: Some(crate::proto::WebhookEndpoint {
                url: url.to_string(),
                event_types: types.to_vec(),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(|status| rpc_error("creating the webhook endpoint", status))?
        .into_inner();
    let types = if types.is_empty() {
        "every event".to_string()
    } else {
        types.join(", ")
    };
    Ok(format!(
        "webhook endpoint {} for every account: {types} to {url}",
        endpoint.id
    ))
}

pub fn rpc_error(what: &str, status: Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} {}", code_name(status.code()), status.message())
}

/// Sends a setup call until allot admits it: a RESOURCE_EXHAUSTED refusal (OVERLOADED:
/// nothing was applied) is sent again after the delay its `RetryInfo` names, as a
/// well-behaved client does. `call` must send the same request (the same `request_id`) each
/// time.
pub async fn admitted<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    const ATTEMPTS: u32 = 100;
    for _ in 1..ATTEMPTS {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if status.code() == Code::ResourceExhausted => {
                let delay = status
                    .get_error_details()
                    .retry_info()
                    .and_then(|info| info.retry_delay)
                    .unwrap_or(Duration::from_millis(100));
                // Jitter: refused callers do not all come back at the same moment.
                let jitter = delay.mul_f64(rand::random::<f64>() * 0.5);
                tokio::time::sleep(delay + jitter).await;
            }
            Err(status) => return Err(rpc_error(what, status)),
        }
    }
    call()
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| rpc_error(what, status))
}

/// The rate card in force must price [`REQUEST_TYPE`] at exactly 1 unit: publishes a card that
/// does (keeping the rates of the card in force, if any). Returns a note when it published.
pub async fn ensure_rate_card(clients: &Clients) -> anyhow::Result<Option<String>> {
    let bench_rate = proto::Rate {
        request_type: REQUEST_TYPE.into(),
        flat_units: "1".into(),
        ..Default::default()
    };
    let mut rates = clients.rates();
    let current = match rates
        .get_rate_card(proto::GetRateCardRequest::default())
        .await
    {
        Ok(card) => Some(card.into_inner()),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => return Err(rpc_error("cannot read the rate card in force", status)),
    };
    let mut card_rates = Vec::new();
    if let Some(card) = &current {
        let priced = card.rates.iter().find(|r| r.request_type == REQUEST_TYPE);
        if let Some(rate) = priced {
            let flat = Decimal::from_str(&rate.flat_units).unwrap_or_default();
            if flat == Decimal::ONE && rate.dimensions.is_empty() {
                return Ok(None);
            }
        }
        card_rates.extend(
            card.rates
                .iter()
                .filter(|r| r.request_type != REQUEST_TYPE)
                .cloned(),
        );
    }
    card_rates.push(bench_rate);
    let version = publish_card(
        clients,
        card_rates,
        &format!("allot bench: `{REQUEST_TYPE}` costs 1 unit"),
    )
    .await?;
    Ok(current.map(|card| {
        format!(
            "published rate card v{} (v{}'s rates plus `{REQUEST_TYPE}` = 1 unit)",
            version, card.version
        )
    }))
}

/// Creates a rate card of `rates` and publishes it, in force now; returns its version.
pub async fn publish_card(
    clients: &Clients,
    rates: Vec<proto::Rate>,
    notes: &str,
) -> anyhow::Result<i64> {
    let mut client = clients.rates();
    let draft = client
        .create_rate_card(proto::CreateRateCardRequest {
            rate_card: Some(proto::RateCard {
                rates,
                notes: notes.into(),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(|s| rpc_error("cannot create the rate card", s))?
        .into_inner();
    let published = client
        .publish_rate_card(proto::PublishRateCardRequest {
            version: draft.version,
            etag: draft.etag,
            effective_time: None,
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(|s| rpc_error("cannot publish the rate card", s))?
        .into_inner();
    Ok(published.version)
}

/// Creates `wallets` accounts, each with a `credits` wallet and a grant of [`GRANT_UNITS`],
/// `concurrency` at a time. Returns the account ids.
pub async fn seed(
    clients: &Clients,
    run_id: &str,
    wallets: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    stream::iter(0..wallets)
        .map(|i| {
            let clients = clients.clone();
            async move {
                let account = create_account(
                    &clients,
                    i,
                    proto::Account {
                        external_id: format!("bench-{run_id}-{i}"),
                        display_name: format!("allot bench {i}"),
                        ..Default::default()
                    },
                )
                .await?;
                fund(
                    &clients,
                    i,
                    &account.id,
                    proto::Grant {
                        kind: proto::GrantKind::Contract as i32,
                        amount: GRANT_UNITS.to_string(),
                        unit_price: "0.01".into(),
                        currency: "USD".into(),
                        ..Default::default()
                    },
                )
                .await?;
                anyhow::Ok(account.id)
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Creates `account` (retried while allot answers OVERLOADED).
pub async fn create_account(
    clients: &Clients,
    lane: usize,
    account: proto::Account,
) -> anyhow::Result<proto::Account> {
    let request = proto::CreateAccountRequest {
        account: Some(account),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    admitted("CreateAccount", || {
        let mut client = clients.accounts(lane);
        let request = request.clone();
        async move { client.create_account(request).await }
    })
    .await
}

/// Creates a `credits` wallet for `account` and grants it `grant`.
pub async fn fund(
    clients: &Clients,
    lane: usize,
    account: &str,
    grant: proto::Grant,
) -> anyhow::Result<()> {
    let request = proto::CreateWalletRequest {
        wallet: Some(proto::Wallet {
            account_id: account.into(),
            unit: "credits".into(),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let wallet = admitted("CreateWallet", || {
        let mut client = clients.accounts(lane);
        let request = request.clone();
        async move { client.create_wallet(request).await }
    })
    .await?;
    let request = proto::CreateGrantRequest {
        grant: Some(proto::Grant {
            wallet_id: wallet.id,
            ..grant
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    admitted("CreateGrant", || {
        let mut client = clients.grants(lane);
        let request = request.clone();
        async move { client.create_grant(request).await }
    })
    .await?;
    Ok(())
}

/// How debits are sent. A `Batch(n)` variant (one `BatchDebit` of n debits per call) slots in
/// here once LedgerService has `BatchDebit`: `debits_per_call` returns n and `call` maps each
/// item's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// One `Debit` per call.
    Unary,
    /// `BatchDebit` with this many debits per call.
    Batch(usize),
}

impl Driver {
    pub fn debits_per_call(self) -> usize {
        match self {
            Driver::Unary => 1,
            Driver::Batch(n) => n,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Driver::Unary => "unary Debit".into(),
            Driver::Batch(n) => format!("BatchDebit, {n} per call"),
        }
    }
}

/// Debits the seeded accounts over gRPC.
pub struct AllotTarget {
    clients: Clients,
    /// One client per lane (cloned per call: tonic clients are cheap handles).
    ledgers: Vec<LedgerClient>,
    accounts: Vec<String>,
    driver: Driver,
    /// Prefix of this run's request ids; a counter makes each one unique.
    prefix: String,
    next: AtomicU64,
    /// Debits whose outcome is unknown (transport errors): resolved after the run.
    unknown: Mutex<Vec<(usize, proto::DebitRequest)>>,
}

impl AllotTarget {
    pub fn new(
        clients: Clients,
        accounts: Vec<String>,
        driver: Driver,
        run_id: &str,
        lanes: usize,
    ) -> Self {
        let ledgers = (0..lanes.max(1)).map(|lane| clients.ledger(lane)).collect();
        AllotTarget {
            clients,
            ledgers,
            accounts,
            driver,
            prefix: format!("bench-{run_id}-"),
            next: AtomicU64::new(0),
            unknown: Mutex::new(Vec::new()),
        }
    }

    /// The debit numbered `n` (its request_id) of `wallet`.
    fn request(&self, wallet: usize, n: u64) -> proto::DebitRequest {
        proto::DebitRequest {
            account_id: self.accounts[wallet].clone(),
            request_type: REQUEST_TYPE.into(),
            request_id: format!("{}{n}", self.prefix),
            ..Default::default()
        }
    }

    /// Repeats every debit whose outcome was unknown with its request_id (a committed one
    /// replays, one that never ran runs now), so that the balance check is exact. Returns the
    /// micro-units now known charged per wallet, and how many stayed unresolved.
    pub async fn resolve_unknown(&self) -> (Vec<(usize, i64)>, usize) {
        let pending = std::mem::take(&mut *self.unknown.lock().expect("unknown lock"));
        let mut charged = Vec::new();
        let mut unresolved = 0;
        for (wallet, request) in pending {
            let mut resolved = false;
            for attempt in 0..5u32 {
                let mut client = self.clients.ledger(0);
                match classify(client.debit(request.clone()).await) {
                    Outcome::Charged(micros) => {
                        charged.push((wallet, micros));
                        resolved = true;
                        break;
                    }
                    Outcome::Rejected(_) => {
                        resolved = true;
                        break;
                    }
                    Outcome::Unknown(_) => {
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                }
            }
            if !resolved {
                unresolved += 1;
            }
        }
        (charged, unresolved)
    }
}

impl Target for AllotTarget {
    fn debits_per_call(&self) -> usize {
        self.driver.debits_per_call()
    }

    async fn call(&self, lane: usize, wallets: &[usize]) -> Vec<Outcome> {
        match self.driver {
            Driver::Unary => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let mut client = self.ledgers[lane % self.ledgers.len()].clone();
                let outcome = classify(client.debit(self.request(wallets[0], n)).await);
                if matches!(outcome, Outcome::Unknown(_)) {
                    let request = self.request(wallets[0], n);
                    self.unknown
                        .lock()
                        .expect("unknown lock")
                        .push((wallets[0], request));
                }
                vec![outcome]
            }
            Driver::Batch(_) => {
                let requests: Vec<(usize, proto::DebitRequest)> = wallets
                    .iter()
                    .map(|&w| {
                        (
                            w,
                            self.request(w, self.next.fetch_add(1, Ordering::Relaxed)),
                        )
                    })
                    .collect();
                let mut client = self.ledgers[lane % self.ledgers.len()].clone();
                let call = client
                    .batch_debit(proto::BatchDebitRequest {
                        debits: requests.iter().map(|(_, r)| r.clone()).collect(),
                    })
                    .await;
                let results = match call {
                    Ok(response) => response.into_inner().results,
                    Err(status) => {
                        // The whole call failed: each debit's outcome is unknown unless the
                        // server said it refused the call itself.
                        let outcome = classify(Err(status));
                        if matches!(outcome, Outcome::Unknown(_)) {
                            self.unknown
                                .lock()
                                .expect("unknown lock")
                                .extend(requests.iter().cloned());
                        }
                        return vec![outcome; requests.len()];
                    }
                };
                let mut outcomes = Vec::with_capacity(requests.len());
                for (i, request) in requests.into_iter().enumerate() {
                    let result = results.get(i).and_then(|r| r.result.clone());
                    let outcome = match result {
                        Some(proto::debit_result::Result::Response(response)) => {
                            classify(Ok(tonic::Response::new(response)))
                        }
                        Some(proto::debit_result::Result::Error(error)) => {
                            classify(Err(Status::new(Code::from(error.code), error.message)))
                        }
                        None => Outcome::Unknown("BAD_RESPONSE"),
                    };
                    if matches!(outcome, Outcome::Unknown(_)) {
                        self.unknown.lock().expect("unknown lock").push(request);
                    }
                    outcomes.push(outcome);
                }
                outcomes
            }
        }
    }
}

/// Maps a Debit result to an outcome: transport-level failures leave the outcome unknown.
fn classify(result: Result<tonic::Response<proto::DebitResponse>, Status>) -> Outcome {
    match result {
        Ok(response) => {
            let units = response
                .get_ref()
                .transaction
                .as_ref()
                .and_then(|t| micros(&t.units));
            match units {
                Some(units) => Outcome::Charged(units),
                None => Outcome::Unknown("BAD_RESPONSE"),
            }
        }
        Err(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal => Outcome::Unknown(code_name(status.code())),
            code => Outcome::Rejected(code_name(code)),
        },
    }
}

/// A decimal string in micro-units (`None` if it is not a number with at most 6 places).
fn micros(text: &str) -> Option<i64> {
    use rust_decimal::prelude::ToPrimitive;
    let scaled = Decimal::from_str(text).ok()? * Decimal::from(MICROS);
    if !scaled.fract().is_zero() {
        return None;
    }
    scaled.to_i64()
}

/// The result of the final balance check.
#[derive(Debug, Default)]
pub struct Verification {
    pub wallets: usize,
    pub mismatches: usize,
    /// The first few mismatches, for the report.
    pub examples: Vec<String>,
}

/// Checks every wallet: `GetBalance.posted` must equal its grant minus what it acknowledged.
pub async fn verify(
    clients: &Clients,
    accounts: &[String],
    charged: &[i64],
    concurrency: usize,
) -> anyhow::Result<Verification> {
    let balances: Vec<(usize, Result<String, Status>)> = stream::iter(accounts.iter().enumerate())
        .map(|(i, account_id)| {
            let mut client = clients.ledger(i);
            async move {
                let balance = client
                    .get_balance(proto::GetBalanceRequest {
                        account_id: account_id.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(|b| b.into_inner().posted);
                (i, balance)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut report = Verification {
        wallets: accounts.len(),
        ..Default::default()
    };
    for (i, balance) in balances {
        let posted = balance.map_err(|s| rpc_error("GetBalance", s))?;
        let expected = GRANT_UNITS * MICROS - charged[i];
        if micros(&posted) != Some(expected) {
            report.mismatches += 1;
            if report.examples.len() < 5 {
                report.examples.push(format!(
                    "{}: posted {posted}, expected {}",
                    accounts[i],
                    Decimal::new(expected, 6).normalize()
                ));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_micro_units() {
        assert_eq!(micros("1"), Some(1_000_000));
        assert_eq!(micros("999999999.000001"), Some(999_999_999_000_001));
        assert_eq!(micros("0.5"), Some(500_000));
        assert_eq!(micros("x"), None);
    }
}
