//! The `allot` command line: `serve`, `migrate`, `token`, and (in `client`) a gRPC client
//! command for every role. `main.rs` only calls [`main`].

pub mod bench;
pub mod client;
pub mod server;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "allot", version, about = "Prepaid credit wallets over gRPC", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(server::ServeArgs),
    /// Apply database migrations and exit.
    Migrate(server::MigrateArgs),
    /// Mint a token signed with the configured HS256 secret (or the dev secret).
    Token(server::TokenArgs),
    /// Check every wallet's hash chain and that its stored balances equal its ledger.
    Verify(server::VerifyArgs),
    /// Load-test Debit against an in-process (or running) server and a plain-SQL baseline.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Parses the command line and runs it; on failure prints `error: …` (and its causes) to
/// stderr and exits with status 1.
pub fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => server::serve(args).await,
            Command::Migrate(args) => server::migrate(args).await,
            Command::Token(args) => server::token(args),
            Command::Verify(args) => server::verify(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Client(command) => client::run(command).await,
        }
    })
}
