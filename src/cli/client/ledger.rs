//! The ledger operations: `allot quote | debit | reserve | capture | release | refund |
//! adjust | balance | transactions`.

use anyhow::Result;

use super::{
    args::{
        AdjustArgs, CaptureArgs, DebitArgs, PriceArgs, RefundArgs, ReleaseArgs, ReserveArgs,
        TransactionsArgs, WalletRef, WatchArgs,
    },
    transport::Ctx,
};
use crate::proto::{
    self, grant_service_client::GrantServiceClient, ledger_service_client::LedgerServiceClient,
    rate_card_service_client::RateCardServiceClient,
};

pub(super) async fn quote(ctx: &Ctx, args: PriceArgs) -> Result<()> {
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let request = proto::QuotePriceRequest {
        account_id,
        external_id,
        unit,
        request_type: args.request_type,
        quantities: args.quantities.into_iter().collect(),
    };
    let mut client = ctx.client(RateCardServiceClient::new).await?;
    ctx.show(client.quote_price(request)).await
}

pub(super) async fn debit(ctx: &Ctx, args: DebitArgs) -> Result<()> {
    let request_id = args.request.get();
    let (account_id, external_id, unit) = args.price.wallet.into_parts();
    let request = proto::DebitRequest {
        account_id,
        external_id,
        unit,
        request_type: args.price.request_type,
        quantities: args.price.quantities.into_iter().collect(),
        request_id,
        metadata: args.metadata.into_iter().collect(),
        max_units: args.max_units.unwrap_or_default(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.debit(request)).await
}

pub(super) async fn reserve(ctx: &Ctx, args: ReserveArgs) -> Result<()> {
    let request_id = args.request.get();
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let request = proto::ReserveRequest {
        account_id,
        external_id,
        unit,
        request_type: args.request_type.unwrap_or_default(),
        quantities: args.quantities.into_iter().collect(),
        units: args.units.unwrap_or_default(),
        ttl: args.ttl,
        request_id,
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.reserve(request)).await
}

pub(super) async fn capture(ctx: &Ctx, args: CaptureArgs) -> Result<()> {
    let request = proto::CaptureReservationRequest {
        reservation_id: args.reservation_id,
        quantities: args.actual.quantities.into_iter().collect(),
        units: args.actual.units.unwrap_or_default(),
        request_id: args.request.get(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.capture_reservation(request)).await
}

pub(super) async fn release(ctx: &Ctx, args: ReleaseArgs) -> Result<()> {
    let request = proto::ReleaseReservationRequest {
        reservation_id: args.reservation_id,
        request_id: args.request.get(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.release_reservation(request)).await
}

pub(super) async fn refund(ctx: &Ctx, args: RefundArgs) -> Result<()> {
    let request = proto::RefundRequest {
        transaction_id: args.transaction_id,
        units: args.units.unwrap_or_default(),
        reason: args.reason.unwrap_or_default(),
        request_id: args.request.get(),
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    ctx.show(client.refund(request)).await
}

pub(super) async fn adjust(ctx: &Ctx, args: AdjustArgs) -> Result<()> {
    let request = proto::AdjustBalanceRequest {
        wallet_id: args.wallet,
        units: args.units,
        reason: args.reason,
        request_id: args.request.get(),
    };
    let mut client = ctx.client(GrantServiceClient::new).await?;
    ctx.show(client.adjust_balance(request)).await
}

pub(super) async fn balance(ctx: &Ctx, args: WalletRef) -> Result<()> {
    let (account_id, external_id, unit) = args.into_parts();
    let request = proto::GetBalanceRequest {
        account_id,
        external_id,
        unit,
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    let balance = ctx.call(client.get_balance(request)).await?;
    Ok(ctx.out.row(&balance)?)
}

/// Prints the watch's messages as they come: `sequence type available … key=value …`, or
/// one JSON object per line; a stream that ends with an error fails the command.
pub(super) async fn watch(ctx: &Ctx, args: WatchArgs) -> Result<()> {
    use std::io::Write;
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let all = args.all_wallets;
    let request = proto::WatchBalanceRequest {
        account_id,
        external_id,
        unit: if all { String::new() } else { unit },
        after_sequence: args.after,
        all_wallets: all,
        after_sequences: args.resume.into_iter().collect(),
        ..Default::default()
    };
    let mut client = ctx.client(LedgerServiceClient::new).await?;
    let mut stream = ctx.call(client.watch_balance(request)).await?;
    while let Some(event) = stream.message().await.map_err(|s| ctx.rpc_error(s))? {
        let mut out = std::io::stdout().lock();
        if ctx.out.json {
            let node = super::output::node(&super::output::dynamic(&event));
            serde_json::to_writer(&mut out, &node)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", event_line(&event, all))?;
        }
        out.flush()?;
    }
    Ok(())
}

/// One event for people: (watching every wallet: the wallet and its unit,) number, type,
/// time, balances, then what it is about.
fn event_line(event: &proto::BalanceEvent, wallets: bool) -> String {
    let balance = event.balance.clone().unwrap_or_default();
    let time = super::output::rfc3339(event.time.as_ref()).unwrap_or_default();
    let mut line = if wallets {
        format!("{} {:<10} ", event.wallet_id, balance.unit)
    } else {
        String::new()
    };
    line.push_str(&format!(
        "{:>6}  {:<26} {time}  posted {}  reserved {}  available {}",
        event.sequence, event.r#type, balance.posted, balance.reserved, balance.available
    ));
    for (key, value) in &event.data {
        line.push_str(&format!("  {key}={value}"));
    }
    line
}

pub(super) async fn transactions(ctx: &Ctx, args: TransactionsArgs) -> Result<()> {
    let (account_id, external_id, unit) = args.wallet.into_parts();
    let request = proto::ListTransactionsRequest {
        account_id,
        external_id,
        unit,
        ..Default::default()
    };
    let client = ctx.client(LedgerServiceClient::new).await?;
    ctx.pages(args.page, &client, request, |mut c, r| async move {
        c.list_transactions(r).await
    })
    .await
}
