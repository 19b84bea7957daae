//! Small HTTP calls the testbed makes to the nodes' admin listeners (readiness probes,
//! webhooks), one HTTP/1.1 connection each with hyper. `https://` URLs are TLS with the
//! testbed CA and its operator client certificate (`certs`), as every admin listener of
//! a TLS testbed requires. In netns mode the nodes' addresses are reachable only from the
//! control namespace, so the call runs there, through `testbed http` (a hidden subcommand).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::certs;
use crate::net::Net;
use crate::process::bin;

/// How long a whole call (connect, handshakes, request, body) may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One request; `tls`: the certificate directory, needed for `https://` URLs.
pub(crate) fn request(
    net: &Net,
    tls: Option<&Path>,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    if net.is_netns() && !net.inside_control() {
        let mut cmd = net.command(None, &bin("testbed"));
        cmd.args(["http", method, url]);
        if let Some(dir) = tls {
            cmd.arg("--tls-dir").arg(dir);
        }
        for (k, v) in headers {
            cmd.args(["--header", &format!("{k}: {v}")]);
        }
        cmd.args(["--body", &String::from_utf8_lossy(body)]);
        let out = cmd.output().context("running `testbed http` in the control namespace")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("testbed: "));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, rest) = text.split_once('\n').context("`testbed http` printed no status")?;
        return Ok((status.trim().parse()?, rest.to_string()));
    }
    local(tls, method, url, headers, body)
}

pub(crate) fn get_status(net: &Net, tls: Option<&Path>, url: &str) -> anyhow::Result<u16> {
    request(net, tls, "GET", url, &[], b"").map(|(s, _)| s)
}

/// The request from this process.
pub(crate) fn local(
    tls: Option<&Path>,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let uri: http::Uri = url.parse().with_context(|| format!("`{url}` is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("`{url}`: only http:// and https:// URLs"),
    };
    let authority = uri.authority().with_context(|| format!("`{url}` names no host"))?.clone();
    // A bracketed IPv6 literal is dialed and checked without its brackets.
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = match (https, tls) {
        (true, Some(dir)) => Some(certs::client_config(dir)?),
        (true, None) => bail!("`{url}` is https but no certificate directory was given"),
        (false, _) => None,
    };
    // An HTTP/1.1 connection wants the origin form in the request line, the host apart.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut b = http::Request::builder().method(method).uri(path).header(http::header::HOST, authority.as_str());
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body)))?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let call = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .with_context(|| format!("cannot connect to {authority}"))?;
            match tls {
                None => send(TokioIo::new(tcp), req).await,
                Some(config) => {
                    // The server's certificate must name the host dialed: the node's IP.
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .with_context(|| format!("`{host}` cannot name a TLS server"))?;
                    let stream = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .with_context(|| format!("TLS handshake with {authority}"))?;
                    send(TokioIo::new(stream), req).await
                }
            }
        };
        tokio::time::timeout(TIMEOUT, call).await.with_context(|| format!("{url}: no answer within {TIMEOUT:?}"))?
    })
}

/// Sends `req` over a fresh HTTP/1.1 connection on `io`; the status and the body as text.
async fn send<I>(io: I, req: http::Request<Full<Bytes>>) -> anyhow::Result<(u16, String)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // The connection is driven beside the request; it ends when the response is read.
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
