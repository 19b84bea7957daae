#!/usr/bin/env bash
# proxy-bench.sh — raftgated side by side with nginx and HAProxy, interleaved and pinned, on a
# small (2-vCPU) box. Adapted from shared/bench/proxy-bench.sh (the measured reference layout).
#
#   proxy-bench.sh start              start backend (:9000), nginx, haproxy and raftgated, pinned
#   proxy-bench.sh stop               stop everything "start" launched (by recorded pid only)
#   proxy-bench.sh run  NAME=URL ...  interleaved wrk (or h2load with H2=1) comparison of the targets
#   proxy-bench.sh all                start; run direct+nginx+haproxy+raftgate (h1, then h2c), then
#                                     raftgate's open route against its guarded ones (auth); stop
#   proxy-bench.sh auth               start; only the guarded-route comparison; stop
#   proxy-bench.sh extra              start; equal-work, access-log, new-connection and 10k-route rows
#   proxy-bench.sh trace              start; tracing off against on at 1% and 100% sampling; stop
#   proxy-bench.sh traffic            start; cache hits against nginx's proxy_cache, and a route
#                                     mirrored to a 2 s mirror against the plain route; stop
#   proxy-bench.sh tls                start; HTTPS against nginx (TLS 1.3 keep-alive with HTTP/1.1
#                                     and h2, and a new handshake per request); stop
#
# Default ports:  backend 9000 | h1: nginx 8081 haproxy 8082 raftgate 8084 | h2c: 8181 8182 8084
#                 HTTPS (TLS 1.3, one ECDSA P-256 certificate made per run): nginx 8443 raftgate 8444
#
# Pinning (defaults, 2 vCPUs): proxy under test AND backend on CPU 0, load generator alone on CPU 1.
# So CPU 0 is the bottleneck and wrk keeps ~50% headroom (a proxy ~2x faster than nginx is still
# measurable). With the backend on CPU 1 instead (BACKEND_CPU=1) the wrk+backend CPU saturates at
# nginx speed and caps every proxy there. A proxy you add yourself (e.g. the Rust gateway) must be
# started the same way:
#     taskset -c 0 ./gateway ...          # and give it ONE worker thread (tokio current_thread or
#                                          # worker_threads=1); nginx and haproxy run 1 worker too.
# then:  proxy-bench.sh run nginx=http://127.0.0.1:8081/ gw=http://127.0.0.1:8084/
#
# Environment knobs (defaults in brackets):
#   ROUNDS [10]  DURATION [5] (s)  WARMUP [1] (s, unmeasured run right before every measured run)
#   (host noise on this VM comes in bursts of seconds to minutes: many short interleaved rounds
#    give steadier medians/ratios than a few long ones; compare ratios, not absolute rps)
#   CONNS [32]  THREADS [1]  (wrk)          H2=1 -> h2load; H2_CONNS [8]  H2_STREAMS [4]
#   PROXY_CPU [0]  LOAD_CPU [1]  BACKEND_CPU [0]  BACKEND [hyper|nginx]  (hyper if built; "none" = unpinned)
#   BASE [nginx]  (target name the ratio column is relative to)   QUIET_MAX [10] (% busy allowed
#   on any CPU before a run; above it the run waits up to QUIET_WAIT [120] s, then warns)
#   RUNDIR [/tmp/proxybench]  RESULTS [<script dir>/results]
#
# Backend binary (single-threaded hyper, 100-byte body): `testbed backend`, built by make bench.
#   (cargo build --release --workspace)
# Needs: nginx haproxy wrk nghttp2-client(h2load) curl python3 (apt). Servers run as root
# from the configs in conf/, runtime files under RUNDIR; "stop" kills only the pids "start" recorded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$HERE/conf
RUN=${RUNDIR:-/tmp/proxybench}
RESULTS=${RESULTS:-$HERE/results}
ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
H2=${H2:-0}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-4}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BACKEND_CPU=${BACKEND_CPU:-0}
BASE=${BASE:-nginx}
QUIET_MAX=${QUIET_MAX:-10}
QUIET_WAIT=${QUIET_WAIT:-120}
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
HYPER_BIN=${HYPER_BIN:-$TARGET_DIR/release/testbed}
RAFTGATED=${RAFTGATED:-$TARGET_DIR/release/raftgated}
BACKEND=${BACKEND:-hyper}
NCPU=$(nproc)

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- server management
pin() { # pin CPULIST cmd...  ("" or "none" = unpinned). exec: callers run it in a subshell/background
    local c=$1; shift
    if [[ -z $c || $c == none ]]; then exec "$@"; else exec taskset -c "$c" "$@"; fi
}

