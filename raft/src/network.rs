//! The Raft transport: a tonic gRPC service (`schemas/proto/raft.proto`) on its own
//! listener, and a client with one lazily connected channel per peer, reused by every RPC.
//!
//! With TLS (the default outside loopback) both ends prove who they are: the client checks
//! that the server's certificate names the node it dials (`node-<id>.<cluster>`), and the
//! server checks that every message's sender — the candidate of a Vote, the leader of an
//! AppendEntries or InstallSnapshot — is the node named in the caller's certificate. A node
//! therefore cannot vote, append or send snapshots as another node.
//!
//! Every message is bounded: the gRPC message size, the snapshot a peer may stream (its
//! chunks in order, its total under `MAX_SNAPSHOT_BYTES`), concurrent streams per
//! connection and the time one request may take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use trust::net::BadAddress;

use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};

pub mod pb {
    tonic::include_proto!("raftgate.raft.v1");
}

use pb::raft_service_client::RaftServiceClient;
use pb::raft_service_server::{RaftService, RaftServiceServer};
use pb::{RaftReply, RaftRequest};

/// Largest RPC message either side accepts: snapshots carry whole compiled configs.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Largest log entry that can be proposed: one entry must fit in one AppendEntries message,
/// with room for the message's own fields. Larger configs are refused before they are
/// proposed (`entry_fits`).
pub const MAX_ENTRY_BYTES: usize = MAX_MESSAGE_BYTES - (1 << 20);

/// Largest snapshot a peer may stream: the state machine holds one config entry, the latest
/// refusal (another entry at most), its history (100 records of clipped text) and the
/// membership.
pub const MAX_SNAPSHOT_BYTES: u64 = 2 * (MAX_ENTRY_BYTES as u64) + (8 << 20);

/// Why an entry cannot be proposed.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(
        "the entry is {bytes} bytes encoded; Raft entries are limited to {MAX_ENTRY_BYTES} bytes (make the config \
         smaller: fewer or shorter routes, or split the gateway into several clusters)"
    )]
    TooLarge { bytes: usize },
    #[error("cannot encode the entry: {0}")]
    Encode(#[from] postcard::Error),
}

