//! Budgets and usage reports (ReportService.GetBudget, GetUsageReport): what procurement
//! reads to see where the units go and when they run out. Scope first, then the store's
//! reads (`store/budget.rs`, `store/usage.rs`), then the wire shape.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tonic::Request;

use super::{Ctx, convert};
use crate::{
    domain::{
        Amount,
        amount::{format_decimal, format_micros},
        wallet::{DAY_MICROS, forecast::Forecast},
    },
    error::{Error, Reason, Result},
    proto,
    store::{
        accounts::wallets_in_unit,
        budget::{self, Budget, EventKind},
        entity::wallet,
        usage::{self, Granularity, UsageLine},
    },
};

/// Longest window a usage report split by metadata reads (its cost is the entries read).
pub const MAX_METADATA_DAYS: i64 = 93;
/// Most rows a usage report returns.
pub const MAX_USAGE_ROWS: usize = 50_000;
/// Most wallets a budget covers.
pub const MAX_BUDGET_WALLETS: usize = 1_000;

fn money(values: &BTreeMap<String, Decimal>) -> Vec<proto::Money> {
    values
        .iter()
        .map(|(currency, amount)| proto::Money {
            currency: currency.clone(),
            amount: format_decimal(*amount),
        })
        .collect()
}

/// The one currency of `values` and its amount ("" and "" when none or several).
fn single(values: &BTreeMap<String, Decimal>) -> (String, String) {
    match values.iter().next() {
        Some((currency, amount)) if values.len() == 1 => {
            (currency.clone(), format_decimal(*amount))
        }
        _ => (String::new(), String::new()),
    }
}

fn forecast(rate: Amount, f: &Forecast) -> proto::Forecast {
    let outlook = if rate.is_zero() {
        proto::Outlook::NoBurn
    } else if f.runout_time.is_some() {
        proto::Outlook::RunsOut
    } else {
        proto::Outlook::Lasts
    };
    proto::Forecast {
        burn_rate: rate.to_string(),
        outlook: outlook as i32,
        runout_time: f.runout_time.map(convert::timestamp),
        units_left: f.left.to_string(),
        units_missing: f.missing.to_string(),
        money_left: money(&f.left_money),
        money_missing: money(&f.missing_money),
        path: f
            .path
            .iter()
            .map(|(time, units)| proto::ForecastPoint {
                time: Some(convert::timestamp(*time)),
                units: units.to_string(),
            })
            .collect(),
    }
}

fn budget_proto(b: &Budget, account_id: &str, unit: &str, as_of: i64) -> proto::Budget {
    let (currency, remaining_money) = single(&b.remaining_money);
    let forecast_7d = forecast(b.burn_7d, &b.forecast_7d);
    let forecast_30d = forecast(b.burn_30d, &b.forecast_30d);
    proto::Budget {
        account_id: account_id.to_string(),
        wallet_id: b.wallet.as_ref().map(|w| w.id.clone()).unwrap_or_default(),
        unit: unit.to_string(),
        as_of: Some(convert::timestamp(as_of)),
        term_start_time: b.term_start.map(convert::timestamp),
        term_end_time: b.term_end.map(convert::timestamp),
        granted: format_micros(b.granted),
        consumed: format_micros(b.consumed),
        remaining: format_micros(b.remaining),
        reserved: format_micros(b.reserved),
        expiring_30d: format_micros(b.expiring),
        expired: format_micros(b.expired),
        withdrawn: format_micros(b.withdrawn),
        burn_rate_7d: b.burn_7d.to_string(),
        burn_rate_30d: b.burn_30d.to_string(),
        runout_time_7d: forecast_7d.runout_time,
        runout_time_30d: forecast_30d.runout_time,
        currency,
        remaining_money,
        remaining_money_by_currency: money(&b.remaining_money),
        forecast_7d: Some(forecast_7d),
        forecast_30d: Some(forecast_30d),
        upcoming: format_micros(b.upcoming),
        lines: Vec::new(),
        events: b
            .events
            .iter()
            .map(|e| proto::BudgetEvent {
                time: Some(convert::timestamp(e.time)),
                kind: match e.kind {
                    EventKind::GrantEffective => proto::budget_event::Kind::GrantEffective,
                    EventKind::ScheduledAllotment => proto::budget_event::Kind::ScheduledAllotment,
                    EventKind::GrantExpires => proto::budget_event::Kind::GrantExpires,
                } as i32,
                units: e.units.to_string(),
                wallet_id: e.wallet_id.clone(),
            })
            .collect(),
        forecast_end_time: Some(convert::timestamp(b.forecast_end)),
    }
}

