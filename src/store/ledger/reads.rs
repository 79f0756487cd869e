//! Reads outside ledger batches: balances (due events applied in memory), the entries a
//! statement shows as pending, lists and lookups. Nothing here writes.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Order,
};

use std::collections::BTreeSet;

use super::load::{load_one, load_wallets};
use crate::{
    domain::{Balance, Movement, WalletState},
    error::Result,
    store::{
        Store,
        entity::{grant, reservation, schedule, transaction, wallet},
        entries::{self, Position},
        pagination::{self, Page},
    },
};

/// The wallet and its balance as of `now` (due events applied in memory; nothing written).
async fn read_balance(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    now: i64,
) -> Result<(wallet::Model, Balance)> {
    let mut loaded = load_one(conn, wallet_id).await?;
    let mut n = 0;
    loaded.state.advance(now, &mut || {
        n += 1;
        format!("preview-{n}")
    });
    let balance = loaded.state.balance(&loaded.thresholds);
    Ok((loaded.model, balance))
}

/// Wallets as `conn` reads them, each brought up to `now` in memory (nothing written), with
/// the movements of what fell due on the way and not yet recorded.
pub async fn wallet_states(
    conn: &impl ConnectionTrait,
    ids: &BTreeSet<String>,
    now: i64,
) -> Result<Vec<(wallet::Model, WalletState, Vec<Movement>)>> {
    let loaded = load_wallets(conn, ids, &BTreeSet::new(), false, None).await?;
    Ok(loaded
        .into_values()
        .map(|mut wallet| {
            let mut n = 0;
            let due = wallet.state.advance(now, &mut || {
                n += 1;
                format!("preview-{n}")
            });
            (wallet.model, wallet.state, due)
        })
        .collect())
}

/// [`read_balance`] in one snapshot of the database: never a balance that did not exist.
pub async fn wallet_balance(
    store: &Store,
    wallet_id: &str,
    now: i64,
) -> Result<(wallet::Model, Balance)> {
    let tx = store.read_snapshot().await?;
    let read = read_balance(&tx, wallet_id, now).await;
    tx.rollback().await?;
    read
}

/// The wallet's balance as of `now`, read through `conn` (e.g. the transaction that just
/// created the wallet).
pub async fn balance(
    conn: &impl ConnectionTrait,
    wallet: &wallet::Model,
    now: i64,
) -> Result<Balance> {
    Ok(read_balance(conn, &wallet.id, now).await?.1)
}

/// The entries the ledger will write for what fell due on the wallet up to `now` (expiry,
/// grants becoming active, schedule periods) but the sweeper has not recorded yet, worked
/// out in memory from what `conn` reads: nothing is written. They carry no id and no hash
/// (the sweeper assigns both when it records them, within a sweep interval).
pub async fn pending_entries(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    now: i64,
) -> Result<Vec<transaction::Model>> {
    let mut loaded = load_one(conn, wallet_id).await?;
    loaded.advance(now);
    Ok(loaded
        .entries
        .into_iter()
        .map(|entry| transaction::Model {
            id: String::new(),
            hash: String::new(),
            prev_hash: String::new(),
            ..entry
        })
        .collect())
}

/// Ledger entries of one wallet, newest first.
pub async fn list_transactions(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &Page,
) -> Result<(Vec<transaction::Model>, String)> {
    let mut query = entries::in_ledger_order(
        transaction::Entity::find().filter(transaction::Column::WalletId.eq(wallet_id)),
        Order::Desc,
    );
    if let Some(after) = page.after_number()? {
        query = match Position::find(conn, wallet_id, after).await? {
            Some(position) => query.filter(position.before()),
            // Not an entry of this wallet (no page of it ends there): the seq bound alone
            // still pages in the same order, without the index range.
            None => query.filter(transaction::Column::Seq.lt(after)),
        };
    }
    let rows = query.limit(page.size + 1).all(conn).await?;
    Ok(pagination::finish("transactions", rows, page, |t| {
        t.seq.to_string()
    }))
}

/// Grants of one wallet, oldest first.
pub async fn list_grants(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &Page,
) -> Result<(Vec<grant::Model>, String)> {
    let query = grant::Entity::find().filter(grant::Column::WalletId.eq(wallet_id));
    pagination::by_id(conn, query, grant::Column::Id, "grants", page, |g| {
        g.id.clone()
    })
    .await
}

/// Allotment schedules of one wallet, oldest first.
pub async fn list_schedules(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &Page,
) -> Result<(Vec<schedule::Model>, String)> {
    let query = schedule::Entity::find().filter(schedule::Column::WalletId.eq(wallet_id));
    pagination::by_id(
        conn,
        query,
        schedule::Column::Id,
        "allotment_schedules",
        page,
        |s| s.id.clone(),
    )
    .await
}

pub async fn find_reservation(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<reservation::Model>> {
    Ok(reservation::Entity::find_by_id(id.to_string())
        .one(conn)
        .await?)
}

pub async fn find_transaction(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<transaction::Model>> {
    Ok(transaction::Entity::find()
        .filter(transaction::Column::Id.eq(id))
        .one(conn)
        .await?)
}

pub async fn find_grant(conn: &impl ConnectionTrait, id: &str) -> Result<Option<grant::Model>> {
    Ok(grant::Entity::find_by_id(id.to_string()).one(conn).await?)
}

/// Wallets with something due at or before `now` (for the sweeper).
pub async fn due_wallets(conn: &impl ConnectionTrait, now: i64, limit: u64) -> Result<Vec<String>> {
    Ok(wallet::Entity::find()
        .select_only()
        .column(wallet::Column::Id)
        .filter(wallet::Column::NextDueTime.lte(now))
        .order_by_asc(wallet::Column::NextDueTime)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?)
}
