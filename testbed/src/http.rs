//! Small HTTP calls the testbed makes (readiness probes, webhooks), with hyper's client.
//! In netns mode the nodes' addresses are reachable only from the control namespace, so
//! the call runs there, through `testbed http` (a hidden subcommand).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::net::Net;
use crate::process::bin;

/// One request; `None` when nothing answered within five seconds.
pub(crate) fn request(
    net: &Net,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    if net.is_netns() && !net.inside_control() {
        let mut cmd = net.command(None, &bin("testbed"));
        cmd.args(["http", method, url]);
        for (k, v) in headers {
            cmd.args(["--header", &format!("{k}: {v}")]);
        }
        cmd.args(["--body", &String::from_utf8_lossy(body)]);
        let out = cmd.output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, rest) = text.split_once('\n')?;
        return Some((status.trim().parse().ok()?, rest.to_string()));
    }
    local(method, url, headers, body)
}

pub(crate) fn get_status(net: &Net, url: &str) -> Option<u16> {
    request(net, "GET", url, &[], b"").map(|(s, _)| s)
}

/// The request from this process.
pub(crate) fn local(method: &str, url: &str, headers: &[(String, String)], body: &[u8]) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let mut b = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
        let call = async {
            let resp = client.request(req).await.ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(5), call).await.ok().flatten()
    })
}
