//! Three in-process nodes, each with its own RocksDB, talking real gRPC over loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft::network::{service, Network};
use raft::{ApplyConfig, NodeInfo, Raft, Request, StateMachineStore};

struct Node {
    id: u64,
    raft: Raft,
    sm: StateMachineStore,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start(id: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (log, sm) = raft::open(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let raft = Raft::new(id, Arc::new(raft::config::lan()), Network::new("test", None), log, sm.clone()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = service(raft.clone(), "test", false);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Node { id, raft, sm, addr, stop: Some(stop), _dir: dir }
}

fn info(n: &Node) -> NodeInfo {
    NodeInfo { raft_addr: n.addr.to_string(), admin_addr: String::new(), region: "test".into() }
}

fn config(commit: &str, route: &str) -> ApplyConfig {
    let yaml = format!(
        "kind: Upstream\nname: u\nendpoints: [{{ address: 127.0.0.1:1 }}]\n---\nkind: Route\nname: {route}\nrules:\n  - backendRefs: [{{ upstream: u }}]\n"
    );
    let c =
        schemas::compile_tree(&[schemas::SourceFile { path: "c.yaml".into(), contents: yaml.into_bytes() }]).unwrap();
    ApplyConfig {
        commit: commit.into(),
        parent: None,
        author: "t".into(),
        message: commit.into(),
        committed_at: 0,
        hash: c.hash,
        snapshot: c.snapshot.into(),
        covers: vec![],
    }
}

async fn leader(nodes: &[&Node]) -> u64 {
    for _ in 0..100 {
        for n in nodes {
            if let Some(l) = n.raft.current_leader().await {
                if nodes.iter().any(|m| m.id == l) {
                    return l;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader elected");
}

async fn wait_for_commit(n: &Node, commit: &str) {
    let mut rx = n.sm.subscribe();
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.borrow_and_update().as_ref().is_some_and(|c| c.entry.commit == commit) {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(ok.is_ok(), "node {} never applied {commit}", n.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_configs_in_order_and_survive_a_leader_loss() {
    let mut nodes = vec![start(1).await, start(2).await, start(3).await];
    let members: BTreeMap<u64, NodeInfo> = nodes.iter().map(|n| (n.id, info(n))).collect();
    nodes[0].raft.initialize(members).await.unwrap();

    let all: Vec<&Node> = nodes.iter().collect();
    let l = leader(&all).await;
    let lead = nodes.iter().find(|n| n.id == l).unwrap();
    lead.raft.client_write(Request::ApplyConfig(Box::new(config("c1", "first")))).await.unwrap();
    for n in &nodes {
        wait_for_commit(n, "c1").await;
    }

    // Take the leader down; the other two elect a new one and keep applying.
    let i = nodes.iter().position(|n| n.id == l).unwrap();
    let mut gone = nodes.remove(i);
    gone.raft.shutdown().await.unwrap();
    let _ = gone.stop.take().unwrap().send(());
    let rest: Vec<&Node> = nodes.iter().collect();
    let l2 = leader(&rest).await;
    assert_ne!(l2, l);
    let lead = nodes.iter().find(|n| n.id == l2).unwrap();
    lead.raft.client_write(Request::ApplyConfig(Box::new(config("c2", "second")))).await.unwrap();
    for n in &nodes {
        wait_for_commit(n, "c2").await;
        let history: Vec<String> = n.sm.data().await.history.iter().map(|h| h.commit.clone()).collect();
        assert_eq!(history, ["c1", "c2"], "node {} applied in log order", n.id);
    }
    // The old leader's state is intact on disk, stopped at c1.
    assert_eq!(gone.sm.data().await.current.unwrap().entry.commit, "c1");
}
