//! RateCardService: drafts, publishing, reading cards, quoting prices.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use super::{Ctx, convert, key, reply};
use crate::{
    auth::{Caller, Role},
    domain::{
        amount::{format_decimal, format_micros},
        pricing::validate_rates,
    },
    error::{Error, Reason, Result},
    proto::{self, rate_card_service_server::RateCardService},
    store::{
        accounts, audit, columns::OverrideRate, entity::account_override, idempotency::Key, new_id,
        overrides, pagination, rate_cards, simulate,
    },
};

const OPERATORS: &[Role] = &[Role::Operator];

fn operator_view(caller: &Caller) -> bool {
    caller.has_any_role(OPERATORS)
}

/// Rate cards price every tenant: creating and publishing them needs a token for all
/// accounts (`"*"`), whatever its role.
fn require_global(caller: &Caller, method: &str) -> Result<()> {
    if caller.is_global() {
        return Ok(());
    }
    Err(Error::permission_denied(
        Reason::GlobalScopeRequired,
        format!(
            "{method} changes prices for every account: it needs a token for all accounts (\"*\")"
        ),
    ))
}

impl Ctx {
    async fn create_rate_card(
        &self,
        request: Request<proto::CreateRateCardRequest>,
    ) -> Result<proto::RateCard> {
        let caller = super::access::caller(&request)?;
        require_global(&caller, "CreateRateCard")?;
        let request = request.into_inner();
        let wire = request
            .rate_card
            .clone()
            .ok_or_else(|| Error::missing("rate_card"))?;
        let rates = wire
            .rates
            .iter()
            .enumerate()
            .map(|(i, r)| convert::parse_rate(&format!("rate_card.rates[{i}]"), r))
            .collect::<Result<Vec<_>>>()?;
        validate_rates(&rates).map_err(|err| {
            Error::invalid(Reason::InvalidRateCard, "rate_card.rates", err.to_string())
        })?;
        let notes = convert::optional("rate_card.notes", &wire.notes, 4096)?;
        let key = key(Key::caller_scope(&caller.sub), &request)?;
        let now = self.store.clock.now_micros();
        let (card, _) = self
            .store
            .idempotent(&key, |tx| {
                let rates = rates.clone();
                let notes = notes.clone();
                Box::pin(async move {
                    let card = rate_cards::create_draft(tx, &rates, &notes, now).await?;
                    Ok(convert::rate_card(&card, None, true))
                })
            })
            .await?;
        Ok(card)
    }

    async fn publish_rate_card(
        &self,
        request: Request<proto::PublishRateCardRequest>,
    ) -> Result<proto::RateCard> {
        let caller = super::access::caller(&request)?;
        require_global(&caller, "PublishRateCard")?;
        let request = request.into_inner();
        if request.version <= 0 {
            return Err(Error::invalid(
                Reason::InvalidField,
                "version",
                "must be a version number (1, 2, …)",
            ));
        }
        let etag = convert::required("etag", &request.etag, 64)?;
        let effective_time = convert::micros("effective_time", request.effective_time.as_ref())?;
        let version = request.version;
        let clock = self.store.clock.clone();
        let actor = audit::Actor {
            sub: caller.sub.clone(),
            request_id: request.request_id.clone(),
        };
        if request.request_id.is_empty() {
            // Publishing twice fails (RATE_CARD_NOT_DRAFT), so a retry without a key is safe.
            let write = self.store.begin_write().await?;
            let card = publish(&write.tx, version, &etag, effective_time, &clock, &actor).await?;
            write.commit().await?;
            return Ok(card);
        }
        let key = key(Key::caller_scope(&caller.sub), &request)?;
        let (card, _) = self
            .store
            .idempotent(&key, |tx| {
                let etag = etag.clone();
                let clock = clock.clone();
                let actor = actor.clone();
                Box::pin(async move {
                    publish(tx, version, &etag, effective_time, &clock, &actor).await
                })
            })
            .await?;
        Ok(card)
    }

