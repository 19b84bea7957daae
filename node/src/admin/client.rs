//! Admin API calls from one node to another: forwarding to the leader, `--join`, and the
//! leader gathering every member's status.

use std::time::Duration;

use schemas::admin::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// The largest admin message either side accepts (configs, histories and statuses).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A lazily connected client for the admin API at `addr` (`host:port`).
pub fn connect(addr: &str) -> Result<AdminClient<Channel>, tonic::Status> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::invalid_argument(format!("bad admin address `{addr}`: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    Ok(AdminClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// A request carrying the admin bearer token, when there is one.
pub fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        if let Ok(v) = format!("Bearer {t}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
    }
    req
}