impl Ctx {
    pub(super) async fn budget(
        &self,
        request: Request<proto::GetBudgetRequest>,
    ) -> Result<proto::Budget> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let now = self.store.clock.now_micros();
        let (wallets, account_id, unit, roll_up) =
            match (request.wallet_id.is_empty(), request.account_id.is_empty()) {
                (false, true) if request.include_sub_accounts => {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        "include_sub_accounts",
                        "applies to account_id, not to a wallet",
                    ));
                }
                (false, true) => {
                    if !request.unit.is_empty() {
                        return Err(Error::invalid(
                            Reason::InvalidField,
                            "unit",
                            "a wallet has its unit: give unit with account_id only",
                        ));
                    }
                    let wallet = self.wallet_in_scope(&caller, &request.wallet_id).await?;
                    let (account, unit) = (wallet.account_id.clone(), wallet.unit.clone());
                    (vec![wallet], account, unit, false)
                }
                (true, false) => {
                    let unit = convert::unit(&request.unit)?;
                    let account = self
                        .resolve_account(&caller, &request.account_id, "")
                        .await?;
                    let wallets = wallets_in_unit(
                        &self.store.db,
                        &account,
                        &unit,
                        request.include_sub_accounts,
                    )
                    .await?;
                    if wallets.is_empty() {
                        return Err(Error::not_found(
                            "wallet",
                            &format!("{}/{unit}", account.id),
                        ));
                    }
                    (wallets, account.id, unit, request.include_sub_accounts)
                }
                _ => {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        "account_id",
                        "give account_id or wallet_id, not both",
                    ));
                }
            };
        if wallets.len() > MAX_BUDGET_WALLETS {
            return Err(Error::invalid(
                Reason::ReportTooLarge,
                "include_sub_accounts",
                format!(
                    "the account has {} wallets in `{unit}` below it; a budget covers at most \
                     {MAX_BUDGET_WALLETS}: ask for a sub-account's",
                    wallets.len()
                ),
            ));
        }
        let ids: Vec<String> = wallets.iter().map(|w| w.id.clone()).collect();
        let lines = budget::budgets(&self.store, &ids, now).await?;
        if !roll_up {
            let line = lines
                .first()
                .ok_or_else(|| Error::not_found("wallet", &ids[0]))?;
            return Ok(budget_proto(line, &account_id, &unit, now));
        }
        let total = budget::roll_up(&lines);
        let mut out = budget_proto(&total, &account_id, &unit, now);
        out.lines = lines
            .iter()
            .map(|line| {
                let owner = line.wallet.as_ref().map(|w| w.account_id.clone());
                budget_proto(line, &owner.unwrap_or_default(), &unit, now)
            })
            .collect();
        Ok(out)
    }

    pub(super) async fn usage_report(
        &self,
        request: Request<proto::GetUsageReportRequest>,
    ) -> Result<proto::UsageReport> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let unit = convert::unit(&request.unit)?;
        let account = self
            .resolve_account(&caller, &request.account_id, "")
            .await?;
        let (start, end) =
            convert::window(request.start_time.as_ref(), request.end_time.as_ref(), None)?;
        let start = start.ok_or_else(|| Error::missing("start_time"))?;
        let end = end.ok_or_else(|| Error::missing("end_time"))?;
        let granularity = match proto::Granularity::try_from(request.granularity) {
            Ok(proto::Granularity::Unspecified | proto::Granularity::Day) => Granularity::Day,
            Ok(proto::Granularity::Week) => Granularity::Week,
            Ok(proto::Granularity::Month) => Granularity::Month,
            Err(_) => {
                return Err(Error::invalid(
                    Reason::InvalidEnum,
                    "granularity",
                    "not a Granularity value",
                ));
            }
        };
        let key = convert::optional("group_by_metadata_key", &request.group_by_metadata_key, 64)?;
        let wallets: Vec<wallet::Model> = wallets_in_unit(
            &self.store.db,
            &account,
            &unit,
            request.include_sub_accounts,
        )
        .await?;
        let ids: Vec<String> = wallets.into_iter().map(|w| w.id).collect();
        let tx = self.store.read_snapshot().await?;
        let lines = if key.is_empty() {
            for (field, at) in [("start_time", start), ("end_time", end)] {
                if at.rem_euclid(DAY_MICROS) != 0 {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        field,
                        "must be a UTC midnight: usage is kept per day (split by a metadata \
                         key for any window)",
                    ));
                }
            }
            usage::from_rollup(&tx, &ids, start / DAY_MICROS, end / DAY_MICROS, granularity).await
        } else {
            if end - start > MAX_METADATA_DAYS * DAY_MICROS {
                return Err(Error::invalid(
                    Reason::ReportTooLarge,
                    "end_time",
                    format!(
                        "a report split by metadata covers at most {MAX_METADATA_DAYS} days \
                         (it reads the window's entries)"
                    ),
                ));
            }
            usage::by_metadata(&tx, &ids, start, end, granularity, &key).await
        };
        tx.rollback().await?;
        let lines = lines?;
        if lines.len() > MAX_USAGE_ROWS {
            return Err(Error::invalid(
                Reason::ReportTooLarge,
                "start_time",
                format!(
                    "the report has {} rows, more than {MAX_USAGE_ROWS}: narrow the window or \
                     choose a coarser granularity",
                    lines.len()
                ),
            ));
        }
        Ok(usage_proto(&lines))
    }
}

fn usage_proto(lines: &[UsageLine]) -> proto::UsageReport {
    let mut total_money = BTreeMap::new();
    let mut total_units: i128 = 0;
    let mut total_requests: i64 = 0;
    let rows = lines
        .iter()
        .map(|line| {
            total_requests = total_requests.saturating_add(line.requests);
            total_units += line.units;
            for (currency, value) in &line.money {
                let sum: &mut Decimal = total_money.entry(currency.clone()).or_default();
                if let Some(added) = sum.checked_add(*value) {
                    *sum = added;
                }
            }
            let (currency, money_text) = match line.money.iter().next() {
                Some((c, v)) => (c.clone(), format_decimal(*v)),
                None => (String::new(), String::new()),
            };
            proto::UsageRow {
                period_start: Some(convert::timestamp(line.period_start)),
                account_id: line.account_id.clone(),
                request_type: line.request_type.clone(),
                metadata_value: line.metadata_value.clone(),
                requests: line.requests,
                units: format_micros(line.units),
                money: money_text,
                currency,
                money_by_currency: money(&line.money),
            }
        })
        .collect();
    proto::UsageReport {
        rows,
        total_requests,
        total_units: format_micros(total_units),
        total_money: money(&total_money),
    }
}
