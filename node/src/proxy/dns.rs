//! Endpoints from DNS (`Upstream.dns`): every node resolves each DNS upstream's name on its
//! own and swaps the upstream's endpoint set when the answer changes (no Raft entry, no
//! config swap; `endpoints` keeps the state of endpoints that stay).
//!
//! The next resolution comes after the records' TTL, bounded by `[1s, refresh]`. A failed
//! resolution, or one with no usable records, keeps the last good set (a DNS outage must
//! not take the upstream down) and is retried sooner, 1 s doubling up to `refresh`. Answers
//! on link-local addresses are dropped unless the node allows internal endpoints, as for
//! names in static endpoints (`resolve`). Each task holds only a weak reference to its
//! upstream and ends when a config swap drops the upstream.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use schemas::snapshot::{DnsRecordType, DnsSpec};

use super::upstream::Upstream;

/// Shortest time between two resolutions of one name, whatever the TTL says.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// One resolution (all its queries) gives up after this long.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many endpoints are taken from one answer (the lowest addresses).
const MAX_FOUND: usize = 1_000;

static SERVER: OnceLock<SocketAddr> = OnceLock::new();
static RESOLVER: OnceLock<Result<TokioResolver, String>> = OnceLock::new();

/// Sends every lookup to `server` instead of the system's resolvers (`--dns-server`).
/// Call before the first DNS upstream starts.
pub fn set_server(server: SocketAddr) {
    let _ = SERVER.set(server);
}

fn resolver() -> Result<&'static TokioResolver, String> {
    RESOLVER
        .get_or_init(|| {
            let mut opts = ResolverOpts::default();
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 2;
            // Every refresh asks the server: the refresh interval already follows the TTL.
            opts.cache_size = 0;
            let builder = match SERVER.get() {
                Some(addr) => {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(vec![ns]),
                        TokioRuntimeProvider::default(),
                    )
                }
                None => TokioResolver::builder_tokio().map_err(|e| {
                    format!("cannot read the system's DNS configuration: {e}; start the node with --dns-server")
                })?,
            };
            builder.with_options(opts).build().map_err(|e| format!("cannot start the DNS resolver: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Starts keeping `up`'s DNS endpoints current, once per upstream. Needs a Tokio runtime.
pub fn start(up: &Arc<Upstream>) {
    if up.dns.is_some() && up.mark_resolving() {
        tokio::spawn(run(Arc::downgrade(up)));
    }
}

/// What one resolution found.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    /// `(ip:port, weight)`, sorted, unique.
    endpoints: Vec<(String, u32)>,
    /// The shortest TTL among the records used.
    ttl: Duration,
}

async fn run(upstream: Weak<Upstream>) {
    let mut failures: u32 = 0;
    loop {
        let Some(up) = upstream.upgrade() else { return };
        let Some(dns) = &up.dns else { return };
        let spec = &dns.spec;
        let result = match tokio::time::timeout(LOOKUP_TIMEOUT, resolve(spec, up.allow_internal)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Error(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs()))),
        };
        let result = result.and_then(|found| match up.set_found(found.endpoints) {
            Ok(changes) => Ok((changes, found.ttl)),
            Err(e) => Err(Failure::Error(e.to_string())),
        });
        let wait = match result {
            Ok(((added, removed), ttl)) => {
                if !added.is_empty() || !removed.is_empty() {
                    tracing::info!(upstream = %up.spec.name, name = %spec.name, ?added, ?removed, "DNS changed the upstream's endpoints");
                }
                if failures > 0 {
                    tracing::info!(upstream = %up.spec.name, name = %spec.name, "DNS resolves again");
                }
                failures = 0;
                let count = up.endpoints().list.iter().filter(|e| e.from_dns).count();
                dns.gauge.set(count as f64);
                dns.record(|s| {
                    s.result = "ok";
                    s.error.clear();
                    s.last_ok = Some(std::time::Instant::now());
                    s.failures = 0;
                });
                count_resolution(&up.spec.name, "ok");
                ttl.clamp(MIN_REFRESH, spec.refresh.to_std())
            }
            Err(f) => {
                failures += 1;
                let (result, why) = match f {
                    Failure::Empty(why) => ("empty", why),
                    Failure::Error(why) => ("error", why),
                };
                if failures == 1 {
                    tracing::warn!(upstream = %up.spec.name, name = %spec.name, error = %why, "DNS resolution failed; the upstream keeps its last good endpoints");
                }
                dns.record(|s| {
                    s.result = result;
                    s.error = why;
                    s.failures = failures;
                });
                count_resolution(&up.spec.name, result);
                MIN_REFRESH.saturating_mul(1 << failures.min(12).saturating_sub(1)).min(spec.refresh.to_std())
            }
        };
        drop(up);
        tokio::time::sleep(wait).await;
    }
}

