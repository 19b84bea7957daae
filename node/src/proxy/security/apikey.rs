//! API keys: the key is read from a header or a query parameter, hashed with SHA-256 and
//! looked up among the consumers' hashes. Only hashes are ever held, in the config or here.
//!
//! The table is indexed by the first 8 bytes of the hash and the full 32 are then compared
//! in constant time: how long a lookup takes depends only on the hash of what the client
//! sent, which tells it nothing about any stored key.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, Request, Uri};
use schemas::snapshot::{ApiKeyAuthSpec, KeySourceSpec};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::super::error::Denial;

/// Largest consumers file read on a node.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Longest key considered; longer values are refused without hashing.
const MAX_KEY_BYTES: usize = 1024;

/// Consumers by the first 8 bytes of their key's hash: `(full hash, name)`.
type KeyTable = HashMap<u64, Vec<([u8; 32], Arc<str>)>>;

#[derive(Debug)]
pub struct ApiKeys {
    sources: Vec<Source>,
    by_prefix: KeyTable,
    forward: HeaderName,
    sanitize: bool,
    policy: String,
}

#[derive(Debug)]
enum Source {
    Header(HeaderName),
    Query(String),
}

impl ApiKeys {
    pub fn build(spec: &ApiKeyAuthSpec, policy: &str) -> anyhow::Result<Self> {
        let mut entries: Vec<(String, String)> =
            spec.consumers.iter().map(|c| (c.name.clone(), c.sha256.clone())).collect();
        if let Some(path) = &spec.consumers_file {
            let text = super::super::tls::config_text(path, MAX_FILE_BYTES)?;
            entries.extend(parse_consumers_file(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?);
        }
        let mut by_prefix = KeyTable::new();
        for (name, hex) in entries {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&hex, &mut hash)
                .map_err(|_| anyhow::anyhow!("security policy `{policy}`: bad SHA-256 for consumer `{name}`"))?;
            by_prefix.entry(prefix(&hash)).or_default().push((hash, Arc::from(name.as_str())));
        }
        let sources = spec
            .extract_from
            .iter()
            .filter_map(|s| match s {
                KeySourceSpec::Header(h) => HeaderName::from_bytes(h.as_bytes()).ok().map(Source::Header),
                KeySourceSpec::Query(q) => Some(Source::Query(q.clone())),
            })
            .collect();
        Ok(ApiKeys {
            sources,
            by_prefix,
            forward: HeaderName::from_bytes(spec.forward_header.as_bytes())?,
            sanitize: spec.sanitize,
            policy: policy.to_string(),
        })
    }

    pub fn challenge(&self) -> String {
        format!("ApiKey realm=\"{}\"", self.policy)
    }

    /// Does the request carry something where a key would be?
    pub fn presented<B>(&self, req: &Request<B>) -> bool {
        self.sources.iter().any(|s| match s {
            Source::Header(h) => req.headers().contains_key(h),
            Source::Query(q) => query_value(req.uri(), q).is_some(),
        })
    }

    /// The consumer whose key the request carries, and the header that names it upstream.
    /// The key is removed from the request unless the policy keeps it; a key in the query
    /// leaves a redacted URI for the access log either way.
    pub fn authenticate<B>(&self, req: &mut Request<B>, cut: &mut QueryCut) -> Result<(HeaderName, Arc<str>), Denial> {
        let mut found: Option<(usize, Vec<u8>)> = None;
        for (i, s) in self.sources.iter().enumerate() {
            let key = match s {
                Source::Header(h) => req.headers().get(h).map(|v| v.as_bytes().to_vec()),
                Source::Query(q) => query_value(req.uri(), q),
            };
            if let Some(k) = key.filter(|k| !k.is_empty()) {
                found = Some((i, k));
                break;
            }
        }
        let Some((source, key)) = found else { return Err(Denial::CredentialsMissing) };
        if let Source::Query(q) = &self.sources[source] {
            let without = without_query_param(req.uri(), q);
            if self.sanitize {
                cut.forward_query = Some(without.query().unwrap_or("").to_string());
                *req.uri_mut() = without.clone();
            }
            cut.redacted_uri = Some(without);
        } else if let (Source::Header(h), true) = (&self.sources[source], self.sanitize) {
            req.headers_mut().remove(h);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Denial::CredentialsInvalid);
        }
        let hash: [u8; 32] = Sha256::digest(&key).into();
        let consumer = self
            .by_prefix
            .get(&prefix(&hash))
            .and_then(|c| c.iter().find(|(h, _)| bool::from(h.ct_eq(&hash))))
            .map(|(_, name)| name.clone())
            .ok_or(Denial::CredentialsInvalid)?;
        Ok((self.forward.clone(), consumer))
    }
}

