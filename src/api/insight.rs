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
        audit,
        budget::{self, Budget, EventKind},
        pagination, transparency,
        usage::{self, Granularity, MarginLine, UsageLine},
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
        let ids = self
            .account_wallet_ids(
                &caller,
                &request.account_id,
                &request.unit,
                request.include_sub_accounts,
            )
            .await?;
        let (start, end) = required_window(&request.start_time, &request.end_time)?;
        let granularity = granularity(request.granularity)?;
        let key = convert::optional("group_by_metadata_key", &request.group_by_metadata_key, 64)?;
        let tx = self.store.read_snapshot().await?;
        let lines = if key.is_empty() {
            whole_days(start, end, "split by a metadata key for any window")?;
            usage::from_rollup(&tx, &ids, start / DAY_MICROS, end / DAY_MICROS, granularity).await
        } else {
            at_most_days(start, end, "a report split by metadata")?;
            usage::by_metadata(&tx, &ids, start, end, granularity, &key).await
        };
        tx.rollback().await?;
        let lines = lines?;
        at_most_rows(lines.len())?;
        Ok(usage_proto(&lines))
    }

    pub(super) async fn margin_report(
        &self,
        request: Request<proto::GetMarginReportRequest>,
    ) -> Result<proto::MarginReport> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let (start, end) = required_window(&request.start_time, &request.end_time)?;
        whole_days(start, end, "margins are kept per day")?;
        let granularity = granularity(request.granularity)?;
        let wallets = self
            .wallets_or_all(
                &caller,
                &request.account_id,
                &request.unit,
                request.include_sub_accounts,
            )
            .await?;
        let tx = self.store.read_snapshot().await?;
        let lines = usage::margin(
            &tx,
            wallets.as_deref(),
            start / DAY_MICROS,
            end / DAY_MICROS,
            granularity,
        )
        .await;
        tx.rollback().await?;
        let lines = lines?;
        at_most_rows(lines.len())?;
        Ok(proto::MarginReport {
            rows: lines.iter().map(margin_row).collect(),
        })
    }

    pub(super) async fn price_transparency(
        &self,
        request: Request<proto::GetPriceTransparencyRequest>,
    ) -> Result<proto::PriceTransparency> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let ids = self
            .account_wallet_ids(
                &caller,
                &request.account_id,
                &request.unit,
                request.include_sub_accounts,
            )
            .await?;
        let (start, end) = required_window(&request.start_time, &request.end_time)?;
        at_most_days(start, end, "a transparency report")?;
        let tx = self.store.read_snapshot().await?;
        let lines = transparency::report(&tx, &ids, start, end).await;
        tx.rollback().await?;
        let lines = lines?;
        Ok(proto::PriceTransparency {
            rows: lines.iter().map(transparency_row).collect(),
        })
    }
}

impl Ctx {
    /// The ids of the wallets in `unit` of an account in the caller's scope (with `below`,
    /// of its sub-accounts too).
    pub(super) async fn account_wallet_ids(
        &self,
        caller: &crate::auth::Caller,
        account_id: &str,
        unit: &str,
        below: bool,
    ) -> Result<Vec<String>> {
        let unit = convert::unit(unit)?;
        let account = self.resolve_account(caller, account_id, "").await?;
        let wallets = wallets_in_unit(&self.store.db, &account, &unit, below).await?;
        Ok(wallets.into_iter().map(|w| w.id).collect())
    }

    /// For operator reports over everyone or one account: `None` (every wallet) when no
    /// account is named — which needs a token for all accounts — else the account's wallets.
    pub(super) async fn wallets_or_all(
        &self,
        caller: &crate::auth::Caller,
        account_id: &str,
        unit: &str,
        below: bool,
    ) -> Result<Option<Vec<String>>> {
        if !account_id.is_empty() {
            return Ok(Some(
                self.account_wallet_ids(caller, account_id, unit, below)
                    .await?,
            ));
        }
        if below || !unit.is_empty() {
            return Err(Error::invalid(
                Reason::InvalidField,
                "account_id",
                "include_sub_accounts and unit apply to an account",
            ));
        }
        if !caller.is_global() {
            return Err(Error::invalid(
                Reason::MissingField,
                "account_id",
                "a token scoped to accounts reads one of them: name it",
            ));
        }
        Ok(None)
    }

    pub(super) async fn audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<proto::ListAuditEventsResponse> {
        let caller = super::access::caller(&request)?;
        let request = request.into_inner();
        let page = pagination::parse("audit_events", request.page_size, &request.page_token)?;
        let (start, end) =
            convert::window(request.start_time.as_ref(), request.end_time.as_ref(), None)?;
        for (i, action) in request.actions.iter().enumerate() {
            if !audit::ACTIONS.contains(&action.as_str()) {
                return Err(Error::invalid(
                    Reason::InvalidEnum,
                    &format!("actions[{i}]"),
                    format!("not an action: {}", audit::ACTIONS.join(", ")),
                ));
            }
        }
        let account = if request.account_id.is_empty() {
            if request.include_sub_accounts {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "include_sub_accounts",
                    "applies to account_id",
                ));
            }
            None
        } else {
            let account = self
                .resolve_account(&caller, &request.account_id, "")
                .await?;
            Some((account.id, request.include_sub_accounts))
        };
        let filter = audit::Filter {
            scope: self.scope_roots(&caller).await?,
            account,
            actions: request.actions.clone(),
            actor: (!request.actor.is_empty()).then(|| request.actor.clone()),
            resource: (!request.resource.is_empty()).then(|| request.resource.clone()),
            start,
            end,
        };
        let (events, next_page_token) = audit::list(&self.store.db, &filter, &page).await?;
        let operator = caller.has_any_role(&[crate::auth::Role::Operator]);
        Ok(proto::ListAuditEventsResponse {
            audit_events: events
                .into_iter()
                .map(|event| audit_proto(event, operator))
                .collect(),
            next_page_token,
        })
    }
}

