//! The client half of `allot`: commands for accounts, wallets, grants, allotment schedules,
//! rate cards, quotes, debits, holds, refunds, adjustments, balances, the ledger and
//! statements, over gRPC.
//!
//! Every command takes [`ClientArgs`] (`--server`, `--token`, `--json`). Results print as a
//! table or `field: value` lines, or as the response message in JSON with `--json` (see
//! `client/output.rs`). A server error fails the command with `CODE REASON: message` and the
//! ErrorInfo metadata ([`RpcError`]).

mod output;
mod rates_file;
mod statement;

use std::{
    collections::BTreeMap, fmt, future::Future, io::Write as _, path::PathBuf, time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use prost_types::{FieldMask, Timestamp};
use tokio::sync::OnceCell;
use tonic::{
    Request, Response, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::error::code_name;
use crate::proto::{
    self, account_service_client::AccountServiceClient, grant_service_client::GrantServiceClient,
    ledger_service_client::LedgerServiceClient, rate_card_service_client::RateCardServiceClient,
    report_service_client::ReportServiceClient,
};
use output::{Output, Page, Show};

const CLIENT_OPTIONS: &str = "Client options";

/// The channel endpoint for `--server`: `https://` means TLS (the server's certificate
/// verified against the system's roots and Mozilla's), `http://` plaintext; nothing else.
pub fn endpoint(server: &str) -> Result<tonic::transport::Endpoint> {
    let invalid = || format!("--server `{server}` is not a valid URL");
    let endpoint = Channel::from_shared(server.to_string())
        .with_context(invalid)?
        .connect_timeout(Duration::from_secs(10));
    match endpoint.uri().scheme_str() {
        Some("https") => endpoint
            .tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
            .with_context(|| format!("cannot set up TLS for {server}")),
        Some("http") => Ok(endpoint),
        _ => Err(anyhow::anyhow!(
            "--server `{server}` must start with http:// (plaintext) or https:// (TLS)"
        )),
    }
}

/// The default `--server`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where the server is, who is calling, and how to print. Accepted by every client command,
/// before the command name (`allot --server URL accounts list`) or anywhere after it; a flag
/// after the command wins over one before it, and either over the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// URL of the allot server: `http://…` for plaintext, `https://…` for TLS (verified
    /// against the system's root certificates) [env: ALLOT_SERVER] [default:
    /// http://127.0.0.1:50051]
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub server: Option<String>,
    /// Bearer token sent with every call (`allot serve --dev` prints one; `allot token` mints
    /// more) [env: ALLOT_TOKEN]
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub token: Option<String>,
    /// Print the response message as JSON (proto field names, enum names, RFC 3339 times).
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub json: bool,
}

impl ClientArgs {
    /// These options completed by `outer` (given before the command name), then by the
    /// environment and the defaults.
    pub fn resolve(&self, outer: &ClientArgs) -> ClientArgs {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ClientArgs {
            server: Some(
                self.server
                    .clone()
                    .or_else(|| outer.server.clone())
                    .or_else(|| env("ALLOT_SERVER"))
                    .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            ),
            token: self
                .token
                .clone()
                .or_else(|| outer.token.clone())
                .or_else(|| env("ALLOT_TOKEN")),
            json: self.json || outer.json,
        }
    }
}

/// A command group (`accounts …`) with the client options.
#[derive(Debug, Args)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: C,
}

/// A single command (`debit …`) with the client options.
#[derive(Debug, Args)]
pub struct Single<A: Args> {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    args: A,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create, show, list and update accounts (customers, departments).
    Accounts(Group<AccountsCommand>),
    /// Create, show, list and update wallets (one per account and unit).
    Wallets(Group<WalletsCommand>),
    /// Add units to a wallet, list a wallet's grants, void a grant.
    Grants(Group<GrantsCommand>),
    /// Create and list allotment schedules (recurring grants).
    Schedules(Group<SchedulesCommand>),
    /// Publish, show and list rate cards.
    Rates(Group<RatesCommand>),
    /// Price a request without charging it.
    Quote(Single<PriceArgs>),
    /// Charge a request to an account's wallet.
    Debit(Single<DebitArgs>),
    /// Hold units before a variable-length request runs (then `capture` or `release`).
    Reserve(Single<ReserveArgs>),
    /// Charge a hold at the actual cost.
    Capture(Single<CaptureArgs>),
    /// Free a hold without charging it.
    Release(Single<ReleaseArgs>),
    /// Return units of a debit or capture, in full or in part.
    Refund(Single<RefundArgs>),
    /// Add (positive) or remove (negative) units of a wallet, with a reason.
    Adjust(Single<AdjustArgs>),
    /// Show a wallet's balance.
    Balance(Single<WalletRef>),
    /// List a wallet's ledger entries, newest first.
    Transactions(Single<TransactionsArgs>),
    /// Statements for procurement and finance.
    Report(Group<ReportCommand>),
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account.
    Create(CreateAccountArgs),
    /// Show one account.
    Get {
        /// Account id (`acct_…`).
        id: String,
    },
    /// List accounts.
    List {
        /// Only the direct children of this account.
        #[arg(long, value_name = "ACCOUNT")]
        parent: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change an account's name, labels or state.
    Update(UpdateAccountArgs),
}

#[derive(Debug, Args)]
pub struct CreateAccountArgs {
    /// Your own customer id for the account; unique.
    #[arg(long)]
    external_id: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Parent account (departments); cannot change later.
    #[arg(long, value_name = "ACCOUNT")]
    parent: Option<String>,
    /// A label; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = pair)]
    labels: Vec<(String, String)>,
    /// Initial state [server default: active].
    #[arg(long, value_enum)]
    state: Option<AccountState>,
    #[command(flatten)]
    request: RequestId,
}

#[derive(Debug, Args)]
pub struct UpdateAccountArgs {
    /// Account id (`acct_…`).
    id: String,
    #[command(flatten)]
    changes: AccountChanges,
    #[command(flatten)]
    request: RequestId,
}

/// Only the fields given are sent in the update mask.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct AccountChanges {
    /// New display name.
    #[arg(long)]
    name: Option<String>,
    /// Replace all labels with these; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = pair)]
    labels: Vec<(String, String)>,
    /// Remove all labels.
    #[arg(long, conflicts_with = "labels")]
    clear_labels: bool,
    /// New state.
    #[arg(long, value_enum)]
    state: Option<AccountState>,
}