fn count_resolution(upstream: &str, result: &'static str) {
    metrics::counter!("raftgate_dns_resolutions_total", "upstream" => upstream.to_string(), "result" => result)
        .increment(1);
}

#[derive(Debug)]
enum Failure {
    /// The name has no usable records (none, or only link-local ones).
    Empty(String),
    /// The lookup itself failed.
    Error(String),
}

/// Resolves `spec` once.
async fn resolve(spec: &DnsSpec, allow_internal: bool) -> Result<Found, Failure> {
    let resolver = resolver().map_err(Failure::Error)?;
    // Absolute: the name is looked up as written, never with the search domains.
    let name = Name::from_ascii(format!("{}.", spec.name)).map_err(|e| Failure::Error(e.to_string()))?;
    let mut found: Vec<(IpAddr, u16, u32)> = Vec::new();
    let mut ttl = u32::MAX;
    match spec.record_type {
        DnsRecordType::A | DnsRecordType::AAAA => {
            let rtype = if spec.record_type == DnsRecordType::A { RecordType::A } else { RecordType::AAAA };
            let lookup = resolver.lookup(name, rtype).await.map_err(lookup_failure)?;
            for r in lookup.answers() {
                if let Some(ip) = r.data.ip_addr() {
                    found.push((ip, spec.port, 1));
                    ttl = ttl.min(r.ttl);
                }
            }
        }
        DnsRecordType::SRV => srv(resolver, name, &mut found, &mut ttl).await?,
    }
    let all = found.len();
    if !allow_internal {
        found.retain(|(ip, _, _)| !schemas::policy::link_local(*ip));
    }
    if found.is_empty() {
        return Err(Failure::Empty(if all > 0 {
            format!(
                "`{}` resolves only to link-local addresses, where cloud metadata services answer; start the node \
                 with --allow-internal-endpoints to allow it",
                spec.name
            )
        } else {
            format!("`{}` has no usable {:?} records", spec.name, spec.record_type)
        }));
    }
    let mut endpoints: Vec<(String, u32)> =
        found.into_iter().map(|(ip, port, w)| (SocketAddr::new(ip, port).to_string(), w)).collect();
    endpoints.sort();
    endpoints.dedup_by(|a, b| a.0 == b.0);
    endpoints.truncate(MAX_FOUND);
    Ok(Found { endpoints, ttl: Duration::from_secs(u64::from(ttl)) })
}

/// The endpoints of `name`'s SRV records: `(address, port, weight)` into `found`, the
/// shortest TTL into `ttl`.
async fn srv(
    resolver: &'static TokioResolver,
    name: Name,
    found: &mut Vec<(IpAddr, u16, u32)>,
    ttl: &mut u32,
) -> Result<(), Failure> {
    let lookup = resolver.lookup(name, RecordType::SRV).await.map_err(lookup_failure)?;
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.clone(), r.ttl)),
            _ => None,
        })
        .collect();
    // Only the most preferred priority is used; the others are standby that the health
    // policies, not DNS order, stand in for.
    let best = records.iter().map(|(s, _)| s.priority).min();
    // `.` as target: "the service is decidedly not available here" (RFC 2782).
    let targets: Vec<_> = records.iter().filter(|(s, _)| Some(s.priority) == best && !s.target.is_root()).collect();
    // Targets resolve together; one that fails is left out (and retried at the next
    // resolution) rather than failing the others.
    let mut lookups = tokio::task::JoinSet::new();
    for (i, (srv, _)) in targets.iter().enumerate() {
        let target = srv.target.clone();
        lookups.spawn(async move { (i, resolver.lookup_ip(target).await) });
    }
    let mut answers: Vec<_> = lookups.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    let mut failed = None;
    for ((srv, record_ttl), (_, ips)) in targets.iter().zip(answers) {
        let ips = match ips {
            Ok(ips) => ips,
            Err(e) => {
                failed = Some(e);
                continue;
            }
        };
        *ttl = (*ttl).min(*record_ttl);
        let left = ips.valid_until().saturating_duration_since(std::time::Instant::now());
        *ttl = (*ttl).min(left.as_secs() as u32);
        let weight = u32::from(srv.weight).clamp(1, 1_000);
        found.extend(ips.iter().map(|ip| (ip, srv.port, weight)));
    }
    match failed {
        Some(e) if found.is_empty() => Err(lookup_failure(e)),
        _ => Ok(()),
    }
}

/// A failed lookup: "no records" is an empty answer, the rest are errors.
fn lookup_failure(e: hickory_resolver::net::NetError) -> Failure {
    if e.is_no_records_found() || e.is_nx_domain() {
        Failure::Empty(e.to_string())
    } else {
        Failure::Error(e.to_string())
    }
}