wait_port() { # host:port [tenths of a second, 100]
    local i
    for i in $(seq 1 "${2:-100}"); do
        (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listening on $1"
}

spawn() { # name cpulist cmd...   -> $RUN/name.pid, output in $RUN/name.out
    local name=$1 cpu=$2; shift 2
    if [[ -f $RUN/$name.pid ]] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
        die "$name already running (pid $(cat "$RUN/$name.pid")); run '$0 stop' first"
    fi
    (pin "$cpu" "$@") >"$RUN/$name.out" 2>&1 &   # pin execs, so $! is the server's own pid
    echo $! >"$RUN/$name.pid"
    log "started $name pid $! cpu=${cpu:-any}"
}

start_servers() {
    mkdir -p "$RUN"/{nginx-backend,nginx,haproxy}/tmp
    case $BACKEND in
    hyper) [[ -x $HYPER_BIN ]] || die "build the testbed first (cargo build --release --workspace) or BACKEND=nginx"
        spawn backend "$BACKEND_CPU" "$HYPER_BIN" backend 127.0.0.1:9000 ;;
    nginx) spawn backend "$BACKEND_CPU" nginx -p "$RUN/nginx-backend/" -e "$RUN/nginx-backend/error.log" \
        -c "$CONF/backend-nginx.conf" ;;
    *) die "BACKEND must be hyper or nginx" ;;
    esac
    # One certificate for both TLS listeners, made for the run (never committed).
    mkdir -p "$RUN/nginx/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.test \
        -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 -keyout "$RUN/nginx/tls/key.pem" \
        -out "$RUN/nginx/tls/cert.pem" 2>/dev/null
    cp "$CONF/nginx.conf" "$RUN/nginx/nginx.conf"
    spawn nginx "$PROXY_CPU" nginx -p "$RUN/nginx/" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf"
    RUNDIR=$RUN/haproxy spawn haproxy "$PROXY_CPU" haproxy -db -f "$CONF/haproxy.cfg"
    [[ -x $RAFTGATED ]] || die "build raftgated first (cargo build --release --workspace)"
    # One worker thread, as nginx and HAProxy get; no access log, as nginx.conf has none.
    # The benchmark config plus guarded routes (JWT ES256, API key, basic auth) whose
    # credentials are made fresh for the run.
    rm -rf "$RUN/raftgate-conf" && mkdir -p "$RUN/raftgate-conf"
    cp "$CONF/raftgate/"*.yaml "$RUN/raftgate-conf/"
    python3 "$HERE/auth-setup.py" "$RUN/auth" "$TARGET_DIR/release/raftgate" >"$RUN/auth-headers"
    cp "$RUN/auth/auth.yaml" "$RUN/raftgate-conf/"
    # The same certificate as nginx's, served to every client (wrk sends no usable SNI), and
    # the same protocol: TLS 1.3 only.
    cat >"$RUN/raftgate-conf/tls.yaml" <<EOF
