//! `allot wallets create | get | list | update`.

use anyhow::Result;

use super::{
    args::{UpdateWalletArgs, WalletsCommand, update_mask},
    transport::Ctx,
};
use crate::proto::{self, account_service_client::AccountServiceClient};

pub(super) async fn run(ctx: &Ctx, command: WalletsCommand) -> Result<()> {
    let mut client = ctx.client(AccountServiceClient::new).await?;
    match command {
        WalletsCommand::Create {
            account,
            unit,
            overdraft_limit,
            grant_expiry_notice_days,
            request,
        } => {
            let wallet = proto::Wallet {
                account_id: account,
                unit,
                overdraft_limit: overdraft_limit.unwrap_or_default(),
                grant_expiry_notice_days,
                ..Default::default()
            };
            let request = proto::CreateWalletRequest {
                wallet: Some(wallet),
                request_id: request.get(),
            };
            ctx.show(client.create_wallet(request)).await
        }
        WalletsCommand::Get { id } => {
            ctx.show(client.get_wallet(proto::GetWalletRequest { id }))
                .await
        }
        WalletsCommand::List { account, page } => {
            let request = proto::ListWalletsRequest {
                account_id: account,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_wallets(r).await
            })
            .await
        }
        WalletsCommand::Update(args) => ctx.show(client.update_wallet(args.request())).await,
    }
}

impl UpdateWalletArgs {
    /// The wallet with the changes given, and a mask naming just those.
    pub(super) fn request(self) -> proto::UpdateWalletRequest {
        let changes = self.changes;
        let update_mask = update_mask(&[
            ("overdraft_limit", changes.overdraft_limit.is_some()),
            ("daily_spend_cap", changes.daily_cap.is_some()),
            ("monthly_spend_cap", changes.monthly_cap.is_some()),
            (
                "low_balance_thresholds",
                !changes.thresholds.is_empty() || changes.clear_thresholds,
            ),
            (
                "grant_expiry_notice_days",
                changes.grant_expiry_notice_days.is_some(),
            ),
        ]);
        let wallet = proto::Wallet {
            id: self.id,
            overdraft_limit: changes.overdraft_limit.unwrap_or_default(),
            daily_spend_cap: changes.daily_cap.unwrap_or_default(),
            monthly_spend_cap: changes.monthly_cap.unwrap_or_default(),
            low_balance_thresholds: changes.thresholds,
            grant_expiry_notice_days: changes.grant_expiry_notice_days,
            ..Default::default()
        };
        proto::UpdateWalletRequest {
            wallet: Some(wallet),
            update_mask,
            request_id: self.request.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::args::{ClientCommand, Group, tests::parse};

    fn wallet_update(args: &[&str]) -> Result<proto::UpdateWalletRequest, clap::Error> {
        let args = [
            &["wallets", "update", "wal_1", "--request-id", "r"][..],
            args,
        ]
        .concat();
        match parse(&args)? {
            ClientCommand::Wallets(Group {
                command: WalletsCommand::Update(update),
                ..
            }) => Ok(update.request()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wallet_updates_mask_the_flags_given_and_none_clears_a_cap() {
        let request = wallet_update(&["--daily-cap", "none", "--monthly-cap", "500"]).unwrap();
        let wallet = request.wallet.unwrap();
        assert_eq!(
            (
                wallet.daily_spend_cap.as_str(),
                wallet.monthly_spend_cap.as_str()
            ),
            ("", "500")
        );
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["daily_spend_cap", "monthly_spend_cap"]
        );
        let request = wallet_update(&[
            "--threshold",
            "10",
            "--threshold",
            "-5",
            "--overdraft-limit",
            "3",
        ])
        .unwrap();
        assert_eq!(request.wallet.unwrap().low_balance_thresholds, ["10", "-5"]);
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["overdraft_limit", "low_balance_thresholds"]
        );
        let request = wallet_update(&["--grant-expiry-notice-days", "0"]).unwrap();
        assert_eq!(request.wallet.unwrap().grant_expiry_notice_days, Some(0));
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["grant_expiry_notice_days"]
        );
        let request = wallet_update(&["--clear-thresholds"]).unwrap();
        assert!(request.wallet.unwrap().low_balance_thresholds.is_empty());
        assert_eq!(
            request.update_mask.unwrap().paths,
            ["low_balance_thresholds"]
        );
        assert!(wallet_update(&[]).is_err());
        assert!(wallet_update(&["--daily-cap", ""]).is_err());
        assert!(wallet_update(&["--threshold", "1", "--clear-thresholds"]).is_err());
    }
}
