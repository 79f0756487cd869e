//! The `allot` command line: `serve`, `migrate`, `token`, and (in `client`) a gRPC client
//! command for every role. `main.rs` only calls [`main`].

pub mod bench;
pub mod client;
pub mod duration;
pub mod server;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "allot", version, about = "Prepaid credit wallets over gRPC", long_about = None)]
pub struct Cli {
    /// Client options given before the command name (`allot --server URL accounts list`).
    #[command(flatten)]
    pub client: TopClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// `--server`, `--token` and `--json` before the command name; the same flags after it win
/// (see `client::ClientArgs`). Not global: `serve` and `bench` have options of their own.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TopClientArgs {
    /// URL of the allot server, for client commands (also accepted after the command).
    #[arg(long = "server", id = "top_server", value_name = "SERVER")]
    pub server: Option<String>,
    /// Bearer token, for client commands (also accepted after the command).
    #[arg(long = "token", id = "top_token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// JSON output, for client commands (also accepted after the command).
    #[arg(long = "json", id = "top_json")]
    pub json: bool,
}

impl TopClientArgs {
    fn client_args(&self) -> client::ClientArgs {
        client::ClientArgs {
            server: self.server.clone(),
            token: self.token.clone(),
            json: self.json,
            ..Default::default()
        }
    }
}

/// The command line's definition: every command takes negative numbers as values
/// (`grants create --amount -100` reaches validation instead of being read as a flag).
pub fn command() -> clap::Command {
    fn negative_numbers(command: clap::Command) -> clap::Command {
        command
            .allow_negative_numbers(true)
            .mut_subcommands(negative_numbers)
    }
    negative_numbers(Cli::command())
}

/// Parses `args` (the program name first) as the command line.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
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
    let cli = match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match run(cli) {
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
            Command::Client(command) => client::run(command, &cli.client.client_args()).await,
        }
    })
}