kind: Certificate
name: bench
hostnames: [bench.test]
default: true
certificate: { file: $RUN/nginx/tls/cert.pem }
privateKey: { file: $RUN/nginx/tls/key.pem }
---
kind: TLSPolicy
name: bench
minVersion: "1.3"
cipherSuites: [TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256]
EOF
    spawn raftgate "$PROXY_CPU" env ${RG_ENV:-X=1} "$RAFTGATED" --workers 1 --access-log off --log-format text \
        --http-addr 127.0.0.1:8084 --https-addr 127.0.0.1:8444 --admin-addr 127.0.0.1:9984 \
        --config-dir "$RUN/raftgate-conf"
    # The same proxy with its access log on (JSON lines), written to a file, as nginx's on
    # :8093 (`--access-log-file`: raftgated's own writer, about half the cost of the default
    # line through its log stream); and the same route shape in a table of 10 and of 10,000
    # routes (rss.sh's config), to show what the table's size costs a request.
    spawn raftgate-log "$PROXY_CPU" "$RAFTGATED" --workers 1 --access-log on \
        --access-log-file "$RUN/raftgate-access.log" \
        --http-addr 127.0.0.1:8094 --admin-addr 127.0.0.1:9985 --config-dir "$RUN/raftgate-conf"
    local n; for n in 10 10000 100000; do
        rm -rf "$RUN/routes-$n"
        python3 "$HERE/routes.py" "$n" 127.0.0.1:9000 "$RUN/routes-$n"
    done
    spawn raftgate-10r "$PROXY_CPU" "$RAFTGATED" --workers 1 --access-log off --log-format text \
        --http-addr 127.0.0.1:8095 --admin-addr 127.0.0.1:9986 --config-dir "$RUN/routes-10"
    spawn raftgate-10kr "$PROXY_CPU" "$RAFTGATED" --workers 1 --access-log off --log-format text \
        --http-addr 127.0.0.1:8096 --admin-addr 127.0.0.1:9987 --config-dir "$RUN/routes-10000"
    spawn raftgate-100kr "$PROXY_CPU" "$RAFTGATED" --workers 1 --access-log off --log-format text \
        --http-addr 127.0.0.1:8097 --admin-addr 127.0.0.1:9988 --config-dir "$RUN/routes-100000"
    # The same proxy as :8084 with two workers, on the same single CPU: what the
    # multi-threaded runtime costs when there is no second core to use.
    spawn raftgate-2w "$PROXY_CPU" "$RAFTGATED" --workers 2 --access-log off --log-format text \
        --http-addr 127.0.0.1:8098 --admin-addr 127.0.0.1:9989 --config-dir "$RUN/raftgate-conf"
    # Tracing on: spans to an OTLP receiver (on the backend's CPU: its work is not the
    # proxy's), at 1% sampling and at 100%; :8084 is the same proxy with tracing off.
    spawn otlp-sink "$BACKEND_CPU" "$HYPER_BIN" otlp-sink 127.0.0.1:4317
    # The mirror of the mirroring row: answers every request after 2 s.
    spawn slow-mirror "$BACKEND_CPU" "$HYPER_BIN" backend 127.0.0.1:9001 --delay 2s
    spawn raftgate-trace1 "$PROXY_CPU" "$RAFTGATED" --workers 1 --access-log off --log-format text \
        --otlp-endpoint http://127.0.0.1:4317 --trace-sampling 0.01 \
        --http-addr 127.0.0.1:8099 --admin-addr 127.0.0.1:9990 --config-dir "$RUN/raftgate-conf"
    spawn raftgate-trace100 "$PROXY_CPU" "$RAFTGATED" --workers 1 --access-log off --log-format text \
        --otlp-endpoint http://127.0.0.1:4317 --trace-sampling 1 \
        --http-addr 127.0.0.1:8100 --admin-addr 127.0.0.1:9991 --config-dir "$RUN/raftgate-conf"
    local p; for p in 9000 9001 8081 8082 8083 8084 8091 8092 8093 8094 8095 8096 8098 8099 8100 8181 8182 8191 8192 8443 8444 4317; do
        wait_port 127.0.0.1:$p
    done
    # 100,000 routes take seconds to compile before the listener opens.
    wait_port 127.0.0.1:8097 600
    curl -sf http://127.0.0.1:9000/ >/dev/null || die "backend not answering"
    for p in 8081 8082 8084; do curl -sf "http://127.0.0.1:$p/" >/dev/null || die "proxy on :$p not answering"; done
    for p in 8181 8182 8084; do curl -sf --http2-prior-knowledge "http://127.0.0.1:$p/" >/dev/null \
        || die "h2c proxy on :$p not answering"; done
    for p in 8443 8444; do curl -sf --cacert "$RUN/nginx/tls/cert.pem" --http2 --tlsv1.3 "https://127.0.0.1:$p/" \
        >/dev/null || die "HTTPS proxy on :$p not answering"; done
    log "all servers up (backend=$BACKEND)"
}

