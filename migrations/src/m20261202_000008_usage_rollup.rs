//! `usage_days`: what each wallet consumed per UTC day, request type, rate card version and
//! grant price — the rollup reports read instead of the ledger. The ledger batch keeps it in
//! the same transaction as the entries it sums (`store/ledger/write.rs`); this migration
//! builds it once from the entries already stored.
//!
//! A row holds the units burnt from grants at its price (net of refunds; empty price:
//! overdraft units), and the requests (debits and captures) whose first burn was there, with
//! how many carried a provider cost: a key's rows add up to its totals, money is
//! `units × unit_price` exactly, summed as the report reads it.
//!
//! Also `transactions_wallet_time`: a wallet's entries in a time window (reports that split
//! by metadata read those entries, not the whole ledger).

use std::collections::BTreeMap;

use sea_orm_migration::{prelude::*, schema::*, sea_orm::Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsageDays {
    Table,
    WalletId,
    Day,
    RequestType,
    RateCardVersion,
    Currency,
    UnitPrice,
    AccountId,
    Requests,
    Units,
    Costed,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    WalletId,
    CreateTime,
}

const DAY_MICROS: i64 = 86_400_000_000;

/// (wallet, day, request type, version, currency, unit price).
type Key = (String, i64, String, i64, String, String);

/// (account, requests, units, costed).
type Sums = (String, i64, i64, i64);

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UsageDays::Table)
                    .col(string_len(UsageDays::WalletId, 64))
                    .col(big_integer(UsageDays::Day))
                    .col(text(UsageDays::RequestType))
                    .col(big_integer(UsageDays::RateCardVersion))
                    .col(string_len(UsageDays::Currency, 16))
                    .col(text(UsageDays::UnitPrice))
                    .col(string_len(UsageDays::AccountId, 64))
                    .col(big_integer(UsageDays::Requests))
                    .col(big_integer(UsageDays::Units))
                    .col(big_integer(UsageDays::Costed))
                    .primary_key(
                        Index::create()
                            .col(UsageDays::WalletId)
                            .col(UsageDays::Day)
                            .col(UsageDays::RequestType)
                            .col(UsageDays::RateCardVersion)
                            .col(UsageDays::Currency)
                            .col(UsageDays::UnitPrice),
                    )
                    .to_owned(),
            )
            .await?;
        // PostgreSQL: rows are updated by every batch that touches their wallet; room left
        // in each page lets an update stay on its page without new index entries (HOT).
        crate::on_postgres(manager, "ALTER TABLE usage_days SET (fillfactor = 50)").await?;
        manager
            .create_index(
                Index::create()
                    .name("usage_days_account_day")
                    .table(UsageDays::Table)
                    .col(UsageDays::AccountId)
                    .col(UsageDays::Day)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("usage_days_day")
                    .table(UsageDays::Table)
                    .col(UsageDays::Day)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("transactions_wallet_time")
                    .table(Transactions::Table)
                    .col(Transactions::WalletId)
                    .col(Transactions::CreateTime)
                    .to_owned(),
            )
            .await?;
        backfill(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("transactions_wallet_time")
                    .table(Transactions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(UsageDays::Table).to_owned())
            .await
    }
}

