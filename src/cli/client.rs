//! Client commands (placeholder until the client lands).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {}

pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {}
}
