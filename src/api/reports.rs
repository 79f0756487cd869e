//! ReportService: statements for procurement and finance.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use super::{Ctx, convert, reply};
use crate::{
    error::{Error, Reason, Result},
    proto::{self, report_service_server::ReportService},
    store::{accounts::find_wallet, statements},
};

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
        let start = convert::micros("start_time", request.start_time.as_ref())?.unwrap_or(0);
        let end = convert::micros("end_time", request.end_time.as_ref())?.unwrap_or(now);
        if end < start {
            return Err(Error::invalid(
                Reason::InvalidField,
                "end_time",
                "must not lie before start_time",
            ));
        }
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
        let operator = caller.has_any_role(&[crate::auth::Role::Operator]);
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
                .map(|entry| {
                    let mut t = convert::transaction(entry);
                    if !operator {
                        t.provider_cost.clear();
                    }
                    t
                })
                .collect(),
            opening_money: money(&statement.opening_money),
            closing_money: money(&statement.closing_money),
        })
    }
}

#[tonic::async_trait]
impl ReportService for Ctx {
    async fn get_statement(
        &self,
        request: Request<proto::GetStatementRequest>,
    ) -> Result<Response<proto::Statement>, Status> {
        reply(Ctx::statement(self, request).await)
    }
}
