//! The one error type behind every failed request: a gRPC code, an UPPER_SNAKE `reason`, a
//! human message and metadata. `api::status` turns it into a `google.rpc.Status` carrying one
//! `ErrorInfo` (domain `allot`). Storage errors map here too: unreachable database →
//! UNAVAILABLE, write conflicts that survive retries → ABORTED, anything else → INTERNAL.

use std::fmt;

use sea_orm::DbErr;
use tonic::Code;

use crate::domain::{AmountError, PricingError, Refusal};

/// Why a request failed: the `reason` of the `google.rpc.ErrorInfo` every error carries, and of
/// the logs. The wire string is the variant's name in UPPER_SNAKE ([`Reason::as_str`]); these
/// variants are the catalogue of every reason allot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    // UNAUTHENTICATED: the token (`AuthError::reason`).
    /// No bearer token in the `authorization` header.
    TokenMissing,
    /// The header or the token is not well-formed.
    TokenMalformed,
    /// The token's `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// No candidate key verified the token's signature.
    TokenBadSignature,
    /// The token's `kid` matches no configured key.
    TokenUnknownKey,
    /// The token's `alg` is `none`, unsupported, or not the pinned algorithm of any candidate key.
    TokenAlgNotAllowed,
    /// The token's `iss` is not the configured issuer.
    TokenWrongIssuer,
    /// The token's `aud` does not contain the configured audience.
    TokenWrongAudience,
    /// The signature is fine but the claims are unacceptable (missing claim, not yet valid, …).
    TokenInvalid,

    // PERMISSION_DENIED.
    /// An allot method that no role may call.
    MethodNotAllowed,
    /// No role of the token may call the method.
    RoleNotAllowed,
    /// The account lies outside the token's scope (checked before existence), or a scoped token
    /// creates a top-level account.
    AccountOutOfScope,
    /// Changing rate cards needs a token for all accounts (`"*"`).
    GlobalScopeRequired,

    // INVALID_ARGUMENT.
    /// The request's bytes are not a valid message of the method's type (wrong wire types,
    /// truncated, invalid UTF-8 in a string): the caller's encoding, not a field's value.
    MalformedMessage,
    /// A required field is empty.
    MissingField,
    /// A field's value is not acceptable (format, combination with other fields, ordering).
    InvalidField,
    /// A string is longer than its bound.
    FieldTooLong,
    /// An id lacks its `<kind>_` prefix or has other characters than letters and digits.
    InvalidId,
    /// A timestamp outside 1970–9999.
    InvalidTimestamp,
    /// An enum value the API does not know.
    InvalidEnum,
    /// A malformed amount, or zero where it must not be.
    InvalidAmount,
    /// A well-formed amount beyond the stated bounds (docs/ARCHITECTURE.md, "Numbers").
    AmountOutOfRange,
    /// A map or list with more entries than allowed.
    TooManyEntries,
    /// A negative `page_size`.
    InvalidPageSize,
    /// A report that would read or return more than its bound (a usage report split by
    /// metadata over more than 93 days, or more than 50,000 rows): narrow the window, cover
    /// fewer accounts or choose a coarser granularity.
    ReportTooLarge,
    /// A `page_token` the list did not issue.
    InvalidPageToken,
    /// A reservation TTL of zero or above the configured maximum.
    TtlOutOfRange,
    /// An allotment schedule that starts more periods ago than the catch-up bound.
    ScheduleStartTooEarly,
    /// Rates that fail validation (duplicate request types, `per` 0, negative prices).
    InvalidRateCard,
    /// A rate card published with an effective time in the past.
    EffectiveTimeInPast,
    /// A quantity names a dimension the rate does not price.
    UnknownDimension,
    /// The price of a request overflows the amount bounds.
    PriceOutOfRange,
    /// The wallet's grants plus its overdraft limit would exceed the largest amount.
    BalanceOutOfRange,

    // NOT_FOUND.
    /// The id does not exist (inside scope).
    NotFound,
    /// No rate card is in force at the requested time.
    NoRateCardInForce,

    // ALREADY_EXISTS.
    /// The `request_id` was already used with different parameters.
    IdempotencyKeyReused,
    /// Another account already has this `external_id`.
    ExternalIdTaken,
    /// The account already has a wallet of this unit.
    WalletExists,

    // FAILED_PRECONDITION.
    /// The wallet's balance (with overdraft) does not cover the amount (metadata: required,
    /// available).
    InsufficientCredits,
    /// The spend would exceed the wallet's daily or monthly cap.
    SpendCapReached,
    /// The request costs more than the caller's `max_units`.
    OverCallerCap,
    /// The request type has no rate in the card in force.
    UnpricedRequestType,
    /// The account's state does not allow the operation (suspended, closed).
    AccountNotActive,
    /// A closed account cannot be reopened.
    AccountClosed,
    /// A sub-account would nest deeper than allowed.
    AccountTooDeep,
    /// The reservation is captured, released or expired.
    ReservationNotOpen,
    /// The grant is no longer active (expired or voided).
    GrantNotActive,
    /// The overdraft limit cannot go below the overdraft in use.
    OverdraftInUse,
    /// Only debits and captures can be refunded.
    NotRefundable,
    /// The refund exceeds what is still refundable of the transaction.
    RefundExceedsCharge,
    /// The rate card is already published.
    RateCardNotDraft,
    /// The rate card changed since the caller read its etag.
    StaleEtag,

    // RESOURCE_EXHAUSTED.
    /// allot cannot take the call now (too many calls in flight, or its ledger queue drains too
    /// slowly: `admission`); nothing was applied. Retry after the `RetryInfo` delay
    /// (`retry_after_ms` in the metadata) with the same `request_id`.
    Overloaded,
    /// A WatchBalance reader fell further behind than the server buffers; resume with the
    /// `after_sequence` in the metadata.
    WatchLagged,

    // Other codes.
    /// OUT_OF_RANGE: a WatchBalance resume point whose events were pruned (`oldest_sequence`
    /// in the metadata), or that lies beyond the wallet's latest event.
    EventsUnavailable,
    /// OUT_OF_RANGE: a statement's totals exceed what a decimal holds.
    StatementOutOfRange,
    /// ABORTED: a write conflict that survived internal retries.
    WriteConflict,
    /// UNAVAILABLE: the database is unreachable; safe to retry with the same `request_id`.
    Unavailable,
    /// INTERNAL: a bug; never for user input.
    Internal,
}

