//! Who may call what, in one place: a tower layer in front of every service authenticates the
//! request and checks its roles against [`ROUTES`], keyed by the gRPC path, before the
//! handler (or even the request's decoding) runs. The verified [`Caller`] travels in the
//! request's extensions; handlers take it with [`caller`].
//!
//! **Default deny**: a path under `/allot.` that is not in the table is refused
//! (PERMISSION_DENIED `METHOD_NOT_ALLOWED`), so a new method that nobody listed is closed,
//! not open to every token. A test walks every method of every service descriptor and fails
//! if one is missing. Health and reflection are public (no token).
//!
//! Scope (which accounts) is still checked by each handler, on the objects it resolves.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tonic::{Request, Status, body::Body, codegen::http};

use crate::{
    auth::{Authenticator, Caller, Role},
    error::{Error, Reason, Result},
};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, reflection).
    Public,
    /// A token carrying one of these roles (admin always passes).
    Roles(&'static [Role]),
}

/// Reads of accounts, wallets, grants, balances, transactions, statements.
const READERS: Access = Access::Roles(&[Role::Service, Role::AccountManager, Role::Procurement]);
/// Provisioning: accounts, wallets, grants, schedules, adjustments, voids.
const PROVISIONERS: Access = Access::Roles(&[Role::AccountManager]);
/// The request path: debits, holds.
const DEBITORS: Access = Access::Roles(&[Role::Service]);
/// Backends refund failed requests; account managers refund by goodwill.
const REFUNDERS: Access = Access::Roles(&[Role::Service, Role::AccountManager]);
/// Rate cards: drafts and publishing.
const OPERATORS: Access = Access::Roles(&[Role::Operator]);
/// Account overrides (contract prices).
const PRICE_SETTERS: Access = Access::Roles(&[Role::AccountManager, Role::Operator]);
/// Reports over many entries: for the people who read them, not for the request path
/// (service tokens cannot export). Operators see provider costs in them.
const REPORTERS: Access = Access::Roles(&[Role::AccountManager, Role::Procurement, Role::Operator]);
/// Anyone may read prices (only operators see routes and provider costs).
const PRICE_READERS: Access = Access::Roles(&[
    Role::Service,
    Role::AccountManager,
    Role::Procurement,
    Role::Operator,
]);

/// Webhook endpoints and their deliveries (endpoints of every account: admins only, checked
/// by the handlers).
const WEBHOOK_MANAGERS: Access = Access::Roles(&[Role::AccountManager, Role::Operator]);

/// Every method of allot's services and who may call it.
pub const ROUTES: &[(&str, Access)] = &[
    ("/allot.v1.AccountService/CreateAccount", PROVISIONERS),
    ("/allot.v1.AccountService/GetAccount", READERS),
    ("/allot.v1.AccountService/ListAccounts", READERS),
    ("/allot.v1.AccountService/UpdateAccount", PROVISIONERS),
    ("/allot.v1.AccountService/CreateWallet", PROVISIONERS),
    ("/allot.v1.AccountService/GetWallet", READERS),
    ("/allot.v1.AccountService/ListWallets", READERS),
    ("/allot.v1.AccountService/UpdateWallet", PROVISIONERS),
    ("/allot.v1.GrantService/CreateGrant", PROVISIONERS),
    ("/allot.v1.GrantService/ListGrants", READERS),
    ("/allot.v1.GrantService/VoidGrant", PROVISIONERS),
    ("/allot.v1.GrantService/AdjustBalance", PROVISIONERS),
    (
        "/allot.v1.GrantService/CreateAllotmentSchedule",
        PROVISIONERS,
    ),
    ("/allot.v1.GrantService/ListAllotmentSchedules", READERS),
    ("/allot.v1.RateCardService/CreateRateCard", OPERATORS),
    ("/allot.v1.RateCardService/PublishRateCard", OPERATORS),
    ("/allot.v1.RateCardService/GetRateCard", PRICE_READERS),
    ("/allot.v1.RateCardService/ListRateCards", PRICE_READERS),
    ("/allot.v1.RateCardService/QuotePrice", PRICE_READERS),
    // Contract prices: negotiated by account managers, set by them or operators; read by
    // the people who read reports.
    (
        "/allot.v1.RateCardService/SetAccountOverride",
        PRICE_SETTERS,
    ),
    ("/allot.v1.RateCardService/ListAccountOverrides", REPORTERS),
    ("/allot.v1.RateCardService/SimulateRateCard", OPERATORS),
    ("/allot.v1.LedgerService/Debit", DEBITORS),
    ("/allot.v1.LedgerService/BatchDebit", DEBITORS),
    ("/allot.v1.LedgerService/Reserve", DEBITORS),
    ("/allot.v1.LedgerService/CaptureReservation", DEBITORS),
    ("/allot.v1.LedgerService/ReleaseReservation", DEBITORS),
    ("/allot.v1.LedgerService/Refund", REFUNDERS),
    ("/allot.v1.LedgerService/GetBalance", READERS),
    ("/allot.v1.LedgerService/WatchBalance", READERS),
    ("/allot.v1.LedgerService/ListTransactions", READERS),
    ("/allot.v1.ReportService/GetStatement", READERS),
    ("/allot.v1.ReportService/ExportTransactions", REPORTERS),
    ("/allot.v1.ReportService/GetBudget", REPORTERS),
    ("/allot.v1.ReportService/GetUsageReport", REPORTERS),
    // Routes and provider costs: operators (and admins) only.
    ("/allot.v1.ReportService/GetMarginReport", OPERATORS),
    ("/allot.v1.ReportService/GetPriceTransparency", REPORTERS),
    ("/allot.v1.ReportService/ListAuditEvents", REPORTERS),
    (
        "/allot.v1.WebhookService/CreateWebhookEndpoint",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/GetWebhookEndpoint",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/ListWebhookEndpoints",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/UpdateWebhookEndpoint",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/DeleteWebhookEndpoint",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/RotateWebhookSecret",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/ListWebhookDeliveries",
        WEBHOOK_MANAGERS,
    ),
    (
        "/allot.v1.WebhookService/ReplayWebhookDeliveries",
        WEBHOOK_MANAGERS,
    ),
];

