//! Protocol upgrades (WebSocket): when the upstream agrees (101), the client's and the
//! upstream's upgraded connections are joined and copied both ways until either side ends.

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Joins the two sides of an upgrade in a task of its own, when `resp` is a 101 and the
/// client asked for one.
pub fn splice(client: Option<OnUpgrade>, resp: &mut Response<Incoming>) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(client) = client else { return };
    let upstream = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, server)) => {
                let mut client = TokioIo::new(client);
                let mut server = TokioIo::new(server);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
}
