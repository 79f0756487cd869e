//! `allot report budget` and `allot report usage`: tables for people, CSV for spreadsheets,
//! the messages as JSON (`--json`), and the burn-down chart (`--svg`, `burndown.rs`).

use std::io;

use super::output::{money_line, rfc3339, table};
use crate::proto;

/// `--help` text of `allot report budget`.
pub const BUDGET_HELP: &str = "\
Shows a budget: for one wallet (--wallet, or --account with --unit), or rolled up over an
account's sub-accounts (--account --sub-accounts: one line per wallet, then TOTAL).

  term        from the earliest start of the grants in force to the latest expiry of the
              grants in force or pending and the end of the schedules (open: never ends)
  granted     units of the grants that became effective in the term
  consumed    granted − remaining − expired − withdrawn (net of refunds)
  remaining   the posted balance; reserved: open holds, part of it
  expiring    units of grants in force that expire within 30 days
  burn/day    units consumed per day over the last 7 and 30 complete UTC days
  run-out     when the units run out at that rate, counting holds as spent and every grant
              and scheduled allotment that arrives before; `lasts` when they last the term,
              `no burn` when nothing was consumed
  left/missing  units left just before the term ends, or needed beyond the grants by then,
              and their money at the grants' prices

--csv FILE (`-`: stdout) writes the lines as CSV with the columns of the table; --svg FILE
draws the burn-down (consumed to date, remaining, run-out at both rates, arrivals, expiries,
the term end).";

/// `--help` text of `allot report usage`.
pub const USAGE_HELP: &str = "\
Shows requests, units and money by period and request type for an account (with
--sub-accounts, each sub-account on its own rows), optionally split by the value of one
metadata key the backend sent (--by user).

Units are net of refunds (a refund counts in the period it was made, under the value of the
request it refunds); money is the units at the unit prices of the grants they burnt. The
window is the whole UTC days ending with today (--window 30d), or --from/--to; without --by
both must be UTC midnights (usage is kept per day), and with --by it covers at most 93 days.

--csv FILE (`-`: stdout) writes the rows as CSV:

  period_start,account_id,request_type,metadata_value,requests,units,money";

/// `--help` text of `allot report transparency`.
pub const TRANSPARENCY_HELP: &str = "\
Shows, per request type, what one request cost in money over the window (mean, median, 95th
percentile; at the unit prices of the grants it burnt, less refunds made in the window), and
for requests that carried quantities (tokens) the effective price per 1,000 of each: each
request's money shared among its flat part and its quantities in proportion to the units
each accounted for, summed, divided by the quantity. Beside it, the reference list price
the operator published for that quantity (e.g. the model's public per-token price). The
window covers at most 93 days.

--csv FILE (`-`: stdout) writes one row per request type and quantity:

  request_type,requests,units,currency,mean,p50,p95,dimension,quantity,money,effective_per_1000,list_per_1000,list_currency";

/// `--help` text of `allot report margin`.
pub const MARGIN_HELP: &str = "\
Operators and admins: revenue (units consumed, net of refunds, at the unit prices of the
grants they burnt) against provider cost (the provider_cost of the rate that priced each
request) by period, request type and route, over whole UTC days. A remap shows as a new
route from its effective time. Provider costs are taken to be in the revenue's currency
(allot converts none); with several currencies the margin is left empty.

--csv FILE (`-`: stdout) writes the rows:

  period_start,request_type,route,requests,units,revenue,currency,provider_cost,margin,margin_percent";

/// The columns of a budget's table and CSV.
pub const BUDGET_COLUMNS: [&str; 15] = [
    "account",
    "wallet",
    "granted",
    "consumed",
    "remaining",
    "reserved",
    "expiring_30d",
    "burn_7d",
    "runout_7d",
    "burn_30d",
    "runout_30d",
    "left_at_end",
    "missing_at_end",
    "remaining_money",
    "term_end",
];

fn runout(forecast: Option<&proto::Forecast>) -> String {
    let Some(forecast) = forecast else {
        return String::new();
    };
    match forecast.outlook() {
        proto::Outlook::NoBurn => "no burn".into(),
        proto::Outlook::Lasts => "lasts".into(),
        _ => rfc3339(forecast.runout_time.as_ref()).unwrap_or_default(),
    }
}

