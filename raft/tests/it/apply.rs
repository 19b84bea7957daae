//! raftgate's own apply logic: config entries, history, refusal, publication, restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use raft::{ApplyConfig, NodeInfo, Request, Response, TypeConfig};

fn snapshot(route: &str) -> schemas::ConfigSnapshot {
    let yaml = format!(
        "kind: Upstream\nname: u\nendpoints: [{{ address: 127.0.0.1:1 }}]\n---\nkind: Route\nname: {route}\nrules:\n  - backendRefs: [{{ upstream: u }}]\n"
    );
    schemas::compile_tree(&[schemas::SourceFile { path: "c.yaml".into(), contents: yaml.into_bytes() }])
        .unwrap()
        .snapshot
}

fn config(commit: &str, route: &str) -> ApplyConfig {
    let snapshot = snapshot(route);
    ApplyConfig {
        commit: commit.into(),
        parent: None,
        author: "Ada <ada@example.com>".into(),
        message: format!("route {route}"),
        committed_at: 1_700_000_000,
        hash: snapshot.content_hash(),
        snapshot: snapshot.into(),
        covers: vec![],
    }
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }
}

fn apply_entry(index: u64, cfg: ApplyConfig) -> Entry<TypeConfig> {
    entry(index, EntryPayload::Normal(Request::ApplyConfig(Box::new(cfg))))
}

#[tokio::test]
async fn configs_apply_in_log_order_and_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = raft::open(dir.path()).unwrap();
    let mut rx = sm.subscribe();
    assert!(rx.borrow().is_none());

    let members =
        Membership::new(vec![std::collections::BTreeSet::from([1u64])], BTreeMap::from([(1u64, NodeInfo::default())]));
    let out = sm
        .apply(vec![
            entry(1, EntryPayload::Blank),
            entry(2, EntryPayload::Membership(members)),
            apply_entry(3, config("aaa", "first")),
            apply_entry(4, config("bbb", "second")),
            apply_entry(5, config("bbb", "second")),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], Response::None);
    assert_eq!(out[2], Response::Applied { commit: "aaa".into() });
    assert_eq!(out[3], Response::Applied { commit: "bbb".into() });
    assert_eq!(out[4], Response::AlreadyCurrent { commit: "bbb".into() });

    assert!(rx.has_changed().unwrap());
    let current = rx.borrow_and_update().clone().unwrap();
    assert_eq!(current.entry.commit, "bbb");
    assert_eq!(current.log_index, 4);
    assert_eq!(current.entry.snapshot.routes[0].name, "second");

    let data = sm.data().await;
    let commits: Vec<&str> = data.history.iter().map(|h| h.commit.as_str()).collect();
    assert_eq!(commits, ["aaa", "bbb"]);
    assert_eq!(data.history[1].log_index, 4);
    assert_eq!(data.last_applied.unwrap().index, 5);
}

#[tokio::test]
async fn an_entry_whose_hash_does_not_match_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = raft::open(dir.path()).unwrap();
    sm.apply(vec![apply_entry(1, config("good", "a"))]).await.unwrap();
    let mut bad = config("bad", "b");
    bad.hash = config("x", "other").hash;
    let out = sm.apply(vec![apply_entry(2, bad)]).await.unwrap();
    assert!(matches!(&out[0], Response::Refused { commit, .. } if commit == "bad"));
    assert_eq!(sm.data().await.current.unwrap().entry.commit, "good");
}

/// The node's hook hears of each new config entry, with the snapshot the state machine
/// then publishes (the same allocation, so the node can tell its early compile is for it),
/// and not of an entry for the commit already current.
#[tokio::test]
async fn the_config_hook_hears_of_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = raft::open(dir.path()).unwrap();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = Arc::clone(&heard);
    sm.on_config(Arc::new(move |cfg: &ApplyConfig| {
        h.lock().unwrap().push((cfg.commit.clone(), Arc::clone(&cfg.snapshot)))
    }));
    sm.apply(vec![apply_entry(1, config("c1", "a")), apply_entry(2, config("c1", "a"))]).await.unwrap();
    sm.apply(vec![apply_entry(3, config("c2", "b"))]).await.unwrap();
    let heard = heard.lock().unwrap();
    assert_eq!(heard.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
    let published = sm.subscribe().borrow().clone().unwrap();
    assert!(Arc::ptr_eq(&heard[1].1, &published.entry.snapshot));
}