fn audit_proto(
    mut event: crate::store::entity::audit_event::Model,
    operator: bool,
) -> proto::AuditEvent {
    if !operator {
        for side in [&mut event.before, &mut event.after].into_iter().flatten() {
            audit::redact(side);
        }
    }
    let text = |value: &Option<serde_json::Value>| {
        value.as_ref().map(|v| v.to_string()).unwrap_or_default()
    };
    proto::AuditEvent {
        changes: audit::changes(event.before.as_ref(), event.after.as_ref())
            .into_iter()
            .map(|(path, before, after)| proto::AuditChange {
                path,
                before,
                after,
            })
            .collect(),
        before: text(&event.before),
        after: text(&event.after),
        id: event.id,
        time: Some(convert::timestamp(event.time)),
        actor: event.actor,
        action: event.action,
        resource: event.resource,
        account_id: event.account_id.unwrap_or_default(),
        request_id: event.request_id,
    }
}

fn granularity(value: i32) -> Result<Granularity> {
    match proto::Granularity::try_from(value) {
        Ok(proto::Granularity::Unspecified | proto::Granularity::Day) => Ok(Granularity::Day),
        Ok(proto::Granularity::Week) => Ok(Granularity::Week),
        Ok(proto::Granularity::Month) => Ok(Granularity::Month),
        Err(_) => Err(Error::invalid(
            Reason::InvalidEnum,
            "granularity",
            "not a Granularity value",
        )),
    }
}

/// A report's window, both ends required.
fn required_window(
    start: &Option<prost_types::Timestamp>,
    end: &Option<prost_types::Timestamp>,
) -> Result<(i64, i64)> {
    let (start, end) = convert::window(start.as_ref(), end.as_ref(), None)?;
    Ok((
        start.ok_or_else(|| Error::missing("start_time"))?,
        end.ok_or_else(|| Error::missing("end_time"))?,
    ))
}

/// Reports read from the daily rollup take whole UTC days.
fn whole_days(start: i64, end: i64, otherwise: &str) -> Result<()> {
    for (field, at) in [("start_time", start), ("end_time", end)] {
        if at.rem_euclid(DAY_MICROS) != 0 {
            return Err(Error::invalid(
                Reason::InvalidField,
                field,
                format!("must be a UTC midnight: usage is kept per day ({otherwise})"),
            ));
        }
    }
    Ok(())
}

/// Reports that read the window's entries cover at most [`MAX_METADATA_DAYS`].
pub(super) fn at_most_days(start: i64, end: i64, what: &str) -> Result<()> {
    if end - start > MAX_METADATA_DAYS * DAY_MICROS {
        return Err(Error::invalid(
            Reason::ReportTooLarge,
            "end_time",
            format!(
                "{what} covers at most {MAX_METADATA_DAYS} days (it reads the window's entries)"
            ),
        ));
    }
    Ok(())
}

fn at_most_rows(rows: usize) -> Result<()> {
    if rows > MAX_USAGE_ROWS {
        return Err(Error::invalid(
            Reason::ReportTooLarge,
            "start_time",
            format!(
                "the report has {rows} rows, more than {MAX_USAGE_ROWS}: narrow the window or \
                 choose a coarser granularity"
            ),
        ));
    }
    Ok(())
}

fn margin_row(line: &MarginLine) -> proto::MarginRow {
    let (currency, revenue) = single(&line.revenue);
    let cost = line.provider_cost;
    let (margin, percent) = match (line.revenue.len(), cost) {
        (0, Some(cost)) => (format_decimal(-cost), String::new()),
        (1, Some(cost)) => {
            let revenue = line.revenue.values().next().copied().unwrap_or_default();
            let margin = revenue.checked_sub(cost);
            let percent = margin
                .filter(|_| !revenue.is_zero())
                .and_then(|m| m.checked_mul(Decimal::from(100)))
                .and_then(|m| m.checked_div(revenue))
                .map(|p| format_decimal(p.round_dp(2)))
                .unwrap_or_default();
            (margin.map(format_decimal).unwrap_or_default(), percent)
        }
        _ => (String::new(), String::new()),
    };
    proto::MarginRow {
        period_start: Some(convert::timestamp(line.period_start)),
        request_type: line.request_type.clone(),
        route: line.route.clone(),
        requests: line.requests,
        units: format_micros(line.units),
        revenue,
        currency,
        revenue_by_currency: money(&line.revenue),
        provider_cost: cost.map(format_decimal).unwrap_or_default(),
        margin,
        margin_percent: percent,
    }
}

fn transparency_row(line: &transparency::Line) -> proto::TransparencyRow {
    proto::TransparencyRow {
        request_type: line.request_type.clone(),
        requests: line.requests,
        units: format_micros(line.units),
        currency: line.currency.clone(),
        mean_money: format_decimal(line.mean),
        p50_money: format_decimal(line.p50),
        p95_money: format_decimal(line.p95),
        dimensions: line
            .dimensions
            .iter()
            .map(|d| proto::DimensionPrice {
                dimension: d.dimension.clone(),
                quantity: format_decimal(d.quantity),
                money: format_decimal(d.money),
                effective_price_per_1000: d
                    .effective_per_1000
                    .map(format_decimal)
                    .unwrap_or_default(),
                list_price_per_1000: d
                    .list_per_1000
                    .as_ref()
                    .map(|(p, _)| format_decimal(*p))
                    .unwrap_or_default(),
                list_currency: d
                    .list_per_1000
                    .as_ref()
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
            })
            .collect(),
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
