//! `allot rates publish | show | list | diff`: rate cards (the file format is in
//! `rates_file.rs`, the comparison in `rate_diff.rs`).

use std::{io::IsTerminal, path::Path};

use anyhow::{Context, Result, bail};

use super::{args::RatesCommand, rate_diff, rates_file, transport::Ctx};
use crate::proto::{self, rate_card_service_client::RateCardServiceClient};

/// Before a publish: the changes against the card in force, on stderr (stdout with
/// --dry-run), with the request types the new card would leave unpriced. Returns whether to
/// publish: always when nothing is in force or nothing changes; with --yes; after a "y" at a
/// terminal. Without a terminal and without --yes, a change is an error.
async fn review(
    ctx: &Ctx,
    client: &mut RateCardServiceClient<super::transport::Authed>,
    card: &proto::RateCard,
    yes: bool,
    dry_run: bool,
) -> Result<bool> {
    let current = match client
        .get_rate_card(proto::GetRateCardRequest::default())
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            if dry_run {
                println!("no rate card in force: every request type of the file would be new");
            }
            return Ok(!dry_run);
        }
        Err(status) => return Err(ctx.rpc_error(status)),
    };
    let changes = rate_diff::diff(&current.rates, &card.rates);
    let mut report = format!(
        "changes from the card in force (version {}):\n{}",
        current.version,
        rate_diff::text(&changes)
    );
    let unpriced: Vec<&str> = changes
        .iter()
        .filter(|c| c.change == "removed")
        .map(|c| c.request_type.as_str())
        .collect();
    if !unpriced.is_empty() {
        report += &format!(
            "warning: this card leaves {} unpriced: their debits will fail with \
             UNPRICED_REQUEST_TYPE\n",
            unpriced.join(", ")
        );
    }
    if !changes.is_empty() {
        report += &impact(client, card).await;
    }
    if dry_run {
        print!("{report}");
        return Ok(false);
    }
    eprint!("{report}");
    if changes.is_empty() || yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "not published: the card changes {} request type(s) of the card in force; pass \
             --yes to publish without asking (--dry-run shows the changes only)",
            changes
                .iter()
                .map(|c| c.request_type.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
    }
    eprint!("publish it? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(true)
    } else {
        bail!("not published")
    }
}

/// What the card would have charged the customers over the last 30 days, by request type
/// (or why that could not be worked out: the review goes on without it).
async fn impact(
    client: &mut RateCardServiceClient<super::transport::Authed>,
    card: &proto::RateCard,
) -> String {
    const DAYS: i64 = 30;
    // Up to the next whole second: requests made this second are in.
    let now = chrono::Utc::now().timestamp() + 1;
    let request = proto::SimulateRateCardRequest {
        rate_card: Some(card.clone()),
        start_time: Some(prost_types::Timestamp {
            seconds: now - DAYS * 86_400,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        }),
        ..Default::default()
    };
    match client.simulate_rate_card(request).await {
        Ok(response) => format!(
            "simulated customer impact over the last {DAYS} days (the requests made, priced \
             with this card and the overrides in force):\n{}",
            simulation_text(&response.into_inner().rows, true)
        ),
        Err(status) => format!(
            "(customer impact not simulated: {} {})\n",
            crate::error::code_name(status.code()),
            status.message()
        ),
    }
}

/// Simulation rows as a table; `by_type` sums the accounts of each request type.
pub fn simulation_text(rows: &[proto::SimulationRow], by_type: bool) -> String {
    if rows.is_empty() {
        return "no requests in the window\n".into();
    }
    let units = |text: &str| text.parse::<rust_decimal::Decimal>().unwrap_or_default();
    let mut lines: Vec<(
        String,
        String,
        i64,
        rust_decimal::Decimal,
        rust_decimal::Decimal,
        i64,
    )> = Vec::new();
    for row in rows {
        let account = if by_type {
            String::new()
        } else {
            row.account_id.clone()
        };
        match lines
            .iter_mut()
            .find(|l| l.0 == account && l.1 == row.request_type)
        {
            Some(line) => {
                line.2 += row.requests;
                line.3 += units(&row.actual_units);
                line.4 += units(&row.simulated_units);
                line.5 += row.unpriced_requests;
            }
            None => lines.push((
                account,
                row.request_type.clone(),
                row.requests,
                units(&row.actual_units),
                units(&row.simulated_units),
                row.unpriced_requests,
            )),
        }
    }
    let table: Vec<Vec<String>> = lines
        .iter()
        .map(
            |(account, request_type, requests, actual, simulated, unpriced)| {
                let change = if actual.is_zero() {
                    "-".to_string()
                } else {
                    format!(
                        "{:+}%",
                        ((simulated - actual) * rust_decimal::Decimal::from(100) / actual)
                            .round_dp(2)
                            .normalize()
                    )
                };
                let mut row = Vec::new();
                if !by_type {
                    row.push(account.clone());
                }
                row.extend([
                    request_type.clone(),
                    requests.to_string(),
                    actual.normalize().to_string(),
                    simulated.normalize().to_string(),
                    change,
                    unpriced.to_string(),
                ]);
                row
            },
        )
        .collect();
    let mut header = Vec::new();
    if !by_type {
        header.push("account");
    }
    header.extend([
        "request_type",
        "requests",
        "actual_units",
        "simulated_units",
        "change",
        "unpriced",
    ]);
    super::output::table(&header, &table)
}

