//! `WebhookService`: endpoints, their secrets, deliveries and replays. An endpoint of an
//! account is managed by callers whose scope covers the account; an endpoint of every
//! account (`account_id` empty) by admins only. Secrets are answered by create and rotate,
//! never by reads.

use sea_orm::Iterable;
use tonic::{Request, Response, Status};

use super::{Ctx, convert, key, reply};
use crate::{
    auth::Caller,
    error::{Error, Reason, Result},
    proto::{self, webhook_service_server::WebhookService},
    store::{
        entity::{event::EventType, webhook_attempt, webhook_delivery, webhook_endpoint},
        idempotency::Key,
        new_id, pagination,
        webhooks::{self, Filter, Replay},
    },
    webhooks::target,
};

/// The longest endpoint URL.
const MAX_URL: usize = 2048;

impl Ctx {
    /// The endpoint `id`, if the caller may manage it (see the module docs).
    async fn endpoint_in_scope(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<webhook_endpoint::Model> {
        let id = convert::id("endpoint_id", id, "whe")?;
        let found = webhooks::find(&self.store.db, &id).await?;
        match found {
            Some(endpoint) if endpoint.account_id.is_empty() => {
                require_admin(caller)?;
                Ok(endpoint)
            }
            found => {
                self.owned_in_scope(caller, found, |e| &e.account_id, "webhook endpoint", &id)
                    .await
            }
        }
    }

    /// The idempotency scope of requests on `endpoint`.
    fn endpoint_scope(caller: &Caller, account_id: &str) -> String {
        if account_id.is_empty() {
            Key::caller_scope(&caller.sub)
        } else {
            Key::account_scope(account_id)
        }
    }

    fn check_url(&self, url: &str) -> Result<String> {
        let url = convert::required("endpoint.url", url, MAX_URL)?;
        target::check_url(&url, self.webhooks.allow_private).map_err(webhooks::bad_url)?;
        Ok(url)
    }

    async fn create_webhook_endpoint(
        &self,
        request: Request<proto::CreateWebhookEndpointRequest>,
    ) -> Result<proto::WebhookEndpoint> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .endpoint
            .clone()
            .ok_or_else(|| Error::missing("endpoint"))?;
        let account_id = if wire.account_id.is_empty() {
            require_admin(&caller)?;
            String::new()
        } else {
            self.resolve_account(&caller, &wire.account_id, "")
                .await?
                .id
        };
        let url = self.check_url(&wire.url)?;
        let event_types = event_types(&wire.event_types)?;
        let key = key(Self::endpoint_scope(&caller, &account_id), &request)?;
        let clock = self.store.clock.clone();
        let disabled = wire.disabled;
        let (endpoint, _) = self
            .store
            .idempotent(&key, |tx| {
                let now = clock.now_micros();
                let endpoint = webhook_endpoint::Model {
                    id: new_id("whe"),
                    account_id: account_id.clone(),
                    url: url.clone(),
                    event_types: webhooks::join_types(&event_types),
                    enabled: !disabled,
                    secret: webhooks::new_secret(),
                    previous_secret: None,
                    previous_secret_expire_time: None,
                    create_time: now,
                    update_time: now,
                };
                Box::pin(async move {
                    webhooks::create(tx, endpoint.clone()).await?;
                    Ok(with_secret(&endpoint))
                })
            })
            .await?;
        Ok(endpoint)
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<proto::ListWebhookEndpointsRequest>,
    ) -> Result<proto::ListWebhookEndpointsResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let page = pagination::parse("webhook_endpoints", request.page_size, &request.page_token)?;
        let accounts = if !request.account_id.is_empty() {
            Some(vec![
                self.resolve_account(&caller, &request.account_id, "")
                    .await?
                    .id,
            ])
        } else if require_admin(&caller).is_ok() {
            None
        } else {
            return Err(Error::invalid(
                Reason::MissingField,
                "account_id",
                "give the account whose endpoints to list (only admins list every endpoint)",
            ));
        };
        let (rows, next_page_token) = webhooks::list(&self.store.db, accounts, &page).await?;
        Ok(proto::ListWebhookEndpointsResponse {
            endpoints: rows.iter().map(endpoint).collect(),
            next_page_token,
        })
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<proto::UpdateWebhookEndpointRequest>,
    ) -> Result<proto::WebhookEndpoint> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .endpoint
            .clone()
            .ok_or_else(|| Error::missing("endpoint"))?;
        let current = self.endpoint_in_scope(&caller, &wire.id).await?;
        let fields = [
            ("url", !wire.url.is_empty()),
            ("event_types", !wire.event_types.is_empty()),
            ("disabled", false),
        ];
        let paths = convert::update_paths(request.update_mask.as_ref(), &fields)?;
        let (mut url, mut types, mut enabled) = (None, None, None);
        for path in &paths {
            match path.as_str() {
                "url" => url = Some(self.check_url(&wire.url)?),
                "event_types" => types = Some(event_types(&wire.event_types)?),
                "disabled" => enabled = Some(!wire.disabled),
                other => return Err(convert::not_updatable(other, &fields)),
            }
        }
        self.change_endpoint(&caller, &request, &current, endpoint, move |model, _| {
            if let Some(url) = &url {
                model.url = url.clone();
            }
            if let Some(types) = &types {
                model.event_types = webhooks::join_types(types);
            }
            if let Some(enabled) = enabled {
                model.enabled = enabled;
            }
        })
        .await
    }

    /// Applies `change` to the stored endpoint (read again in the transaction, under the
    /// request's idempotency key) and saves it; answers `answer` of it.
    async fn change_endpoint<M: super::Mutation>(
        &self,
        caller: &Caller,
        request: &M,
        current: &webhook_endpoint::Model,
        answer: fn(&webhook_endpoint::Model) -> proto::WebhookEndpoint,
        change: impl Fn(&mut webhook_endpoint::Model, i64) + Clone + Send + Sync + 'static,
    ) -> Result<proto::WebhookEndpoint> {
        let key = key(Self::endpoint_scope(caller, &current.account_id), request)?;
        let clock = self.store.clock.clone();
        let (changed, _) = self
            .store
            .idempotent(&key, |tx| {
                let (id, clock, change) = (current.id.clone(), clock.clone(), change.clone());
                Box::pin(async move {
                    let mut model = webhooks::find(tx, &id)
                        .await?
                        .ok_or_else(|| webhooks::not_found(&id))?;
                    let now = clock.now_micros();
                    change(&mut model, now);
                    model.update_time = now;
                    webhooks::save(tx, model.clone()).await?;
                    Ok(answer(&model))
                })
            })
            .await?;
        Ok(changed)
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<proto::DeleteWebhookEndpointRequest>,
    ) -> Result<proto::DeleteWebhookEndpointResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let current = self
            .endpoint_in_scope(&caller, &request.endpoint_id)
            .await?;
        let key = key(Self::endpoint_scope(&caller, &current.account_id), &request)?;
        let (answer, _) = self
            .store
            .idempotent(&key, |tx| {
                let id = current.id.clone();
                Box::pin(async move {
                    webhooks::delete(tx, &id).await?;
                    Ok(proto::DeleteWebhookEndpointResponse {})
                })
            })
            .await?;
        Ok(answer)
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<proto::RotateWebhookSecretRequest>,
    ) -> Result<proto::WebhookEndpoint> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let current = self
            .endpoint_in_scope(&caller, &request.endpoint_id)
            .await?;
        let overlap = i64::try_from(self.webhooks.rotation_overlap.as_micros()).unwrap_or(i64::MAX);
        self.change_endpoint(
            &caller,
            &request,
            &current,
            with_secret,
            move |model, now| {
                model.previous_secret =
                    Some(std::mem::replace(&mut model.secret, webhooks::new_secret()));
                model.previous_secret_expire_time = Some(now.saturating_add(overlap));
            },
        )
        .await
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Result<proto::ListWebhookDeliveriesResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let endpoint = self
            .endpoint_in_scope(&caller, &request.endpoint_id)
            .await?;
        let filter = match proto::WebhookDeliveryState::try_from(request.state) {
            Ok(proto::WebhookDeliveryState::Unspecified) => Filter::All,
            Ok(proto::WebhookDeliveryState::Pending) => {
                Filter::Only(webhook_delivery::State::Pending)
            }
            Ok(proto::WebhookDeliveryState::Delivered) => {
                Filter::Only(webhook_delivery::State::Delivered)
            }
            Ok(proto::WebhookDeliveryState::Dead) => Filter::Only(webhook_delivery::State::Dead),
            Err(_) => {
                return Err(Error::invalid(
                    Reason::InvalidEnum,
                    "state",
                    format!("{} is not a WebhookDeliveryState", request.state),
                ));
            }
        };
        let page = pagination::parse("webhook_deliveries", request.page_size, &request.page_token)?;
        // One snapshot: each delivery with the attempts it had then.
        let snapshot = self.store.read_snapshot().await?;
        let listed = webhooks::deliveries(&snapshot, &endpoint.id, filter, &page).await;
        snapshot.rollback().await?;
        let (rows, next_page_token) = listed?;
        Ok(proto::ListWebhookDeliveriesResponse {
            deliveries: rows
                .iter()
                .map(|(delivery, attempts)| self::delivery(delivery, attempts))
                .collect(),
            next_page_token,
        })
    }

    async fn replay_webhook_deliveries(
        &self,
        request: Request<proto::ReplayWebhookDeliveriesRequest>,
    ) -> Result<proto::ReplayWebhookDeliveriesResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let endpoint = self
            .endpoint_in_scope(&caller, &request.endpoint_id)
            .await?;
        let from = convert::micros("start_time", request.start_time.as_ref())?;
        let to = convert::micros("end_time", request.end_time.as_ref())?;
        let which = match (request.delivery_id.is_empty(), from, to) {
            (false, None, None) => {
                Replay::One(convert::id("delivery_id", &request.delivery_id, "whd")?)
            }
            (true, Some(from), Some(to)) if from < to => Replay::Range { from, to },
            (true, Some(_), Some(_)) => {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "end_time",
                    "must lie after start_time",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    Reason::MissingField,
                    "delivery_id",
                    "give delivery_id, or start_time and end_time",
                ));
            }
        };
        let key = key(
            Self::endpoint_scope(&caller, &endpoint.account_id),
            &request,
        )?;
        let clock = self.store.clock.clone();
        let (answer, _) = self
            .store
            .idempotent(&key, |tx| {
                let (id, which, clock) = (endpoint.id.clone(), which.clone(), clock.clone());
                Box::pin(async move {
                    let replayed = webhooks::replay(tx, &id, &which, clock.now_micros()).await?;
                    Ok(proto::ReplayWebhookDeliveriesResponse {
                        replayed: replayed as i64,
                    })
                })
            })
            .await?;
        Ok(answer)
    }
}

