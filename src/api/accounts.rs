//! AccountService: accounts and their wallets.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::{Ctx, convert, key, outcome::Respond, reply};
use crate::{
    auth::Scope,
    domain::{AccountState, Amount, wallet::DEFAULT_EXPIRY_NOTICE_DAYS},
    error::{Error, Reason, Result},
    proto::{self, account_service_server::AccountService},
    store::{
        accounts::{self, AccountChanges, NewAccount},
        idempotency::Key,
        ledger::{self, Op, WalletChanges, WalletUpdateOp},
        pagination,
    },
};

const MAX_LABELS: usize = 64;

impl Ctx {
    /// The roots of the subtrees a caller's lists read without an id (ListAccounts,
    /// ExportTransactions, ListAuditEvents): `None` for a token for all accounts; else the ids
    /// of its `accounts` claim that name an account exactly. The lists match subtrees with SQL
    /// `LIKE`, which SQLite compares without regard to ASCII case: a claim of `ACCT_…` must
    /// reach nothing there, as everywhere else (`Caller::covers` compares ids exactly).
    pub(super) async fn scope_roots(
        &self,
        caller: &crate::auth::Caller,
    ) -> Result<Option<Vec<String>>> {
        let Scope::Accounts(ids) = &caller.scope else {
            return Ok(None);
        };
        Ok(Some(accounts::existing_ids(&self.store.db, ids).await?))
    }
}

fn labels(map: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    convert::string_map("labels", map, MAX_LABELS, 256)
}

