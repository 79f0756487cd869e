//! Rate cards: drafts, publishing, and which card is in force at a time.
//!
//! The card in force at `t` is the PUBLISHED card with the latest `effective_time ≤ t` (ties:
//! the higher version). Publishing locks the one `rate_card_head` row FOR UPDATE and ledger
//! batches read it FOR SHARE, so on PostgreSQL a debit commits either entirely before a
//! publish (old card) or after it (new card) — never priced with a card no longer in force.

use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement,
    sea_query::{Expr, ExprTrait, Query},
};
use sha2::{Digest, Sha256};

use super::{
    audit,
    columns::{Rates, json_text},
    entity::{event, rate_card, rate_card_head},
    events, is_postgres,
    pagination::{self, Page},
};
use crate::{
    domain::{CardState, Rate},
    error::{Error, Reason, Result},
};

pub const DRAFT: CardState = CardState::Draft;
pub const PUBLISHED: CardState = CardState::Published;

/// Publishing may name a moment at most this far in the past (clock skew between client and
/// server); anything earlier is rejected.
pub const PAST_TOLERANCE_MICROS: i64 = 5_000_000;

/// A stored card (its rates typed, see `store::columns`).
pub type Card = rate_card::Model;

impl rate_card::Model {
    pub fn rates(&self) -> &[Rate] {
        &self.rates.0
    }

    pub fn rate(&self, request_type: &str) -> Option<&Rate> {
        self.rates().iter().find(|r| r.request_type == request_type)
    }
}

fn etag(rates: &Rates, notes: &str, state: CardState, effective_time: Option<i64>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(json_text(rates).as_bytes());
    hasher.update([0]);
    hasher.update(notes.as_bytes());
    hasher.update([0]);
    hasher.update(state.to_value().as_bytes());
    hasher.update(effective_time.unwrap_or_default().to_le_bytes());
    hex::encode(&hasher.finalize()[..12])
}

pub async fn create_draft(
    conn: &impl ConnectionTrait,
    rates: &[Rate],
    notes: &str,
    now: i64,
) -> Result<Card> {
    let rates = Rates(rates.to_vec());
    let model = rate_card::ActiveModel {
        state: Set(DRAFT),
        etag: Set(etag(&rates, notes, DRAFT, None)),
        effective_time: Set(None),
        rates: Set(rates),
        notes: Set(notes.to_string()),
        create_time: Set(now),
        publish_time: Set(None),
        ..Default::default()
    };
    Ok(model.insert(conn).await?)
}

/// Locks the head row: FOR UPDATE when publishing, FOR SHARE when pricing (PostgreSQL only;
/// SQLite has one writer at a time). Returns the publish generation. Written out rather than
/// `find_by_id(1).one()`, whose `LIMIT ?` makes SQLite re-prepare the statement every time
/// it is bound — once per ledger batch.
pub async fn lock_head(conn: &impl ConnectionTrait, exclusive: bool) -> Result<i64> {
    let sql = match (is_postgres(conn), exclusive) {
        (false, _) => "SELECT generation FROM rate_card_head WHERE id = 1",
        (true, false) => "SELECT generation FROM rate_card_head WHERE id = 1 FOR SHARE",
        (true, true) => "SELECT generation FROM rate_card_head WHERE id = 1 FOR UPDATE",
    };
    read_head(conn, sql).await
}

/// [`lock_head`] for a ledger batch (shared). On PostgreSQL the same statement turns off
/// whole-table scans for the rest of the batch's transaction: every read a batch makes is by
/// key, and on small tables the planner would rather scan the table and test each row
/// against the batch's id list, which costs far more CPU (docs/BENCHMARKS.md). One round trip
/// for both.
pub async fn lock_head_for_batch(conn: &impl ConnectionTrait) -> Result<i64> {
    if !is_postgres(conn) {
        return lock_head(conn, false).await;
    }
    read_head(
        conn,
        "SELECT generation, set_config('enable_seqscan', 'off', true) AS seqscan \
         FROM rate_card_head WHERE id = 1 FOR SHARE",
    )
    .await
}