/// Endpoints of every account are for admins whose token covers every account.
fn require_admin(caller: &Caller) -> Result<()> {
    if !caller.has_any_role(&[]) {
        return Err(Error::permission_denied(
            Reason::RoleNotAllowed,
            "endpoints of every account (no account_id) are managed by admins",
        ));
    }
    if !caller.is_global() {
        return Err(Error::permission_denied(
            Reason::GlobalScopeRequired,
            "endpoints of every account (no account_id) need a token for every account",
        ));
    }
    Ok(())
}

/// The event types an endpoint asks for: known names, no repeats.
fn event_types(types: &[String]) -> Result<Vec<String>> {
    let known: Vec<String> = EventType::iter()
        .map(|t| sea_orm::ActiveEnum::to_value(&t))
        .collect();
    let mut chosen = Vec::new();
    for (i, name) in types.iter().enumerate() {
        if !known.contains(name) {
            return Err(Error::invalid(
                Reason::InvalidField,
                &format!("endpoint.event_types[{i}]"),
                format!(
                    "`{}` is not an event type ({})",
                    name.chars().take(64).collect::<String>(),
                    known.join(", ")
                ),
            ));
        }
        if !chosen.contains(name) {
            chosen.push(name.clone());
        }
    }
    Ok(chosen)
}