#[derive(Debug, Subcommand)]
pub enum WalletsCommand {
    /// Create a wallet for an account.
    Create {
        /// Account id (`acct_…`).
        #[arg(long)]
        account: String,
        /// Unit of the wallet.
        #[arg(long, default_value = "credits")]
        unit: String,
        /// How far below zero `available` may go (decimal) [server default: 0].
        #[arg(long, value_name = "DECIMAL")]
        overdraft_limit: Option<String>,
        #[command(flatten)]
        request: RequestId,
    },
    /// Show one wallet and its balance.
    Get {
        /// Wallet id (`wal_…`).
        id: String,
    },
    /// List an account's wallets.
    List {
        /// Account id (`acct_…`).
        #[arg(long)]
        account: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change a wallet's overdraft limit, spend caps or low-balance thresholds.
    Update(UpdateWalletArgs),
}

#[derive(Debug, Args)]
pub struct UpdateWalletArgs {
    /// Wallet id (`wal_…`).
    id: String,
    #[command(flatten)]
    changes: WalletChanges,
    #[command(flatten)]
    request: RequestId,
}

/// Only the fields given are sent in the update mask.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct WalletChanges {
    /// How far below zero `available` may go (decimal).
    #[arg(long, value_name = "DECIMAL")]
    overdraft_limit: Option<String>,
    /// Most units debits, captures and holds may use per UTC day (decimal); `none` removes the
    /// cap.
    #[arg(long, value_name = "DECIMAL|none", value_parser = cap)]
    daily_cap: Option<String>,
    /// Most units debits, captures and holds may use per UTC month (decimal); `none` removes
    /// the cap.
    #[arg(long, value_name = "DECIMAL|none", value_parser = cap)]
    monthly_cap: Option<String>,
    /// Replace the low-balance thresholds with these (decimal); repeat for more.
    #[arg(
        long = "threshold",
        value_name = "DECIMAL",
        allow_negative_numbers = true
    )]
    thresholds: Vec<String>,
    /// Remove all low-balance thresholds.
    #[arg(long, conflicts_with = "thresholds")]
    clear_thresholds: bool,
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Add units to a wallet.
    Create(CreateGrantArgs),
    /// List a wallet's grants.
    List {
        /// Wallet id (`wal_…`).
        #[arg(long)]
        wallet: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Remove a grant's remaining units (a VOID entry).
    Void {
        /// Grant id (`grt_…`).
        id: String,
        /// Why (shown on statements).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        request: RetryKey,
    },
}

#[derive(Debug, Args)]
pub struct CreateGrantArgs {
    /// Wallet id (`wal_…`).
    #[arg(long)]
    wallet: String,
    /// Units granted (decimal, > 0).
    #[arg(long, value_name = "DECIMAL")]
    amount: String,
    /// When the units become usable (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    effective_time: Option<Timestamp>,
    /// When the remaining units expire (RFC 3339) [default: never].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    expire_time: Option<Timestamp>,
    #[command(flatten)]
    terms: GrantTerms,
    #[command(flatten)]
    request: RequestId,
}

/// What a grant is and what its units cost: for a grant, or each grant of a schedule.
#[derive(Debug, Args)]
#[group(skip)]
pub struct GrantTerms {
    /// What the units are for.
    #[arg(long, value_enum, default_value_t = GrantKind::Contract)]
    kind: GrantKind,
    /// Lower burns first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// What the customer paid per unit (decimal) [default: 0].
    #[arg(long, value_name = "DECIMAL")]
    unit_price: Option<String>,
    /// ISO 4217 code of --unit-price, e.g. USD.
    #[arg(long)]
    currency: Option<String>,
    /// Your contract or order reference.
    #[arg(long)]
    contract_ref: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Grant AMOUNT units at the start of every period, from --start.
    Create(CreateScheduleArgs),
    /// List a wallet's allotment schedules.
    List {
        /// Wallet id (`wal_…`).
        #[arg(long)]
        wallet: String,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Args)]
pub struct CreateScheduleArgs {
    /// Wallet id (`wal_…`).
    #[arg(long)]
    wallet: String,
    /// Units granted each period (decimal, > 0).
    #[arg(long, value_name = "DECIMAL")]
    amount: String,
    /// How often a grant is made.
    #[arg(long, value_enum)]
    period: Period,
    /// Start of the first period; later periods are anchored to it (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    start: Option<Timestamp>,
    /// No period starts at or after this time (RFC 3339) [default: never].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    end: Option<Timestamp>,
    /// Roll unused units into the next period's grant, up to this many (decimal) [default: no
    /// rollover, unused units expire at the end of each period].
    #[arg(long, value_name = "DECIMAL")]
    rollover_cap: Option<String>,
    #[command(flatten)]
    terms: GrantTerms,
    #[command(flatten)]
    request: RetryKey,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// A wallet's opening balance, movements by kind, closing balance and movements.
    #[command(long_about = statement::HELP)]
    Statement(StatementArgs),
}

#[derive(Debug, Args)]
pub struct StatementArgs {
    #[command(flatten)]
    wallet: StatementWallet,
    /// With --account: unit of the wallet [server default: credits].
    #[arg(long, conflicts_with = "wallet")]
    unit: Option<String>,
    /// Start of the window (RFC 3339, inclusive) [default: the beginning].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    from: Option<Timestamp>,
    /// End of the window (RFC 3339, exclusive) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    to: Option<Timestamp>,
    /// Write the statement as CSV to FILE (`-`: stdout) instead of printing it.
    #[arg(long, value_name = "FILE|-")]
    csv: Option<PathBuf>,
}

/// Which wallet a statement covers: an account's (with --unit), or one by id.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct StatementWallet {
    /// Account id (`acct_…`).
    #[arg(long)]
    account: Option<String>,
    /// Wallet id (`wal_…`).
    #[arg(long)]
    wallet: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RatesCommand {
    /// Publish a rate card from a TOML file.
    #[command(long_about = rates_file::FORMAT_HELP)]
    Publish {
        /// The rate card file (TOML).
        file: PathBuf,
        /// When the card takes effect (RFC 3339, not in the past) [default: now].
        #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
        effective_time: Option<Timestamp>,
        /// Notes for the card (overrides `notes` in the file).
        #[arg(long)]
        notes: Option<String>,
        #[command(flatten)]
        request: RequestId,
    },
    /// Show a rate card: the one in force, or VERSION.
    Show {
        /// Card version [default: the card in force].
        version: Option<i64>,
        /// With no VERSION: the card in force at this time (RFC 3339) [default: now].
        #[arg(long, value_name = "RFC3339", value_parser = timestamp, conflicts_with = "version")]
        at: Option<Timestamp>,
    },
    /// List rate cards.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Which account: by id or by external id.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct AccountRef {
    /// Account id (`acct_…`).
    #[arg(long)]
    account: Option<String>,
    /// The account's external id instead of its id.
    #[arg(long)]
    external_id: Option<String>,
}

