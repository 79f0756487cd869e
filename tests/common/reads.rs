//! Reading state back through the API (as the admin, or as a given token): balances and
//! every page of a list.

use allot::proto::{
    self, ledger_service_client::LedgerServiceClient, report_service_client::ReportServiceClient,
};
use tonic::transport::Channel;

use super::{TestApp, bearer};

impl TestApp {
    pub async fn balance(&self, account_id: &str) -> proto::Balance {
        self.ledger(&self.admin)
            .get_balance(proto::GetBalanceRequest {
                account_id: account_id.into(),
                ..Default::default()
            })
            .await
            .expect("balance")
            .into_inner()
    }

    pub async fn all_transactions(&self, account_id: &str) -> Vec<proto::Transaction> {
        all_transactions(&self.channel, &self.admin, account_id).await
    }

    /// The account's ledger, oldest first.
    pub async fn history(&self, account_id: &str) -> Vec<proto::Transaction> {
        let mut txns = self.all_transactions(account_id).await;
        txns.reverse();
        txns
    }

    /// Every account `token` may see, following every page.
    pub async fn all_accounts(&self, token: &str) -> Vec<proto::Account> {
        let mut client = self.accounts(token);
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_accounts(proto::ListAccountsRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .expect("list accounts")
                .into_inner();
            all.extend(page.accounts);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// Every grant of the wallet, following every page.
    pub async fn all_grants(&self, wallet_id: &str) -> Vec<proto::Grant> {
        let mut client = self.grants(&self.admin);
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_grants(proto::ListGrantsRequest {
                    wallet_id: wallet_id.into(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                })
                .await
                .expect("list grants")
                .into_inner();
            all.extend(page.grants);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }
}

/// An account's entries through ListTransactions as `token` reads them, every page, newest
/// first.
pub async fn all_transactions(
    channel: &Channel,
    token: &str,
    account_id: &str,
) -> Vec<proto::Transaction> {
    let mut client = LedgerServiceClient::with_interceptor(channel.clone(), bearer(token));
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_transactions(proto::ListTransactionsRequest {
                account_id: account_id.into(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list transactions")
            .into_inner();
        all.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The whole ledger, oldest first (ExportTransactions as `token`).
pub async fn export_all(channel: &Channel, token: &str) -> Vec<proto::Transaction> {
    let mut reports = ReportServiceClient::with_interceptor(channel.clone(), bearer(token));
    let mut stream = reports
        .export_transactions(proto::ExportTransactionsRequest::default())
        .await
        .expect("export the ledger")
        .into_inner();
    let mut all = Vec::new();
    while let Some(chunk) = stream.message().await.expect("export chunk") {
        all.extend(chunk.transactions);
    }
    all
}