fn budget_row(label: &str, b: &proto::Budget) -> Vec<String> {
    let f7 = b.forecast_7d.as_ref();
    let f30 = b.forecast_30d.as_ref();
    // What is left or missing at the 30-day rate (the steadier one).
    let at_end = |pick: fn(&proto::Forecast) -> &str| f30.map(pick).unwrap_or_default().into();
    vec![
        if label.is_empty() {
            b.account_id.clone()
        } else {
            label.to_string()
        },
        b.wallet_id.clone(),
        b.granted.clone(),
        b.consumed.clone(),
        b.remaining.clone(),
        b.reserved.clone(),
        b.expiring_30d.clone(),
        b.burn_rate_7d.clone(),
        runout(f7),
        b.burn_rate_30d.clone(),
        runout(f30),
        at_end(|f| &f.units_left),
        at_end(|f| &f.units_missing),
        money_line(&b.remaining_money_by_currency),
        rfc3339(b.term_end_time.as_ref()).unwrap_or_else(|| "open".into()),
    ]
}

/// The budget's lines (a roll-up's, then TOTAL; or the one wallet's).
pub fn budget_rows(b: &proto::Budget) -> Vec<Vec<String>> {
    if b.lines.is_empty() {
        return vec![budget_row("", b)];
    }
    let mut rows: Vec<Vec<String>> = b.lines.iter().map(|line| budget_row("", line)).collect();
    rows.push(budget_row("TOTAL", b));
    rows
}

/// The budget for people: what it covers, the lines, and the forecasts in words.
pub fn budget_text(b: &proto::Budget) -> String {
    let mut out = format!(
        "budget of {} in {} as of {}\nterm: {} – {}\n\n",
        if b.wallet_id.is_empty() {
            format!("account {} and its sub-accounts", b.account_id)
        } else {
            format!("wallet {}", b.wallet_id)
        },
        b.unit,
        rfc3339(b.as_of.as_ref()).unwrap_or_default(),
        rfc3339(b.term_start_time.as_ref()).unwrap_or_else(|| "-".into()),
        rfc3339(b.term_end_time.as_ref()).unwrap_or_else(|| "open".into()),
    );
    out += &table(&BUDGET_COLUMNS, &budget_rows(b));
    for (days, forecast) in [(7, &b.forecast_7d), (30, &b.forecast_30d)] {
        let Some(f) = forecast else { continue };
        let until = rfc3339(b.forecast_end_time.as_ref()).unwrap_or_default();
        out += &format!("\nat the {days}-day rate ({} a day): ", f.burn_rate);
        out += &match f.outlook() {
            proto::Outlook::NoBurn => format!("no burn; {} left at {until}", f.units_left),
            proto::Outlook::Lasts => format!(
                "lasts; {} left at {until} ({})",
                f.units_left,
                money_line(&f.money_left)
            ),
            _ => format!(
                "runs out {}; {} missing by {until} ({})",
                rfc3339(f.runout_time.as_ref()).unwrap_or_default(),
                f.units_missing,
                money_line(&f.money_missing)
            ),
        };
    }
    out.push('\n');
    out
}

pub fn write_budget_csv(b: &proto::Budget, out: impl io::Write) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(BUDGET_COLUMNS)?;
    for row in budget_rows(b) {
        csv.write_record(row)?;
    }
    csv.flush()?;
    Ok(())
}

const USAGE_COLUMNS: [&str; 7] = [
    "period_start",
    "account_id",
    "request_type",
    "metadata_value",
    "requests",
    "units",
    "money",
];

fn usage_rows(report: &proto::UsageReport) -> Vec<Vec<String>> {
    report
        .rows
        .iter()
        .map(|row| {
            vec![
                rfc3339(row.period_start.as_ref()).unwrap_or_default(),
                row.account_id.clone(),
                row.request_type.clone(),
                row.metadata_value.clone(),
                row.requests.to_string(),
                row.units.clone(),
                money_line(&row.money_by_currency),
            ]
        })
        .collect()
}

pub fn usage_text(report: &proto::UsageReport) -> String {
    let mut out = table(&USAGE_COLUMNS, &usage_rows(report));
    out += &format!(
        "\ntotal: {} requests, {} units, {}\n",
        report.total_requests,
        report.total_units,
        money_line(&report.total_money)
    );
    out
}

pub fn write_usage_csv(report: &proto::UsageReport, out: impl io::Write) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(USAGE_COLUMNS)?;
    for row in usage_rows(report) {
        csv.write_record(row)?;
    }
    csv.flush()?;
    Ok(())
}

