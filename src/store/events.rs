//! Balance events: the transactional outbox. The ledger writes a wallet's events in the
//! batch that causes them (`ledger/eval.rs`: `Loaded::emit`, numbered 1, 2, 3 … per wallet
//! under the wallet's lock, so a wallet's numbers have no gaps and commit in order); this
//! file reads them back, and wakes the watchers of this process when a batch with events
//! is durable ([`Bus`]). Watchers of other replicas find them by polling (`api::watch`).

use std::sync::Arc;

use sea_orm::{
    Condition, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    Select,
    prelude::*,
    sea_query::{ExprTrait, Order, Query},
};
use tokio::sync::broadcast;

use crate::{
    error::Result,
    store::{
        Store,
        entity::{event, wallet},
    },
};

/// How long events are kept unless configured (`serve --event-retention`).
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Events deleted per write transaction when pruning.
const PRUNE_CHUNK: u64 = 1_000;

/// How many batches' notices a slow watcher may miss before it is told it lagged (it then
/// reads its wallet again: nothing is lost, the notice only saves a poll).
const NOTICES: usize = 1024;

/// Wakes this process's watchers: each durable batch with events sends the ids of the
/// wallets it wrote events of.
#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<Arc<[String]>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            sender: broadcast::Sender::new(NOTICES),
        }
    }
}

impl Bus {
    /// Whether any watch of this process listens (else a batch need not name its wallets).
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[String]>> {
        self.sender.subscribe()
    }

    pub(crate) fn publish(&self, wallets: Arc<[String]>) {
        // No receiver: nobody is watching.
        let _ = self.sender.send(wallets);
    }
}

/// A wallet's balances as an event records them (µ-units); `available` follows from them
/// as `domain::WalletState::available` has it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balances {
    pub posted: i64,
    pub reserved: i64,
    pub overdraft_limit: i64,
}

impl Balances {
    /// As the wallet row stores them.
    pub fn stored(wallet: &wallet::Model) -> Self {
        Balances {
            posted: wallet.posted,
            reserved: wallet.reserved,
            overdraft_limit: wallet.overdraft_limit,
        }
    }

    pub fn available(&self) -> i64 {
        self.posted
            .saturating_sub(self.reserved)
            .saturating_add(self.overdraft_limit)
    }
}

/// What an event is about, and where it stands (every event is made here).
pub struct Subject<'a> {
    /// Empty for events of no wallet (`rate_card.published`).
    pub wallet_id: &'a str,
    pub account_id: &'a str,
    /// The wallet's number for it (a card's version for a card).
    pub sequence: i64,
    pub balances: Balances,
}

/// An event of `subject` at `time` (µs) with its `data`.
pub fn event(
    subject: Subject<'_>,
    event_type: event::EventType,
    time: i64,
    data: &[(&str, String)],
) -> event::Model {
    let balances = subject.balances;
    event::Model {
        id: new_id(time),
        wallet_id: subject.wallet_id.to_string(),
        account_id: subject.account_id.to_string(),
        sequence: subject.sequence,
        event_type,
        time,
        posted: balances.posted,
        reserved: balances.reserved,
        available: balances.available(),
        overdraft_limit: balances.overdraft_limit,
        data: event::StringMap(
            data.iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        ),
    }
}

/// The next event of a stored `wallet` (changes made outside ledger batches, after its
/// `event_seq` was moved on; the ledger numbers its own in `ledger/eval.rs`).
pub fn of_wallet(
    wallet: &wallet::Model,
    event_type: event::EventType,
    time: i64,
    data: &[(&str, String)],
) -> event::Model {
    let subject = Subject {
        wallet_id: &wallet.id,
        account_id: &wallet.account_id,
        sequence: wallet.event_seq,
        balances: Balances::stored(wallet),
    };
    event(
        subject,
        event_type,
        Ord::max(time, wallet.last_entry_time),
        data,
    )
}

/// The events after each `(wallet, number)`, by wallet and then number, at most `limit` in
/// all (one query for many wallets).
pub async fn after_each(
    conn: &impl ConnectionTrait,
    from: &[(&str, i64)],
    limit: u64,
) -> Result<Vec<event::Model>> {
    if from.is_empty() {
        return Ok(Vec::new());
    }
    Ok(after_each_query(from, limit).all(conn).await?)
}

/// What the webhook fan-out needs of an event: not its balances, not its data.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Header {
    pub id: String,
    pub wallet_id: String,
    pub account_id: String,
    pub sequence: i64,
    pub event_type: event::EventType,
    pub time: i64,
}

