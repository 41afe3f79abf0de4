#!/usr/bin/env bash
# Pass-through benchmark: gaitkeeper vs nginx (Debian package), both fronting the same fast
# upstream (an nginx that answers a fixed 200) on loopback, with the same worker-thread count,
# driven by wrk in one run. Prints req/s and latency percentiles and the ratios.
#
# Usage: bench/proxy-vs-nginx.sh [--threads N] [--duration SECONDS] [--connections C] [--rounds R]
# Needs: nginx, wrk (installed with apt-get if missing), a release build (built if missing).
set -euo pipefail

THREADS=1 DURATION=15 CONNECTIONS=64 ROUNDS=3
source "$(dirname "$0")/common.sh"
bench_options "$@"
need_tools nginx wrk
build_release --bin gaitkeeper --example bare_proxy
GK="${GAITKEEPER_BIN:-$TARGET/release/gaitkeeper}" # another build, for before/after runs
BARE="$TARGET/release/examples/bare_proxy"

UP=$(free_port) NG=$(free_port) GKP=$(free_port) GKA=$(free_port) BP=$(free_port)

# The shared upstream: answers every request with a small fixed body.
nginx_conf upstream "server { listen 127.0.0.1:$UP; location / { return 200 'hello from the app\n'; } }" 1
# The peer: nginx as a reverse proxy with upstream keep-alive.
nginx_proxy_conf proxy "$NG" "$UP" "$THREADS"

"$NGINX" -c "$WORK/upstream/nginx.conf" & PIDS+=($!)
"$NGINX" -c "$WORK/proxy/nginx.conf" & PIDS+=($!); NG_PID=$!
start_passthrough_gaitkeeper "[\"127.0.0.1:$GKP\"]"
# pingora itself, with no gaitkeeper logic: shows which part of the cost is pingora's.
"$BARE" "127.0.0.1:$BP" "127.0.0.1:$UP" "$THREADS" 2>/dev/null & PIDS+=($!); BP_PID=$!
wait_port "$UP"; wait_port "$NG"; wait_port "$GKP"; wait_port "$BP"

# Sanity: both answer with the app's body.
curl -sf "http://127.0.0.1:$NG/" | grep -q "hello from the app"
curl -sf "http://127.0.0.1:$GKP/" | grep -q "hello from the app"

run_wrk() { wrk_measure "http://127.0.0.1:$1/" "$2"; }  # $1 = port, $2 = the proxy's pid

# Warm both up, then alternate rounds so drift hits both alike.
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NG/" >/dev/null
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$GKP/" >/dev/null
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$BP/" >/dev/null
echo "round name rps p50_ms p99_ms cpu_us_per_req status"
for r in $(seq 1 "$ROUNDS"); do
  echo "$r nginx $(run_wrk "$NG" "$NG_PID")" | tee -a "$WORK/results"
  echo "$r gaitkeeper $(run_wrk "$GKP" "$GK_PID")" | tee -a "$WORK/results"
  echo "$r bare-pingora $(run_wrk "$BP" "$BP_PID")" | tee -a "$WORK/results"
done
python3 - "$WORK/results" "$THREADS" "$CONNECTIONS" "$DURATION" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if "FAILED" not in l]
def med(name, col):
    return statistics.median(float(r[col]) for r in rows if r[1] == name)
cols = (("rps", 2), ("p50", 3), ("p99", 4), ("cpu", 5))
n = {k: med("nginx", i) for k, i in cols}
g = {k: med("gaitkeeper", i) for k, i in cols}
b = {k: med("bare-pingora", i) for k, i in cols}
print()
print(f"medians over rounds; threads={sys.argv[2]} connections={sys.argv[3]} duration={sys.argv[4]}s")
print("| proxy | req/s | p50 ms | p99 ms | proxy CPU per request |")
print("|---|---|---|---|---|")
for name, m in (("nginx", n), ("gaitkeeper", g), ("bare pingora (no gaitkeeper logic)", b)):
    print(f"| {name} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['cpu']:.1f} us |")
for name, m in (("nginx", n), ("bare pingora", b)):
    print(f"| ratio gaitkeeper/{name} | {g['rps']/m['rps']:.2f}x | {g['p50']/m['p50']:.2f}x "
          f"| {g['p99']/m['p99']:.2f}x | {g['cpu']/m['cpu']:.2f}x |")
PY