/// Checks that `value` (a `Request`, or the config inside one) can travel as one Raft entry.
pub fn entry_fits<T: Serialize + ?Sized>(value: &T) -> Result<usize, EntryError> {
    // The entry's own fields (log id, the request's tag) are a few bytes beyond the value.
    let bytes = postcard::experimental::serialized_size(value)? + 64;
    if bytes > MAX_ENTRY_BYTES {
        return Err(EntryError::TooLarge { bytes });
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------
// Client

/// Creates per-peer clients. Channels are cached by peer address, so openraft's frequent
/// `new_client` calls (per replication stream, per election) never dial.
///
/// With TLS, a channel is also bound to the node id it dials (the server must prove it is
/// that node), so the cache key is the id and the address.
#[derive(Debug, Clone)]
pub struct Network {
    cluster: String,
    tls: Option<Arc<trust::Tls>>,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

impl Network {
    /// A transport for `cluster`; plaintext when `tls` is `None` (loopback or
    /// `--insecure-plaintext`).
    pub fn new(cluster: impl Into<String>, tls: Option<Arc<trust::Tls>>) -> Self {
        Self { cluster: cluster.into(), tls, channels: Arc::default() }
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, BadAddress> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let key = (target, addr.to_string());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let tls = self
            .tls
            .as_ref()
            .map(|t| (trust::ClientTls::Node(t.clone()), Some(trust::node_name(&self.cluster, target))));
        let channel = trust::channel(addr, tls, |e| {
            e.connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_while_idle(true)
        })?;
        map.insert(key, channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        let client = self.channel(target, &node.raft_addr).map(|c| {
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
        let payload = postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(kind, payload, option, None).await
    }

    /// Sends an encoded message. `entries` (AppendEntries only): when the peer finds the
    /// message too large, openraft is told to send half as many entries.
    async fn send<Resp, E>(
        &mut self,
        kind: Kind,
        payload: Vec<u8>,
        option: &RPCOption,
        entries: Option<u64>,
    ) -> Result<Resp, Rpc<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
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
                return Err(match (code, entries) {
                    // Unreachable makes openraft back off instead of retrying hot.
                    (tonic::Code::Unavailable, _) => RPCError::Unreachable(Unreachable::new(&e)),
                    // The peer's decoder refused the size: shrink the batch.
                    (tonic::Code::OutOfRange, Some(n)) if n > 1 => {
                        RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(n / 2))
                    }
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
        // A batch too large for one message is sent as smaller batches: openraft shrinks
        // it when told `PayloadTooLarge` (a network error would only be retried as is).
        let entries = rpc.entries.len() as u64;
        let shrink = || RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1)));
        let payload = postcard::to_allocvec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if payload.len() > MAX_MESSAGE_BYTES - 4096 && entries > 1 {
            return Err(shrink());
        }
        self.send(Kind::Append, payload, &option, Some(entries)).await
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

/// The server side: checks who sent a message, decodes it, hands it to the local Raft and
/// encodes the answer.
#[derive(Clone)]
pub struct RaftServer {
    raft: Raft,
    cluster: String,
    /// Callers must present a node certificate (the listener runs TLS).
    secure: bool,
    /// Snapshots being received, by sending node: where the next chunk must start.
    receiving: Arc<Mutex<HashMap<NodeId, Receiving>>>,
}

/// The progress of one snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Receiving {
    snapshot_id: String,
    /// Where the next chunk starts (the bytes received so far).
    next: u64,
    /// Where the last accepted chunk started: openraft re-sends a chunk whose answer it
    /// did not get.
    last: u64,
}

/// Snapshot streams tracked at once; more means someone is playing (each sender is one
/// node id, and with TLS only members have ids).
const MAX_RECEIVING: usize = 64;

impl std::fmt::Debug for RaftServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftServer")
            .field("cluster", &self.cluster)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// The tonic service for a node's `--raft-addr` listener. `secure`: the listener runs mTLS
/// (`trust::incoming` with a required client certificate) and every message must come from
/// the node its certificate names.
pub fn service(
    raft: Raft,
    cluster: impl Into<String>,
    secure: bool,
) -> InterceptedService<RaftServiceServer<RaftServer>, NodesOnly> {
    let server =
        RaftServiceServer::new(RaftServer { raft, cluster: cluster.into(), secure, receiving: Arc::default() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(server, NodesOnly { secure })
}

/// Refuses a caller without a node certificate before its message is read: a certificate
/// from the CA that names no node (an operator's) must not make a node decode 64 MiB.
#[derive(Debug, Clone, Copy)]
pub struct NodesOnly {
    secure: bool,
}

impl tonic::service::Interceptor for NodesOnly {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.secure {
            return Ok(req);
        }
        match req.extensions().get::<trust::Peer>() {
            Some(trust::Peer { identity: trust::Identity::Node(_), .. }) => Ok(req),
            Some(peer) => Err(refused(
                "identity",
                format!("raft from {} refused: {} has no node certificate", peer.addr, peer.identity),
            )),
            None => Err(refused("identity", "raft refused: the connection carries no peer identity".into())),
        }
    }
}

fn refused(reason: &'static str, message: String) -> tonic::Status {
    metrics::counter!("raftgate_raft_rpc_refused_total", "reason" => reason).increment(1);
    tracing::warn!(reason, "{message}");
    tonic::Status::permission_denied(message)
}

impl RaftServer {
    /// The node id the caller's certificate proves, when the listener runs TLS.
    fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Option<NodeId>, tonic::Status> {
        if !self.secure {
            return Ok(None);
        }
        match req.extensions().get::<trust::Peer>() {
            Some(trust::Peer { identity: trust::Identity::Node(id), .. }) => Ok(Some(*id)),
            Some(peer) => Err(refused(
                "identity",
                format!(
                    "raft from {} refused: {} has no node certificate of cluster `{}`",
                    peer.addr, peer.identity, self.cluster
                ),
            )),
            None => Err(refused("identity", "raft refused: the connection carries no peer identity".into())),
        }
    }

    /// Decodes a message and checks that `sender` (the node it says sent it) is the caller.
    fn decode<T: DeserializeOwned>(
        &self,
        req: tonic::Request<RaftRequest>,
        what: &str,
        sender: impl FnOnce(&T) -> NodeId,
    ) -> Result<T, tonic::Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        if req.cluster != self.cluster {
            return Err(tonic::Status::permission_denied(format!(
                "this node belongs to cluster `{}`, not `{}`",
                self.cluster, req.cluster
            )));
        }
        let rpc: T = postcard::from_bytes(&req.payload)
            .map_err(|e| tonic::Status::invalid_argument(format!("bad payload: {e}")))?;
        let claimed = sender(&rpc);
        match caller {
            Some(id) if id != claimed => Err(refused(
                "impersonation",
                format!("{what} refused: it claims to come from node {claimed}, but the caller's certificate is node {id}'s"),
            )),
            _ => Ok(rpc),
        }
    }

    /// Admits a snapshot chunk only in order (a new stream starts at 0; a chunk may be sent
    /// again) and only while the total stays under `MAX_SNAPSHOT_BYTES`: openraft's receiver
    /// would otherwise grow its buffer to whatever offset a peer names.
    fn admit_chunk(&self, from: NodeId, rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<(), tonic::Status> {
        let end = rpc.offset.saturating_add(rpc.data.len() as u64);
        let mut streams = self.receiving.lock().unwrap_or_else(|e| e.into_inner());
        if end > MAX_SNAPSHOT_BYTES {
            streams.remove(&from);
            return Err(refused(
                "snapshot-size",
                format!("snapshot from node {from} refused: it reaches {end} bytes; snapshots are limited to {MAX_SNAPSHOT_BYTES}"),
            ));
        }
        let id = &rpc.meta.snapshot_id;
        let accepted = match streams.get(&from) {
            _ if rpc.offset == 0 => Receiving { snapshot_id: id.clone(), next: end, last: 0 },
            Some(r) if r.snapshot_id == *id && (rpc.offset == r.next || rpc.offset == r.last) => {
                Receiving { snapshot_id: id.clone(), next: end, last: rpc.offset }
            }
            other => {
                let expected = other.filter(|r| r.snapshot_id == *id).map_or(0, |r| r.next);
                return Err(refused(
                    "snapshot-order",
                    format!(
                        "snapshot chunk from node {from} refused: offset {} of snapshot `{id}` is out of order (expected {expected})",
                        rpc.offset
                    ),
                ));
            }
        };
        if rpc.done {
            streams.remove(&from);
        } else {
            if streams.len() >= MAX_RECEIVING && !streams.contains_key(&from) {
                streams.clear();
            }
            streams.insert(from, accepted);
        }
        Ok(())
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
        let rpc: VoteRequest<NodeId> = self.decode(req, "vote", |r: &VoteRequest<NodeId>| r.vote.leader_id.node_id)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn append_entries(
        &self,
        req: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            self.decode(req, "append-entries", |r: &AppendEntriesRequest<TypeConfig>| r.vote.leader_id.node_id)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            self.decode(req, "install-snapshot", |r: &InstallSnapshotRequest<TypeConfig>| r.vote.leader_id.node_id)?;
        self.admit_chunk(rpc.vote.leader_id.node_id, &rpc)?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_too_large_for_one_message_are_refused_before_proposal() {
        assert!(entry_fits(&vec![0u8; 1 << 20]).is_ok());
        let err = entry_fits(&vec![0u8; MAX_ENTRY_BYTES]).unwrap_err();
        assert!(matches!(err, EntryError::TooLarge { bytes } if bytes > MAX_ENTRY_BYTES), "{err}");
        assert!(err.to_string().contains("make the config smaller"), "{err}");
        // The cap leaves room for the message around the entry.
        const { assert!(MAX_ENTRY_BYTES < MAX_MESSAGE_BYTES && (MAX_ENTRY_BYTES as u64) < MAX_SNAPSHOT_BYTES) };
    }

    /// Raft messages as a peer could send them: valid encodings of each kind, mutated.
    /// Decoding must fail cleanly or succeed, never panic, and never take long (a length
    /// prefix claiming gigabytes must not be allocated up front).
    #[test]
    fn fuzz_raft_message_decoding() {
        use std::collections::{BTreeMap, BTreeSet};
        use std::time::{Duration, Instant};

        use openraft::{
            CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
        };
        use testkit::fuzz::{self, proptest::prelude::*};

        use crate::types::{ApplyConfig, Request};

        let yaml = "kind: Upstream\nname: u\nendpoints: [{ address: 10.0.0.1:80 }]\n---\nkind: Route\nname: r\nhostnames: [a.example.com]\nrules:\n  - matches: [{ path: { type: RegularExpression, value: \"/v[0-9]+\" }, headers: [{ name: x, value: y }] }]\n    backendRefs: [{ upstream: u }]\n    retry: { attempts: 2 }\n";
        let compiled =
            schemas::compile_tree(&[schemas::SourceFile { path: "c.yaml".into(), contents: yaml.as_bytes().to_vec() }])
                .unwrap();
        let log_id = |i| LogId::new(CommittedLeaderId::new(3, 1), i);
        let node = |i: u64| NodeInfo {
            raft_addr: format!("10.0.0.{i}:9800"),
            admin_addr: format!("10.0.0.{i}:9900"),
            region: "eu".into(),
        };
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([(1, node(1)), (2, node(2)), (3, node(3))]),
        );
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(4)),
            leader_commit: Some(log_id(4)),
            entries: vec![
                Entry { log_id: log_id(5), payload: EntryPayload::Blank },
                Entry { log_id: log_id(6), payload: EntryPayload::Membership(membership.clone()) },
                Entry {
                    log_id: log_id(7),
                    payload: EntryPayload::Normal(Request::ApplyConfig(Box::new(ApplyConfig {
                        commit: "c0ffee".into(),
                        parent: Some("beef".into()),
                        author: "Ada <ada@example.com>".into(),
                        message: "route r".into(),
                        committed_at: 1_700_000_000,
                        hash: compiled.hash,
                        snapshot: Arc::new(compiled.snapshot),
                        covers: vec!["a".into()],
                    }))),
                },
            ],
        };
        let vote = VoteRequest::<NodeId> { vote: Vote::new(4, 2), last_log_id: Some(log_id(7)) };
        let snapshot = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(7)),
                last_membership: StoredMembership::new(Some(log_id(6)), membership),
                snapshot_id: "3-1-7".into(),
            },
            offset: 0,
            data: vec![7; 100],
            done: true,
        };
        let seeds = [
            postcard::to_allocvec(&append).unwrap(),
            postcard::to_allocvec(&vote).unwrap(),
            postcard::to_allocvec(&snapshot).unwrap(),
        ];
        fuzz::run("raft_decode", file!(), (0..seeds.len(), fuzz::mutations(8)), |(s, muts)| {
            let bytes = fuzz::mutate(&seeds[s], &muts);
            let started = Instant::now();
            let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&bytes);
            let _ = postcard::from_bytes::<VoteRequest<NodeId>>(&bytes);
            let _ = postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(&bytes);
            prop_assert!(started.elapsed() < Duration::from_secs(1), "decoding took {:?}", started.elapsed());
            Ok(())
        });
    }
}
