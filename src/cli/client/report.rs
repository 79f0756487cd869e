//! `allot report statement`: printed, as JSON, or written as CSV (layout in `statement.rs`).

use anyhow::{Context, Result};

use super::{args::ReportCommand, statement, transport::Ctx};
use crate::proto::{self, report_service_client::ReportServiceClient};

pub(super) async fn run(ctx: &Ctx, command: ReportCommand) -> Result<()> {
    let ReportCommand::Statement(args) = command;
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
        Some(path) if path.as_os_str() == "-" => {
            Ok(statement::write_csv(&statement, std::io::stdout().lock())?)
        }
        Some(path) => {
            let cannot = || format!("cannot write {}", path.display());
            let file = std::fs::File::create(&path).with_context(cannot)?;
            statement::write_csv(&statement, file).with_context(cannot)?;
            eprintln!(
                "statement of {} ({} movements) written to {}",
                statement.wallet_id,
                statement.movements.len(),
                path.display()
            );
            Ok(())
        }
    }
}
