//! Loading a batch's state under its locks (and single wallets for reads).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{
    eval::{Batch, Loaded},
    ops::Op,
};
use crate::{
    domain::{AccountState, HoldState, LotStatus, MovementKind},
    error::{Error, Result},
    store::{
        Store,
        entity::{account, grant, reservation, schedule, transaction, wallet},
        idempotency::{self, Key},
        is_postgres, rate_cards,
        shape::padded,
        wallet_cache::{Rows, WalletCache},
    },
};

/// a wallet whose row version matches the cached one takes its other rows from memory.
pub(super) async fn load_wallets(
    conn: &impl ConnectionTrait,
    ids: &BTreeSet<String>,
    extra_grants: &BTreeSet<String>,
    lock: bool,
    cache: Option<&WalletCache>,
) -> Result<BTreeMap<String, Loaded>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut query = wallet::Entity::find()
        .filter(wallet::Column::Id.is_in(padded(ids.iter().cloned())))
        .order_by_asc(wallet::Column::Id);
    if lock && is_postgres(conn) {
        query = query.lock_exclusive();
    }
    let wallets = query.all(conn).await?;
    let mut rows: HashMap<String, Rows> = HashMap::new();
    let mut misses = BTreeMap::new();
    for model in &wallets {
        match cache.and_then(|c| c.get(&model.id, model.version)) {
            Some(cached) => {
                rows.insert(model.id.clone(), (*cached).clone());
            }
            None => {
                misses.insert(model.id.clone(), model.account_id.clone());
            }
        }
    }
    if cache.is_some_and(WalletCache::checked) && !rows.is_empty() {
        // Tests check every cache hit against the database (`Store::checking_cache`).
        let hits: BTreeMap<String, String> = wallets
            .iter()
            .filter(|w| rows.contains_key(&w.id))
            .map(|w| (w.id.clone(), w.account_id.clone()))
            .collect();
        let read = read_rows(conn, &hits).await?;
        for (id, cached) in &rows {
            assert_eq!(
                read.get(id),
                Some(cached),
                "wallet cache disagrees with the database for {id}"
            );
        }
    }
    rows.extend(read_rows(conn, &misses).await?);
    if !extra_grants.is_empty() {
        let extra = grant::Entity::find()
            .filter(grant::Column::Id.is_in(padded(extra_grants.iter().cloned())))
            .all(conn)
            .await?;
        for model in extra {
            if let Some(own) = rows.get_mut(&model.wallet_id)
                && !own.grants.iter().any(|g| g.id == model.id)
            {
                own.grants.push(model);
            }
        }
    }
    wallets
        .into_iter()
        .map(|model| {
            let own = rows.remove(&model.id).ok_or_else(|| {
                Error::internal(format!("the rows of wallet `{}` were not read", model.id))
            })?;
            Ok((model.id.clone(), Loaded::new(model, own)))
        })
        .collect()
}

/// Whether a grant row is one `load_wallets` reads (live, or holding repaid debt).
pub(super) fn is_live(grant: &grant::Model) -> bool {
    matches!(grant.status, LotStatus::Pending | LotStatus::Active) || grant.repaid > 0
}