/// Which wallet: an account and a unit.
#[derive(Debug, Args)]
#[group(skip)]
pub struct WalletRef {
    #[command(flatten)]
    account: AccountRef,
    /// Unit of the wallet.
    #[arg(long, default_value = "credits")]
    unit: String,
}

impl WalletRef {
    /// `(account_id, external_id, unit)`, unset ones empty.
    fn into_parts(self) -> (String, String, String) {
        (
            self.account.account.unwrap_or_default(),
            self.account.external_id.unwrap_or_default(),
            self.unit,
        )
    }
}

/// What to price: a wallet, a request type and quantities.
#[derive(Debug, Args)]
#[group(skip)]
pub struct PriceArgs {
    #[command(flatten)]
    wallet: WalletRef,
    /// Request type, as in the rate card (e.g. chat.message).
    #[arg(long = "type", value_name = "REQUEST_TYPE")]
    request_type: String,
    /// A quantity (decimal); repeat for more.
    #[arg(long = "qty", value_name = "NAME=VALUE", value_parser = pair)]
    quantities: Vec<(String, String)>,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct DebitArgs {
    #[command(flatten)]
    price: PriceArgs,
    /// Metadata stored with the ledger entry; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = pair)]
    metadata: Vec<(String, String)>,
    /// Fail (OVER_CALLER_CAP) rather than charge more than this.
    #[arg(long, value_name = "DECIMAL")]
    max_units: Option<String>,
    #[command(flatten)]
    request: RetryKey,
}

/// What to hold: an estimate priced by the rate card in force, or exact units.
#[derive(Debug, Args)]
#[group(skip)]
pub struct ReserveArgs {
    #[command(flatten)]
    wallet: WalletRef,
    /// Request type, as in the rate card; --qty estimates are priced with it.
    #[arg(
        long = "type",
        value_name = "REQUEST_TYPE",
        required_unless_present = "units"
    )]
    request_type: Option<String>,
    /// An estimated quantity (decimal); repeat for more.
    #[arg(
        long = "qty",
        value_name = "NAME=VALUE",
        value_parser = pair,
        requires = "request_type",
        conflicts_with = "units"
    )]
    quantities: Vec<(String, String)>,
    /// Hold exactly this many units (decimal) instead of pricing quantities.
    #[arg(long, value_name = "DECIMAL")]
    units: Option<String>,
    /// How long the hold lasts, e.g. 90s, 15m, 1h30m [server default: 15m].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    ttl: Option<prost_types::Duration>,
    #[command(flatten)]
    request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct CaptureArgs {
    /// Reservation id (`rsv_…`).
    reservation_id: String,
    #[command(flatten)]
    actual: ActualCost,
    #[command(flatten)]
    request: RetryKey,
}

/// What a held request really cost: its quantities, or units.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ActualCost {
    /// An actual quantity (decimal), priced with the reservation's request type by the card
    /// in force; repeat for more.
    #[arg(long = "qty", value_name = "NAME=VALUE", value_parser = pair)]
    quantities: Vec<(String, String)>,
    /// The actual units to charge (decimal).
    #[arg(long, value_name = "DECIMAL")]
    units: Option<String>,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct ReleaseArgs {
    /// Reservation id (`rsv_…`).
    reservation_id: String,
    #[command(flatten)]
    request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct RefundArgs {
    /// Transaction id of the debit or capture.
    transaction_id: String,
    /// Units to return (decimal) [default: everything not yet refunded].
    #[arg(long, value_name = "DECIMAL")]
    units: Option<String>,
    /// Why (shown on statements).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct AdjustArgs {
    /// Wallet id (`wal_…`).
    #[arg(long)]
    wallet: String,
    /// Units to add (positive) or remove (negative, e.g. `--units -5`), decimal.
    #[arg(long, value_name = "SIGNED_DECIMAL", allow_hyphen_values = true)]
    units: String,
    /// Why (required; shown on statements).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct TransactionsArgs {
    #[command(flatten)]
    wallet: WalletRef,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct PageArgs {
    /// Items per page [server default].
    #[arg(long, value_name = "N")]
    page_size: Option<i32>,
    /// Start at this page (a `next_page_token` from an earlier listing).
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow next_page_token to the last page.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct RequestId {
    /// Idempotency key: repeating a call with the same key is safe [default: a new UUID].
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

impl RequestId {
    fn get(self) -> String {
        self.request_id
            .unwrap_or_else(|| Uuid::new_v4().to_string())
    }
}

/// The idempotency key of a call that moves units: a generated one is printed.
#[derive(Debug, Args)]
#[group(skip)]
pub struct RetryKey {
    /// Idempotency key. Without one a UUID is generated and printed (stderr): retry with it.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

impl RetryKey {
    fn get(self) -> String {
        self.request_id.unwrap_or_else(|| {
            let id = Uuid::new_v4().to_string();
            eprintln!("request_id: {id} (to retry safely: --request-id {id})");
            id
        })
    }
}

/// A command-line enum mirroring a proto enum (without UNSPECIFIED), sent as its number.
macro_rules! proto_enum {
    ($($name:ident => $proto:ident { $($variant:ident),* $(,)? })*) => {$(
        #[derive(Debug, Clone, Copy, ValueEnum)]
        pub enum $name {
            $($variant),*
        }

        impl From<$name> for i32 {
            fn from(value: $name) -> i32 {
                let value = match value {
                    $($name::$variant => proto::$proto::$variant),*
                };
                value.into()
            }
        }
    )*};
}

proto_enum! {
    AccountState => AccountState { Active, Suspended, Closed }
    GrantKind => GrantKind { Contract, Purchase, Promotional, Adjustment }
    Period => SchedulePeriod { Daily, Weekly, Monthly, Yearly }
}

fn pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

/// A spend cap: a decimal, or `none` (sent as empty: no cap).
fn cap(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("give a decimal, or `none` to remove the cap".to_string()),
        none if none.eq_ignore_ascii_case("none") => Ok(String::new()),
        amount => Ok(amount.to_string()),
    }
}

/// `90s`, `15m`, `1h30m`, `2h`, `1d`: whole numbers, each with a unit (d, h, m, s).
fn duration(text: &str) -> Result<prost_types::Duration, String> {
    let invalid = || format!("`{text}` is not a duration like 90s, 15m or 1h30m");
    let mut seconds: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: i64 = rest[..digits].parse().map_err(|_| invalid())?;
        let unit = match rest[digits..].chars().next() {
            Some('d') => 86_400,
            Some('h') => 3_600,
            Some('m') => 60,
            Some('s') => 1,
            _ => return Err(invalid()),
        };
        seconds = number
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(invalid)?;
        rest = &rest[digits + 1..];
    }
    Ok(prost_types::Duration { seconds, nanos: 0 })
}

/// The update mask: the paths whose flag was given.
fn update_mask(paths: &[(&str, bool)]) -> Option<FieldMask> {
    let paths = paths
        .iter()
        .filter(|(_, given)| *given)
        .map(|(path, _)| path.to_string())
        .collect();
    Some(FieldMask { paths })
}

fn timestamp(text: &str) -> Result<Timestamp, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|err| {
        format!("`{text}` is not an RFC 3339 time like 2026-11-01T00:00:00Z: {err}")
    })?;
    Ok(Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).map_err(|err| err.to_string())?,
    })
}

