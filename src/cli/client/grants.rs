//! `allot grants create | list | void`.

use anyhow::Result;

use super::{args::GrantsCommand, transport::Ctx};
use crate::proto::{self, grant_service_client::GrantServiceClient};

pub(super) async fn run(ctx: &Ctx, command: GrantsCommand) -> Result<()> {
    let mut client = ctx.client(GrantServiceClient::new).await?;
    match command {
        GrantsCommand::Create(args) => {
            let terms = args.terms;
            let grant = proto::Grant {
                wallet_id: args.wallet,
                kind: terms.kind.into(),
                amount: args.amount,
                priority: terms.priority,
                effective_time: args.effective_time,
                expire_time: args.expire_time,
                unit_price: terms.unit_price.unwrap_or_default(),
                currency: terms.currency.unwrap_or_default(),
                contract_ref: terms.contract_ref.unwrap_or_default(),
                ..Default::default()
            };
            let request = proto::CreateGrantRequest {
                grant: Some(grant),
                request_id: args.request.get(),
            };
            ctx.show(client.create_grant(request)).await
        }
        GrantsCommand::List { wallet, page } => {
            let request = proto::ListGrantsRequest {
                wallet_id: wallet,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_grants(r).await
            })
            .await
        }
        GrantsCommand::Void {
            id,
            reason,
            request,
        } => {
            let request = proto::VoidGrantRequest {
                id,
                reason: reason.unwrap_or_default(),
                request_id: request.get(),
            };
            ctx.show(client.void_grant(request)).await
        }
    }
}
