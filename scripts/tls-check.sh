#!/usr/bin/env bash
# testssl.sh against raftgated's HTTPS listener (`make tls-check`): protocols, ciphers,
# server preferences and known vulnerabilities, judged by someone else's tool. Passes when
# no finding about protocols, ciphers, renegotiation or vulnerabilities is above LOW;
# findings about the throwaway test certificate (self-signed chain, no OCSP/CRL, no CAA
# record) and about the response's HTTP headers are the operator's, and are listed, not
# judged. The report goes to testkit/results/testssl-<stamp>.{txt,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
command -v testssl >/dev/null || { echo "tls-check: testssl is missing (apt-get install testssl.sh)" >&2; exit 2; }
[ -x "$target/raftgated" ] || { echo "tls-check: build first (make build)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# A certificate for a year from a throwaway CA, as an operator's would be.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=tls-check CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=gw.example.com" \
  -keyout "$work/key.pem" -out "$work/req.csr" 2>/dev/null
printf 'subjectAltName=DNS:gw.example.com\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/req.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 365 \
  -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/ca.pem" > "$work/chain.pem"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
up=$(port); https=$(port); http=$(port); admin=$(port)
mkdir "$work/config"
cat > "$work/config/c.yaml" <<EOF
kind: Upstream
name: up
endpoints: [{ address: "127.0.0.1:$up" }]
---
kind: Route
name: r
rules:
  - backendRefs: [{ upstream: up }]
---
kind: Certificate
name: gw
hostnames: [gw.example.com]
certificate: { file: $work/chain.pem }
privateKey: { file: $work/key.pem }
EOF
"$target/testbed" backend "127.0.0.1:$up" >/dev/null 2>&1 & pids+=($!)
"$target/raftgated" --config-dir "$work/config" --http-addr "127.0.0.1:$http" --https-addr "127.0.0.1:$https" \
  --admin-addr "127.0.0.1:$admin" --access-log off >"$work/raftgated.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -sk -o /dev/null --resolve "gw.example.com:$https:127.0.0.1" "https://gw.example.com:$https/" && break
  sleep 0.1
done

mkdir -p testkit/results
out="testkit/results/testssl-$(date -u +%Y%m%dT%H%M%SZ)"
testssl --quiet --color 0 --warnings off --ip 127.0.0.1 --severity LOW --jsonfile-pretty "$out.json" \
  "gw.example.com:$https" > "$out.txt" 2>&1 || true
echo "testssl report: $out.txt"
python3 - "$out.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
findings = [f for sec in doc["scanResult"] for k, v in sec.items() if isinstance(v, list)
            for f in v if isinstance(f, dict) and f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL", "LOW", "WARN")]
# The test certificate and the response headers are not what this check judges.
operator = ("cert", "DNS_CAArecord", "HSTS", "security_headers", "HTTP_", "banner", "cookie", "X-")
bad = []
for f in findings:
    judged = not f["id"].startswith(operator) and f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")
    print(f"{'FAIL' if judged else '    '} {f['severity']:8} {f['id']}: {f['finding'][:110]}")
    bad += [f] if judged else []
print(f"\ntls-check: {'PASS' if not bad else 'FAIL'}: {len(bad)} protocol, cipher or vulnerability findings above LOW")
sys.exit(1 if bad else 0)
EOF
