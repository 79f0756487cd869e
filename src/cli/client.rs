//! The client half of `allot`: commands for accounts, wallets, grants, allotment schedules,
//! rate cards, quotes, debits, holds, refunds, adjustments, balances, the ledger and
//! statements, over gRPC.
//!
//! Every command takes [`ClientArgs`] (`--server`, `--token`, `--json`). Results print as a
//! table or `field: value` lines, or as the response message in JSON with `--json` (see
//! `client/output.rs`). A server error fails the command with `CODE REASON: message` and the
//! ErrorInfo metadata ([`RpcError`]).
//!
//! Where things are: the command line in `args.rs`; the connection, the token and errors in
//! `transport.rs`; each command group's calls in its own file (`accounts.rs`, `wallets.rs`,
//! `grants.rs`, `schedules.rs`, `rates.rs`, `ledger.rs`, `report.rs`, `webhooks.rs`); printing in
//! `output.rs`, statements in `statement.rs`, budgets and usage in `budget.rs` (the SVG
//! burn-down in `burndown.rs`), the rate card file in `rates_file.rs`.

mod accounts;
mod args;
mod budget;
mod burndown;
mod export;
mod grants;
mod ledger;
mod output;
mod overrides;
mod rate_diff;
mod rates;
pub(crate) mod rates_file;
mod report;
mod schedules;
mod statement;
mod transport;
mod wallets;
mod webhooks;

use anyhow::Result;

pub use args::{ClientArgs, ClientCommand, DEFAULT_SERVER};
use transport::Ctx;
pub use transport::{Authed, Bearer, RpcError, endpoint};

/// Runs a client command; `outer` holds the client options given before its name.
pub async fn run(command: ClientCommand, outer: &ClientArgs) -> Result<()> {
    let ctx = Ctx::new(&command.client_args().resolve(outer))?;
    match command {
        ClientCommand::Accounts(group) => accounts::run(&ctx, group.command).await,
        ClientCommand::Wallets(group) => wallets::run(&ctx, group.command).await,
        ClientCommand::Grants(group) => grants::run(&ctx, group.command).await,
        ClientCommand::Schedules(group) => schedules::run(&ctx, group.command).await,
        ClientCommand::Rates(group) => rates::run(&ctx, group.command).await,
        ClientCommand::Quote(single) => ledger::quote(&ctx, single.args).await,
        ClientCommand::Debit(single) => ledger::debit(&ctx, single.args).await,
        ClientCommand::Reserve(single) => ledger::reserve(&ctx, single.args).await,
        ClientCommand::Capture(single) => ledger::capture(&ctx, single.args).await,
        ClientCommand::Release(single) => ledger::release(&ctx, single.args).await,
        ClientCommand::Refund(single) => ledger::refund(&ctx, single.args).await,
        ClientCommand::Adjust(single) => ledger::adjust(&ctx, single.args).await,
        ClientCommand::Balance(single) => ledger::balance(&ctx, single.args).await,
        ClientCommand::Watch(single) => ledger::watch(&ctx, single.args).await,
        ClientCommand::Transactions(single) => ledger::transactions(&ctx, single.args).await,
        ClientCommand::Overrides(group) => overrides::run(&ctx, group.command).await,
        ClientCommand::Audit(single) => overrides::audit(&ctx, single.args).await,
        ClientCommand::Report(group) => report::run(&ctx, group.command).await,
        ClientCommand::Export(single) => export::run(&ctx, single.args).await,
        ClientCommand::Webhooks(group) => webhooks::run(&ctx, group.command).await,
    }
}
