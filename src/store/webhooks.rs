//! Webhooks' tables (migration 12): endpoints, the fan-out of events to deliveries, and the
//! deliveries' claims and outcomes. The dispatcher (`webhooks/`) drives them; no ledger
//! batch touches them, so a debit pays nothing for webhooks and a slow endpoint cannot
//! hold a wallet's lock.
//!
//! * **Fan-out** ([`fan_out`]): for each wallet, the events after its `webhook_fanout`
//!   cursor become one delivery per matching endpoint, and the cursor moves on, in one
//!   write transaction with the cursor rows locked (PostgreSQL: `FOR UPDATE`), so two
//!   replicas never both make them; `(endpoint_id, event_id)` is unique besides. Events
//!   nobody wants move the cursor lazily ([`Cursors`], [`persist`]): no write at all.
//! * **Order per wallet**: a delivery is claimed only when no earlier delivery of the same
//!   wallet to the same endpoint is pending ([`claim`]). A failing endpoint holds back that
//!   wallet's later events for that endpoint only, until the failing one is delivered or
//!   dead.
//! * **One replica at a time** ([`claim`]): claiming moves a delivery's `next_attempt_time`
//!   to the end of a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), so no other replica
//!   takes it meanwhile; a replica that dies mid-delivery leaves it to be retried when the
//!   lease ends. At least once: the receiver de-duplicates by `webhook-id` (the event id).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Alias, Expr, ExprTrait, LockBehavior, LockType, OnConflict, Query},
};

use super::{
    Store, accounts,
    entity::{event, wallet, webhook_attempt, webhook_delivery, webhook_endpoint, webhook_fanout},
    events::Header,
    is_postgres,
    pagination::{self, Page},
};
use crate::error::{Error, Reason, Result};

use webhook_delivery::State;

/// Events read per fan-out query, and wallets named in one.
const FAN_OUT_EVENTS: u64 = 1_000;
const READ_WALLETS: usize = 100;

/// Rows per multi-row insert.
const INSERT_CHUNK: usize = 500;

/// Deliveries deleted per write transaction when pruning.
const PRUNE_CHUNK: u64 = 1_000;

/// The longest answer body kept per attempt.
pub const RESPONSE_KEPT: usize = 1024;

/// A new signing secret: `whsec_` and 32 random bytes in base64 (Standard Webhooks).
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// The event types an endpoint stores (`''`: every type).
pub fn join_types(types: &[String]) -> String {
    types.join(",")
}