#[tokio::test]
async fn history_keeps_the_last_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = raft::open(dir.path()).unwrap();
    let entries: Vec<_> = (1..=130).map(|i| apply_entry(i, config(&format!("c{i}"), &format!("r{i}")))).collect();
    sm.apply(entries).await.unwrap();
    let h = sm.data().await.history;
    assert_eq!(h.len(), raft::store::HISTORY_LEN);
    assert_eq!(h.front().unwrap().commit, "c31");
    assert_eq!(h.back().unwrap().commit, "c130");
}

/// Everything applied and voted survives a restart: the reopened store publishes the last
/// applied config immediately, before any peer is reached.
#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = raft::open(dir.path()).unwrap();
        log.save_vote(&openraft::Vote::new(3, 2)).await.unwrap();
        sm.apply(vec![apply_entry(1, config("c1", "a")), apply_entry(2, config("c2", "b"))]).await.unwrap();
    }
    let (mut log, mut sm) = raft::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(openraft::Vote::new(3, 2)));
    let rx = sm.subscribe();
    let served = rx.borrow().clone().expect("served at once after a restart");
    assert_eq!(served.entry.commit, "c2");
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 2);
    assert_eq!(sm.data().await.history.len(), 2);
}

/// Config entries travel through the log in the binary codec and come back equal.
#[tokio::test]
async fn config_entries_round_trip_through_the_log() {
    use openraft::storage::RaftLogReader;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = raft::open(dir.path()).unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut files = Vec::new();
    for sub in ["", "routes"] {
        for e in std::fs::read_dir(example.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(schemas::SourceFile { path: p.display().to_string(), contents: std::fs::read(&p).unwrap() });
            }
        }
    }
    let compiled = schemas::compile_tree(&files).unwrap();
    let mut cfg = config("c1", "a");
    cfg.snapshot = compiled.snapshot.clone().into();
    cfg.hash = compiled.hash;
    let e = apply_entry(1, cfg.clone());
    openraft::storage::RaftLogStorageExt::blocking_append(&mut log, vec![e]).await.unwrap();
    let back = log.try_get_log_entries(1..2).await.unwrap();
    match &back[0].payload {
        EntryPayload::Normal(Request::ApplyConfig(c)) => {
            assert_eq!(**c, cfg);
            assert_eq!(c.snapshot.content_hash(), compiled.hash);
        }
        other => panic!("{other:?}"),
    }
}

/// A data directory from a raftgate with another config format is refused at open, with
/// what to do, instead of being misread.
#[test]
fn a_store_of_another_config_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    drop(raft::open(dir.path()).unwrap());
    // Reopening with the same format is fine.
    drop(raft::open(dir.path()).unwrap());
    // Mark it as written by the next format.
    {
        let cfs = ["logs", "meta", "sm"].map(|n| rocksdb::ColumnFamilyDescriptor::new(n, rocksdb::Options::default()));
        let db = rocksdb::DB::open_cf_descriptors(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        db.put_cf(db.cf_handle("meta").unwrap(), b"format", (schemas::SNAPSHOT_FORMAT + 1).to_be_bytes()).unwrap();
    }
    let err = raft::open(dir.path()).map(|_| ()).unwrap_err().to_string();
    let next = schemas::SNAPSHOT_FORMAT + 1;
    assert!(err.contains(&format!("it holds configs in format {next}")), "{err}");
    assert!(err.contains(&format!("reads config format {}", schemas::SNAPSHOT_FORMAT)), "{err}");
    assert!(err.contains("--bootstrap") && err.contains("Upgrades"), "{err}");
}