async fn read_head(conn: &impl ConnectionTrait, sql: &'static str) -> Result<i64> {
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await?
        .ok_or_else(head_missing)?;
    Ok(row.try_get::<i64>("", "generation")?)
}

fn head_missing() -> Error {
    Error::internal("rate_card_head row missing")
}

/// Publishes draft `version` and records it in the audit trail (what it replaces at its
/// effective time → the card).
pub async fn publish(
    conn: &impl ConnectionTrait,
    version: i64,
    etag_given: &str,
    effective_time: Option<i64>,
    now_at: impl Fn() -> i64,
    actor: &audit::Actor,
) -> Result<Card> {
    lock_head(conn, true).await?;
    // Time is read after the lock: every debit that commits later sees this card.
    let now = now_at();
    let model = rate_card::Entity::find_by_id(version)
        .one(conn)
        .await?
        .ok_or_else(|| Error::not_found("rate card", &version.to_string()))?;
    if model.state != DRAFT {
        return Err(Error::precondition(
            Reason::RateCardNotDraft,
            format!("rate card {version} is already published"),
        )
        .with("version", version));
    }
    if model.etag != etag_given {
        return Err(Error::precondition(
            Reason::StaleEtag,
            format!("rate card {version} has changed; read it again and publish its current etag"),
        )
        .with("version", version)
        .with("etag", &model.etag));
    }
    let effective = Ord::max(effective_time.unwrap_or(now), now);
    if effective_time.is_some_and(|t| t < now - PAST_TOLERANCE_MICROS) {
        return Err(Error::invalid(
            Reason::EffectiveTimeInPast,
            "effective_time",
            "may not lie in the past",
        ));
    }
    let replaced = in_force(conn, effective).await?;
    let new_etag = etag(&model.rates, &model.notes, PUBLISHED, Some(effective));
    let mut active: rate_card::ActiveModel = model.into();
    active.state = Set(PUBLISHED);
    active.effective_time = Set(Some(effective));
    active.publish_time = Set(Some(now));
    active.etag = Set(new_etag);
    let model = active.update(conn).await?;
    bump_generation(conn).await?;
    // Not a wallet's: numbered by the card's version (unique, as `(wallet_id, sequence)` is).
    let subject = events::Subject {
        wallet_id: "",
        account_id: "",
        sequence: version,
        balances: Default::default(),
    };
    let effective_text = events::rfc3339(effective);
    let data = [
        ("version", version.to_string()),
        ("effective_time", effective_text),
    ];
    event::ActiveModel::from(events::event(
        subject,
        event::EventType::RateCardPublished,
        now,
        &data,
    ))
    .insert(conn)
    .await?;
    audit::record(
        conn,
        audit::event(
            audit::RATE_CARD_PUBLISHED,
            format!("rate_cards/{version}"),
            None,
            actor,
            now,
            replaced.as_ref().map(audit::card_json),
            Some(audit::card_json(&model)),
        ),
    )
    .await?;
    Ok(model)
}

/// Moves the head's generation on (the caller holds it exclusively): every process reloads
/// its cards and overrides before its next batch prices anything.
pub async fn bump_generation(conn: &impl ConnectionTrait) -> Result<()> {
    conn.execute(
        Query::update()
            .table(rate_card_head::Entity)
            .value(
                rate_card_head::Column::Generation,
                Expr::col(rate_card_head::Column::Generation).add(1),
            )
            .and_where(rate_card_head::Column::Id.eq(1)),
    )
    .await?;
    Ok(())
}

pub async fn in_force(conn: &impl ConnectionTrait, at: i64) -> Result<Option<Card>> {
    let model = rate_card::Entity::find()
        .filter(rate_card::Column::State.eq(PUBLISHED))
        .filter(rate_card::Column::EffectiveTime.lte(at))
        .order_by_desc(rate_card::Column::EffectiveTime)
        .order_by_desc(rate_card::Column::Version)
        .one(conn)
        .await?;
    Ok(model)
}