/// The account state, live grants, open holds and schedules of the wallets in `owners`
/// (wallet id → account id; every wallet gets an entry).
async fn read_rows(
    conn: &impl ConnectionTrait,
    owners: &BTreeMap<String, String>,
) -> Result<HashMap<String, Rows>> {
    if owners.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: BTreeSet<String> = owners.keys().cloned().collect();
    let account_ids: BTreeSet<&String> = owners.values().collect();
    let states: HashMap<String, AccountState> = account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .column(account::Column::State)
        .filter(account::Column::Id.is_in(padded(account_ids.into_iter().cloned())))
        .into_tuple::<(String, AccountState)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let mut rows = HashMap::with_capacity(owners.len());
    for (wallet_id, account_id) in owners {
        let state = states.get(account_id).ok_or_else(|| {
            Error::internal(format!("the account of wallet `{wallet_id}` is missing"))
        })?;
        rows.insert(wallet_id.clone(), Rows::new(*state));
    }
    // Live grants: the rule `is_live` states for the cache.
    let grants = grant::Entity::find()
        .filter(grant::Column::WalletId.is_in(padded(ids.iter().cloned())))
        .filter(
            Condition::any()
                .add(grant::Column::Status.is_in([LotStatus::Pending, LotStatus::Active]))
                .add(grant::Column::Repaid.gt(0)),
        )
        .all(conn)
        .await?;
    let holds = reservation::Entity::find()
        .filter(reservation::Column::WalletId.is_in(padded(ids.iter().cloned())))
        .filter(reservation::Column::State.eq(HoldState::Open))
        .all(conn)
        .await?;
    let schedules = schedule::Entity::find()
        .filter(schedule::Column::WalletId.is_in(padded(ids.iter().cloned())))
        .all(conn)
        .await?;
    for grant in grants {
        if let Some(own) = rows.get_mut(&grant.wallet_id) {
            own.grants.push(grant);
        }
    }
    for hold in holds {
        if let Some(own) = rows.get_mut(&hold.wallet_id) {
            own.holds.push(hold);
        }
    }
    for schedule in schedules {
        if let Some(own) = rows.get_mut(&schedule.wallet_id) {
            own.schedules.push(schedule);
        }
    }
    Ok(rows
        .into_iter()
        .map(|(id, own)| (id, own.sorted()))
        .collect())
}

/// One wallet as `conn` reads it, unlocked and without the cache (for reads).
pub(super) async fn load_one(conn: &impl ConnectionTrait, wallet_id: &str) -> Result<Loaded> {
    let ids = BTreeSet::from([wallet_id.to_string()]);
    load_wallets(conn, &ids, &BTreeSet::new(), false, None)
        .await?
        .remove(wallet_id)
        .ok_or_else(|| Error::not_found("wallet", wallet_id))
}

