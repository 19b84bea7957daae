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
use super::endpoints::Endpoint;
use super::upstream::Upstream;

/// Starts probing `up` once, when it has active health checks; the prober stops by itself
/// when the upstream is dropped. Needs a Tokio runtime.
pub fn start(up: &Arc<Upstream>) {
    if up.health.is_some() && up.mark_probing() {
        tokio::spawn(run(Arc::downgrade(up)));
    }
}

/// Probes `upstream`'s endpoints (those of the moment: DNS may change them) until the
/// upstream is dropped.
async fn run(upstream: Weak<Upstream>) {
    let Some(spec) = upstream.upgrade().and_then(|u| u.health.clone()) else {
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
        for ep in up.endpoints().list.iter() {
            let (up, ep, spec) = (up.clone(), ep.clone(), spec.clone());
            probes.spawn(async move {
                let ok = probe(&up, &ep, &spec).await;
                (ep, ok)
            });
        }
        drop(up);
        while let Some(Ok((ep, ok))) = probes.join_next().await {
            let Some(up) = upstream.upgrade() else { return };
            let Some(health) = &ep.health else { continue };
            if let Some(now_healthy) = health.observe(&spec, ok) {
                let endpoint = &ep.address;
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
async fn probe(up: &Upstream, ep: &Endpoint, spec: &ActiveHealthCheckSpec) -> bool {
    let uri = Uri::builder()
        .scheme(up.scheme.clone())
        .authority(ep.authority.clone())
        .path_and_query(spec.path.as_str())
        .build();
    let Ok(uri) = uri else { return false };
    let mut req = Request::get(uri);
    // An endpoint found by name answers to that name, not to its address.
    let host = match up.dns.as_ref().filter(|d| ep.from_dns && d.spec.port != 0) {
        Some(d) => format!("{}:{}", d.spec.name, d.spec.port),
        None => ep.authority.to_string(),
    };
    if up.spec.protocol == schemas::snapshot::UpstreamProtocol::Http2 {
        req = req.version(http::Version::HTTP_2);
    } else if let Ok(host) = HeaderValue::from_str(&host) {
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
