//! Statements: the opening balance at `start`, every movement in [start, end), the closing
//! balance at `end`. Built from the ledger alone, so it always reconciles: each entry records
//! its signed effect (`delta`) and the balance after it, and the entries of a wallet are in
//! time order (every write first applies what fell due before it).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::{entity::transaction, ledger::StoredBurn};
use crate::{
    domain::{Amount, amount::format_decimal},
    error::{Error, Result},
};

/// One kind's movements in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    pub count: i64,
    pub delta: i64,
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
fn money_of(entry: &transaction::Model) -> BTreeMap<String, Decimal> {
    let burns: Vec<StoredBurn> = serde_json::from_str(&entry.burns).unwrap_or_default();
    let sign = Decimal::from(entry.delta.signum());
    let mut out = BTreeMap::new();
    for burn in burns.iter().filter(|b| !b.currency.is_empty()) {
        let value: Decimal = burn.money.parse().unwrap_or_default();
        *out.entry(burn.currency.clone()).or_default() += value * sign;
    }
    out
}

fn add_money(into: &mut BTreeMap<String, Decimal>, from: &BTreeMap<String, Decimal>) {
    for (currency, value) in from {
        *into.entry(currency.clone()).or_default() += *value;
    }
}

pub fn format_money(money: &BTreeMap<String, Decimal>) -> Vec<(String, String)> {
    money
        .iter()
        .map(|(c, v)| (c.clone(), format_decimal(*v)))
        .collect()
}

pub async fn build(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    start: i64,
    end: i64,
) -> Result<Statement> {
    let before = transaction::Entity::find()
        .filter(transaction::Column::WalletId.eq(wallet_id))
        .filter(transaction::Column::CreateTime.lt(start))
        .order_by_asc(transaction::Column::Seq)
        .all(conn)
        .await?;
    let mut statement = Statement::default();
    if let Some(last) = before.last() {
        statement.opening = Amount::from_micros(last.balance_after);
    }
    for entry in &before {
        add_money(&mut statement.opening_money, &money_of(entry));
    }
    statement.movements = transaction::Entity::find()
        .filter(transaction::Column::WalletId.eq(wallet_id))
        .filter(transaction::Column::CreateTime.gte(start))
        .filter(transaction::Column::CreateTime.lt(end))
        .order_by_asc(transaction::Column::Seq)
        .all(conn)
        .await?;
    statement.closing_money = statement.opening_money.clone();
    let mut running = statement.opening.micros();
    for entry in &statement.movements {
        let line = statement.lines.entry(entry.kind.clone()).or_default();
        line.count += 1;
        line.delta += entry.delta;
        let money = money_of(entry);
        add_money(&mut line.money, &money);
        add_money(&mut statement.closing_money, &money);
        running += entry.delta;
        if running != entry.balance_after {
            return Err(Error::internal(format!(
                "ledger of wallet {wallet_id} does not reconcile at entry {}",
                entry.id
            )));
        }
    }
    statement.closing = Amount::from_micros(running);
    Ok(statement)
}
