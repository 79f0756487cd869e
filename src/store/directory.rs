//! In-memory directory of identity facts that never change once committed: an account's id,
//! its `external_id` and ancestry (accounts never move), and which wallet holds an account's
//! unit (wallets never move either). Because none of these can change, a cached answer is
//! correct on every replica forever — no invalidation is needed. Only positive answers read
//! from committed data are cached; a miss goes to the database. Mutable facts (an account's
//! state, balances) are never served from here: the ledger reads them under its locks.
//!
//! The request path uses it to resolve and scope-check `Debit`/`Reserve` without a database
//! read; a ledger batch uses it to map (account, unit) to wallet ids.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::entity::account;

/// Entries kept per map; least recently used beyond that are dropped (and re-read on need).
const CAPACITY: usize = 200_000;

/// The immutable part of an account.
#[derive(Debug)]
pub struct AccountIdentity {
    pub id: String,
    /// Ids from the root down to the account itself.
    pub ancestry: Vec<String>,
}

impl AccountIdentity {
    pub fn ancestry(&self) -> Vec<&str> {
        self.ancestry.iter().map(String::as_str).collect()
    }
}

pub struct Directory {
    accounts: Cache<String, Arc<AccountIdentity>>,
    external_ids: Cache<String, String>,
    wallets: Cache<(String, String), String>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            accounts: Cache::new(CAPACITY),
            external_ids: Cache::new(CAPACITY),
            wallets: Cache::new(CAPACITY),
        }
    }
}

impl Directory {
    /// Remembers a committed account's identity and returns it.
    pub fn remember_account(&self, model: &account::Model) -> Arc<AccountIdentity> {
        let identity = Arc::new(AccountIdentity {
            id: model.id.clone(),
            ancestry: super::accounts::ancestry(model)
                .into_iter()
                .map(str::to_string)
                .collect(),
        });
        self.accounts.insert(model.id.clone(), identity.clone());
        self.external_ids
            .insert(model.external_id.clone(), model.id.clone());
        identity
    }

    pub fn account(&self, id: &str) -> Option<Arc<AccountIdentity>> {
        self.accounts.get(id)
    }

    pub fn account_by_external_id(&self, external_id: &str) -> Option<Arc<AccountIdentity>> {
        let id = self.external_ids.get(external_id)?;
        self.accounts.get(&id)
    }

    /// Remembers that `wallet_id` holds `unit` for `account_id` (read from committed data).
    pub fn remember_wallet(&self, account_id: &str, unit: &str, wallet_id: &str) {
        self.wallets.insert(
            (account_id.to_string(), unit.to_string()),
            wallet_id.to_string(),
        );
    }

    pub fn wallet(&self, account_id: &str, unit: &str) -> Option<String> {
        self.wallets
            .get(&(account_id.to_string(), unit.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, external_id: &str, ancestry: &str) -> account::Model {
        account::Model {
            id: id.into(),
            external_id: external_id.into(),
            display_name: String::new(),
            parent_id: None,
            ancestry: ancestry.into(),
            depth: 0,
            state: crate::domain::AccountState::Active,
            labels: Default::default(),
            create_time: 0,
            update_time: 0,
        }
    }

    #[test]
    fn answers_only_what_it_was_told() {
        let directory = Directory::default();
        assert!(directory.account("acct_b").is_none());
        directory.remember_account(&model("acct_b", "ext-b", "acct_a/acct_b"));
        let by_id = directory.account("acct_b").unwrap();
        assert_eq!(by_id.ancestry(), vec!["acct_a", "acct_b"]);
        let by_external = directory.account_by_external_id("ext-b").unwrap();
        assert_eq!(by_external.id, "acct_b");
        assert!(directory.account_by_external_id("ext-a").is_none());

        assert!(directory.wallet("acct_b", "credits").is_none());
        directory.remember_wallet("acct_b", "credits", "wal_1");
        assert_eq!(
            directory.wallet("acct_b", "credits").as_deref(),
            Some("wal_1")
        );
        assert!(directory.wallet("acct_b", "messages").is_none());
    }
}
