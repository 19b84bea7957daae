//! Active health checks, the probes: every node probes every endpoint of an upstream with
//! `GET <path>` each `interval` and reports the result to the upstream's `Health`.
//!
//! The first probe goes out within one interval, at a random offset so that a fleet's
//! probes spread over the interval instead of arriving together. An upstream therefore
//! sees, per endpoint, `nodes / interval` probes: 7 nodes probing every 5 s is 1.4 probes
//! per second.
//!
//! The prober holds only a weak reference to its upstream and stops when a config swap
//! drops the upstream.

use std::sync::{Arc, Weak};

use http::{header, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use schemas::snapshot::ActiveHealthCheckSpec;

use super::body::ReqBody;
use super::upstream::Upstream;

/// Starts probing `up` once, when it has active health checks; the prober stops by itself
/// when the upstream is dropped. Needs a Tokio runtime.
pub fn start(up: &Arc<Upstream>) {
    if up.health.is_some() && up.mark_started() {
        tokio::spawn(run(Arc::downgrade(up)));
    }
}

/// Probes `upstream`'s endpoints until the upstream is dropped.
async fn run(upstream: Weak<Upstream>) {
    let Some((spec, n)) = upstream.upgrade().and_then(|u| Some((u.health.as_ref()?.spec.clone(), u.authorities.len())))
    else {
        return;
    };
    let interval = spec.interval.to_std();
    // Spread the fleet's probes over the interval.
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else { return };
        let mut probes = tokio::task::JoinSet::new();
        for i in 0..n {
            let (up, spec) = (up.clone(), spec.clone());
            probes.spawn(async move { (i, probe(up, i, spec).await) });
        }
        drop(up);
        while let Some(Ok((i, ok))) = probes.join_next().await {
            let Some(up) = upstream.upgrade() else { return };
            let Some(health) = &up.health else { return };
            if let Some(now_healthy) = health.observe(i, ok) {
                let endpoint = &up.spec.endpoints[i].address;
                if now_healthy {
                    tracing::info!(upstream = %up.spec.name, endpoint = %endpoint, "health check: endpoint is healthy again");
                } else {
                    tracing::warn!(upstream = %up.spec.name, endpoint = %endpoint, "health check: endpoint is unhealthy, taken out");
                }
            }
        }
    }
}

/// One probe: true when the endpoint answered an expected status within the timeout.
async fn probe(up: Arc<Upstream>, i: usize, spec: ActiveHealthCheckSpec) -> bool {
    let uri = Uri::builder()
        .scheme(up.scheme.clone())
        .authority(up.authorities[i].clone())
        .path_and_query(spec.path.as_str())
        .build();
    let Ok(uri) = uri else { return false };
    let mut req = Request::get(uri);
    if up.spec.protocol == schemas::snapshot::UpstreamProtocol::Http2 {
        req = req.version(http::Version::HTTP_2);
    } else if let Ok(host) = HeaderValue::from_str(up.authorities[i].as_str()) {
        req = req.header(header::HOST, host);
    }
    let Ok(req) = req.header(header::USER_AGENT, "raftgate-health-check").body(ReqBody::empty()) else {
        return false;
    };
    let call = async {
        let resp = up.client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        // Drain the (small) body so the connection can be reused.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await.map(|b| b.to_bytes());
        Some(status)
    };
    match tokio::time::timeout(spec.timeout.to_std(), call).await {
        Ok(Some(status)) => spec.expected_statuses.contains(&status),
        _ => false,
    }
}
