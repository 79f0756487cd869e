//! `allot export`: every ledger entry a filter selects, streamed from the server and written
//! as it arrives — CSV (one row per entry), or with `--json` one JSON object per line — so a
//! million entries take no more memory than one chunk of them.

use std::{fs::File, io};

use anyhow::{Context, Result};

use super::{
    args::ExportArgs,
    output::{dynamic, money_line, node, rfc3339},
    statement::kind_name,
    transport::Ctx,
};
use crate::proto::{self, report_service_client::ReportServiceClient};

/// The CSV columns, one per field of an entry.
const COLUMNS: [&str; 22] = [
    "id",
    "time",
    "kind",
    "account_id",
    "wallet_id",
    "units",
    "delta",
    "balance_after",
    "money",
    "request_type",
    "quantities",
    "rate_card_version",
    "request_id",
    "actor",
    "metadata",
    "grant_id",
    "reservation_id",
    "refunded_transaction_id",
    "reason",
    "provider_cost",
    "hash",
    "prev_hash",
];

/// `k=v` pairs in key order, `;`-separated.
fn pairs(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn row(t: &proto::Transaction) -> [String; 22] {
    [
        t.id.clone(),
        rfc3339(t.create_time.as_ref()).unwrap_or_default(),
        kind_name(t.kind),
        t.account_id.clone(),
        t.wallet_id.clone(),
        t.units.clone(),
        t.delta.clone(),
        t.balance_after.clone(),
        money_line(&t.money),
        t.request_type.clone(),
        pairs(&t.quantities),
        t.rate_card_version.to_string(),
        t.request_id.clone(),
        t.actor.clone(),
        pairs(&t.metadata),
        t.grant_id.clone(),
        t.reservation_id.clone(),
        t.refunded_transaction_id.clone(),
        t.reason.clone(),
        t.provider_cost.clone(),
        t.hash.clone(),
        t.prev_hash.clone(),
    ]
}

enum Sink {
    Csv(Box<csv::Writer<Box<dyn io::Write>>>),
    JsonLines(Box<dyn io::Write>),
}

impl Sink {
    fn write(&mut self, t: &proto::Transaction) -> Result<()> {
        match self {
            Sink::Csv(csv) => csv.write_record(row(t))?,
            Sink::JsonLines(out) => {
                serde_json::to_writer(&mut *out, &node(&dynamic(t)))?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Csv(mut csv) => csv.flush()?,
            Sink::JsonLines(mut out) => out.flush()?,
        }
        Ok(())
    }
}

pub(super) async fn run(ctx: &Ctx, args: ExportArgs) -> Result<()> {
    let request = proto::ExportTransactionsRequest {
        account_id: args.account.unwrap_or_default(),
        wallet_id: args.wallet.unwrap_or_default(),
        include_sub_accounts: args.sub_accounts,
        start_time: args.from,
        end_time: args.to,
        kinds: args.kinds.into_iter().map(|k| k as i32).collect(),
    };
    let to_file = args.csv.as_os_str() != "-";
    let cannot = || format!("cannot write {}", args.csv.display());
    let out: Box<dyn io::Write> = if to_file {
        Box::new(io::BufWriter::new(
            File::create(&args.csv).with_context(cannot)?,
        ))
    } else {
        Box::new(io::BufWriter::new(io::stdout().lock()))
    };
    let mut sink = if ctx.out.json {
        Sink::JsonLines(out)
    } else {
        let mut csv = csv::Writer::from_writer(out);
        csv.write_record(COLUMNS).with_context(cannot)?;
        Sink::Csv(Box::new(csv))
    };
    let mut client = ctx.client(ReportServiceClient::new).await?;
    let mut chunks = ctx.call(client.export_transactions(request)).await?;
    let mut count: u64 = 0;
    loop {
        let chunk = match chunks.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) => return Err(ctx.rpc_error(status)),
        };
        for t in &chunk.transactions {
            sink.write(t).with_context(cannot)?;
        }
        count += chunk.transactions.len() as u64;
    }
    sink.finish().with_context(cannot)?;
    if to_file {
        eprintln!("{count} entries written to {}", args.csv.display());
    }
    Ok(())
}