impl Ctx {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<proto::Account> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .account
            .clone()
            .ok_or_else(|| Error::missing("account"))?;
        let external_id = convert::required("account.external_id", &wire.external_id, 128)?;
        let display_name = convert::optional("account.display_name", &wire.display_name, 256)?;
        let labels = labels(&wire.labels)?;
        let state = convert::parse_account_state(wire.state)?.unwrap_or(AccountState::Active);
        let parent = if wire.parent_id.is_empty() {
            if !caller.is_global() {
                return Err(Error::permission_denied(
                    Reason::AccountOutOfScope,
                    "only a token for all accounts may create a top-level account",
                ));
            }
            None
        } else {
            let parent_id = convert::id("account.parent_id", &wire.parent_id, "acct")?;
            Some(self.account_in_scope(&caller, &parent_id).await?)
        };
        let scope = match &parent {
            Some(parent) => Key::account_scope(&parent.id),
            None => Key::caller_scope(&caller.sub),
        };
        let key = key(scope, &request)?;
        let new = NewAccount {
            external_id,
            display_name,
            parent,
            state,
            labels,
        };
        let now = self.store.clock.now_micros();
        let (account, _) = self
            .store
            .idempotent(&key, |tx| {
                let new = new.clone();
                Box::pin(async move {
                    let model = accounts::create_account(tx, new, now).await?;
                    Ok(convert::account(&model))
                })
            })
            .await?;
        Ok(account)
    }

    async fn update_account(
        &self,
        request: Request<proto::UpdateAccountRequest>,
    ) -> Result<proto::Account> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .account
            .clone()
            .ok_or_else(|| Error::missing("account"))?;
        let id = convert::id("account.id", &wire.id, "acct")?;
        self.account_in_scope(&caller, &id).await?;
        let fields = [
            ("display_name", !wire.display_name.is_empty()),
            ("labels", !wire.labels.is_empty()),
            ("state", wire.state != 0),
        ];
        let paths = convert::update_paths(request.update_mask.as_ref(), &fields)?;
        let mut changes = AccountChanges::default();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = Some(convert::optional(
                        "account.display_name",
                        &wire.display_name,
                        256,
                    )?)
                }
                "labels" => changes.labels = Some(labels(&wire.labels)?),
                "state" => {
                    changes.state = Some(
                        convert::parse_account_state(wire.state)?
                            .ok_or_else(|| Error::missing("account.state"))?,
                    )
                }
                other => return Err(convert::not_updatable(other, &fields)),
            }
        }
        let key = key(Key::account_scope(&id), &request)?;
        let now = self.store.clock.now_micros();
        let (account, _) = self
            .store
            .idempotent(&key, |tx| {
                let changes = changes.clone();
                let id = id.clone();
                Box::pin(async move {
                    // Re-read and lock inside the transaction: the update applies to the
                    // latest row, and concurrent updates of it run one after the other.
                    let current = accounts::lock_account(tx, &id, true)
                        .await?
                        .ok_or_else(|| Error::not_found("account", &id))?;
                    let model = accounts::update_account(tx, current, changes, now).await?;
                    Ok(convert::account(&model))
                })
            })
            .await?;
        Ok(account)
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<proto::ListAccountsResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let page = pagination::parse("accounts", request.page_size, &request.page_token)?;
        let parent = if request.parent_id.is_empty() {
            None
        } else {
            Some(convert::id("parent_id", &request.parent_id, "acct")?)
        };
        let within = self.scope_roots(&caller).await?;
        let (rows, next_page_token) =
            accounts::list_accounts(&self.store.db, within.as_deref(), parent.as_deref(), &page)
                .await?;
        Ok(proto::ListAccountsResponse {
            accounts: rows.iter().map(convert::account).collect(),
            next_page_token,
        })
    }

    async fn create_wallet(
        &self,
        request: Request<proto::CreateWalletRequest>,
    ) -> Result<proto::Wallet> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .wallet
            .clone()
            .ok_or_else(|| Error::missing("wallet"))?;
        let account_id = convert::id("wallet.account_id", &wire.account_id, "acct")?;
        let unit = convert::unit(&wire.unit)?;
        let overdraft_limit =
            convert::non_negative("wallet.overdraft_limit", &wire.overdraft_limit)?;
        let notice_days = match wire.grant_expiry_notice_days {
            Some(days) => convert::expiry_notice_days(days)?,
            None => DEFAULT_EXPIRY_NOTICE_DAYS,
        };
        let account = self.account_in_scope(&caller, &account_id).await?;
        let key = key(Key::account_scope(&account.id), &request)?;
        let now = self.store.clock.now_micros();
        let (wallet, _) = self
            .store
            .idempotent(&key, |tx| {
                let account = account.clone();
                let unit = unit.clone();
                Box::pin(async move {
                    let model = accounts::create_wallet(
                        tx,
                        &account,
                        &unit,
                        overdraft_limit,
                        notice_days,
                        now,
                    )
                    .await?;
                    let balance = ledger::balance(tx, &model, now).await?;
                    Ok(convert::wallet(&model, convert::balance(&model, &balance)))
                })
            })
            .await?;
        Ok(wallet)
    }

    async fn update_wallet(
        &self,
        request: Request<proto::UpdateWalletRequest>,
    ) -> Result<proto::Wallet> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let wire = request
            .wallet
            .clone()
            .ok_or_else(|| Error::missing("wallet"))?;
        let fields = [
            ("overdraft_limit", !wire.overdraft_limit.is_empty()),
            ("daily_spend_cap", !wire.daily_spend_cap.is_empty()),
            ("monthly_spend_cap", !wire.monthly_spend_cap.is_empty()),
            (
                "low_balance_thresholds",
                !wire.low_balance_thresholds.is_empty(),
            ),
            (
                "grant_expiry_notice_days",
                wire.grant_expiry_notice_days.is_some(),
            ),
        ];
        let paths = convert::update_paths(request.update_mask.as_ref(), &fields)?;
        // An empty cap in a masked update removes the cap.
        let cap = |field: &str, value: &str| -> Result<Option<Amount>> {
            if value.is_empty() {
                Ok(None)
            } else {
                convert::positive(field, value).map(Some)
            }
        };
        let mut changes = WalletChanges::default();
        for path in &paths {
            match path.as_str() {
                "overdraft_limit" => {
                    changes.overdraft_limit = Some(convert::non_negative(
                        "wallet.overdraft_limit",
                        &wire.overdraft_limit,
                    )?)
                }
                "daily_spend_cap" => {
                    changes.daily_spend_cap =
                        Some(cap("wallet.daily_spend_cap", &wire.daily_spend_cap)?)
                }
                "monthly_spend_cap" => {
                    changes.monthly_spend_cap =
                        Some(cap("wallet.monthly_spend_cap", &wire.monthly_spend_cap)?)
                }
                "low_balance_thresholds" => {
                    if wire.low_balance_thresholds.len() > 16 {
                        return Err(Error::invalid(
                            Reason::TooManyEntries,
                            "wallet.low_balance_thresholds",
                            "at most 16 thresholds",
                        ));
                    }
                    let thresholds = wire
                        .low_balance_thresholds
                        .iter()
                        .map(|t| {
                            Amount::parse(t)
                                .map_err(|err| Error::amount("wallet.low_balance_thresholds", err))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    changes.low_balance_thresholds = Some(thresholds);
                }
                "grant_expiry_notice_days" => {
                    changes.grant_expiry_notice_days = Some(convert::expiry_notice_days(
                        wire.grant_expiry_notice_days.unwrap_or(0),
                    )?);
                }
                other => return Err(convert::not_updatable(other, &fields)),
            }
        }
        let wallet = self.wallet_in_scope(&caller, &wire.id).await?;
        let key = key(Key::account_scope(&wallet.account_id), &request)?;
        let op = Op::UpdateWallet(WalletUpdateOp {
            key,
            wallet_id: wallet.id,
            changes,
        });
        proto::Wallet::respond(self.ledger.submit(op).await?)
    }

    async fn wallet_with_balance(
        &self,
        model: &crate::store::entity::wallet::Model,
    ) -> Result<proto::Wallet> {
        let (model, balance) =
            ledger::wallet_balance(&self.store, &model.id, self.store.clock.now_micros()).await?;
        Ok(convert::wallet(&model, convert::balance(&model, &balance)))
    }
}

