//! Name resolution for upstream connections, guarded: a name that resolves only to
//! link-local addresses (where cloud metadata services hand out credentials) is refused,
//! unless the node was started with --allow-internal-endpoints. Validation refuses such
//! addresses when a config writes them; this refuses them when a name leads there (a DNS
//! record pointing at 169.254.169.254, or changed to point there later).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// The system resolver, with link-local answers dropped unless allowed.
#[derive(Clone, Debug)]
pub struct Guarded<R = GaiResolver> {
    inner: R,
    allow_internal: bool,
}

impl Guarded {
    pub fn new(allow_internal: bool) -> Self {
        Guarded { inner: GaiResolver::new(), allow_internal }
    }
}

/// The addresses a name resolved to, with link-local ones dropped (unless allowed); an error
/// naming the flag when none is left.
fn keep(name: &str, addrs: Vec<SocketAddr>, allow_internal: bool) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    if allow_internal {
        return Ok(addrs.into_iter());
    }
    let kept: Vec<SocketAddr> = addrs.iter().copied().filter(|a| !schemas::policy::link_local(a.ip())).collect();
    if kept.is_empty() && !addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "`{name}` resolves only to link-local addresses ({}), where cloud metadata services answer; \
                 start the node with --allow-internal-endpoints to allow it",
                addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(kept.into_iter())
}

impl<R> tower_service::Service<Name> for Guarded<R>
where
    R: tower_service::Service<Name> + Clone + Send + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| std::io::Error::other(e.into()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow_internal;
        let host = name.as_str().to_string();
        let lookup = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await.map_err(|e| std::io::Error::other(e.into()))?.collect();
            keep(&host, addrs, allow)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn link_local_answers_are_dropped_unless_allowed() {
        let meta = addrs(&["169.254.169.254:80", "[fd00:ec2::254]:80", "[fe80::1]:80"]);
        let err = keep("metadata.example", meta.clone(), false).unwrap_err();
        assert!(err.to_string().contains("--allow-internal-endpoints"), "{err}");
        assert_eq!(keep("metadata.example", meta.clone(), true).unwrap().count(), 3);
        let mixed = addrs(&["169.254.169.254:80", "10.0.0.5:80"]);
        assert_eq!(keep("mixed", mixed, false).unwrap().collect::<Vec<_>>(), addrs(&["10.0.0.5:80"]));
        // Nothing resolved is the resolver's own error, not ours.
        assert_eq!(keep("none", Vec::new(), false).unwrap().count(), 0);
    }

    /// The real system resolver through the guard: `localhost` still resolves.
    #[tokio::test]
    async fn names_that_lead_elsewhere_resolve_as_before() {
        use tower_service::Service;
        let mut g = Guarded::new(false);
        let name: Name = "localhost".parse().unwrap();
        let got: Vec<SocketAddr> = g.call(name).await.unwrap().collect();
        assert!(got.iter().any(|a| a.ip().is_loopback()), "{got:?}");
    }
}