    async fn get_rate_card(
        &self,
        request: Request<proto::GetRateCardRequest>,
    ) -> Result<proto::RateCard> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let now = self.store.clock.now_micros();
        let current = rate_cards::in_force(&self.store.db, now).await?;
        let card = match request.version {
            v if v < 0 => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "version",
                    "must not be negative",
                ));
            }
            0 => {
                let at = convert::micros("time", request.time.as_ref())?.unwrap_or(now);
                rate_cards::in_force(&self.store.db, at)
                    .await?
                    .ok_or_else(|| {
                        Error::new(
                            tonic::Code::NotFound,
                            Reason::NoRateCardInForce,
                            "no rate card is in force at that time",
                        )
                    })?
            }
            // Drafts are for operators: to anyone else one does not exist.
            v => rate_cards::get(&self.store.db, v)
                .await?
                .filter(|card| operator_view(&caller) || card.state != rate_cards::DRAFT)
                .ok_or_else(|| Error::not_found("rate card", &v.to_string()))?,
        };
        Ok(convert::rate_card(
            &card,
            current.as_ref(),
            operator_view(&caller),
        ))
    }

    async fn list_rate_cards(
        &self,
        request: Request<proto::ListRateCardsRequest>,
    ) -> Result<proto::ListRateCardsResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let page = pagination::parse("rate_cards", request.page_size, &request.page_token)?;
        let view = operator_view(&caller);
        let (cards, next_page_token) = rate_cards::list(&self.store.db, &page, view).await?;
        let current = rate_cards::in_force(&self.store.db, self.store.clock.now_micros()).await?;
        Ok(proto::ListRateCardsResponse {
            rate_cards: cards
                .iter()
                .map(|c| convert::rate_card(c, current.as_ref(), view))
                .collect(),
            next_page_token,
        })
    }

    async fn quote_price(
        &self,
        request: Request<proto::QuotePriceRequest>,
    ) -> Result<proto::Quote> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        convert::unit(&request.unit)?;
        let request_type = convert::name("request_type", &request.request_type, 128)?;
        let quantities = convert::quantities(&request.quantities)?;
        let account = self
            .resolve_account(&caller, &request.account_id, &request.external_id)
            .await?;
        let unpriced = || {
            Error::precondition(
                Reason::UnpricedRequestType,
                format!("no rate in force for request type `{request_type}`"),
            )
            .with("request_type", &request_type)
        };
        let now = self.store.clock.now_micros();
        let card = rate_cards::in_force(&self.store.db, now)
            .await?
            .ok_or_else(unpriced)?;
        let rate = card.rate(&request_type).ok_or_else(unpriced)?;
        // The account's override in force, as a debit would price it.
        let records = overrides::all(&self.store.db).await?;
        let ancestry = accounts::ancestry_ids(&self.store.db, &account.id).await?;
        let ancestry: Vec<&str> = ancestry.iter().map(String::as_str).collect();
        let (units, override_id) = match records.in_force(&ancestry, &request_type, now) {
            Some((record, contract)) => (contract.price(&quantities)?, record.id.clone()),
            None => (rate.price(&quantities)?, String::new()),
        };
        Ok(proto::Quote {
            units: units.to_string(),
            rate_card_version: card.version,
            request_type,
            override_id,
        })
    }

    async fn set_account_override(
        &self,
        request: Request<proto::SetAccountOverrideRequest>,
    ) -> Result<proto::AccountOverride> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .account_override
            .clone()
            .ok_or_else(|| Error::missing("account_override"))?;
        let account = self.resolve_account(&caller, &wire.account_id, "").await?;
        let request_type = convert::name("account_override.request_type", &wire.request_type, 128)?;
        let rate = match &wire.rate {
            None => None,
            Some(rate) => {
                let at = "account_override.rate";
                for (field, set) in [
                    ("request_type", !rate.request_type.is_empty()),
                    ("route", !rate.route.is_empty()),
                    ("provider_cost", !rate.provider_cost.is_empty()),
                    ("list_prices", !rate.list_prices.is_empty()),
                ] {
                    if set {
                        return Err(Error::invalid(
                            Reason::InvalidField,
                            &format!("{at}.{field}"),
                            "must be empty: an override sets the customer's price; the \
                             request type is the override's, route, provider cost and list \
                             prices stay the card's",
                        ));
                    }
                }
                let wire_rate = proto::Rate {
                    request_type: request_type.clone(),
                    ..rate.clone()
                };
                let rate = convert::parse_rate(at, &wire_rate)?;
                rate.validate()
                    .map_err(|err| Error::invalid(Reason::InvalidField, at, err.to_string()))?;
                Some(rate)
            }
        };
        let effective = convert::micros(
            "account_override.effective_time",
            wire.effective_time.as_ref(),
        )?;
        let expire = convert::micros("account_override.expire_time", wire.expire_time.as_ref())?;
        let note = convert::optional("account_override.note", &wire.note, 1024)?;
        let key = key(Key::account_scope(&account.id), &request)?;
        let clock = self.store.clock.clone();
        let actor = audit::Actor {
            sub: caller.sub.clone(),
            request_id: request.request_id.clone(),
        };
        let (record, _) = self
            .store
            .idempotent(&key, |tx| {
                let (rate, request_type, note, actor, account_id, clock) = (
                    rate.clone(),
                    request_type.clone(),
                    note.clone(),
                    actor.clone(),
                    account.id.clone(),
                    clock.clone(),
                );
                Box::pin(async move {
                    let record = overrides::add(
                        tx,
                        || clock.now_micros(),
                        &actor,
                        |now| {
                            let effective_time = match effective {
                                Some(t) if t < now - rate_cards::PAST_TOLERANCE_MICROS => {
                                    return Err(Error::invalid(
                                        Reason::EffectiveTimeInPast,
                                        "account_override.effective_time",
                                        "may not lie in the past",
                                    ));
                                }
                                Some(t) => t.max(now),
                                None => now,
                            };
                            if expire.is_some_and(|end| end <= effective_time) {
                                return Err(Error::invalid(
                                    Reason::InvalidField,
                                    "account_override.expire_time",
                                    "must lie after effective_time",
                                ));
                            }
                            Ok(account_override::Model {
                                id: new_id("ovr"),
                                account_id,
                                request_type,
                                cleared: rate.is_none(),
                                rate: OverrideRate(rate),
                                effective_time,
                                expire_time: expire,
                                note,
                                actor: actor.sub.clone(),
                                create_time: now,
                            })
                        },
                    )
                    .await?;
                    Ok(convert::account_override(&record))
                })
            })
            .await?;
        Ok(record)
    }

    async fn simulate_rate_card(
        &self,
        request: Request<proto::SimulateRateCardRequest>,
    ) -> Result<proto::SimulateRateCardResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let rates = match (request.version, &request.rate_card) {
            (0, Some(card)) => {
                let rates = card
                    .rates
                    .iter()
                    .enumerate()
                    .map(|(i, r)| convert::parse_rate(&format!("rate_card.rates[{i}]"), r))
                    .collect::<Result<Vec<_>>>()?;
                validate_rates(&rates).map_err(|err| {
                    Error::invalid(Reason::InvalidRateCard, "rate_card.rates", err.to_string())
                })?;
                rates
            }
            (v, None) if v > 0 => rate_cards::get(&self.store.db, v)
                .await?
                .ok_or_else(|| Error::not_found("rate card", &v.to_string()))?
                .rates()
                .to_vec(),
            _ => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "version",
                    "give a version (1, 2, …) or rate_card, not both",
                ));
            }
        };
        let (start, end) =
            convert::window(request.start_time.as_ref(), request.end_time.as_ref(), None)?;
        let start = start.ok_or_else(|| Error::missing("start_time"))?;
        let end = end.ok_or_else(|| Error::missing("end_time"))?;
        super::insight::at_most_days(start, end, "a simulation")?;
        let wallets = self
            .wallets_or_all(
                &caller,
                &request.account_id,
                &request.unit,
                request.include_sub_accounts,
            )
            .await?;
        let now = self.store.clock.now_micros();
        let tx = self.store.read_snapshot().await?;
        let lines = simulate::simulate(&tx, &rates, wallets, start, end, now).await;
        tx.rollback().await?;
        Ok(proto::SimulateRateCardResponse {
            rows: lines?.iter().map(simulation_row).collect(),
        })
    }

    async fn list_account_overrides(
        &self,
        request: Request<proto::ListAccountOverridesRequest>,
    ) -> Result<proto::ListAccountOverridesResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let account = self
            .resolve_account(&caller, &request.account_id, "")
            .await?;
        let page = pagination::parse("account_overrides", request.page_size, &request.page_token)?;
        let ids = if request.include_sub_accounts {
            accounts::subtree_ids(&self.store.db, &account).await?
        } else {
            vec![account.id.clone()]
        };
        let (records, next_page_token) = overrides::list(&self.store.db, &ids, &page).await?;
        Ok(proto::ListAccountOverridesResponse {
            account_overrides: records.iter().map(convert::account_override).collect(),
            next_page_token,
        })
    }
}

