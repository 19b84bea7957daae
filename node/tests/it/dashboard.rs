//! The dashboard (`/ui`) in a real browser: headless Chromium keeps the page of node 1 open
//! over the DevTools protocol while the test merges a commit, pushes a broken one and kills
//! a node, and reads what the page shows. With `RAFTGATE_UI_SCREENSHOTS=<dir>` it also
//! saves a screenshot of each view there (`make ui-screenshots` writes docs/ui/).

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

use crate::cdp::{chromium, Browser};
use crate::gitops::Repo;
use crate::harness::*;
use crate::nodes::*;

/// The config of the commits the page follows: the echo upstream, and `payments`, whose one
/// endpoint does not listen (its health checks fail, so the upstreams view has something
/// to put first).
fn config(up: &Upstream, dead: u16, routes: &[&str]) -> String {
    let mut text = routes_config(up, routes);
    text += &format!(
        "---\nkind: Upstream\nname: payments\nendpoints: [{{ address: \"127.0.0.1:{dead}\" }}]\n\
         healthCheck:\n  active: {{ path: /healthz, interval: 200ms, timeout: 100ms, unhealthyThreshold: 1 }}\n\
         ---\nkind: Route\nname: payments\nrules:\n  - matches: [{{ path: {{ value: /payments }} }}]\n    backendRefs: [{{ upstream: payments }}]\n"
    );
    text
}

fn screenshots() -> Option<PathBuf> {
    std::env::var_os("RAFTGATE_UI_SCREENSHOTS").map(PathBuf::from)
}

