//! LedgerService: the request path. Debits are validated here and applied by the batcher.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status};

use super::{Ctx, convert, key, outcome::Respond, redact, reply};
use crate::{
    auth::Caller,
    domain::MovementKind,
    error::{Error, Reason, Result},
    proto::{self, ledger_service_server::LedgerService},
    store::{
        accounts::find_wallet,
        directory::AccountIdentity,
        entity::{account, reservation, wallet},
        idempotency::Key,
        ledger::{self, CaptureOp, DebitOp, Op, RefundOp, ReleaseOp, ReserveOp},
        pagination,
    },
    telemetry::metrics,
};

/// Most debits one BatchDebit may carry.
pub const MAX_BATCH_DEBITS: usize = 1000;

impl Ctx {
    async fn debit(&self, request: Request<proto::DebitRequest>) -> Result<proto::DebitResponse> {
        let caller = super::access::caller(&request)?;
        let op = self
            .debit_op(&caller, request.into_inner(), &mut HashMap::new())
            .await?;
        self.submit_debit(&caller, op).await
    }

    /// Validates one debit into a ledger operation. `accounts` caches account lookups
    /// (a batch often names the same accounts many times).
    async fn debit_op(
        &self,
        caller: &Caller,
        request: proto::DebitRequest,
        accounts: &mut HashMap<(String, String), Arc<AccountIdentity>>,
    ) -> Result<Op> {
        let unit = convert::unit(&request.unit)?;
        let request_type = convert::name("request_type", &request.request_type, 128)?;
        let quantities = convert::quantities(&request.quantities)?;
        let metadata = convert::string_map("metadata", &request.metadata, 32, 512)?;
        let max_units = if request.max_units.is_empty() {
            None
        } else {
            Some(convert::non_negative("max_units", &request.max_units)?)
        };
        let named = (request.account_id.clone(), request.external_id.clone());
        let account = match accounts.get(&named) {
            Some(account) => account.clone(),
            None => {
                let account = self
                    .resolve_identity(caller, &request.account_id, &request.external_id)
                    .await?;
                accounts.insert(named, account.clone());
                account
            }
        };
        let key = key(Key::account_scope(&account.id), &request)?;
        Ok(Op::Debit(DebitOp {
            key,
            account_id: account.id.clone(),
            unit,
            request_type,
            quantities,
            metadata,
            max_units,
            actor: caller.sub.clone(),
        }))
    }

    async fn submit_debit(&self, caller: &Caller, op: Op) -> Result<proto::DebitResponse> {
        let request_type = match &op {
            Op::Debit(debit) => debit.request_type.clone(),
            _ => String::new(),
        };
        let outcome = self.ledger.submit(op).await;
        metrics::debit(&request_type, &outcome);
        let mut response = proto::DebitResponse::respond(outcome?)?;
        response.transaction = response.transaction.map(|t| redact(caller, t));
        Ok(response)
    }

    /// Validates every debit, then submits all of them at once: they share group commits,
    /// and each gets exactly the outcome a unary Debit would have had.
    async fn batch_debit(
        &self,
        request: Request<proto::BatchDebitRequest>,
    ) -> Result<proto::BatchDebitResponse> {
        let caller = super::access::caller(&request)?;
        let debits = request.into_inner().debits;
        if debits.is_empty() || debits.len() > MAX_BATCH_DEBITS {
            return Err(Error::invalid(
                Reason::InvalidField,
                "debits",
                format!("give 1 to {MAX_BATCH_DEBITS} debits"),
            )
            .with("max", MAX_BATCH_DEBITS));
        }
        let mut accounts = HashMap::new();
        let mut prepared = Vec::with_capacity(debits.len());
        for debit in debits {
            prepared.push(self.debit_op(&caller, debit, &mut accounts).await);
        }
        let outcomes = futures::future::join_all(prepared.into_iter().map(|op| async {
            match op {
                Ok(op) => self.submit_debit(&caller, op).await,
                Err(err) => Err(err),
            }
        }))
        .await;
        Ok(proto::BatchDebitResponse {
            results: outcomes
                .into_iter()
                .map(|outcome| proto::DebitResult {
                    result: Some(match outcome {
                        Ok(response) => proto::debit_result::Result::Response(response),
                        Err(err) => proto::debit_result::Result::Error(proto::DebitError {
                            code: err.code as i32,
                            reason: err.reason.as_str().to_string(),
                            message: err.message,
                            metadata: err.metadata.into_iter().collect(),
                        }),
                    }),
                })
                .collect(),
        })
    }

