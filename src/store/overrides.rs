//! Account overrides: contract prices of a request type for an account and its sub-accounts,
//! effective-dated, used by pricing ahead of the rate card.
//!
//! Which price applies to a request of account A at time t: walk from A up to its root; at
//! each account, the record for the request type with the latest `effective_time` ≤ t (then
//! the latest created) decides — a price if it is not cleared and not expired at t, else the
//! walk goes on to the parent. No record anywhere: the rate card in force.
//!
//! Setting one bumps the rate-card head's generation under its exclusive lock (as a publish
//! does): a ledger batch holds that head shared, so it prices with the overrides and card of
//! one moment, and each process reloads both when the generation moves (`OverrideCache`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::{
    audit,
    entity::account_override,
    pagination::{self, Page},
    rate_cards,
};
use crate::{domain::Rate, error::Result};

/// Every override record, indexed by (account, request type), latest last: what pricing
/// looks up for each request (a few map lookups, whatever the number of records).
#[derive(Debug, Default)]
pub struct Overrides {
    by_key: HashMap<(String, String), Vec<account_override::Model>>,
}

impl Overrides {
    pub fn new(records: Vec<account_override::Model>) -> Self {
        let mut by_key: HashMap<(String, String), Vec<account_override::Model>> = HashMap::new();
        for record in records {
            by_key
                .entry((record.account_id.clone(), record.request_type.clone()))
                .or_default()
                .push(record);
        }
        for records in by_key.values_mut() {
            records.sort_by(|a, b| {
                (a.effective_time, a.create_time, &a.id).cmp(&(
                    b.effective_time,
                    b.create_time,
                    &b.id,
                ))
            });
        }
        Overrides { by_key }
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The override that prices `request_type` for an account with `ancestry` (root first,
    /// the account last) at `at`, if any (see the module's rule).
    pub fn in_force(
        &self,
        ancestry: &[&str],
        request_type: &str,
        at: i64,
    ) -> Option<(&account_override::Model, &Rate)> {
        for account in ancestry.iter().rev() {
            let Some(records) = self
                .by_key
                .get(&(account.to_string(), request_type.to_string()))
            else {
                continue;
            };
            // The latest record that has started.
            let Some(record) = records.iter().rev().find(|r| r.effective_time <= at) else {
                continue;
            };
            if let Some(rate) = &record.rate.0
                && !record.cleared
                && record.expire_time.is_none_or(|end| end > at)
            {
                return Some((record, rate));
            }
        }
        None
    }
}

/// A head generation and the overrides as of it.
type Cached = (i64, Arc<Overrides>);

/// The overrides as of a head generation.
#[derive(Clone, Default)]
pub struct OverrideCache {
    inner: Arc<Mutex<Option<Cached>>>,
}

impl OverrideCache {
    /// Every override as of `generation` (loaded again when it moved).
    pub async fn all(
        &self,
        conn: &impl ConnectionTrait,
        generation: i64,
    ) -> Result<Arc<Overrides>> {
        if let Ok(guard) = self.inner.lock()
            && let Some((cached, overrides)) = guard.as_ref()
            && *cached == generation
        {
            return Ok(overrides.clone());
        }
        let overrides = Arc::new(all(conn).await?);
        if let Ok(mut guard) = self.inner.lock() {
            *guard = Some((generation, overrides.clone()));
        }
        Ok(overrides)
    }
}

/// Every override, read now (for quotes and simulations; batches use the cache).
pub async fn all(conn: &impl ConnectionTrait) -> Result<Overrides> {
    Ok(Overrides::new(
        account_override::Entity::find().all(conn).await?,
    ))
}

/// Stores the record `make` builds from "now" (read once the head is held exclusively, so
/// every batch that commits later prices with it), moving the head's generation on; in the
/// caller's transaction.
pub async fn add(
    conn: &impl ConnectionTrait,
    now: impl Fn() -> i64,
    actor: &audit::Actor,
    make: impl FnOnce(i64) -> Result<account_override::Model>,
) -> Result<account_override::Model> {
    rate_cards::lock_head(conn, true).await?;
    let now = now();
    let record = make(now)?;
    // What it replaces: the account's latest record for the request type at its start.
    let replaced = account_override::Entity::find()
        .filter(account_override::Column::AccountId.eq(record.account_id.as_str()))
        .filter(account_override::Column::RequestType.eq(record.request_type.as_str()))
        .filter(account_override::Column::EffectiveTime.lte(record.effective_time))
        .all(conn)
        .await?
        .into_iter()
        .max_by_key(|r| (r.effective_time, r.create_time, r.id.clone()));
    let record = account_override::ActiveModel::from(record)
        .insert(conn)
        .await?;
    rate_cards::bump_generation(conn).await?;
    audit::record(
        conn,
        audit::event(
            audit::ACCOUNT_OVERRIDE_SET,
            format!(
                "accounts/{}/overrides/{}",
                record.account_id, record.request_type
            ),
            Some(record.account_id.clone()),
            actor,
            now,
            replaced.as_ref().map(audit::override_json),
            Some(audit::override_json(&record)),
        ),
    )
    .await?;
    Ok(record)
}

/// An account's override records (with `below`, its sub-accounts' too), by id.
pub async fn list(
    conn: &impl ConnectionTrait,
    accounts: &[String],
    page: &Page,
) -> Result<(Vec<account_override::Model>, String)> {
    let query = account_override::Entity::find()
        .filter(account_override::Column::AccountId.is_in(accounts.iter().cloned()));
    pagination::by_id(
        conn,
        query,
        account_override::Column::Id,
        "account_overrides",
        page,
        |r| r.id.clone(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::Amount, store::columns::OverrideRate};

    fn record(
        id: &str,
        account: &str,
        effective: i64,
        flat: i64,
        cleared: bool,
    ) -> account_override::Model {
        account_override::Model {
            id: id.into(),
            account_id: account.into(),
            request_type: "chat".into(),
            rate: OverrideRate((!cleared).then(|| Rate {
                request_type: "chat".into(),
                flat_units: Amount::from_micros(flat),
                dimensions: Vec::new(),
                max_units: None,
                route: String::new(),
                provider_cost: String::new(),
                list_prices: Vec::new(),
            })),
            cleared,
            effective_time: effective,
            expire_time: None,
            note: String::new(),
            actor: String::new(),
            create_time: effective,
        }
    }

    #[test]
    fn the_nearest_account_and_the_latest_record_win() {
        let records = Overrides::new(vec![
            record("parent", "p", 10, 1, false),
            record("child-old", "c", 10, 2, false),
            record("child-new", "c", 20, 3, false),
            record("child-end", "c", 30, 0, true),
        ]);
        let id = |at| {
            records
                .in_force(&["p", "c"], "chat", at)
                .map(|(r, _)| r.id.as_str())
        };
        assert_eq!(id(5), None);
        assert_eq!(id(15), Some("child-old"));
        assert_eq!(id(25), Some("child-new"));
        // The child's override ended: the parent's applies again.
        assert_eq!(id(35), Some("parent"));
        assert_eq!(
            records
                .in_force(&["p"], "chat", 15)
                .map(|(r, _)| r.id.as_str()),
            Some("parent")
        );
        assert!(records.in_force(&["p", "c"], "image", 15).is_none());
    }
}
