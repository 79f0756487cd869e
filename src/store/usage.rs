//! The daily usage rollup (`usage_days`): what each wallet consumed per UTC day, request
//! type, rate card version and grant price. The ledger batch adds each batch's increments in
//! the batch's own transaction (`store/ledger/write.rs`), so a report reading the rollup sees
//! exactly the committed ledger; `allot verify` recomputes it from the entries.

use std::collections::BTreeMap;

use chrono::Datelike;
use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IdenStatic, QueryFilter, QuerySelect,
    sea_query::Expr,
};

use crate::{
    domain::{
        MovementKind,
        wallet::{DAY_MICROS, day_of},
    },
    error::{Error, Result},
    store::{
        columns::StringMap,
        entity::{transaction, usage_day},
        entries, rate_cards,
    },
};

/// The usage rollup's increments for `entries`: debits and captures add their units, refunds
/// take theirs back (on the refund's own day, under the version of the entry they refund),
/// each on the row of the price of the grant the units came from (overdraft units: the row
/// without a price); a request (and whether it carried a provider cost) counts once, on the
/// row of its first burn. So the rows of a key add up to its totals, and most requests touch
/// one row. One row per key, the counters summed (saturating: a rollup never fails a batch).
pub fn increments(entries: &[transaction::Model]) -> Vec<usage_day::Model> {
    let mut rows = BTreeMap::new();
    for entry in entries {
        let sign = match entry.kind {
            MovementKind::Debit | MovementKind::Capture => 1,
            MovementKind::Refund => -1,
            _ => continue,
        };
        let mut request = usage_day::Model {
            requests: i64::from(sign > 0),
            costed: i64::from(sign > 0 && !entry.provider_cost.is_empty()),
            ..zero_row(entry, "", "")
        };
        for burn in &entry.burns.0 {
            let (currency, price) = if burn.grant_id.is_empty() {
                ("", "")
            } else {
                (burn.currency.as_str(), burn.unit_price.as_str())
            };
            add(
                &mut rows,
                usage_day::Model {
                    units: burn.units.micros().saturating_mul(sign),
                    requests: request.requests,
                    costed: request.costed,
                    ..zero_row(entry, currency, price)
                },
            );
            (request.requests, request.costed) = (0, 0);
        }
        if entry.burns.0.is_empty() {
            // Nothing burnt (a request of 0 units): the request still counts.
            add(&mut rows, request);
        }
    }
    rows.into_values().collect()
}

/// The rollup row `entry` counts in (counters at zero).
fn zero_row(entry: &transaction::Model, currency: &str, unit_price: &str) -> usage_day::Model {
    usage_day::Model {
        wallet_id: entry.wallet_id.clone(),
        day: day_of(entry.create_time),
        request_type: entry.request_type.clone(),
        rate_card_version: entry.rate_card_version.unwrap_or(0),
        currency: currency.to_string(),
        unit_price: unit_price.to_string(),
        account_id: entry.account_id.clone(),
        requests: 0,
        units: 0,
        costed: 0,
    }
}

pub type Key = (String, i64, String, i64, String, String);

pub fn key(row: &usage_day::Model) -> Key {
    (
        row.wallet_id.clone(),
        row.day,
        row.request_type.clone(),
        row.rate_card_version,
        row.currency.clone(),
        row.unit_price.clone(),
    )
}

pub fn add(rows: &mut BTreeMap<Key, usage_day::Model>, add: usage_day::Model) {
    let row = rows.entry(key(&add)).or_insert_with(|| usage_day::Model {
        requests: 0,
        units: 0,
        costed: 0,
        ..add.clone()
    });
    row.requests = row.requests.saturating_add(add.requests);
    row.units = row.units.saturating_add(add.units);
    row.costed = row.costed.saturating_add(add.costed);
}

/// Periods a usage report groups days into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    /// ISO weeks (Monday to Sunday, UTC).
    Week,
    Month,
}

