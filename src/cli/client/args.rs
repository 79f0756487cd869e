//! The client's command line: every command, its flags and their value parsers (clap).
//! What a command does with them is in the file of its group (`accounts.rs`, `ledger.rs`, …).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use prost_types::{FieldMask, Timestamp};
use uuid::Uuid;

use super::{budget, rates_file, statement};
use crate::proto;

const CLIENT_OPTIONS: &str = "Client options";

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
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
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
            tls: self.tls.clone(),
        }
    }
}

/// A command group (`accounts …`) with the client options.
#[derive(Debug, Args)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    pub(super) client: ClientArgs,
    #[command(subcommand)]
    pub(super) command: C,
}

/// A single command (`debit …`) with the client options.
#[derive(Debug, Args)]
pub struct Single<A: Args> {
    #[command(flatten)]
    pub(super) client: ClientArgs,
    #[command(flatten)]
    pub(super) args: A,
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
    /// Follow a wallet: its balance, then every change as it commits, one line each
    /// (JSON lines with --json) until stopped.
    Watch(Single<WatchArgs>),
    /// List a wallet's ledger entries, newest first.
    Transactions(Single<TransactionsArgs>),
    /// Contract prices per account (and its sub-accounts) ahead of the rate card.
    Overrides(Group<OverridesCommand>),
    /// The audit trail: rate card publishes, override changes, voids and adjustments.
    Audit(Single<AuditArgs>),
    /// Statements, budgets and usage for procurement and finance.
    Report(Group<ReportCommand>),
    /// Every ledger entry of an account, a wallet or your whole scope, oldest first, as CSV
    /// (or JSON lines with --json); streamed, whatever the number.
    Export(Single<ExportArgs>),
    /// Webhook endpoints: signed HTTP deliveries of balance events, their secrets,
    /// deliveries and replays.
    Webhooks(Group<WebhooksCommand>),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints its signing secret (shown only now).
    Create {
        /// Where to POST events (`https://…`).
        #[arg(long)]
        url: String,
        /// The account whose events (and its sub-accounts') are sent; without it, every
        /// account's (admins only).
        #[arg(long)]
        account: Option<String>,
        /// Only these event types (repeat), e.g. balance.threshold_crossed; default: all.
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        #[command(flatten)]
        request: RequestId,
    },
    /// Show one endpoint (without its secret).
    Get {
        /// Endpoint id (`whe_…`).
        id: String,
    },
    /// List endpoints (an account's; all of them for admins).
    List {
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change an endpoint's URL, event types, or turn it off and on.
    Update {
        /// Endpoint id (`whe_…`).
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// The event types (repeat); with --all-event-types: every type.
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        #[arg(long, conflicts_with = "event_types")]
        all_event_types: bool,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        request: RequestId,
    },
    /// Delete an endpoint and its deliveries.
    Delete {
        id: String,
        #[command(flatten)]
        request: RequestId,
    },
    /// A new signing secret (printed); the old one keeps signing for 24 hours.
    Rotate {
        id: String,
        #[command(flatten)]
        request: RequestId,
    },
    /// An endpoint's deliveries, newest first, with their attempts and answers.
    Deliveries {
        id: String,
        /// Only pending, delivered or dead ones.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Send a delivery again, or every delivery made in a time range.
    Replay {
        /// Endpoint id (`whe_…`).
        id: String,
        /// The delivery (`whd_…`).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        delivery: Option<String>,
        /// From (RFC 3339, inclusive).
        #[arg(long, value_name = "RFC3339", value_parser = timestamp, requires = "to")]
        from: Option<Timestamp>,
        /// To (RFC 3339, exclusive).
        #[arg(long, value_name = "RFC3339", value_parser = timestamp, requires = "from")]
        to: Option<Timestamp>,
        #[command(flatten)]
        request: RequestId,
    },
}

#[derive(Debug, Subcommand)]
pub enum OverridesCommand {
    /// Set an account's price for a request type from a time on (or end it with --clear).
    Set(SetOverrideArgs),
    /// List an account's override records (all of them, newest effective last).
    List {
        /// Account id (`acct_…`).
        #[arg(long)]
        account: String,
        /// Its sub-accounts' records too.
        #[arg(long)]
        sub_accounts: bool,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this account's events (`acct_…`).
    #[arg(long)]
    pub(super) account: Option<String>,
    /// With --account: its sub-accounts' events too.
    #[arg(long, requires = "account")]
    pub(super) sub_accounts: bool,
    /// Only these actions (repeat): RATE_CARD_PUBLISHED, ACCOUNT_OVERRIDE_SET, GRANT_VOIDED,
    /// BALANCE_ADJUSTED.
    #[arg(long = "action", value_name = "ACTION")]
    pub(super) actions: Vec<String>,
    /// Only this caller's changes (the token's `sub`).
    #[arg(long)]
    pub(super) actor: Option<String>,
    /// Only this resource, e.g. `rate_cards/3`.
    #[arg(long)]
    pub(super) resource: Option<String>,
    /// From (RFC 3339, inclusive).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) from: Option<Timestamp>,
    /// To (RFC 3339, exclusive).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) to: Option<Timestamp>,
    #[command(flatten)]
    pub(super) page: PageArgs,
}

#[derive(Debug, Args)]
pub struct SetOverrideArgs {
    /// Account id (`acct_…`); the price covers its sub-accounts too.
    #[arg(long)]
    pub(super) account: String,
    /// The request type priced.
    #[arg(long = "type", value_name = "REQUEST_TYPE")]
    pub(super) request_type: String,
    /// Units charged per request.
    #[arg(long, value_name = "UNITS", required_unless_present = "clear")]
    pub(super) flat: Option<String>,
    /// Units per quantity: `NAME=UNITS` (per 1) or `NAME=UNITS/PER`, e.g.
    /// `output_tokens=0.15/1000` (repeat for several).
    #[arg(long = "dim", value_name = "NAME=UNITS[/PER]", value_parser = dimension, conflicts_with = "clear")]
    pub(super) dimensions: Vec<proto::Dimension>,
    /// Cap per request.
    #[arg(long, value_name = "UNITS", conflicts_with = "clear")]
    pub(super) max: Option<String>,
    /// End the account's override instead (the parent's, or the card's price applies).
    #[arg(long, conflicts_with = "flat")]
    pub(super) clear: bool,
    /// From when (RFC 3339, not in the past) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) effective_time: Option<Timestamp>,
    /// Until when (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) expire_time: Option<Timestamp>,
    /// A note, e.g. the contract reference.
    #[arg(long)]
    pub(super) note: Option<String>,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

/// `NAME=UNITS` or `NAME=UNITS/PER`.
fn dimension(text: &str) -> Result<proto::Dimension, String> {
    let (name, price) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=UNITS or NAME=UNITS/PER"))?;
    let (units, per) = price.split_once('/').unwrap_or((price, ""));
    if name.is_empty() || units.is_empty() {
        return Err(format!("`{text}` is not NAME=UNITS or NAME=UNITS/PER"));
    }
    Ok(proto::Dimension {
        name: name.to_string(),
        per: per.to_string(),
        units: units.to_string(),
    })
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
    pub(super) external_id: String,
    /// Display name.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Parent account (departments); cannot change later.
    #[arg(long, value_name = "ACCOUNT")]
    pub(super) parent: Option<String>,
    /// A label; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = pair)]
    pub(super) labels: Vec<(String, String)>,
    /// Initial state [server default: active].
    #[arg(long, value_enum)]
    pub(super) state: Option<AccountState>,
    #[command(flatten)]
    pub(super) request: RequestId,
}

#[derive(Debug, Args)]
pub struct UpdateAccountArgs {
    /// Account id (`acct_…`).
    pub(super) id: String,
    #[command(flatten)]
    pub(super) changes: AccountChanges,
    #[command(flatten)]
    pub(super) request: RequestId,
}

/// Only the fields given are sent in the update mask.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct AccountChanges {
    /// New display name.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Replace all labels with these; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = pair)]
    pub(super) labels: Vec<(String, String)>,
    /// Remove all labels.
    #[arg(long, conflicts_with = "labels")]
    pub(super) clear_labels: bool,
    /// New state.
    #[arg(long, value_enum)]
    pub(super) state: Option<AccountState>,
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
        /// Days before an active grant expires that `grant.expiring` is sent; 0: never
        /// [server default: 7].
        #[arg(long, value_name = "DAYS")]
        grant_expiry_notice_days: Option<u32>,
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
    /// Change a wallet's overdraft limit, spend caps, low-balance thresholds or grant expiry
    /// notice.
    Update(UpdateWalletArgs),
}

#[derive(Debug, Args)]
pub struct UpdateWalletArgs {
    /// Wallet id (`wal_…`).
    pub(super) id: String,
    #[command(flatten)]
    pub(super) changes: WalletChanges,
    #[command(flatten)]
    pub(super) request: RequestId,
}

/// Only the fields given are sent in the update mask.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct WalletChanges {
    /// How far below zero `available` may go (decimal).
    #[arg(long, value_name = "DECIMAL")]
    pub(super) overdraft_limit: Option<String>,
    /// Most units debits, captures and holds may use per UTC day (decimal); `none` removes the
    /// cap.
    #[arg(long, value_name = "DECIMAL|none", value_parser = cap)]
    pub(super) daily_cap: Option<String>,
    /// Most units debits, captures and holds may use per UTC month (decimal); `none` removes
    /// the cap.
    #[arg(long, value_name = "DECIMAL|none", value_parser = cap)]
    pub(super) monthly_cap: Option<String>,
    /// Replace the low-balance thresholds with these (decimal); repeat for more.
    #[arg(
        long = "threshold",
        value_name = "DECIMAL",
        allow_negative_numbers = true
    )]
    pub(super) thresholds: Vec<String>,
    /// Remove all low-balance thresholds.
    #[arg(long, conflicts_with = "thresholds")]
    pub(super) clear_thresholds: bool,
    /// Days before an active grant expires that `grant.expiring` is sent; 0: never.
    #[arg(long, value_name = "DAYS")]
    pub(super) grant_expiry_notice_days: Option<u32>,
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
    pub(super) wallet: String,
    /// Units granted (decimal, > 0).
    #[arg(long, value_name = "DECIMAL")]
    pub(super) amount: String,
    /// When the units become usable (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) effective_time: Option<Timestamp>,
    /// When the remaining units expire (RFC 3339) [default: never].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) expire_time: Option<Timestamp>,
    #[command(flatten)]
    pub(super) terms: GrantTerms,
    #[command(flatten)]
    pub(super) request: RequestId,
}

