//! Talking to a node's admin API, and the errors a user sees: one clear line each, with a
//! documented exit code.

use std::path::PathBuf;
use std::process::ExitCode;
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
}

impl Target {
    pub fn new(
        admin: String,
        token_file: Option<PathBuf>,
        token_env: Option<String>,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        let token = match token_file {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| CliError::Usage(format!("cannot read the token file {}: {e}", path.display())))?
                    .trim()
                    .to_string(),
            ),
            None => token_env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        };
        Ok(Self { admin, token, timeout })
    }

    /// The same settings for another node's admin address.
    pub fn at(&self, admin: &str) -> Target {
        Target { admin: admin.to_string(), ..self.clone() }
    }

    pub fn client(&self) -> Result<AdminClient<Channel>, CliError> {
        admin_client::connect(&self.admin, self.timeout.min(Duration::from_secs(5)))
            .map_err(|e| CliError::Usage(format!("--admin `{}` is not host:port: {}", self.admin, e.reason)))
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
            Code::Unavailable if !from_server => CliError::Unreachable(format!(
                "cannot reach the admin API at {admin}: {}. Is raftgated running there? \
                 Point --admin (or RAFTGATE_ADMIN) at a node's --admin-addr.",
                cause(&status)
            )),
            Code::Unauthenticated => CliError::Auth(format!(
                "{admin} refused the call: {}. Pass the cluster's admin token with --token-file or RAFTGATE_TOKEN.",
                status.message()
            )),
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
