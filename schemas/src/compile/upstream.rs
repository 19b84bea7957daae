//! Upstreams: endpoints, load balancing, TLS, health checks and the circuit breaker.

use std::collections::HashMap;

use crate::duration::Duration;
use crate::model::{
    ActiveHealthCheck, CircuitBreaker, Dns, DnsRecordType, LoadBalancer, LoadBalancerPolicy, PassiveHealthCheck,
    Upstream, UpstreamProtocol,
};
use crate::snapshot::{
    ActiveHealthCheckSpec, CircuitBreakerSpec, DnsSpec, EndpointSpec, ErrorRateSpec, HashOn, LoadBalancerSpec,
    PassiveHealthCheckSpec, RetryBudgetSpec, UpstreamSpec, UpstreamTlsSpec,
};
use crate::yaml::{at, Seg};

use super::ctx::Ctx;
use super::limits::{MAX_ENDPOINTS, MAX_ENDPOINT_WEIGHT};
use super::names::{valid_address, valid_dns_name};

impl Ctx<'_, Upstream> {
    pub(super) fn upstream(&mut self, u: &Upstream, policy: &crate::policy::Policy) -> UpstreamSpec {
        self.name(&u.name, "upstream");
        if u.endpoints.is_empty() && u.dns.is_none() {
            self.err(
                at!["endpoints"],
                "an upstream needs at least one endpoint",
                Some(
                    "add `endpoints: [{ address: host:port }]`, or `dns: { name: users.internal, port: 8080 }` \
                     to find them in DNS"
                        .to_string(),
                ),
            );
        }
        if u.endpoints.len() > MAX_ENDPOINTS {
            self.err(at!["endpoints"], format!("more than {MAX_ENDPOINTS} endpoints"), None);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut endpoints = Vec::new();
        for (i, e) in u.endpoints.iter().enumerate() {
            let address = match valid_address(&e.address) {
                Ok(a) => a,
                Err(why) => {
                    self.err(
                        at!["endpoints", i, "address"],
                        format!("invalid address `{}`: {why}", e.address),
                        Some(
                            "write host:port, e.g. `10.0.0.5:8080`, `[2001:db8::1]:443` or `users.internal:80`"
                                .to_string(),
                        ),
                    );
                    continue;
                }
            };
            if let Some(first) = seen.get(&address) {
                self.err(
                    at!["endpoints", i, "address"],
                    format!("endpoint `{address}` is listed twice (first as endpoint {first})"),
                    Some("remove the duplicate; use `weight` to send it more traffic".to_string()),
                );
            }
            seen.insert(address.clone(), i);
            if let Some(why) = policy.endpoint(&address) {
                self.err(
                    at!["endpoints", i, "address"],
                    why,
                    Some(crate::policy::Policy::help("--allow-internal-endpoints")),
                );
            }
            let weight = e.weight.unwrap_or(1);
            if weight == 0 {
                self.err(
                    at!["endpoints", i, "weight"],
                    "endpoint weight is 0",
                    Some("remove the endpoint to stop sending it traffic; weights are 1 to 1000".to_string()),
                );
            } else {
                self.range(at!["endpoints", i, "weight"], weight, 1, MAX_ENDPOINT_WEIGHT, "endpoint weight");
            }
            endpoints.push(EndpointSpec { address, weight });
        }
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));

        let dns = u.dns.as_ref().map(|d| self.dns(d));
        if let (Some(d), Some(tls)) = (&dns, &u.tls) {
            if d.record_type == DnsRecordType::SRV && tls.sni.is_none() {
                self.err(
                    at!["tls"],
                    "TLS to endpoints found by SRV records needs `tls.sni`: the records name no host to verify",
                    Some("add `sni: users.internal` (the name the endpoints' certificates carry)".to_string()),
                );
            } else if !u.endpoints.is_empty() && tls.sni.is_none() {
                self.err(
                    at!["tls"],
                    "TLS to an upstream with both static and DNS endpoints needs `tls.sni`: one name is sent to and verified on all of them",
                    Some("add `sni:` with the name every endpoint's certificate carries".to_string()),
                );
            }
        }
        let load_balancer = self.load_balancer(u.load_balancer.as_ref());
        let connect_timeout = match u.connect_timeout {
            Some(d) => self.positive(at!["connectTimeout"], d, "connectTimeout"),
            None => Duration::from_millis(5_000),
        };
        let tls = u.tls.as_ref().map(|t| {
            let sni = t.sni.as_ref().map(|s| self.hostname(at!["tls", "sni"], s, false));
            if let Some(ca) = &t.ca_file {
                if !ca.starts_with('/') {
                    self.err(at!["tls", "caFile"], format!("`{ca}` is not an absolute path"), None);
                }
            }
            if t.insecure_skip_verify == Some(true) && !policy.allow_insecure_tls {
                self.err(
                    at!["tls", "insecureSkipVerify"],
                    "upstream TLS without certificate verification is refused: anyone on the path can impersonate the upstream",
                    Some(format!(
                        "give the upstream's CA in `tls.caFile` instead; {}",
                        crate::policy::Policy::help("--allow-insecure-upstream-tls")
                    )),
                );
            }
            let client_certificate = t.client_certificate.as_ref().map(|c| {
                let path = |f: &'static str| [Seg::Key("tls"), Seg::Key("clientCertificate"), Seg::Key(f)];
                (self.pem_source(&path("certificate"), &c.certificate), self.pem_source(&path("privateKey"), &c.private_key))
            });
            UpstreamTlsSpec {
                sni,
                ca_file: t.ca_file.clone(),
                insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
                client_certificate,
            }
        });
        let hc = u.health_check.as_ref();
        let active_health_check = hc.and_then(|h| h.active.as_ref()).map(|a| self.active_health(a));
        let passive_health_check = hc.and_then(|h| h.passive.as_ref()).map(|p| self.passive_health(p));
        let circuit_breaker = self.circuit_breaker(u.circuit_breaker.as_ref());
        UpstreamSpec {
            name: u.name.clone(),
            endpoints,
            dns,
            load_balancer,
            protocol: u.protocol.unwrap_or(UpstreamProtocol::Http1),
            connect_timeout,
            tls,
            active_health_check,
            passive_health_check,
            circuit_breaker,
        }
    }

    fn dns(&mut self, d: &Dns) -> DnsSpec {
        let record_type = d.record_type.unwrap_or(DnsRecordType::A);
        let name = d.name.strip_suffix('.').unwrap_or(&d.name).to_ascii_lowercase();
        if let Err(why) = valid_dns_name(&name) {
            self.err(at!["dns", "name"], format!("invalid DNS name `{}`: {why}", d.name), None);
        }
        let port = match (record_type, d.port) {
            (DnsRecordType::SRV, Some(_)) => {
                self.err(
                    at!["dns", "port"],
                    "SRV records carry the endpoints' ports; `port` is not allowed with `type: SRV`",
                    Some("remove `port`".to_string()),
                );
                0
            }
            (DnsRecordType::SRV, None) => 0,
            (_, Some(0)) => {
                self.err(at!["dns", "port"], "port 0 is not a port", Some("give the endpoints' port".to_string()));
                0
            }
            (_, Some(p)) => p,
            (_, None) => {
                self.err(
                    at!["dns"],
                    "endpoints from A or AAAA records need a `port`",
                    Some("add `port: 8080` (the port the endpoints listen on)".to_string()),
                );
                0
            }
        };
        let refresh = d.refresh.unwrap_or(Duration::from_millis(10_000));
        if refresh.as_millis() < 1_000 || refresh.as_millis() > 3_600_000 {
            self.err(
                at!["dns", "refresh"],
                format!("refresh is {refresh}; it must be between 1s and 1h"),
                Some("the records' TTL shortens it when lower; `10s` is the default".to_string()),
            );
        }
        DnsSpec { name, port, record_type, refresh }
    }

    fn load_balancer(&mut self, lb: Option<&LoadBalancer>) -> LoadBalancerSpec {
        let Some(lb) = lb else { return LoadBalancerSpec::RoundRobin };
        match (lb.policy, &lb.consistent_hash) {
            (LoadBalancerPolicy::ConsistentHash, None) => {
                self.err(
                    at!["loadBalancer"],
                    "policy `consistentHash` needs a `consistentHash` block",
                    Some(
                        "add `consistentHash: { header: x-user-id }` (or `cookie: NAME`, or `sourceIP: true`)"
                            .to_string(),
                    ),
                );
                LoadBalancerSpec::RoundRobin
            }
            (LoadBalancerPolicy::ConsistentHash, Some(h)) => {
                let set = [h.header.is_some(), h.cookie.is_some(), h.source_ip.is_some()];
                if set.iter().filter(|b| **b).count() != 1 {
                    self.err(
                        at!["loadBalancer", "consistentHash"],
                        "give exactly one of `header`, `cookie`, `sourceIP`",
                        None,
                    );
                    return LoadBalancerSpec::RoundRobin;
                }
                if let Some(name) = &h.header {
                    let n = self.header_name(at!["loadBalancer", "consistentHash", "header"], name);
                    LoadBalancerSpec::ConsistentHash(HashOn::Header(n))
                } else if let Some(c) = &h.cookie {
                    if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(ch))
                    {
                        self.err(
                            at!["loadBalancer", "consistentHash", "cookie"],
                            format!("`{c}` is not a valid cookie name"),
                            None,
                        );
                    }
                    LoadBalancerSpec::ConsistentHash(HashOn::Cookie(c.clone()))
                } else {
                    if h.source_ip == Some(false) {
                        self.err(
                            at!["loadBalancer", "consistentHash", "sourceIP"],
                            "`sourceIP: false` hashes on nothing",
                            Some("write `sourceIP: true`, or hash on a header or cookie".to_string()),
                        );
                    }
                    LoadBalancerSpec::ConsistentHash(HashOn::SourceIp)
                }
            }
            (policy, Some(_)) => {
                self.err(
                    at!["loadBalancer", "consistentHash"],
                    format!("`consistentHash` is set but the policy is `{}`", policy_name(policy)),
                    Some("set `policy: consistentHash`, or remove the `consistentHash` block".to_string()),
                );
                LoadBalancerSpec::RoundRobin
            }
            (LoadBalancerPolicy::RoundRobin, None) => LoadBalancerSpec::RoundRobin,
            (LoadBalancerPolicy::LeastRequest, None) => LoadBalancerSpec::LeastRequest,
            (LoadBalancerPolicy::Random, None) => LoadBalancerSpec::Random,
        }
    }

    fn active_health(&mut self, a: &ActiveHealthCheck) -> ActiveHealthCheckSpec {
        let p = |f: &'static str| [Seg::Key("healthCheck"), Seg::Key("active"), Seg::Key(f)];
        if !a.path.starts_with('/') || a.path.contains(char::is_whitespace) {
            self.err(
                &p("path"),
                format!("health check path `{}` must start with `/` and contain no spaces", a.path),
                None,
            );
        }
        let interval = a.interval.unwrap_or(Duration::from_millis(10_000));
        let timeout = a.timeout.unwrap_or(Duration::from_millis(2_000).min(interval));
        if interval.as_millis() < 100 {
            self.err(
                &p("interval"),
                format!("interval `{interval}` is shorter than 100ms"),
                Some("every node probes every endpoint; a short interval multiplies into a heavy load".to_string()),
            );
        }
        self.positive(&p("timeout"), timeout, "timeout");
        if timeout > interval {
            self.err(&p("timeout"), format!("timeout `{timeout}` is longer than the interval `{interval}`"), None);
        }
        let healthy_threshold =
            self.range(&p("healthyThreshold"), a.healthy_threshold.unwrap_or(2), 1, 100, "healthyThreshold");
        let unhealthy_threshold =
            self.range(&p("unhealthyThreshold"), a.unhealthy_threshold.unwrap_or(3), 1, 100, "unhealthyThreshold");
        let mut expected_statuses = a.expected_statuses.clone().unwrap_or_else(|| vec![200]);
        for (i, s) in expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                self.err(
                    &[Seg::Key("healthCheck"), Seg::Key("active"), Seg::Key("expectedStatuses"), Seg::Index(i)],
                    format!("{s} is not an HTTP status code (100 to 599)"),
                    None,
                );
            }
        }
        if expected_statuses.is_empty() {
            self.err(&p("expectedStatuses"), "expectedStatuses is empty: no probe could ever succeed", None);
        }
        expected_statuses.sort_unstable();
        expected_statuses.dedup();
        ActiveHealthCheckSpec {
            path: a.path.clone(),
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
            expected_statuses,
        }
    }

    fn passive_health(&mut self, p: &PassiveHealthCheck) -> PassiveHealthCheckSpec {
        let at = |f: &'static str| [Seg::Key("healthCheck"), Seg::Key("passive"), Seg::Key(f)];
        let consecutive_failures =
            self.range(&at("consecutiveFailures"), p.consecutive_failures.unwrap_or(5), 1, 1000, "consecutiveFailures");
        let base_ejection_time = p.base_ejection_time.unwrap_or(Duration::from_millis(30_000));
        self.positive(&at("baseEjectionTime"), base_ejection_time, "baseEjectionTime");
        let max_ejection_percent =
            self.range(&at("maxEjectionPercent"), p.max_ejection_percent.unwrap_or(50), 0, 100, "maxEjectionPercent");
        PassiveHealthCheckSpec { consecutive_failures, base_ejection_time, max_ejection_percent }
    }

    fn circuit_breaker(&mut self, cb: Option<&CircuitBreaker>) -> CircuitBreakerSpec {
        let at = |f: &'static str| [Seg::Key("circuitBreaker"), Seg::Key(f)];
        let limit = |ctx: &mut Self, v: Option<u32>, f: &'static str, default: u32| {
            ctx.range(&at(f), v.unwrap_or(default), 1, 1_000_000, f)
        };
        let Some(cb) = cb else {
            return CircuitBreakerSpec {
                consecutive_failures: None,
                error_rate: None,
                open_for: Duration::from_millis(30_000),
                half_open_requests: 1,
                max_connections: 1024,
                max_pending_requests: 1024,
                max_parallel_requests: 1024,
                max_parallel_retries: 3,
                retry_budget: None,
            };
        };
        let error_rate = cb.error_rate.as_ref().map(|e| {
            let p = |f: &'static str| [Seg::Key("circuitBreaker"), Seg::Key("errorRate"), Seg::Key(f)];
            ErrorRateSpec {
                percent: self.range(&p("percent"), e.percent, 1, 100, "percent"),
                window: self.positive(&p("window"), e.window, "window"),
                minimum_requests: self.range(
                    &p("minimumRequests"),
                    e.minimum_requests.unwrap_or(20),
                    1,
                    1_000_000,
                    "minimumRequests",
                ),
            }
        });
        let consecutive_failures = match (cb.consecutive_failures, &error_rate) {
            (Some(n), _) => Some(self.range(&at("consecutiveFailures"), n, 1, 1_000_000, "consecutiveFailures")),
            (None, Some(_)) => None,
            (None, None) => Some(5),
        };
        let open_for = cb.open_for.unwrap_or(Duration::from_millis(30_000));
        self.positive(&at("openFor"), open_for, "openFor");
        CircuitBreakerSpec {
            consecutive_failures,
            error_rate,
            open_for,
            half_open_requests: self.range(
                &at("halfOpenRequests"),
                cb.half_open_requests.unwrap_or(1),
                1,
                1000,
                "halfOpenRequests",
            ),
            max_connections: limit(self, cb.max_connections, "maxConnections", 1024),
            max_pending_requests: limit(self, cb.max_pending_requests, "maxPendingRequests", 1024),
            max_parallel_requests: limit(self, cb.max_parallel_requests, "maxParallelRequests", 1024),
            max_parallel_retries: limit(self, cb.max_parallel_retries, "maxParallelRetries", 3),
            retry_budget: cb.retry_budget.as_ref().map(|b| {
                let p = |f: &'static str| [Seg::Key("circuitBreaker"), Seg::Key("retryBudget"), Seg::Key(f)];
                RetryBudgetSpec {
                    percent: self.range(&p("percent"), b.percent.unwrap_or(20), 1, 100, "percent"),
                    min_concurrency: self.range(
                        &p("minConcurrency"),
                        b.min_concurrency.unwrap_or(3),
                        0,
                        1_000_000,
                        "minConcurrency",
                    ),
                }
            }),
        }
    }
}

fn policy_name(p: LoadBalancerPolicy) -> &'static str {
    match p {
        LoadBalancerPolicy::RoundRobin => "roundRobin",
        LoadBalancerPolicy::LeastRequest => "leastRequest",
        LoadBalancerPolicy::Random => "random",
        LoadBalancerPolicy::ConsistentHash => "consistentHash",
    }
}