/// [`after_each`], headers only.
pub async fn headers_after_each(
    conn: &impl ConnectionTrait,
    from: &[(&str, i64)],
    limit: u64,
) -> Result<Vec<Header>> {
    if from.is_empty() {
        return Ok(Vec::new());
    }
    use event::Column as C;
    Ok(after_each_query(from, limit)
        .select_only()
        .columns([
            C::Id,
            C::WalletId,
            C::AccountId,
            C::Sequence,
            C::EventType,
            C::Time,
        ])
        .into_model::<Header>()
        .all(conn)
        .await?)
}

fn after_each_query(from: &[(&str, i64)], limit: u64) -> Select<event::Entity> {
    let any = from
        .iter()
        .fold(Condition::any(), |any, (wallet_id, after)| {
            any.add(
                Condition::all()
                    .add(event::Column::WalletId.eq(*wallet_id))
                    .add(event::Column::Sequence.gt(*after)),
            )
        });
    event::Entity::find()
        .filter(any)
        .order_by_asc(event::Column::WalletId)
        .order_by_asc(event::Column::Sequence)
        .limit(limit)
}

/// The number of the wallet's oldest event still kept (`None`: it has none).
pub async fn oldest(conn: &impl ConnectionTrait, wallet_id: &str) -> Result<Option<i64>> {
    Ok(event::Entity::find()
        .select_only()
        .column(event::Column::Sequence)
        .filter(event::Column::WalletId.eq(wallet_id))
        .order_by_asc(event::Column::Sequence)
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

/// The number of the wallet's latest event (0: none yet).
pub async fn latest(conn: &impl ConnectionTrait, wallet_id: &str) -> Result<Option<i64>> {
    Ok(wallet::Entity::find_by_id(wallet_id)
        .select_only()
        .column(wallet::Column::EventSeq)
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

/// A time in an event's data or payload: RFC 3339 in UTC, as precise as it needs to be.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A new event id: `evt_` and a UUIDv7 of the event's own time (the ledger's clock), so ids
/// sort by event time to the millisecond — and a wallet's events, whose times never go
/// back, are pruned oldest first with no hole in what is kept.
pub fn new_id(micros: i64) -> String {
    let micros = u64::try_from(micros).unwrap_or(0);
    let time = uuid::Timestamp::from_unix(
        uuid::NoContext,
        micros / 1_000_000,
        (micros % 1_000_000) as u32 * 1_000,
    );
    format!("evt_{}", uuid::Uuid::new_v7(time).simple())
}

/// The smallest event id made at `micros` or later: a UUIDv7's first twelve hex digits are
/// the milliseconds since the Unix epoch.
fn first_id_at(micros: i64) -> String {
    format!("evt_{:012x}{}", Ord::max(micros / 1000, 0), "0".repeat(20))
}

/// Deletes the events made before `before` (µs), oldest first through the primary key, a
/// chunk per write transaction; returns how many. Replicas may prune at the same time.
///
/// A wallet's events are cut at one millisecond, so what it keeps is a run of numbers up
/// to its latest; a watch that meets a hole all the same says the events are no longer
/// kept (`api/watch.rs`).
pub async fn prune(store: &Store, before: i64) -> Result<u64> {
    let cutoff = first_id_at(before);
    // A read first, so a replica with nothing to prune never takes the writer.
    let due = event::Entity::find()
        .select_only()
        .column(event::Column::Id)
        .filter(event::Column::Id.lt(cutoff.as_str()))
        .into_tuple::<String>()
        .one(store.connection())
        .await?;
    if due.is_none() {
        return Ok(0);
    }
    let oldest = Query::select()
        .column(event::Column::Id)
        .from(event::Entity)
        .and_where(Expr::col(event::Column::Id).lt(cutoff.as_str()))
        .order_by(event::Column::Id, Order::Asc)
        .limit(PRUNE_CHUNK)
        .to_owned();
    let delete = Query::delete()
        .from_table(event::Entity)
        .and_where(Expr::col(event::Column::Id).in_subquery(oldest))
        .to_owned();
    store.delete_in_chunks(&delete, PRUNE_CHUNK).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_id_sorts_between_the_ids_made_before_and_after_it() {
        let at = 1_764_000_000_123_456; // µs
        let cut = first_id_at(at);
        let id = |micros: i64| new_id(micros);
        assert!(id(at - 1000) < cut);
        assert!(id(at - 456) >= cut, "the same millisecond");
        assert!(id(at + 1000) > cut);
        assert!(id(at) < id(at + 1000));
        assert!(id(0) >= first_id_at(0));
        assert!(
            id(-5) >= first_id_at(0),
            "before the epoch reads as the epoch"
        );
    }
}
