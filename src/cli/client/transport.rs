//! The connection: the endpoint for `--server` (TLS or plaintext), the Bearer token on every
//! call, failed calls as [`RpcError`], and [`Ctx`], what every command works with.

use std::{collections::BTreeMap, fmt, future::Future, time::Duration};

use anyhow::{Context, Result};
use tokio::sync::OnceCell;
use tonic::{
    Request, Response, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

use super::{
    args::{ClientArgs, DEFAULT_SERVER, PageArgs},
    output::{self, Output},
};
use crate::proto;
use crate::{error::code_name, tls::ClientTlsArgs};

/// The channel endpoint for `--server`: `https://` means TLS (the server's certificate
/// verified against `--tls-ca`, else the system's roots and Mozilla's; a client certificate
/// when one is given), `http://` plaintext; nothing else.
pub fn endpoint(server: &str, tls: &ClientTlsArgs) -> Result<tonic::transport::Endpoint> {
    let invalid = || format!("--server `{server}` is not a valid URL");
    let endpoint = Channel::from_shared(server.to_string())
        .with_context(invalid)?
        .connect_timeout(Duration::from_secs(10));
    match endpoint.uri().scheme_str() {
        Some("https") => endpoint
            .tls_config(tls.config()?)
            .with_context(|| format!("cannot set up TLS for {server}")),
        Some("http") => Ok(endpoint),
        _ => Err(anyhow::anyhow!(
            "--server `{server}` must start with http:// (plaintext) or https:// (TLS)"
        )),
    }
}

/// Sends `authorization: Bearer <token>` with every call (nothing without a token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// Sends `authorization` exactly as given (or not at all): for tests of malformed headers.
    pub fn header(value: Option<AsciiMetadataValue>) -> Self {
        Bearer(value)
    }

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
pub(super) struct Ctx {
    server: String,
    tls: ClientTlsArgs,
    bearer: Bearer,
    channel: OnceCell<Channel>,
    pub(super) out: Output,
}

impl Ctx {
    pub(super) fn new(args: &ClientArgs) -> Result<Self> {
        Ok(Ctx {
            server: args
                .server
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            tls: args.tls.clone(),
            bearer: Bearer::new(args.token.as_deref())?,
            channel: OnceCell::new(),
            out: Output { json: args.json },
        })
    }

    /// A generated client on the shared, authenticated channel, e.g.
    /// `ctx.client(AccountServiceClient::new)`.
    pub(super) async fn client<C>(&self, make: fn(Authed) -> C) -> Result<C> {
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
        endpoint(&self.server, &self.tls)?
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot connect to the allot server at {}{hint}",
                    self.server
                )
            })
    }

    /// Awaits a call; a failure becomes an [`RpcError`].
    pub(super) async fn call<T>(
        &self,
        response: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T> {
        match response.await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.rpc_error(status)),
        }
    }

    /// A failed call (or a stream that ended with an error) as an [`RpcError`].
    pub(super) fn rpc_error(&self, status: Status) -> anyhow::Error {
        RpcError {
            status,
            server: self.server.clone(),
        }
        .into()
    }

    /// Awaits a call and prints the message it returns.
    pub(super) async fn show<T: prost::Message + prost::Name>(
        &self,
        response: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<()> {
        let message = self.call(response).await?;
        Ok(self.out.one(&message)?)
    }

    /// Lists one page, or with `--all` every page from the first asked for, and prints them.
    /// `call(client, request)` makes one call, e.g. `|mut c, r| async move { c.list_x(r).await }`.
    pub(super) async fn pages<C: Clone, R: ListRequest, P: prost::Message + prost::Name, F>(
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
        let first = request
            .clone()
            .page(page_size, page.page_token.unwrap_or_default());
        let mut pages = output::dynamic(&self.call(call(client.clone(), first)).await?);
        let mut token = output::next_page_token(&pages);
        while page.all && !token.is_empty() {
            let next = request.clone().page(page_size, token);
            let next = output::dynamic(&self.call(call(client.clone(), next)).await?);
            token = output::next_page_token(&next);
            output::append_page(&mut pages, next);
        }
        Ok(self.out.many(&pages)?)
    }
}

/// A list request, whose page can be chosen.
pub(super) trait ListRequest: Clone {
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
    ListTransactionsRequest,
    ListAccountOverridesRequest,
    ListAuditEventsRequest,
    ListWebhookEndpointsRequest,
    ListWebhookDeliveriesRequest
);

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

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
