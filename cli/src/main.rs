//! `raftgate` is the operator's command-line tool: it validates config repositories and
//! (as the admin API lands) inspects and steers raftgate clusters. It is a thin client: it
//! must never hold cluster state of its own or change a cluster except through a node's
//! admin API.
//!
//! Exit codes: 0 success; 1 the answer is "no" (invalid config, unhealthy cluster);
//! 2 the command could not run (bad usage, unreadable input, unreachable node).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod validate;

#[derive(Debug, Parser)]
#[command(name = "raftgate", version, about = "Operate raftgate gateway clusters and their config repositories")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with config repositories.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config tree (a directory, or a commit of a Git repository) and print its
    /// content hash, or every problem with file:line:column.
    Validate(validate::Args),
    /// Print the JSON Schema of resource files (for yaml-language-server and editors).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Validate(args)) => validate::run(&args),
        Command::Config(ConfigCommand::Schema) => {
            let text = serde_json::to_string_pretty(&schemas::json_schema()).expect("schema serializes");
            println!("{text}");
            ExitCode::SUCCESS
        }
    }
}