/// Takes the batch's locks and reads everything its operations are evaluated against, in the
/// order that makes it safe with several replicas: the rate-card head (share), the wallets
/// (`FOR UPDATE`, id order), then what was refunded, account states, "now", the card in
/// force and the idempotency records. Wallets are brought up to "now" (what fell due is
/// recorded as entries before any operation runs).
pub(super) async fn lock_and_load(
    store: &Store,
    conn: &DatabaseTransaction,
    ops: &[Op],
) -> Result<Batch> {
    let generation = rate_cards::lock_head_for_batch(conn).await?;

    // Debits and holds name (account, unit); wallets never move, so resolving before
    // locking is safe.
    let account_ids: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| op.account_unit().map(|(a, _)| a.to_string()))
        .collect();
    let mut by_account_unit = HashMap::new();
    let mut unmapped = BTreeSet::new();
    for (account, unit) in ops.iter().filter_map(Op::account_unit) {
        match store.directory.wallet(account, unit) {
            Some(id) => {
                by_account_unit.insert((account.to_string(), unit.to_string()), id);
            }
            None => {
                unmapped.insert(account.to_string());
            }
        }
    }
    if !unmapped.is_empty() {
        let found = wallet::Entity::find()
            .select_only()
            .column(wallet::Column::Id)
            .column(wallet::Column::AccountId)
            .column(wallet::Column::Unit)
            .filter(wallet::Column::AccountId.is_in(padded(unmapped.iter().cloned())))
            .into_tuple::<(String, String, String)>()
            .all(conn)
            .await?;
        for (id, account, unit) in found {
            // Committed rows (a batch never creates wallets): safe to remember.
            store.directory.remember_wallet(&account, &unit, &id);
            by_account_unit.insert((account, unit), id);
        }
    }
    let mut wallet_ids = BTreeSet::new();
    for op in ops {
        if let Some(id) = op.wallet_id() {
            wallet_ids.insert(id.to_string());
        } else if let Some((account, unit)) = op.account_unit()
            && let Some(id) = by_account_unit.get(&(account.to_string(), unit.to_string()))
        {
            wallet_ids.insert(id.clone());
        }
    }

    // Refunds: the refunded entries (immutable rows, so read before the locks) name the
    // grants a refund may return to; what was refunded of them already is read below, under
    // the wallet locks that serialise refunds of one entry on every replica.
    let refund_ids: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Refund(r) => Some(r.transaction_id.clone()),
            _ => None,
        })
        .collect();
    let mut originals = Vec::new();
    let mut extra_grants = BTreeSet::new();
    if !refund_ids.is_empty() {
        originals = transaction::Entity::find()
            .filter(transaction::Column::Id.is_in(padded(refund_ids.iter().cloned())))
            .all(conn)
            .await?;
        for original in &originals {
            extra_grants.extend(
                original
                    .burns
                    .0
                    .iter()
                    .map(|b| b.grant_id.clone())
                    .filter(|g| !g.is_empty()),
            );
        }
    }

    let mut wallets =
        load_wallets(conn, &wallet_ids, &extra_grants, true, Some(&store.wallets)).await?;
    let mut refunded = HashMap::new();
    if !originals.is_empty() {
        // After the locks: a refund committed by another replica a moment ago is counted.
        let prior: Vec<(Option<String>, i64)> = transaction::Entity::find()
            .select_only()
            .column(transaction::Column::RefId)
            .column(transaction::Column::Units)
            .filter(transaction::Column::Kind.eq(MovementKind::Refund.as_str()))
            .filter(transaction::Column::RefId.is_in(padded(refund_ids.iter().cloned())))
            .into_tuple()
            .all(conn)
            .await?;
        for original in originals {
            let done = prior
                .iter()
                .filter(|(r, _)| r.as_deref() == Some(original.id.as_str()))
                .try_fold(0i64, |sum, (_, units)| sum.checked_add(*units))
                .ok_or_else(|| Error::internal("refunded units overflow"))?;
            refunded.insert(original.id.clone(), (original, done));
        }
    }
    // Account states: with each loaded wallet (cached by its version); read for the rest
    // (an account without the wallet an operation names, or none at all).
    let mut accounts: HashMap<String, AccountState> = wallets
        .values()
        .map(|w| (w.model.account_id.clone(), w.account_state))
        .collect();
    let unread: BTreeSet<&String> = account_ids
        .iter()
        .filter(|id| !accounts.contains_key(*id))
        .collect();
    if !unread.is_empty() {
        let read: Vec<(String, AccountState)> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .column(account::Column::State)
            .filter(account::Column::Id.is_in(padded(unread.into_iter().cloned())))
            .into_tuple()
            .all(conn)
            .await?;
        accounts.extend(read);
    }
    // "Now" is read once every lock is held: no batch that locks these wallets later can
    // be dated earlier, and no publish can commit before this batch does.
    let now = store.clock.now_micros();
    let needs_card = ops
        .iter()
        .any(|op| matches!(op, Op::Debit(_) | Op::Reserve(_) | Op::Capture(_)));
    let (card, overrides) = if needs_card {
        let cards = store.cards.published(conn, generation).await?;
        let overrides = store.overrides.all(conn, generation).await?;
        (rate_cards::in_force_among(&cards, now).cloned(), overrides)
    } else {
        (None, Default::default())
    };
    // Overrides apply to an account and its sub-accounts: the batch's accounts' ancestry.
    let mut ancestry = HashMap::new();
    if !overrides.is_empty() {
        for account_id in accounts.keys() {
            let ids = match store.directory.account(account_id) {
                Some(identity) => identity.ancestry.clone(),
                None => crate::store::accounts::ancestry_ids(conn, account_id).await?,
            };
            ancestry.insert(account_id.clone(), ids);
        }
    }
    for loaded in wallets.values_mut() {
        loaded.advance(now);
    }

    let keys: Vec<&Key> = ops.iter().filter_map(Op::key).collect();
    let records = idempotency::find_many(conn, &keys)
        .await?
        .into_iter()
        .map(|r| ((r.scope.clone(), r.request_id.clone()), r))
        .collect();
    Ok(Batch {
        now,
        card,
        overrides,
        ancestry,
        accounts,
        by_account_unit,
        wallets,
        refunded,
        records,
    })
}
