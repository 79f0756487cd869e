//! Statements: the opening balance at `start`, every movement in [start, end), the closing
//! balance at `end`. Built from the ledger alone, so it always reconciles: each entry records
//! its signed effect (`delta`) and the balance after it, and the entries of a wallet are in
//! time order (every write first applies what fell due before it).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Order};

use super::{Store, entity::transaction, entries, ledger};
use crate::{
    domain::{Amount, amount::format_decimal},
    error::{Error, Reason, Result},
};

/// One kind's movements in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    pub count: i64,
    /// Σ delta of the kind's entries, in micro-units (wider than a balance: a window's
    /// grants can add up beyond what one balance may hold).
    pub units: i128,
    pub money: BTreeMap<String, Decimal>,
}

#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub opening: Amount,
    pub closing: Amount,
    pub opening_money: BTreeMap<String, Decimal>,
    pub closing_money: BTreeMap<String, Decimal>,
    /// By kind (GRANT, DEBIT, …).
    pub lines: BTreeMap<String, Line>,
    pub movements: Vec<transaction::Model>,
}

/// Signed money of an entry per currency.
fn money_of(entry: &transaction::Model) -> Result<BTreeMap<String, Decimal>> {
    let sign = Decimal::from(entry.delta.signum());
    let mut out = BTreeMap::new();
    for burn in entry
        .burns
        .0
        .iter()
        .filter(|b| !b.currency.is_empty() && !b.money.is_empty())
    {
        let value: Decimal = burn.money.parse().map_err(|_| {
            Error::internal(format!(
                "entry `{}` has an unreadable money value",
                entry.id
            ))
        })?;
        add(&mut out, &burn.currency, value * sign)?;
    }
    Ok(out)
}

fn add(into: &mut BTreeMap<String, Decimal>, currency: &str, value: Decimal) -> Result<()> {
    let total = into.entry(currency.to_string()).or_default();
    *total = total.checked_add(value).ok_or_else(out_of_range)?;
    Ok(())
}

fn add_money(into: &mut BTreeMap<String, Decimal>, from: &BTreeMap<String, Decimal>) -> Result<()> {
    for (currency, value) in from {
        add(into, currency, *value)?;
    }
    Ok(())
}

fn out_of_range() -> Error {
    Error::new(
        tonic::Code::OutOfRange,
        Reason::StatementOutOfRange,
        "the statement's totals exceed what a decimal holds; ask for a shorter window",
    )
}

pub fn format_money(money: &BTreeMap<String, Decimal>) -> Vec<(String, String)> {
    money
        .iter()
        .map(|(c, v)| (c.clone(), format_decimal(*v)))
        .collect()
}

/// The statement of `wallet_id` for [start, end), read in one snapshot of the database
/// (nothing is written). Entries for what fell due by `now` but the sweeper has not recorded
/// yet are included, without id (`ledger::pending_entries`), so the statement is complete.
pub async fn build(
    store: &Store,
    wallet_id: &str,
    start: i64,
    end: i64,
    now: i64,
) -> Result<Statement> {
    let tx = store.read_snapshot().await?;
    let result = read(&tx, wallet_id, start, end, now).await;
    tx.rollback().await?;
    result
}

async fn read(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    start: i64,
    end: i64,
    now: i64,
) -> Result<Statement> {
    let mut entries = entries::in_ledger_order(
        transaction::Entity::find()
            .filter(transaction::Column::WalletId.eq(wallet_id))
            .filter(transaction::Column::CreateTime.lt(end)),
        Order::Asc,
    )
    .all(conn)
    .await?;
    entries.extend(
        ledger::pending_entries(conn, wallet_id, now)
            .await?
            .into_iter()
            .filter(|entry| entry.create_time < end),
    );
    let mut statement = Statement::default();
    let mut running: i128 = 0;
    for entry in entries {
        let money = money_of(&entry)?;
        running += i128::from(entry.delta);
        if running != i128::from(entry.balance_after) {
            return Err(Error::internal(format!(
                "ledger of wallet {wallet_id} does not reconcile at entry {}",
                entry.id
            )));
        }
        if entry.create_time < start {
            statement.opening = Amount::from_micros(entry.balance_after);
            add_money(&mut statement.opening_money, &money)?;
            continue;
        }
        let line = statement
            .lines
            .entry(entry.kind.as_str().to_string())
            .or_default();
        line.count += 1;
        line.units += i128::from(entry.delta);
        add_money(&mut line.money, &money)?;
        add_money(&mut statement.closing_money, &money)?;
        statement.closing = Amount::from_micros(entry.balance_after);
        statement.movements.push(entry);
    }
    if statement.movements.is_empty() {
        statement.closing = statement.opening;
    }
    let opening = statement.opening_money.clone();
    add_money(&mut statement.closing_money, &opening)?;
    Ok(statement)
}