#[tonic::async_trait]
impl AccountService for Ctx {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        reply(Ctx::create_account(self, request).await)
    }

    async fn get_account(
        &self,
        request: Request<proto::GetAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        reply(
            async {
                let caller = super::access::caller(&request)?;
                let id = convert::id("id", &request.get_ref().id, "acct")?;
                let account = self.account_in_scope(&caller, &id).await?;
                Ok(convert::account(&account))
            }
            .await,
        )
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        reply(Ctx::list_accounts(self, request).await)
    }

    async fn update_account(
        &self,
        request: Request<proto::UpdateAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        reply(Ctx::update_account(self, request).await)
    }

    async fn create_wallet(
        &self,
        request: Request<proto::CreateWalletRequest>,
    ) -> Result<Response<proto::Wallet>, Status> {
        reply(Ctx::create_wallet(self, request).await)
    }

    async fn get_wallet(
        &self,
        request: Request<proto::GetWalletRequest>,
    ) -> Result<Response<proto::Wallet>, Status> {
        reply(
            async {
                let caller = super::access::caller(&request)?;
                let wallet = self.wallet_in_scope(&caller, &request.get_ref().id).await?;
                self.wallet_with_balance(&wallet).await
            }
            .await,
        )
    }

    async fn update_wallet(
        &self,
        request: Request<proto::UpdateWalletRequest>,
    ) -> Result<Response<proto::Wallet>, Status> {
        reply(Ctx::update_wallet(self, request).await)
    }

    async fn list_wallets(
        &self,
        request: Request<proto::ListWalletsRequest>,
    ) -> Result<Response<proto::ListWalletsResponse>, Status> {
        reply(
            async {
                let caller = super::access::caller(&request)?;
                let request = request.into_inner();
                let account_id = convert::id("account_id", &request.account_id, "acct")?;
                let account = self.account_in_scope(&caller, &account_id).await?;
                let page = pagination::parse("wallets", request.page_size, &request.page_token)?;
                let (rows, next_page_token) =
                    accounts::list_wallets(&self.store.db, &account.id, &page).await?;
                let mut wallets = Vec::with_capacity(rows.len());
                for model in &rows {
                    wallets.push(self.wallet_with_balance(model).await?);
                }
                Ok(proto::ListWalletsResponse {
                    wallets,
                    next_page_token,
                })
            }
            .await,
        )
    }
}
