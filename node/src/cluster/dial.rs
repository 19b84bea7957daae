//! Dialing another member's admin API, as this node.

use std::sync::Arc;
use std::time::Duration;

use schemas::admin::admin_client::AdminClient;
use schemas::admin_client;
use tonic::transport::Channel;
use tonic::Status;

/// A client for another member's admin API. With TLS this node presents its own
/// certificate, and the member must prove it is node `id` when its id is known.
pub fn connect_member(
    tls: Option<&Arc<trust::Tls>>,
    addr: &str,
    id: Option<u64>,
) -> Result<AdminClient<Channel>, Status> {
    let tls = tls.map(|t| (trust::ClientTls::Node(t.clone()), id.map(|id| trust::node_name(t.cluster(), id))));
    trust::channel(addr, tls, |e| admin_client::endpoint_settings(e, Duration::from_secs(3)))
        .map(admin_client::client)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}
