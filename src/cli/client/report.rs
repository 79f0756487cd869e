//! `allot report statement | budget | usage`: printed, as JSON, or written as CSV (layouts in
//! `statement.rs` and `budget.rs`); a budget's burn-down as SVG (`burndown.rs`).

use std::{io, path::Path};

use anyhow::{Context, Result};
use chrono::Utc;

use super::{
    args::{
        BudgetArgs, Granularity, MarginArgs, ReportCommand, ReportWindow, StatementArgs,
        TransparencyArgs, UsageArgs,
    },
    budget, burndown, statement,
    transport::Ctx,
};
use crate::proto::{self, report_service_client::ReportServiceClient};

pub(super) async fn run(ctx: &Ctx, command: ReportCommand) -> Result<()> {
    match command {
        ReportCommand::Statement(args) => run_statement(ctx, args).await,
        ReportCommand::Budget(args) => run_budget(ctx, args).await,
        ReportCommand::Usage(args) => run_usage(ctx, args).await,
        ReportCommand::Transparency(args) => run_transparency(ctx, args).await,
        ReportCommand::Margin(args) => run_margin(ctx, args).await,
    }
}

/// The window's bounds: --from/--to, or the whole UTC days ending with today.
fn window(window: &ReportWindow) -> (prost_types::Timestamp, prost_types::Timestamp) {
    const DAY: i64 = 86_400;
    match (&window.from, &window.to) {
        (Some(from), Some(to)) => (*from, *to),
        _ => {
            let end = (Utc::now().timestamp().div_euclid(DAY) + 1) * DAY;
            let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
            (at(end - window.window * DAY), at(end))
        }
    }
}

fn granularity(per: Granularity) -> proto::Granularity {
    match per {
        Granularity::Day => proto::Granularity::Day,
        Granularity::Week => proto::Granularity::Week,
        Granularity::Month => proto::Granularity::Month,
    }
}

/// Writes CSV with `write` to `path` (`-`: stdout); `done` says what was written where.
fn csv_to(
    path: &Path,
    write: impl FnOnce(Box<dyn io::Write>) -> csv::Result<()>,
    done: impl FnOnce() -> String,
) -> Result<()> {
    if path.as_os_str() == "-" {
        return Ok(write(Box::new(io::stdout().lock()))?);
    }
    let cannot = || format!("cannot write {}", path.display());
    let file = std::fs::File::create(path).with_context(cannot)?;
    write(Box::new(file)).with_context(cannot)?;
    eprintln!("{} written to {}", done(), path.display());
    Ok(())
}

async fn run_statement(ctx: &Ctx, args: StatementArgs) -> Result<()> {
    let request = proto::GetStatementRequest {
        account_id: args.wallet.account.unwrap_or_default(),
        wallet_id: args.wallet.wallet.unwrap_or_default(),
        unit: args.unit.unwrap_or_default(),
        start_time: args.from,
        end_time: args.to,
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let statement = ctx.call(client.get_statement(request)).await?;
    match args.csv {
        None => Ok(ctx.out.laid_out(&statement, statement::text)?),
        Some(path) => csv_to(
            &path,
            |out| statement::write_csv(&statement, out),
            || {
                format!(
                    "statement of {} ({} movements)",
                    statement.wallet_id,
                    statement.movements.len()
                )
            },
        ),
    }
}

async fn run_budget(ctx: &Ctx, args: BudgetArgs) -> Result<()> {
    let request = proto::GetBudgetRequest {
        account_id: args.wallet.account.unwrap_or_default(),
        wallet_id: args.wallet.wallet.unwrap_or_default(),
        unit: args.unit.unwrap_or_default(),
        include_sub_accounts: args.sub_accounts,
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let report = ctx.call(client.get_budget(request)).await?;
    if let Some(file) = &args.svg {
        burndown::write(&report, file)?;
        eprintln!("burn-down chart written to {}", file.display());
    }
    match args.csv {
        None => Ok(ctx.out.laid_out(&report, budget::budget_text)?),
        Some(path) => csv_to(
            &path,
            |out| budget::write_budget_csv(&report, out),
            || format!("budget ({} lines)", report.lines.len().max(1)),
        ),
    }
}

async fn run_usage(ctx: &Ctx, args: UsageArgs) -> Result<()> {
    let (start, end) = window(&args.window);
    let request = proto::GetUsageReportRequest {
        account_id: args.account,
        start_time: Some(start),
        end_time: Some(end),
        granularity: granularity(args.per) as i32,
        group_by_metadata_key: args.by.unwrap_or_default(),
        include_sub_accounts: args.sub_accounts,
        unit: args.unit.unwrap_or_default(),
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let report = ctx.call(client.get_usage_report(request)).await?;
    match args.csv {
        None => Ok(ctx.out.laid_out(&report, budget::usage_text)?),
        Some(path) => csv_to(
            &path,
            |out| budget::write_usage_csv(&report, out),
            || format!("usage ({} rows)", report.rows.len()),
        ),
    }
}

async fn run_transparency(ctx: &Ctx, args: TransparencyArgs) -> Result<()> {
    let (start, end) = window(&args.window);
    let request = proto::GetPriceTransparencyRequest {
        account_id: args.account,
        include_sub_accounts: args.sub_accounts,
        start_time: Some(start),
        end_time: Some(end),
        unit: args.unit.unwrap_or_default(),
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let report = ctx.call(client.get_price_transparency(request)).await?;
    match args.csv {
        None => Ok(ctx.out.laid_out(&report, budget::transparency_text)?),
        Some(path) => csv_to(
            &path,
            |out| budget::write_transparency_csv(&report, out),
            || format!("price transparency ({} request types)", report.rows.len()),
        ),
    }
}

async fn run_margin(ctx: &Ctx, args: MarginArgs) -> Result<()> {
    let (start, end) = window(&args.window);
    let request = proto::GetMarginReportRequest {
        account_id: args.account.unwrap_or_default(),
        include_sub_accounts: args.sub_accounts,
        start_time: Some(start),
        end_time: Some(end),
        granularity: granularity(args.per) as i32,
        unit: args.unit.unwrap_or_default(),
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let report = ctx.call(client.get_margin_report(request)).await?;
    match args.csv {
        None => Ok(ctx.out.laid_out(&report, budget::margin_text)?),
        Some(path) => csv_to(
            &path,
            |out| budget::write_margin_csv(&report, out),
            || format!("margins ({} rows)", report.rows.len()),
        ),
    }
}