impl Granularity {
    /// The start (micros) of the period holding `day`.
    pub fn period_start(self, day: i64) -> i64 {
        let first = match self {
            Granularity::Day => day,
            // 1970-01-01 was a Thursday: Monday is three days before.
            Granularity::Week => day - (day + 3).rem_euclid(7),
            Granularity::Month => {
                let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
                    .map(|t| t.date_naive())
                    .and_then(|d| d.with_day(1));
                match date {
                    Some(first) => first
                        .and_hms_opt(0, 0, 0)
                        .map_or(day, |t| t.and_utc().timestamp().div_euclid(86_400)),
                    None => day,
                }
            }
        };
        first.saturating_mul(DAY_MICROS)
    }
}

/// One line of a usage report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageLine {
    pub period_start: i64,
    pub account_id: String,
    pub request_type: String,
    pub metadata_value: String,
    pub requests: i64,
    /// Micro-units, net of refunds.
    pub units: i128,
    pub money: BTreeMap<String, Decimal>,
}

type LineKey = (i64, String, String, String);

fn line<'a>(
    lines: &'a mut BTreeMap<LineKey, UsageLine>,
    period_start: i64,
    account_id: &str,
    request_type: &str,
    metadata_value: &str,
) -> &'a mut UsageLine {
    lines
        .entry((
            period_start,
            account_id.to_string(),
            request_type.to_string(),
            metadata_value.to_string(),
        ))
        .or_insert_with(|| UsageLine {
            period_start,
            account_id: account_id.to_string(),
            request_type: request_type.to_string(),
            metadata_value: metadata_value.to_string(),
            ..UsageLine::default()
        })
}

/// Adds `units` (micro) at `price` to `money` (a price that is not a decimal, or a value out
/// of range, adds nothing).
fn add_money(
    money: &mut BTreeMap<String, Decimal>,
    currency: &str,
    units: impl Into<i128>,
    price: &str,
) {
    let Ok(price) = price.parse::<Decimal>() else {
        return;
    };
    let Ok(units) = Decimal::try_from_i128_with_scale(units.into(), 6) else {
        return;
    };
    if let Some(value) = units.checked_mul(price) {
        let sum = money.entry(currency.to_string()).or_default();
        if let Some(total) = sum.checked_add(value) {
            *sum = total.normalize();
        }
    }
}

/// Usage of `wallets` on the days [start_day, end_day), from the rollup (cost: its rows for
/// those wallets and days — about one per wallet, day, request type and grant price).
pub async fn from_rollup(
    conn: &impl ConnectionTrait,
    wallets: &[String],
    start_day: i64,
    end_day: i64,
    granularity: Granularity,
) -> Result<Vec<UsageLine>> {
    let mut lines = BTreeMap::new();
    for chunk in wallets.chunks(WALLETS_PER_QUERY) {
        let rows = usage_day::Entity::find()
            .filter(usage_day::Column::WalletId.is_in(chunk.iter().cloned()))
            .filter(usage_day::Column::Day.gte(start_day))
            .filter(usage_day::Column::Day.lt(end_day))
            .all(conn)
            .await?;
        for row in rows {
            let period = granularity.period_start(row.day);
            let line = line(&mut lines, period, &row.account_id, &row.request_type, "");
            line.requests = line.requests.saturating_add(row.requests);
            line.units += i128::from(row.units);
            if !row.unit_price.is_empty() {
                add_money(&mut line.money, &row.currency, row.units, &row.unit_price);
            }
        }
    }
    Ok(lines.into_values().collect())
}

