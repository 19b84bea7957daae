//! `raftgate` is the operator's command-line tool: it validates config repositories and
//! inspects and steers raftgate clusters through any node's admin API. It is a thin client:
//! it never holds cluster state of its own or changes a cluster except through that API.
//!
//! Exit codes: 0 success; 1 the answer is "no" (invalid config, unhealthy cluster, refused
//! commit); 2 the command could not run as given (bad usage, unreadable input); 3 no admin
//! API at the address; 4 authentication failed; 5 timed out; 6 the cluster refused the
//! request (unknown node, conflict, no leader).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

mod cache;
mod certificates;
mod certs;
mod client;
mod cluster;
mod configs;
mod context;
mod credentials;
mod output;
mod rollout;
#[cfg(test)]
mod table_tests;
mod validate;

use client::{CliError, Target};
use output::Format;

#[derive(Debug, Parser)]
#[command(name = "raftgate", version, about = "Operate raftgate gateway clusters and their config repositories")]
struct Cli {
    /// The admin API of any node (its --admin-addr) [default: the context's, else
    /// 127.0.0.1:9900].
    #[arg(long, global = true, env = "RAFTGATE_ADMIN", value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Connection settings from the context file (~/.config/raftgate/config.yaml, or
    /// $RAFTGATE_CONFIG) [default: its current-context].
    #[arg(long, global = true, env = "RAFTGATE_CONTEXT", value_name = "NAME")]
    context: Option<String>,
    /// The cluster CA (PEM): talk TLS to the admin API and trust nodes it signed.
    #[arg(long, global = true, env = "RAFTGATE_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// A client certificate from the cluster CA (`raftgate certs client`), with --key.
    #[arg(long, global = true, env = "RAFTGATE_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long, global = true, env = "RAFTGATE_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// The name the node's certificate must carry, when not the host in --admin (e.g.
    /// node-1.<cluster> when dialing through a tunnel).
    #[arg(long, global = true, env = "RAFTGATE_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
    /// A file holding the cluster's admin token.
    #[arg(long, global = true, value_name = "FILE", env = "RAFTGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The admin token itself (prefer --token-file: the environment leaks into process lists
    /// less than arguments, files leak least).
    #[arg(long = "token", global = true, env = "RAFTGATE_TOKEN", hide_env_values = true, hide = true)]
    token: Option<String>,
    /// Output: a table for people, or JSON or YAML for scripts.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    output: Format,
    /// How long to wait for each answer.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster at a glance: leader, term, and each node's role, applied index, commit,
    /// lag and errors. Exits 1 when there is no leader or nodes serve different commits.
    Status,
    /// List, add, promote and remove members.
    #[command(subcommand)]
    Members(cluster::MembersCommand),
    /// Work with config: validate, show, history, diff, sync.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Follow a commit's rollout.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// The effective route table of a node.
    Routes {
        /// Ask this node (default: the node at --admin).
        #[arg(long)]
        node: Option<u64>,
    },
    /// A node's upstreams: endpoints, health, circuit breakers, requests in flight.
    Upstreams {
        #[arg(long)]
        node: Option<u64>,
    },
    /// Work with the response cache of every node.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// The TLS certificates the nodes serve to clients: host names, expiry, days left, and
    /// nodes that serve different ones. Exits 1 when one is expired, not served, or differs.
    Certificates,
    /// Create a cluster CA and node and operator certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Make API keys and htpasswd lines for security policies (only hashes go into Git).
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Print a shell completion script: `raftgate completions bash > /etc/bash_completion.d/raftgate`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config tree (a directory, or a commit of a Git repository) and print its
    /// content hash, or every problem with file:line:column.
    Validate(validate::Args),
    /// Print the JSON Schema of resource files (for yaml-language-server and editors).
    Schema,
    /// The effective config a node serves, as YAML (`-o json` for JSON).
    Show {
        #[arg(long)]
        node: Option<u64>,
    },
    /// The config commits a node applied, newest first.
    History {
        #[arg(long)]
        node: Option<u64>,
    },
    /// What changes between two revisions of a config repository: routes, upstreams and
    /// certificates added, removed, and changed field by field.
    Diff {
        rev_a: String,
        rev_b: String,
        /// The repository (default: the current directory).
        #[arg(long, default_value = ".")]
        git: PathBuf,
        /// The config directory inside the repository.
        #[arg(long)]
        path: Option<String>,
    },
    /// Make the leader fetch and check the Git branch now, and wait for the result.
    Sync {
        /// Return once the sync has started.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Remove a route's cached answers on every node (fanned out by the node asked, not
    /// through the Raft log). Exits 1 when a node could not be reached.
    Purge {
        /// The route whose answers go.
        #[arg(long)]
        route: String,
        /// Only answers whose path starts with this (`/v1/users/`); default: all.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Wait until every node (or a quorum of voters) serves a commit. Exits 1 when the
    /// commit was refused (printing why) and 5 on timeout.
    Wait {
        /// The commit (at least 4 characters of its sha).
        sha: String,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// A majority of voters is enough.
        #[arg(long)]
        quorum: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    schemas::Duration::parse(s).map(schemas::Duration::to_std)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Local commands first: they need no node.
    match &cli.command {
        Command::Config(ConfigCommand::Validate(args)) => return validate::run(args),
        Command::Config(ConfigCommand::Schema) => {
            let text = serde_json::to_string_pretty(&schemas::json_schema()).expect("schema serializes");
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "raftgate", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Credentials(cmd) => {
            return match credentials::run(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raftgate: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Certs(cmd) => {
            return match certs::run(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raftgate: {}", e.message());
                    e.exit()
                }
            }
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftgate: {}", e.message());
            e.exit()
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = context::load(context::default_path().as_deref(), cli.context.as_deref())?;
    let flags = client::Settings {
        admin: cli.admin.clone(),
        token_file: cli.token_file.clone(),
        token: cli.token.clone(),
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
        tls_server_name: cli.tls_server_name.clone(),
    };
    let settings = context::fill(flags, ctx);
    let target = Target::new(settings, cli.timeout)?;
    let on = |node: Option<u64>| {
        let target = target.clone();
        async move {
            match node {
                Some(id) => cluster::node_admin(&target, id).await,
                None => Ok(target),
            }
        }
    };
    let format = cli.output;
    match cli.command {
        Command::Status => cluster::status(&target, format).await,
        Command::Certificates => certificates::run(&target, format).await,
        Command::Members(cmd) => cluster::members(&target, format, cmd).await,
        Command::Config(ConfigCommand::Show { node }) => configs::show(&on(node).await?, format).await,
        Command::Config(ConfigCommand::History { node }) => configs::history(&on(node).await?, format).await,
        Command::Config(ConfigCommand::Sync { no_wait }) => configs::sync(&target, format, !no_wait).await,
        Command::Config(ConfigCommand::Diff { rev_a, rev_b, git, path }) => {
            let a = validate::compile_rev(&git, &rev_a, path.as_deref())?;
            let b = validate::compile_rev(&git, &rev_b, path.as_deref())?;
            let view = configs::diff(&rev_a, &rev_b, &a, &b);
            output::print(format, &view, configs::render_diff);
            Ok(())
        }
        Command::Rollout(RolloutCommand::Wait { sha, timeout, quorum }) => {
            rollout::wait(&target, format, &sha, timeout, quorum).await
        }
        Command::Routes { node } => configs::routes(&on(node).await?, format).await,
        Command::Cache(CacheCommand::Purge { route, prefix }) => cache::purge(&target, format, &route, &prefix).await,
        Command::Upstreams { node } => configs::upstreams(&on(node).await?, format).await,
        Command::Config(ConfigCommand::Validate(_) | ConfigCommand::Schema)
        | Command::Completions { .. }
        | Command::Certs(_)
        | Command::Credentials(_) => {
            unreachable!("handled before connecting")
        }
    }
}
