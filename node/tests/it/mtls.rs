//! A cluster that trusts only its own nodes: real `raftgated` processes running mTLS with
//! certificates from a real CA (`trust::gen`, as `raftgate certs` makes them), attacked
//! with real TLS clients.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use openraft::{LeaderId, Vote};
use raft::network::pb::raft_service_client::RaftServiceClient;
use raft::network::pb::RaftRequest;
use schemas::admin::*;

use crate::harness::*;
use crate::nodes::*;

/// A CA for the test cluster with certificates for nodes `ids` and operator `it`.
fn issue(dir: &Path, ids: &[u64]) -> trust::gen::Ca {
    let ca = trust::gen::Ca::new(TLS_CLUSTER, 30).unwrap();
    ca.save(dir).unwrap();
    for id in ids {
        ca.node(*id, &[], &["127.0.0.1".parse().unwrap()], 30).unwrap().save(dir, &format!("node-{id}")).unwrap();
    }
    ca.client("it", 30).unwrap().save(dir, "it").unwrap();
    ca
}

/// A Raft client presenting the certificate `name` from `dir`, dialing node `target`.
fn raft_client(dir: &Path, name: &str, addr: &str, target: u64) -> RaftServiceClient<tonic::transport::Channel> {
    let tls = operator_tls(dir, name);
    let server = trust::node_name(TLS_CLUSTER, target);
    let channel = trust::channel(addr, Some((trust::ClientTls::Fixed(tls), Some(server))), |e| {
        e.connect_timeout(Duration::from_secs(2))
    })
    .unwrap();
    RaftServiceClient::new(channel)
}

fn vote_request(candidate: u64, term: u64) -> RaftRequest {
    let vote = openraft::raft::VoteRequest::<u64> { vote: Vote::new(term, candidate), last_log_id: None };
    RaftRequest { cluster: TLS_CLUSTER.into(), payload: postcard::to_allocvec(&vote).unwrap() }
}

fn snapshot_request(leader: u64, term: u64, offset: u64, data: Vec<u8>) -> RaftRequest {
    let rpc = openraft::raft::InstallSnapshotRequest::<raft::TypeConfig> {
        vote: Vote { leader_id: LeaderId::new(term, leader), committed: true },
        meta: openraft::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "x".into(),
        },
        offset,
        data,
        done: false,
    };
    RaftRequest { cluster: TLS_CLUSTER.into(), payload: postcard::to_allocvec(&rpc).unwrap() }
}