pub fn split_types(types: &str) -> Vec<String> {
    types
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `endpoint` takes events of this type and time: enabled, created by then, and the
/// type in its filter (empty: every type).
fn takes(endpoint: &webhook_endpoint::Model, event: &Header) -> bool {
    let type_name: String = sea_orm::ActiveEnum::to_value(&event.event_type);
    endpoint.enabled
        && endpoint.create_time <= event.time
        && (endpoint.event_types.is_empty()
            || endpoint.event_types.split(',').any(|t| t == type_name))
}

/// Whether an endpoint covers an event of the account whose `ancestry` (itself and those
/// above it) is given: an endpoint of every account, or of one of those.
fn covers(endpoint: &webhook_endpoint::Model, ancestry: &[String]) -> bool {
    endpoint.account_id.is_empty() || ancestry.contains(&endpoint.account_id)
}

pub async fn find(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<webhook_endpoint::Model>> {
    Ok(webhook_endpoint::Entity::find_by_id(id).one(conn).await?)
}

/// Every endpoint (the dispatcher's view, read again every second).
pub async fn all(conn: &impl ConnectionTrait) -> Result<Vec<webhook_endpoint::Model>> {
    Ok(webhook_endpoint::Entity::find()
        .order_by_asc(webhook_endpoint::Column::Id)
        .all(conn)
        .await?)
}

/// Stores a new endpoint, which receives the events made from now on. So that nothing reads
/// the events before it: wallets without a fan-out cursor get one at their latest event,
/// and when it is the only endpoint (nobody fanned out meanwhile) every cursor moves there.
pub async fn create(conn: &impl ConnectionTrait, endpoint: webhook_endpoint::Model) -> Result<()> {
    let first = webhook_endpoint::Entity::find().one(conn).await?.is_none();
    let conflict = if first {
        OnConflict::column(webhook_fanout::Column::WalletId)
            .update_column(webhook_fanout::Column::Sequence)
            .to_owned()
    } else {
        OnConflict::column(webhook_fanout::Column::WalletId)
            .do_nothing()
            .to_owned()
    };
    let insert = Query::insert()
        .into_table(webhook_fanout::Entity)
        .columns([
            webhook_fanout::Column::WalletId,
            webhook_fanout::Column::Sequence,
        ])
        .select_from(
            Query::select()
                .column(wallet::Column::Id)
                .column(wallet::Column::EventSeq)
                .from(wallet::Entity)
                // SQLite parses `INSERT … SELECT … ON CONFLICT` only with a WHERE.
                .and_where(Expr::cust("1 = 1"))
                .to_owned(),
        )
        .map_err(|err| Error::internal(err.to_string()))?
        .on_conflict(conflict)
        .to_owned();
    conn.execute(&insert).await?;
    webhook_endpoint::Entity::insert(webhook_endpoint::ActiveModel::from(endpoint))
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Stores `endpoint` as changed.
pub async fn save(conn: &impl ConnectionTrait, endpoint: webhook_endpoint::Model) -> Result<()> {
    // Every column written (a model's active form has them unchanged), but the fixed ones.
    let mut active =
        sea_orm::ActiveModelTrait::reset_all(webhook_endpoint::ActiveModel::from(endpoint));
    for column in [
        webhook_endpoint::Column::AccountId,
        webhook_endpoint::Column::CreateTime,
    ] {
        sea_orm::ActiveModelTrait::not_set(&mut active, column);
    }
    webhook_endpoint::Entity::update(active).exec(conn).await?;
    Ok(())
}

/// Deletes an endpoint with its deliveries and their attempts.
pub async fn delete(conn: &impl ConnectionTrait, id: &str) -> Result<()> {
    if is_postgres(conn) {
        // Waits for an attempt being recorded (`finish` shares this lock), so none is
        // recorded after its delivery is gone.
        webhook_endpoint::Entity::find_by_id(id)
            .lock(LockType::Update)
            .one(conn)
            .await?;
    }
    let deliveries = Query::select()
        .column(webhook_delivery::Column::Id)
        .from(webhook_delivery::Entity)
        .and_where(Expr::col(webhook_delivery::Column::EndpointId).eq(id))
        .to_owned();
    webhook_attempt::Entity::delete_many()
        .filter(webhook_attempt::Column::DeliveryId.in_subquery(deliveries))
        .exec(conn)
        .await?;
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::EndpointId.eq(id))
        .exec(conn)
        .await?;
    webhook_endpoint::Entity::delete_by_id(id)
        .exec(conn)
        .await?;
    Ok(())
}

/// One page of the endpoints of `accounts` (`None`: every endpoint), in creation order.
pub async fn list(
    conn: &impl ConnectionTrait,
    accounts: Option<Vec<String>>,
    page: &Page,
) -> Result<(Vec<webhook_endpoint::Model>, String)> {
    let mut query = webhook_endpoint::Entity::find();
    if let Some(accounts) = accounts {
        query = query.filter(webhook_endpoint::Column::AccountId.is_in(accounts));
    }
    pagination::by_id(
        conn,
        query,
        webhook_endpoint::Column::Id,
        "webhook_endpoints",
        page,
        |e| e.id.clone(),
    )
    .await
}

/// Wallets whose events are not all fanned out (at most `limit`), with `""` first when a
/// rate card was published since the last fan-out. A scan of the wallets: run it now and
/// then, to find what this replica was not told of (another replica died before its
/// fan-out, or wrote outside ledger batches).
pub async fn behind(conn: &impl ConnectionTrait, limit: u64) -> Result<Vec<String>> {
    let mut wallets = Vec::new();
    let published = event::Entity::find()
        .select_only()
        .column_as(event::Column::Sequence.max(), "latest")
        .filter(event::Column::WalletId.eq(""))
        .into_tuple::<Option<i64>>()
        .one(conn)
        .await?
        .flatten();
    if let Some(latest) = published {
        let cursor = cursor(conn, "").await?;
        if latest > cursor {
            wallets.push(String::new());
        }
    }
    let behind = Query::select()
        .column((wallet::Entity, wallet::Column::Id))
        .from(wallet::Entity)
        .left_join(
            webhook_fanout::Entity,
            Expr::col((webhook_fanout::Entity, webhook_fanout::Column::WalletId))
                .equals((wallet::Entity, wallet::Column::Id)),
        )
        .and_where(
            Expr::col((wallet::Entity, wallet::Column::EventSeq)).gt(Expr::expr(
                Expr::col((webhook_fanout::Entity, webhook_fanout::Column::Sequence)).if_null(0),
            )),
        )
        .limit(limit)
        .to_owned();
    let rows = conn.query_all(&behind).await?;
    for row in rows {
        wallets.push(row.try_get_by_index::<String>(0)?);
    }
    Ok(wallets)
}

async fn cursor(conn: &impl ConnectionTrait, wallet_id: &str) -> Result<i64> {
    Ok(webhook_fanout::Entity::find_by_id(wallet_id)
        .one(conn)
        .await?
        .map_or(0, |c| c.sequence))
}

/// How far a dispatcher has fanned out each wallet it touched lately: the cursor as stored,
/// and the last event it read past that without a delivery to make. Those reads are stored
/// lazily ([`persist`], every few seconds), so a round that makes no delivery writes
/// nothing — on SQLite, no commit beside the ledger's. Reading them again (after a crash,
/// or by another replica) makes nothing twice: the same events want the same endpoints,
/// and `(endpoint_id, event_id)` is unique.
#[derive(Debug, Default)]
pub struct Cursors {
    known: HashMap<String, Cursor>,
    /// Each account's ancestry (itself and those above it): an account never moves, so it
    /// is read once (and forgotten when there are too many).
    ancestries: HashMap<String, Vec<String>>,
}

/// Ancestries kept before the dispatcher forgets them all.
const ANCESTRIES_KEPT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Cursor {
    stored: i64,
    read: i64,
}

impl Cursors {
    /// Forgets everything (read again from the table when needed).
    pub fn clear(&mut self) {
        self.known.clear();
        self.ancestries.clear();
    }
}

/// What a fan-out did.
#[derive(Debug, Default)]
pub struct FannedOut {
    pub deliveries: usize,
    /// Wallets to fan out again: more events than one read takes, or a cursor another
    /// replica moved meanwhile.
    pub again: Vec<String>,
}

/// Turns the events of `wallets` after their cursors into deliveries for the `endpoints`
/// that want them.
///
/// The events are read first, outside any write transaction (on SQLite a write holds the
/// one writer the ledger's batches need), [`READ_WALLETS`] wallets a query. Only wallets
/// with deliveries to make are written now: one transaction checks that no other replica
/// moved their cursors meanwhile (under `FOR UPDATE` on PostgreSQL — a wallet whose cursor
/// moved is read again next round), inserts the deliveries and moves the cursors.
pub async fn fan_out(
    store: &Store,
    wallets: &[String],
    endpoints: &[webhook_endpoint::Model],
    now: i64,
    cursors: &mut Cursors,
) -> Result<FannedOut> {
    let mut out = FannedOut::default();
    let mut wallets = wallets.to_vec();
    wallets.sort();
    wallets.dedup();
    let reader = store.connection();
    let unknown: Vec<String> = wallets
        .iter()
        .filter(|w| !cursors.known.contains_key(*w))
        .cloned()
        .collect();
    for chunk in unknown.chunks(INSERT_CHUNK) {
        let stored: HashMap<String, i64> = webhook_fanout::Entity::find()
            .filter(webhook_fanout::Column::WalletId.is_in(chunk.iter().cloned()))
            .all(reader)
            .await?
            .into_iter()
            .map(|row| (row.wallet_id, row.sequence))
            .collect();
        for wallet_id in chunk {
            let stored = stored.get(wallet_id).copied().unwrap_or(0);
            let cursor = Cursor {
                stored,
                read: stored,
            };
            cursors.known.insert(wallet_id.clone(), cursor);
        }
    }
    let mut deliveries: HashMap<String, Vec<webhook_delivery::ActiveModel>> = HashMap::new();
    let mut moves = Vec::new();
    if cursors.ancestries.len() > ANCESTRIES_KEPT {
        cursors.ancestries.clear();
    }
    for chunk in wallets.chunks(READ_WALLETS) {
        let from: Vec<(&str, i64)> = chunk
            .iter()
            .map(|w| (w.as_str(), cursors.known[w].read))
            .collect();
        let events = super::events::headers_after_each(reader, &from, FAN_OUT_EVENTS).await?;
        if events.len() as u64 == FAN_OUT_EVENTS {
            // Some wallets may have more, or were not reached: next round goes on from what
            // was read.
            out.again.extend(chunk.iter().cloned());
        }
        let mut by_wallet: BTreeMap<&str, Vec<&Header>> = BTreeMap::new();
        for event in &events {
            by_wallet.entry(&event.wallet_id).or_default().push(event);
        }
        for (wallet_id, events) in by_wallet {
            let mut made = Vec::new();
            for event in &events {
                let takers: Vec<&webhook_endpoint::Model> =
                    endpoints.iter().filter(|e| takes(e, event)).collect();
                if takers.is_empty() {
                    continue;
                }
                // The account's ancestry only when an endpoint of an account could take it.
                let scoped =
                    !event.account_id.is_empty() && takers.iter().any(|e| !e.account_id.is_empty());
                if scoped && !cursors.ancestries.contains_key(&event.account_id) {
                    let ancestry = accounts::ancestry_ids(reader, &event.account_id).await?;
                    cursors
                        .ancestries
                        .insert(event.account_id.clone(), ancestry);
                }
                let none = Vec::new();
                let ancestry = if scoped {
                    &cursors.ancestries[&event.account_id]
                } else {
                    &none
                };
                for endpoint in takers.into_iter().filter(|e| covers(e, ancestry)) {
                    made.push(delivery(endpoint, event, now));
                }
            }
            let last = events.last().map_or(0, |e| e.sequence);
            let Some(cursor) = cursors.known.get_mut(wallet_id) else {
                continue;
            };
            if made.is_empty() {
                cursor.read = Ord::max(cursor.read, last);
            } else {
                moves.push((wallet_id.to_string(), cursor.stored, last));
                deliveries.insert(wallet_id.to_string(), made);
            }
        }
    }
    if moves.is_empty() {
        return Ok(out);
    }
    let write = store.begin_write().await?;
    let moved = move_cursors(&write.tx, &moves).await?;
    let mut rows = Vec::new();
    for (wallet_id, _, _) in &moves {
        if moved.contains(wallet_id) {
            rows.extend(deliveries.remove(wallet_id).unwrap_or_default());
        }
    }
    out.deliveries = rows.len();
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(INSERT_CHUNK));
        webhook_delivery::Entity::insert_many(std::mem::replace(&mut rows, rest))
            .on_conflict(
                OnConflict::columns([
                    webhook_delivery::Column::EndpointId,
                    webhook_delivery::Column::EventId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&write.tx)
            .await?;
    }
    write.commit().await?;
    for (wallet_id, _, to) in moves {
        if moved.contains(&wallet_id) {
            cursors.known.insert(
                wallet_id,
                Cursor {
                    stored: to,
                    read: to,
                },
            );
        } else {
            // Another replica fanned these out: its deliveries stand; read on from its cursor.
            cursors.known.remove(&wallet_id);
            out.again.push(wallet_id);
        }
    }
    Ok(out)
}

/// Stores the cursors read past without a delivery (unless another replica moved them
/// meanwhile), and forgets the wallets it knows, so what it keeps stays bounded.
pub async fn persist(store: &Store, cursors: &mut Cursors) -> Result<()> {
    let moves: Vec<(String, i64, i64)> = cursors
        .known
        .drain()
        .filter(|(_, c)| c.read > c.stored)
        .map(|(wallet_id, c)| (wallet_id, c.stored, c.read))
        .collect();
    if moves.is_empty() {
        return Ok(());
    }
    let write = store.begin_write().await?;
    move_cursors(&write.tx, &moves).await?;
    write.commit().await?;
    Ok(())
}

/// Moves each wallet's cursor `(wallet, from, to)` from `from` to `to`, unless it is no
/// longer at `from` (another replica moved it); returns the wallets moved.
async fn move_cursors(
    tx: &impl ConnectionTrait,
    moves: &[(String, i64, i64)],
) -> Result<HashSet<String>> {
    let mut names: Vec<&String> = moves.iter().map(|(w, _, _)| w).collect();
    names.sort();
    // Every wallet gets a cursor row to lock (a new wallet: from its first event).
    for chunk in names.chunks(INSERT_CHUNK) {
        webhook_fanout::Entity::insert_many(chunk.iter().map(|id| webhook_fanout::ActiveModel {
            wallet_id: Set((*id).clone()),
            sequence: Set(0),
        }))
        .on_conflict(
            OnConflict::column(webhook_fanout::Column::WalletId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    }
    let mut current: HashMap<String, i64> = HashMap::new();
    for chunk in names.chunks(INSERT_CHUNK) {
        let mut query = webhook_fanout::Entity::find()
            .filter(webhook_fanout::Column::WalletId.is_in(chunk.iter().map(|w| (*w).clone())))
            .order_by_asc(webhook_fanout::Column::WalletId);
        if is_postgres(tx) {
            query = query.lock(LockType::Update);
        }
        for row in query.all(tx).await? {
            current.insert(row.wallet_id, row.sequence);
        }
    }
    let mut moved = HashSet::new();
    let mut rows = Vec::new();
    for (wallet_id, from, to) in moves {
        if current.get(wallet_id) == Some(from) {
            moved.insert(wallet_id.clone());
            rows.push(webhook_fanout::ActiveModel {
                wallet_id: Set(wallet_id.clone()),
                sequence: Set(*to),
            });
        }
    }
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(INSERT_CHUNK));
        webhook_fanout::Entity::insert_many(std::mem::replace(&mut rows, rest))
            .on_conflict(
                OnConflict::column(webhook_fanout::Column::WalletId)
                    .update_column(webhook_fanout::Column::Sequence)
                    .to_owned(),
            )
            .exec_without_returning(tx)
            .await?;
    }
    Ok(moved)
}

fn delivery(
    endpoint: &webhook_endpoint::Model,
    event: &Header,
    now: i64,
) -> webhook_delivery::ActiveModel {
    webhook_delivery::ActiveModel {
        id: Set(super::new_id("whd")),
        endpoint_id: Set(endpoint.id.clone()),
        event_id: Set(event.id.clone()),
        wallet_id: Set(event.wallet_id.clone()),
        sequence: Set(event.sequence),
        event_type: Set(sea_orm::ActiveEnum::to_value(&event.event_type)),
        state: Set(State::Pending),
        attempts: Set(0),
        retry_base: Set(0),
        next_attempt_time: Set(now),
        create_time: Set(now),
        done_time: Set(None),
    }
}

/// Claims up to `limit` due deliveries — each the earliest pending one of its wallet for
/// its endpoint, of an enabled endpoint not in `busy` — leasing them until `lease_end` and
/// counting the attempt.
pub async fn claim(
    store: &Store,
    now: i64,
    lease_end: i64,
    limit: u64,
    busy: &[String],
) -> Result<Vec<webhook_delivery::Model>> {
    use webhook_delivery::Column as D;
    let (d, p) = (Alias::new("d"), Alias::new("p"));
    let earlier_pending = Query::select()
        .expr(Expr::val(1))
        .from_as(webhook_delivery::Entity, p.clone())
        .and_where(Expr::col((p.clone(), D::EndpointId)).equals((d.clone(), D::EndpointId)))
        .and_where(Expr::col((p.clone(), D::WalletId)).equals((d.clone(), D::WalletId)))
        .and_where(Expr::col((p.clone(), D::State)).eq(stored(State::Pending)))
        .and_where(Expr::col((p.clone(), D::Sequence)).lt(Expr::col((d.clone(), D::Sequence))))
        .to_owned();
    let enabled = Query::select()
        .column(webhook_endpoint::Column::Id)
        .from(webhook_endpoint::Entity)
        .and_where(Expr::col(webhook_endpoint::Column::Enabled).eq(true))
        .to_owned();
    let mut due = Query::select();
    due.column((d.clone(), D::Id))
        .from_as(webhook_delivery::Entity, d.clone())
        .and_where(Expr::col((d.clone(), D::State)).eq(stored(State::Pending)))
        .and_where(Expr::col((d.clone(), D::NextAttemptTime)).lte(now))
        .and_where(Expr::col((d.clone(), D::EndpointId)).in_subquery(enabled))
        .and_where(Expr::exists(earlier_pending).not())
        .order_by((d.clone(), D::NextAttemptTime), sea_orm::Order::Asc);
    if !busy.is_empty() {
        due.and_where(Expr::col((d.clone(), D::EndpointId)).is_not_in(busy.iter().cloned()));
    }
    // A read first, so a replica with nothing due never takes the writer.
    let probe = due.clone().limit(1).to_owned();
    if store.connection().query_one(&probe).await?.is_none() {
        return Ok(Vec::new());
    }
    due.limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    let write = store.begin_write().await?;
    let claimed = webhook_delivery::Entity::update_many()
        .col_expr(D::Attempts, Expr::col(D::Attempts).add(1))
        .col_expr(D::NextAttemptTime, Expr::val(lease_end))
        .filter(D::Id.in_subquery(due.to_owned()))
        .exec_with_returning(&write.tx)
        .await?;
    write.commit().await?;
    Ok(claimed)
}

/// What one attempt of a delivery came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery: webhook_delivery::Model,
    pub attempt: webhook_attempt::Model,
    /// 2xx.
    pub delivered: bool,
    /// When to try again; `None` after the last attempt of the schedule (dead letter).
    pub retry_at: Option<i64>,
}

/// Records attempts: delivered, due again, or dead.
pub async fn finish(store: &Store, outcomes: &[Outcome]) -> Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let write = store.begin_write().await?;
    let tx = &write.tx;
    // Only attempts of deliveries still kept: an endpoint deleted meanwhile took its
    // deliveries with it (on PostgreSQL its row lock orders the two).
    let mut live = HashSet::new();
    let endpoints: BTreeSet<&str> = outcomes
        .iter()
        .map(|o| o.delivery.endpoint_id.as_str())
        .collect();
    if is_postgres(tx) {
        webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Id.is_in(endpoints.iter().copied()))
            .lock(LockType::Share)
            .all(tx)
            .await?;
    }
    for chunk in outcomes.chunks(INSERT_CHUNK) {
        let ids = chunk.iter().map(|o| o.delivery.id.as_str());
        let kept: Vec<String> = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::Id)
            .filter(webhook_delivery::Column::Id.is_in(ids))
            .into_tuple()
            .all(tx)
            .await?;
        live.extend(kept);
    }
    let outcomes: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| live.contains(&o.delivery.id))
        .collect();
    for chunk in outcomes.chunks(INSERT_CHUNK) {
        webhook_attempt::Entity::insert_many(
            chunk
                .iter()
                .map(|o| webhook_attempt::ActiveModel::from(o.attempt.clone())),
        )
        .on_conflict(
            OnConflict::columns([
                webhook_attempt::Column::DeliveryId,
                webhook_attempt::Column::Attempt,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    }
    for outcome in &outcomes {
        let now = outcome.attempt.time + outcome.attempt.duration_micros;
        let (state, next, done) = match (outcome.delivered, outcome.retry_at) {
            (true, _) => (State::Delivered, now, Some(now)),
            (false, Some(at)) => (State::Pending, at, None),
            (false, None) => (State::Dead, now, Some(now)),
        };
        // Only the claim it answers: a replay meanwhile (attempts moved on) stands.
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::State, Expr::val(stored(state)))
            .col_expr(webhook_delivery::Column::NextAttemptTime, Expr::val(next))
            .col_expr(webhook_delivery::Column::DoneTime, Expr::val(done))
            .filter(webhook_delivery::Column::Id.eq(outcome.delivery.id.as_str()))
            .filter(webhook_delivery::Column::Attempts.eq(outcome.delivery.attempts))
            .exec(tx)
            .await?;
    }
    write.commit().await
}

/// The events of `deliveries` that are still kept, and their wallets' units, by id.
pub async fn events_of(
    conn: &impl ConnectionTrait,
    deliveries: &[webhook_delivery::Model],
) -> Result<(HashMap<String, event::Model>, HashMap<String, String>)> {
    let ids: Vec<String> = deliveries.iter().map(|d| d.event_id.clone()).collect();
    let events: HashMap<String, event::Model> = event::Entity::find()
        .filter(event::Column::Id.is_in(ids))
        .all(conn)
        .await?
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let wallet_ids: Vec<String> = events
        .values()
        .filter(|e| !e.wallet_id.is_empty())
        .map(|e| e.wallet_id.clone())
        .collect();
    let units = wallet::Entity::find()
        .select_only()
        .column(wallet::Column::Id)
        .column(wallet::Column::Unit)
        .filter(wallet::Column::Id.is_in(wallet_ids))
        .into_tuple::<(String, String)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    Ok((events, units))
}

/// Which deliveries a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Only(State),
}