impl Reason {
    /// The UPPER_SNAKE string sent in `ErrorInfo.reason` and logged.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub reason: Reason,
    pub message: String,
    pub metadata: Vec<(String, String)>,
    /// When to retry (a `google.rpc.RetryInfo` on the wire): set on refusals for overload.
    pub retry_after: Option<std::time::Duration>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, reason: Reason, message: impl Into<String>) -> Self {
        Error {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
            retry_after: None,
        }
    }

    /// Asks the caller to retry after `delay` (a `RetryInfo`, and `retry_after_ms` in the
    /// metadata for those who read only the `ErrorInfo`, such as BatchDebit's results).
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after = Some(delay);
        self.with("retry_after_ms", delay.as_millis())
    }

    /// Adds one metadata entry to the ErrorInfo.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

    pub fn invalid(reason: Reason, field: &str, message: impl Into<String>) -> Self {
        let message = format!("{field}: {}", message.into());
        Self::new(Code::InvalidArgument, reason, message).with("field", field)
    }

    pub fn missing(field: &str) -> Self {
        Self::invalid(Reason::MissingField, field, "is required")
    }

    /// A malformed amount is `INVALID_AMOUNT`; a well-formed one beyond the stated bounds
    /// (docs/ARCHITECTURE.md, "Numbers") is `AMOUNT_OUT_OF_RANGE`.
    pub fn amount(field: &str, err: AmountError) -> Self {
        let reason = match err {
            AmountError::OutOfRange(_) => Reason::AmountOutOfRange,
            _ => Reason::InvalidAmount,
        };
        Self::invalid(reason, field, err.to_string())
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            Code::NotFound,
            Reason::NotFound,
            format!("{kind} `{id}` does not exist"),
        )
        .with("kind", kind)
        .with("id", id)
    }

    pub fn precondition(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    pub fn permission_denied(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(Code::Aborted, Reason::WriteConflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, Reason::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, Reason::Internal, message)
    }

    pub fn idempotency_key_reused(request_id: &str) -> Self {
        Self::new(
            Code::AlreadyExists,
            Reason::IdempotencyKeyReused,
            format!("request_id `{request_id}` was already used with different parameters"),
        )
        .with("request_id", request_id)
    }

    /// Whether the store may retry the whole transaction.
    pub fn is_retryable(&self) -> bool {
        self.code == Code::Aborted
    }
}

