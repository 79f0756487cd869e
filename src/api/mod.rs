//! The gRPC surface: thin tonic handlers. The access layer (`access`) has authenticated the
//! caller and checked its role before a handler runs; each handler checks account scope, validates the request into domain values (`convert`), calls the store,
//! and maps errors (`status`). No business rule lives here.
//!
//! Scope is checked before existence: a caller whose token does not cover an account gets
//! PERMISSION_DENIED whether or not the account exists; only callers whose scope covers the
//! id (`"*"`, or a token listing that very id) see NOT_FOUND.

pub mod access;
pub mod accounts;
pub mod codec;
pub mod convert;
pub mod grants;
pub mod insight;
pub mod ledger;
pub mod outcome;
pub mod rate_cards;
pub mod reports;
pub mod watch;
pub mod webhooks;

use std::sync::Arc;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    auth::{Authenticator, Caller},
    error::{Error, Reason, Result},
    store::{
        Store,
        accounts::{ancestry, find_account, find_by_external_id},
        batcher::Ledger,
        directory::AccountIdentity,
        entity::account,
        idempotency::{Key, validate_request_id},
    },
};

/// Everything a handler needs; shared by all services.
#[derive(Clone)]
pub struct Ctx {
    pub store: Store,
    pub ledger: Ledger,
    pub auth: Arc<Authenticator>,
    pub limits: Limits,
    /// Cancelled when shutdown begins: long-lived streams (WatchBalance) end then.
    pub draining: tokio_util::sync::CancellationToken,
    /// How webhooks are delivered (endpoints' URLs are checked against it).
    pub webhooks: Arc<crate::webhooks::Settings>,
}

/// Operator-configurable limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hold TTL when a Reserve names none.
    pub default_hold_ttl: std::time::Duration,
    /// Longest hold TTL a Reserve may ask for.
    pub max_hold_ttl: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_hold_ttl: std::time::Duration::from_secs(15 * 60),
            max_hold_ttl: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// The longest error message sent, and the longest `ErrorInfo` metadata value. An error may
/// quote the caller's input, and both travel in HTTP/2 trailers (the message twice: as
/// `grpc-message` and inside `grpc-status-details-bin`): a peer refuses a header block past
/// its limit (16 KiB by default) and would see a broken connection instead of the error.
pub const MAX_ERROR_MESSAGE: usize = 1024;
pub const MAX_ERROR_METADATA: usize = 256;

/// `text` cut to at most `max` bytes (at a character boundary), saying how long it was.
fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let metadata: std::collections::HashMap<String, String> = err
            .metadata
            .into_iter()
            .map(|(key, value)| (key, bounded(value, MAX_ERROR_METADATA)))
            .collect();
        let mut details = ErrorDetails::with_error_info(err.reason.as_str(), "allot", metadata);
        if let Some(delay) = err.retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(err.code, bounded(err.message, MAX_ERROR_MESSAGE), details)
    }
}

impl Ctx {
    /// Loads an account by id, checking scope first (see the module docs).
    pub async fn account_in_scope(&self, caller: &Caller, id: &str) -> Result<account::Model> {
        let found = find_account(&self.store.db, id).await?;
        self.check_scope(caller, found, "account", id)
    }

    /// Resolves `account_id` xor `external_id` to an account in the caller's scope.
    pub async fn resolve_account(
        &self,
        caller: &Caller,
        account_id: &str,
        external_id: &str,
    ) -> Result<account::Model> {
        match (account_id.is_empty(), external_id.is_empty()) {
            (false, true) => {
                let id = convert::id("account_id", account_id, "acct")?;
                self.account_in_scope(caller, &id).await
            }
            (true, false) => {
                let external = convert::required("external_id", external_id, 128)?;
                let found = find_by_external_id(&self.store.db, &external).await?;
                self.check_scope(caller, found, "account with external_id", &external)
            }
            (true, true) => Err(Error::invalid(
                Reason::MissingField,
                "account_id",
                "give account_id or external_id",
            )),
            (false, false) => Err(Error::invalid(
                Reason::InvalidField,
                "account_id",
                "give account_id or external_id, not both",
            )),
        }
    }