stop_servers() {
    local n pid
    for n in raftgate raftgate-log raftgate-10r raftgate-10kr raftgate-100kr raftgate-2w raftgate-trace1 raftgate-trace100 \
        otlp-sink slow-mirror haproxy nginx backend; do
        [[ -f $RUN/$n.pid ]] || continue
        pid=$(cat "$RUN/$n.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true          # nginx master: TERM = fast shutdown of workers too
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
            log "stopped $n pid $pid"
        fi
        rm -f "$RUN/$n.pid"
    done
}

# ---------------------------------------------------------------- measurement helpers
cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }
# cpu_busy SNAP1 SNAP2 -> "cpu0busy cpu1busy ... stealmax"  (percent)
cpu_busy() {
    awk 'NR==FNR{for(i=2;i<=NF;i++)a[$1,i]=$i; next}
         {tot=0; for(i=2;i<=9;i++){d[i]=$i-a[$1,i]; tot+=d[i]}
          idle=d[5]+d[6]; if(tot<=0)tot=1
          printf "%.0f ", 100*(tot-idle)/tot; st=100*d[9]/tot; if(st>smax)smax=st}
         END{printf "%.1f\n", smax}' <(echo "$1") <(echo "$2")
}
wait_quiet() {
    local waited=0 s1 s2 b
    while :; do
        s1=$(cpu_snap); sleep 1; s2=$(cpu_snap)
        b=$(cpu_busy "$s1" "$s2")
        if awk -v m="$QUIET_MAX" '{for(i=1;i<NF;i++) if($i>m) exit 1}' <<<"$b"; then return 0; fi
        if (( waited >= QUIET_WAIT )); then
            log "WARNING: machine not idle before run (busy% per cpu: ${b% *}) — results will be noisy"
            NOISY=1; return 0
        fi
        (( waited == 0 )) && log "waiting for idle CPUs (busy% per cpu: ${b% *}) ..."
        sleep 4; waited=$((waited + 5))
    done
}

# pids of the processes listening on a URL's port (so per-request CPU cost can be measured)
url_pids() {
    local hp=${1#*://}; hp=${hp%%/*}
    local port=${hp##*:}; [[ $hp == *:* ]] || port=80
    ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' '
}
proc_ticks() { # pids... -> total utime+stime ticks (all threads)
    local p t=0 v
    for p in "$@"; do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null) || v=0; t=$((t + ${v:-0})); done
    echo $t
}

to_us() { # "123.45us" | "1.2ms" | "2.1s" -> microseconds
    awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v+0}
        else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000}
        else if (v ~ /s$/)  {sub(/s$/,"",v);  print v*1000000}
        else print "NaN" }'
}

# Request headers by target name (the credentials of guarded routes), from auth-setup.py.
declare -A HDR=()

warmup() { # url [header]  (unmeasured; fills connection pools, caches, Go heap)
    local h=(); [[ -n ${2:-} ]] && h=(-H "$2")
    if [[ $H2 == 1 ]]; then
        (pin "$LOAD_CPU" h2load -t1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "$WARMUP" "${h[@]}" "$1") >/dev/null 2>&1 || true
    else
        (pin "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "${h[@]}" "$1") >/dev/null 2>&1 || true
    fi
}

# one measured run -> "rps p50_us p99_us errors"
measure() { # url [header]
    local url=$1 out rps p50 p99 err h=()
    [[ -n ${2:-} ]] && h=(-H "$2")
    if [[ $H2 == 1 ]]; then
        rm -f "$RUN/h2load.log"          # h2load appends to an existing log file
        out=$(pin "$LOAD_CPU" h2load -t1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "$DURATION" \
              --log-file="$RUN/h2load.log" "${h[@]}" "$url" 2>&1) || true
        rps=$(awk '/^finished in/{for(i=1;i<=NF;i++) if($(i+1)=="req/s,"){gsub(",","",$i); print $i}}' <<<"$out")
        err=$(awk '/^requests:/{for(i=1;i<=NF;i++){if($(i+1)=="failed,")f=$i; if($(i+1)=="errored,")e=$i}; print f+e}' <<<"$out")
        read -r p50 p99 < <(cut -f3 "$RUN/h2load.log" | sort -n | awk '{v[NR]=$1} END{
            if(NR==0){print "NaN NaN"; exit} printf "%d %d\n", v[int(NR*0.50)+1], v[int(NR*0.99)+1]}')
    else
        out=$(pin "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${h[@]}" "$url" 2>&1) || true
        rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
        p50=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
        p99=$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")
        err=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(",","");for(i=1;i<=NF;i++) if($i~/^[0-9]+$/) n+=$i} END{print n+0}' <<<"$out")
    fi
    [[ -n $rps ]] || { log "measurement failed for $url:"; log "$out"; rps=0; p50=NaN; p99=NaN; err=-1; }
    echo "$rps $p50 $p99 $err"
}