/// Every published card, kept in memory per publish generation. A ledger batch reads the
/// generation from the head row it has just locked FOR SHARE; a publish (on any replica)
/// bumps it under FOR UPDATE. So a batch either sees the generation it cached — and no
/// publish can commit until the batch does — or reloads: the cache can never price with a
/// card other than the one in force.
#[derive(Clone, Default)]
pub struct CardCache {
    inner: std::sync::Arc<std::sync::Mutex<Option<CachedCards>>>,
}

/// A publish generation and the published cards as of it.
type CachedCards = (i64, std::sync::Arc<Vec<Card>>);

impl CardCache {
    /// The published cards as of `generation`, loading them if the cache is older.
    pub async fn published(
        &self,
        conn: &impl ConnectionTrait,
        generation: i64,
    ) -> Result<std::sync::Arc<Vec<Card>>> {
        if let Ok(guard) = self.inner.lock()
            && let Some((cached, cards)) = guard.as_ref()
            && *cached == generation
        {
            return Ok(cards.clone());
        }
        let cards: Vec<Card> = rate_card::Entity::find()
            .filter(rate_card::Column::State.eq(PUBLISHED))
            .order_by_asc(rate_card::Column::Version)
            .all(conn)
            .await?;
        let cards = std::sync::Arc::new(cards);
        if let Ok(mut guard) = self.inner.lock() {
            *guard = Some((generation, cards.clone()));
        }
        Ok(cards)
    }
}

/// The card in force at `at` among published cards (same rule as [`in_force`]).
pub fn in_force_among(cards: &[Card], at: i64) -> Option<&Card> {
    cards
        .iter()
        .filter(|c| c.effective_time.is_some_and(|t| t <= at))
        .max_by_key(|c| (c.effective_time, c.version))
}

/// The cards of `versions` (reports name the cards that priced their requests).
pub async fn by_versions(
    conn: &impl ConnectionTrait,
    versions: impl IntoIterator<Item = i64>,
) -> Result<std::collections::BTreeMap<i64, Card>> {
    let versions: std::collections::BTreeSet<i64> =
        versions.into_iter().filter(|v| *v > 0).collect();
    if versions.is_empty() {
        return Ok(Default::default());
    }
    Ok(rate_card::Entity::find()
        .filter(rate_card::Column::Version.is_in(versions))
        .all(conn)
        .await?
        .into_iter()
        .map(|card| (card.version, card))
        .collect())
}

pub async fn get(conn: &impl ConnectionTrait, version: i64) -> Result<Option<Card>> {
    let model = rate_card::Entity::find_by_id(version).one(conn).await?;
    Ok(model)
}

/// Newest version first; drafts only with `drafts`.
pub async fn list(
    conn: &impl ConnectionTrait,
    page: &Page,
    drafts: bool,
) -> Result<(Vec<Card>, String)> {
    let mut query = rate_card::Entity::find().order_by_desc(rate_card::Column::Version);
    if !drafts {
        query = query.filter(rate_card::Column::State.ne(DRAFT));
    }
    if let Some(after) = page.after_number()? {
        query = query.filter(rate_card::Column::Version.lt(after));
    }
    let rows = query.limit(page.size + 1).all(conn).await?;
    let (rows, next) = pagination::finish("rate_cards", rows, page, |c| c.version.to_string());
    Ok((rows, next))
}

/// A published card is SUPERSEDED once a later card is in force.
pub fn is_superseded(card: &rate_card::Model, current: Option<&rate_card::Model>) -> bool {
    match (card.state, card.effective_time, current) {
        (PUBLISHED, Some(effective), Some(current)) => {
            (effective, card.version)
                < (current.effective_time.unwrap_or_default(), current.version)
        }
        _ => false,
    }
}