/// An endpoint as reads answer it (no secret).
fn endpoint(model: &webhook_endpoint::Model) -> proto::WebhookEndpoint {
    proto::WebhookEndpoint {
        id: model.id.clone(),
        url: model.url.clone(),
        account_id: model.account_id.clone(),
        event_types: webhooks::split_types(&model.event_types),
        secret: String::new(),
        disabled: !model.enabled,
        create_time: Some(convert::timestamp(model.create_time)),
        update_time: Some(convert::timestamp(model.update_time)),
        previous_secret_expire_time: model.previous_secret_expire_time.map(convert::timestamp),
    }
}

/// An endpoint with its (new) secret: the answer of create and rotate.
fn with_secret(model: &webhook_endpoint::Model) -> proto::WebhookEndpoint {
    proto::WebhookEndpoint {
        secret: model.secret.clone(),
        ..endpoint(model)
    }
}

fn delivery(
    model: &webhook_delivery::Model,
    attempts: &[webhook_attempt::Model],
) -> proto::WebhookDelivery {
    let state = match model.state {
        webhook_delivery::State::Pending => proto::WebhookDeliveryState::Pending,
        webhook_delivery::State::Delivered => proto::WebhookDeliveryState::Delivered,
        webhook_delivery::State::Dead => proto::WebhookDeliveryState::Dead,
    };
    proto::WebhookDelivery {
        id: model.id.clone(),
        endpoint_id: model.endpoint_id.clone(),
        event_id: model.event_id.clone(),
        event_type: model.event_type.clone(),
        wallet_id: model.wallet_id.clone(),
        sequence: model.sequence,
        state: state as i32,
        attempt_count: model.attempts,
        attempts: attempts
            .iter()
            .map(|a| proto::WebhookAttempt {
                attempt: a.attempt,
                time: Some(convert::timestamp(a.time)),
                duration_ms: a.duration_micros / 1000,
                status_code: a.status_code,
                error: a.error.clone(),
                response: a.response.clone(),
            })
            .collect(),
        create_time: Some(convert::timestamp(model.create_time)),
        next_attempt_time: (model.state == webhook_delivery::State::Pending)
            .then(|| convert::timestamp(model.next_attempt_time)),
        done_time: model.done_time.map(convert::timestamp),
    }
}

