//! Exports: the ledger entries a filter selects, read from one snapshot of the database and
//! handed on a chunk at a time, so memory stays bounded whatever their number.
//!
//! Cost: entries are read in `seq` order (the primary key) with the filter applied as they are
//! read, one chunk per query, each query starting after the last `seq` sent — the whole
//! export reads each entry of the ledger at most once. One wallet reads a range of its
//! `(wallet_id, create_time, seq)` index instead (`store::entries`), in the same order. A time window or kind list narrows what is sent, not
//! what is read.

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, LikeExpr, Order, Query},
};
use tokio::sync::mpsc;

use super::{
    accounts::escape_like,
    entity::{account, transaction},
    entries::{self, Position},
    snapshot,
};
use crate::{domain::MovementKind, error::Result};

/// Entries per chunk.
pub const CHUNK: u64 = 500;

/// Whose entries an export covers.
#[derive(Debug, Clone)]
pub enum Covers {
    /// One wallet.
    Wallet(String),
    /// These accounts only.
    Accounts(Vec<String>),
    /// These accounts and every account below them.
    Subtrees(Vec<String>),
    /// Every account.
    All,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub covers: Covers,
    /// Half-open window on `create_time`.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<MovementKind>,
}

impl Filter {
    fn condition(&self) -> Condition {
        let mut all = Condition::all();
        all = match &self.covers {
            Covers::Wallet(id) => all.add(transaction::Column::WalletId.eq(id.as_str())),
            Covers::Accounts(ids) => all.add(transaction::Column::AccountId.is_in(ids.clone())),
            Covers::Subtrees(roots) => {
                let mut below = Condition::any();
                for root in roots {
                    let pattern = format!("%/{}/%", escape_like(root));
                    below = below.add(
                        Expr::col(account::Column::Ancestry)
                            .like(LikeExpr::new(pattern).escape('\\')),
                    );
                }
                all.add(
                    transaction::Column::AccountId.in_subquery(
                        Query::select()
                            .column(account::Column::Id)
                            .from(account::Entity)
                            .cond_where(below)
                            .to_owned(),
                    ),
                )
            }
            Covers::All => all,
        };
        if let Some(start) = self.start {
            all = all.add(transaction::Column::CreateTime.gte(start));
        }
        if let Some(end) = self.end {
            all = all.add(transaction::Column::CreateTime.lt(end));
        }
        if !self.kinds.is_empty() {
            all = all.add(transaction::Column::Kind.is_in(self.kinds.iter().copied()));
        }
        all
    }
}

/// Sends the entries `filter` selects to `out`, oldest first, in chunks of at most [`CHUNK`],
/// all read from one snapshot. Stops early, without error, when `out` is closed (the reader
/// went away); a failure is sent as the last item.
pub async fn export(
    db: DatabaseConnection,
    filter: Filter,
    out: mpsc::Sender<Result<Vec<transaction::Model>>>,
) {
    if let Err(err) = export_in_snapshot(&db, &filter, &out).await {
        let _ = out.send(Err(err)).await;
    }
}

async fn export_in_snapshot(
    db: &DatabaseConnection,
    filter: &Filter,
    out: &mpsc::Sender<Result<Vec<transaction::Model>>>,
) -> Result<()> {
    let tx = snapshot(db).await?;
    let condition = filter.condition();
    let one_wallet = matches!(filter.covers, Covers::Wallet(_));
    let mut after: Option<Position> = None;
    loop {
        let query = transaction::Entity::find().filter(condition.clone());
        // One wallet: a range of its index, in its ledger order (its seq order). Otherwise
        // seq order, by the primary key.
        let query = match (one_wallet, after) {
            (true, None) => entries::in_ledger_order(query, Order::Asc),
            (true, Some(position)) => {
                entries::in_ledger_order(query.filter(position.after()), Order::Asc)
            }
            (false, None) => query.order_by_asc(transaction::Column::Seq),
            (false, Some(position)) => query
                .filter(transaction::Column::Seq.gt(position.seq))
                .order_by_asc(transaction::Column::Seq),
        };
        let rows = query.limit(CHUNK).all(&tx).await?;
        let full = rows.len() as u64 == CHUNK;
        after = rows.last().map(Position::of);
        if !rows.is_empty() && out.send(Ok(rows)).await.is_err() {
            break;
        }
        if !full {
            break;
        }
    }
    tx.rollback().await?;
    Ok(())
}
