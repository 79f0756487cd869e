//! What a ledger batch read of a wallet besides its row — its account's state, live grants,
//! open holds, schedules —
//! kept in memory after the batch commits, tagged with the wallet's `version`.
//!
//! Every batch still reads (and on PostgreSQL locks) the wallet row itself; only when the row's
//! version equals the cached one are the other rows taken from here. Every write of a wallet's
//! grants, holds, schedules or entries goes through a ledger batch, which bumps the version in
//! the same transaction, so a matching version means nothing changed since — whichever replica
//! wrote last. A mismatch (another replica wrote, a batch failed after writing, an entry was
//! evicted) just reads the rows again. Tests (in any build profile) turn on
//! `Store::checking_cache`: every batch then also reads the rows and asserts the two agree,
//! on the same code path production takes.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::entity::{grant, reservation, schedule};
use crate::domain::AccountState;

/// Wallets kept (least recently used beyond that are dropped and read again on need).
const CAPACITY: usize = 20_000;

/// The rows `ledger::load_wallets` reads for one wallet, each list sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// The state of the wallet's account (UpdateAccount moves the wallet's version on when
    /// it changes the state).
    pub account_state: AccountState,
    pub grants: Vec<grant::Model>,
    pub holds: Vec<reservation::Model>,
    pub schedules: Vec<schedule::Model>,
}

impl Rows {
    /// No rows yet, of a wallet whose account is in `account_state`.
    pub fn new(account_state: AccountState) -> Self {
        Rows {
            account_state,
            grants: Vec::new(),
            holds: Vec::new(),
            schedules: Vec::new(),
        }
    }

    pub fn sorted(mut self) -> Self {
        self.grants.sort_by(|a, b| a.id.cmp(&b.id));
        self.holds.sort_by(|a, b| a.id.cmp(&b.id));
        self.schedules.sort_by(|a, b| a.id.cmp(&b.id));
        self
    }
}

pub struct WalletCache {
    entries: Cache<String, (i64, Arc<Rows>)>,
    /// Tests: every hit is also read from the database and compared (`ledger::load_wallets`).
    checked: bool,
}

impl Default for WalletCache {
    fn default() -> Self {
        Self::new(false)
    }
}

impl WalletCache {
    /// An empty cache; with `checked`, its hits are compared with the database.
    pub fn new(checked: bool) -> Self {
        WalletCache {
            entries: Cache::new(CAPACITY),
            checked,
        }
    }

    /// Whether each hit is compared with the database.
    pub fn checked(&self) -> bool {
        self.checked
    }

    /// The wallet's rows if they were cached at exactly `version`.
    pub fn get(&self, wallet_id: &str, version: i64) -> Option<Arc<Rows>> {
        match self.entries.get(wallet_id) {
            Some((cached, rows)) if cached == version => Some(rows),
            _ => None,
        }
    }

    /// Records the wallet's rows as committed at `version`.
    pub fn put(&self, wallet_id: &str, version: i64, rows: Rows) {
        self.entries
            .insert(wallet_id.to_string(), (version, Arc::new(rows.sorted())));
    }
}