/// One page of an endpoint's deliveries, newest first, each with its attempts (oldest
/// first).
#[allow(clippy::type_complexity)]
pub async fn deliveries(
    conn: &impl ConnectionTrait,
    endpoint_id: &str,
    filter: Filter,
    page: &Page,
) -> Result<(
    Vec<(webhook_delivery::Model, Vec<webhook_attempt::Model>)>,
    String,
)> {
    let mut query = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .order_by_desc(webhook_delivery::Column::Id);
    if let Filter::Only(state) = filter {
        query = query.filter(webhook_delivery::Column::State.eq(state));
    }
    if let Some(after) = &page.after {
        query = query.filter(webhook_delivery::Column::Id.lt(after.as_str()));
    }
    let rows = query.limit(page.size + 1).all(conn).await?;
    let (rows, next) = pagination::finish("webhook_deliveries", rows, page, |d| d.id.clone());
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let mut attempts: HashMap<String, Vec<webhook_attempt::Model>> = HashMap::new();
    for attempt in webhook_attempt::Entity::find()
        .filter(webhook_attempt::Column::DeliveryId.is_in(ids))
        .order_by_asc(webhook_attempt::Column::Attempt)
        .all(conn)
        .await?
    {
        attempts
            .entry(attempt.delivery_id.clone())
            .or_default()
            .push(attempt);
    }
    Ok((
        rows.into_iter()
            .map(|d| {
                let tried = attempts.remove(&d.id).unwrap_or_default();
                (d, tried)
            })
            .collect(),
        next,
    ))
}