    /// Like [`Ctx::resolve_account`] but answers only the account's immutable identity,
    /// from the in-memory directory when it can (the request path of debits and holds: no
    /// database read once an account is known). The account's state is checked later, by
    /// the ledger, under its locks.
    pub async fn resolve_identity(
        &self,
        caller: &Caller,
        account_id: &str,
        external_id: &str,
    ) -> Result<Arc<AccountIdentity>> {
        let directory = &self.store.directory;
        let cached = match (account_id.is_empty(), external_id.is_empty()) {
            (false, true) => directory.account(&convert::id("account_id", account_id, "acct")?),
            (true, false) => directory.account_by_external_id(&convert::required(
                "external_id",
                external_id,
                128,
            )?),
            // Both or neither: resolve_account gives the error.
            _ => None,
        };
        if let Some(identity) = cached {
            let id = if account_id.is_empty() {
                external_id
            } else {
                account_id
            };
            if !caller.covers(&identity.ancestry()) {
                return Err(out_of_scope(id));
            }
            return Ok(identity);
        }
        let account = self
            .resolve_account(caller, account_id, external_id)
            .await?;
        Ok(directory.remember_account(&account))
    }

    pub fn check_scope(
        &self,
        caller: &Caller,
        found: Option<account::Model>,
        kind: &str,
        id: &str,
    ) -> Result<account::Model> {
        match found {
            Some(account) if caller.covers(&ancestry(&account)) => Ok(account),
            // Only a caller whose scope covers the id itself may learn it does not exist.
            None if caller.covers(&[id]) => Err(Error::not_found(kind, id)),
            _ => Err(out_of_scope(id)),
        }
    }
}

pub fn out_of_scope(id: &str) -> Error {
    Error::permission_denied(
        Reason::AccountOutOfScope,
        format!("`{id}` is outside this token's accounts"),
    )
    .with("id", id)
}

/// A request that changes something, carrying a `request_id` (its idempotency key).
pub trait Mutation: prost::Message + Clone {
    /// The method, as idempotency records name it.
    const METHOD: &'static str;
    fn request_id(&self) -> &str;
    /// The request without its `request_id`: what the key's fingerprint covers.
    fn blank(&self) -> Self;
}

macro_rules! mutations {
    ($($message:ident => $method:literal),* $(,)?) => {$(
        impl Mutation for crate::proto::$message {
            const METHOD: &'static str = $method;
            fn request_id(&self) -> &str {
                &self.request_id
            }
            fn blank(&self) -> Self {
                Self {
                    request_id: String::new(),
                    ..self.clone()
                }
            }
        }
    )*};
}

mutations! {
    CreateAccountRequest => "CreateAccount",
    UpdateAccountRequest => "UpdateAccount",
    CreateWalletRequest => "CreateWallet",
    UpdateWalletRequest => "UpdateWallet",
    CreateGrantRequest => "CreateGrant",
    VoidGrantRequest => "VoidGrant",
    AdjustBalanceRequest => "AdjustBalance",
    CreateAllotmentScheduleRequest => "CreateAllotmentSchedule",
    CreateRateCardRequest => "CreateRateCard",
    PublishRateCardRequest => "PublishRateCard",
    SetAccountOverrideRequest => "SetAccountOverride",
    DebitRequest => "Debit",
    ReserveRequest => "Reserve",
    CaptureReservationRequest => "CaptureReservation",
    ReleaseReservationRequest => "ReleaseReservation",
    RefundRequest => "Refund",
    CreateWebhookEndpointRequest => "CreateWebhookEndpoint",
    UpdateWebhookEndpointRequest => "UpdateWebhookEndpoint",
    DeleteWebhookEndpointRequest => "DeleteWebhookEndpoint",
    RotateWebhookSecretRequest => "RotateWebhookSecret",
    ReplayWebhookDeliveriesRequest => "ReplayWebhookDeliveries",
}