/// Node 1 bootstraps an mTLS cluster from the certificates in `dir`; nodes 2 and 3 join.
async fn three_tls_nodes(dir: &Path) -> TestCluster {
    let mut c = TestCluster::bootstrap_tls(dir, &[]).await;
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    c.wait_serving(&[1, 2, 3], "/r0").await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_cluster_s_own_nodes_can_join_vote_or_append() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = issue(dir, &[1, 2, 3, 5]);
    // A certificate from the cluster CA for another cluster's node: no one here.
    let elsewhere = ca.with_cluster("elsewhere").unwrap();
    elsewhere.node(1, &[], &["127.0.0.1".parse().unwrap()], 30).unwrap().save(dir, "elsewhere-1").unwrap();
    // A stranger: a valid-looking certificate for node 4 from another CA.
    let evil = tempfile::tempdir().unwrap();
    issue(evil.path(), &[4]);

    let c = three_tls_nodes(dir).await;
    let leader = c.leader().await;
    let before = c.status(leader).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let raft_addr = |id: u64| format!("127.0.0.1:{}", c.nodes[&id].raft);

    // The stranger's join fails at the TLS handshake: it never becomes a member.
    let e = |f: &str| evil.path().join(f).to_str().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let join = format!("127.0.0.1:{}", c.nodes[&1].admin);
    let stranger_node = Gateway::launch_with(
        None,
        &[
            "--node-id",
            "4",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--raft-addr",
            "127.0.0.1:0",
            "--cluster-name",
            TLS_CLUSTER,
            "--tls-ca",
            &e("ca.pem"),
            "--tls-cert",
            &e("node-4.pem"),
            "--tls-key",
            &e("node-4-key.pem"),
            "--join",
            &join,
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = c.members(1).await;
    assert_eq!(m.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    let logs = stranger_node.logs();
    assert!(logs.iter().any(|l| l.contains("join not done yet") && l.contains("certificate")), "{logs:#?}");

    // Its Raft messages fail at the handshake too, whatever they claim.
    let mut stranger = raft_client(evil.path(), "node-4", &raft_addr(follower), follower);
    let err = stranger.vote(vote_request(4, before.term + 100)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // A plaintext gRPC client gets nothing.
    let mut plain = RaftServiceClient::connect(format!("http://{}", raft_addr(follower))).await.ok();
    if let Some(p) = plain.as_mut() {
        let err = p.vote(vote_request(1, before.term + 100)).await.unwrap_err();
        assert_ne!(err.code(), tonic::Code::Ok);
    }
    let mut plain_admin =
        schemas::admin_client::connect(&format!("127.0.0.1:{}", c.nodes[&leader].admin), Duration::from_secs(2))
            .unwrap();
    assert!(plain_admin.get_node_status(NodeStatusRequest {}).await.is_err());

    // An operator's certificate is not a node's: no Raft at all.
    let mut operator = raft_client(dir, "it", &raft_addr(follower), follower);
    let err = operator.vote(vote_request(1, before.term + 100)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // A real member cannot speak as another: node `other`'s certificate claiming `leader`.
    let other = [1, 2, 3].into_iter().find(|id| *id != leader && *id != follower).unwrap();
    let mut member = raft_client(dir, &format!("node-{other}"), &raft_addr(follower), follower);
    let err = member.vote(vote_request(leader, before.term + 100)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(&format!("node {other}'s")), "{}", err.message());
    let err = member.install_snapshot(snapshot_request(leader, before.term + 100, 0, vec![1])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // An authenticated peer's crafted snapshot stream: an out-of-order chunk, then one
    // whose end is past the size cap. Both refused before openraft sees them.
    let err = member.install_snapshot(snapshot_request(other, before.term, 4096, vec![0; 16])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("out of order"), "{}", err.message());
    let huge = raft::network::MAX_SNAPSHOT_BYTES - 8;
    let err = member.install_snapshot(snapshot_request(other, before.term, huge, vec![0; 64])).await.unwrap_err();
    assert!(err.message().contains("snapshots are limited"), "{}", err.message());

    // Node 5 has a certificate from the cluster CA but is no member: it may ask to join as
    // itself, nothing else, even claiming to forward for someone.
    let admin_as = |name: &str| {
        let tls = operator_tls(dir, name);
        let addr = format!("127.0.0.1:{}", c.nodes[&leader].admin);
        schemas::admin_client::client(trust::channel(&addr, Some((trust::ClientTls::Fixed(tls), None)), |e| e).unwrap())
    };
    let mut req = tonic::Request::new(RemoveMemberRequest { id: other });
    req.metadata_mut().insert("raftgate-forwarded", "1".parse().unwrap());
    let err = admin_as("node-5").remove_member(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let member = Member {
        id: 6,
        raft_addr: "127.0.0.1:1".into(),
        admin_addr: "127.0.0.1:2".into(),
        region: "x".into(),
        voter: true,
    };
    let mut req = tonic::Request::new(AddMemberRequest { member: Some(member), learner: false });
    req.metadata_mut().insert("raftgate-forwarded", "1".parse().unwrap());
    let err = admin_as("node-5").add_member(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // A certificate naming a node of another cluster is nobody: not even reads.
    let err = admin_as("elsewhere-1").get_cluster_status(ClusterStatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert_eq!(c.members(1).await.members.len(), 3);

    // Nothing moved: same leader, same term, every node up and serving the same config.
    let after = c.status(leader).await;
    assert_eq!(c.leader().await, leader);
    assert_eq!(after.term, before.term, "a refused message changed the term");
    for id in [1, 2, 3] {
        let s = c.status(id).await;
        assert_eq!(s.serving_hash, before.serving_hash, "node {id}");
        assert_eq!(s.transport, "mtls");
    }
    c.wait_serving(&[1, 2, 3], "/r0").await;
}

/// Every node's certificate is reissued (then the CA itself rotated, through a bundle of
/// old and new) while requests flow: no request fails, the leader stays, and new
/// connections present the new certificates.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_under_load_without_a_failed_request_or_a_new_leader() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = issue(dir, &[1, 2, 3]);
    let mut c = three_tls_nodes(dir).await;
    let leader = c.leader().await;
    let term = c.status(leader).await.term;

    // Load: every node's proxy, all along.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for id in [1, 2, 3] {
        let url = c.gw(id).url("/r0");
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (s, _, _) = get(&url, &[]).await;
                if s == StatusCode::OK { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // 1. New certificates from the same CA.
    let old_leaf = std::fs::read(dir.join(format!("node-{leader}.pem"))).unwrap();
    for id in [1, 2, 3] {
        ca.node(id, &[], &["127.0.0.1".parse().unwrap()], 60).unwrap().save(dir, &format!("node-{id}")).unwrap();
    }
    let new_leaf = std::fs::read(dir.join(format!("node-{leader}.pem"))).unwrap();
    assert_ne!(old_leaf, new_leaf);
    let admin = format!("127.0.0.1:{}", c.nodes[&leader].admin);
    eventually(Duration::from_secs(10), "the leader serving its new certificate", || async {
        (served_leaf(dir, &admin).await == pem_der(&new_leaf)).then_some(())
    })
    .await;
    // Traffic (and Raft heartbeats) go on over the new material for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. A CA rotation: trust old and new, move every node to the new CA.
    let next = trust::gen::Ca::new(TLS_CLUSTER, 30).unwrap();
    let bundle = format!("{}{}", std::fs::read_to_string(dir.join("ca.pem")).unwrap(), next.cert_pem);
    std::fs::write(dir.join(".ca.tmp"), bundle).unwrap();
    std::fs::rename(dir.join(".ca.tmp"), dir.join("ca.pem")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in [1, 2, 3] {
        next.node(id, &[], &["127.0.0.1".parse().unwrap()], 30).unwrap().save(dir, &format!("node-{id}")).unwrap();
    }
    next.client("it", 30).unwrap().save(dir, "it").unwrap();
    let newest = std::fs::read(dir.join(format!("node-{leader}.pem"))).unwrap();
    eventually(Duration::from_secs(10), "the leader serving its certificate from the new CA", || async {
        (served_leaf(dir, &admin).await == pem_der(&newest)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // New Raft connections use the new material: a follower restarted now must rejoin
    // through handshakes made with it (its proxy is out of the load meanwhile).
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok_n, failed_n) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    c.kill(follower);
    c.launch(follower, &[]);
    c.set_routes(&["r0", "r1"]);
    c.wait_serving(&[1, 2, 3], "/r1").await;

    assert!(ok_n > 300, "too little load to mean anything: {ok_n} requests");
    assert_eq!(failed_n, 0, "{failed_n} of {} requests failed during the rotation", ok_n + failed_n);
    assert_eq!(c.leader().await, leader, "the leader changed");
    assert_eq!(c.status(leader).await.term, term, "an election happened");
    eprintln!("rotation under load: {ok_n} requests, {failed_n} failed, leader {leader} kept term {term}");
}

/// The DER of the certificate a node's admin listener presents to a new connection.
async fn served_leaf(dir: &Path, admin: &str) -> Vec<u8> {
    // Trust the directory's bundle as it is now.
    let config = trust::material::client_config_from_files(&dir.join("ca.pem"), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(s) => s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}
