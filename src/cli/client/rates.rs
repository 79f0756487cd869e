//! `allot rates publish | show | list`: rate cards (the file format is in `rates_file.rs`).

use anyhow::{Context, Result, bail};

use super::{args::RatesCommand, rates_file, transport::Ctx};
use crate::proto::{self, rate_card_service_client::RateCardServiceClient};

pub(super) async fn run(ctx: &Ctx, command: RatesCommand) -> Result<()> {
    match command {
        RatesCommand::Publish {
            file,
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
