//! The one client of the admin API: the `raftgate` CLI uses it, and so do nodes calling
//! each other (a follower forwarding to the leader, `--join`, the leader gathering every
//! member's status). Both sides hold messages to the same size limit. The channel (TLS or
//! not, and whose certificate) is the caller's: see `trust::channel`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::admin::admin_client::AdminClient;

/// The largest admin message either side accepts (configs, histories and statuses).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// An admin address that is not `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("bad admin address `{addr}`: {reason}")]
pub struct BadAddress {
    pub addr: String,
    pub reason: String,
}

/// A lazily connected plaintext client for the admin API at `addr` (`host:port`, or with
/// `http://`).
pub fn connect(addr: &str, connect_timeout: Duration) -> Result<AdminClient<Channel>, BadAddress> {
    let host_port = addr.strip_prefix("http://").unwrap_or(addr);
    let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
        .map_err(|e| BadAddress { addr: addr.to_string(), reason: e.to_string() })?;
    Ok(client(endpoint_settings(endpoint, connect_timeout).connect_lazy()))
}

/// The endpoint settings every admin client uses.
pub fn endpoint_settings(endpoint: Endpoint, connect_timeout: Duration) -> Endpoint {
    endpoint.connect_timeout(connect_timeout).tcp_nodelay(true)
}

/// An admin client over `channel`, with the message limits.
pub fn client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A request carrying the admin bearer token, when there is one, and a deadline, when given.
pub fn request<T>(message: T, token: Option<&str>, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    if let Some(t) = token {
        if let Ok(v) = format!("Bearer {t}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
    }
    req
}