// ---- connection, auth, errors ----------------------------------------------------------------

/// Sends `authorization: Bearer <token>` with every call (nothing without a token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self> {
        let value = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => {
                let mut value: AsciiMetadataValue = format!("Bearer {token}")
                    .parse()
                    .context("the token (--token / ALLOT_TOKEN) must be printable ASCII")?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel every generated client is built on.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A failed call: `CODE REASON: message`, then the ErrorInfo metadata one `key: value` a line.
#[derive(Debug)]
pub struct RpcError {
    pub status: Status,
    pub server: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = code_name(self.status.code());
        let message = self.status.message();
        match self.status.get_error_details().error_info() {
            Some(info) => {
                write!(f, "{code} {}: {message}", info.reason)?;
                let metadata: BTreeMap<_, _> = info.metadata.iter().collect();
                for (key, value) in metadata {
                    write!(f, "\n  {key}: {value}")?;
                }
                Ok(())
            }
            // Not from allot's handlers (transport, proxy, unknown method): say where we went.
            None => write!(f, "{code}: {message} (server {})", self.server),
        }
    }
}

impl std::error::Error for RpcError {}

/// What every command works with: a connection made on first use, and the printer.
struct Ctx {
    server: String,
    bearer: Bearer,
    channel: OnceCell<Channel>,
    out: Output,
}

impl Ctx {
    fn new(args: &ClientArgs) -> Result<Self> {
        Ok(Ctx {
            server: args
                .server
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            bearer: Bearer::new(args.token.as_deref())?,
            channel: OnceCell::new(),
            out: Output { json: args.json },
        })
    }

    /// A generated client on the shared, authenticated channel, e.g.
    /// `ctx.client(AccountServiceClient::new)`.
    async fn client<C>(&self, make: fn(Authed) -> C) -> Result<C> {
        let channel = self.channel.get_or_try_init(|| self.connect()).await?;
        Ok(make(InterceptedService::new(
            channel.clone(),
            self.bearer.clone(),
        )))
    }

    async fn connect(&self) -> Result<Channel> {
        let hint = if self.server.starts_with("https://") {
            " over TLS (if the server serves plaintext, use http://)"
        } else {
            ""
        };
        endpoint(&self.server)?.connect().await.with_context(|| {
            format!(
                "cannot connect to the allot server at {}{hint}",
                self.server
            )
        })
    }

    /// Awaits a call; a failure becomes an [`RpcError`].
    async fn call<T>(
        &self,
        response: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T> {
        match response.await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(RpcError {
                status,
                server: self.server.clone(),
            }
            .into()),
        }
    }