/// Usage of `wallets` in [start, end) split by the value of metadata `key`, from the ledger
/// entries of the window (cost: the debits, captures and refunds of those wallets in the
/// window, read by ranges of the wallets' index, `store::entries`). A refund counts under the value of
/// the entry it refunds.
pub async fn by_metadata(
    conn: &impl ConnectionTrait,
    wallets: &[String],
    start: i64,
    end: i64,
    granularity: Granularity,
    key: &str,
) -> Result<Vec<UsageLine>> {
    let mut lines = BTreeMap::new();
    let kinds = [
        MovementKind::Debit,
        MovementKind::Capture,
        MovementKind::Refund,
    ];
    let mut window = entries::Window::<entries::WithMetadata>::new(wallets, (start, end), &kinds);
    while let Some(entries) = window.next(conn).await? {
        let refunded: Vec<String> = entries
            .iter()
            .filter(|e| e.entry.kind == MovementKind::Refund)
            .filter_map(|e| e.entry.ref_id.clone())
            .collect();
        let mut originals: BTreeMap<String, String> = BTreeMap::new();
        for ids in refunded.chunks(WALLETS_PER_QUERY) {
            let rows: Vec<(String, StringMap)> = transaction::Entity::find()
                .select_only()
                .column(transaction::Column::Id)
                .column(transaction::Column::Metadata)
                .filter(transaction::Column::Id.is_in(ids.iter().cloned()))
                .into_tuple()
                .all(conn)
                .await?;
            for (id, metadata) in rows {
                originals.insert(id, metadata.0.get(key).cloned().unwrap_or_default());
            }
        }
        for entries::WithMetadata { entry, metadata } in entries {
            let refund = entry.kind == MovementKind::Refund;
            let value = if refund {
                entry
                    .ref_id
                    .as_ref()
                    .and_then(|id| originals.get(id))
                    .cloned()
                    .unwrap_or_default()
            } else {
                metadata.0.get(key).cloned().unwrap_or_default()
            };
            let sign = if refund { -1 } else { 1 };
            let period = granularity.period_start(day_of(entry.create_time));
            let line = line(
                &mut lines,
                period,
                &entry.account_id,
                &entry.request_type,
                &value,
            );
            line.requests += i64::from(!refund);
            line.units += i128::from(entry.units) * sign as i128;
            for burn in entry.burns.0.iter().filter(|b| !b.grant_id.is_empty()) {
                add_money(
                    &mut line.money,
                    &burn.currency,
                    burn.units.micros().saturating_mul(sign),
                    &burn.unit_price,
                );
            }
        }
    }
    Ok(lines.into_values().collect())
}

/// Wallet ids per `IN` list.
const WALLETS_PER_QUERY: usize = 500;

/// One line of a margin report: revenue at the grants' unit prices against what the provider
/// charges, for a request type and route in a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarginLine {
    pub period_start: i64,
    pub request_type: String,
    /// The route of the rate that priced the requests (empty: none recorded).
    pub route: String,
    pub requests: i64,
    /// Micro-units, net of refunds.
    pub units: i128,
    pub revenue: BTreeMap<String, Decimal>,
    /// Σ requests carrying a provider cost × that cost (`None` if it overflowed a decimal).
    pub provider_cost: Option<Decimal>,
}

/// Rollup counters summed over wallets: one per day, request type, card version and price.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summed {
    day: i64,
    request_type: String,
    rate_card_version: i64,
    currency: String,
    unit_price: String,
    requests: i128,
    units: i128,
    costed: i128,
}

type SummedKey = (i64, String, i64, String, String);

