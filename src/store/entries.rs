//! Reading a wallet's ledger entries through the one index on them,
//! `transactions_wallet_time_seq` `(wallet_id, create_time, seq)`.
//!
//! A wallet's entries are never dated before the one written before it (the ledger dates an
//! entry at least at the wallet's `last_entry_time`; `allot verify` checks it), so within a
//! wallet `(create_time, seq)` order is the order they were written in. Walks through a
//! wallet's ledger order by both columns and resume from a [`Position`], so every page is a
//! range of that index; reports read a time window of it.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DerivePartialModel, EntityTrait, PartialModelTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, sea_query::Order,
};

use super::{
    columns::{Burns, StringMap},
    entity::transaction,
};
use crate::{domain::MovementKind, error::Result};

/// Where an entry stands in its wallet's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub create_time: i64,
    pub seq: i64,
}

impl Position {
    pub fn of(entry: &transaction::Model) -> Position {
        Position {
            create_time: entry.create_time,
            seq: entry.seq,
        }
    }

    /// Entries after this one in ledger order: a range of the index from its time on.
    pub fn after(self) -> Condition {
        Condition::all()
            .add(transaction::Column::CreateTime.gte(self.create_time))
            .add(
                Condition::all()
                    .add(transaction::Column::CreateTime.eq(self.create_time))
                    .add(transaction::Column::Seq.lte(self.seq))
                    .not(),
            )
    }

    /// Entries before this one in ledger order: a range of the index up to its time.
    pub fn before(self) -> Condition {
        Condition::all()
            .add(transaction::Column::CreateTime.lte(self.create_time))
            .add(
                Condition::all()
                    .add(transaction::Column::CreateTime.eq(self.create_time))
                    .add(transaction::Column::Seq.gte(self.seq))
                    .not(),
            )
    }

    /// The position of entry `seq` if it is in `wallet_id`'s ledger (page tokens carry the
    /// `seq` of the last entry sent).
    pub async fn find(
        conn: &impl ConnectionTrait,
        wallet_id: &str,
        seq: i64,
    ) -> Result<Option<Position>> {
        let time: Option<i64> = transaction::Entity::find()
            .select_only()
            .column(transaction::Column::CreateTime)
            .filter(transaction::Column::Seq.eq(seq))
            .filter(transaction::Column::WalletId.eq(wallet_id))
            .into_tuple()
            .one(conn)
            .await?;
        Ok(time.map(|create_time| Position { create_time, seq }))
    }
}

/// `query` (of one wallet's entries) in ledger order, oldest first (`Order::Asc`) or newest.
pub fn in_ledger_order(
    query: Select<transaction::Entity>,
    order: Order,
) -> Select<transaction::Entity> {
    query
        .order_by(transaction::Column::CreateTime, order.clone())
        .order_by(transaction::Column::Seq, order)
}

/// Wallet ids per `IN` list.
const WALLETS_PER_QUERY: usize = 200;

/// What the reports read of an entry in a window (the chain, balances and request ids stay
/// in the database: fewer columns to copy and decode per entry).
#[derive(Debug, Clone, DerivePartialModel)]
#[sea_orm(entity = "transaction::Entity")]
pub struct Used {
    pub id: String,
    pub kind: MovementKind,
    pub account_id: String,
    pub units: i64,
    pub request_type: String,
    pub quantities: StringMap,
    pub rate_card_version: Option<i64>,
    pub burns: Burns,
    pub provider_cost: String,
    pub create_time: i64,
    pub ref_id: Option<String>,
}

/// [`Used`] with the entry's metadata (usage split by a metadata key).
#[derive(Debug, Clone, DerivePartialModel)]
#[sea_orm(entity = "transaction::Entity")]
pub struct WithMetadata {
    #[sea_orm(nested)]
    pub entry: Used,
    pub metadata: StringMap,
}

/// The entries of `kinds` that `wallets` recorded in [start, end), read a query per chunk of
/// wallets as rows `M` (cost: those entries, read by ranges of the index).
pub struct Window<'a, M = Used> {
    wallets: std::slice::Chunks<'a, String>,
    start: i64,
    end: i64,
    kinds: &'a [MovementKind],
    rows: std::marker::PhantomData<M>,
}

impl<'a, M: PartialModelTrait + Send + Sync> Window<'a, M> {
    pub fn new(wallets: &'a [String], (start, end): (i64, i64), kinds: &'a [MovementKind]) -> Self {
        Window {
            wallets: wallets.chunks(WALLETS_PER_QUERY),
            start,
            end,
            kinds,
            rows: std::marker::PhantomData,
        }
    }

    /// The next chunk of wallets' entries (`None` when all are read).
    pub async fn next(&mut self, conn: &impl ConnectionTrait) -> Result<Option<Vec<M>>> {
        let Some(chunk) = self.wallets.next() else {
            return Ok(None);
        };
        let entries = transaction::Entity::find()
            .filter(transaction::Column::WalletId.is_in(chunk.iter().cloned()))
            .filter(transaction::Column::CreateTime.gte(self.start))
            .filter(transaction::Column::CreateTime.lt(self.end))
            .filter(transaction::Column::Kind.is_in(self.kinds.iter().copied()))
            .into_partial_model::<M>()
            .all(conn)
            .await?;
        Ok(Some(entries))
    }
}