/// Publishes inside `tx` and renders the card as operators see it.
async fn publish(
    tx: &sea_orm::DatabaseTransaction,
    version: i64,
    etag: &str,
    effective_time: Option<i64>,
    clock: &crate::clock::Clock,
    actor: &audit::Actor,
) -> Result<proto::RateCard> {
    let card = rate_cards::publish(
        tx,
        version,
        etag,
        effective_time,
        || clock.now_micros(),
        actor,
    )
    .await?;
    let current = rate_cards::in_force(tx, clock.now_micros()).await?;
    Ok(convert::rate_card(&card, current.as_ref(), true))
}

#[tonic::async_trait]
impl RateCardService for Ctx {
    async fn create_rate_card(
        &self,
        request: Request<proto::CreateRateCardRequest>,
    ) -> Result<Response<proto::RateCard>, Status> {
        reply(Ctx::create_rate_card(self, request).await)
    }

    async fn publish_rate_card(
        &self,
        request: Request<proto::PublishRateCardRequest>,
    ) -> Result<Response<proto::RateCard>, Status> {
        reply(Ctx::publish_rate_card(self, request).await)
    }

    async fn get_rate_card(
        &self,
        request: Request<proto::GetRateCardRequest>,
    ) -> Result<Response<proto::RateCard>, Status> {
        reply(Ctx::get_rate_card(self, request).await)
    }

