#!/usr/bin/env bash
# Load and soak: mixed traffic through gaitkeeper for a while, watching for errors and leaks.
#   - wrk (closed loop, 64 connections) on pages, a static asset and the injected login page;
#   - examples/login_load: scored logins of enrolled users (GET page + POST form with
#     telemetry), every 10th typed by a stranger (challenged and held; nobody answers the
#     challenge, so held logins pile up until they expire after 30 s);
# against a fast nginx upstream. Every 5 s it samples gaitkeeper's RSS (heap and file-backed),
# held logins, the model cache and the page-token replay memory; at the end it prints the wrk
# and login summaries and the samples.
#
# Usage: bench/soak.sh [--seconds S] [--threads N]      (default 60 s, 2 threads)
set -euo pipefail

SECONDS_=60 THREADS=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source "$(dirname "$0")/common.sh"
need_tools nginx wrk
build_release --bin gaitkeeper --example login_load
GK="$TARGET/release/gaitkeeper"
LOAD="$TARGET/release/examples/login_load"

UP=$(free_port) PORT=$(free_port) ADMIN=$(free_port)
nginx_conf up "server {
    listen 127.0.0.1:$UP;
    $LOGIN_LOCATION
    location = /static/app.css { default_type text/css; return 200 'body { font-family: sans-serif; }\n'; }
    location / { default_type text/html; return 200 '<!doctype html><html><body><p>Home</p></body></html>'; }
  }"
"$NGINX" -c "$WORK/up/nginx.conf" & PIDS+=($!)
wait_port "$UP"
new_secret "$WORK/secret"
new_secret "$WORK/mfa-request.key"
cat > "$WORK/gk.yaml" <<CONF
listen: ["127.0.0.1:$PORT"]
upstream: { address: "127.0.0.1:$UP" }
admin: { listen: "127.0.0.1:$ADMIN" }
server: { threads: $THREADS, data_dir: "$WORK/data" }
logging: { access_log: false, format: json, level: warn }
secrets: { key: { file: "$WORK/secret" } }
capture: { bind_token_to_ip: false }
routes:
  - name: login
    page: { paths: ["/login"] }
    submit: { path: "/login" }
    success: { status: [303], location_prefix: "/account", set_cookie: sid }
policy: { block_at: 1.0 }
regulation: { max_failures_per_ip: 0 }
# Every user has a second factor (an external provider nobody answers): challenged logins are
# held, and expire after 30 s — held-login memory under load.
mfa:
  challenge_ttl: 30s
  external:
    name: "Soak IdP"
    url: "http://127.0.0.1:9/verify"
    issuer: "soak-idp"
    request_secret: { file: "$WORK/mfa-request.key" }
    assertion: { algorithm: RS256, public_key_file: "$ROOT/tests/fixtures/mfa/rsa_public.pem" }
CONF
"$GK" run -c "$WORK/gk.yaml" >"$WORK/gk.audit" 2>"$WORK/gk.log" & GKPID=$!
PIDS+=($GKPID)
wait_port "$PORT"

cat > "$WORK/mixed.lua" <<'LUA'
local paths = {"/", "/static/app.css", "/login", "/", "/static/app.css"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
LUA
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
(
  while kill -0 "$GKPID" 2>/dev/null; do
    # RssAnon is the heap (what a leak grows); RssFile counts mapped files and libraries.
    mem=$(awk '/^(RssAnon|RssFile):/ { printf "%s_kib=%s ", tolower($1), $2 }' "/proc/$GKPID/status" | tr -d ':')
    echo "$(date +%s) rss_kib=$(ps -o rss= -p "$GKPID" | tr -d ' ') ${mem}held=$(metric gaitkeeper_held_logins) held_bytes=$(metric gaitkeeper_held_login_bytes) cache_bytes=$(metric gaitkeeper_model_cache_bytes) tokens=$(metric gaitkeeper_page_tokens_remembered)"
    sleep 5
  done
) > "$WORK/samples" &
PIDS+=($!)
wrk -t1 -c64 -d"${SECONDS_}s" --latency -s "$WORK/mixed.lua" "http://127.0.0.1:$PORT/" > "$WORK/wrk.txt" &
WRK=$!
"$LOAD" --target "http://127.0.0.1:$PORT" --users 500 --concurrency 16 --seconds "$SECONDS_" --stranger-every 10 > "$WORK/logins.json"
wait "$WRK"
echo "== wrk (pages, asset, login page) =="; grep -E "Requests/sec|Latency|99%|Non-2xx|Socket errors|requests in" "$WORK/wrk.txt" || true
echo "== scored logins =="; cat "$WORK/logins.json"
echo "== samples (every 5 s) =="; cat "$WORK/samples"
# The trend over the second half of the run, when every bounded structure has had time to
# fill: a leak shows as a slope that does not go to zero however long the run.
echo "== RSS over the second half =="
awk -v half="$((SECONDS_ / 2))" '
  NR == 1 { t0 = $1 }
  { split($2, r, "="); t = $1 - t0; v = r[2] / 1024 }
  t >= half { n++; sx += t; sy += v; sxy += t * v; sxx += t * t
              if (n == 1 || v < lo) lo = v; if (v > hi) hi = v }
  END { if (n > 2) printf "from %d s: %d samples, RSS %.0f-%.0f MiB, slope %.4f MiB/s (%.1f MiB per 10 min)\n",
                          half, n, lo, hi, (n * sxy - sx * sy) / (n * sxx - sx * sx),
                          600 * (n * sxy - sx * sy) / (n * sxx - sx * sx) }' "$WORK/samples"
echo "== decisions =="; curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^gaitkeeper_(login_decisions_total|challenges_total|requests_total)' || true