    /// Awaits a call and prints the message it returns.
    async fn show<T: Show>(
        &self,
        response: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<()> {
        let message = self.call(response).await?;
        Ok(self.out.one(&message)?)
    }

    /// Lists one page, or with `--all` every page from the first asked for, and prints them.
    /// `call(client, request)` makes one call, e.g. `|mut c, r| async move { c.list_x(r).await }`.
    async fn pages<C: Clone, R: ListRequest, P: Page, F>(
        &self,
        page: PageArgs,
        client: &C,
        request: R,
        mut call: impl FnMut(C, R) -> F,
    ) -> Result<()>
    where
        F: Future<Output = Result<Response<P>, Status>>,
    {
        let page_size = page.page_size.unwrap_or(0);
        let mut token = page.page_token.unwrap_or_default();
        let mut items = Vec::new();
        loop {
            let request = request.clone().page(page_size, token);
            let (mut batch, next) = self.call(call(client.clone(), request)).await?.into_parts();
            items.append(&mut batch);
            token = next;
            if !page.all || token.is_empty() {
                break;
            }
        }
        Ok(self.out.many::<P>(&items, &token)?)
    }
}

/// A list request, whose page can be chosen.
trait ListRequest: Clone {
    fn page(self, page_size: i32, page_token: String) -> Self;
}

macro_rules! list_request {
    ($($request:ident),*) => {$(
        impl ListRequest for proto::$request {
            fn page(mut self, page_size: i32, page_token: String) -> Self {
                self.page_size = page_size;
                self.page_token = page_token;
                self
            }
        }
    )*};
}

list_request!(
    ListAccountsRequest,
    ListWalletsRequest,
    ListGrantsRequest,
    ListAllotmentSchedulesRequest,
    ListRateCardsRequest,
    ListTransactionsRequest
);

// ---- commands --------------------------------------------------------------------------------

impl ClientCommand {
    fn client_args(&self) -> &ClientArgs {
        match self {
            ClientCommand::Accounts(group) => &group.client,
            ClientCommand::Wallets(group) => &group.client,
            ClientCommand::Grants(group) => &group.client,
            ClientCommand::Schedules(group) => &group.client,
            ClientCommand::Rates(group) => &group.client,
            ClientCommand::Quote(single) => &single.client,
            ClientCommand::Debit(single) => &single.client,
            ClientCommand::Reserve(single) => &single.client,
            ClientCommand::Capture(single) => &single.client,
            ClientCommand::Release(single) => &single.client,
            ClientCommand::Refund(single) => &single.client,
            ClientCommand::Adjust(single) => &single.client,
            ClientCommand::Balance(single) => &single.client,
            ClientCommand::Transactions(single) => &single.client,
            ClientCommand::Report(group) => &group.client,
        }
    }
}

/// Runs a client command; `outer` holds the client options given before its name.
pub async fn run(command: ClientCommand, outer: &ClientArgs) -> Result<()> {
    let ctx = Ctx::new(&command.client_args().resolve(outer))?;
    match command {
        ClientCommand::Accounts(group) => accounts(&ctx, group.command).await,
        ClientCommand::Wallets(group) => wallets(&ctx, group.command).await,
        ClientCommand::Grants(group) => grants(&ctx, group.command).await,
        ClientCommand::Schedules(group) => schedules(&ctx, group.command).await,
        ClientCommand::Rates(group) => rates(&ctx, group.command).await,
        ClientCommand::Quote(single) => quote(&ctx, single.args).await,
        ClientCommand::Debit(single) => debit(&ctx, single.args).await,
        ClientCommand::Reserve(single) => reserve(&ctx, single.args).await,
        ClientCommand::Capture(single) => capture(&ctx, single.args).await,
        ClientCommand::Release(single) => release(&ctx, single.args).await,
        ClientCommand::Refund(single) => refund(&ctx, single.args).await,
        ClientCommand::Adjust(single) => adjust(&ctx, single.args).await,
        ClientCommand::Balance(single) => balance(&ctx, single.args).await,
        ClientCommand::Transactions(single) => transactions(&ctx, single.args).await,
        ClientCommand::Report(group) => report(&ctx, group.command).await,
    }
}

async fn accounts(ctx: &Ctx, command: AccountsCommand) -> Result<()> {
    let mut client = ctx.client(AccountServiceClient::new).await?;
    match command {
        AccountsCommand::Create(args) => {
            let account = proto::Account {
                external_id: args.external_id,
                display_name: args.name.unwrap_or_default(),
                parent_id: args.parent.unwrap_or_default(),
                state: args.state.map_or(0, i32::from),
                labels: args.labels.into_iter().collect(),
                ..Default::default()
            };
            let request = proto::CreateAccountRequest {
                account: Some(account),
                request_id: args.request.get(),
            };
            ctx.show(client.create_account(request)).await
        }
        AccountsCommand::Get { id } => {
            ctx.show(client.get_account(proto::GetAccountRequest { id }))
                .await
        }
        AccountsCommand::List { parent, page } => {
            let request = proto::ListAccountsRequest {
                parent_id: parent.unwrap_or_default(),
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_accounts(r).await
            })
            .await
        }
        AccountsCommand::Update(args) => {
            let changes = args.changes;
            let update_mask = update_mask(&[
                ("display_name", changes.name.is_some()),
                ("labels", !changes.labels.is_empty() || changes.clear_labels),
                ("state", changes.state.is_some()),
            ]);
            let account = proto::Account {
                id: args.id,
                display_name: changes.name.unwrap_or_default(),
                labels: changes.labels.into_iter().collect(),
                state: changes.state.map_or(0, i32::from),
                ..Default::default()
            };
            let request = proto::UpdateAccountRequest {
                account: Some(account),
                update_mask,
                request_id: args.request.get(),
            };
            ctx.show(client.update_account(request)).await
        }
    }
}

async fn wallets(ctx: &Ctx, command: WalletsCommand) -> Result<()> {
    let mut client = ctx.client(AccountServiceClient::new).await?;
    match command {
        WalletsCommand::Create {
            account,
            unit,
            overdraft_limit,
            request,
        } => {
            let wallet = proto::Wallet {
                account_id: account,
                unit,
                overdraft_limit: overdraft_limit.unwrap_or_default(),
                ..Default::default()
            };
            let request = proto::CreateWalletRequest {
                wallet: Some(wallet),
                request_id: request.get(),
            };
            ctx.show(client.create_wallet(request)).await
        }
        WalletsCommand::Get { id } => {
            ctx.show(client.get_wallet(proto::GetWalletRequest { id }))
                .await
        }
        WalletsCommand::List { account, page } => {
            let request = proto::ListWalletsRequest {
                account_id: account,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_wallets(r).await
            })
            .await
        }
        WalletsCommand::Update(args) => ctx.show(client.update_wallet(args.request())).await,
    }
}

async fn grants(ctx: &Ctx, command: GrantsCommand) -> Result<()> {
    let mut client = ctx.client(GrantServiceClient::new).await?;
    match command {
        GrantsCommand::Create(args) => {
            let terms = args.terms;
            let grant = proto::Grant {
                wallet_id: args.wallet,
                kind: terms.kind.into(),
                amount: args.amount,
                priority: terms.priority,
                effective_time: args.effective_time,
                expire_time: args.expire_time,
                unit_price: terms.unit_price.unwrap_or_default(),
                currency: terms.currency.unwrap_or_default(),
                contract_ref: terms.contract_ref.unwrap_or_default(),
                ..Default::default()
            };
            let request = proto::CreateGrantRequest {
                grant: Some(grant),
                request_id: args.request.get(),
            };
            ctx.show(client.create_grant(request)).await
        }
        GrantsCommand::List { wallet, page } => {
            let request = proto::ListGrantsRequest {
                wallet_id: wallet,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_grants(r).await
            })
            .await
        }
        GrantsCommand::Void {
            id,
            reason,
            request,
        } => {
            let request = proto::VoidGrantRequest {
                id,
                reason: reason.unwrap_or_default(),
                request_id: request.get(),
            };
            ctx.show(client.void_grant(request)).await
        }
    }
}