/// One side of a diff: `current` (the card in force), a version number, or a file.
async fn card(ctx: &Ctx, side: &str) -> Result<proto::RateCard> {
    let version = match side {
        "current" => Some(0),
        _ => side.parse::<i64>().ok().filter(|v| *v > 0),
    };
    match version {
        Some(version) => {
            let mut client = ctx.client(RateCardServiceClient::new).await?;
            let request = proto::GetRateCardRequest {
                version,
                time: None,
            };
            ctx.call(client.get_rate_card(request)).await
        }
        None => rates_file::load(Path::new(side)),
    }
}

pub(super) async fn run(ctx: &Ctx, command: RatesCommand) -> Result<()> {
    match command {
        RatesCommand::Publish {
            file,
            yes,
            dry_run,
            effective_time,
            notes,
            request,
        } => {
            let mut card = rates_file::load(&file)?;
            // Checked here too so that a bad time does not leave an unpublished draft behind.
            if let Some(time) = &effective_time
                && time.seconds < chrono::Utc::now().timestamp()
            {
                bail!("--effective-time lies in the past");
            }
            if let Some(notes) = notes {
                card.notes = notes;
            }
            let mut client = ctx.client(RateCardServiceClient::new).await?;
            if !review(ctx, &mut client, &card, yes, dry_run).await? {
                return Ok(());
            }
            let create = proto::CreateRateCardRequest {
                rate_card: Some(card),
                request_id: request.get(),
            };
            let draft = ctx.call(client.create_rate_card(create)).await?;
            let publish = proto::PublishRateCardRequest {
                version: draft.version,
                etag: draft.etag,
                effective_time,
                // Publishing is safe to retry without a key: a second publish fails.
                request_id: String::new(),
            };
            ctx.show(client.publish_rate_card(publish))
                .await
                .with_context(|| {
                    format!(
                        "draft rate card version {} was created but not published",
                        draft.version
                    )
                })
        }
        RatesCommand::Show { version, at } => {
            let mut client = ctx.client(RateCardServiceClient::new).await?;
            let request = proto::GetRateCardRequest {
                version: version.unwrap_or(0),
                time: at,
            };
            ctx.show(client.get_rate_card(request)).await
        }
        RatesCommand::Diff { from, to } => {
            let (before, after) = (card(ctx, &from).await?, card(ctx, &to).await?);
            let changes = rate_diff::diff(&before.rates, &after.rates);
            if ctx.out.json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
            } else {
                print!("{}", rate_diff::text(&changes));
            }
            Ok(())
        }
        RatesCommand::Simulate {
            file,
            window,
            account,
            sub_accounts,
        } => {
            let card = rates_file::load(&file)?;
            let mut client = ctx.client(RateCardServiceClient::new).await?;
            // Up to the next whole second: requests made this second are in.
            let now = chrono::Utc::now().timestamp() + 1;
            let request = proto::SimulateRateCardRequest {
                rate_card: Some(card),
                start_time: Some(prost_types::Timestamp {
                    seconds: now - window * 86_400,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: now,
                    nanos: 0,
                }),
                account_id: account.unwrap_or_default(),
                include_sub_accounts: sub_accounts,
                ..Default::default()
            };
            let response = ctx.call(client.simulate_rate_card(request)).await?;
            Ok(ctx
                .out
                .laid_out(&response, |r| simulation_text(&r.rows, false))?)
        }
        RatesCommand::List { page } => {
            let client = ctx.client(RateCardServiceClient::new).await?;
            let request = proto::ListRateCardsRequest::default();
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_rate_cards(r).await
            })
            .await
        }
    }
}
