//! `raftgated`: parse flags, set up logging and the runtime, run the node.

use clap::Parser;

// The proxy allocates small, short-lived buffers on every request; mimalloc's thread-local
// free lists serve them markedly cheaper than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use node::run::{init_tracing, run, Args};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    // One worker means one thread: a current-thread runtime then avoids the work-stealing
    // machinery entirely, which is what nginx's single worker is compared against.
    let mut rt = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
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