impl UpdateWalletArgs {
    /// The wallet with the changes given, and a mask naming just those.
    fn request(self) -> proto::UpdateWalletRequest {
        let changes = self.changes;
        let update_mask = update_mask(&[
            ("overdraft_limit", changes.overdraft_limit.is_some()),
            ("daily_spend_cap", changes.daily_cap.is_some()),
            ("monthly_spend_cap", changes.monthly_cap.is_some()),
            (
                "low_balance_thresholds",
                !changes.thresholds.is_empty() || changes.clear_thresholds,
            ),
        ]);
        let wallet = proto::Wallet {
            id: self.id,
            overdraft_limit: changes.overdraft_limit.unwrap_or_default(),
            daily_spend_cap: changes.daily_cap.unwrap_or_default(),
            monthly_spend_cap: changes.monthly_cap.unwrap_or_default(),
            low_balance_thresholds: changes.thresholds,
            ..Default::default()
        };
        proto::UpdateWalletRequest {
            wallet: Some(wallet),
            update_mask,
            request_id: self.request.get(),
        }
    }
}

impl CreateScheduleArgs {
    /// Rollover CAPPED when a cap is given, else NONE.
    fn request(self) -> proto::CreateAllotmentScheduleRequest {
        let terms = self.terms;
        let rollover_policy = match self.rollover_cap {
            Some(_) => proto::RolloverPolicy::Capped,
            None => proto::RolloverPolicy::None,
        };
        let schedule = proto::AllotmentSchedule {
            wallet_id: self.wallet,
            amount: self.amount,
            period: self.period.into(),
            start_time: self.start,
            end_time: self.end,
            rollover_policy: rollover_policy.into(),
            rollover_cap: self.rollover_cap.unwrap_or_default(),
            kind: terms.kind.into(),
            priority: terms.priority,
            unit_price: terms.unit_price.unwrap_or_default(),
            currency: terms.currency.unwrap_or_default(),
            contract_ref: terms.contract_ref.unwrap_or_default(),
            ..Default::default()
        };
        proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(schedule),
            request_id: self.request.get(),
        }
    }
}

async fn schedules(ctx: &Ctx, command: SchedulesCommand) -> Result<()> {
    let mut client = ctx.client(GrantServiceClient::new).await?;
    match command {
        SchedulesCommand::Create(args) => {
            ctx.show(client.create_allotment_schedule(args.request()))
                .await
        }
        SchedulesCommand::List { wallet, page } => {
            let request = proto::ListAllotmentSchedulesRequest {
                wallet_id: wallet,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_allotment_schedules(r).await
            })
            .await
        }
    }
}

async fn rates(ctx: &Ctx, command: RatesCommand) -> Result<()> {
    match command {
        RatesCommand::Publish {
            file,
            effective_time,
            notes,
            request,
        } => {
            let mut card = rates_file::load(&file)?;
            // Checked here too so that a bad time does not leave an unpublished draft behind.
            if let Some(time) = &effective_time
                && time.seconds < chrono::Utc::now().timestamp()
            {
                bail!("--effective-time lies in the past");
            }
            if let Some(notes) = notes {
                card.notes = notes;
            }
            let mut client = ctx.client(RateCardServiceClient::new).await?;
            let create = proto::CreateRateCardRequest {
                rate_card: Some(card),
                request_id: request.get(),
            };
            let draft = ctx.call(client.create_rate_card(create)).await?;
            let publish = proto::PublishRateCardRequest {
                version: draft.version,
                etag: draft.etag,
                effective_time,
                // Publishing is safe to retry without a key: a second publish fails.
                request_id: String::new(),
            };
            ctx.show(client.publish_rate_card(publish))
                .await
                .with_context(|| {
                    format!(
                        "draft rate card version {} was created but not published",
                        draft.version
                    )
                })
        }
        RatesCommand::Show { version, at } => {
            let mut client = ctx.client(RateCardServiceClient::new).await?;
            let request = proto::GetRateCardRequest {
                version: version.unwrap_or(0),
                time: at,
            };
            ctx.show(client.get_rate_card(request)).await
        }
        RatesCommand::List { page } => {
            let client = ctx.client(RateCardServiceClient::new).await?;
            let request = proto::ListRateCardsRequest::default();
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_rate_cards(r).await
            })
            .await
        }
    }
}

async fn quote(ctx: &Ctx, args: PriceArgs) -> Result<()> {
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let request = proto::QuotePriceRequest {
        account_id,
        external_id,
        unit,
        request_type: args.request_type,
        quantities: args.quantities.into_iter().collect(),
    };
    let mut client = ctx.client(RateCardServiceClient::new).await?;
    ctx.show(client.quote_price(request)).await
}

