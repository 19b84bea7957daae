//! `testbed` runs raftgate clusters across simulated regions so that scaling, failures and
//! rollouts can be watched and measured, and provides the demo and benchmark upstreams.
//! It must never send traffic anywhere but loopback and the namespaces it creates itself.
//!
//! Layering: a file uses only files below it, never one above or beside it (no cycles).
//!
//! - `main`: the command line; may use any file.
//! - `chaos`: a seeded schedule of faults under load and merges, judged by `check`; uses
//!   `check`, `scenario`, `ops`, `cluster`, `net`, `process`, `topology`.
//! - `soak`: the long run with config changes under load; uses `scenario`, `ops`, `cluster`.
//! - `scenario`: the measured scenarios; uses `ops`, `cluster`, `net`, `process`.
//! - `ops`: the commands (up, down, scale, ...); uses `certs`, `cluster`, `net`, `http`,
//!   `process`, `repo`, `topology`, `upstreams`.
//! - `cluster`: the testbed's state (`State`, `NodeState`) and its nodes; uses `certs`, `net`,
//!   `http`, `process`, `repo`, `topology`.
//! - `http`: small HTTP calls, from the control namespace if need be; uses `certs`, `net`,
//!   `process`.
//! - `net`: loopback or netns (`Mode`, `Net`), namespaces and emulator rules; uses
//!   `process`, `topology`, `wanem`.
//! - `load`: the load generator; uses `repo`.
//! - `certs`, `check`, `process`, `repo`, `topology`, `upstreams`, `wanem`: leaves, using no
//!   other file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod certs;
mod chaos;
mod check;
mod cluster;
mod http;
mod load;
mod net;
mod ops;
mod process;
mod repo;
mod scenario;
mod soak;
mod topology;
mod upstreams;
mod wanem;