/// Which deliveries a replay sends again.
#[derive(Debug, Clone)]
pub enum Replay {
    One(String),
    /// Made in `[from, to)` (µs).
    Range {
        from: i64,
        to: i64,
    },
}

/// Sends deliveries of `endpoint_id` again (delivered and dead ones too): pending and due
/// at `now`, with a fresh retry schedule. Returns how many.
pub async fn replay(
    conn: &impl ConnectionTrait,
    endpoint_id: &str,
    which: &Replay,
    now: i64,
) -> Result<u64> {
    let mut update = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::State,
            Expr::val(stored(State::Pending)),
        )
        .col_expr(webhook_delivery::Column::NextAttemptTime, Expr::val(now))
        .col_expr(webhook_delivery::Column::DoneTime, Expr::val(None::<i64>))
        .col_expr(
            webhook_delivery::Column::RetryBase,
            Expr::col(webhook_delivery::Column::Attempts),
        )
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id));
    match which {
        Replay::One(id) => {
            let found = webhook_delivery::Entity::find_by_id(id.as_str())
                .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
                .one(conn)
                .await?;
            if found.is_none() {
                return Err(Error::not_found("webhook delivery", id));
            }
            update = update.filter(webhook_delivery::Column::Id.eq(id.as_str()));
        }
        Replay::Range { from, to } => {
            update = update
                .filter(webhook_delivery::Column::CreateTime.gte(*from))
                .filter(webhook_delivery::Column::CreateTime.lt(*to));
        }
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Deletes deliveries made before `before` (µs) that are no longer pending, with their
/// attempts, a chunk per write transaction; returns how many deliveries.
pub async fn prune(store: &Store, before: i64) -> Result<u64> {
    let cutoff = format!("whd_{:012x}", Ord::max(before / 1000, 0));
    let mut deleted = 0;
    loop {
        let write = store.begin_write().await?;
        let ids: Vec<String> = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::Id)
            .filter(webhook_delivery::Column::Id.lt(cutoff.as_str()))
            .filter(webhook_delivery::Column::State.ne(State::Pending))
            .limit(PRUNE_CHUNK)
            .into_tuple()
            .all(&write.tx)
            .await?;
        if ids.is_empty() {
            write.tx.rollback().await?;
            return Ok(deleted);
        }
        webhook_attempt::Entity::delete_many()
            .filter(webhook_attempt::Column::DeliveryId.is_in(ids.iter().cloned()))
            .exec(&write.tx)
            .await?;
        webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::Id.is_in(ids.iter().cloned()))
            .exec(&write.tx)
            .await?;
        write.commit().await?;
        deleted += ids.len() as u64;
        if (ids.len() as u64) < PRUNE_CHUNK {
            return Ok(deleted);
        }
    }
}

/// A delivery state's stored name (for queries built by hand).
fn stored(state: State) -> String {
    sea_orm::ActiveEnum::to_value(&state)
}

/// The error when an endpoint is not found, or not in the caller's scope.
pub fn not_found(id: &str) -> Error {
    Error::not_found("webhook endpoint", id)
}

/// Refuses a URL allot will not send to (see `webhooks::target`).
pub fn bad_url(why: impl Into<String>) -> Error {
    Error::invalid(Reason::InvalidField, "endpoint.url", why.into())
}
