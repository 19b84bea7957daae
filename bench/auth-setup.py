#!/usr/bin/env python3
"""Makes the credentials of the benchmark's guarded routes in DIR and the config that
guards them: an ES256 key (openssl) with its JWKS and a token signed by it, an API key and
its SHA-256, a bcrypt htpasswd line (`raftgate credentials htpasswd`). Prints the request
headers of each route as NAME=HEADER lines for proxy-bench.sh.

Standard library and the openssl CLI only: the signature openssl gives is DER, which JWS
wants as the raw r||s pair."""
import base64, hashlib, json, os, secrets, subprocess, sys, time

out, raftgate = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
run = lambda *a, **k: subprocess.run(list(a), check=True, capture_output=True, **k).stdout

key = os.path.join(out, "es256.pem")
pem = run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
open(key, "wb").write(pem)
point = run("openssl", "pkey", "-in", key, "-pubout", "-outform", "DER")[-65:]
assert point[0] == 4, "an uncompressed P-256 point"
jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig", "x": b64(point[1:33]), "y": b64(point[33:])}]}
open(os.path.join(out, "jwks.json"), "w").write(json.dumps(jwks))

header = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "bench"}).encode())
claims = b64(json.dumps({"iss": "https://idp.bench", "aud": "bench", "sub": "bench-user",
                         "exp": int(time.time()) + 7 * 86400}).encode())
der = run("openssl", "dgst", "-sha256", "-sign", key, input=f"{header}.{claims}".encode())

def der_ints(d):
    # SEQUENCE { INTEGER r, INTEGER s }
    assert d[0] == 0x30
    i = 2 if d[1] < 0x80 else 2 + (d[1] & 0x7F)
    ints = []
    while i < len(d):
        assert d[i] == 0x02
        n = d[i + 1]
        ints.append(int.from_bytes(d[i + 2 : i + 2 + n], "big"))
        i += 2 + n
    return ints

r, s = der_ints(der)
token = f"{header}.{claims}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

api_key = "rgk_" + secrets.token_hex(32)
password = secrets.token_hex(16)
htpasswd = run(raftgate, "credentials", "htpasswd", "bench", "--cost", "10", input=(password + "\n").encode()).decode().strip()

def route(name, path):
    return (f"---\nkind: Route\nname: {name}\nrules:\n  - name: all\n    matches: [{{ path: {{ value: {path} }} }}]\n"
            f"    backendRefs: [{{ upstream: backend }}]\n")

cfg = route("jwt", "/jwt") + route("key", "/key") + route("basic", "/basic")
cfg += (f"---\nkind: SecurityPolicy\nname: jwt\ntargetRefs: [{{ name: jwt }}]\njwt:\n  providers:\n"
        f"    - {{ name: idp, issuer: \"https://idp.bench\", audiences: [bench], localJWKS: {{ file: {out}/jwks.json }} }}\n")
cfg += (f"---\nkind: SecurityPolicy\nname: key\ntargetRefs: [{{ name: key }}]\napiKeyAuth:\n"
        f"  consumers: [{{ name: bench, sha256: {hashlib.sha256(api_key.encode()).hexdigest()} }}]\n")
cfg += f"---\nkind: SecurityPolicy\nname: basic\ntargetRefs: [{{ name: basic }}]\nbasicAuth:\n  htpasswd: [\"{htpasswd}\"]\n"
open(os.path.join(out, "auth.yaml"), "w").write(cfg)

basic = base64.b64encode(f"bench:{password}".encode()).decode()
print(f"raftgate-jwt=Authorization: Bearer {token}")
print(f"raftgate-key=x-api-key: {api_key}")
print(f"raftgate-basic=Authorization: Basic {basic}")
