//! GrantService: provisioning units (grants go through the ledger batcher, like debits).

use tonic::{Request, Response, Status};

use super::{Ctx, PROVISIONERS, READERS, convert, key, reply};
use crate::{
    error::{Error, Result},
    proto::{self, grant_service_server::GrantService},
    store::{
        idempotency::Key,
        ledger::{self, GrantOp, Op, Outcome},
        pagination,
    },
};

/// ISO 4217-style currency code: three upper-case letters.
fn currency(value: &str, required: bool) -> Result<String> {
    if value.is_empty() {
        if required {
            return Err(Error::invalid(
                "MISSING_FIELD",
                "grant.currency",
                "is required when unit_price is above 0",
            ));
        }
        return Ok(String::new());
    }
    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "INVALID_FIELD",
            "grant.currency",
            "must be a three-letter ISO 4217 code such as USD",
        ));
    }
    Ok(value.to_string())
}

impl Ctx {
    async fn create_grant(
        &self,
        request: Request<proto::CreateGrantRequest>,
    ) -> Result<proto::Grant> {
        let caller = self.caller(&request, "CreateGrant", PROVISIONERS)?;
        let request = request.into_inner();
        let wire = request
            .grant
            .clone()
            .ok_or_else(|| Error::missing("grant"))?;
        let kind = convert::parse_grant_kind(wire.kind)?;
        let amount = convert::positive("grant.amount", &wire.amount)?;
        let unit_price = convert::decimal("grant.unit_price", &wire.unit_price)?;
        let currency = currency(&wire.currency, !unit_price.is_zero())?;
        let contract_ref = convert::optional("grant.contract_ref", &wire.contract_ref, 256)?;
        let effective_time = convert::micros("grant.effective_time", wire.effective_time.as_ref())?;
        let expire_time = convert::micros("grant.expire_time", wire.expire_time.as_ref())?;
        let now = self.store.clock.now_micros();
        if let Some(expiry) = expire_time
            && expiry <= effective_time.unwrap_or(now).max(now)
        {
            return Err(Error::invalid(
                "INVALID_FIELD",
                "grant.expire_time",
                "must lie after now and after effective_time",
            ));
        }
        let wallet = self.wallet_in_scope(&caller, &wire.wallet_id).await?;
        let blank = proto::CreateGrantRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let key = key(
            Key::account_scope(&wallet.account_id),
            &request.request_id,
            "CreateGrant",
            &blank,
        )?;
        let op = Op::Grant(GrantOp {
            key,
            wallet_id: wallet.id,
            kind,
            amount,
            priority: wire.priority,
            effective_time,
            expire_time,
            unit_price,
            currency,
            contract_ref,
            actor: caller.sub,
        });
        match self.ledger.submit(op).await? {
            Outcome::Grant(grant) => Ok(grant),
            Outcome::Debit(_) => Err(Error::internal("ledger answered a grant with a debit")),
        }
    }
}

#[tonic::async_trait]
impl GrantService for Ctx {
    async fn create_grant(
        &self,
        request: Request<proto::CreateGrantRequest>,
    ) -> Result<Response<proto::Grant>, Status> {
        reply(Ctx::create_grant(self, request).await)
    }

    async fn list_grants(
        &self,
        request: Request<proto::ListGrantsRequest>,
    ) -> Result<Response<proto::ListGrantsResponse>, Status> {
        reply(
            async {
                let caller = self.caller(&request, "ListGrants", READERS)?;
                let request = request.into_inner();
                let wallet = self.wallet_in_scope(&caller, &request.wallet_id).await?;
                let page = pagination::parse("grants", request.page_size, &request.page_token)?;
                let (rows, next_page_token) =
                    ledger::list_grants(&self.store.db, &wallet.id, &page).await?;
                let now = self.store.clock.now_micros();
                Ok(proto::ListGrantsResponse {
                    grants: rows.iter().map(|g| convert::grant(g, now)).collect(),
                    next_page_token,
                })
            }
            .await,
        )
    }
}
