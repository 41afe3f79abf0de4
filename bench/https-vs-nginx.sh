#!/usr/bin/env bash
# HTTPS benchmark: gaitkeeper's TLS listener vs nginx (Debian package) terminating TLS, with
# the same certificate (ECDSA P-256) and the same TLS 1.3 cipher, both in front of the same fast
# upstream on loopback, with the same worker-thread count, driven by wrk in one run. Two loads:
#   keep-alive   requests on persistent HTTPS connections (the TLS record cost)
#   handshakes   `Connection: close`: one new full TLS handshake per request (handshakes/s)
# Prints req/s, latency percentiles and each proxy's own CPU per request, and the ratios.
#
# Usage: bench/https-vs-nginx.sh [--threads N] [--duration SECONDS] [--connections C] [--rounds R]
# Needs: nginx, wrk, openssl (installed with apt-get if missing), a release build.
set -euo pipefail

THREADS=1 DURATION=10 CONNECTIONS=64 ROUNDS=3
source "$(dirname "$0")/common.sh"
bench_options "$@"
need_tools nginx wrk openssl
build_release --bin gaitkeeper
GK="${GAITKEEPER_BIN:-$TARGET/release/gaitkeeper}"

UP=$(free_port) NG=$(free_port) GKP=$(free_port) GKA=$(free_port)
# One certificate and key for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 600 "$WORK/key.pem"

nginx_conf upstream "server { listen 127.0.0.1:$UP; location / { return 200 'hello from the app\n'; } }" 1
# The peer: nginx terminating TLS (no session resumption, as gaitkeeper offers none to wrk),
# proxying with upstream keep-alive.
nginx_conf proxy "upstream app { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$NG ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / { proxy_pass http://app; proxy_http_version 1.1;
    proxy_set_header Connection \"\"; proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } }" "$THREADS"

"$NGINX" -c "$WORK/upstream/nginx.conf" & PIDS+=($!)
"$NGINX" -c "$WORK/proxy/nginx.conf" & PIDS+=($!); NG_PID=$!
start_passthrough_gaitkeeper "[{ address: \"127.0.0.1:$GKP\", tls: { cert_file: \"$WORK/cert.pem\", key_file: \"$WORK/key.pem\" } }]"
wait_port "$UP"; wait_port "$NG"; wait_port "$GKP"

# Sanity: both answer over HTTPS, and negotiate the same protocol and cipher with wrk's
# OpenSSL defaults.
for port in "$NG" "$GKP"; do
  curl -sf --cacert "$WORK/cert.pem" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/" | grep -q "hello from the app"
  echo | openssl s_client -connect "127.0.0.1:$port" -servername localhost 2>/dev/null \
    | awk -v p="$port" '/^ *(Protocol|Cipher) *:/ {printf "%s ", $0} END {print "(port " p ")"}'
done

echo "round load name rps p50_ms p99_ms cpu_us_per_req status"
for load in keep-alive handshakes; do
  extra=(); [[ $load == handshakes ]] && extra=(-H "Connection: close")
  wrk -t1 -c"$CONNECTIONS" -d2s "${extra[@]}" "https://127.0.0.1:$NG/" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d2s "${extra[@]}" "https://127.0.0.1:$GKP/" >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    echo "$r $load nginx $(wrk_measure "https://127.0.0.1:$NG/" "$NG_PID" "${extra[@]}")" | tee -a "$WORK/results"
    echo "$r $load gaitkeeper $(wrk_measure "https://127.0.0.1:$GKP/" "$GK_PID" "${extra[@]}")" | tee -a "$WORK/results"
  done
done
python3 - "$WORK/results" "$THREADS" "$CONNECTIONS" "$DURATION" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if "FAILED" not in l]
def med(load, name, col):
    return statistics.median(float(r[col]) for r in rows if r[1] == load and r[2] == name)
print()
print(f"medians over rounds; threads={sys.argv[2]} connections={sys.argv[3]} duration={sys.argv[4]}s")
print("| load | proxy | req/s | p50 ms | p99 ms | proxy CPU per request |")
print("|---|---|---|---|---|---|")
for load in ("keep-alive", "handshakes"):
    m = {name: [med(load, name, c) for c in (3, 4, 5, 6)] for name in ("nginx", "gaitkeeper")}
    for name in ("nginx", "gaitkeeper"):
        rps, p50, p99, cpu = m[name]
        print(f"| {load} | {name} | {rps:.0f} | {p50:.3f} | {p99:.3f} | {cpu:.1f} us |")
    g, n = m["gaitkeeper"], m["nginx"]
    print(f"| {load} | ratio gaitkeeper/nginx | {g[0]/n[0]:.2f}x | {g[1]/n[1]:.2f}x | {g[2]/n[2]:.2f}x | {g[3]/n[3]:.2f}x |")
PY
