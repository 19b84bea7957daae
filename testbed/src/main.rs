//! `testbed` runs raftgate clusters across simulated regions (network namespaces, a
//! userspace WAN emulator) so that scaling, failures and rollouts can be measured, and
//! provides the demo and benchmark upstreams. It must never send traffic anywhere but
//! loopback and the namespaces it creates itself.
//!
//! Today it has the upstreams only; the multi-region cluster commands are issue #7.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod upstreams;

#[derive(Debug, Parser)]
#[command(name = "testbed", version, about = "Run, break and measure raftgate clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a small echo upstream on every endpoint address of a config directory that
    /// points at loopback, so the config can be tried end to end (used by `make run`).
    Upstreams {
        /// The config directory whose upstream endpoints to serve.
        config: PathBuf,
    },
    /// The benchmark upstream: a fixed 100-byte body, HTTP/1.1 keep-alive, one thread.
    Backend {
        #[arg(default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Upstreams { config } => upstreams::serve_config(&config),
        Command::Backend { addr } => upstreams::bench_backend(addr),
    }
}