/// The UPPER_SNAKE name of a gRPC code, as the gRPC spec writes it (`FAILED_PRECONDITION`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The domain's refusals, as the API reports them.
impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::Insufficient {
                required,
                available,
            } => Error::precondition(Reason::InsufficientCredits, message)
                .with("required", required)
                .with("available", available),
            Refusal::SpendCap {
                period,
                cap,
                used,
                required,
            } => Error::precondition(Reason::SpendCapReached, message)
                .with("period", period)
                .with("cap", cap)
                .with("used", used)
                .with("required", required),
            Refusal::HoldNotOpen => Error::precondition(Reason::ReservationNotOpen, message),
            Refusal::GrantNotActive => Error::precondition(Reason::GrantNotActive, message),
            Refusal::OutOfRange { headroom } => {
                Error::invalid(Reason::BalanceOutOfRange, "units", message)
                    .with("headroom", headroom)
            }
            Refusal::OverdraftInUse { debt } => {
                Error::precondition(Reason::OverdraftInUse, message).with("debt", debt)
            }
            Refusal::OverCallerCap {
                required,
                max_units,
            } => Error::precondition(Reason::OverCallerCap, message)
                .with("required", required)
                .with("max_units", max_units),
            Refusal::RefundExceedsCharge { refundable } => {
                Error::precondition(Reason::RefundExceedsCharge, message)
                    .with("refundable", refundable)
            }
        }
    }
}

impl From<PricingError> for Error {
    fn from(err: PricingError) -> Self {
        match &err {
            PricingError::Overflow => {
                Error::invalid(Reason::PriceOutOfRange, "quantities", err.to_string())
            }
            PricingError::UnknownDimension {
                request_type,
                dimension,
                known,
            } => Error::invalid(Reason::UnknownDimension, "quantities", err.to_string())
                .with("request_type", request_type)
                .with("dimension", dimension)
                .with("known_dimensions", known),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {}: {}",
            self.code,
            self.reason.as_str(),
            self.message
        )
    }
}

impl std::error::Error for Error {}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        // The database's own text is logged, never sent: it can name tables, hosts and users.
        let text = err.to_string();
        match classify(&err) {
            DbFailure::Unreachable => {
                tracing::warn!(error = %text, "database unreachable");
                Error::unavailable("database unreachable; retry with the same request_id")
            }
            DbFailure::Storage => {
                tracing::error!(error = %text, "the database's storage failed");
                Error::unavailable("the database's storage failed; retry with the same request_id")
            }
            DbFailure::Conflict => {
                tracing::debug!(error = %text, "write conflict");
                Error::aborted("write conflict; retry with the same request_id")
            }
            DbFailure::Other => {
                tracing::error!(error = %text, "database error");
                Error::internal("database error")
            }
        }
    }
}