/// The rollup of `wallets` (all for `None`) on the days [start_day, end_day), summed over
/// wallets by the database (`GROUP BY`: a few rows per day cross over, not one per wallet).
/// SQLite's `SUM` refuses to overflow 64 bits (counters near their bound): then the rows are
/// read and summed here, in 128 bits.
async fn summed(
    conn: &impl ConnectionTrait,
    wallets: Option<&[String]>,
    start_day: i64,
    end_day: i64,
) -> Result<Vec<Summed>> {
    let chunks: Vec<Option<&[String]>> = match wallets {
        None => vec![None],
        Some(wallets) => wallets.chunks(WALLETS_PER_QUERY).map(Some).collect(),
    };
    let mut sums: BTreeMap<SummedKey, Summed> = BTreeMap::new();
    for chunk in chunks {
        let window = usage_day::Entity::find()
            .filter(usage_day::Column::Day.gte(start_day))
            .filter(usage_day::Column::Day.lt(end_day));
        let window = match chunk {
            Some(ids) => window.filter(usage_day::Column::WalletId.is_in(ids.iter().cloned())),
            None => window,
        };
        let key = [
            usage_day::Column::Day,
            usage_day::Column::RequestType,
            usage_day::Column::RateCardVersion,
            usage_day::Column::Currency,
            usage_day::Column::UnitPrice,
        ];
        let mut grouped = window.clone().select_only().columns(key);
        for column in USAGE_SUMS {
            grouped = grouped.column_as(
                Expr::cust(format!(r#"CAST(SUM("{}") AS TEXT)"#, column.as_str())),
                column.as_str(),
            );
        }
        for column in key {
            grouped = grouped.group_by(column);
        }
        type Row = (i64, String, i64, String, String, String, String, String);
        let rows = match grouped.into_tuple::<Row>().all(conn).await {
            Ok(rows) => rows
                .into_iter()
                .map(
                    |(day, request_type, version, currency, price, requests, units, costed)| {
                        let number = |text: String| {
                            text.parse::<i128>()
                                .map_err(|_| Error::internal(format!("a rollup sum {text:?}")))
                        };
                        Ok(Summed {
                            day,
                            request_type,
                            rate_card_version: version,
                            currency,
                            unit_price: price,
                            requests: number(requests)?,
                            units: number(units)?,
                            costed: number(costed)?,
                        })
                    },
                )
                .collect::<Result<Vec<_>>>()?,
            Err(err) if err.to_string().contains("integer overflow") => window
                .all(conn)
                .await?
                .into_iter()
                .map(|row| Summed {
                    day: row.day,
                    request_type: row.request_type,
                    rate_card_version: row.rate_card_version,
                    currency: row.currency,
                    unit_price: row.unit_price,
                    requests: row.requests.into(),
                    units: row.units.into(),
                    costed: row.costed.into(),
                })
                .collect(),
            Err(err) => return Err(err.into()),
        };
        for row in rows {
            let key = (
                row.day,
                row.request_type.clone(),
                row.rate_card_version,
                row.currency.clone(),
                row.unit_price.clone(),
            );
            let sum = sums.entry(key).or_insert_with(|| Summed {
                requests: 0,
                units: 0,
                costed: 0,
                ..row.clone()
            });
            sum.requests += row.requests;
            sum.units += row.units;
            sum.costed += row.costed;
        }
    }
    Ok(sums.into_values().collect())
}

const USAGE_SUMS: [usage_day::Column; 3] = [
    usage_day::Column::Requests,
    usage_day::Column::Units,
    usage_day::Column::Costed,
];

/// The margin of `wallets` (all wallets for `None`) on the days [start_day, end_day), from
/// the rollup summed by the database and the rate cards that priced the requests (cost: the
/// rollup rows of the window — by the rollup's key, or by `usage_days_day` for every wallet —
/// a few summed rows per day, and one read of those cards). Requests priced by no card
/// (captures of explicit units) have no route.
pub async fn margin(
    conn: &impl ConnectionTrait,
    wallets: Option<&[String]>,
    start_day: i64,
    end_day: i64,
    granularity: Granularity,
) -> Result<Vec<MarginLine>> {
    let rows = summed(conn, wallets, start_day, end_day).await?;
    let cards = rate_cards::by_versions(conn, rows.iter().map(|r| r.rate_card_version)).await?;
    let mut lines: BTreeMap<(i64, String, String), MarginLine> = BTreeMap::new();
    for row in rows {
        let rate = cards
            .get(&row.rate_card_version)
            .and_then(|card| card.rate(&row.request_type));
        let route = rate.map(|r| r.route.clone()).unwrap_or_default();
        let period = granularity.period_start(row.day);
        let line = lines
            .entry((period, row.request_type.clone(), route.clone()))
            .or_insert_with(|| MarginLine {
                period_start: period,
                request_type: row.request_type.clone(),
                route,
                provider_cost: Some(Decimal::ZERO),
                ..MarginLine::default()
            });
        let requests = i64::try_from(row.requests).unwrap_or(i64::MAX);
        line.requests = line.requests.saturating_add(requests);
        line.units += row.units;
        let cost = rate
            .and_then(|r| r.provider_cost.parse::<Decimal>().ok())
            .unwrap_or_default();
        line.provider_cost = line.provider_cost.and_then(|sum| {
            Decimal::try_from_i128_with_scale(row.costed, 0)
                .ok()
                .and_then(|costed| cost.checked_mul(costed))
                .and_then(|c| sum.checked_add(c))
        });
        if !row.unit_price.is_empty() {
            add_money(&mut line.revenue, &row.currency, row.units, &row.unit_price);
        }
    }
    Ok(lines.into_values().collect())
}