async fn shoot(page: &mut Browser, view: &str) {
    let Some(dir) = screenshots() else { return };
    std::fs::create_dir_all(&dir).unwrap();
    page.eval(&format!("location.hash = '#{view}'; true")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    page.screenshot(&dir.join(format!("{view}.png"))).await;
}

/// Some traffic on every running node, with a few errors, so the charts have lines.
async fn traffic(c: &TestCluster, rounds: usize) {
    for i in 0..rounds {
        for id in c.running() {
            let _ = get(&c.gw(id).url("/r0"), &[]).await;
            if i % 4 == 0 {
                let _ = get(&c.gw(id).url("/r1"), &[]).await;
            }
            if i % 10 == 0 {
                let _ = get(&c.gw(id).url("/payments"), &[]).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_follows_merges_refusals_and_node_failures() {
    let Some(binary) = chromium() else {
        return skip("the dashboard test needs Chromium (`make deps` installs it)");
    };
    let dead = free_port();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    repo.write("c.yaml", &config(&up, dead, &["r0"]));
    repo.commit("payments upstream", None);
    let mut c = crate::gitops::three_nodes(&repo.url(), up, &[]).await;
    let leader = c.leader().await;
    let admin = format!("http://{}", c.gw(1).admin);

    let mut page = Browser::open(binary, &format!("{admin}/ui#cluster"), 1440, 900).await;
    page.wait_for("three nodes", "document.querySelectorAll('#map g.node').length === 3", Duration::from_secs(20))
        .await;
    page.wait_for(
        "the leader",
        &format!(
            "document.querySelector('#leader-card').dataset.leader === '{leader}' && \
             document.querySelector('#map g.node[data-id=\"{leader}\"]').dataset.role === 'leader'"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(page.eval("document.querySelectorAll('#map g.node[data-up=\"true\"]').length").await, 3);

    // A merge: the page, open all along, shows its rollout reach every node.
    repo.write("c.yaml", &config(&c.up, dead, &["r0", "r1"]));
    let merge = repo.commit("add route r1", None);
    let took = page
        .wait_for(
            "the merge's rollout at 3/3",
            &format!(
                "(() => {{ const r = document.querySelector('.rollout[data-commit=\"{merge}\"]'); \
                 return !!r && r.dataset.served === '3' && r.dataset.total === '3'; }})()"
            ),
            Duration::from_secs(20),
        )
        .await;
    eprintln!("rollout of {merge} shown at 3/3 after {took:?}");
    c.wait_serving(&[1, 2, 3], "/r1").await;

    // The route-level diff between the two commits, computed by the leader.
    page.eval("location.hash = '#history'; true").await;
    page.wait_for(
        "the diff adding r1",
        "!!document.querySelector('#diff [data-change=\"routes:+r1\"]')",
        Duration::from_secs(10),
    )
    .await;

    // Upstreams: the failing one first, on every node.
    page.wait_for(
        "payments failing first",
        "(() => { const r = document.querySelectorAll('#upstreams tr[data-upstream]'); \
         return r.length === 6 && r[0].dataset.upstream === 'payments' && r[0].dataset.failing === 'true'; })()",
        Duration::from_secs(15),
    )
    .await;

    if screenshots().is_some() {
        // Two samples at least, under load, so the charts have lines.
        for _ in 0..20 {
            traffic(&c, 60).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        page.wait_for(
            "traffic charts",
            "document.querySelectorAll('#traffic-routes .chart-row').length >= 2",
            Duration::from_secs(20),
        )
        .await;
        shoot(&mut page, "history").await;
        shoot(&mut page, "upstreams").await;
        shoot(&mut page, "traffic").await;
        shoot(&mut page, "cluster").await;
    }

    // A broken commit: the page shows it refused, with file:line:col.
    let mut broken = config(&c.up, dead, &["r0", "r1"]);
    broken += "---\nkind: Route\nname: bad\nrules:\n  - backendRefs: [{ upstream: nope }]\n";
    repo.write("c.yaml", &broken);
    let bad = repo.commit("route to an upstream that does not exist", None);
    page.eval("location.hash = '#rollouts'; true").await;
    page.wait_for(
        "the refusal",
        &format!(
            "(() => {{ const r = document.querySelector('#refusal .refusal[data-commit=\"{bad}\"]'); \
             return !!r && /c\\.yaml:\\d+:\\d+/.test(r.textContent) && r.textContent.includes('nope'); }})()"
        ),
        Duration::from_secs(20),
    )
    .await;
    shoot(&mut page, "rollouts").await;

    // A node killed is shown down within seconds.
    c.kill(3);
    let took = page
        .wait_for(
            "node 3 down",
            "document.querySelector('#map g.node[data-id=\"3\"]').dataset.up === 'false' && \
             document.querySelector('#nodes-card').dataset.up === '2'",
            Duration::from_secs(8),
        )
        .await;
    eprintln!("node 3 shown down {took:?} after it was killed");
    page.eval("location.hash = '#cluster'; true").await;
    if let Some(dir) = screenshots() {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        page.screenshot(&dir.join("cluster-node-down.png")).await;
    }

    // Every request the page made went to the node that served it.
    let requests = page.requests.clone();
    assert!(requests.len() > 5, "{requests:?}");
    let foreign: Vec<&String> = requests.iter().filter(|u| !u.starts_with(&format!("{admin}/"))).collect();
    assert!(foreign.is_empty(), "the page asked other hosts: {foreign:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_api_is_protected_like_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let token = "ui-token-0123456789abcdef";
    let file = dir.path().join("token");
    std::fs::write(&file, token).unwrap();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw =
        Gateway::start(&[("c.yaml", &routes_config(&up, &["r0"]))], &["--admin-token-file", file.to_str().unwrap()]);
    let admin = format!("http://{}", gw.admin);

    // The page itself holds nothing secret; it is locked to this node's origin.
    let (status, headers, body) = get(&format!("{admin}/ui"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/ui/app.js"), "{body}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    for asset in ["/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
        assert_eq!(get(&format!("{admin}{asset}"), &[]).await.0, StatusCode::OK, "{asset}");
    }

    // What it shows needs the token.
    for api in ["/ui/api/cluster", "/ui/api/diff?from=a&to=b"] {
        assert_eq!(get(&format!("{admin}{api}"), &[]).await.0, StatusCode::UNAUTHORIZED, "{api}");
        let wrong = get(&format!("{admin}{api}"), &[("authorization", "Bearer not-the-token-at-all")]).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{api}");
    }
    let bearer = format!("Bearer {token}");
    let (status, _, body) = get(&format!("{admin}/ui/api/cluster"), &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["nodes"][0]["reachable"], true, "{v}");

    // The traffic charts come from the node's own metrics.
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/r0"), &[]).await.0, StatusCode::OK);
    }
    let sample = eventually(Duration::from_secs(20), "a traffic sample with r0", || async {
        let v = json(&get(&format!("{admin}/ui/api/cluster"), &[("authorization", &bearer)]).await.2);
        let samples = v["nodes"][0]["dashboard"]["traffic"]["samples"].as_array()?.clone();
        samples.into_iter().find(|s| s["routes"].as_array().is_some_and(|r| r.iter().any(|r| r["route"] == "r0")))
    })
    .await;
    let r0 = sample["routes"].as_array().unwrap().iter().find(|r| r["route"] == "r0").unwrap().clone();
    assert!(r0["requestsPerSecond"].as_f64().unwrap() > 0.0, "{sample}");
    assert_eq!(r0["errorRatio"].as_f64().unwrap(), 0.0, "{sample}");
    assert!(r0["p99Ms"].as_f64().unwrap() > 0.0, "{sample}");

    // A node without Git has no commits to compare, and says so.
    let (status, _, body) = get(&format!("{admin}/ui/api/diff?from=a&to=b"), &[("authorization", &bearer)]).await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("cluster"), "{body}");
}
