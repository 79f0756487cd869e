//! GrantService: provisioning units (grants go through the ledger batcher, like debits).

use tonic::{Request, Response, Status};

use super::{Ctx, convert, key, outcome::Respond, reply};
use crate::{
    domain::{Amount, GrantKind, Period, Rollover, Schedule, wallet::MAX_CATCH_UP_PERIODS},
    error::{Error, Reason, Result},
    proto::{self, grant_service_server::GrantService},
    store::{
        idempotency::Key,
        ledger::{self, AdjustOp, GrantOp, Op, ScheduleOp, VoidOp},
        pagination,
    },
};

impl Ctx {
    async fn create_grant(
        &self,
        request: Request<proto::CreateGrantRequest>,
    ) -> Result<proto::Grant> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .grant
            .clone()
            .ok_or_else(|| Error::missing("grant"))?;
        let kind = convert::parse_grant_kind(wire.kind)?;
        let amount = convert::positive("grant.amount", &wire.amount)?;
        let unit_price = convert::unit_price("grant.unit_price", &wire.unit_price)?;
        let currency = convert::currency("grant.currency", &wire.currency, !unit_price.is_zero())?;
        let contract_ref = convert::optional("grant.contract_ref", &wire.contract_ref, 256)?;
        let effective_time = convert::micros("grant.effective_time", wire.effective_time.as_ref())?;
        let expire_time = convert::micros("grant.expire_time", wire.expire_time.as_ref())?;
        let now = self.store.clock.now_micros();
        if let Some(expiry) = expire_time
            && expiry <= effective_time.unwrap_or(now).max(now)
        {
            return Err(Error::invalid(
                Reason::InvalidField,
                "grant.expire_time",
                "must lie after now and after effective_time",
            ));
        }
        let wallet = self.wallet_in_scope(&caller, &wire.wallet_id).await?;
        let key = key(Key::account_scope(&wallet.account_id), &request)?;
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
        proto::Grant::respond(self.ledger.submit(op).await?)
    }

    async fn void_grant(&self, request: Request<proto::VoidGrantRequest>) -> Result<proto::Grant> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let id = convert::id("id", &request.id, "grt")?;
        let reason = convert::optional("reason", &request.reason, 512)?;
        let found = ledger::find_grant(&self.store.db, &id).await?;
        let grant = self.owned_grant(&caller, found, &id).await?;
        let key = key(Key::account_scope(&grant.1), &request)?;
        let op = Op::Void(VoidOp {
            key,
            wallet_id: grant.0.wallet_id,
            grant_id: id,
            reason,
            actor: caller.sub,
        });
        proto::Grant::respond(self.ledger.submit(op).await?)
    }

    /// A grant (by id) whose wallet's account is in scope, with that account id.
    async fn owned_grant(
        &self,
        caller: &crate::auth::Caller,
        found: Option<crate::store::entity::grant::Model>,
        id: &str,
    ) -> Result<(crate::store::entity::grant::Model, String)> {
        let grant = match found {
            Some(grant) => {
                // Outside scope, the answer names the grant asked for (never its wallet) and
                // is the same as for a grant that does not exist.
                let wallet = self
                    .wallet_in_scope(caller, &grant.wallet_id)
                    .await
                    .map_err(|err| match err.code {
                        tonic::Code::PermissionDenied | tonic::Code::NotFound => {
                            super::out_of_scope(id)
                        }
                        _ => err,
                    })?;
                (grant, wallet.account_id)
            }
            None => {
                return Err(if caller.is_global() {
                    Error::not_found("grant", id)
                } else {
                    super::out_of_scope(id)
                });
            }
        };
        Ok(grant)
    }

    async fn adjust_balance(
        &self,
        request: Request<proto::AdjustBalanceRequest>,
    ) -> Result<proto::Transaction> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        if request.units.is_empty() {
            return Err(Error::missing("units"));
        }
        let units = Amount::parse(&request.units).map_err(|err| Error::amount("units", err))?;
        if units.is_zero() {
            return Err(Error::invalid(
                Reason::InvalidAmount,
                "units",
                "must not be zero",
            ));
        }
        let reason = convert::required("reason", &request.reason, 512)?;
        let wallet = self.wallet_in_scope(&caller, &request.wallet_id).await?;
        let key = key(Key::account_scope(&wallet.account_id), &request)?;
        let op = Op::Adjust(AdjustOp {
            key,
            wallet_id: wallet.id,
            units: units.micros(),
            reason,
            actor: caller.sub,
        });
        proto::Transaction::respond(self.ledger.submit(op).await?)
    }

    async fn create_allotment_schedule(
        &self,
        request: Request<proto::CreateAllotmentScheduleRequest>,
    ) -> Result<proto::AllotmentSchedule> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .allotment_schedule
            .clone()
            .ok_or_else(|| Error::missing("allotment_schedule"))?;
        let amount = convert::positive("allotment_schedule.amount", &wire.amount)?;
        let period = match proto::SchedulePeriod::try_from(wire.period) {
            Ok(proto::SchedulePeriod::Daily) => Period::Daily,
            Ok(proto::SchedulePeriod::Weekly) => Period::Weekly,
            Ok(proto::SchedulePeriod::Monthly) => Period::Monthly,
            Ok(proto::SchedulePeriod::Yearly) => Period::Yearly,
            Ok(proto::SchedulePeriod::Unspecified) => {
                return Err(Error::missing("allotment_schedule.period"));
            }
            Err(_) => {
                return Err(Error::invalid(
                    Reason::InvalidEnum,
                    "allotment_schedule.period",
                    format!("unknown period {}", wire.period),
                ));
            }
        };
        let rollover = match proto::RolloverPolicy::try_from(wire.rollover_policy) {
            Ok(proto::RolloverPolicy::Unspecified | proto::RolloverPolicy::None) => {
                if !wire.rollover_cap.is_empty() {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        "allotment_schedule.rollover_cap",
                        "only applies with ROLLOVER_POLICY_CAPPED",
                    ));
                }
                Rollover::None
            }
            Ok(proto::RolloverPolicy::Capped) => Rollover::Capped(convert::positive(
                "allotment_schedule.rollover_cap",
                &wire.rollover_cap,
            )?),
            Err(_) => {
                return Err(Error::invalid(
                    Reason::InvalidEnum,
                    "allotment_schedule.rollover_policy",
                    format!("unknown rollover policy {}", wire.rollover_policy),
                ));
            }
        };
        let kind = if wire.kind == 0 {
            GrantKind::Contract
        } else {
            convert::parse_grant_kind(wire.kind)?
        };
        let now = self.store.clock.now_micros();
        let start_time =
            convert::micros("allotment_schedule.start_time", wire.start_time.as_ref())?
                .unwrap_or(now);
        let end_time = convert::micros("allotment_schedule.end_time", wire.end_time.as_ref())?;
        if end_time.is_some_and(|end| end <= start_time) {
            return Err(Error::invalid(
                Reason::InvalidField,
                "allotment_schedule.end_time",
                "must lie after start_time",
            ));
        }
        // A start in the past is caught up in the creating batch: bounded, so that batch
        // stays ordinary (docs/ARCHITECTURE.md, "Schedules").
        let probe = Schedule {
            id: String::new(),
            amount,
            period,
            start_time,
            end_time,
            rollover,
            next_period: 0,
            priority: 0,
            unit_price: Default::default(),
            currency: String::new(),
        };
        if probe.periods_started(now, MAX_CATCH_UP_PERIODS) > MAX_CATCH_UP_PERIODS {
            return Err(Error::invalid(
                Reason::ScheduleStartTooEarly,
                "allotment_schedule.start_time",
                format!(
                    "a schedule may start at most {MAX_CATCH_UP_PERIODS} periods before now; \
                     grant what is older with CreateGrant"
                ),
            )
            .with("max_catch_up_periods", MAX_CATCH_UP_PERIODS));
        }
        let unit_price = convert::unit_price("allotment_schedule.unit_price", &wire.unit_price)?;
        let currency = convert::currency(
            "allotment_schedule.currency",
            &wire.currency,
            !unit_price.is_zero(),
        )?;
        let contract_ref =
            convert::optional("allotment_schedule.contract_ref", &wire.contract_ref, 256)?;
        let wallet = self.wallet_in_scope(&caller, &wire.wallet_id).await?;
        let key = key(Key::account_scope(&wallet.account_id), &request)?;
        let op = Op::Schedule(ScheduleOp {
            key,
            wallet_id: wallet.id,
            amount,
            period,
            start_time,
            end_time,
            rollover,
            kind,
            priority: wire.priority,
            unit_price,
            currency,
            contract_ref,
            actor: caller.sub,
        });
        proto::AllotmentSchedule::respond(self.ledger.submit(op).await?)
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
                let caller = super::access::caller(&request)?;
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

    async fn void_grant(
        &self,
        request: Request<proto::VoidGrantRequest>,
    ) -> Result<Response<proto::Grant>, Status> {
        reply(Ctx::void_grant(self, request).await)
    }

    async fn adjust_balance(
        &self,
        request: Request<proto::AdjustBalanceRequest>,
    ) -> Result<Response<proto::Transaction>, Status> {
        reply(Ctx::adjust_balance(self, request).await)
    }

    async fn create_allotment_schedule(
        &self,
        request: Request<proto::CreateAllotmentScheduleRequest>,
    ) -> Result<Response<proto::AllotmentSchedule>, Status> {
        reply(Ctx::create_allotment_schedule(self, request).await)
    }

    async fn list_allotment_schedules(
        &self,
        request: Request<proto::ListAllotmentSchedulesRequest>,
    ) -> Result<Response<proto::ListAllotmentSchedulesResponse>, Status> {
        reply(
            async {
                let caller = super::access::caller(&request)?;
                let request = request.into_inner();
                let wallet = self.wallet_in_scope(&caller, &request.wallet_id).await?;
                let page = pagination::parse(
                    "allotment_schedules",
                    request.page_size,
                    &request.page_token,
                )?;
                let (rows, next_page_token) =
                    ledger::list_schedules(&self.store.db, &wallet.id, &page).await?;
                Ok(proto::ListAllotmentSchedulesResponse {
                    allotment_schedules: rows.iter().map(convert::schedule).collect(),
                    next_page_token,
                })
            }
            .await,
        )
    }
}