    async fn reserve(&self, request: Request<proto::ReserveRequest>) -> Result<proto::Reservation> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let unit = convert::unit(&request.unit)?;
        let quantities = convert::quantities(&request.quantities)?;
        let units = if request.units.is_empty() {
            None
        } else {
            if !request.quantities.is_empty() {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "units",
                    "give estimated quantities or units, not both",
                ));
            }
            Some(convert::positive("units", &request.units)?)
        };
        let request_type = if units.is_some() && request.request_type.is_empty() {
            String::new()
        } else {
            convert::name("request_type", &request.request_type, 128)?
        };
        let ttl = match &request.ttl {
            None => self.limits.default_hold_ttl.min(self.limits.max_hold_ttl),
            Some(ttl) => {
                let max = self.limits.max_hold_ttl;
                let valid = ttl.seconds >= 0 && (0..1_000_000_000).contains(&ttl.nanos);
                let ttl =
                    std::time::Duration::new(ttl.seconds.max(0) as u64, ttl.nanos.max(0) as u32);
                if !valid || ttl.is_zero() || ttl > max {
                    return Err(Error::invalid(
                        Reason::TtlOutOfRange,
                        "ttl",
                        format!("must be above 0 and at most {}s", max.as_secs()),
                    )
                    .with("max_seconds", max.as_secs()));
                }
                ttl
            }
        };
        let account = self
            .resolve_identity(&caller, &request.account_id, &request.external_id)
            .await?;
        let key = key(Key::account_scope(&account.id), &request)?;
        let op = Op::Reserve(ReserveOp {
            key,
            account_id: account.id.clone(),
            unit,
            request_type: request_type.clone(),
            quantities,
            units,
            ttl_micros: i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX),
            actor: caller.sub,
        });
        let outcome = self.ledger.submit(op).await;
        metrics::hold("reserve", &request_type, &outcome);
        proto::Reservation::respond(outcome?)
    }

    /// A reservation by id whose account is in scope.
    async fn reservation_in_scope(&self, caller: &Caller, id: &str) -> Result<reservation::Model> {
        let id = convert::id("reservation_id", id, "rsv")?;
        let found = ledger::find_reservation(&self.store.db, &id).await?;
        self.owned_in_scope(caller, found, |r| &r.account_id, "reservation", &id)
            .await
    }

    async fn capture(
        &self,
        request: Request<proto::CaptureReservationRequest>,
    ) -> Result<proto::DebitResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let quantities = convert::quantities(&request.quantities)?;
        let units = match (request.units.is_empty(), request.quantities.is_empty()) {
            (false, true) => Some(convert::positive("units", &request.units)?),
            (true, false) => None,
            (false, false) => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "units",
                    "give the actual quantities or units, not both",
                ));
            }
            (true, true) => {
                return Err(Error::invalid(
                    Reason::MissingField,
                    "quantities",
                    "give the actual quantities or units",
                ));
            }
        };
        let hold = self
            .reservation_in_scope(&caller, &request.reservation_id)
            .await?;
        if units.is_none() && hold.request_type.is_empty() {
            return Err(Error::invalid(
                Reason::InvalidField,
                "quantities",
                "this reservation has no request_type to price quantities with; give units",
            ));
        }
        let key = key(Key::account_scope(&hold.account_id), &request)?;
        let op = Op::Capture(CaptureOp {
            key,
            wallet_id: hold.wallet_id,
            reservation_id: hold.id,
            quantities,
            units,
            actor: caller.sub.clone(),
        });
        let outcome = self.ledger.submit(op).await;
        metrics::hold("capture", &hold.request_type, &outcome);
        let mut response = proto::DebitResponse::respond(outcome?)?;
        response.transaction = response.transaction.map(|t| redact(&caller, t));
        Ok(response)
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseReservationRequest>,
    ) -> Result<proto::Reservation> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let hold = self
            .reservation_in_scope(&caller, &request.reservation_id)
            .await?;
        let key = key(Key::account_scope(&hold.account_id), &request)?;
        let op = Op::Release(ReleaseOp {
            key,
            wallet_id: hold.wallet_id,
            reservation_id: hold.id,
            actor: caller.sub,
        });
        let outcome = self.ledger.submit(op).await;
        metrics::hold("release", &hold.request_type, &outcome);
        proto::Reservation::respond(outcome?)
    }

    async fn refund(&self, request: Request<proto::RefundRequest>) -> Result<proto::Transaction> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let id = convert::id("transaction_id", &request.transaction_id, "txn")?;
        let units = if request.units.is_empty() {
            None
        } else {
            Some(convert::positive("units", &request.units)?)
        };
        let reason = convert::optional("reason", &request.reason, 512)?;
        let found = ledger::find_transaction(&self.store.db, &id).await?;
        let original = self
            .owned_in_scope(&caller, found, |t| &t.account_id, "transaction", &id)
            .await?;
        if !matches!(original.kind, MovementKind::Debit | MovementKind::Capture) {
            return Err(Error::precondition(
                Reason::NotRefundable,
                format!(
                    "only debits and captures can be refunded, not {}",
                    original.kind.as_str()
                ),
            )
            .with("kind", original.kind.as_str()));
        }
        let key = key(Key::account_scope(&original.account_id), &request)?;
        let op = Op::Refund(RefundOp {
            key,
            wallet_id: original.wallet_id,
            transaction_id: original.id,
            units,
            reason,
            actor: caller.sub.clone(),
        });
        let outcome = self.ledger.submit(op).await;
        metrics::refund(&outcome);
        let transaction = proto::Transaction::respond(outcome?)?;
        Ok(redact(&caller, transaction))
    }

    /// The wallet for (`account_id` | `external_id`, `unit`) in the caller's scope.
    pub(super) async fn resolve_wallet(
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
    type WatchBalanceStream = super::watch::WatchStream;

    async fn watch_balance(
        &self,
        request: Request<proto::WatchBalanceRequest>,
    ) -> Result<Response<Self::WatchBalanceStream>, Status> {
        Ctx::watch_balance(self, request)
            .await
            .map(Response::new)
            .map_err(super::status)
    }

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
                let caller = super::access::caller(&request)?;
                let r = request.get_ref();
                let (_, wallet) = self
                    .resolve_wallet(&caller, &r.account_id, &r.external_id, &r.unit)
                    .await?;
                let now = self.store.clock.now_micros();
                let (model, balance) = ledger::wallet_balance(&self.store, &wallet.id, now).await?;
                Ok(convert::balance(&model, &balance))
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
                let caller = super::access::caller(&request)?;
                let r = request.into_inner();
                let page = pagination::parse("transactions", r.page_size, &r.page_token)?;
                let (_, wallet) = self
                    .resolve_wallet(&caller, &r.account_id, &r.external_id, &r.unit)
                    .await?;
                let (rows, next_page_token) =
                    ledger::list_transactions(&self.store.db, &wallet.id, &page).await?;
                Ok::<_, Error>(proto::ListTransactionsResponse {
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

    async fn reserve(
        &self,
        request: Request<proto::ReserveRequest>,
    ) -> Result<Response<proto::Reservation>, Status> {
        reply(Ctx::reserve(self, request).await)
    }

    async fn capture_reservation(
        &self,
        request: Request<proto::CaptureReservationRequest>,
    ) -> Result<Response<proto::DebitResponse>, Status> {
        reply(Ctx::capture(self, request).await)
    }

    async fn release_reservation(
        &self,
        request: Request<proto::ReleaseReservationRequest>,
    ) -> Result<Response<proto::Reservation>, Status> {
        reply(Ctx::release(self, request).await)
    }

    async fn refund(
        &self,
        request: Request<proto::RefundRequest>,
    ) -> Result<Response<proto::Transaction>, Status> {
        reply(Ctx::refund(self, request).await)
    }

    async fn batch_debit(
        &self,
        request: Request<proto::BatchDebitRequest>,
    ) -> Result<Response<proto::BatchDebitResponse>, Status> {
        reply(Ctx::batch_debit(self, request).await)
    }
}