run_targets() {
    (($#)) || die "no targets; give NAME=URL ..."
    local names=() urls=() t
    for t in "$@"; do [[ $t == *=* ]] || die "bad target '$t' (want NAME=URL)"; names+=("${t%%=*}"); urls+=("${t#*=}"); done
    local n=${#names[@]} i r k pids=() HZ
    HZ=$(getconf CLK_TCK)
    for i in "${!urls[@]}"; do
        pids[$i]=$(url_pids "${urls[$i]}")
        log "${names[$i]}: ${urls[$i]}  server pids: ${pids[$i]:-?}"
    done
    for i in "${!urls[@]}"; do
        local hh=(); [[ -n ${HDR[${names[$i]}]:-} ]] && hh=(-H "${HDR[${names[$i]}]}")
        local h2=(); [[ $H2 == 1 && ${urls[$i]} == http:* ]] && h2=(--http2-prior-knowledge)
        curl -sfk "${h2[@]}" "${hh[@]}" -o /dev/null "${urls[$i]}" \
            || die "${names[$i]} (${urls[$i]}) does not answer 200"
    done
    mkdir -p "$RESULTS" "$RUN"
    local stamp tool csv
    stamp=$(date +%Y%m%d-%H%M%S)
    if [[ $H2 == 1 ]]; then tool="h2load -t1 -c$H2_CONNS -m$H2_STREAMS"; else tool="wrk -t$THREADS -c$CONNS"; fi
    csv=$RESULTS/$stamp-${KIND:-$([[ $H2 == 1 ]] && echo h2 || echo h1)}.csv
    echo "round,name,url,rps,p50_us,p99_us,errors,srv_cpu_us_per_req,$(seq -s, -f 'cpu%g_busy' 0 $((NCPU-1))),steal_max" >"$csv"
    NOISY=0
    log "# $tool ${DURATION}s x $ROUNDS rounds (+${WARMUP}s warm-up each), load cpu=$LOAD_CPU; csv: $csv"
    for ((r = 0; r < ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            i=$(((k + r) % n))              # rotate the order every round
            wait_quiet
            local s1 s2 m b t1 t2 rps cpu_us
            warmup "${urls[$i]}" "${HDR[${names[$i]}]:-}"
            s1=$(cpu_snap); t1=$(proc_ticks ${pids[$i]})
            m=$(measure "${urls[$i]}" "${HDR[${names[$i]}]:-}")
            s2=$(cpu_snap); t2=$(proc_ticks ${pids[$i]})
            b=$(cpu_busy "$s1" "$s2")
            # server CPU time per request (µs) over the measured run
            rps=${m%% *}
            cpu_us=$(awk -v dt=$((t2 - t1)) -v hz="$HZ" -v r="$rps" -v d="$DURATION" \
                'BEGIN{ if (r>0) printf "%.2f", dt/hz*1e6/(r*d); else print "NaN" }')
            log "  round $((r+1)) ${names[$i]}: rps/p50us/p99us/err = $m  srv cpu us/req = $cpu_us  cpu busy% = ${b% *} steal% = ${b##* }"
            echo "$((r+1)),${names[$i]},${urls[$i]},${m// /,},$cpu_us,${b// /,}" >>"$csv"
        done
    done
    summarize "$csv" "$BASE" "${names[@]}" | tee "${csv%.csv}.txt"
    [[ $NOISY == 1 ]] && log "NOTE: at least one run started on a busy machine; see warnings above."
    return 0
}

summarize() { # csv base names...
    local csv=$1 base=$2; shift 2
    python3 - "$csv" "$base" "$@" <<'PY'
import csv, statistics as st, sys
path, base, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = list(csv.DictReader(open(path)))
cpucols = [c for c in rows[0] if c.startswith("cpu")]
def med(xs): return st.median(xs) if xs else float("nan")
def f(x):
    try: return float(x)
    except ValueError: return float("nan")
byround = {}
for r in rows: byround.setdefault(r["round"], {})[r["name"]] = f(r["rps"])
agg = {}
for n in names:
    rs = [r for r in rows if r["name"] == n]
    rps = [f(r["rps"]) for r in rs]
    paired = [v[n] / v[base] for v in byround.values() if n in v and base in v and v[base] > 0]
    agg[n] = dict(rps=med(rps), lo=min(rps), hi=max(rps), paired=med(paired),
                  p50=med([f(r["p50_us"]) for r in rs]), p99=med([f(r["p99_us"]) for r in rs]),
                  err=sum(int(f(r["errors"])) for r in rs), n=len(rs),
                  cus=med([f(r["srv_cpu_us_per_req"]) for r in rs]),
                  cpu=[med([f(r[c]) for r in rs]) for c in cpucols])
b = agg.get(base, {}).get("rps")
print()
hdr = (f"{'target':<10}{'rps med':>9}{'min':>8}{'max':>8}{'spread':>8}{'p50us':>7}{'p99us':>7}"
       f"{'/'+base:>8}{'paired':>8}{'srv us/req':>11}{'err':>5}  busy% " + "/".join(c.replace('_busy','') for c in cpucols))
print(hdr); print("-" * len(hdr))
for n in names:
    a = agg[n]
    spread = 100 * (a["hi"] - a["lo"]) / a["rps"] if a["rps"] else float("nan")
    ratio = f"{a['rps']/b:.2f}x" if b else "-"
    paired = f"{a['paired']:.2f}x" if base in agg else "-"
    print(f"{n:<10}{a['rps']:>9.0f}{a['lo']:>8.0f}{a['hi']:>8.0f}{spread:>7.1f}%{a['p50']:>7.0f}{a['p99']:>7.0f}"
          f"{ratio:>8}{paired:>8}{a['cus']:>11.1f}{a['err']:>5}  " + "/".join(f"{c:.0f}" for c in a["cpu"]))
print(f"""
n={agg[names[0]]['n']} runs per target, interleaved. spread=(max-min)/median. p50/p99 = median of per-run values.
/{base} = ratio of medians; paired = median of per-round ratios (cancels slow host periods).
srv us/req = CPU time (user+sys) of the processes listening on the target port, per request.
busy% = median per-CPU busy during the measured runs: the load-generator CPU should stay well below 100%.""")
PY
}

# The cost of identity: raftgated's open route against the same route behind a JWT (ES256,
# verified-token cache), an API key and basic auth (bcrypt cost 10, cached), CPU per request
# compared within raftgated.
auth_targets() {
    local line
    while IFS= read -r line; do HDR[${line%%=*}]=${line#*=}; done <"$RUN/auth-headers"
    H2=0 KIND=auth BASE=raftgate run_targets raftgate=http://127.0.0.1:8084/ \
        raftgate-jwt=http://127.0.0.1:8084/jwt raftgate-key=http://127.0.0.1:8084/key \
        raftgate-basic=http://127.0.0.1:8084/basic
}

# HTTPS against nginx, the same certificate (ECDSA P-256) and TLS 1.3 on both: keep-alive
# with HTTP/1.1 (wrk) and h2 (h2load, ALPN), and a full handshake per request
# (`Connection: close`: every request opens a new TLS connection; neither client resumes).
tls_targets() {
    H2=0 KIND=https run_targets nginx=https://127.0.0.1:8443/ raftgate=https://127.0.0.1:8444/
    H2=1 KIND=h2tls run_targets nginx=https://127.0.0.1:8443/ raftgate=https://127.0.0.1:8444/
    HDR[nginx]="Connection: close"; HDR[raftgate]="Connection: close"
    H2=0 KIND=handshakes run_targets nginx=https://127.0.0.1:8443/ raftgate=https://127.0.0.1:8444/
    unset 'HDR[nginx]' 'HDR[raftgate]'
}

# Issue #17's further rows, EXTRA_ROUNDS interleaved rounds each (6): the comparisons again
# against nginx and HAProxy doing the same work as raftgated by default (proxy headers, Via,
# a request id); access logs on for raftgated and nginx, both to a file; a new connection
# per request (no keep-alive); 1 MiB responses; and one route among 10 against the same
# among 10,000.
extra_targets() {
    local rounds=${EXTRA_ROUNDS:-6}
    ROUNDS=$rounds H2=0 KIND=h1-equal run_targets nginx=http://127.0.0.1:8091/ \
        haproxy=http://127.0.0.1:8092/ raftgate=http://127.0.0.1:8084/
    ROUNDS=$rounds H2=1 KIND=h2-equal run_targets nginx=http://127.0.0.1:8191/ \
        haproxy=http://127.0.0.1:8192/ raftgate=http://127.0.0.1:8084/
    ROUNDS=$rounds H2=0 KIND=accesslog run_targets nginx=http://127.0.0.1:8093/ raftgate=http://127.0.0.1:8094/
    HDR[nginx]="Connection: close"; HDR[raftgate]="Connection: close"
    ROUNDS=$rounds H2=0 KIND=newconn run_targets nginx=http://127.0.0.1:8081/ raftgate=http://127.0.0.1:8084/
    unset 'HDR[nginx]' 'HDR[raftgate]'
    ROUNDS=$rounds H2=0 KIND=large run_targets nginx=http://127.0.0.1:8081/1m raftgate=http://127.0.0.1:8084/1m
    HDR[routes-10]="Host: h0.example.com"; HDR[routes-10k]="Host: h5.example.com"; HDR[routes-100k]="Host: h5.example.com"
    ROUNDS=$rounds H2=0 KIND=routes BASE=routes-10 run_targets routes-10=http://127.0.0.1:8095/svc5 \
        routes-10k=http://127.0.0.1:8096/svc5 routes-100k=http://127.0.0.1:8097/svc5
    unset 'HDR[routes-10]' 'HDR[routes-10k]' 'HDR[routes-100k]'
    ROUNDS=$rounds H2=0 KIND=workers BASE=raftgate run_targets raftgate=http://127.0.0.1:8084/ \
        raftgate-2w=http://127.0.0.1:8098/
    trace_targets
    traffic_targets
    swaps_under_load
}

# Tracing's cost (issue #18): the same proxy with tracing off (:8084, no endpoint: no
# tracing code runs), on at 1% sampling, and on at 100% (every request two spans).
trace_targets() {
    ROUNDS=${EXTRA_ROUNDS:-6} H2=0 KIND=tracing BASE=raftgate run_targets raftgate=http://127.0.0.1:8084/ \
        raftgate-trace1=http://127.0.0.1:8099/ raftgate-trace100=http://127.0.0.1:8100/
}

# Traffic policies (issue #19): cache hits, raftgated's against nginx's proxy_cache (both
# fill on the first request, then every request is a hit); and the plain route against the
# same route mirrored (100%) to a mirror that answers after 2 s, whose copies beyond
# maxInFlight (100) are dropped: the client must not see the mirror in its latency.
traffic_targets() {
    local rounds=${EXTRA_ROUNDS:-6} admin=http://127.0.0.1:9984
    curl -sf -o /dev/null http://127.0.0.1:8083/cached; curl -sf -o /dev/null http://127.0.0.1:8084/cached
    [[ $(curl -sf -D - -o /dev/null http://127.0.0.1:8083/cached | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}') == HIT ]] \
        || die "nginx's proxy_cache does not hit"
    curl -sf -D - -o /dev/null http://127.0.0.1:8084/cached | grep -qi '^cache-status: raftgate; hit' \
        || die "raftgated's cache does not hit"
    ROUNDS=$rounds H2=0 KIND=cache-hit BASE=nginx-cache run_targets nginx-cache=http://127.0.0.1:8083/cached \
        raftgate-cache=http://127.0.0.1:8084/cached nginx=http://127.0.0.1:8081/
    ROUNDS=$rounds H2=0 KIND=mirror BASE=raftgate run_targets raftgate=http://127.0.0.1:8084/ \
        raftgate-mirror=http://127.0.0.1:8084/mirrored
    local m; m=$(curl -sf $admin/metrics | grep '^raftgate_mirror_requests_total' | sed 's/^raftgate_mirror_requests_total//' | tr '\n' ' ')
    log "mirror copies: $m"
    echo "mirror copies (route, upstream, result): $m" >>"$(ls -t "$RESULTS"/*-mirror.txt | head -1)"
}

# Config swaps under load at 10,000 routes: wrk on one route of the 10,000-route node while
# a file of its config directory alternates between two versions (another route's path
# changes), each picked up by the node's watcher and compiled and swapped in whole. Every
# request must succeed; the swaps are counted from the node's own metric.
swaps_under_load() {
    local dir=$RUN/routes-10000 admin=http://127.0.0.1:9987 secs=${SWAP_SECONDS:-40}
    local before after i out
    before=$(curl -sf $admin/metrics | awk '/^raftgate_config_swaps_total/{print $2}')
    taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${secs}s" -H "Host: h5.example.com" --latency \
        http://127.0.0.1:8096/svc5 >"$RUN/swaps.wrk" 2>&1 &
    local wrk=$!
    for ((i = 0; i < secs / 3; i++)); do
        sleep 3
        printf 'kind: Route\nname: swap\nhostnames: [swap.example.com]\nrules:\n  - matches: [{ path: { value: /v%d } }]\n    backendRefs: [{ upstream: up }]\n' \
            $((i % 2)) >"$dir/swap.yaml"
    done
    wait $wrk
    after=$(curl -sf $admin/metrics | awk '/^raftgate_config_swaps_total/{print $2}')
    rm -f "$dir/swap.yaml"
    out="swaps=$((${after%.*} - ${before%.*})) requests=$(awk '/requests in/{print $1}' "$RUN/swaps.wrk")"
    # wrk prints these lines only when there is something to count.
    out+=" non2xx=$(awk '/Non-2xx/{n=$NF} END{print n+0}' "$RUN/swaps.wrk")"
    out+=" socket_errors=$(awk -F'[ ,]+' '/Socket errors/{for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i} END{print n+0}' "$RUN/swaps.wrk")"
    out+=" p99=$(awk '$1=="99%"{print $2}' "$RUN/swaps.wrk")"
    log "swaps under load at 10,000 routes: $out"
    echo "$out" >"$RESULTS/$(date +%Y%m%d-%H%M%S)-swaps.txt"
}

# ---------------------------------------------------------------- main
cmd=${1:-}; shift || true
case $cmd in
start) trap 'rc=$?; ((rc)) && stop_servers; exit $rc' EXIT; start_servers ;;
stop) stop_servers ;;
run) run_targets "$@" ;;
all)
    trap stop_servers EXIT INT TERM
    start_servers
    H2=0 run_targets direct=http://127.0.0.1:9000/ nginx=http://127.0.0.1:8081/ \
        haproxy=http://127.0.0.1:8082/ raftgate=http://127.0.0.1:8084/
    H2=1 run_targets nginx=http://127.0.0.1:8181/ haproxy=http://127.0.0.1:8182/ raftgate=http://127.0.0.1:8084/
    auth_targets
    tls_targets
    extra_targets
    ;;
extra) # only issue #17's further rows
    trap stop_servers EXIT INT TERM
    start_servers
    extra_targets
    ;;
trace) # only tracing off against on
    trap stop_servers EXIT INT TERM
    start_servers
    trace_targets
    ;;
traffic) # only the cache-hit and mirroring rows
    trap stop_servers EXIT INT TERM
    start_servers
    traffic_targets
    ;;
tls) # only the HTTPS comparison
    trap stop_servers EXIT INT TERM
    start_servers
    tls_targets
    ;;
auth) # only the guarded routes beside the open one
    trap stop_servers EXIT INT TERM
    start_servers
    auth_targets
    ;;
*) awk 'NR>1 && /^#/{sub(/^# ?/,""); print; next} NR>1{exit}' "$0"; exit 2 ;;
esac