/// Services callable without a token.
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Who may call the method at `path`; `None` for a path nobody listed.
pub fn access(path: &str) -> Option<Access> {
    if PUBLIC_SERVICES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return Some(Access::Public);
    }
    static TABLE: std::sync::LazyLock<std::collections::HashMap<&'static str, Access>> =
        std::sync::LazyLock::new(|| ROUTES.iter().copied().collect());
    TABLE.get(path).copied()
}

/// The caller the access layer verified for this request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Error::internal("the request did not pass the access layer"))
}

/// The verified caller of a request to `path` with this `authorization` header, or why not.
pub fn authorize(auth: &Authenticator, path: &str, header: Option<&str>) -> Result<Option<Caller>> {
    let method = path.rsplit('/').next().unwrap_or(path);
    let roles = match access(path) {
        Some(Access::Public) => return Ok(None),
        Some(Access::Roles(roles)) => roles,
        None if path.starts_with("/allot.") => {
            return Err(Error::permission_denied(
                Reason::MethodNotAllowed,
                format!("{method} is not open to any role"),
            )
            .with("method", method));
        }
        // Not one of allot's methods: the router answers (UNIMPLEMENTED).
        None => return Ok(None),
    };
    let caller = auth
        .authenticate(header)
        .map_err(|err| Error::new(tonic::Code::Unauthenticated, err.reason(), err.to_string()))?;
    if !caller.has_any_role(roles) {
        return Err(Error::permission_denied(
            Reason::RoleNotAllowed,
            format!("no role of this token may call {method}"),
        )
        .with("method", method));
    }
    Ok(Some(caller))
}

/// The tower layer that applies [`authorize`] to every request.
#[derive(Clone)]
pub struct AccessLayer {
    auth: Arc<Authenticator>,
}

impl AccessLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AccessLayer { auth }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> tower::Service<http::Request<Body>> for AccessService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match authorize(&self.auth, request.uri().path(), header) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    crate::telemetry::rpc::note_sub(&caller.sub);
                    request.extensions_mut().insert(caller);
                }
                // `poll_ready` was forwarded to this very service; its future owns what it needs.
                Box::pin(self.inner.call(request))
            }
            Err(err) => {
                let status: Status = err.into();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Default deny, checked: every method of every allot service descriptor has an entry,
    /// and every entry names a real method.
    #[test]
    fn every_method_of_every_service_is_in_the_table() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        assert!(methods.len() >= ROUTES.len());
        for method in &methods {
            assert!(
                matches!(access(method), Some(Access::Roles(_))),
                "{method} is missing from api::access::ROUTES"
            );
        }
        for (route, _) in ROUTES {
            assert!(
                methods.iter().any(|m| m == route),
                "{route} is not a method"
            );
        }
    }

    #[test]
    fn unlisted_methods_are_refused_and_health_is_public() {
        let auth = Authenticator::from_config(&crate::auth::AuthConfig {
            hs256_secret: Some("a-secret-of-at-least-thirty-two-bytes!".into()),
            ..Default::default()
        })
        .unwrap();
        let err = authorize(&auth, "/allot.v1.LedgerService/Mint", None).unwrap_err();
        assert_eq!(err.reason, Reason::MethodNotAllowed);
        assert_eq!(
            authorize(&auth, "/grpc.health.v1.Health/Check", None),
            Ok(None)
        );
        let err = authorize(&auth, "/allot.v1.LedgerService/Debit", None).unwrap_err();
        assert_eq!(err.code, tonic::Code::Unauthenticated);
    }
}