/// What a grant is and what its units cost: for a grant, or each grant of a schedule.
#[derive(Debug, Args)]
#[group(skip)]
pub struct GrantTerms {
    /// What the units are for.
    #[arg(long, value_enum, default_value_t = GrantKind::Contract)]
    pub(super) kind: GrantKind,
    /// Lower burns first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(super) priority: i32,
    /// What the customer paid per unit (decimal) [default: 0].
    #[arg(long, value_name = "DECIMAL")]
    pub(super) unit_price: Option<String>,
    /// ISO 4217 code of --unit-price, e.g. USD.
    #[arg(long)]
    pub(super) currency: Option<String>,
    /// Your contract or order reference.
    #[arg(long)]
    pub(super) contract_ref: Option<String>,
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
    pub(super) wallet: String,
    /// Units granted each period (decimal, > 0).
    #[arg(long, value_name = "DECIMAL")]
    pub(super) amount: String,
    /// How often a grant is made.
    #[arg(long, value_enum)]
    pub(super) period: Period,
    /// Start of the first period; later periods are anchored to it (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) start: Option<Timestamp>,
    /// No period starts at or after this time (RFC 3339) [default: never].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) end: Option<Timestamp>,
    /// Roll unused units into the next period's grant, up to this many (decimal) [default: no
    /// rollover, unused units expire at the end of each period].
    #[arg(long, value_name = "DECIMAL")]
    pub(super) rollover_cap: Option<String>,
    #[command(flatten)]
    pub(super) terms: GrantTerms,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// A wallet's opening balance, movements by kind, closing balance and movements.
    #[command(long_about = statement::HELP)]
    Statement(StatementArgs),
    /// A wallet's or account's budget: the term, what is granted, consumed and left, burn
    /// rates and when they run the units out.
    #[command(long_about = budget::BUDGET_HELP)]
    Budget(BudgetArgs),
    /// Requests, units and money by request type and day, week or month.
    #[command(long_about = budget::USAGE_HELP)]
    Usage(UsageArgs),
    /// What one request cost in money, and the effective price per 1,000 tokens beside the
    /// reference list price.
    #[command(long_about = budget::TRANSPARENCY_HELP)]
    Transparency(TransparencyArgs),
    /// Operators: revenue against provider cost by request type and route.
    #[command(long_about = budget::MARGIN_HELP)]
    Margin(MarginArgs),
}

