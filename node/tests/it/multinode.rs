//! Clusters of real `raftgated` processes on loopback: bootstrap, joins (concurrent, as
//! learners, promoted), removal, leader loss, restarts from the data directory, catch-up by
//! snapshot past a log purge, and the ordering guarantee checked on every node's history.
//!
//! Every node watches the same config directory (`--config-dir` in cluster mode, a cluster
//! without Git): only the leader proposes what it finds there, so a change reaches the
//! others only through the Raft log.

use std::time::{Duration, Instant};

use http::StatusCode;
use schemas::admin::*;

use crate::harness::*;
use crate::nodes::*;

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_join_fail_over_restart_and_remove() {
    let mut c = TestCluster::bootstrap(&[]).await;
    // Two nodes join at once through node 1: both are added, caught up and promoted.
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    c.wait_serving(&[2, 3], "/r0").await;
    assert_eq!(c.leader().await, 1);

    // A change reaches every node through the log.
    c.set_routes(&["r0", "r1"]);
    c.wait_serving(&[1, 2, 3], "/r1").await;
    let s2 = c.status(2).await;
    assert_eq!(Role::try_from(s2.role), Ok(Role::Follower));
    let applied = s2.config.expect("node 2 applied a config");

    // The leader dies: the other two elect one, with the committed config intact.
    c.kill(1);
    let leader = c.leader().await;
    assert!(leader == 2 || leader == 3, "{leader}");
    for id in [2, 3] {
        assert_eq!(c.status(id).await.config.unwrap().commit, applied.commit);
        assert_eq!(get(&c.gw(id).url("/r1"), &[]).await.0, StatusCode::OK);
    }
    // The new leader proposes the next change.
    c.set_routes(&["r0", "r1", "r2"]);
    c.wait_serving(&[2, 3], "/r2").await;

    // Node 1 restarts from its data directory and catches up as a follower.
    c.launch(1, &["--bootstrap"]);
    c.wait_serving(&[1], "/r2").await;
    assert_eq!(Role::try_from(c.status(1).await.role), Ok(Role::Follower));

    // With nodes 2 and 3 down there is no quorum: node 1 restarted serves its last applied
    // config at once, from disk, before it reaches any peer.
    c.kill(2);
    c.kill(3);
    c.kill(1);
    let started = Instant::now();
    c.launch(1, &[]);
    assert_eq!(get(&c.gw(1).url("/r2"), &[]).await.0, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(c.gw(1).status()["ready"], true);

    c.launch(2, &[]);
    c.launch(3, &[]);
    let leader = c.leader().await;

    // Removing a node: the rest carry on without it; it no longer gets changes.
    let removed = if leader == 3 { 2 } else { 3 };
    let m = c.admin(leader).await.remove_member(RemoveMemberRequest { id: removed }).await.unwrap().into_inner();
    assert!(m.members.iter().all(|m| m.id != removed), "{m:?}");
    c.set_routes(&["r0", "r1", "r2", "r3"]);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != removed).collect();
    c.wait_serving(&rest, "/r3").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&c.gw(removed).url("/r3"), &[]).await.0, StatusCode::NOT_FOUND, "a removed node gets no changes");
    // Removing it again says why not; removing the last voter is refused.
    let err = c.admin(leader).await.remove_member(RemoveMemberRequest { id: removed }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    c.kill(removed);
    c.check_history_order().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_with_concurrent_joins_a_learner_and_leader_loss() {
    let mut c = TestCluster::bootstrap(&[]).await;
    // Four nodes ask at once, through different members as they come up; node 5 stays a learner.
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.join(4, 1, false);
    c.join(5, 1, true);
    c.wait_members(1, &[1, 2, 3, 4], &[5]).await;
    c.wait_serving(&[2, 3, 4, 5], "/r0").await;
    assert_eq!(Role::try_from(c.status(5).await.role), Ok(Role::Learner));

    // A learner is promoted on request, through a follower (forwarded to the leader).
    c.admin(3).await.promote_member(PromoteMemberRequest { id: 5 }).await.unwrap();
    c.wait_members(2, &[1, 2, 3, 4, 5], &[]).await;

    c.set_routes(&["r0", "a"]);
    c.wait_serving(&[1, 2, 3, 4, 5], "/a").await;

    // Lose the leader; four voters elect another and keep committing.
    let old = c.leader().await;
    c.kill(old);
    let new = c.leader().await;
    assert_ne!(new, old);
    c.set_routes(&["r0", "a", "b"]);
    let alive = c.running();
    c.wait_serving(&alive, "/b").await;

    // Membership calls need a leader-known node; an unknown node cannot be promoted.
    let err = c.admin(alive[0]).await.promote_member(PromoteMemberRequest { id: 42 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // An address that belongs to another node is refused.
    let clash = Member {
        id: 9,
        raft_addr: format!("127.0.0.1:{}", c.nodes[&alive[0]].raft),
        admin_addr: "127.0.0.1:1".into(),
        region: "x".into(),
        voter: true,
    };
    let err =
        c.admin(alive[1]).await.add_member(AddMemberRequest { member: Some(clash), learner: false }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    c.check_history_order().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_behind_a_purged_log_catches_up_by_snapshot() {
    // Snapshots every 4 entries: the log is purged soon after.
    let mut c = TestCluster::bootstrap(&["--raft-snapshot-every", "4"]).await;
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    c.wait_serving(&[2, 3], "/r0").await;

    c.kill(3);
    let behind = c.nodes[&3].gw.is_none();
    assert!(behind);
    // Ten changes while node 3 is down.
    let mut names = vec!["r0".to_string()];
    for i in 1..=10 {
        names.push(format!("s{i}"));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        c.set_routes(&refs);
        c.wait_serving(&[1, 2], &format!("/s{i}")).await;
    }
    let leader = c.status(1).await;
    assert!(leader.purged_index > 0, "the leader purged its log: {leader:?}");

    c.launch(3, &[]);
    c.wait_serving(&[3], "/s10").await;
    let s3 = c.status(3).await;
    assert!(s3.snapshot_index > 0, "node 3 installed a snapshot: {s3:?}");
    assert_eq!(s3.config.unwrap().commit, c.status(1).await.config.unwrap().commit);
    c.check_history_order().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_join_stops_the_node_with_the_reason() {
    let mut c = TestCluster::bootstrap(&[]).await;
    // Node 2 claims node 1's raft address: the cluster refuses, and node 2 exits saying why
    // instead of waiting forever.
    let clash = format!("127.0.0.1:{}", c.nodes[&1].raft);
    let via = format!("127.0.0.1:{}", c.nodes[&1].admin);
    c.launch(2, &["--advertise-raft-addr", &clash, "--join", &via]);
    let node2 = c.nodes.get_mut(&2).unwrap().gw.as_mut().unwrap();
    let exit = eventually(Duration::from_secs(15), "node 2 to exit", || {
        let e = node2.exited();
        async move { e }
    })
    .await;
    assert!(!exit.success());
    let logs = node2.logs().join("\n");
    assert!(logs.contains("refused to add node 2") && logs.contains("already belongs to node 1"), "{logs}");
    assert_eq!(c.members(1).await.members.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_guards_calls_and_joins() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").unwrap();
    let tf = token_file.to_str().unwrap().to_string();
    let mut c = TestCluster::bootstrap(&["--admin-token-file", &tf]).await;
    // The joining node sends the same token: accepted.
    c.join(2, 1, false);
    let with = |token: &str| {
        let mut r = tonic::Request::new(ListMembersRequest {});
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    eventually(Duration::from_secs(30), "node 2 joined", || async {
        let m = c.admin(1).await.list_members(with("correct-horse-battery-staple")).await.unwrap().into_inner();
        (m.members.iter().filter(|m| m.voter).count() == 2).then_some(())
    })
    .await;

    let err = c.admin(1).await.list_members(ListMembersRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("needs a token"), "{err:?}");
    let err = c.admin(2).await.list_members(with("wrong-token-wrong-token")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = c.admin(1).await.remove_member(RemoveMemberRequest { id: 2 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let m = c.admin(1).await.list_members(with("correct-horse-battery-staple")).await.unwrap().into_inner();
    assert_eq!(m.members.len(), 2, "nothing changed");

    // Probes stay open; status and metrics need the token.
    let admin = format!("http://127.0.0.1:{}", c.nodes[&1].admin);
    assert_eq!(get(&format!("{admin}/healthz"), &[]).await.0, StatusCode::OK);
    assert_eq!(get(&format!("{admin}/readyz"), &[]).await.0, StatusCode::OK);
    assert_eq!(get(&format!("{admin}/status"), &[]).await.0, StatusCode::UNAUTHORIZED);
    let auth = [("authorization", "Bearer correct-horse-battery-staple")];
    assert_eq!(get(&format!("{admin}/metrics"), &auth).await.0, StatusCode::OK);
}

/// Quorum lost for good: two of three nodes are gone with their disks. The survivor,
/// restarted with --force-new-cluster, becomes a one-node cluster that still serves its
/// config, keeps its history, takes new changes, and lets new nodes join.
#[tokio::test(flavor = "multi_thread")]
async fn a_lone_survivor_recovers_the_cluster_with_force_new_cluster() {
    let mut c = TestCluster::bootstrap(&[]).await;
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    c.set_routes(&["r0", "r1"]);
    c.wait_serving(&[1, 2, 3], "/r1").await;
    let before = c.admin(3).await.get_config_history(ConfigHistoryRequest {}).await.unwrap().into_inner().entries;

    // Nodes 1 and 2 are lost; node 3 alone has no quorum and no leader.
    c.kill(1);
    c.kill(2);
    c.nodes.remove(&1);
    c.nodes.remove(&2);
    c.kill(3);
    c.launch(3, &["--force-new-cluster"]);
    assert_eq!(get(&c.gw(3).url("/r1"), &[]).await.0, StatusCode::OK, "serves its config at once");
    assert_eq!(c.leader().await, 3);
    c.wait_members(3, &[3], &[]).await;
    let after = c.admin(3).await.get_config_history(ConfigHistoryRequest {}).await.unwrap().into_inner().entries;
    assert_eq!(after, before, "the history is kept");

    // A change is committed by the one-node cluster, and a new node joins it.
    c.set_routes(&["r0", "r1", "r2"]);
    c.wait_serving(&[3], "/r2").await;
    c.join(4, 3, false);
    c.wait_members(3, &[3, 4], &[]).await;
    c.wait_serving(&[4], "/r2").await;

    // The flag works once: left on, it is refused rather than dropping node 4 again.
    c.kill(3);
    let data = c.nodes[&3].data.path().to_str().unwrap().to_string();
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_raftgated"))
        .args(["--node-id", "3", "--data-dir", &data, "--force-new-cluster", "--insecure-plaintext"])
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stdout).to_string() + &String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("already used on this data directory"), "{err}");

    // A later restart without the flag is an ordinary restart of the new cluster.
    c.launch(3, &[]);
    c.wait_serving(&[3], "/r2").await;
    c.wait_members(3, &[3, 4], &[]).await;
    c.check_history_order().await;
}
