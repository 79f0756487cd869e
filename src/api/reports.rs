//! ReportService: statements and exports for procurement and finance.

use std::{collections::BTreeMap, pin::Pin};

use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{Ctx, convert, redact, reply, status};
use crate::{
    auth::Caller,
    error::{Error, Reason, Result},
    proto::{self, report_service_server::ReportService},
    store::{
        accounts::find_wallet,
        export::{self, Covers, Filter},
        statements,
    },
};

/// Chunks an export holds between the database and the connection: with [`export::CHUNK`]
/// entries each, what bounds its memory whatever its length.
const EXPORT_BUFFER: usize = 2;

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<proto::ExportTransactionsResponse, Status>> + Send>>;

fn money(values: &BTreeMap<String, Decimal>) -> Vec<proto::Money> {
    statements::format_money(values)
        .into_iter()
        .map(|(currency, amount)| proto::Money { currency, amount })
        .collect()
}

impl Ctx {
    async fn statement(
        &self,
        request: Request<proto::GetStatementRequest>,
    ) -> Result<proto::Statement> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let now = self.store.clock.now_micros();
        let (start, end) = convert::window(
            request.start_time.as_ref(),
            request.end_time.as_ref(),
            Some(now),
        )?;
        let (start, end) = (start.unwrap_or(0), end.unwrap_or(now));
        let wallet = match (request.wallet_id.is_empty(), request.account_id.is_empty()) {
            (false, true) => self.wallet_in_scope(&caller, &request.wallet_id).await?,
            (true, false) => {
                let unit = convert::unit(&request.unit)?;
                let account = self
                    .resolve_account(&caller, &request.account_id, "")
                    .await?;
                find_wallet(&self.store.db, &account.id, &unit)
                    .await?
                    .ok_or_else(|| Error::not_found("wallet", &format!("{}/{unit}", account.id)))?
            }
            _ => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "account_id",
                    "give account_id or wallet_id",
                ));
            }
        };
        // A read: one snapshot, nothing written (what fell due but is not recorded yet is
        // worked out in memory, see `statements::build`).
        let statement = statements::build(&self.store, &wallet.id, start, end, now).await?;
        Ok(proto::Statement {
            wallet_id: wallet.id.clone(),
            account_id: wallet.account_id.clone(),
            unit: wallet.unit.clone(),
            start_time: Some(convert::timestamp(start)),
            end_time: Some(convert::timestamp(end)),
            opening_balance: statement.opening.to_string(),
            closing_balance: statement.closing.to_string(),
            lines: statement
                .lines
                .iter()
                .map(|(kind, line)| -> Result<proto::StatementLine> {
                    Ok(proto::StatementLine {
                        kind: proto::TransactionKind::from_str_name(&format!(
                            "TRANSACTION_KIND_{kind}"
                        ))
                        .unwrap_or(proto::TransactionKind::Unspecified)
                            as i32,
                        count: line.count,
                        units: crate::domain::amount::format_decimal(
                            Decimal::try_from_i128_with_scale(line.units, 6)
                                .map_err(|_| Error::internal("statement line out of range"))?,
                        ),
                        money: money(&line.money),
                    })
                })
                .collect::<Result<_>>()?,
            movements: statement
                .movements
                .iter()
                .map(|entry| redact(&caller, convert::transaction(entry)))
                .collect(),
            opening_money: money(&statement.opening_money),
            closing_money: money(&statement.closing_money),
        })
    }
}

impl Ctx {
    /// What an export request selects, within the caller's scope.
    async fn export_filter(
        &self,
        caller: &Caller,
        request: &proto::ExportTransactionsRequest,
    ) -> Result<Filter> {
        let (start, end) =
            convert::window(request.start_time.as_ref(), request.end_time.as_ref(), None)?;
        let kinds = request
            .kinds
            .iter()
            .map(|kind| convert::movement_kind("kinds", *kind))
            .collect::<Result<Vec<_>>>()?;
        let covers = match (request.account_id.is_empty(), request.wallet_id.is_empty()) {
            (true, false) if request.include_sub_accounts => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "include_sub_accounts",
                    "applies to account_id, not to a wallet",
                ));
            }
            (true, false) => {
                Covers::Wallet(self.wallet_in_scope(caller, &request.wallet_id).await?.id)
            }
            (false, true) => {
                let account = self
                    .resolve_account(caller, &request.account_id, "")
                    .await?;
                if request.include_sub_accounts {
                    Covers::Subtrees(vec![account.id])
                } else {
                    Covers::Accounts(vec![account.id])
                }
            }
            (true, true) => match self.scope_roots(caller).await? {
                None => Covers::All,
                Some(roots) => Covers::Subtrees(roots),
            },
            (false, false) => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "account_id",
                    "give account_id or wallet_id, not both",
                ));
            }
        };
        Ok(Filter {
            covers,
            start,
            end,
            kinds,
        })
    }
}

#[tonic::async_trait]
impl ReportService for Ctx {
    type ExportTransactionsStream = ExportStream;

    async fn export_transactions(
        &self,
        request: Request<proto::ExportTransactionsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let caller = super::access::caller(&request).map_err(status)?;
        let filter = self
            .export_filter(&caller, request.get_ref())
            .await
            .map_err(status)?;
        let (rows, received) = mpsc::channel(EXPORT_BUFFER);
        tokio::spawn(export::export(self.store.db.clone(), filter, rows));
        let chunks = ReceiverStream::new(received).map(move |chunk| {
            chunk
                .map(|rows| proto::ExportTransactionsResponse {
                    transactions: rows
                        .iter()
                        .map(|t| redact(&caller, convert::transaction(t)))
                        .collect(),
                })
                .map_err(status)
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn get_budget(
        &self,
        request: Request<proto::GetBudgetRequest>,
    ) -> Result<Response<proto::Budget>, Status> {
        reply(Ctx::budget(self, request).await)
    }

    async fn get_usage_report(
        &self,
        request: Request<proto::GetUsageReportRequest>,
    ) -> Result<Response<proto::UsageReport>, Status> {
        reply(Ctx::usage_report(self, request).await)
    }

    async fn get_margin_report(
        &self,
        request: Request<proto::GetMarginReportRequest>,
    ) -> Result<Response<proto::MarginReport>, Status> {
        reply(Ctx::margin_report(self, request).await)
    }

    async fn get_price_transparency(
        &self,
        request: Request<proto::GetPriceTransparencyRequest>,
    ) -> Result<Response<proto::PriceTransparency>, Status> {
        reply(Ctx::price_transparency(self, request).await)
    }

    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        reply(Ctx::audit_events(self, request).await)
    }

    async fn get_statement(
        &self,
        request: Request<proto::GetStatementRequest>,
    ) -> Result<Response<proto::Statement>, Status> {
        reply(Ctx::statement(self, request).await)
    }
}
