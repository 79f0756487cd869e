//! RateCardService: drafts, publishing, reading cards, quoting prices.

use tonic::{Request, Response, Status};

use super::{Ctx, convert, key, reply};
use crate::{
    auth::{Caller, Role},
    domain::pricing::validate_rates,
    error::{Error, Reason, Result},
    proto::{self, rate_card_service_server::RateCardService},
    store::{idempotency::Key, pagination, rate_cards},
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
            .map(|(i, r)| convert::parse_rate(i, r))
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
        if request.request_id.is_empty() {
            // Publishing twice fails (RATE_CARD_NOT_DRAFT), so a retry without a key is safe.
            let write = self.store.begin_write().await?;
            let card = publish(&write.tx, version, &etag, effective_time, &clock).await?;
            write.commit().await?;
            return Ok(card);
        }
        let key = key(Key::caller_scope(&caller.sub), &request)?;
        let (card, _) = self
            .store
            .idempotent(&key, |tx| {
                let etag = etag.clone();
                let clock = clock.clone();
                Box::pin(async move { publish(tx, version, &etag, effective_time, &clock).await })
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
        self.resolve_account(&caller, &request.account_id, &request.external_id)
            .await?;
        let unpriced = || {
            Error::precondition(
                Reason::UnpricedRequestType,
                format!("no rate in force for request type `{request_type}`"),
            )
            .with("request_type", &request_type)
        };
        let card = rate_cards::in_force(&self.store.db, self.store.clock.now_micros())
            .await?
            .ok_or_else(unpriced)?;
        let rate = card.rate(&request_type).ok_or_else(unpriced)?;
        let units = rate.price(&quantities)?;
        Ok(proto::Quote {
            units: units.to_string(),
            rate_card_version: card.version,
            request_type,
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
) -> Result<proto::RateCard> {
    let card =
        rate_cards::publish(tx, version, etag, effective_time, || clock.now_micros()).await?;
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
}