/// A report's window: whole UTC days ending with today, or --from/--to.
#[derive(Debug, Args)]
pub struct ReportWindow {
    /// The whole UTC days ending with today (e.g. `30d`), unless --from is given.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = whole_days)]
    pub(super) window: i64,
    /// Start of the window (RFC 3339, inclusive).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp, requires = "to")]
    pub(super) from: Option<Timestamp>,
    /// End of the window (RFC 3339, exclusive).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp, requires = "from")]
    pub(super) to: Option<Timestamp>,
}

#[derive(Debug, Args)]
pub struct TransparencyArgs {
    /// Account id (`acct_…`).
    #[arg(long)]
    pub(super) account: String,
    /// Unit of the wallets [server default: credits].
    #[arg(long)]
    pub(super) unit: Option<String>,
    /// Its sub-accounts' requests too.
    #[arg(long)]
    pub(super) sub_accounts: bool,
    #[command(flatten)]
    pub(super) window: ReportWindow,
    /// Write the rows as CSV to FILE (`-`: stdout) instead of printing them.
    #[arg(long, value_name = "FILE|-")]
    pub(super) csv: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MarginArgs {
    /// Only this account (`acct_…`) [default: every account].
    #[arg(long)]
    pub(super) account: Option<String>,
    /// With --account: unit of its wallets [server default: credits].
    #[arg(long, requires = "account")]
    pub(super) unit: Option<String>,
    /// With --account: its sub-accounts too.
    #[arg(long, requires = "account")]
    pub(super) sub_accounts: bool,
    /// Rows per day, week (ISO, from Monday) or month.
    #[arg(long, value_enum, default_value_t = Granularity::Day)]
    pub(super) per: Granularity,
    #[command(flatten)]
    pub(super) window: ReportWindow,
    /// Write the rows as CSV to FILE (`-`: stdout) instead of printing them.
    #[arg(long, value_name = "FILE|-")]
    pub(super) csv: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BudgetArgs {
    #[command(flatten)]
    pub(super) wallet: StatementWallet,
    /// With --account: unit of the wallets [server default: credits].
    #[arg(long, conflicts_with = "wallet")]
    pub(super) unit: Option<String>,
    /// With --account: roll up its sub-accounts (one line each, and the total).
    #[arg(long, conflicts_with = "wallet")]
    pub(super) sub_accounts: bool,
    /// Write the budget lines as CSV to FILE (`-`: stdout) instead of printing them.
    #[arg(long, value_name = "FILE|-")]
    pub(super) csv: Option<PathBuf>,
    /// Also draw the burn-down chart as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub(super) svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Account id (`acct_…`).
    #[arg(long)]
    pub(super) account: String,
    /// Unit of the wallets [server default: credits].
    #[arg(long)]
    pub(super) unit: Option<String>,
    /// Its sub-accounts too, each on its own rows.
    #[arg(long)]
    pub(super) sub_accounts: bool,
    /// Split by the value of this metadata key (e.g. `user`, `feature`, `project`).
    #[arg(long, value_name = "KEY")]
    pub(super) by: Option<String>,
    /// Rows per day, week (ISO, from Monday) or month.
    #[arg(long, value_enum, default_value_t = Granularity::Day)]
    pub(super) per: Granularity,
    /// (Without --by, --from and --to must be UTC midnights.)
    #[command(flatten)]
    pub(super) window: ReportWindow,
    /// Write the rows as CSV to FILE (`-`: stdout) instead of printing them.
    #[arg(long, value_name = "FILE|-")]
    pub(super) csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Granularity {
    Day,
    Week,
    Month,
}

/// A window of whole days (`30d`, `2w`, `720h`), in days.
fn whole_days(text: &str) -> Result<i64, String> {
    let duration = crate::cli::duration::parse_duration(text)?;
    let secs = duration.as_secs();
    if secs == 0 || secs % 86_400 != 0 || duration.subsec_nanos() != 0 {
        return Err(format!("`{text}` is not a whole number of days (e.g. 30d)"));
    }
    i64::try_from(secs / 86_400).map_err(|err| err.to_string())
}

#[derive(Debug, Args)]
pub struct StatementArgs {
    #[command(flatten)]
    pub(super) wallet: StatementWallet,
    /// With --account: unit of the wallet [server default: credits].
    #[arg(long, conflicts_with = "wallet")]
    pub(super) unit: Option<String>,
    /// Start of the window (RFC 3339, inclusive) [default: the beginning].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) from: Option<Timestamp>,
    /// End of the window (RFC 3339, exclusive) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) to: Option<Timestamp>,
    /// Write the statement as CSV to FILE (`-`: stdout) instead of printing it.
    #[arg(long, value_name = "FILE|-")]
    pub(super) csv: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this account's entries (`acct_…`) [default: every account you may read].
    #[arg(long, conflicts_with = "wallet")]
    pub(super) account: Option<String>,
    /// Only this wallet's entries (`wal_…`).
    #[arg(long)]
    pub(super) wallet: Option<String>,
    /// With --account: its sub-accounts' entries too.
    #[arg(long, requires = "account", conflicts_with = "wallet")]
    pub(super) sub_accounts: bool,
    /// Start of the window (RFC 3339, inclusive).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) from: Option<Timestamp>,
    /// End of the window (RFC 3339, exclusive).
    #[arg(long, value_name = "RFC3339", value_parser = timestamp)]
    pub(super) to: Option<Timestamp>,
    /// Only entries of this kind (repeat for several): grant, debit, reserve, capture,
    /// release, refund, expire, void, adjust.
    #[arg(long = "kind", value_name = "KIND", value_parser = transaction_kind)]
    pub(super) kinds: Vec<proto::TransactionKind>,
    /// Write to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub(super) csv: PathBuf,
}

fn transaction_kind(text: &str) -> Result<proto::TransactionKind, String> {
    proto::TransactionKind::from_str_name(&format!(
        "TRANSACTION_KIND_{}",
        text.to_ascii_uppercase()
    ))
    .filter(|kind| *kind != proto::TransactionKind::Unspecified)
    .ok_or_else(|| {
        format!(
            "`{text}` is not a kind (grant, debit, reserve, capture, release, refund, expire, \
             void, adjust)"
        )
    })
}

/// Which wallet a statement covers: an account's (with --unit), or one by id.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct StatementWallet {
    /// Account id (`acct_…`).
    #[arg(long)]
    pub(super) account: Option<String>,
    /// Wallet id (`wal_…`).
    #[arg(long)]
    pub(super) wallet: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RatesCommand {
    /// Price the requests of the last days with a rate card file (and the overrides in
    /// force) beside what they were charged, per account and request type (operators).
    Simulate {
        /// The rate card file (TOML).
        file: PathBuf,
        /// How many days back (up to 93), ending now.
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = whole_days)]
        window: i64,
        /// Only this account's requests [default: every account].
        #[arg(long)]
        account: Option<String>,
        /// With --account: its sub-accounts' too.
        #[arg(long, requires = "account")]
        sub_accounts: bool,
    },
    /// Publish a rate card from a TOML file. When a card is in force, shows what changes
    /// (and which request types would be left unpriced) and asks before publishing.
    #[command(long_about = rates_file::FORMAT_HELP)]
    Publish {
        /// The rate card file (TOML).
        file: PathBuf,
        /// Publish without asking (for scripts; without a terminal, a card that changes the
        /// one in force is published only with --yes).
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// Show what would change and publish nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// What changes from card A to card B, request type by request type: prices, routes and
    /// provider costs. Each side is a version number, `current` (the card in force) or a
    /// rate card file (TOML).
    Diff {
        /// The card before: VERSION, `current` or FILE.
        from: String,
        /// The card after: VERSION, `current` or FILE.
        to: String,
    },
}

/// Which account: by id or by external id.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct AccountRef {
    /// Account id (`acct_…`).
    #[arg(long)]
    pub(super) account: Option<String>,
    /// The account's external id instead of its id.
    #[arg(long)]
    pub(super) external_id: Option<String>,
}

/// `watch`: which wallet, and where to resume.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub(super) wallet: WalletRef,
    /// Resume after this event number (the last one seen), without the balance first.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "all_wallets")]
    pub(super) after: Option<i64>,
    /// Every wallet of the account (each unit; --unit is ignored), in one stream.
    #[arg(long)]
    pub(super) all_wallets: bool,
    /// With --all-wallets, resume a wallet after its last event seen; repeat per wallet.
    #[arg(long, value_name = "WALLET_ID=SEQUENCE", value_parser = resume_point, requires = "all_wallets")]
    pub(super) resume: Vec<(String, i64)>,
}

