//! Config hot swap: atomic, lossless, and gentle on unchanged upstreams.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::harness::*;

fn route(version: usize, upstream: &str) -> String {
    format!(
        "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{{ upstream: {upstream} }}]\n    filters:\n      - type: ResponseHeaderModifier\n        responseHeaderModifier: {{ set: [{{ name: x-config, value: \"v{version}\" }}] }}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_swaps_under_load_lose_no_request() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    let ups = upstreams(&[("a", &a), ("b", &b)]);
    let gw = Arc::new(Gateway::start(&[("u.yaml", &ups), ("r.yaml", &route(0, "a"))], &["--access-log", "off"]));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(gw.url("/")).body(http_body_util::Full::new(Bytes::new())).unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut hash = gw.config_hash();
    for v in 1..=100 {
        let upstream = if v % 2 == 0 { "a" } else { "b" };
        gw.write("r.yaml", &route(v, upstream));
        let g = gw.clone();
        let old = hash.clone();
        hash = tokio::task::spawn_blocking(move || g.wait_for_new_config(&old)).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (_, h, _) = get(&gw.url("/"), &[]).await;
    assert_eq!(h["x-config"], "v100", "the last config is the one served");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("100 swaps: {ok} requests succeeded, {failed} failed");
    assert!(ok > 1_000, "the load ran throughout ({ok} requests)");
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_config_keeps_the_last_good_one() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let gw = Gateway::start(&[("u.yaml", &upstreams(&[("a", &a)])), ("r.yaml", &route(1, "a"))], &[]);
    let good = gw.config_hash();
    gw.write("r.yaml", "kind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: missing }]\n");
    testkit::eventually("the invalid config to be read and refused", Duration::from_secs(5), || {
        gw.logs().iter().any(|l| l.contains("config is invalid")).then_some(())
    });
    assert_eq!(gw.config_hash(), good);
    let (s, h, _) = get(&gw.url("/"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-config"], "v1");
    let logged = gw.logs().iter().any(|l| l.contains("config is invalid") && l.contains("r.yaml:4:31"));
    assert!(logged, "the rejection is logged with file:line:col: {:#?}", gw.logs());
    // Fixing it is picked up.
    gw.write("r.yaml", &route(2, "a"));
    gw.wait_for_new_config(&good);
    let (_, h, _) = get(&gw.url("/"), &[]).await;
    assert_eq!(h["x-config"], "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_upstreams_keep_their_connections_across_swaps() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let gw = Gateway::start(&[("u.yaml", &upstreams(&[("a", &a)])), ("r.yaml", &route(1, "a"))], &[]);
    let c = client();
    let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!(s, StatusCode::OK);
    let mut hash = gw.config_hash();
    for v in 2..5 {
        gw.write("r.yaml", &route(v, "a"));
        hash = gw.wait_for_new_config(&hash);
        let (_, h, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!(h["x-config"], format!("v{v}").as_str());
    }
    assert_eq!(a.connections.load(Ordering::SeqCst), 1, "the pool of upstream `a` survived three swaps");
    // Changing the upstream's definition starts it fresh.
    gw.write("u.yaml", &upstreams(&[("a", &a)]).replace("endpoints:", "connectTimeout: 3s\nendpoints:"));
    gw.wait_for_new_config(&hash);
    let (_, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!(a.connections.load(Ordering::SeqCst), 2);
}

/// `raftgate_config_dir_reads_total` from the node's metrics.
async fn dir_reads(gw: &Gateway) -> u64 {
    let text = get(&format!("http://{}/metrics", gw.admin), &[]).await.2;
    text.lines()
        .find_map(|l| l.strip_prefix("raftgate_config_dir_reads_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A directory that does not change is not read and compiled again every poll (at 10,000
/// routes that was half a core), and an edit in place that keeps the file's size, made
/// right after a read, is still picked up.
#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_directory_is_not_read_again_and_edits_are_seen() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let ups = upstreams(&[("a", &a)]);
    let gw = Arc::new(Gateway::start(&[("u.yaml", &ups), ("r.yaml", &route(1, "a"))], &["--access-log", "off"]));
    // Files younger than two seconds are read on every poll (their time stamps may not show
    // a second edit); after that, polls only look at the files' metadata.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = dir_reads(&gw).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dir_reads(&gw).await, settled, "20 polls of an unchanged tree read nothing");

    // Same size, same inode, written in place: only the time stamp says it changed.
    let path = gw.config_dir.join("r.yaml");
    for v in [2, 3] {
        let old = gw.config_hash();
        std::fs::write(&path, route(v, "a")).unwrap();
        let g = gw.clone();
        tokio::task::spawn_blocking(move || g.wait_for_new_config(&old)).await.unwrap();
        // A poll may have caught the file between its truncation and the write (an empty
        // file: a config without the route); the next poll reads the whole edit.
        let want = format!("v{v}");
        testkit::eventually_async("the edit is served", Duration::from_secs(5), || async {
            let (_, h, _) = get(&gw.url("/"), &[]).await;
            (h.get("x-config").and_then(|x| x.to_str().ok()) == Some(want.as_str())).then_some(())
        })
        .await;
    }
    assert!(dir_reads(&gw).await > settled);
}