#[derive(Debug, Parser)]
#[command(name = "testbed", version, about = "Run, break and measure raftgate clusters")]
struct Cli {
    /// Where the testbed keeps its state (Git repository, node data, logs).
    #[arg(long, global = true, env = "TESTBED_STATE", value_name = "DIR")]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster from a topology file (testbed/topologies/*.yaml).
    Up {
        topology: PathBuf,
        /// Plain processes on loopback even as root.
        #[arg(long)]
        loopback: bool,
        /// Stay in the foreground and take everything down on Ctrl-C (`make run`).
        #[arg(long)]
        foreground: bool,
        /// Loopback mode: add this to every node port (default ports: 8080+, 9800+, 9900+).
        #[arg(long, default_value_t = 0)]
        port_offset: u16,
        /// No TLS: Raft and the admin API in the clear, open to anyone who reaches them
        /// (raftgated's --insecure-plaintext). By default the testbed makes a CA and runs mTLS.
        #[arg(long)]
        plaintext: bool,
    },
    /// The testbed's processes, then `raftgate status`.
    Status,
    /// Grow or shrink a region: new nodes join and become voters; removed nodes leave
    /// the membership, then stop.
    Scale { region: String, count: usize },
    /// Kill a node (SIGKILL).
    Kill { node: String },
    /// Restart a killed node from its data directory.
    Start { node: String },
    /// Merge a change into the testbed's Git repository, as a pull request would.
    Merge {
        /// Tell the cluster with a signed webhook instead of waiting for its poll.
        #[arg(long)]
        webhook: bool,
        /// Merge a change that does not validate.
        #[arg(long)]
        invalid: bool,
    },
    /// Steady requests through every running node, counting failures per node.
    Load {
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Requests per second to each node.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Also write the report as JSON to this file (on SIGTERM too: scenarios stop it so).
        #[arg(long, value_name = "FILE")]
        json_out: Option<PathBuf>,
        /// Host header of the requests (default: the testbed's probe route).
        #[arg(long)]
        host: Option<String>,
        /// Path of the requests (default: the testbed's probe route).
        #[arg(long)]
        path: Option<String>,
    },
    /// Run measured scenarios and write a Markdown and JSON report.
    Run {
        /// merge-latency, leader-failover, partition, scale, invalid-commit, or all.
        #[arg(default_value = "all")]
        scenario: String,
        /// The topology to bring up when no testbed is up.
        #[arg(long, default_value = "testbed/topologies/three-regions.yaml")]
        topology: PathBuf,
        /// Merges per mode in merge-latency (20 for the full run).
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Where the report goes.
        #[arg(long, default_value = "testbed/results")]
        report_dir: PathBuf,
        /// Leave the testbed up afterwards.
        #[arg(long)]
        keep: bool,
        /// Bring the testbed up without TLS (when none is up), to compare with mTLS runs.
        #[arg(long)]
        plaintext: bool,
    },
    /// Steady load with a config change every few seconds; passes with no failed request,
    /// memory flat after the warm-up (under 5% growth of the anonymous memory) and
    /// descriptors flat.
    Soak {
        /// Ten minutes measured after the warm-up, by default.
        #[arg(long, default_value = "20m", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        change_every: Duration,
        /// Memory and descriptors are compared with their values at its end: long enough
        /// for a node's allocator to settle (about 100 changes; see
        /// scripts/memory-per-change.py).
        #[arg(long, default_value = "9m", value_parser = parse_duration)]
        warmup: Duration,
        /// Requests per second to each node.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// The topology to bring up when no testbed is up.
        #[arg(long, default_value = "testbed/topologies/three-regions.yaml")]
        topology: PathBuf,
        #[arg(long, default_value = "testbed/results")]
        report_dir: PathBuf,
        #[arg(long)]
        plaintext: bool,
        /// Anonymous resident memory growth allowed after the warm-up, in percent.
        #[arg(long, default_value_t = 5.0)]
        max_rss_growth: f64,
        /// Loopback mode, when the soak brings the testbed up: add this to every node port.
        #[arg(long, default_value_t = 0)]
        port_offset: u16,
        /// Plain processes on loopback even as root, when the soak brings the testbed up.
        #[arg(long)]
        loopback: bool,
        /// Raft snapshots every this many log entries (when the soak brings the testbed
        /// up), so that the soak sees several snapshots and log purges.
        #[arg(long, default_value_t = 40)]
        raft_snapshot_every: u64,
    },
    /// A random, seeded schedule of faults (kills, leader kills mid-rollout, partitions,
    /// latency spikes, Git outages) under load while changes (some invalid) are merged;
    /// then a checker judges every node's applied history, convergence and failed requests.
    Chaos {
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// The same seed draws the same schedule (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Requests per second to each node.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// No new fault in the last part of the run.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        calm: Duration,
        /// Every node must serve the last good commit this soon after the last heal.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        converge_limit: Duration,
        /// The topology to bring up when no testbed is up.
        #[arg(long, default_value = "testbed/topologies/three-regions.yaml")]
        topology: PathBuf,
        #[arg(long, default_value = "testbed/results")]
        report_dir: PathBuf,
        #[arg(long)]
        plaintext: bool,
        /// Plain processes on loopback even as root (kills, restarts and merges only).
        #[arg(long)]
        loopback: bool,
        #[arg(long, default_value_t = 0)]
        port_offset: u16,
        /// Leave the testbed up afterwards.
        #[arg(long)]
        keep: bool,
        /// Print the schedule the seed draws for the topology, and stop.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cut two regions (or nodes) off from each other (netns mode).
    Partition { a: String, b: String },
    /// Cut a node off from everything (netns mode).
    Isolate { node: String },
    /// Remove partitions: all, or the one between two regions or nodes.
    Heal { a: Option<String>, b: Option<String> },
    /// Set the round trip between two regions or nodes, e.g. `latency us-east eu-west 90ms`.
    Latency {
        a: String,
        b: String,
        #[arg(value_parser = parse_duration)]
        rtt: Duration,
        /// ± on each one-way delay.
        #[arg(long, value_parser = parse_duration)]
        jitter: Option<Duration>,
        /// Random loss per direction, in percent.
        #[arg(long)]
        loss: Option<f64>,
    },
    /// Measure TCP connect round trips from one node to another (netns mode).
    Rtt { from: String, to: String },
    /// Stop everything and remove the state (idempotent).
    Down,
    /// The WAN emulator process (started by `up` in netns mode).
    #[command(hide = true)]
    Wanem,
    /// Connect to ADDR five times; print the median connect time in milliseconds.
    #[command(hide = true)]
    TcpConnect { addr: String },
    /// Serve a small echo upstream on every loopback endpoint of a config directory.
    Upstreams { config: PathBuf },
    /// The benchmark upstream: a fixed 100-byte body, HTTP/1.1 keep-alive, one thread.
    Backend {
        #[arg(default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// Answer every request this late (the slow mirror of the mirroring row).
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
    },
    /// An OTLP/gRPC trace receiver that accepts and counts spans (the tracing rows of
    /// `make bench`).
    OtlpSink {
        #[arg(default_value = "127.0.0.1:4317")]
        addr: SocketAddr,
    },
    /// One HTTP request, printing the status and body (used inside the control namespace).
    #[command(hide = true)]
    Http {
        method: String,
        url: String,
        /// The testbed's certificate directory, for https:// URLs.
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value = "")]
        body: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    schemas::Duration::parse(s).map(schemas::Duration::to_std)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli.state.clone().unwrap_or_else(cluster::default_state_dir);
    match run(cli.command, &dir) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testbed: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up { topology, loopback, foreground, port_offset, plaintext } => {
            let opts = ops::UpOptions { loopback, quiet: false, port_offset, tls: !plaintext, snapshot_every: None };
            let state = ops::up(&topology, dir, opts)?;
            if foreground {
                next_steps(&state);
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    anyhow::Ok(())
                })?;
                println!("\nstopping the testbed...");
                ops::down(dir, false)?;
            }
        }
        Command::Status => return Ok(if ops::status(dir)? { ExitCode::SUCCESS } else { ExitCode::from(1) }),
        Command::Scale { region, count } => {
            for (name, took) in ops::scale(dir, &region, count)? {
                if took.is_zero() {
                    println!("{name} removed");
                } else {
                    println!("{name} joined and serves the current config after {:.1}s", took.as_secs_f64());
                }
            }
        }
        Command::Kill { node } => {
            ops::kill(dir, &node)?;
            println!("{node} killed");
        }
        Command::Start { node } => {
            let took = ops::start(dir, &node)?;
            println!("{node} serves its config {:.1}s after the restart", took.as_secs_f64());
        }
        Command::Merge { webhook, invalid } => println!("{}", ops::merge(dir, webhook, invalid)?),
        Command::Run { scenario, topology, iterations, report_dir, keep, plaintext } => {
            let opts = scenario::RunOptions { iterations, keep, tls: !plaintext };
            let ok = scenario::run_all(dir, &scenario, &topology, &report_dir, opts)?;
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Load { duration, rate, json_out, host, path } => {
            let state = cluster::State::load(dir)?;
            // In netns mode node addresses exist only behind the emulator: run from there.
            if state.net().is_netns() && !state.net().inside_control() {
                let status = state
                    .net()
                    .command(None, &process::bin("testbed"))
                    .arg("--state")
                    .arg(dir)
                    .args(["load", "--duration", &format!("{}ms", duration.as_millis()), "--rate", &rate.to_string()])
                    .args(json_out.iter().flat_map(|p| [std::ffi::OsStr::new("--json-out"), p.as_os_str()]))
                    .args(host.iter().flat_map(|h| ["--host", h.as_str()]))
                    .args(path.iter().flat_map(|p| ["--path", p.as_str()]))
                    .status()?;
                return Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            let targets = ops::running(&state).iter().map(|n| (n.name.clone(), n.http.clone())).collect();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
            let flag = stop.clone();
            let report = rt.block_on(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::spawn(async move {
                    term.recv().await;
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                let mut target = load::Target::default();
                if let Some(h) = host {
                    target.host = h;
                }
                if let Some(p) = path {
                    target.path = p;
                }
                anyhow::Ok(load::run(targets, duration, rate, target, stop).await)
            })?;
            if let Some(path) = json_out {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            report.print();
            return Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Soak {
            duration,
            change_every,
            warmup,
            rate,
            topology,
            report_dir,
            plaintext,
            max_rss_growth,
            port_offset,
            loopback,
            raft_snapshot_every,
        } => {
            let opts = soak::SoakOptions {
                duration,
                change_every,
                warmup,
                rate,
                report_dir,
                tls: !plaintext,
                max_rss_growth_pct: max_rss_growth,
                loopback,
                port_offset,
                snapshot_every: Some(raft_snapshot_every),
            };
            return Ok(if soak::run(dir, &topology, &opts)? { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Chaos {
            duration,
            seed,
            rate,
            calm,
            converge_limit,
            topology,
            report_dir,
            plaintext,
            loopback,
            port_offset,
            keep,
            dry_run,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
            });
            let opts = chaos::ChaosOptions {
                duration,
                seed,
                rate,
                calm,
                converge_limit,
                report_dir,
                tls: !plaintext,
                loopback,
                port_offset,
                keep,
                dry_run,
            };
            return Ok(if chaos::run(dir, &topology, &opts)? { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Down => ops::down(dir, false)?,
        Command::Partition { a, b } => {
            netns_state(dir)?;
            net::partition(dir, &a, &b)?;
            println!("{a} and {b} cannot reach each other");
        }
        Command::Isolate { node } => {
            let state = netns_state(dir)?;
            let name = state.node(&node)?.name.clone();
            net::partition(dir, &name, "*")?;
            println!("{name} is cut off");
        }
        Command::Heal { a, b } => {
            netns_state(dir)?;
            let pair = a.as_deref().zip(b.as_deref());
            net::heal(dir, pair)?;
            println!("healed");
        }
        Command::Latency { a, b, rtt, jitter, loss } => {
            netns_state(dir)?;
            if loss.is_some_and(|l| !(0.0..=100.0).contains(&l)) {
                anyhow::bail!("--loss is a percentage between 0 and 100");
            }
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            net::set_rtt(dir, &a, &b, ms(rtt), jitter.map(ms), loss)?;
            println!("round trip {a} <-> {b}: {}ms", rtt.as_millis());
        }
        Command::Rtt { from, to } => {
            let state = netns_state(dir)?;
            let (a, b) = (state.node(&from)?, state.node(&to)?);
            let out =
                state.net().command(Some(a.id), &process::bin("testbed")).args(["tcp-connect", &b.admin]).output()?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Command::Wanem => wanem::run(dir)?,
        Command::TcpConnect { addr } => {
            let mut times = Vec::new();
            for _ in 0..5 {
                let started = std::time::Instant::now();
                std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            println!("{:.1}", times[2]);
        }
        Command::Upstreams { config } => upstreams::serve_config(&config)?,
        Command::Backend { addr, delay } => upstreams::bench_backend(addr, delay)?,
        Command::OtlpSink { addr } => upstreams::otlp_sink(addr)?,
        Command::Http { method, url, tls_dir, headers, body } => {
            let headers: Vec<(String, String)> = headers
                .iter()
                .filter_map(|h| h.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                .collect();
            let (status, text) = http::local(tls_dir.as_deref(), &method, &url, &headers, body.as_bytes())?;
            println!("{status}\n{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The state of a testbed running in netns mode (faults need the emulator).
fn netns_state(dir: &std::path::Path) -> anyhow::Result<cluster::State> {
    let state = cluster::State::load(dir)?;
    if state.mode != net::Mode::Netns {
        anyhow::bail!("this testbed runs on loopback (no root or no /dev/net/tun): partitions and latency need network namespaces");
    }
    Ok(state)
}

/// What to try once `make run` is up.
fn next_steps(state: &cluster::State) {
    let n1 = &state.nodes[0];
    let repo = state.repo().dir;
    let raftgate = process::bin("raftgate");
    let testbed = process::bin("testbed");
    // The admin listener's plain-HTTP side (/status, /metrics, /readyz), as curl reaches it.
    let admin_curl = match state.tls_dir() {
        Some(certs) => format!(
            "curl -s --cacert {d}/ca.pem --cert {d}/testbed.pem --key {d}/testbed-key.pem https://{admin}/status",
            d = certs.display(),
            admin = n1.admin
        ),
        None => format!("curl -s http://{}/status", n1.admin),
    };
    let dashboard = match state.tls_dir() {
        Some(_) => format!(
            "https://{}/ui   (the testbed's own CA: your browser warns once; the token is in {})",
            n1.admin,
            state.dir.join(cluster::ADMIN_TOKEN_FILE).display()
        ),
        None => format!("http://{}/ui", n1.admin),
    };
    println!(
        "
Try it (in another terminal):

  export RAFTGATE_CONFIG={context}
  {raftgate} status
  curl -s -H 'Host: api.example.com' http://{http}/v1/users      # any node: :8080-:8082
  curl -si -H 'Host: api.example.com' http://{http}/v1/orders/7  # 401: partners only
  curl -s -H 'Host: api.example.com' -H 'x-api-key: demo-orders-key-9c4e1f7a2b6d8e03' http://{http}/v1/orders/7
  curl -si -H 'Host: testbed.local' http://{http}/probe | grep x-testbed-change
  {admin_curl}

The dashboard: {dashboard}

Change the config as a merged pull request would, and watch it roll out:

  cd {repo}
  $EDITOR routes/api.yaml && git commit -qam 'My change'
  {raftgate} rollout wait $(git rev-parse HEAD)

Or let the testbed merge a change and send the webhook: {testbed} merge --webhook
Crash a node and bring it back: {testbed} kill local-2 ; {testbed} start local-2
Ctrl-C stops everything.",
        http = n1.http,
        context = state.context_file().display(),
        repo = repo.display(),
        raftgate = raftgate.display(),
        testbed = testbed.display(),
    );
}
