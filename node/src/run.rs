//! Wiring: parse settings, bind listeners, start the tasks, and shut down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, Admin, NodeInfo};
use crate::cluster::ClusterSettings;
use crate::config_dir;
use crate::proxy::accesslog::AccessLog;
use crate::proxy::clientip::TrustedProxies;
use crate::proxy::runtime::{ConfigOrigin, Engine};
use crate::proxy::{Proxy, ProxySettings};
use crate::server::{self, ServerSettings};

/// raftgated: the raftgate gateway daemon.
#[derive(Debug, Parser)]
#[command(name = "raftgated", version, about, args_override_self = true)]
pub struct Args {
    /// Plain HTTP listener (HTTP/1.1 and h2c with prior knowledge).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// TLS listener (HTTP/1.1 and HTTP/2 by ALPN), certificates chosen by SNI. Off when absent.
    #[arg(long, value_name = "ADDR")]
    pub https_addr: Option<SocketAddr>,
    /// A file of at least 32 random bytes, the same on every node, from which the TLS
    /// session-ticket keys are derived, so a client resumes its session on any node
    /// (`head -c 48 /dev/urandom > ticket.key; chmod 600 ticket.key`). Without it each
    /// node has its own random keys.
    #[arg(long, value_name = "FILE", requires = "https_addr")]
    pub tls_ticket_key_file: Option<PathBuf>,
    /// A file of at least 32 random bytes, the same on every node, that keys the
    /// session-persistence values (cookies and headers of `sessionPersistence`): ids of
    /// endpoints and the seal over them. Without it a built-in key is used, with which a
    /// client could forge a session naming another endpoint of the same upstream.
    #[arg(long, value_name = "FILE")]
    pub session_key_file: Option<PathBuf>,
    /// The DNS server (`ip:port`) that resolves the names of upstreams with `dns`. Default:
    /// the system's resolvers (/etc/resolv.conf).
    #[arg(long, value_name = "ADDR")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// The most the response cache (rules with `cache`) holds in memory, in bytes, all
    /// entries and their headers counted.
    #[arg(long, value_name = "BYTES", default_value_t = crate::proxy::cache::DEFAULT_CACHE_BYTES)]
    pub cache_max_bytes: u64,
    /// How long one session-ticket key issues tickets; a ticket is accepted for up to two
    /// rotations.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_duration)]
    pub tls_ticket_key_rotation: Duration,
    /// How often the files of the config's certificates are checked for changes; a renewed
    /// certificate is served to new handshakes from the next check, without a commit.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub certificate_check_interval: Duration,
    /// Admin listener: the gRPC admin API (the `raftgate` CLI) and /healthz, /readyz,
    /// /metrics, /status.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9900")]
    pub admin_addr: SocketAddr,
    /// The admin address other nodes and clients should use, when it differs from
    /// --admin-addr (NAT, containers, or a wildcard bind).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_admin_addr: Option<String>,
    /// A file holding the admin bearer token, required for every mutating admin call and,
    /// unless --admin-read-open, for reads (/healthz and /readyz stay open). Every node of
    /// a cluster needs the same token.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// With --admin-token-file: let reads (status, history, /metrics) through without it.
    #[arg(long)]
    pub admin_read_open: bool,
    /// Serve the config in this directory and reload it when it changes.
    #[arg(long, value_name = "DIR", conflicts_with = "git_url")]
    pub config_dir: Option<PathBuf>,
    /// How often --config-dir is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub config_poll_interval: Duration,
    /// Worker threads of the proxy (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Most client connections open at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Largest request head in bytes (larger gets 431).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body in bytes (larger gets 413).
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Time a client has to send a request head; also closes idle keep-alive connections.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// What a path with `%2F`, `%5C` or `\` gets: `reject` (400), `unescape` (each becomes
    /// `/`, then routed and forwarded), `redirect` (308 to that path) or `keep` (forwarded
    /// unchanged; the escapes stay inside their segment).
    #[arg(long, value_name = "ACTION", default_value = "reject")]
    pub escaped_slashes: crate::proxy::path::EscapedSlashes,
    /// Load balancers and proxies in front of this node (comma-separated addresses or CIDR
    /// blocks): from them, `X-Forwarded-For` names the client (walked from the right past
    /// every trusted hop), and only they may send PROXY protocol headers. From anyone else,
    /// client-sent `X-Forwarded-*` headers are replaced, never believed.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Every connection to --http-addr and --https-addr starts with a PROXY protocol
    /// header (v1 or v2: HAProxy's send-proxy-v2, cloud load balancers), which names the
    /// client. Needs --trusted-proxies; connections from other addresses, or without a
    /// valid header, are closed.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// Most connections open at once from one client IP, per listener (0: no cap).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,
    /// A client connection with no request in flight for this long is closed (HTTP/2
    /// with a GOAWAY).
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A response write the client does not read for this long ends its connection.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// A request body the client sends nothing of for this long is abandoned (408).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// The protocols clients may upgrade to (comma-separated `Upgrade` tokens); other
    /// upgrade requests are proxied as plain requests.
    #[arg(long, value_name = "PROTOCOLS", default_value = "websocket", value_delimiter = ',')]
    pub upgrades: Vec<String>,
    /// A WebSocket (or other upgraded) tunnel with no traffic either way for this long is
    /// closed.
    #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,
    /// Let configs send traffic to link-local addresses (cloud metadata) and to this
    /// node's own listeners. Off: such endpoints are refused when the config is validated.
    #[arg(long)]
    pub allow_internal_endpoints: bool,
    /// Let configs turn off upstream certificate verification (`insecureSkipVerify`).
    #[arg(long)]
    pub allow_insecure_upstream_tls: bool,
    /// Write an access-log line per request.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// The access log's format: `json`, or a template in which `$field` (or `${field}`) is
    /// a field's value and `$$` a dollar sign, e.g. '$client "$method $uri" $status
    /// ${duration_ms}ms'. Fields: time, request_id, client, method, uri, version, status,
    /// route, upstream, endpoint, consumer, attempts, fallback, error, duration_ms.
    #[arg(long, value_name = "json|TEMPLATE", default_value = "json")]
    pub access_log_format: String,
    /// The JSON access log's fields, in order, comma-separated [default: all].
    #[arg(long, value_name = "FIELDS")]
    pub access_log_fields: Option<String>,
    /// Write the access log to this file instead of stdout; SIGHUP reopens it (logrotate,
    /// `systemctl reload`).
    #[arg(long, value_name = "FILE")]
    pub access_log_file: Option<PathBuf>,
    /// Export traces over OTLP/gRPC to this collector or agent (`http://HOST:4317`): a span
    /// per request and per upstream attempt, `traceparent` passed to upstreams, and one
    /// trace per config commit across the nodes. Without it, no tracing work is done.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The share of requests without a sampled `traceparent` that are traced, 0 to 1 (a
    /// caller's sampled `traceparent` is always followed).
    #[arg(long, value_name = "RATIO", default_value_t = 0.01)]
    pub trace_sampling: f64,
    /// This node's id in the Raft cluster. With --data-dir, the node replicates its config
    /// through Raft instead of serving --config-dir alone.
    #[arg(long, value_name = "ID", requires = "data_dir")]
    pub node_id: Option<u64>,
    /// Where the node keeps its Raft log and state (RocksDB).
    #[arg(long, value_name = "DIR", requires = "node_id")]
    pub data_dir: Option<PathBuf>,
    /// Raft RPC listener (node to node only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9800")]
    pub raft_addr: SocketAddr,
    /// The Raft address peers should use, when it differs from --raft-addr (NAT, containers).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_raft_addr: Option<String>,
    /// Region label of this node.
    #[arg(long, value_name = "LABEL", default_value = "default")]
    pub region: String,
    /// Cluster name; nodes refuse Raft messages from other clusters.
    #[arg(long, value_name = "NAME", default_value = "raftgate")]
    pub cluster_name: String,
    /// Initialise a new cluster made of this node (ignored when the data dir already holds one).
    #[arg(long, requires = "data_dir", conflicts_with = "join")]
    pub bootstrap: bool,
    /// Join an existing cluster through the admin address of any member: the node is added
    /// as a learner, catches up, then becomes a voter (ignored when the data dir already
    /// holds a membership).
    #[arg(long, value_name = "ADMIN_ADDR", requires = "data_dir")]
    pub join: Option<String>,
    /// Recover from lost quorum: make this node the only member of its cluster, keeping
    /// its applied config and history, then start. Only when the other members are gone
    /// for good; wipe their data directories and --join them again afterwards.
    #[arg(long, requires = "data_dir", conflicts_with_all = ["join", "bootstrap"])]
    pub force_new_cluster: bool,
    /// With --join: stay a learner (replicates and serves, never votes).
    #[arg(long, requires = "join")]
    pub learner: bool,
    /// Raft timing: `wan` (regions up to ~150 ms apart; failover 6–9 s) or `lan` (~1 s).
    #[arg(long, value_name = "PROFILE", default_value = "wan")]
    pub raft_profile: RaftProfile,
    /// The config repository the leader syncs from: a local path, file://, git://,
    /// https:// or ssh:// URL. Needs --data-dir (the leader keeps a bare mirror there).
    #[arg(long, value_name = "URL", requires = "data_dir")]
    pub git_url: Option<String>,
    /// The branch whose head is the config.
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    pub git_branch: String,
    /// The config directory inside the repository (default: its root).
    #[arg(long, value_name = "PATH")]
    pub git_path: Option<String>,
    /// How often the leader fetches the branch (webhooks and `raftgate config sync` trigger
    /// a fetch at once).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub git_poll_interval: Duration,
    /// User name for https:// or ssh:// (default: the URL's, else `git`).
    #[arg(long, value_name = "NAME")]
    pub git_username: Option<String>,
    /// A file holding the password or access token for https://.
    #[arg(long, value_name = "FILE", conflicts_with = "git_password_env")]
    pub git_password_file: Option<PathBuf>,
    /// An environment variable holding the password or access token for https://.
    #[arg(long, value_name = "VAR")]
    pub git_password_env: Option<String>,
    /// A private key file for ssh:// (default: ask ssh-agent).
    #[arg(long, value_name = "FILE")]
    pub git_ssh_key: Option<PathBuf>,
    /// Accept a branch head that does not descend from the last applied commit (a
    /// force-push). Off by default: rewritten history is refused.
    #[arg(long)]
    pub allow_non_fast_forward: bool,
    /// Refuse commits without an SSH signature from a key in --allowed-signers.
    #[arg(long, requires = "allowed_signers")]
    pub require_signed_commits: bool,
    /// The keys allowed to sign config commits (ssh-keygen allowed_signers format).
    #[arg(long, value_name = "FILE", requires = "require_signed_commits")]
    pub allowed_signers: Option<PathBuf>,
    /// A file holding the shared secret of the Git webhook (POST /webhook on the admin
    /// listener; GitHub, Gitea and GitLab push events).
    #[arg(long, value_name = "FILE", conflicts_with = "git_webhook_secret_env")]
    pub git_webhook_secret_file: Option<PathBuf>,
    /// An environment variable holding the webhook secret.
    #[arg(long, value_name = "VAR")]
    pub git_webhook_secret_env: Option<String>,
    /// Fault injection for tests: the leader waits this long between checking a commit and
    /// proposing it, so a test can kill it in between.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub test_sync_pause: Option<Duration>,
    /// Log entries between Raft snapshots; followers further behind than half of this catch
    /// up by snapshot rather than entry by entry.
    #[arg(long, value_name = "N", default_value_t = raft::config::DEFAULT_SNAPSHOT_EVERY, value_parser = clap::value_parser!(u64).range(2..))]
    pub raft_snapshot_every: u64,
    /// The cluster CA bundle (PEM). With --tls-cert and --tls-key, the Raft listener runs
    /// mTLS (peers must present a certificate from this CA naming the node id they claim)
    /// and the admin listener runs TLS (client certificates from this CA authenticate, as
    /// the admin token does). Create them with `raftgate certs`.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming `node-<id>.<cluster-name>`.
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
    /// How often the TLS files are checked for changes; new connections use new material
    /// at once (SIGHUP reloads immediately).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Run a cluster without TLS on addresses other than loopback, or without any admin
    /// authentication. Anyone who reaches the Raft port can then rewrite the config of
    /// every node: for throwaway labs only. Logged at start and shown by `raftgate status`.
    #[arg(long, conflicts_with = "tls_ca")]
    pub insecure_plaintext: bool,
    /// A listener for Git webhooks alone (POST /webhook, TLS), so the admin listener can
    /// stay private. Its certificate: --webhook-tls-cert/--webhook-tls-key, else the
    /// config's Certificates chosen by SNI. Without it webhooks arrive on the admin listener.
    #[arg(long, value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// The webhook listener's certificate (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["webhook_addr", "webhook_tls_key"])]
    pub webhook_tls_cert: Option<PathBuf>,
    /// The webhook listener's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "webhook_tls_cert")]
    pub webhook_tls_key: Option<PathBuf>,
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, value_name = "FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RaftProfile {
    Wan,
    Lan,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    schemas::Duration::parse(s).map(schemas::Duration::to_std)
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{s}`: write on or off")),
    }
}

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        .context("histogram buckets")?
        .build_recorder();
    let metrics_handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    // The sampler renders the registry every few seconds, which also folds histogram
    // samples into buckets (without that they would pile up between scrapes).
    let traffic = Arc::new(crate::admin::traffic::TrafficLog::default());

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(server) = args.dns_server {
        crate::proxy::dns::set_server(server);
    }
    if let Some(file) = &args.session_key_file {
        let secret = secret_file(file, "--session-key-file", "the session key file")?;
        anyhow::ensure!(
            secret.len() >= 32,
            "--session-key-file {}: {} bytes; it needs at least 32 random bytes (head -c 48 /dev/urandom > session.key)",
            file.display(),
            secret.len()
        );
        crate::proxy::session::set_key(&secret);
    }
    let sessions = match (&args.https_addr, &args.tls_ticket_key_file) {
        (None, _) => None,
        (Some(_), None) => Some(crate::proxy::tls::Sessions::node_local()?),
        (Some(_), Some(file)) => Some(shared_ticket_keys(file, args.tls_ticket_key_rotation)?),
    };
    let engine = Arc::new(Engine::with_sessions(Arc::new(roots), sessions)?);
    let response_cache = Arc::new(crate::proxy::cache::ResponseCache::new(args.cache_max_bytes));
    engine.allow_internal_endpoints(args.allow_internal_endpoints);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(crate::admin::traffic::run(metrics_handle.clone(), traffic.clone(), stop_rx.clone()));
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    let mut tasks = tokio::task::JoinSet::new();
    let telemetry = match &args.otlp_endpoint {
        Some(endpoint) => Some(crate::telemetry::Telemetry::start(&crate::telemetry::Settings {
            endpoint: endpoint.clone(),
            sampling: args.trace_sampling,
            instance: args.node_id.map_or_else(|| "local".to_string(), |id| id.to_string()),
        })?),
        None => None,
    };
    // Before anything slow: a SIGHUP from logrotate must never end the process.
    let access_log = access_log(&args)?;
    tasks.spawn(reopen_on_hangup(access_log.clone(), stop_rx.clone()));

    let tls = load_tls(&args)?;
    let transport = transport(&args, tls.is_some())?;
    if args.admin_read_open && args.admin_token_file.is_none() && tls.is_none() {
        anyhow::bail!(
            "--admin-read-open opens reads of an API that checks nothing: it needs --admin-token-file or --tls-ca"
        );
    }
    let auth = match &args.admin_token_file {
        Some(path) => {
            trust::material::warn_if_exposed(path, "the admin token file");
            crate::admin::auth::Auth::from_file(path, args.admin_read_open)?
        }
        None => crate::admin::auth::Auth::open(),
    };
    let auth = if tls.is_some() { auth.with_certificates(args.admin_read_open) } else { auth };
    if let Some(t) = &tls {
        tasks.spawn(t.clone().watch(args.tls_reload_interval, stop_rx.clone()));
    }
    // Bound first: members advertise the admin address they really listen on.
    let admin_listener = bind(args.admin_addr, "admin").await?;
    let admin_addr = match &args.advertise_admin_addr {
        Some(a) => a.clone(),
        None => {
            advertised(admin_listener.local_addr()?, "--admin-addr", "--advertise-admin-addr", args.data_dir.is_some())?
        }
    };

    // With a data dir the node is a cluster member: its config comes from the Raft log (and
    // it serves the last applied one at once). Without, --config-dir is served directly,
    // and must be valid at start: refuse to start rather than serve nothing silently.
    let mut cluster = None;
    let mut git_sync = None;
    let mut initial = None;
    let mut applied_stamp = None;
    if let (Some(id), Some(dir)) = (args.node_id, &args.data_dir) {
        let settings = ClusterSettings {
            node_id: id,
            data_dir: dir.clone(),
            raft_addr: args.raft_addr,
            advertise_raft_addr: args.advertise_raft_addr.clone(),
            admin_addr: admin_addr.clone(),
            region: args.region.clone(),
            cluster_name: args.cluster_name.clone(),
            bootstrap: args.bootstrap,
            join: args.join.clone(),
            learner: args.learner,
            admin_token: auth.token(),
            lan: args.raft_profile == RaftProfile::Lan,
            snapshot_every: args.raft_snapshot_every,
            tls: tls.clone(),
            force_new_cluster: args.force_new_cluster,
            telemetry: telemetry.clone(),
        };
        if args.advertise_raft_addr.is_none() && args.raft_addr.ip().is_unspecified() {
            anyhow::bail!(
                "--raft-addr {} listens on every interface; peers need one address to reach: set --advertise-raft-addr",
                args.raft_addr
            );
        }
        let c = crate::cluster::start(&settings, engine.clone(), &mut tasks, fatal_tx.clone(), stop_rx.clone()).await?;
        if let Some(url) = &args.git_url {
            let git = git_settings(&args, url, dir, telemetry.clone())?;
            tracing::info!(url = %crate::gitops::repo::redact_url(url), branch = %args.git_branch, path = ?args.git_path, "syncing config from Git (when leader)");
            git_sync = Some(crate::gitops::spawn(git, c.clone(), &mut tasks, stop_rx.clone()));
        }
        cluster = Some(c);
    } else if args.git_url.is_some() {
        anyhow::bail!(
            "--git-url needs --node-id and --data-dir (a single node can run as a one-node cluster with --bootstrap)"
        );
    } else if let Some(dir) = &args.config_dir {
        // Stamped before it is read: a change made meanwhile shows on the first tick.
        applied_stamp = schemas::source::dir_stamp(dir).ok();
        let compiled = config_dir::load(dir, &policy(&args))
            .map_err(|e| anyhow::anyhow!("config in {} is invalid:\n{e}", dir.display()))?;
        let origin = ConfigOrigin { commit: None, source: dir.display().to_string() };
        initial = Some(engine.apply(Arc::new(compiled.snapshot), compiled.hash, origin).await?);
    }

    let trusted_proxies =
        Arc::new(TrustedProxies::parse(&args.trusted_proxies).map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?);
    if args.proxy_protocol && trusted_proxies.is_empty() {
        anyhow::bail!(
            "--proxy-protocol needs --trusted-proxies: name the load balancers allowed to say who the client is"
        );
    }
    let settings = ServerSettings {
        max_connections: args.max_connections,
        max_header_bytes: args.max_header_bytes,
        header_timeout: args.header_timeout,
        max_connections_per_ip: args.max_connections_per_ip,
        idle_timeout: args.idle_timeout,
        write_timeout: args.write_timeout,
        trusted_proxies: trusted_proxies.clone(),
        proxy_protocol: args.proxy_protocol,
        ..ServerSettings::default()
    };
    let proxy = Arc::new(Proxy {
        engine: engine.clone(),
        cache: response_cache.clone(),
        settings: ProxySettings {
            max_body_bytes: args.max_body_bytes,
            access_log,
            telemetry: telemetry.clone(),
            escaped_slashes: args.escaped_slashes,
            upgrades: args.upgrades.iter().map(|p| p.trim().to_ascii_lowercase()).collect(),
            tunnel_idle_timeout: args.tunnel_idle_timeout,
            body_timeout: args.body_timeout,
            trusted_proxies,
        },
    });

    let http = bind(args.http_addr, "http").await?;
    let http_addr = http.local_addr()?;
    tasks.spawn(server::serve(http, None, proxy.clone(), settings.clone(), stop_rx.clone()));
    let mut https_addr = None;
    if let Some(addr) = args.https_addr {
        let l = bind(addr, "https").await?;
        https_addr = Some(l.local_addr()?.to_string());
        let tls = server::TlsListener { config_for: Arc::new(engine.tls_lookup()) };
        tasks.spawn(server::serve(l, Some(tls), proxy.clone(), settings.clone(), stop_rx.clone()));
        let node = args.node_id.map_or_else(|| "local".to_string(), |id| id.to_string());
        tasks.spawn(watch_certificates(engine.clone(), node, args.certificate_check_interval, stop_rx.clone()));
    }
    let node = Arc::new(NodeInfo {
        version: env!("CARGO_PKG_VERSION"),
        started_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        http_addr: Some(http_addr.to_string()),
        https_addr,
        transport: transport.name(),
    });
    let grpc = crate::admin::grpc::AdminService {
        cluster: cluster.clone(),
        engine: engine.clone(),
        node: node.clone(),
        token: auth.token(),
        tls: tls.clone(),
        members: Default::default(),
        sync: git_sync.clone(),
        traffic,
        cache: response_cache.clone(),
    };
    let admin = Arc::new(Admin {
        grpc_server: admin::grpc_server(grpc.clone()),
        grpc,
        engine: engine.clone(),
        metrics: metrics_handle,
        node: node.clone(),
        webhook: webhook_secret(&args)?.map(|secret| crate::admin::Webhook { secret, branch: args.git_branch.clone() }),
        webhook_elsewhere: args.webhook_addr.is_some(),
        ui: Default::default(),
        auth,
    });
    if let Some(addr) = args.webhook_addr {
        let config = webhook_tls(&args, &engine)?;
        let l = bind(addr, "webhook").await?;
        tasks.spawn(admin::serve_webhooks(l, admin.clone(), config, stop_rx.clone()));
    }
    tasks.spawn(admin::serve(admin_listener, admin, tls.clone(), stop_rx.clone()));
    if let Some(dir) = args.config_dir.clone() {
        let (sink, hash) = match cluster.clone() {
            // A cluster without Git: the leader proposes the directory's tree through Raft.
            Some(c) => (config_dir::Sink::Cluster(c), schemas::ContentHash([0; 32])),
            None => (config_dir::Sink::Engine(engine.clone()), initial.unwrap_or(schemas::ContentHash([0; 32]))),
        };
        let watch = config_dir::Watch {
            dir,
            interval: args.config_poll_interval,
            policy: policy(&args),
            applied: applied_stamp,
        };
        tasks.spawn(config_dir::watch_dir(watch, sink, hash, stop_rx.clone()));
    }

    drop(fatal_tx);
    let fatal = tokio::select! {
        _ = shutdown_signal() => None,
        Some(e) = fatal_rx.recv() => Some(e),
    };
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let Some(c) = cluster {
        let _ = c.raft.shutdown().await;
    }
    if let Some(t) = &telemetry {
        t.flush();
    }
    tracing::info!("stopped");
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The node's TLS material, checked now so a wrong file stops the start with its reason.
fn load_tls(args: &Args) -> anyhow::Result<Option<Arc<trust::Tls>>> {
    let (Some(ca), Some(cert), Some(key)) = (&args.tls_ca, &args.tls_cert, &args.tls_key) else { return Ok(None) };
    trust::check_cluster_name(&args.cluster_name).map_err(|e| anyhow::anyhow!("--cluster-name: {e}"))?;
    let files = trust::TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
    let tls = trust::Tls::load(files, &args.cluster_name, args.node_id)?;
    let info = tls.info();
    tracing::info!(names = ?info.names, not_after = info.not_after, "TLS on the Raft and admin listeners");
    Ok(Some(tls))
}

/// How the Raft and admin listeners are protected, refusing the unsafe setups: a cluster
/// reachable beyond loopback without TLS, and a cluster whose admin API nobody guards.
fn transport(args: &Args, tls: bool) -> anyhow::Result<crate::admin::status::Transport> {
    use crate::admin::status::Transport;
    if tls {
        return Ok(Transport::Mtls);
    }
    let cluster = args.node_id.is_some();
    let exposed: Vec<String> = [
        ("--admin-addr", Some(args.admin_addr.ip().is_loopback()), args.advertise_admin_addr.as_deref()),
        ("--raft-addr", cluster.then(|| args.raft_addr.ip().is_loopback()), args.advertise_raft_addr.as_deref()),
    ]
    .into_iter()
    .filter(|(_, loopback, advertised)| *loopback == Some(false) || advertised.is_some_and(|a| !advertised_loopback(a)))
    .map(|(flag, _, _)| flag.to_string())
    // Joining sends the token to the member named by --join.
    .chain(args.join.as_deref().filter(|a| !advertised_loopback(a)).map(|_| "--join".to_string()))
    .collect();
    if args.insecure_plaintext {
        tracing::warn!(
            exposed = ?exposed,
            "--insecure-plaintext: Raft and admin traffic is neither encrypted nor authenticated; anyone who \
             reaches these ports can rewrite every node's config"
        );
        return Ok(Transport::InsecurePlaintext);
    }
    if cluster && !exposed.is_empty() {
        anyhow::bail!(
            "{} listen beyond loopback without TLS: anyone on that network could take over the cluster. Pass \
             --tls-ca, --tls-cert and --tls-key (create them with `raftgate certs ca` and `raftgate certs node`), \
             or --insecure-plaintext for a throwaway lab",
            exposed.join(" and ")
        );
    }
    if cluster && args.admin_token_file.is_none() {
        anyhow::bail!(
            "cluster mode needs admin authentication, or anyone who reaches {} can change the membership: pass \
             --tls-ca/--tls-cert/--tls-key (client certificates authenticate), or --admin-token-file, or \
             --insecure-plaintext to run an open cluster on purpose",
            args.admin_addr
        );
    }
    if !exposed.is_empty() && args.admin_token_file.is_some() {
        anyhow::bail!(
            "{} beyond loopback without TLS: the admin token would cross the network in the clear. Pass \
             --tls-ca, --tls-cert and --tls-key, or --insecure-plaintext",
            exposed.join(" and ")
        );
    }
    Ok(Transport::Plaintext)
}

/// Whether an advertised `host:port` is a loopback address (a name is not).
fn advertised_loopback(addr: &str) -> bool {
    trust::net::split_addr(addr)
        .ok()
        .and_then(|(_, host)| host.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
        || addr.starts_with("localhost:")
}

/// A secret shared by the nodes (`flag`'s file): read with a size bound, with a warning
/// when others can read it.
fn secret_file(file: &std::path::Path, flag: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    let secret = trust::material::read_bounded(file, 4096, trust::material::Symlinks::Follow)
        .map_err(|why| anyhow::anyhow!("{flag} {}: {why}", file.display()))?;
    trust::material::warn_if_exposed(file, what);
    Ok(secret)
}

/// Session tickets with keys derived from `file` (see `proxy::tickets`).
fn shared_ticket_keys(file: &std::path::Path, rotation: Duration) -> anyhow::Result<crate::proxy::tls::Sessions> {
    let secret = secret_file(file, "--tls-ticket-key-file", "the TLS ticket key file")?;
    let tickets = crate::proxy::tickets::SharedTickets::new(&secret, rotation)
        .with_context(|| format!("--tls-ticket-key-file {}", file.display()))?;
    tracing::info!(key = %tickets.fingerprint(), "TLS session tickets use keys shared by the nodes with the same --tls-ticket-key-file");
    Ok(crate::proxy::tls::Sessions::new(Arc::new(tickets)))
}

/// Renewal without a commit: checks the certificates' files every `interval` until
/// shutdown (see `proxy::certs`).
async fn watch_certificates(engine: Arc<Engine>, node: String, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => engine.refresh_certificates(&node).await,
            _ = stop.changed() => return,
        }
    }
}

/// The webhook listener's TLS: its own files, else the config's Certificates by SNI.
fn webhook_tls(args: &Args, engine: &Arc<Engine>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config = match (&args.webhook_tls_cert, &args.webhook_tls_key) {
        (Some(cert), Some(key)) => {
            let chain = trust::material::load_certs(cert, "the webhook certificate")?;
            let key = trust::material::load_key(key)?;
            let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .context("the webhook certificate and key do not match")?;
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            c.ignore_client_order = true;
            Arc::new(c)
        }
        _ => crate::proxy::tls::server_config(engine.cert_lookup())?,
    };
    Ok(config)
}

/// The Git source from the flags; credentials and signers are read now, so a bad file
/// stops the start with a clear error rather than the first sync.
/// What the operator allows configs to do, and the addresses they may never target: this
/// node's own listeners (with the usual layout, every node's).
fn policy(args: &Args) -> schemas::Policy {
    let mut reserved: Vec<String> = [Some(args.http_addr), args.https_addr, Some(args.admin_addr), args.webhook_addr]
        .into_iter()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    if args.data_dir.is_some() {
        reserved.push(args.raft_addr.to_string());
    }
    reserved.extend(args.advertise_raft_addr.iter().chain(&args.advertise_admin_addr).cloned());
    schemas::Policy {
        allow_internal_endpoints: args.allow_internal_endpoints,
        allow_insecure_tls: args.allow_insecure_upstream_tls,
        reserved,
    }
}

fn git_settings(
    args: &Args,
    url: &str,
    data_dir: &std::path::Path,
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
) -> anyhow::Result<crate::gitops::Settings> {
    let password = match (&args.git_password_file, &args.git_password_env) {
        (Some(f), _) => Some({
            trust::material::warn_if_exposed(f, "the Git password file");
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --git-password-file {}", f.display()))?
                .trim()
                .to_string()
        }),
        (None, Some(var)) => Some(
            std::env::var(var).with_context(|| format!("--git-password-env: ${var} is not set"))?.trim().to_string(),
        ),
        (None, None) => None,
    };
    let signers = match &args.allowed_signers {
        Some(f) => Some(crate::gitops::signers::AllowedSigners::load(f)?),
        None => None,
    };
    Ok(crate::gitops::Settings {
        source: crate::gitops::repo::Source {
            url: url.to_string(),
            branch: args.git_branch.clone(),
            path: args.git_path.clone().filter(|p| !p.is_empty() && p != "/" && p != "."),
            credentials: crate::gitops::repo::Credentials {
                username: args.git_username.clone(),
                password,
                ssh_key: args.git_ssh_key.clone(),
            },
            allow_non_fast_forward: args.allow_non_fast_forward,
            signers,
            policy: policy(args),
        },
        poll_interval: args.git_poll_interval,
        test_pause: args.test_sync_pause,
        mirror_dir: data_dir.join("git").join("mirror.git"),
        telemetry,
    })
}

fn webhook_secret(args: &Args) -> anyhow::Result<Option<crate::gitops::webhook::Secret>> {
    use crate::gitops::webhook::Secret;
    let secret = match (&args.git_webhook_secret_file, &args.git_webhook_secret_env) {
        (Some(f), _) => {
            trust::material::warn_if_exposed(f, "the webhook secret file");
            Some(Secret::from_file(f))
        }
        (None, Some(var)) => Some(Secret::from_env(var)),
        (None, None) => None,
    };
    Ok(secret.transpose()?)
}

/// The address to tell others for a bound listener: refuses a wildcard in cluster mode,
/// where peers and clients must be able to dial it.
fn advertised(bound: SocketAddr, flag: &str, advertise_flag: &str, cluster: bool) -> anyhow::Result<String> {
    if cluster && bound.ip().is_unspecified() {
        anyhow::bail!(
            "{flag} {bound} listens on every interface; peers need one address to reach: set {advertise_flag}"
        );
    }
    Ok(bound.to_string())
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({name})"))?;
    tracing::info!(listener = name, addr = %l.local_addr()?, "listening");
    Ok(l)
}

/// The access log the flags describe; `None` with `--access-log off`.
fn access_log(args: &Args) -> anyhow::Result<Option<Arc<AccessLog>>> {
    if !args.access_log {
        return Ok(None);
    }
    let opts = crate::proxy::accesslog::Options {
        format: Some(args.access_log_format.clone()),
        fields: args.access_log_fields.clone(),
        file: args.access_log_file.clone(),
    };
    Ok(Some(Arc::new(AccessLog::new(&opts).map_err(anyhow::Error::msg)?)))
}

/// SIGHUP reopens the access log file (logrotate moved it away). Handled even without a
/// file: its default action would end the process.
async fn reopen_on_hangup(log: Option<Arc<AccessLog>>, mut shutdown: watch::Receiver<bool>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = shutdown.changed() => return,
        }
        match log.as_deref().and_then(|l| l.file().map(|f| (l, f.to_path_buf()))) {
            Some((l, file)) => match l.reopen() {
                Ok(()) => tracing::info!(file = %file.display(), "SIGHUP: access log reopened"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: cannot reopen the access log; still writing to the old file")
                }
            },
            None => tracing::info!("SIGHUP: no access log file to reopen"),
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