/// What a database error means for the request, told by the driver's codes (SQLSTATE on
/// PostgreSQL, result codes on SQLite), never by matching message text.
#[derive(Debug, PartialEq, Eq)]
enum DbFailure {
    /// The database cannot be reached (or the connection was lost): UNAVAILABLE.
    Unreachable,
    /// SQLite could not read, write or sync its files (I/O error, disk full, read-only or
    /// vanished file): UNAVAILABLE, and the outcome of a commit is in doubt.
    Storage,
    /// Serialization failure, deadlock, busy SQLite: retrying the transaction may succeed.
    Conflict,
    /// Anything else: a bug, INTERNAL.
    Other,
}

/// Whether `err` is SQLite failing to read, write or sync its files: after it nothing this
/// process writes can be trusted to be durable (see `store::log_sync`).
pub(crate) fn is_storage_failure(err: &DbErr) -> bool {
    classify(err) == DbFailure::Storage
}

fn classify(err: &DbErr) -> DbFailure {
    use sea_orm::{RuntimeErr, sqlx};

    let sqlx_error = match err {
        DbErr::ConnectionAcquire(_) => return DbFailure::Unreachable,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e.as_ref(),
        DbErr::Conn(_) => return DbFailure::Unreachable,
        _ => return DbFailure::Other,
    };
    match sqlx_error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // PostgreSQL: serialization_failure, deadlock_detected.
            Some("40001" | "40P01") => DbFailure::Conflict,
            // PostgreSQL: connection exceptions (08…) and operator intervention such as
            // admin_shutdown "terminating connection" (57P…).
            Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                DbFailure::Unreachable
            }
            Some(code) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                match code.parse::<i32>().map(|c| c & 0xff) {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                    Ok(5 | 6) => DbFailure::Conflict,
                    // SQLITE_READONLY (8), SQLITE_IOERR (10, e.g. 1034 IOERR_FSYNC),
                    // SQLITE_FULL (13), SQLITE_CANTOPEN (14).
                    Ok(8 | 10 | 13 | 14) => DbFailure::Storage,
                    _ => DbFailure::Other,
                }
            }
            _ => DbFailure::Other,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbFailure::Unreachable,
        _ => DbFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason on the wire is UPPER_SNAKE and names one variant only.
    #[test]
    fn reasons_are_upper_snake_and_unique() {
        use strum::IntoEnumIterator;

        let mut seen = std::collections::HashSet::new();
        for reason in Reason::iter() {
            let s = reason.as_str();
            assert!(
                !s.is_empty()
                    && !s.starts_with('_')
                    && !s.ends_with('_')
                    && !s.contains("__")
                    && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{reason:?} is sent as `{s}`, not UPPER_SNAKE"
            );
            assert!(seen.insert(s), "`{s}` is the string of two variants");
        }
        // Spot checks that the derived strings are the ones clients already match on.
        assert_eq!(Reason::TokenAlgNotAllowed.as_str(), "TOKEN_ALG_NOT_ALLOWED");
        assert_eq!(Reason::TtlOutOfRange.as_str(), "TTL_OUT_OF_RANGE");
        assert_eq!(Reason::NotFound.as_str(), "NOT_FOUND");
        assert_eq!(Error::internal("x").to_string(), "Internal INTERNAL: x");
    }

    /// Every reason the spec and the docs name is one allot sends.
    #[test]
    fn documented_reasons_exist() {
        use strum::IntoEnumIterator;

        const DOCUMENTED: [&str; 20] = [
            // The spec's error table (SPEC.md, "Errors").
            "IDEMPOTENCY_KEY_REUSED",
            "INSUFFICIENT_CREDITS",
            "ACCOUNT_NOT_ACTIVE",
            "UNPRICED_REQUEST_TYPE",
            "OVER_CALLER_CAP",
            "RESERVATION_NOT_OPEN",
            "STALE_ETAG",
            "SPEND_CAP_REACHED",
            // Named in docs/ARCHITECTURE.md.
            "ACCOUNT_CLOSED",
            "ACCOUNT_OUT_OF_SCOPE",
            "AMOUNT_OUT_OF_RANGE",
            "EFFECTIVE_TIME_IN_PAST",
            "EXTERNAL_ID_TAKEN",
            "GLOBAL_SCOPE_REQUIRED",
            "INVALID_AMOUNT",
            "RATE_CARD_NOT_DRAFT",
            "SCHEDULE_START_TOO_EARLY",
            "STATEMENT_OUT_OF_RANGE",
            "TOKEN_INVALID",
            "UNKNOWN_DIMENSION",
        ];
        for documented in DOCUMENTED {
            assert!(
                Reason::iter().any(|r| r.as_str() == documented),
                "the docs name {documented}, which no Reason sends"
            );
        }
    }

    /// Database text (hosts, users, SQL) is logged, never sent to the client.
    #[test]
    fn database_errors_carry_no_database_text() {
        let secret = "connection to server at \"db.internal\" (10.0.0.7), user \"allot\"";
        let unreachable = Error::from(DbErr::Conn(sea_orm::RuntimeErr::Internal(
            secret.to_string(),
        )));
        assert_eq!(unreachable.code, Code::Unavailable);
        assert!(
            !unreachable.message.contains("db.internal"),
            "{unreachable}"
        );
        let lost = Error::from(DbErr::Exec(sea_orm::RuntimeErr::SqlxError(
            std::sync::Arc::new(sea_orm::sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                secret,
            ))),
        )));
        assert_eq!(lost.code, Code::Unavailable);
        assert!(!lost.message.contains("db.internal"), "{lost}");
        let other = Error::from(DbErr::Custom(secret.to_string()));
        assert_eq!(other.code, Code::Internal);
        assert!(!other.message.contains("db.internal"), "{other}");
    }

    /// A real SQLITE_BUSY from the driver is a conflict (retried), told by its code.
    #[tokio::test]
    async fn sqlite_busy_is_a_conflict() {
        use sea_orm::sqlx::{self, Connection, sqlite::SqliteConnectOptions};
        use std::str::FromStr;

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/busy.db?mode=rwc", dir.path().display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .busy_timeout(std::time::Duration::ZERO);
        let mut first = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let mut second = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut first)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut first)
            .await
            .unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut second)
            .await
            .unwrap_err();
        let err = DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(busy)));
        assert_eq!(classify(&err), DbFailure::Conflict);
        assert_eq!(Error::from(err).code, Code::Aborted);
        // Any other database error is a bug, not a retry.
        let other = sqlx::query("SELECT * FROM missing")
            .execute(&mut first)
            .await
            .unwrap_err();
        let err = DbErr::Query(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(other)));
        assert_eq!(classify(&err), DbFailure::Other);
    }

    /// SQLite failing its files (here: a write on a read-only connection, SQLITE_READONLY) is
    /// UNAVAILABLE with the outcome in doubt, not a bug of ours.
    #[tokio::test]
    async fn sqlite_storage_failures_are_unavailable() {
        use sea_orm::sqlx::{self, Connection, sqlite::SqliteConnectOptions};
        use std::str::FromStr;

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/ro.db?mode=rwc", dir.path().display());
        let mut writer =
            sqlx::SqliteConnection::connect_with(&SqliteConnectOptions::from_str(&url).unwrap())
                .await
                .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut writer)
            .await
            .unwrap();
        let mut reader = sqlx::SqliteConnection::connect_with(
            &SqliteConnectOptions::from_str(&url)
                .unwrap()
                .read_only(true),
        )
        .await
        .unwrap();
        let refused = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut reader)
            .await
            .unwrap_err();
        let err = DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(refused)));
        assert!(is_storage_failure(&err), "{err}");
        let err = Error::from(err);
        assert_eq!(err.code, Code::Unavailable);
        assert!(err.message.contains("storage"), "{err}");
    }
}
