//! The Raft transport: a tonic gRPC service (`schemas/proto/raft.proto`) on its own
//! listener, and a client with one lazily connected channel per peer, reused by every RPC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};

pub mod pb {
    tonic::include_proto!("raftgate.raft.v1");
}

use pb::raft_service_client::RaftServiceClient;
use pb::raft_service_server::{RaftService, RaftServiceServer};
use pb::{RaftReply, RaftRequest};

/// Largest RPC message either side accepts: snapshots carry whole compiled configs.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

// ---------------------------------------------------------------------------------------
// Client

/// Creates per-peer clients. Channels are cached by peer address, so openraft's frequent
/// `new_client` calls (per replication stream, per election) never dial.
#[derive(Debug, Clone)]
pub struct Network {
    cluster: String,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    pub fn new(cluster: impl Into<String>) -> Self {
        Self { cluster: cluster.into(), channels: Arc::default() }
    }

    fn channel(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|error| BadAddress { addr: addr.to_string(), error })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        let client = self.channel(&node.raft_addr).map(|c| {
            RaftServiceClient::new(c)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        Peer { target, cluster: self.cluster.clone(), client }
    }
}

/// The client side of one peer.
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    cluster: String,
    /// A bad address is kept rather than a client: every RPC to the peer then fails as
    /// unreachable (openraft backs off) until the membership names a good one.
    client: Result<RaftServiceClient<Channel>, BadAddress>,
}

/// A peer's Raft address that is not a URI authority.
#[derive(Debug, thiserror::Error)]
#[error("bad raft address `{addr}`: {error}")]
struct BadAddress {
    addr: String,
    error: tonic::transport::Error,
}

/// A failed RPC, as openraft records it: the status code and message, not tonic's metadata.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", .0.code(), .0.message())]
struct WireError(tonic::Status);

type Rpc<E> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

impl Peer {
    async fn call<Req, Resp, E>(&mut self, kind: Kind, req: &Req, option: &RPCOption) -> Result<Resp, Rpc<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let payload = postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest { cluster: self.cluster.clone(), payload });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            Kind::Vote => client.vote(request).await,
            Kind::Append => client.append_entries(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let code = status.code();
                let e = WireError(status);
                return Err(match code {
                    // Unreachable makes openraft back off instead of retrying hot.
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        if !reply.error.is_empty() {
            let err: RaftError<NodeId, E> =
                postcard::from_bytes(&reply.error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            return Err(RPCError::RemoteError(RemoteError::new(self.target, err)));
        }
        postcard::from_bytes(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Vote,
    Append,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<InstallSnapshotError>> {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// The server side: decodes, hands the message to the local Raft, encodes the answer.
#[derive(Clone)]
pub struct RaftServer {
    raft: Raft,
    cluster: String,
}

impl std::fmt::Debug for RaftServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftServer").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

/// The tonic service for a node's `--raft-addr` listener.
pub fn service(raft: Raft, cluster: impl Into<String>) -> RaftServiceServer<RaftServer> {
    RaftServiceServer::new(RaftServer { raft, cluster: cluster.into() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl RaftServer {
    fn decode<T: DeserializeOwned>(&self, req: RaftRequest) -> Result<T, tonic::Status> {
        if req.cluster != self.cluster {
            return Err(tonic::Status::permission_denied(format!(
                "this node belongs to cluster `{}`, not `{}`",
                self.cluster, req.cluster
            )));
        }
        postcard::from_bytes(&req.payload).map_err(|e| tonic::Status::invalid_argument(format!("bad payload: {e}")))
    }
}

fn reply<T: Serialize, E: Serialize>(r: Result<T, E>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    let enc = |e: postcard::Error| tonic::Status::internal(format!("encoding the reply: {e}"));
    Ok(tonic::Response::new(match r {
        Ok(v) => RaftReply { payload: postcard::to_allocvec(&v).map_err(enc)?, error: Vec::new() },
        Err(e) => RaftReply { payload: Vec::new(), error: postcard::to_allocvec(&e).map_err(enc)? },
    }))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn vote(&self, req: tonic::Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = self.decode(req.into_inner())?;
        reply(self.raft.vote(rpc).await)
    }

    async fn append_entries(
        &self,
        req: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode(req.into_inner())?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.decode(req.into_inner())?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}
