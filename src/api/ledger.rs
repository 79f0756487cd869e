//! LedgerService: the request path. Debits are validated here and applied by the batcher.

use tonic::{Request, Response, Status};

use super::{Ctx, READERS, convert, key, reply};
use crate::{
    auth::{Caller, Role},
    error::{Error, Result},
    proto::{self, ledger_service_server::LedgerService},
    store::{
        accounts::find_wallet,
        entity::{account, wallet},
        idempotency::Key,
        ledger::{self, DebitOp, Op, Outcome},
        pagination,
    },
};

const DEBITORS: &[Role] = &[Role::Service];

/// Provider costs are for operators; everyone else gets the entry without them.
fn redact(caller: &Caller, mut transaction: proto::Transaction) -> proto::Transaction {
    if !caller.has_any_role(&[Role::Operator]) {
        transaction.provider_cost.clear();
    }
    transaction
}

impl Ctx {
    async fn debit(&self, request: Request<proto::DebitRequest>) -> Result<proto::DebitResponse> {
        let caller = self.caller(&request, "Debit", DEBITORS)?;
        let request = request.into_inner();
        let unit = convert::unit(&request.unit)?;
        let request_type = convert::name("request_type", &request.request_type, 128)?;
        let quantities = convert::quantities(&request.quantities)?;
        let metadata = convert::string_map("metadata", &request.metadata, 32, 512)?;
        let max_units = if request.max_units.is_empty() {
            None
        } else {
            Some(convert::non_negative("max_units", &request.max_units)?)
        };
        let account = self
            .resolve_account(&caller, &request.account_id, &request.external_id)
            .await?;
        let blank = proto::DebitRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let key = key(
            Key::account_scope(&account.id),
            &request.request_id,
            "Debit",
            &blank,
        )?;
        let op = Op::Debit(DebitOp {
            key,
            account_id: account.id,
            unit,
            request_type,
            quantities,
            metadata,
            max_units,
            actor: caller.sub.clone(),
        });
        match self.ledger.submit(op).await? {
            Outcome::Debit(mut response) => {
                response.transaction = response.transaction.map(|t| redact(&caller, t));
                Ok(response)
            }
            Outcome::Grant(_) => Err(Error::internal("ledger answered a debit with a grant")),
        }
    }

    /// The wallet for (`account_id` | `external_id`, `unit`) in the caller's scope.
    async fn resolve_wallet(
        &self,
        caller: &Caller,
        account_id: &str,
        external_id: &str,
        unit: &str,
    ) -> Result<(account::Model, wallet::Model)> {
        let unit = convert::unit(unit)?;
        let account = self
            .resolve_account(caller, account_id, external_id)
            .await?;
        let wallet = find_wallet(&self.store.db, &account.id, &unit)
            .await?
            .ok_or_else(|| {
                Error::not_found("wallet", &format!("{}/{unit}", account.id))
                    .with("account_id", &account.id)
                    .with("unit", &unit)
            })?;
        Ok((account, wallet))
    }
}

#[tonic::async_trait]
impl LedgerService for Ctx {
    async fn debit(
        &self,
        request: Request<proto::DebitRequest>,
    ) -> Result<Response<proto::DebitResponse>, Status> {
        reply(Ctx::debit(self, request).await)
    }

    async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::Balance>, Status> {
        reply(
            async {
                let caller = self.caller(&request, "GetBalance", READERS)?;
                let r = request.get_ref();
                let (_, wallet) = self
                    .resolve_wallet(&caller, &r.account_id, &r.external_id, &r.unit)
                    .await?;
                ledger::balance(&self.store.db, &wallet, self.store.clock.now_micros()).await
            }
            .await,
        )
    }

    async fn list_transactions(
        &self,
        request: Request<proto::ListTransactionsRequest>,
    ) -> Result<Response<proto::ListTransactionsResponse>, Status> {
        reply(
            async {
                let caller = self.caller(&request, "ListTransactions", READERS)?;
                let r = request.into_inner();
                let page = pagination::parse("transactions", r.page_size, &r.page_token)?;
                let (_, wallet) = self
                    .resolve_wallet(&caller, &r.account_id, &r.external_id, &r.unit)
                    .await?;
                let (rows, next_page_token) =
                    ledger::list_transactions(&self.store.db, &wallet.id, &page).await?;
                Ok(proto::ListTransactionsResponse {
                    transactions: rows
                        .iter()
                        .map(|t| redact(&caller, convert::transaction(t)))
                        .collect(),
                    next_page_token,
                })
            }
            .await,
        )
    }
}