/// The idempotency key of `request` in `scope`: its request_id (validated) and the SHA-256
/// of the request with the request_id cleared. The one way every mutation derives its key.
pub fn key<M: Mutation>(scope: String, request: &M) -> Result<Key> {
    validate_request_id(request.request_id())?;
    crate::telemetry::rpc::note_request_id(request.request_id());
    Ok(Key::new(
        scope,
        request.request_id(),
        M::METHOD,
        &request.blank(),
    ))
}

/// Converts the handler's result to a tonic response, logging failures (INTERNAL and
/// UNAVAILABLE loudly, caller mistakes at debug level).
pub fn reply<T>(result: Result<T>) -> std::result::Result<tonic::Response<T>, Status> {
    result.map(tonic::Response::new).map_err(status)
}

/// An error as the status a caller receives, logged as [`reply`] logs it.
pub fn status(err: Error) -> Status {
    match err.code {
        tonic::Code::Internal => tracing::error!(reason = err.reason.as_str(), "{}", err.message),
        tonic::Code::Unavailable | tonic::Code::Aborted => {
            tracing::warn!(reason = err.reason.as_str(), "{}", err.message)
        }
        _ => tracing::debug!(code = ?err.code, reason = err.reason.as_str(), "{}", err.message),
    }
    Status::from(err)
}

/// An entry as `caller` may see it: provider costs are for operators (and admins) only.
pub fn redact(
    caller: &Caller,
    mut transaction: crate::proto::Transaction,
) -> crate::proto::Transaction {
    if !caller.has_any_role(&[crate::auth::Role::Operator]) {
        transaction.provider_cost.clear();
    }
    transaction
}

impl Ctx {
    /// Checks that a resource found by id (or not) belongs to an account in scope; a
    /// missing resource is NOT_FOUND only for callers who may see everything.
    pub async fn owned_in_scope<T>(
        &self,
        caller: &Caller,
        found: Option<T>,
        account_of: impl Fn(&T) -> &str,
        kind: &str,
        id: &str,
    ) -> Result<T> {
        let Some(resource) = found else {
            return Err(if caller.is_global() {
                Error::not_found(kind, id)
            } else {
                out_of_scope(id)
            });
        };
        let account = find_account(&self.store.db, account_of(&resource)).await?;
        match account {
            Some(account) if caller.covers(&ancestry(&account)) => Ok(resource),
            _ => Err(out_of_scope(id)),
        }
    }

    /// Loads a wallet by id and checks its account is in scope.
    pub async fn wallet_in_scope(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<crate::store::entity::wallet::Model> {
        let id = convert::id("wallet_id", id, "wal")?;
        let wallet = crate::store::accounts::find_wallet_by_id(&self.store.db, &id).await?;
        self.owned_in_scope(caller, wallet, |w| &w.account_id, "wallet", &id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;
    use crate::error::Reason;

    /// An error quoting a huge input still fits an HTTP/2 trailer block.
    #[test]
    fn error_messages_and_metadata_are_bounded() {
        let quoted = "ü".repeat(100_000);
        let mut err = Error::invalid(Reason::InvalidField, "units", format!("`{quoted}` is bad"));
        err.metadata.push(("value".into(), quoted.clone()));
        let status = Status::from(err);
        assert!(
            status.message().len() <= MAX_ERROR_MESSAGE + 64,
            "{}",
            status.message().len()
        );
        assert!(
            status.message().ends_with(" bytes in all)"),
            "{}",
            status.message()
        );
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("ErrorInfo");
        assert!(info.metadata["value"].len() <= MAX_ERROR_METADATA + 64);
        assert_eq!(info.metadata["field"], "units");
        assert!(
            status.details().len() < 4 * 1024,
            "{}",
            status.details().len()
        );
        // Short ones are sent as they are.
        let status = Status::from(Error::invalid(Reason::InvalidField, "units", "bad"));
        assert_eq!(status.message(), "units: bad");
    }
}