#[tonic::async_trait]
impl WebhookService for Ctx {
    async fn create_webhook_endpoint(
        &self,
        request: Request<proto::CreateWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        reply(Ctx::create_webhook_endpoint(self, request).await)
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<proto::GetWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        reply(
            async {
                let caller = super::access::caller(&request)?;
                let model = self
                    .endpoint_in_scope(&caller, &request.get_ref().endpoint_id)
                    .await?;
                Ok(endpoint(&model))
            }
            .await,
        )
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<proto::ListWebhookEndpointsRequest>,
    ) -> Result<Response<proto::ListWebhookEndpointsResponse>, Status> {
        reply(Ctx::list_webhook_endpoints(self, request).await)
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<proto::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        reply(Ctx::update_webhook_endpoint(self, request).await)
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<proto::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<proto::DeleteWebhookEndpointResponse>, Status> {
        reply(Ctx::delete_webhook_endpoint(self, request).await)
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<proto::RotateWebhookSecretRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        reply(Ctx::rotate_webhook_secret(self, request).await)
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<proto::ListWebhookDeliveriesResponse>, Status> {
        reply(Ctx::list_webhook_deliveries(self, request).await)
    }

    async fn replay_webhook_deliveries(
        &self,
        request: Request<proto::ReplayWebhookDeliveriesRequest>,
    ) -> Result<Response<proto::ReplayWebhookDeliveriesResponse>, Status> {
        reply(Ctx::replay_webhook_deliveries(self, request).await)
    }
}
