//! `raftgate config show|history|sync|diff`, `raftgate routes` and `raftgate upstreams`.

use schemas::admin::{ConfigHistoryRequest, ConfigSyncRequest, GetConfigRequest, GetUpstreamsRequest};
use schemas::ConfigSnapshot;
use serde::Serialize;
use serde_json::Value;

use crate::client::{CliError, Target};
use crate::output::{self, short, table, utc, Format};

/// The config a node serves, decoded.
async fn served(target: &Target) -> Result<(String, String, ConfigSnapshot), CliError> {
    let dump = target
        .client()?
        .get_config(target.request(GetConfigRequest {}))
        .await
        .map_err(|e| target.error(e))?
        .into_inner();
    let snapshot: ConfigSnapshot = serde_json::from_str(&dump.snapshot_json).map_err(|e| {
        CliError::Refused(format!("{} sent a config this raftgate cannot read (version skew?): {e}", target.admin))
    })?;
    Ok((dump.commit, dump.hash, snapshot))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShowView {
    pub commit: String,
    pub hash: String,
    pub config: ConfigSnapshot,
}

pub async fn show(target: &Target, format: Format) -> Result<(), CliError> {
    let (commit, hash, config) = served(target).await?;
    let view = ShowView { commit, hash, config };
    // People get YAML too: the effective config reads best as what they write.
    output::print(format, &view, |v| format!("# commit {} hash {}\n{}", v.commit, v.hash, output::yaml(&v.config)));
    Ok(())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRow {
    pub commit: String,
    pub hash: String,
    pub author: String,
    pub message: String,
    pub log_index: u64,
    pub applied_at: u64,
}

pub async fn history(target: &Target, format: Format) -> Result<(), CliError> {
    let h = target
        .client()?
        .get_config_history(target.request(ConfigHistoryRequest {}))
        .await
        .map_err(|e| target.error(e))?
        .into_inner();
    let rows: Vec<HistoryRow> = h
        .entries
        .into_iter()
        .map(|e| HistoryRow {
            commit: e.commit,
            hash: e.hash,
            author: e.author,
            message: e.message,
            log_index: e.log_index,
            applied_at: e.applied_at,
        })
        .collect();
    output::print(format, &rows, |rows| render_history(rows));
    Ok(())
}

pub fn render_history(rows: &[HistoryRow]) -> String {
    table(
        &["APPLIED (UTC)", "INDEX", "COMMIT", "AUTHOR", "MESSAGE"],
        rows.iter()
            .map(|r| {
                let author = r.author.split(" <").next().unwrap_or("").to_string();
                vec![
                    utc(r.applied_at).replace('T', " ").trim_end_matches('Z').to_string(),
                    r.log_index.to_string(),
                    short(&r.commit),
                    author,
                    r.message.lines().next().unwrap_or("").to_string(),
                ]
            })
            .collect(),
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncView {
    pub leader: u64,
    pub head: String,
    pub outcome: String,
    pub error: Option<String>,
}

pub async fn sync(target: &Target, format: Format, wait: bool) -> Result<(), CliError> {
    let timeout = target.timeout.max(std::time::Duration::from_secs(70));
    let r = target
        .client()?
        .config_sync(target.request_for(ConfigSyncRequest { wait }, timeout))
        .await
        .map_err(|e| target.error(e))?
        .into_inner();
    let s = r.state.unwrap_or_default();
    let view = SyncView {
        leader: r.leader_id,
        head: s.head,
        outcome: if wait { s.outcome } else { "started".into() },
        error: Some(s.error).filter(|e| !e.is_empty()),
    };
    output::print(format, &view, |v| match (&v.error, wait) {
        (_, false) => format!("sync started on the leader (node {})\n", v.leader),
        (Some(e), _) => format!("leader node {}: sync {}: {e}\n", v.leader, v.outcome),
        (None, _) => format!("leader node {}: head {} {}\n", v.leader, short(&v.head), v.outcome),
    });
    match (view.outcome.as_str(), &view.error) {
        ("failed", Some(e)) => Err(CliError::Failed(format!("sync failed: {e}"))),
        ("refused", _) => {
            Err(CliError::Failed(format!("commit {} was refused: `raftgate status` shows why", short(&view.head))))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    pub route: String,
    pub rule: usize,
    pub hostnames: Vec<String>,
    /// `PathPrefix /api`, `Exact /healthz GET`, `RegularExpression ^/v[0-9]+ header:x=y`.
    pub matches: Vec<String>,
    /// `users 90`, `users-canary 10`; empty when a redirect answers.
    pub backends: Vec<String>,
    /// The security policy guarding the rule and what it checks: `keys (apiKey, cors)`.
    pub security: Option<String>,
    /// The rule's traffic policies: `mirror shadow 10%`, `cache 30s`, `compression
    /// zstd br gzip`, `session cookie raftgate-session`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<String>,
}

pub async fn routes(target: &Target, format: Format) -> Result<(), CliError> {
    let (_, _, snapshot) = served(target).await?;
    let rows = route_rows(&snapshot);
    output::print(format, &rows, |rows| render_routes(rows));
    Ok(())
}

pub fn route_rows(s: &ConfigSnapshot) -> Vec<RouteRow> {
    let mut rows = Vec::new();
    for r in &s.routes {
        for (i, rule) in r.rules.iter().enumerate() {
            let matches = rule
                .matches
                .iter()
                .map(|m| {
                    let kind = serde_json::to_value(m.path.kind).ok().and_then(|v| v.as_str().map(str::to_string));
                    let mut text = format!("{} {}", kind.unwrap_or_default(), m.path.value);
                    if let Some(method) = &m.method {
                        text += &format!(" {method}");
                    }
                    for h in &m.headers {
                        text += &format!(" header:{}={}", h.name, h.value);
                    }
                    for q in &m.query_params {
                        text += &format!(" query:{}={}", q.name, q.value);
                    }
                    text
                })
                .collect();
            rows.push(RouteRow {
                route: r.name.clone(),
                rule: i,
                hostnames: r.hostnames.clone(),
                matches,
                backends: rule.backends.iter().map(|b| format!("{} {}", b.upstream, b.weight)).collect(),
                security: rule.security.as_ref().map(|name| guard_summary(s, name)),
                traffic: traffic_summary(rule),
            });
        }
    }
    rows
}

/// `keys (apiKey, basic, authz, cors)`: a policy's name and the checks it makes.
fn guard_summary(s: &ConfigSnapshot, name: &str) -> String {
    let Some(p) = s.security_policies.iter().find(|p| p.name == name) else { return name.to_string() };
    let checks: Vec<&str> = [
        (p.jwt.is_some(), "jwt"),
        (p.api_key_auth.is_some(), "apiKey"),
        (p.basic_auth.is_some(), "basic"),
        (p.ext_auth.is_some(), "extAuth"),
        (p.authorization.is_some(), "authz"),
        (p.cors.is_some(), "cors"),
    ]
    .into_iter()
    .filter_map(|(on, what)| on.then_some(what))
    .collect();
    format!("{name} ({})", checks.join(", "))
}

/// One line per traffic policy of a rule, for `raftgate routes`.
fn traffic_summary(rule: &schemas::snapshot::RuleSpec) -> Vec<String> {
    let mut out: Vec<String> = rule
        .mirrors
        .iter()
        .map(|m| {
            let share = if m.denominator == 100 {
                format!("{}%", m.numerator)
            } else {
                format!("{}/{}", m.numerator, m.denominator)
            };
            format!("mirror {} {share}", m.upstream)
        })
        .collect();
    if let Some(c) = &rule.cache {
        out.push(match c.default_ttl {
            Some(t) => format!("cache (default {t})"),
            None => "cache".to_string(),
        });
    }
    if let Some(c) = &rule.compression {
        let codings: Vec<&str> = c.encodings.iter().map(|e| e.token()).collect();
        out.push(format!("compression {}", codings.join(" ")));
    }
    if let Some(p) = &rule.session_persistence {
        let kind = match p.kind {
            schemas::snapshot::PersistenceType::Cookie => "cookie",
            schemas::snapshot::PersistenceType::Header => "header",
        };
        out.push(format!("session {kind} {}", p.name));
    }
    out
}

pub fn render_routes(rows: &[RouteRow]) -> String {
    table(
        &["ROUTE", "RULE", "HOSTS", "MATCHES", "BACKENDS", "SECURITY"],
        rows.iter()
            .map(|r| {
                vec![
                    r.route.clone(),
                    r.rule.to_string(),
                    if r.hostnames.is_empty() { "*".into() } else { r.hostnames.join("\n") },
                    r.matches.join("\n"),
                    if r.backends.is_empty() {
                        "(redirect)".into()
                    } else {
                        // Traffic policies under the backends they apply to.
                        r.backends
                            .iter()
                            .cloned()
                            .chain(r.traffic.iter().map(|t| format!("+ {t}")))
                            .collect::<Vec<_>>()
                            .join("\n")
                    },
                    r.security.clone().unwrap_or_else(|| "open".into()),
                ]
            })
            .collect(),
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow {
    pub upstream: String,
    pub load_balancer: String,
    pub address: String,
    pub weight: u32,
    pub in_flight: u64,
    /// healthy, unhealthy, or unchecked without active health checks.
    pub health: String,
    /// Outlier detection: milliseconds until the endpoint is back; 0 when it is in.
    pub ejected_for_ms: u64,
    /// The upstream's breaker: closed, open, half-open, or none.
    pub circuit: String,
    pub circuit_retry_after_ms: u64,
    /// `static` (listed in the config) or `dns` (found in DNS).
    pub source: String,
    /// For an upstream with `dns`: how its resolutions go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsRow>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsRow {
    pub name: String,
    /// pending, ok, error, or empty (no usable records).
    pub result: String,
    pub error: String,
    pub last_ok_ago_ms: u64,
    pub failures: u32,
}

pub async fn upstreams(target: &Target, format: Format) -> Result<(), CliError> {
    let d = target
        .client()?
        .get_upstreams(target.request(GetUpstreamsRequest {}))
        .await
        .map_err(|e| target.error(e))?
        .into_inner();
    let rows: Vec<EndpointRow> = d
        .upstreams
        .into_iter()
        .flat_map(|u| {
            let (name, lb, retry_after) = (u.name, u.load_balancer, u.circuit_retry_after_ms);
            let dns = u.dns.map(|d| DnsRow {
                name: d.name,
                result: d.result,
                error: d.error,
                last_ok_ago_ms: d.last_ok_ago_ms,
                failures: d.failures,
            });
            // An upstream whose DNS found nothing yet still gets a row, saying so.
            let placeholder = (u.endpoints.is_empty() && dns.is_some()).then(|| EndpointRow {
                upstream: name.clone(),
                load_balancer: lb.clone(),
                address: "-".into(),
                weight: 0,
                in_flight: 0,
                health: "-".into(),
                ejected_for_ms: 0,
                circuit: u.circuit.clone(),
                circuit_retry_after_ms: retry_after,
                source: "dns".into(),
                dns: dns.clone(),
            });
            u.endpoints
                .into_iter()
                .map(move |e| EndpointRow {
                    upstream: name.clone(),
                    load_balancer: lb.clone(),
                    address: e.address,
                    weight: e.weight,
                    in_flight: e.in_flight,
                    health: e.health,
                    ejected_for_ms: e.ejected_for_ms,
                    circuit: e.circuit,
                    circuit_retry_after_ms: retry_after,
                    source: if e.from_dns { "dns" } else { "static" }.into(),
                    dns: dns.clone(),
                })
                .chain(placeholder)
        })
        .collect();
    output::print(format, &rows, |rows| render_upstreams(rows));
    Ok(())
}

pub fn render_upstreams(rows: &[EndpointRow]) -> String {
    let mut out = table(
        &["UPSTREAM", "ENDPOINT", "WEIGHT", "INFLIGHT", "HEALTH", "CIRCUIT", "SOURCE"],
        rows.iter()
            .map(|r| {
                vec![
                    r.upstream.clone(),
                    r.address.clone(),
                    r.weight.to_string(),
                    r.in_flight.to_string(),
                    if r.ejected_for_ms > 0 {
                        format!("ejected {}s", r.ejected_for_ms.div_ceil(1000))
                    } else {
                        r.health.clone()
                    },
                    if r.circuit_retry_after_ms > 0 {
                        format!("{} {}s", r.circuit, r.circuit_retry_after_ms.div_ceil(1000))
                    } else {
                        r.circuit.clone()
                    },
                    match (&r.dns, r.source.as_str()) {
                        (Some(d), "dns") => format!("dns {}", d.result),
                        _ => r.source.clone(),
                    },
                ]
            })
            .collect(),
    );
    // Failing resolutions, once per upstream, under the table.
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        let Some(d) = r.dns.as_ref().filter(|d| d.failures > 0 && seen.insert(r.upstream.clone())) else { continue };
        let last = if d.last_ok_ago_ms > 0 {
            format!("serving the endpoints found {}s ago", d.last_ok_ago_ms.div_ceil(1000))
        } else {
            "no endpoints found yet".to_string()
        };
        out.push_str(&format!(
            "\n{}: DNS `{}` failed {}x in a row: {}\n  {last}\n",
            r.upstream, d.name, d.failures, d.error
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// config diff

pub use schemas::diff::{diff, DiffView};

pub fn render_diff(d: &DiffView) -> String {
    if d.is_empty() {
        return format!("no changes between {} and {}\n", d.from, d.to);
    }
    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_string(), |v| v.to_string());
    let mut rows = Vec::new();
    for (kind, k) in [
        ("upstream", &d.upstreams),
        ("route", &d.routes),
        ("certificate", &d.certificates),
        ("security policy", &d.security_policies),
        ("TLS policy", &d.tls_policy),
    ] {
        for n in &k.added {
            rows.push(vec!["+".into(), kind.into(), n.clone(), "added".into()]);
        }
        for n in &k.removed {
            rows.push(vec!["-".into(), kind.into(), n.clone(), "removed".into()]);
        }
        for c in &k.changed {
            let fields: Vec<String> =
                c.fields.iter().map(|f| format!("{}: {} -> {}", f.path, show(&f.before), show(&f.after))).collect();
            rows.push(vec!["~".into(), kind.into(), c.name.clone(), fields.join("\n")]);
        }
    }
    format!("{} -> {}\n", d.from, d.to) + &table(&["", "KIND", "NAME", "CHANGE"], rows)
}
