//! `allot accounts create | get | list | update`.

use anyhow::Result;

use super::{
    args::{AccountsCommand, update_mask},
    transport::Ctx,
};
use crate::proto::{self, account_service_client::AccountServiceClient};

pub(super) async fn run(ctx: &Ctx, command: AccountsCommand) -> Result<()> {
    let mut client = ctx.client(AccountServiceClient::new).await?;
    match command {
        AccountsCommand::Create(args) => {
            let account = proto::Account {
                external_id: args.external_id,
                display_name: args.name.unwrap_or_default(),
                parent_id: args.parent.unwrap_or_default(),
                state: args.state.map_or(0, i32::from),
                labels: args.labels.into_iter().collect(),
                ..Default::default()
            };
            let request = proto::CreateAccountRequest {
                account: Some(account),
                request_id: args.request.get(),
            };
            ctx.show(client.create_account(request)).await
        }
        AccountsCommand::Get { id } => {
            ctx.show(client.get_account(proto::GetAccountRequest { id }))
                .await
        }
        AccountsCommand::List { parent, page } => {
            let request = proto::ListAccountsRequest {
                parent_id: parent.unwrap_or_default(),
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_accounts(r).await
            })
            .await
        }
        AccountsCommand::Update(args) => {
            let changes = args.changes;
            let update_mask = update_mask(&[
                ("display_name", changes.name.is_some()),
                ("labels", !changes.labels.is_empty() || changes.clear_labels),
                ("state", changes.state.is_some()),
            ]);
            let account = proto::Account {
                id: args.id,
                display_name: changes.name.unwrap_or_default(),
                labels: changes.labels.into_iter().collect(),
                state: changes.state.map_or(0, i32::from),
                ..Default::default()
            };
            let request = proto::UpdateAccountRequest {
                account: Some(account),
                update_mask,
                request_id: args.request.get(),
            };
            ctx.show(client.update_account(request)).await
        }
    }
}