/// What cutting a key out of the query leaves: the URI to log, and the query to forward
/// (empty: none is left) when the key does not go upstream.
#[derive(Debug, Default)]
pub struct QueryCut {
    pub redacted_uri: Option<Uri>,
    pub forward_query: Option<String>,
}

fn prefix(hash: &[u8; 32]) -> u64 {
    u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// `name sha256-hex` per line; blank lines and `#` comments are skipped.
fn parse_consumers_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `name sha256-hex`", n + 1));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("line {}: `{name}` has no SHA-256 (64 hex digits)", n + 1));
        }
        out.push((name.to_string(), hash.to_ascii_lowercase()));
    }
    Ok(out)
}

/// The decoded value of query parameter `name`, if the request has it.
fn query_value(uri: &Uri, name: &str) -> Option<Vec<u8>> {
    let q = uri.query()?;
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned().into_bytes())
}

/// The URI without any `name=` parameter; every other byte of the query stays as sent.
pub(crate) fn without_query_param(uri: &Uri, name: &str) -> Uri {
    let Some(q) = uri.query() else { return uri.clone() };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let k = pair.split('=').next().unwrap_or("");
            form_urlencoded::parse(k.as_bytes()).next().is_none_or(|(k, _)| k != name)
        })
        .collect();
    let path = uri.path();
    let pq = if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use schemas::snapshot::ApiKeyConsumerSpec;

    use super::*;

    fn sha(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn keys(sources: Vec<KeySourceSpec>, sanitize: bool) -> ApiKeys {
        let spec = ApiKeyAuthSpec {
            extract_from: sources,
            consumers: vec![ApiKeyConsumerSpec { name: "mobile".into(), sha256: sha("k-mobile") }],
            consumers_file: None,
            forward_header: "x-raftgate-consumer".into(),
            sanitize,
        };
        ApiKeys::build(&spec, "p").unwrap()
    }

    #[test]
    fn a_header_key_names_its_consumer_and_is_removed() {
        let k = keys(vec![KeySourceSpec::Header("x-api-key".into())], true);
        let mut ctx = QueryCut::default();
        let mut req = Request::builder().uri("/a").header("x-api-key", "k-mobile").body(()).unwrap();
        assert!(k.presented(&req));
        let (h, who) = k.authenticate(&mut req, &mut ctx).unwrap();
        assert_eq!((h.as_str(), &*who), ("x-raftgate-consumer", "mobile"));
        assert!(!req.headers().contains_key("x-api-key"));
        let mut req = Request::builder().uri("/a").header("x-api-key", "k-other").body(()).unwrap();
        assert_eq!(k.authenticate(&mut req, &mut ctx).unwrap_err(), Denial::CredentialsInvalid);
        let mut req = Request::builder().uri("/a").header("x-api-key", "").body(()).unwrap();
        assert_eq!(k.authenticate(&mut req, &mut ctx).unwrap_err(), Denial::CredentialsMissing);
    }

    #[test]
    fn a_query_key_is_cut_from_the_uri_and_from_the_log() {
        let k = keys(vec![KeySourceSpec::Query("api_key".into())], true);
        let mut ctx = QueryCut::default();
        let mut req = Request::builder().uri("/a?x=%20y&api_key=k-mobile&z").body(()).unwrap();
        assert_eq!(&*k.authenticate(&mut req, &mut ctx).unwrap().1, "mobile");
        assert_eq!(req.uri(), "/a?x=%20y&z");
        assert_eq!(ctx.redacted_uri.as_ref().unwrap(), "/a?x=%20y&z");
        assert_eq!(ctx.forward_query.as_deref(), Some("x=%20y&z"));
        // Kept for the upstream when the policy says so, but still not logged.
        let k = keys(vec![KeySourceSpec::Query("api_key".into())], false);
        let mut ctx = QueryCut::default();
        let mut req = Request::builder().uri("/a?api_key=k-mobile").body(()).unwrap();
        k.authenticate(&mut req, &mut ctx).unwrap();
        assert_eq!(
            (req.uri().to_string(), ctx.redacted_uri.unwrap().to_string()),
            ("/a?api_key=k-mobile".into(), "/a".into())
        );
    }

    #[test]
    fn consumers_files_are_name_and_hash_per_line() {
        let text = format!("# keys\nmobile {}\n\n  web {}  # the site\n", sha("a"), sha("b").to_uppercase());
        let parsed = parse_consumers_file(&text).unwrap();
        assert_eq!(parsed, vec![("mobile".to_string(), sha("a")), ("web".to_string(), sha("b"))]);
        assert!(parse_consumers_file("mobile k-in-clear\n").unwrap_err().contains("line 1"));
        assert!(parse_consumers_file(&format!("a {} extra\n", sha("a"))).is_err());
    }
}