    async fn list_rate_cards(
        &self,
        request: Request<proto::ListRateCardsRequest>,
    ) -> Result<Response<proto::ListRateCardsResponse>, Status> {
        reply(Ctx::list_rate_cards(self, request).await)
    }

    async fn quote_price(
        &self,
        request: Request<proto::QuotePriceRequest>,
    ) -> Result<Response<proto::Quote>, Status> {
        reply(Ctx::quote_price(self, request).await)
    }

    async fn set_account_override(
        &self,
        request: Request<proto::SetAccountOverrideRequest>,
    ) -> Result<Response<proto::AccountOverride>, Status> {
        reply(Ctx::set_account_override(self, request).await)
    }

    async fn list_account_overrides(
        &self,
        request: Request<proto::ListAccountOverridesRequest>,
    ) -> Result<Response<proto::ListAccountOverridesResponse>, Status> {
        reply(Ctx::list_account_overrides(self, request).await)
    }

    async fn simulate_rate_card(
        &self,
        request: Request<proto::SimulateRateCardRequest>,
    ) -> Result<Response<proto::SimulateRateCardResponse>, Status> {
        reply(Ctx::simulate_rate_card(self, request).await)
    }
}

fn simulation_row(line: &simulate::SimulatedLine) -> proto::SimulationRow {
    let percent = |actual: Decimal, simulated: Decimal| {
        if actual.is_zero() {
            return if simulated.is_zero() {
                "0".to_string()
            } else {
                String::new()
            };
        }
        (simulated - actual)
            .checked_mul(Decimal::from(100))
            .and_then(|d| d.checked_div(actual))
            .map(|p| format_decimal(p.round_dp(2)))
            .unwrap_or_default()
    };
    let units = |micros: i128| Decimal::try_from_i128_with_scale(micros, 6).unwrap_or_default();
    let margin = |money: &BTreeMap<String, Decimal>, cost: Decimal| match money.len() {
        1 => money
            .values()
            .next()
            .and_then(|m| m.checked_sub(cost))
            .map(format_decimal)
            .unwrap_or_default(),
        _ => String::new(),
    };
    let money = |values: &BTreeMap<String, Decimal>| {
        values
            .iter()
            .map(|(currency, amount)| proto::Money {
                currency: currency.clone(),
                amount: format_decimal(amount.round_dp(12)),
            })
            .collect()
    };
    proto::SimulationRow {
        account_id: line.account_id.clone(),
        request_type: line.request_type.clone(),
        requests: line.requests,
        actual_units: format_micros(line.actual_units),
        simulated_units: format_micros(line.simulated_units),
        change_percent: percent(units(line.actual_units), units(line.simulated_units)),
        actual_money: money(&line.actual_money),
        simulated_money: money(&line.simulated_money),
        actual_provider_cost: format_decimal(line.actual_provider_cost),
        simulated_provider_cost: format_decimal(line.simulated_provider_cost),
        actual_margin: margin(&line.actual_money, line.actual_provider_cost),
        simulated_margin: margin(&line.simulated_money, line.simulated_provider_cost),
        unpriced_requests: line.unpriced,
    }
}
