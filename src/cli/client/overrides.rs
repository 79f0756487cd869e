//! `allot overrides set | list`: contract prices per account; `allot audit`: the trail of
//! such changes (and of publishes, voids and adjustments).

use anyhow::Result;

use super::{
    args::{AuditArgs, OverridesCommand},
    transport::Ctx,
};
use crate::proto::{
    self, rate_card_service_client::RateCardServiceClient,
    report_service_client::ReportServiceClient,
};

pub(super) async fn run(ctx: &Ctx, command: OverridesCommand) -> Result<()> {
    let mut client = ctx.client(RateCardServiceClient::new).await?;
    match command {
        OverridesCommand::Set(args) => {
            let rate = (!args.clear).then(|| proto::Rate {
                flat_units: args.flat.unwrap_or_default(),
                dimensions: args.dimensions,
                max_units: args.max.unwrap_or_default(),
                ..Default::default()
            });
            let request = proto::SetAccountOverrideRequest {
                account_override: Some(proto::AccountOverride {
                    account_id: args.account,
                    request_type: args.request_type,
                    rate,
                    effective_time: args.effective_time,
                    expire_time: args.expire_time,
                    note: args.note.unwrap_or_default(),
                    ..Default::default()
                }),
                request_id: args.request.get(),
            };
            ctx.show(client.set_account_override(request)).await
        }
        OverridesCommand::List {
            account,
            sub_accounts,
            page,
        } => {
            let request = proto::ListAccountOverridesRequest {
                account_id: account,
                include_sub_accounts: sub_accounts,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_account_overrides(r).await
            })
            .await
        }
    }
}

pub(super) async fn audit(ctx: &Ctx, args: AuditArgs) -> Result<()> {
    let client = ctx.client(ReportServiceClient::new).await?;
    let request = proto::ListAuditEventsRequest {
        account_id: args.account.unwrap_or_default(),
        include_sub_accounts: args.sub_accounts,
        actions: args
            .actions
            .iter()
            .map(|a| a.to_ascii_uppercase())
            .collect(),
        actor: args.actor.unwrap_or_default(),
        resource: args.resource.unwrap_or_default(),
        start_time: args.from,
        end_time: args.to,
        ..Default::default()
    };
    ctx.pages(args.page, &client, request, |mut c, r| async move {
        c.list_audit_events(r).await
    })
    .await
}
