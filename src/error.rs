//! The one error type behind every failed request: a gRPC code, an UPPER_SNAKE `reason`, a
//! human message and metadata. `api::status` turns it into a `google.rpc.Status` carrying one
//! `ErrorInfo` (domain `allot`). Storage errors map here too: unreachable database →
//! UNAVAILABLE, write conflicts that survive retries → ABORTED, anything else → INTERNAL.

use std::fmt;

use sea_orm::DbErr;
use tonic::Code;

use crate::domain::{AmountError, PricingError, Refusal};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
    pub metadata: Vec<(String, String)>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Error {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    /// Adds one metadata entry to the ErrorInfo.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

    pub fn invalid(reason: &'static str, field: &str, message: impl Into<String>) -> Self {
        let message = format!("{field}: {}", message.into());
        Self::new(Code::InvalidArgument, reason, message).with("field", field)
    }

    pub fn missing(field: &str) -> Self {
        Self::invalid("MISSING_FIELD", field, "is required")
    }

    /// A malformed amount is `INVALID_AMOUNT`; a well-formed one beyond the stated bounds
    /// (docs/ARCHITECTURE.md, "Numbers") is `AMOUNT_OUT_OF_RANGE`.
    pub fn amount(field: &str, err: AmountError) -> Self {
        let reason = match err {
            AmountError::OutOfRange(_) => "AMOUNT_OUT_OF_RANGE",
            _ => "INVALID_AMOUNT",
        };
        Self::invalid(reason, field, err.to_string())
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            Code::NotFound,
            "NOT_FOUND",
            format!("{kind} `{id}` does not exist"),
        )
        .with("kind", kind)
        .with("id", id)
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(Code::Aborted, "WRITE_CONFLICT", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, "UNAVAILABLE", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, "INTERNAL", message)
    }

    pub fn idempotency_key_reused(request_id: &str) -> Self {
        Self::new(
            Code::AlreadyExists,
            "IDEMPOTENCY_KEY_REUSED",
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
            } => Error::precondition("INSUFFICIENT_CREDITS", message)
                .with("required", required)
                .with("available", available),
            Refusal::SpendCap {
                period,
                cap,
                used,
                required,
            } => Error::precondition("SPEND_CAP_REACHED", message)
                .with("period", period)
                .with("cap", cap)
                .with("used", used)
                .with("required", required),
            Refusal::HoldNotOpen => Error::precondition("RESERVATION_NOT_OPEN", message),
            Refusal::GrantNotActive => Error::precondition("GRANT_NOT_ACTIVE", message),
            Refusal::OutOfRange { headroom } => {
                Error::invalid("BALANCE_OUT_OF_RANGE", "units", message).with("headroom", headroom)
            }
            Refusal::OverdraftInUse { debt } => {
                Error::precondition("OVERDRAFT_IN_USE", message).with("debt", debt)
            }
            Refusal::OverCallerCap {
                required,
                max_units,
            } => Error::precondition("OVER_CALLER_CAP", message)
                .with("required", required)
                .with("max_units", max_units),
            Refusal::RefundExceedsCharge { refundable } => {
                Error::precondition("REFUND_EXCEEDS_CHARGE", message).with("refundable", refundable)
            }
        }
    }
}

impl From<PricingError> for Error {
    fn from(err: PricingError) -> Self {
        match &err {
            PricingError::Overflow => {
                Error::invalid("PRICE_OUT_OF_RANGE", "quantities", err.to_string())
            }
            PricingError::UnknownDimension {
                request_type,
                dimension,
                known,
            } => Error::invalid("UNKNOWN_DIMENSION", "quantities", err.to_string())
                .with("request_type", request_type)
                .with("dimension", dimension)
                .with("known_dimensions", known),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)
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
    /// Serialization failure, deadlock, busy SQLite: retrying the transaction may succeed.
    Conflict,
    /// Anything else: a bug, INTERNAL.
    Other,
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
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
            Some(code)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                    && code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)) =>
            {
                DbFailure::Conflict
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
}
