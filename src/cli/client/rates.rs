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