fn resume_point(value: &str) -> Result<(String, i64), String> {
    let (wallet, sequence) = value
        .split_once('=')
        .ok_or_else(|| "expected WALLET_ID=SEQUENCE".to_string())?;
    let sequence = sequence
        .parse()
        .map_err(|_| format!("`{sequence}` is not an event number"))?;
    Ok((wallet.to_string(), sequence))
}

/// Which wallet: an account and a unit.
#[derive(Debug, Args)]
#[group(skip)]
pub struct WalletRef {
    #[command(flatten)]
    pub(super) account: AccountRef,
    /// Unit of the wallet.
    #[arg(long, default_value = "credits")]
    pub(super) unit: String,
}

impl WalletRef {
    /// `(account_id, external_id, unit)`, unset ones empty.
    pub(super) fn into_parts(self) -> (String, String, String) {
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
    pub(super) wallet: WalletRef,
    /// Request type, as in the rate card (e.g. chat.message).
    #[arg(long = "type", value_name = "REQUEST_TYPE")]
    pub(super) request_type: String,
    /// A quantity (decimal); repeat for more.
    #[arg(long = "qty", value_name = "NAME=VALUE", value_parser = pair)]
    pub(super) quantities: Vec<(String, String)>,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct DebitArgs {
    #[command(flatten)]
    pub(super) price: PriceArgs,
    /// Metadata stored with the ledger entry; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = pair)]
    pub(super) metadata: Vec<(String, String)>,
    /// Fail (OVER_CALLER_CAP) rather than charge more than this.
    #[arg(long, value_name = "DECIMAL")]
    pub(super) max_units: Option<String>,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

/// What to hold: an estimate priced by the rate card in force, or exact units.
#[derive(Debug, Args)]
#[group(skip)]
pub struct ReserveArgs {
    #[command(flatten)]
    pub(super) wallet: WalletRef,
    /// Request type, as in the rate card; --qty estimates are priced with it.
    #[arg(
        long = "type",
        value_name = "REQUEST_TYPE",
        required_unless_present = "units"
    )]
    pub(super) request_type: Option<String>,
    /// An estimated quantity (decimal); repeat for more.
    #[arg(
        long = "qty",
        value_name = "NAME=VALUE",
        value_parser = pair,
        requires = "request_type",
        conflicts_with = "units"
    )]
    pub(super) quantities: Vec<(String, String)>,
    /// Hold exactly this many units (decimal) instead of pricing quantities.
    #[arg(long, value_name = "DECIMAL")]
    pub(super) units: Option<String>,
    /// How long the hold lasts, e.g. 90s, 15m, 1h30m [server default: 15m].
    #[arg(long, value_name = "DURATION", value_parser = ttl)]
    pub(super) ttl: Option<prost_types::Duration>,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct CaptureArgs {
    /// Reservation id (`rsv_…`).
    pub(super) reservation_id: String,
    #[command(flatten)]
    pub(super) actual: ActualCost,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

/// What a held request really cost: its quantities, or units.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ActualCost {
    /// An actual quantity (decimal), priced with the reservation's request type by the card
    /// in force; repeat for more.
    #[arg(long = "qty", value_name = "NAME=VALUE", value_parser = pair)]
    pub(super) quantities: Vec<(String, String)>,
    /// The actual units to charge (decimal).
    #[arg(long, value_name = "DECIMAL")]
    pub(super) units: Option<String>,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct ReleaseArgs {
    /// Reservation id (`rsv_…`).
    pub(super) reservation_id: String,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct RefundArgs {
    /// Transaction id of the debit or capture.
    pub(super) transaction_id: String,
    /// Units to return (decimal) [default: everything not yet refunded].
    #[arg(long, value_name = "DECIMAL")]
    pub(super) units: Option<String>,
    /// Why (shown on statements).
    #[arg(long)]
    pub(super) reason: Option<String>,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct AdjustArgs {
    /// Wallet id (`wal_…`).
    #[arg(long)]
    pub(super) wallet: String,
    /// Units to add (positive) or remove (negative, e.g. `--units -5`), decimal.
    #[arg(long, value_name = "SIGNED_DECIMAL", allow_hyphen_values = true)]
    pub(super) units: String,
    /// Why (required; shown on statements).
    #[arg(long)]
    pub(super) reason: String,
    #[command(flatten)]
    pub(super) request: RetryKey,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct TransactionsArgs {
    #[command(flatten)]
    pub(super) wallet: WalletRef,
    #[command(flatten)]
    pub(super) page: PageArgs,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct PageArgs {
    /// Items per page [server default].
    #[arg(long, value_name = "N")]
    pub(super) page_size: Option<i32>,
    /// Start at this page (a `next_page_token` from an earlier listing).
    #[arg(long, value_name = "TOKEN")]
    pub(super) page_token: Option<String>,
    /// Follow next_page_token to the last page.
    #[arg(long)]
    pub(super) all: bool,
}

#[derive(Debug, Args)]
#[group(skip)]
pub struct RequestId {
    /// Idempotency key: repeating a call with the same key is safe [default: a new UUID].
    #[arg(long, value_name = "ID")]
    pub(super) request_id: Option<String>,
}

impl RequestId {
    pub(super) fn get(self) -> String {
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
    pub(super) request_id: Option<String>,
}

impl RetryKey {
    pub(super) fn get(self) -> String {
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

/// A hold's lifetime, in the command line's one duration grammar (`crate::cli::duration`).
fn ttl(text: &str) -> Result<prost_types::Duration, String> {
    let duration = crate::cli::duration::parse_duration(text)?;
    prost_types::Duration::try_from(duration).map_err(|err| err.to_string())
}

/// The update mask: the paths whose flag was given.
pub(super) fn update_mask(paths: &[(&str, bool)]) -> Option<FieldMask> {
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

impl ClientCommand {
    pub(super) fn client_args(&self) -> &ClientArgs {
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
            ClientCommand::Watch(single) => &single.client,
            ClientCommand::Transactions(single) => &single.client,
            ClientCommand::Overrides(group) => &group.client,
            ClientCommand::Audit(single) => &single.client,
            ClientCommand::Report(group) => &group.client,
            ClientCommand::Export(single) => &single.client,
            ClientCommand::Webhooks(group) => &group.client,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cli::{Command, parse_from};

    /// The client command and its options, completed by the ones given before its name.
    fn parse_full(args: &[&str]) -> Result<(ClientCommand, ClientArgs), clap::Error> {
        let cli = parse_from(std::iter::once("allot").chain(args.iter().copied()))?;
        let outer = ClientArgs {
            server: cli.client.server.clone(),
            token: cli.client.token.clone(),
            json: cli.client.json,
            ..Default::default()
        };
        match cli.command {
            Command::Client(command) => {
                let resolved = command.client_args().resolve(&outer);
                Ok((command, resolved))
            }
            other => panic!("not a client command: {other:?}"),
        }
    }

    pub(in crate::cli::client) fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
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
        let ReportCommand::Statement(args) = group.command else {
            panic!()
        };
        assert_eq!(args.from.unwrap().seconds, 1_767_225_600);
        assert!(args.to.is_none() && args.csv.is_none());
    }

    #[test]
    fn exports_take_kinds_and_sub_accounts_only_with_an_account() {
        let export = |extra: &[&str]| parse(&[&["export"][..], extra].concat());
        let Ok(ClientCommand::Export(single)) = export(&[
            "--account",
            "a",
            "--sub-accounts",
            "--kind",
            "debit",
            "--kind",
            "REFUND",
        ]) else {
            panic!()
        };
        assert_eq!(
            single.args.kinds,
            [
                proto::TransactionKind::Debit,
                proto::TransactionKind::Refund
            ]
        );
        assert!(single.args.sub_accounts);
        assert_eq!(single.args.csv.as_os_str(), "-");
        assert!(export(&[]).is_ok());
        assert!(export(&["--sub-accounts"]).is_err());
        assert!(export(&["--wallet", "w", "--sub-accounts"]).is_err());
        assert!(export(&["--account", "a", "--wallet", "w"]).is_err());
        assert!(export(&["--kind", "unspecified"]).is_err());
        assert!(export(&["--kind", "debits"]).is_err());
    }

    #[test]
    fn times_are_rfc3339() {
        let ts = timestamp("2026-11-01T01:00:00.25+01:00").unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_793_491_200, 250_000_000));
        assert!(timestamp("2026-11-01").is_err());
    }

    #[test]
    fn caps_take_none() {
        assert_eq!(cap("NONE"), Ok(String::new()));
        assert!(cap(" ").is_err());
    }
}