const TRANSPARENCY_COLUMNS: [&str; 7] = [
    "request_type",
    "requests",
    "units",
    "currency",
    "mean",
    "p50",
    "p95",
];
const DIMENSION_COLUMNS: [&str; 6] = [
    "dimension",
    "quantity",
    "money",
    "effective_per_1000",
    "list_per_1000",
    "list_currency",
];

fn transparency_row(row: &proto::TransparencyRow) -> Vec<String> {
    vec![
        row.request_type.clone(),
        row.requests.to_string(),
        row.units.clone(),
        row.currency.clone(),
        row.mean_money.clone(),
        row.p50_money.clone(),
        row.p95_money.clone(),
    ]
}

fn dimension_row(d: &proto::DimensionPrice) -> Vec<String> {
    vec![
        d.dimension.clone(),
        d.quantity.clone(),
        d.money.clone(),
        d.effective_price_per_1000.clone(),
        d.list_price_per_1000.clone(),
        d.list_currency.clone(),
    ]
}

pub fn transparency_text(report: &proto::PriceTransparency) -> String {
    let rows: Vec<Vec<String>> = report.rows.iter().map(transparency_row).collect();
    let mut out = table(&TRANSPARENCY_COLUMNS, &rows);
    let dims: Vec<Vec<String>> = report
        .rows
        .iter()
        .flat_map(|row| {
            row.dimensions.iter().map(|d| {
                let mut line = vec![row.request_type.clone()];
                line.extend(dimension_row(d));
                line
            })
        })
        .collect();
    if !dims.is_empty() {
        let mut header = vec!["request_type"];
        header.extend(DIMENSION_COLUMNS);
        out.push('\n');
        out += &table(&header, &dims);
    }
    out
}

pub fn write_transparency_csv(
    report: &proto::PriceTransparency,
    out: impl io::Write,
) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    let mut header: Vec<&str> = TRANSPARENCY_COLUMNS.to_vec();
    header.extend(DIMENSION_COLUMNS);
    csv.write_record(&header)?;
    for row in &report.rows {
        if row.dimensions.is_empty() {
            let mut line = transparency_row(row);
            line.extend(std::iter::repeat_n(String::new(), DIMENSION_COLUMNS.len()));
            csv.write_record(line)?;
        }
        for d in &row.dimensions {
            let mut line = transparency_row(row);
            line.extend(dimension_row(d));
            csv.write_record(line)?;
        }
    }
    csv.flush()?;
    Ok(())
}

const MARGIN_COLUMNS: [&str; 10] = [
    "period_start",
    "request_type",
    "route",
    "requests",
    "units",
    "revenue",
    "currency",
    "provider_cost",
    "margin",
    "margin_percent",
];

fn margin_rows(report: &proto::MarginReport) -> Vec<Vec<String>> {
    report
        .rows
        .iter()
        .map(|r| {
            vec![
                rfc3339(r.period_start.as_ref()).unwrap_or_default(),
                r.request_type.clone(),
                r.route.clone(),
                r.requests.to_string(),
                r.units.clone(),
                if r.revenue.is_empty() {
                    money_line(&r.revenue_by_currency)
                } else {
                    r.revenue.clone()
                },
                r.currency.clone(),
                r.provider_cost.clone(),
                r.margin.clone(),
                r.margin_percent.clone(),
            ]
        })
        .collect()
}

pub fn margin_text(report: &proto::MarginReport) -> String {
    table(&MARGIN_COLUMNS, &margin_rows(report))
}

pub fn write_margin_csv(report: &proto::MarginReport, out: impl io::Write) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(MARGIN_COLUMNS)?;
    for row in margin_rows(report) {
        csv.write_record(row)?;
    }
    csv.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roll_up_prints_its_lines_and_the_total() {
        let line = |account: &str, remaining: &str| proto::Budget {
            account_id: account.into(),
            wallet_id: format!("wal_{account}"),
            remaining: remaining.into(),
            forecast_30d: Some(proto::Forecast {
                outlook: proto::Outlook::NoBurn as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let total = proto::Budget {
            account_id: "a".into(),
            remaining: "3".into(),
            lines: vec![line("a", "1"), line("b", "2")],
            ..Default::default()
        };
        let rows = budget_rows(&total);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[2][0].as_str(), rows[2][4].as_str()), ("TOTAL", "3"));
        assert_eq!(rows[1][10], "no burn");
        let mut csv = Vec::new();
        write_budget_csv(&total, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.starts_with("account,wallet,granted,"), "{text}");
        assert_eq!(text.lines().count(), 4);
    }
}
