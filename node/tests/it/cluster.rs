//! A node with a Raft data directory: configs go through the log, and a restarted node
//! serves its last applied config from disk at once.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrapped_node_serves_through_the_log_and_after_a_crash() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let config = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let route = |name: &str| {
        upstreams(&[("up", &up)])
            + &format!("---\nkind: Route\nname: {name}\nrules:\n  - matches: [{{ path: {{ value: /{name} }} }}]\n    backendRefs: [{{ upstream: up }}]\n")
    };
    std::fs::write(config.path().join("c.yaml"), route("first")).unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let args = [
        "--node-id",
        "1",
        "--data-dir",
        &data_dir,
        "--raft-addr",
        "127.0.0.1:0",
        "--bootstrap",
        "--raft-profile",
        "lan",
    ];
    let gw = Gateway::launch(config.path(), &args);
    // The node elects itself, proposes the directory's tree, applies it from the log.
    let started = Instant::now();
    loop {
        let (s, _, _) = get(&gw.url("/first"), &[]).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "config never applied: {:#?}", gw.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = gw.status();
    let commit = status["config"]["commit"].as_str().unwrap().to_string();
    assert!(commit.starts_with("dir-"), "{status}");

    // A change goes through the log too.
    gw.write("c.yaml", &route("second"));
    let started = Instant::now();
    while get(&gw.url("/second"), &[]).await.0 != StatusCode::OK {
        assert!(started.elapsed() < Duration::from_secs(15), "second config never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied = gw.status()["config"]["commit"].as_str().unwrap().to_string();

    // Crash, break the source, restart: the node serves what it had applied, at once.
    gw.kill();
    std::fs::write(config.path().join("c.yaml"), "kind: Route\nname: broken\nrules: [\n").unwrap();
    let started = Instant::now();
    let gw = Gateway::launch(config.path(), &args);
    let (s, _, _) = get(&gw.url("/second"), &[]).await;
    assert_eq!(s, StatusCode::OK, "served from the Raft store right after the restart");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gw.status()["config"]["commit"], applied.as_str());
}
