//! Talking to a node's admin API, and the errors a user sees: one clear line each, with a
//! documented exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use schemas::admin::admin_client::AdminClient;
use schemas::admin_client;
use tonic::transport::Channel;

/// What went wrong, by what the user should do about it.
#[derive(Debug)]
pub enum CliError {
    /// The answer is "no": unhealthy cluster, refused commit, invalid config. Exit 1.
    Failed(String),
    /// The command cannot run as given: bad arguments, unreadable input. Exit 2.
    Usage(String),
    /// No admin API at the address. Exit 3.
    Unreachable(String),
    /// The token is missing or wrong. Exit 4.
    Auth(String),
    /// No answer in time. Exit 5.
    Timeout(String),
    /// The cluster refused the request (not found, conflict, no leader). Exit 6.
    Refused(String),
}

impl CliError {
    pub fn exit(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
            CliError::Auth(_) => 4,
            CliError::Timeout(_) => 5,
            CliError::Refused(_) => 6,
        })
    }

    pub fn message(&self) -> &str {
        match self {
            CliError::Failed(m)
            | CliError::Usage(m)
            | CliError::Unreachable(m)
            | CliError::Auth(m)
            | CliError::Timeout(m)
            | CliError::Refused(m) => m,
        }
    }
}

/// Connection settings shared by every command.
#[derive(Debug, Clone)]
pub struct Target {
    pub admin: String,
    pub token: Option<String>,
    pub timeout: Duration,
    /// TLS to the admin API: the client config (CA, and our certificate when given) and the
    /// name the server's certificate must carry (default: the host dialed).
    pub tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
}

/// How to reach the admin API, from flags, environment and the context file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub admin: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

fn tls_config(s: &Settings) -> Result<Option<Arc<rustls::ClientConfig>>, CliError> {
    let https = s.admin.as_deref().is_some_and(|a| a.starts_with("https://"));
    let Some(ca) = &s.ca else {
        if https || s.cert.is_some() {
            return Err(CliError::Usage(
                "TLS to the admin API needs the cluster CA: pass --ca (or RAFTGATE_CA, or `ca:` in the context)".into(),
            ));
        }
        return Ok(None);
    };
    let identity = match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => return Err(CliError::Usage("--cert and --key go together".into())),
    };
    trust::material::client_config_from_files(ca, identity).map(Some).map_err(|e| CliError::Usage(e.to_string()))
}

impl Target {
    pub fn new(s: Settings, timeout: Duration) -> Result<Self, CliError> {
        let tls = tls_config(&s)?.map(|c| (c, s.tls_server_name.clone()));
        let admin = s.admin.clone().unwrap_or_else(|| "127.0.0.1:9900".into());
        let (token_file, token_env) = (s.token_file, s.token);
        let token = match token_file {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| CliError::Usage(format!("cannot read the token file {}: {e}", path.display())))?
                    .trim()
                    .to_string(),
            ),
            None => token_env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        };
        Ok(Self { admin, token, timeout, tls })
    }

    /// The same settings for another node's admin address (its certificate is checked
    /// against the host dialed).
    pub fn at(&self, admin: &str) -> Target {
        let tls = self.tls.as_ref().map(|(c, _)| (c.clone(), None));
        Target { admin: admin.to_string(), tls, ..self.clone() }
    }

    pub fn client(&self) -> Result<AdminClient<Channel>, CliError> {
        let bad = |e: trust::net::BadAddress| CliError::Usage(format!("--admin `{}`: {}", self.admin, e.reason));
        let (_, host) = trust::net::split_addr(&self.admin).map_err(bad)?;
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if self.token.is_some() && self.tls.is_none() && !loopback {
            return Err(CliError::Usage(format!(
                "refusing to send the admin token to {} in plaintext: pass --ca with the cluster CA (the node must run \
                 TLS), or authenticate with --cert/--key",
                self.admin
            )));
        }
        let tls = self.tls.as_ref().map(|(c, name)| (trust::ClientTls::Fixed(c.clone()), name.clone()));
        let connect_timeout = self.timeout.min(Duration::from_secs(5));
        trust::channel(&self.admin, tls, |e| admin_client::endpoint_settings(e, connect_timeout))
            .map(admin_client::client)
            .map_err(bad)
    }

    /// A request with the token and the deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_for(message, self.timeout)
    }

    pub fn request_for<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        admin_client::request(message, self.token.as_deref(), Some(timeout))
    }

    /// Turns a failed call into what the user should read.
    pub fn error(&self, status: tonic::Status) -> CliError {
        use tonic::Code;
        let admin = &self.admin;
        // A status made by the client (nothing answered) carries no response headers.
        let from_server = !status.metadata().is_empty();
        match status.code() {
            // Nothing answered (a transport failure surfaces as UNAVAILABLE, or as UNKNOWN when
            // the connection broke mid-handshake, e.g. plaintext against a TLS listener).
            Code::Unavailable | Code::Unknown | Code::Internal if !from_server => {
                let cause = cause(&status);
                let hint = if cause.contains("certificate") || cause.contains("Certificate") {
                    "The node's certificate is not trusted by --ca or is not valid for this address \
                     (--tls-server-name names the expected one)."
                } else if self.tls.is_none() {
                    "Is raftgated running there? If it runs TLS, pass --ca. \
                     Point --admin (or RAFTGATE_ADMIN) at a node's --admin-addr."
                } else {
                    "Is raftgated running there? Point --admin (or RAFTGATE_ADMIN) at a node's --admin-addr."
                };
                CliError::Unreachable(format!("cannot reach the admin API at {admin}: {cause}. {hint}"))
            }
            Code::Unauthenticated => CliError::Auth(format!(
                "{admin} refused the call: {}. Pass a client certificate (--cert/--key) or the admin token \
                 (--token-file or RAFTGATE_TOKEN).",
                status.message()
            )),
            Code::PermissionDenied => CliError::Auth(format!("{admin} refused the call: {}", status.message())),
            Code::DeadlineExceeded | Code::Cancelled if !from_server => CliError::Timeout(format!(
                "no answer from {admin} within {}s; the node may be overloaded or partitioned (raise --timeout)",
                self.timeout.as_secs_f32()
            )),
            Code::DeadlineExceeded => CliError::Timeout(status.message().to_string()),
            Code::Unimplemented => CliError::Refused(format!(
                "{admin} does not know this call: is it an older raftgated? ({})",
                status.message()
            )),
            _ => CliError::Refused(status.message().to_string()),
        }
    }
}

/// The innermost cause of a transport error (\"Connection refused\", \"dns error\").
fn cause(status: &tonic::Status) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut last = status.message().to_string();
    while let Some(e) = source {
        last = e.to_string();
        source = e.source();
    }
    last
}