async fn debit(ctx: &Ctx, args: DebitArgs) -> Result<()> {
    let request_id = args.request.get();
    let (account_id, external_id, unit) = args.price.wallet.into_parts();
    let request = proto::DebitRequest {
        account_id,
        external_id,
        unit,
        request_type: args.price.request_type,
        quantities: args.price.quantities.into_iter().collect(),
        request_id,
        metadata: args.metadata.into_iter().collect(),
        max_units: args.max_units.unwrap_or_default(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.debit(request)).await
}

async fn reserve(ctx: &Ctx, args: ReserveArgs) -> Result<()> {
    let request_id = args.request.get();
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let request = proto::ReserveRequest {
        account_id,
        external_id,
        unit,
        request_type: args.request_type.unwrap_or_default(),
        quantities: args.quantities.into_iter().collect(),
        units: args.units.unwrap_or_default(),
        ttl: args.ttl,
        request_id,
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.reserve(request)).await
}

async fn capture(ctx: &Ctx, args: CaptureArgs) -> Result<()> {
    let request = proto::CaptureReservationRequest {
        reservation_id: args.reservation_id,
        quantities: args.actual.quantities.into_iter().collect(),
        units: args.actual.units.unwrap_or_default(),
        request_id: args.request.get(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.capture_reservation(request)).await
}

async fn release(ctx: &Ctx, args: ReleaseArgs) -> Result<()> {
    let request = proto::ReleaseReservationRequest {
        reservation_id: args.reservation_id,
        request_id: args.request.get(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.release_reservation(request)).await
}

async fn refund(ctx: &Ctx, args: RefundArgs) -> Result<()> {
    let request = proto::RefundRequest {
        transaction_id: args.transaction_id,
        units: args.units.unwrap_or_default(),
        reason: args.reason.unwrap_or_default(),
        request_id: args.request.get(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.refund(request)).await
}

async fn adjust(ctx: &Ctx, args: AdjustArgs) -> Result<()> {
    let request = proto::AdjustBalanceRequest {
        wallet_id: args.wallet,
        units: args.units,
        reason: args.reason,
        request_id: args.request.get(),
    };
    let mut client = ctx.client(GrantServiceClient::new).await?;
    ctx.show(client.adjust_balance(request)).await
}

async fn balance(ctx: &Ctx, args: WalletRef) -> Result<()> {
    let (account_id, external_id, unit) = args.into_parts();
    let request = proto::GetBalanceRequest {
        account_id,
        external_id,
        unit,
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    let balance = ctx.call(client.get_balance(request)).await?;
    Ok(ctx.out.row(&balance)?)
}

async fn transactions(ctx: &Ctx, args: TransactionsArgs) -> Result<()> {
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let request = proto::ListTransactionsRequest {
        account_id,
        external_id,
        unit,
        ..Default::default()
    };
    let client = ctx.client(LedgerServiceClient::new).await?;
    ctx.pages(args.page, &client, request, |mut c, r| async move {
        c.list_transactions(r).await
    })
    .await
}

async fn report(ctx: &Ctx, command: ReportCommand) -> Result<()> {
    let ReportCommand::Statement(args) = command;
    let request = proto::GetStatementRequest {
        account_id: args.wallet.account.unwrap_or_default(),
        wallet_id: args.wallet.wallet.unwrap_or_default(),
        unit: args.unit.unwrap_or_default(),
        start_time: args.from,
        end_time: args.to,
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let statement = ctx.call(client.get_statement(request)).await?;
    match args.csv {
        None => Ok(ctx.out.one(&statement)?),
        Some(path) if path.as_os_str() == "-" => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(statement::csv(&statement).as_bytes())?;
            Ok(stdout.flush()?)
        }
        Some(path) => {
            std::fs::write(&path, statement::csv(&statement))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "statement of {} ({} movements) written to {}",
                statement.wallet_id,
                statement.movements.len(),
                path.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;
    use crate::cli::{Command, parse_from};

    /// The client command and its options, completed by the ones given before its name.
    fn parse_full(args: &[&str]) -> Result<(ClientCommand, ClientArgs), clap::Error> {
        let cli = parse_from(std::iter::once("allot").chain(args.iter().copied()))?;
        let outer = ClientArgs {
            server: cli.client.server.clone(),
            token: cli.client.token.clone(),
            json: cli.client.json,
        };
        match cli.command {
            Command::Client(command) => {
                let resolved = command.client_args().resolve(&outer);
                Ok((command, resolved))
            }
            other => panic!("not a client command: {other:?}"),
        }
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        parse_full(args).map(|(command, _)| command)
    }

    #[test]
    fn the_command_line_is_consistent() {
        crate::cli::command().debug_assert();
    }

    #[test]
    fn client_options_go_before_the_command_name_too() {
        let (_, resolved) = parse_full(&[
            "--server",
            "http://top:1",
            "--token",
            "t0",
            "--json",
            "accounts",
            "list",
        ])
        .unwrap();
        assert_eq!(resolved.server.as_deref(), Some("http://top:1"));
        assert_eq!(resolved.token.as_deref(), Some("t0"));
        assert!(resolved.json);
        // After the command name wins over before it.
        let (_, resolved) = parse_full(&[
            "--server",
            "http://top:1",
            "balance",
            "--account",
            "acct_1",
            "--server",
            "http://inner:2",
        ])
        .unwrap();
        assert_eq!(resolved.server.as_deref(), Some("http://inner:2"));
    }

    #[test]
    fn negative_numbers_are_values_everywhere() {
        let command =
            parse(&["grants", "create", "--wallet", "wal_1", "--amount", "-100"]).unwrap();
        let ClientCommand::Grants(Group {
            command: GrantsCommand::Create(create),
            ..
        }) = command
        else {
            panic!("not grants create")
        };
        assert_eq!(create.amount, "-100");
    }

    #[test]
    fn client_options_go_before_or_after_the_subcommand() {
        for args in [
            &[
                "accounts",
                "--server",
                "http://h:1",
                "--json",
                "get",
                "acct_1",
            ][..],
            &[
                "accounts",
                "get",
                "acct_1",
                "--server",
                "http://h:1",
                "--json",
            ][..],
        ] {
            let (_, resolved) = parse_full(args).unwrap();
            assert_eq!(resolved.server.as_deref(), Some("http://h:1"));
            assert!(resolved.json);
        }
    }

    #[test]
    fn an_account_is_named_exactly_once() {
        let base = [
            "debit",
            "--type",
            "chat.message",
            "--qty",
            "output_tokens=10",
        ];
        assert!(parse(&base).is_err());
        let both = [&base[..], &["--account", "acct_1", "--external-id", "x"]].concat();
        assert!(parse(&both).is_err());
        let one = [&base[..], &["--external-id", "cust-42", "--meta", "k=v"]].concat();
        let ClientCommand::Debit(debit) = parse(&one).unwrap() else {
            panic!()
        };
        let (account_id, external_id, unit) = debit.args.price.wallet.into_parts();
        assert_eq!((account_id.as_str(), external_id.as_str()), ("", "cust-42"));
        assert_eq!(unit, "credits");
        assert_eq!(
            debit.args.price.quantities,
            [("output_tokens".into(), "10".into())]
        );
    }

    #[test]
    fn update_needs_a_change() {
        assert!(parse(&["accounts", "update", "acct_1"]).is_err());
        assert!(parse(&["accounts", "update", "acct_1", "--state", "suspended"]).is_ok());
        assert!(parse(&["accounts", "update", "acct_1", "--label", "a"]).is_err());
    }

    #[test]
    fn adjust_takes_negative_units() {
        for units in ["-5", "-0.25", "12.5"] {
            let args = [
                "adjust", "--wallet", "wal_1", "--units", units, "--reason", "goodwill",
            ];
            let ClientCommand::Adjust(adjust) = parse(&args).unwrap() else {
                panic!()
            };
            assert_eq!(adjust.args.units, units);
            assert_eq!(adjust.args.reason, "goodwill");
        }
        assert!(parse(&["adjust", "--wallet", "wal_1", "--units", "-5"]).is_err());
    }

    fn wallet_update(args: &[&str]) -> Result<proto::UpdateWalletRequest, clap::Error> {
        let args = [
            &["wallets", "update", "wal_1", "--request-id", "r"][..],
            args,
        ]
        .concat();
        match parse(&args)? {
            ClientCommand::Wallets(Group {
                command: WalletsCommand::Update(update),
                ..
            }) => Ok(update.request()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wallet_updates_mask_the_flags_given_and_none_clears_a_cap() {
        let request = wallet_update(&["--daily-cap", "none", "--monthly-cap", "500"]).unwrap();
        let wallet = request.wallet.unwrap();
        assert_eq!(
            (
                wallet.daily_spend_cap.as_str(),
                wallet.monthly_spend_cap.as_str()
            ),
            ("", "500")
        );
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["daily_spend_cap", "monthly_spend_cap"]
        );
        let request = wallet_update(&[
            "--threshold",
            "10",
            "--threshold",
            "-5",
            "--overdraft-limit",
            "3",
        ])
        .unwrap();
        assert_eq!(request.wallet.unwrap().low_balance_thresholds, ["10", "-5"]);
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["overdraft_limit", "low_balance_thresholds"]
        );
        let request = wallet_update(&["--clear-thresholds"]).unwrap();
        assert!(request.wallet.unwrap().low_balance_thresholds.is_empty());
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["low_balance_thresholds"]
        );
        assert!(wallet_update(&[]).is_err());
        assert!(wallet_update(&["--daily-cap", ""]).is_err());
        assert!(wallet_update(&["--threshold", "1", "--clear-thresholds"]).is_err());
        assert_eq!(cap("NONE"), Ok(String::new()));
    }

    #[test]
    fn schedules_roll_over_only_with_a_cap() {
        let create = |extra: &[&str]| {
            let args = [
                &[
                    "schedules",
                    "create",
                    "--wallet",
                    "wal_1",
                    "--amount",
                    "100",
                ][..],
                &["--period", "monthly", "--request-id", "r"],
                extra,
            ]
            .concat();
            match parse(&args).unwrap() {
                ClientCommand::Schedules(Group {
                    command: SchedulesCommand::Create(create),
                    ..
                }) => create.request().allotment_schedule.unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let plain = create(&[]);
        assert_eq!(plain.rollover_policy, proto::RolloverPolicy::None as i32);
        assert_eq!(plain.period, proto::SchedulePeriod::Monthly as i32);
        assert_eq!(plain.kind, proto::GrantKind::Contract as i32);
        let capped = create(&["--rollover-cap", "50", "--kind", "purchase"]);
        assert_eq!(capped.rollover_policy, proto::RolloverPolicy::Capped as i32);
        assert_eq!(capped.rollover_cap, "50");
        assert_eq!(capped.kind, proto::GrantKind::Purchase as i32);
        assert!(parse(&["schedules", "create", "--wallet", "w", "--amount", "1"]).is_err());
    }

    #[test]
    fn holds_are_priced_or_sized() {
        let reserve = ["reserve", "--account", "acct_1"];
        let with = |extra: &[&str]| parse(&[&reserve[..], extra].concat());
        assert!(with(&[]).is_err());
        assert!(with(&["--qty", "output_tokens=10"]).is_err());
        assert!(with(&["--units", "5", "--type", "t", "--qty", "a=1"]).is_err());
        assert!(with(&["--units", "5"]).is_ok());
        let Ok(ClientCommand::Reserve(hold)) = with(&[
            "--type",
            "chat.message",
            "--qty",
            "output_tokens=10",
            "--ttl",
            "1h30m",
        ]) else {
            panic!()
        };
        assert_eq!(hold.args.ttl.unwrap().seconds, 5_400);
        assert_eq!(hold.args.request_type.as_deref(), Some("chat.message"));
        let capture = |extra: &[&str]| parse(&[&["capture", "rsv_1"][..], extra].concat());
        assert!(capture(&[]).is_err());
        assert!(capture(&["--units", "3", "--qty", "a=1"]).is_err());
        assert!(capture(&["--qty", "a=1", "--qty", "b=2"]).is_ok());
        assert!(capture(&["--units", "3"]).is_ok());
    }

    #[test]
    fn durations_have_units() {
        let seconds = |text| duration(text).map(|d| d.seconds);
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("15m"), Ok(900));
        assert_eq!(seconds("1h30m"), Ok(5_400));
        assert_eq!(seconds("1d"), Ok(86_400));
        for bad in ["", "15", "m", "1.5h", "-5m", "3w", "1h 5m"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_name_an_account_or_a_wallet() {
        let statement = |extra: &[&str]| parse(&[&["report", "statement"][..], extra].concat());
        assert!(statement(&[]).is_err());
        assert!(statement(&["--account", "a", "--wallet", "w"]).is_err());
        assert!(statement(&["--wallet", "w", "--unit", "credits"]).is_err());
        assert!(statement(&["--account", "a", "--unit", "credits", "--csv", "-"]).is_ok());
        let Ok(ClientCommand::Report(group)) =
            statement(&["--wallet", "w", "--from", "2026-01-01T00:00:00Z"])
        else {
            panic!()
        };
        let ReportCommand::Statement(args) = group.command;
        assert_eq!(args.from.unwrap().seconds, 1_767_225_600);
        assert!(args.to.is_none() && args.csv.is_none());
    }

    #[test]
    fn times_are_rfc3339() {
        let ts = timestamp("2026-11-01T01:00:00.25+01:00").unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_793_491_200, 250_000_000));
        assert!(timestamp("2026-11-01").is_err());
    }

    #[test]
    fn errors_show_code_reason_message_and_metadata() {
        let details = ErrorDetails::with_error_info(
            "INSUFFICIENT_CREDITS",
            "allot",
            [
                ("needed".to_string(), "5".to_string()),
                ("available".to_string(), "3".to_string()),
            ],
        );
        let status = Status::with_error_details(
            tonic::Code::FailedPrecondition,
            "not enough credits",
            details,
        );
        let err = RpcError {
            status,
            server: "http://h:1".into(),
        };
        assert_eq!(
            err.to_string(),
            "FAILED_PRECONDITION INSUFFICIENT_CREDITS: not enough credits\n  available: 3\n  needed: 5"
        );
        let bare = RpcError {
            status: Status::unavailable("tcp connect error"),
            server: "http://h:1".into(),
        };
        assert_eq!(
            bare.to_string(),
            "UNAVAILABLE: tcp connect error (server http://h:1)"
        );
    }

    #[test]
    fn the_token_goes_in_the_authorization_header() {
        let mut bearer = Bearer::new(Some("abc")).unwrap();
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc"
        );
        let mut none = Bearer::new(None).unwrap();
        assert!(none.call(Request::new(())).unwrap().metadata().is_empty());
        assert!(Bearer::new(Some("bad\ntoken")).is_err());
    }
}
