//! `allot webhooks create | get | list | update | delete | rotate | deliveries | replay`.

use anyhow::Result;

use super::{args::WebhooksCommand, transport::Ctx};
use crate::proto::{self, webhook_service_client::WebhookServiceClient};

pub(super) async fn run(ctx: &Ctx, command: WebhooksCommand) -> Result<()> {
    let mut client = ctx.client(WebhookServiceClient::new).await?;
    match command {
        WebhooksCommand::Create {
            url,
            account,
            event_types,
            request,
        } => {
            let request = proto::CreateWebhookEndpointRequest {
                endpoint: Some(proto::WebhookEndpoint {
                    url,
                    account_id: account.unwrap_or_default(),
                    event_types,
                    ..Default::default()
                }),
                request_id: request.get(),
            };
            ctx.show(client.create_webhook_endpoint(request)).await
        }
        WebhooksCommand::Get { id } => {
            let request = proto::GetWebhookEndpointRequest { endpoint_id: id };
            ctx.show(client.get_webhook_endpoint(request)).await
        }
        WebhooksCommand::List { account, page } => {
            let request = proto::ListWebhookEndpointsRequest {
                account_id: account.unwrap_or_default(),
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_webhook_endpoints(r).await
            })
            .await
        }
        WebhooksCommand::Update {
            id,
            url,
            event_types,
            all_event_types,
            disable,
            enable,
            request,
        } => {
            let mut paths = Vec::new();
            if url.is_some() {
                paths.push("url".to_string());
            }
            if all_event_types || !event_types.is_empty() {
                paths.push("event_types".to_string());
            }
            if disable || enable {
                paths.push("disabled".to_string());
            }
            if paths.is_empty() {
                anyhow::bail!(
                    "nothing to change: give --url, --event-type, --all-event-types, --disable or --enable"
                );
            }
            let request = proto::UpdateWebhookEndpointRequest {
                endpoint: Some(proto::WebhookEndpoint {
                    id,
                    url: url.unwrap_or_default(),
                    event_types,
                    disabled: disable,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
                request_id: request.get(),
            };
            ctx.show(client.update_webhook_endpoint(request)).await
        }
        WebhooksCommand::Delete { id, request } => {
            let request = proto::DeleteWebhookEndpointRequest {
                endpoint_id: id,
                request_id: request.get(),
            };
            ctx.show(client.delete_webhook_endpoint(request)).await
        }
        WebhooksCommand::Rotate { id, request } => {
            let request = proto::RotateWebhookSecretRequest {
                endpoint_id: id,
                request_id: request.get(),
            };
            ctx.show(client.rotate_webhook_secret(request)).await
        }
        WebhooksCommand::Deliveries { id, state, page } => {
            let state = match state.as_deref() {
                Some("pending") => proto::WebhookDeliveryState::Pending,
                Some("delivered") => proto::WebhookDeliveryState::Delivered,
                Some("dead") => proto::WebhookDeliveryState::Dead,
                _ => proto::WebhookDeliveryState::Unspecified,
            };
            let request = proto::ListWebhookDeliveriesRequest {
                endpoint_id: id,
                state: state as i32,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_webhook_deliveries(r).await
            })
            .await
        }
        WebhooksCommand::Replay {
            id,
            delivery,
            from,
            to,
            request,
        } => {
            let request = proto::ReplayWebhookDeliveriesRequest {
                endpoint_id: id,
                delivery_id: delivery.unwrap_or_default(),
                start_time: from,
                end_time: to,
                request_id: request.get(),
            };
            ctx.show(client.replay_webhook_deliveries(request)).await
        }
    }
}
