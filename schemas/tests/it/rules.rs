//! One case per validation rule: broken input → the expected message at the expected place.

use crate::{files, BASE};

/// `(case, yaml added as route.yaml, expected (line, column, message fragment) in route.yaml)`.
/// Every case must produce exactly the listed diagnostics, nothing more.
type Case = (&'static str, &'static str, &'static [(u32, u32, &'static str)]);

const CASES: &[Case] = &[
    ("yaml syntax", "kind: Route\nname: [a\n", &[(3, 1, "YAML syntax error")]),
    ("tab indentation", "kind: Route\n\tname: a\n", &[(1, 7, "YAML syntax error: while scanning a plain scalar, found a tab")]),
    (
        "unknown field",
        "kind: Route\nname: a\nhostname: [x.com]\nrules: []\n",
        &[(3, 1, "unknown field `hostname`, expected one of `kind`, `name`, `hostnames`, `rules`")],
    ),
    (
        "unknown nested field",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    timeout: { request: 2s }\n",
        &[(5, 5, "rules[0]: unknown field `timeout`")],
    ),
    (
        "wrong type",
        "kind: Upstream\nname: u\nendpoints:\n  - address: 127.0.0.1:1\n    weight: heavy\n",
        &[(5, 13, "endpoints[0].weight: invalid type: string \"heavy\", expected u32")],
    ),
    ("missing kind", "name: a\nrules: []\n", &[(1, 1, "missing field `kind`")]),
    (
        "cloud metadata endpoint",
        "kind: Upstream\nname: meta\nendpoints:\n  - address: 169.254.169.254:80\n  - address: metadata.google.internal:80\n",
        &[
            (4, 14, "endpoint `169.254.169.254:80` is a link-local or metadata address"),
            (5, 14, "endpoint `metadata.google.internal:80` is a link-local or metadata address"),
        ],
    ),
    (
        "certificate verification off",
        "kind: Upstream\nname: insecure\nendpoints: [{ address: 10.0.0.1:443 }]\ntls: { insecureSkipVerify: true }\n",
        &[(4, 28, "upstream TLS without certificate verification is refused")],
    ),
    ("unknown kind", "kind: Rout\nname: a\n", &[(1, 7, "unknown kind `Rout`")]),
    ("missing name", "kind: Upstream\nendpoints: []\n", &[(1, 1, "missing field `name`")]),
    ("not a mapping", "- kind: Route\n", &[(1, 1, "a resource must be a mapping")]),
    ("duplicate key", "kind: Route\nname: a\nname: b\nrules: []\n", &[(3, 1, "duplicate key `name`")]),
    (
        "duplicate name",
        "kind: Upstream\nname: users\nendpoints: [{ address: 127.0.0.1:9 }]\n",
        &[(2, 7, "duplicate upstream name `users`: already defined at base.yaml:2:7")],
    ),
    ("invalid name", "kind: Upstream\nname: Users_1\nendpoints: [{ address: 127.0.0.1:9 }]\n", &[(2, 7, "invalid upstream name `Users_1`")]),
    (
        "missing upstream",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: userz }]\n",
        &[(4, 31, "unknown upstream `userz`")],
    ),
    (
        "bad path regex",
        "kind: Route\nname: a\nrules:\n  - matches: [{ path: { type: RegularExpression, value: \"/(a\" } }]\n    backendRefs: [{ upstream: users }]\n",
        &[(4, 57, "invalid regular expression `/(a`: unclosed group")],
    ),
    (
        "bad header regex",
        "kind: Route\nname: a\nrules:\n  - matches:\n      - headers: [{ type: RegularExpression, name: x-v, value: \"[\" }]\n    backendRefs: [{ upstream: users }]\n",
        &[(5, 64, "invalid regular expression `[`")],
    ),
    (
        "zero total weight",
        "kind: Route\nname: a\nrules:\n  - backendRefs:\n      - { upstream: users, weight: 0 }\n      - { upstream: orders, weight: 0 }\n",
        &[(5, 7, "weights add up to 0")],
    ),
    (
        "bad duration",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    timeouts: { request: 2 seconds }\n",
        &[(5, 26, "`2 seconds` is not a duration")],
    ),
    (
        "duration without unit",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\nconnectTimeout: 500\n",
        &[(4, 17, "`500` has no unit")],
    ),
    (
        "zero duration",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\nconnectTimeout: 0s\n",
        &[(4, 17, "connectTimeout must be longer than 0s")],
    ),
    (
        "address without port",
        "kind: Upstream\nname: u\nendpoints:\n  - address: 10.0.0.1\n",
        &[(4, 14, "invalid address `10.0.0.1`: it has no port")],
    ),
    (
        "ipv6 without brackets",
        "kind: Upstream\nname: u\nendpoints:\n  - address: \"::1:80\"\n",
        &[(4, 14, "needs brackets")],
    ),
    ("bad port", "kind: Upstream\nname: u\nendpoints:\n  - address: host:99999\n", &[(4, 14, "is not a port number")]),
    (
        "duplicate endpoint",
        "kind: Upstream\nname: u\nendpoints:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:1\n",
        &[(5, 14, "listed twice")],
    ),
    ("no endpoints", "kind: Upstream\nname: u\nendpoints: []\n", &[(3, 12, "at least one endpoint")]),
    (
        "no endpoints and no dns",
        "kind: Upstream\nname: u\n",
        &[(1, 1, "at least one endpoint")],
    ),
    (
        "dns A without a port",
        "kind: Upstream\nname: u\ndns: { name: users.internal }\n",
        &[(3, 6, "endpoints from A or AAAA records need a `port`")],
    ),
    (
        "dns SRV with a port",
        "kind: Upstream\nname: u\ndns: { name: _http._tcp.users.internal, type: SRV, port: 80 }\n",
        &[(3, 58, "`port` is not allowed with `type: SRV`")],
    ),
    (
        "dns bad name",
        "kind: Upstream\nname: u\ndns:\n  name: users..internal\n  port: 80\n",
        &[(4, 9, "invalid DNS name `users..internal`: it has an empty label")],
    ),
    (
        "dns an address as name",
        "kind: Upstream\nname: u\ndns: { name: 10.0.0.1, port: 80 }\n",
        &[(3, 14, "an IP address is not a name")],
    ),
    (
        "dns refresh too short",
        "kind: Upstream\nname: u\ndns: { name: users.internal, port: 80, refresh: 100ms }\n",
        &[(3, 49, "refresh is 100ms; it must be between 1s and 1h")],
    ),
    (
        "dns unknown type",
        "kind: Upstream\nname: u\ndns: { name: users.internal, port: 80, type: MX }\n",
        &[(3, 46, "unknown variant `MX`")],
    ),
    (
        "static and dns endpoints over TLS without sni",
        "kind: Upstream\nname: u\nendpoints: [{ address: 10.0.0.1:443 }]\ndns: { name: users.internal, port: 443 }\ntls: { caFile: /etc/ca.pem }\n",
        &[(5, 6, "both static and DNS endpoints needs `tls.sni`")],
    ),
    (
        "dns SRV over TLS without sni",
        "kind: Upstream\nname: u\ndns: { name: _https._tcp.users.internal, type: SRV }\ntls: { caFile: /etc/ca.pem }\n",
        &[(4, 6, "needs `tls.sni`")],
    ),
    (
        "endpoint weight zero",
        "kind: Upstream\nname: u\nendpoints:\n  - { address: 127.0.0.1:1, weight: 0 }\n",
        &[(4, 37, "endpoint weight is 0")],
    ),
    (
        "identical matches in two routes",
        "kind: Route\nname: a\nhostnames: [x.com]\nrules:\n  - matches: [{ path: { value: /v1 } }]\n    backendRefs: [{ upstream: users }]\n---\nkind: Route\nname: b\nhostnames: [X.com]\nrules:\n  - matches: [{ path: { type: PathPrefix, value: /v1/ } }]\n    backendRefs: [{ upstream: orders }]\n",
        &[(12, 15, "identical to one in route `a` at route.yaml:5:15 for host `x.com`")],
    ),
    (
        "identical default matches",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n  - backendRefs: [{ upstream: orders }]\n",
        &[(5, 5, "identical to one in route `a` at route.yaml:4:5 for any host")],
    ),
    (
        "bad hostname",
        "kind: Route\nname: a\nhostnames: [\"a..b\", \"10.0.0.1\"]\nrules:\n  - backendRefs: [{ upstream: users }]\n",
        &[(3, 13, "invalid host name `a..b`"), (3, 21, "an IP address is not a host name")],
    ),
    (
        "path without slash",
        "kind: Route\nname: a\nrules:\n  - matches: [{ path: { value: v1 } }]\n    backendRefs: [{ upstream: users }]\n",
        &[(4, 32, "path `v1` must start with `/`")],
    ),
    (
        "lowercase method",
        "kind: Route\nname: a\nrules:\n  - matches: [{ method: get }]\n    backendRefs: [{ upstream: users }]\n",
        &[(4, 25, "`get` is not an HTTP method")],
    ),
    (
        "bad header name",
        "kind: Route\nname: a\nrules:\n  - matches: [{ headers: [{ name: \"x a\", value: b }] }]\n    backendRefs: [{ upstream: users }]\n",
        &[(4, 35, "`x a` is not a valid HTTP header name")],
    ),
    (
        "no backendRefs",
        "kind: Route\nname: a\nrules:\n  - matches: [{ method: GET }]\n",
        &[(4, 5, "rule has no backendRefs")],
    ),
    (
        "filter block mismatch",
        "kind: Route\nname: a\nrules:\n  - filters:\n      - type: RequestRedirect\n        urlRewrite: { hostname: x.com }\n    backendRefs: [{ upstream: users }]\n",
        &[(5, 9, "filter of type RequestRedirect also sets `urlRewrite`")],
    ),
    (
        "redirect with backends",
        "kind: Route\nname: a\nrules:\n  - filters:\n      - type: RequestRedirect\n        requestRedirect: { scheme: https }\n    backendRefs: [{ upstream: users }]\n",
        &[(7, 18, "RequestRedirect filter cannot have backendRefs")],
    ),
    (
        "bad redirect status",
        "kind: Route\nname: a\nrules:\n  - filters:\n      - type: RequestRedirect\n        requestRedirect: { statusCode: 200 }\n",
        &[(6, 40, "redirect status 200")],
    ),
    (
        "protected header",
        "kind: Route\nname: a\nrules:\n  - filters:\n      - type: RequestHeaderModifier\n        requestHeaderModifier: { set: [{ name: Host, value: x }] }\n    backendRefs: [{ upstream: users }]\n",
        &[(6, 48, "header `host` cannot be modified")],
    ),
    (
        "prefix rewrite needs prefix match",
        "kind: Route\nname: a\nrules:\n  - matches: [{ path: { type: Exact, value: /a } }]\n    filters:\n      - type: URLRewrite\n        urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /b } }\n    backendRefs: [{ upstream: users }]\n",
        &[(7, 29, "ReplacePrefixMatch needs every match of the rule to be a PathPrefix")],
    ),
    (
        "consistent hash without key",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\nloadBalancer: { policy: consistentHash }\n",
        &[(4, 15, "policy `consistentHash` needs a `consistentHash` block")],
    ),
    (
        "unknown policy",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\nloadBalancer: { policy: leastConn }\n",
        &[(4, 25, "unknown variant `leastConn`")],
    ),
    (
        "retry attempts out of range",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    retry: { attempts: 50 }\n",
        &[(5, 24, "attempts is 50; it must be between 1 and 10")],
    ),
    (
        "status codes without trigger",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    retry: { attempts: 2, statusCodes: [503] }\n",
        &[(5, 40, "`statusCodes` is set but `retryOn` lacks")],
    ),
    (
        "backend timeout above request timeout",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    timeouts: { request: 1s, backendRequest: 2s }\n",
        &[(5, 46, "backendRequest `2s` is longer than the request timeout `1s`")],
    ),
    (
        "health check timeout above interval",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\nhealthCheck:\n  active: { path: /h, interval: 1s, timeout: 2s }\n",
        &[(5, 46, "timeout `2s` is longer than the interval `1s`")],
    ),
    (
        "error rate percent",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\ncircuitBreaker:\n  errorRate: { percent: 150, window: 10s }\n",
        &[(5, 25, "percent is 150; it must be between 1 and 100")],
    ),
    (
        "private key in git",
        "kind: Certificate\nname: c\nhostnames: [a.com]\ncertificate: { file: /etc/c.pem }\nprivateKey: { env: \"-----BEGIN PRIVATE KEY-----\" }\n",
        &[(5, 13, "PEM text is written in the config")],
    ),
    (
        "relative certificate path",
        "kind: Certificate\nname: c\nhostnames: [a.com]\ncertificate: { file: c.pem }\nprivateKey: { env: TLS_KEY }\n",
        &[(4, 22, "`c.pem` is not an absolute path")],
    ),
    (
        "certificate without hostnames",
        "kind: Certificate\nname: c\nhostnames: []\ncertificate: { file: /c.pem }\nprivateKey: { file: /c.key }\n",
        &[(3, 12, "a certificate needs at least one host name")],
    ),
    (
        "overlapping certificates",
        "kind: Certificate\nname: c\nhostnames: [a.com]\ncertificate: { file: /c.pem }\nprivateKey: { file: /c.key }\n---\nkind: Certificate\nname: d\nhostnames: [A.com]\ncertificate: { file: /d.pem }\nprivateKey: { file: /d.key }\n",
        &[(9, 13, "host name `a.com` is already served by certificate `c`")],
    ),
    (
        "two default certificates",
        "kind: Certificate\nname: c\ndefault: true\ncertificate: { file: /c.pem }\nprivateKey: { file: /c.key }\n---\nkind: Certificate\nname: d\nhostnames: [d.com]\ndefault: true\ncertificate: { file: /d.pem }\nprivateKey: { file: /d.key }\n",
        &[(10, 10, "certificate `c` (route.yaml) is already the default")],
    ),
    (
        "unknown cipher suite",
        "kind: TLSPolicy\nname: t\ncipherSuites: [TLS13_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA]\n",
        &[(3, 42, "unknown or unsupported cipher suite `TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA`")],
    ),
    (
        "TLS 1.2 suites in a TLS 1.3 policy",
        "kind: TLSPolicy\nname: t\nminVersion: 1.3\ncipherSuites: [TLS13_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n",
        &[(4, 15, "TLS 1.2 cipher suites listed with `minVersion: \"1.3\"`")],
    ),
    (
        "no TLS 1.3 suite",
        "kind: TLSPolicy\nname: t\ncipherSuites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n",
        &[(3, 15, "no TLS 1.3 cipher suite")],
    ),
    (
        "old TLS version",
        "kind: TLSPolicy\nname: t\nminVersion: \"1.0\"\n",
        &[(3, 13, "unsupported TLS version `1.0`")],
    ),
    (
        "two TLS policies",
        "kind: TLSPolicy\nname: a\n---\nkind: TLSPolicy\nname: b\nminVersion: 1.3\n",
        &[(4, 7, "a second TLSPolicy; `a` (route.yaml) already sets the listener's TLS")],
    ),
    (
        "relative OCSP path",
        "kind: Certificate\nname: c\nhostnames: [a.com]\ncertificate: { file: /c.pem }\nprivateKey: { file: /c.key }\nocspResponseFile: ocsp.der\n",
        &[(6, 19, "`ocsp.der` is not an absolute path")],
    ),
    (
        "HSTS preload without subdomains",
        "kind: Certificate\nname: c\nhostnames: [a.com]\ncertificate: { file: /c.pem }\nprivateKey: { file: /c.key }\nhsts: { maxAgeSeconds: 31536000, preload: true }\n",
        &[(6, 43, "preload lists accept only a `maxAgeSeconds` of a year or more")],
    ),
    (
        "HTTPS redirect with a non-redirect status",
        "kind: Route\nname: a\nhttpsRedirect: { statusCode: 200 }\nrules:\n  - backendRefs: [{ upstream: users }]\n",
        &[(3, 30, "200 is not a redirect status")],
    ),
    (
        "HTTPS redirect with a mistyped field",
        "kind: Route\nname: a\nhttpsRedirect: { prot: 8443 }\nrules:\n  - backendRefs: [{ upstream: users }]\n",
        &[(3, 18, "unknown field `prot`, expected `port` or `statusCode`")],
    ),
    (
        "zero body limit",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    maxRequestBodyBytes: 0\n",
        &[(5, 26, "maxRequestBodyBytes is 0")],
    ),
    (
        "fallback with status and upstream",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    fallback: { status: 503, upstream: orders }\n",
        &[(5, 15, "a fallback needs exactly one of `status` (a static answer) or `upstream`")],
    ),
    (
        "fallback to an unknown upstream",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    fallback: { upstream: spare }\n",
        &[(5, 27, "unknown upstream `spare`")],
    ),
    (
        "fallback status out of range",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    fallback: { status: 700 }\n",
        &[(5, 25, "fallback status is 700; it must be between 100 and 599")],
    ),
    (
        "rate limit with two keys",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    rateLimit: { requests: 10, key: { header: x-user, apiKey: x-api-key } }\n",
        &[(5, 37, "a rate-limit key is exactly one of")],
    ),
    (
        "rate limit of zero requests",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    rateLimit: { requests: 0 }\n",
        &[(5, 28, "requests is 0; it must be between 1")],
    ),
    (
        "rate limit unknown scope",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    rateLimit: { requests: 5, scope: fleet }\n",
        &[(5, 38, "unknown variant `fleet`, expected `node` or `cluster`")],
    ),
    (
        "retry budget percent",
        "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:9 }]\ncircuitBreaker:\n  retryBudget: { percent: 0 }\n",
        &[(5, 27, "percent is 0; it must be between 1 and 100")],
    ),
    (
        "too deep",
        "kind: Route\nname: a\nrules: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        &[(3, 39, "nested more than 32 levels deep")],
    ),
    (
        "security policy naming a missing route and rule",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs:\n  - { kind: Route, name: apj }\n  - { name: api, sectionName: writes }\ncors: { allowOrigins: [\"*\"] }\n",
        &[(10, 26, "unknown route `apj`"), (11, 31, "route `api` has no rule named `writes`")],
    ),
    (
        "security policy with a malformed CIDR",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\nauthorization:\n  rules:\n    - { action: Allow, principal: { clientCIDRs: [10.0.0.1/8, 10.0.0.0/33] } }\n",
        &[
            (12, 51, "`10.0.0.1/8` has host bits set; the block is `10.0.0.0/8`"),
            (12, 63, "`10.0.0.0/33` is not a CIDR block"),
        ],
    ),
    (
        "security policy with an unknown authorization action",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\nauthorization:\n  rules:\n    - { action: Permit }\n",
        &[(12, 17, "unknown variant `Permit`, expected `Allow` or `Deny`")],
    ),
    (
        "api keys in clear and passwords that are not bcrypt",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\napiKeyAuth:\n  consumers: [{ name: app, sha256: my-secret-key }]\nbasicAuth:\n  forwardUsernameHeader: x-user\n  htpasswd: [\"bob:secret\", \"eve:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\"]\n",
        &[
            (11, 36, "not a SHA-256: 64 hex digits are expected"),
            (14, 14, "the entry of `bob` is not a hash (a password in clear, or crypt()); only bcrypt is accepted"),
            (14, 28, "the entry of `eve` is a SHA-1 hash; only bcrypt is accepted"),
        ],
    ),
    (
        "two policies on one route, and a consumer rule without authentication",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\ncors: { allowOrigins: [\"https://a.example\"] }\n---\nkind: SecurityPolicy\nname: q\ntargetRefs: [{ name: api }]\nauthorization: { rules: [{ action: Allow, principal: { consumers: [app] } }] }\n",
        &[
            (14, 14, "route `api` is already guarded by security policy `p`"),
            (15, 67, "a consumer condition needs `apiKeyAuth`, `basicAuth` or `jwt` in the same policy"),
        ],
    ),
    (
        "a rate limit keyed by consumer on an unguarded rule",
        "kind: Route\nname: api\nrules:\n  - backendRefs: [{ upstream: users }]\n    rateLimit: { requests: 5, key: { consumer: true } }\n",
        &[(5, 36, "this rate limit is keyed by consumer, but no security policy authenticates this rule")],
    ),
    (
        "a CORS origin with a path",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\ncors: { allowOrigins: [\"https://a.example/app\"] }\n",
        &[(10, 24, "invalid origin `https://a.example/app`: an origin has no path, query or user")],
    ),
    (
        "a JWT provider fetching keys over plain http, and an unknown provider in a rule",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\njwt:\n  providers:\n    - name: idp\n      remoteJWKS: { uri: \"http://idp.example.com/jwks\" }\nauthorization:\n  rules: [{ action: Allow, principal: { jwt: { provider: ipd, claims: [{ name: groups, valueType: StringArray, values: [] }] } } }]\n",
        &[
            (13, 26, "`http://idp.example.com/jwks` fetches keys over plain http from another host"),
            (15, 58, "unknown JWT provider `ipd`"),
            (15, 120, "no values: the claim could never match"),
        ],
    ),
    (
        "an unknown claim value type",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\njwt: { providers: [{ name: idp, localJWKS: { file: /etc/jwks.json } }] }\nauthorization:\n  rules: [{ action: Allow, principal: { jwt: { claims: [{ name: groups, valueType: Regex, values: [a] }] } } }]\n",
        &[(12, 84, "unknown variant `Regex`, expected `String` or `StringArray`")],
    ),
    (
        "a provider without keys, and an HMAC secret written in the config",
        "kind: Route\nname: api\nrules:\n  - name: reads\n    backendRefs: [{ upstream: users }]\n---\nkind: SecurityPolicy\nname: p\ntargetRefs: [{ name: api }]\njwt:\n  providers:\n    - name: a\n    - name: b\n      hmacSecret: { env: my-secret-value }\n",
        &[(12, 7, "provider `a` has no keys"), (14, 19, "a secret is exactly one of `file: /abs/path` or `env: VARIABLE`")],
    ),
    (
        "a rate limit keyed by a claim on a rule without JWT",
        "kind: Route\nname: api\nrules:\n  - backendRefs: [{ upstream: users }]\n    rateLimit: { requests: 5, key: { claim: sub } }\n",
        &[(5, 36, "this rate limit is keyed by a token claim, but no security policy with `jwt` guards this rule")],
    ),
    (
        "compression: a coding twice, a media type without a subtype",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    compression: { encodings: [gzip, gzip], contentTypes: [text] }\n",
        &[(5, 38, "`gzip` is listed twice"), (5, 60, "`text` is not a media type")],
    ),
    (
        "compression: an unknown coding",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    compression: { encodings: [deflate] }\n",
        &[(5, 32, "unknown variant `deflate`, expected one of `zstd`, `br`, `gzip`")],
    ),
    (
        "session persistence: a bad cookie name, a permanent cookie without absoluteTimeout",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    sessionPersistence: { sessionName: \"a b\", cookieConfig: { lifetimeType: Permanent } }\n",
        &[(5, 40, "`a b` is not a cookie name"), (5, 61, "a `Permanent` cookie needs `absoluteTimeout`")],
    ),
    (
        "session persistence: a header that cannot carry it",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    sessionPersistence: { type: Header, sessionName: Cookie, idleTimeout: 0s }\n",
        &[(5, 54, "`cookie` cannot carry a session"), (5, 75, "idleTimeout")],
    ),
    (
        "compression: no codings",
        "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: users }]\n    compression: { encodings: [], minBytes: 2000000000 }\n",
        &[(5, 31, "`encodings` is empty"), (5, 45, "minBytes is 2000000000; at most 1 GiB")],
    ),
];

#[test]
fn every_rule_reports_the_right_place() {
    let mut failures = Vec::new();
    for (case, yaml, expected) in CASES {
        let tree = files(&[("base.yaml", BASE), ("route.yaml", yaml)]);
        let diags = match schemas::compile_tree(&tree) {
            Ok(_) => {
                failures.push(format!("{case}: accepted, expected errors"));
                continue;
            }
            Err(d) => d,
        };
        let got: Vec<String> = diags.iter().map(ToString::to_string).collect();
        if diags.len() != expected.len() {
            failures.push(format!(
                "{case}: expected {} diagnostics, got {}:\n    {}",
                expected.len(),
                diags.len(),
                got.join("\n    ")
            ));
            continue;
        }
        for (d, (line, col, fragment)) in diags.iter().zip(expected.iter()) {
            if d.file != "route.yaml" || d.line != *line || d.column != *col || !d.message.contains(fragment) {
                failures.push(format!("{case}: expected route.yaml:{line}:{col} containing {fragment:?}, got {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

#[test]
fn all_errors_of_a_tree_are_reported_in_one_run() {
    let tree = files(&[
        ("a.yaml", "kind: Route\nname: a\nrules:\n  - backendRefs: [{ upstream: nope }]\n"),
        ("b.yaml", "kind: Upstream\nname: b\nendpoints: [{ address: nope }]\n---\nkind: Rout\nname: c\n"),
        ("c.yaml", "kind: Route\nname: [\n"),
    ]);
    let diags = schemas::compile_tree(&tree).unwrap_err();
    let places: Vec<String> = diags.iter().map(|d| format!("{}:{}:{}", d.file, d.line, d.column)).collect();
    assert_eq!(places, ["a.yaml:4:31", "b.yaml:3:24", "b.yaml:5:7", "c.yaml:3:1"], "{diags:#?}");
}

#[test]
fn limits_are_enforced() {
    let limits = schemas::TreeLimits { max_file_bytes: 100, ..Default::default() };
    let big = format!("kind: Upstream\nname: u\nendpoints: [{{ address: 127.0.0.1:9 }}]\n# {}\n", "x".repeat(200));
    let diags = schemas::compile_tree_with(&files(&[("big.yaml", &big)]), &limits).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.contains("more than the limit of 100"), "{}", diags[0]);

    let bad_utf8 = schemas::SourceFile { path: "bin.yaml".into(), contents: b"kind: Route\nname: \xff\n".to_vec() };
    let diags = schemas::compile_tree(&[bad_utf8]).unwrap_err();
    assert_eq!((diags[0].line, diags[0].column), (2, 7));
    assert!(diags[0].message.contains("UTF-8"));
}

#[test]
fn the_example_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut tree = Vec::new();
    collect(&root, &root, &mut tree);
    let compiled = schemas::compile_tree(&tree).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(compiled.snapshot.upstreams.len() >= 3);
    assert!(compiled.snapshot.routes.len() >= 2);
    assert_eq!(compiled.snapshot.certificates.len(), 1);
    // The canary split survives compilation with its weights.
    let users = compiled.snapshot.routes.iter().find(|r| r.name == "users-api").unwrap();
    let weights: Vec<(&str, u32)> = users.rules[0].backends.iter().map(|b| (b.upstream.as_str(), b.weight)).collect();
    assert_eq!(weights, [("users", 90), ("users-canary", 10)]);
}

fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<schemas::SourceFile>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if schemas::is_config_file(&p.to_string_lossy()) {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push(schemas::SourceFile { path: rel, contents: std::fs::read(&p).unwrap() });
        }
    }
}

#[test]
fn the_path_patterns_of_one_host_must_build_together() {
    // Each pattern fits the per-pattern bound; forty of them for one host name exceed what
    // the router's combined set may compile to, so the config is refused (a node used to
    // build the set, fail, and serve the host without any of its regex routes).
    let route = |name: &str, host: &str, n: usize| {
        let mut yaml = format!("---\nkind: Route\nname: {name}\nhostnames: [{host}]\nrules:\n  - matches:\n");
        for i in 0..n {
            yaml += &format!("      - path: {{ type: RegularExpression, value: '/{i}/\\w{{10}}' }}\n");
        }
        yaml + "    backendRefs: [{ upstream: users }]\n"
    };
    let alone = schemas::patterns::value_regex(r"/0/\w{10}");
    assert!(alone.is_ok(), "one pattern fits alone: {alone:?}");
    let ok = files(&[
        ("base.yaml", BASE),
        ("route.yaml", &(route("a", "a.example.com", 4) + &route("b", "b.example.com", 4))),
    ]);
    schemas::compile_tree(&ok).unwrap_or_else(|d| panic!("{d:#?}"));

    let too_many = route("a", "a.example.com", 40) + &route("b", "b.example.com", 4);
    let errs = schemas::compile_tree(&files(&[("base.yaml", BASE), ("route.yaml", &too_many)])).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!((e.file.as_str(), e.line), ("route.yaml", 7), "{e:#?}");
    assert!(
        e.message.contains("the 40 RegularExpression paths of host `a.example.com` cannot be matched together"),
        "{e:#?}"
    );
}

#[test]
fn the_operator_can_allow_internal_endpoints_and_unverified_tls() {
    let yaml = "kind: Upstream\nname: meta\nendpoints: [{ address: 169.254.169.254:80 }, { address: 127.0.0.1:9900 }]\ntls: { insecureSkipVerify: true }\n";
    let tree = files(&[("base.yaml", BASE), ("u.yaml", yaml)]);
    let limits = schemas::TreeLimits::default();
    let own = schemas::Policy { reserved: vec!["0.0.0.0:9900".into()], ..Default::default() };
    let errs = schemas::compile_tree_for(&tree, &limits, &own).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[1].message.contains("one of this cluster's own listeners (0.0.0.0:9900)"), "{errs:#?}");
    assert!(errs.iter().all(|e| e.help.as_deref().unwrap_or("").contains("--allow-")), "{errs:#?}");
    let allowed = schemas::Policy { allow_internal_endpoints: true, allow_insecure_tls: true, ..own };
    schemas::compile_tree_for(&tree, &limits, &allowed).unwrap_or_else(|d| panic!("{d:#?}"));
}
