//! `raftgated`: parse flags, set up logging and the runtime, run the node.

use clap::Parser;
use node::run::{init_tracing, run, Args};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftgated: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "raftgated failed");
            eprintln!("raftgated: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