/// Sums the stored debits, captures and refunds into `usage_days`, a page of entries at a
/// time (memory holds the sums, not the ledger). A refund counts under the day it was made
/// and the rate card version of the entry it refunds.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let backend = manager.get_database_backend();
    let mut sums: BTreeMap<Key, Sums> = BTreeMap::new();
    let mut after = 0i64;
    let placeholder = if backend == sea_orm_migration::sea_orm::DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    loop {
        let page = conn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    r#"SELECT t."seq", t."kind", t."wallet_id", t."account_id", t."units",
                    t."request_type", COALESCE(t."rate_card_version", o."rate_card_version", 0),
                    t."provider_cost", CAST(t."burns" AS TEXT), t."create_time"
                FROM "transactions" t
                LEFT JOIN "transactions" o ON t."kind" = 'REFUND' AND o."id" = t."ref_id"
                WHERE t."seq" > {placeholder} AND t."kind" IN ('DEBIT', 'CAPTURE', 'REFUND')
                ORDER BY t."seq" LIMIT 10000"#
                ),
                [after.into()],
            ))
            .await?;
        let Some(last) = page.last() else { break };
        after = last.try_get_by_index(0)?;
        for row in &page {
            let kind: String = row.try_get_by_index(1)?;
            let wallet: String = row.try_get_by_index(2)?;
            let account: String = row.try_get_by_index(3)?;
            let units: i64 = row.try_get_by_index(4)?;
            let request_type: String = row.try_get_by_index(5)?;
            let version: i64 = row.try_get_by_index(6)?;
            let provider_cost: String = row.try_get_by_index(7)?;
            let burns: String = row.try_get_by_index(8)?;
            let time: i64 = row.try_get_by_index(9)?;
            let refund = kind == "REFUND";
            let sign = if refund { -1 } else { 1 };
            let day = time.div_euclid(DAY_MICROS);
            let mut add = |currency: &str, price: &str, requests: i64, units: i64, costed: i64| {
                let key = (
                    wallet.clone(),
                    day,
                    request_type.clone(),
                    version,
                    currency.to_string(),
                    price.to_string(),
                );
                let sum = sums.entry(key).or_insert((account.clone(), 0, 0, 0));
                sum.1 = sum.1.saturating_add(requests);
                sum.2 = sum.2.saturating_add(units);
                sum.3 = sum.3.saturating_add(costed);
            };
            let mut requests = i64::from(!refund);
            let mut costed = i64::from(!refund && !provider_cost.is_empty());
            let burns: Vec<Burn> = serde_json::from_str(&burns)
                .map_err(|e| DbErr::Custom(format!("entry {after}: burns: {e}")))?;
            for burn in &burns {
                let micros = micros(&burn.units).ok_or_else(|| {
                    DbErr::Custom(format!("entry {after}: burn units `{}`", burn.units))
                })?;
                let (currency, price) = if burn.grant_id.is_empty() {
                    ("", "")
                } else {
                    (burn.currency.as_str(), burn.unit_price.as_str())
                };
                add(currency, price, requests, sign * micros, costed);
                (requests, costed) = (0, 0);
            }
            if burns.is_empty() {
                add("", "", requests, sign * units, costed);
            }
        }
    }
    let rows: Vec<_> = sums.into_iter().collect();
    for chunk in rows.chunks(500) {
        let mut insert = Query::insert();
        insert.into_table(UsageDays::Table).columns([
            UsageDays::WalletId,
            UsageDays::Day,
            UsageDays::RequestType,
            UsageDays::RateCardVersion,
            UsageDays::Currency,
            UsageDays::UnitPrice,
            UsageDays::AccountId,
            UsageDays::Requests,
            UsageDays::Units,
            UsageDays::Costed,
        ]);
        for ((wallet, day, request_type, version, currency, price), sum) in chunk {
            insert.values_panic([
                wallet.into(),
                (*day).into(),
                request_type.into(),
                (*version).into(),
                currency.into(),
                price.into(),
                sum.0.clone().into(),
                sum.1.into(),
                sum.2.into(),
                sum.3.into(),
            ]);
        }
        manager.exec_stmt(insert).await?;
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Burn {
    grant_id: String,
    units: String,
    unit_price: String,
    currency: String,
}

/// A stored amount ("12.5", at most 6 decimals) in micro-units.
fn micros(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let digit = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if fraction.len() > 6 || whole.is_empty() || !digit(whole) || !digit(fraction) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<6}").parse().ok()?;
    let value = whole.checked_mul(1_000_000)?.checked_add(fraction)?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::micros;

    #[test]
    fn amounts_read_exactly() {
        assert_eq!(micros("1.5"), Some(1_500_000));
        assert_eq!(micros("0.000001"), Some(1));
        assert_eq!(micros("-2"), Some(-2_000_000));
        assert_eq!(micros("9223372036854.775807"), Some(i64::MAX));
        assert_eq!(micros("1.0000001"), None);
        assert_eq!(micros("x"), None);
    }
}
