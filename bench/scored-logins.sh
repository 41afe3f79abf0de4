#!/usr/bin/env bash
# Scored-login benchmark: the same login traffic (GET the login page, POST the form with a
# telemetry payload) through three proxies in front of the same fast upstream (an nginx that
# serves a login form and answers a POST with 303 + a session cookie):
#   plain  — gaitkeeper with no routes: the login passes straight through;
#   scored — gaitkeeper with the route: token check, validation, features, the user's model
#            (enrolled first), policy, and settling (record + learn + audit) after the response.
#   nginx  — the peer: nginx (Debian) as the reverse proxy in front of the same upstream, with
#            as many workers as gaitkeeper has threads: what this machine gives the same
#            traffic through a proxy that does nothing else.
# Only the POST is timed (examples/login_load.rs). The three runs alternate for
# --rounds rounds (fresh processes each time, so drift and noise hit all alike); prints every
# run, and the medians of the extra latency over the rounds.
# With --shared-state URL (a PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:5432/postgres)
# each round adds two more runs of the scored config, both with their store in a fresh
# PostgreSQL database made on that server: `pg-local` (server.shared_state: local, the page
# tokens, regulation and held logins in memory) and `pg-shared` (shared_state: store, what
# several instances need): the difference between them is the cost of the shared state alone.
# Then, with the scored run's enrolled users still in place, wrk drives the prototype's API
# (`POST /__gk/analyze` on the admin listener: scoring without the proxy, what the original
# Flask prototype's /analyze figure measures) for the same number of seconds.
#
# Usage: bench/scored-logins.sh [--threads N] [--seconds S] [--concurrency C] [--users U]
#                               [--rate R] [--rounds N] [--shared-state PG_URL]
# Without --rate the load is closed-loop (as fast as gaitkeeper answers: throughput at
# saturation); with --rate R both runs get R logins per second (latency at a given load).
# (SCORED_EXTRA_YAML=... adds YAML to the scored run's config, for experiments;
# GAITKEEPER_BIN=... runs another gaitkeeper build, for before/after comparisons.)
# Needs: nginx (installed with apt-get if missing), a release build (built if missing).
set -euo pipefail

THREADS=2 SECONDS_=10 CONCURRENCY=32 USERS=200 RATE=0 ROUNDS=1 SHARED_PG=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --shared-state) SHARED_PG=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

source "$(dirname "$0")/common.sh"
need_tools nginx wrk
build_release --bin gaitkeeper --example login_load
GK="${GAITKEEPER_BIN:-$TARGET/release/gaitkeeper}" # another build, for before/after runs
LOAD="$TARGET/release/examples/login_load"

UP=$(free_port)
nginx_conf up "server {
    listen 127.0.0.1:$UP;
    $LOGIN_LOCATION
    location / { return 200 'ok\n'; }
  }"
"$NGINX" -c "$WORK/up/nginx.conf" & PIDS+=($!)
wait_port "$UP"
new_secret "$WORK/secret"

analyze() { # $1 = admin port: wrk on /__gk/analyze, each request for another enrolled user
  cat > "$WORK/analyze.lua" <<LUA
local n, users = 0, $USERS
request = function()
  n = n + 1
  local body = string.format('{"user":"user%05d","mouse_speed":%d,"click_interval":%d,"key_dwell_time":%d,"key_flight_time":%d}',
    n % users, 600 + n % 400, 300 + n % 200, 80 + n % 40, 120 + n % 60)
  return wrk.format("POST", "/__gk/analyze", {["Content-Type"] = "application/json"}, body)
end
LUA
  echo "analyze, one answer: $(curl -s -H 'Content-Type: application/json' -d '{"user":"user00007","mouse_speed":650,"click_interval":320,"key_dwell_time":90,"key_flight_time":130}' "http://127.0.0.1:$1/__gk/analyze")"
  wrk -t1 -c"$CONCURRENCY" -d"${SECONDS_}s" --latency -s "$WORK/analyze.lua" "http://127.0.0.1:$1" > "$WORK/analyze.txt"
  echo "analyze (wrk -t1 -c$CONCURRENCY, POST /__gk/analyze, $USERS enrolled users):"
  grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors' "$WORK/analyze.txt" || true
}

drive() { # $1 = name, $2 = proxy port, $3 = proxy pid, $4 = round: runs the load, records the run
  "$LOAD" --target "http://127.0.0.1:$2" --users "$USERS" --concurrency "$CONCURRENCY" --seconds "$SECONDS_" --rate "$RATE" > "$WORK/$1.json" 2> "$WORK/$1.load" & local load=$!
  # The proxy's CPU time over the timed phase only (enrolment excluded).
  local before=0 ticks posts cpu_us pg_before pg_us=0
  while kill -0 "$load" 2>/dev/null && ! grep -q 'timed phase' "$WORK/$1.load"; do sleep 0.05; done
  before=$(cpu_ticks "$3")
  pg_before=$(postgres_ticks)
  wait "$load"
  ticks=$(( $(cpu_ticks "$3") - before ))
  posts=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["posts"])' "$WORK/$1.json")
  cpu_us=$(( ticks * 1000000 / $(getconf CLK_TCK) / posts ))
  echo "round $4 $1: $(cat "$WORK/$1.json")"
  echo "round $4 $1: proxy CPU $(( ticks * 1000 / $(getconf CLK_TCK) )) ms in the timed phase, $cpu_us us per POST"
  if [[ $1 == pg-* ]]; then
    pg_us=$(( ($(postgres_ticks) - pg_before) * 1000000 / $(getconf CLK_TCK) / posts ))
    echo "round $4 $1: PostgreSQL CPU $pg_us us per POST"
  fi
  python3 - "$WORK/$1.json" "$1" "$cpu_us" "$pg_us" >> "$WORK/rounds.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d["name"] = sys.argv[2]; d["cpu_us_per_post"] = int(sys.argv[3])
d["pg_cpu_us_per_post"] = int(sys.argv[4])
print(json.dumps(d))
PY
}

run() { # $1 = name, $2 = extra YAML, $3 = round, $4 = extra server keys
  local port admin
  port=$(free_port) admin=$(free_port)
  rm -rf "$WORK/$1-data"
  cat > "$WORK/$1.yaml" <<CONF
listen: ["127.0.0.1:$port"]
upstream: { address: "127.0.0.1:$UP" }
admin: { listen: "127.0.0.1:$admin" }
server: { threads: $THREADS, data_dir: "$WORK/$1-data"${4:-} }
logging: { access_log: false, format: json, level: warn }
secrets: { key: { file: "$WORK/secret" } }
capture: { bind_token_to_ip: false }
$2
CONF
  "$GK" run -c "$WORK/$1.yaml" >"$WORK/$1.audit" 2>"$WORK/$1.log" & local pid=$!
  PIDS+=($pid)
  wait_port "$port"
  drive "$1" "$port" "$pid" "$3"
  if [[ $1 == scored && $3 == "$ROUNDS" ]]; then analyze "$admin"; fi
  curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^gaitkeeper_(login_decisions_total|scoring_seconds_(sum|count)|audit_records_total|settle_dropped_total|learn_logins_total|learn_refits_total)' > "$WORK/$1.metrics" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_nginx() { # $1 = round: nginx as the proxy (the same peer as in bench/proxy-vs-nginx.sh)
  local port
  port=$(free_port)
  nginx_proxy_conf "nginx-$1" "$port" "$UP" "$THREADS"
  "$NGINX" -c "$WORK/nginx-$1/nginx.conf" & local pid=$!
  PIDS+=($pid)
  wait_port "$port"
  drive nginx "$port" "$pid" "$1"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

SCORED='routes:
  - name: login
    page: { paths: ["/login"] }
    submit: { path: "/login" }
    success: { status: [303], location_prefix: "/account", set_cookie: sid }
policy: { allow_below: 0.9, block_at: 1.0, on_no_factor: allow }
regulation: { max_failures_per_ip: 0 }
'"${SCORED_EXTRA_YAML:-}"

postgres_ticks() { # CPU ticks of every PostgreSQL server process (its backends come and go)
  local total=0 p
  for p in $(pgrep -x postgres || true); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

fresh_pg() { # a new empty database on the --shared-state server; prints its URL
  local db=gk_bench_$$
  psql -q "$SHARED_PG" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >&2
  echo "${SHARED_PG%/*}/$db"
}

for r in $(seq 1 "$ROUNDS"); do
  run_nginx "$r"
  run plain "" "$r"
  run scored "$SCORED" "$r"
  if [[ -n $SHARED_PG ]]; then
    run pg-local "$SCORED
store: { url: \"$(fresh_pg)\" }" "$r" ", shared_state: local"
    run pg-shared "$SCORED
store: { url: \"$(fresh_pg)\" }" "$r" ", shared_state: store"
  fi
done

echo "last scored run's decisions and scoring time:"; cat "$WORK/scored.metrics"
python3 - "$WORK/rounds.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
nginx = [r for r in runs if r["name"] == "nginx"]
plain = [r for r in runs if r["name"] == "plain"]
scored = [r for r in runs if r["name"] == "scored"]
med = lambda rows, key: statistics.median(r[key] for r in rows)
extra = lambda key: [s[key] - p[key] for p, s in zip(plain, scored)]
print(f"medians over {len(scored)} round(s):")
for name, rows in (("nginx", nginx), ("plain", plain), ("scored", scored)):
    print(f"  {name}: p50 {med(rows, 'p50_us'):.0f} us, p90 {med(rows, 'p90_us'):.0f} us, p99 {med(rows, 'p99_us'):.0f} us, "
          f"{med(rows, 'posts_per_second'):.0f} POST/s, proxy CPU {med(rows, 'cpu_us_per_post'):.0f} us per POST")
print(f"extra latency of a scored login (median of the rounds' differences): "
      f"p50 {statistics.median(extra('p50_us')):.0f} us, p99 {statistics.median(extra('p99_us')):.0f} us "
      f"(per round p99: {', '.join(str(x) for x in extra('p99_us'))})")
ratio = med(scored, 'posts_per_second') / med(plain, 'posts_per_second')
print(f"scored logins per second: {med(scored, 'posts_per_second'):.0f} (plain pass-through: {med(plain, 'posts_per_second'):.0f}, ratio {ratio:.2f}; "
      f"nginx passing the same traffic: {med(nginx, 'posts_per_second'):.0f}, ratio {med(scored, 'posts_per_second') / med(nginx, 'posts_per_second'):.2f})")
print(f"proxy CPU per POST (the login page GET + the POST, and for scored all settling): scored "
      f"{med(scored, 'cpu_us_per_post'):.0f} us, plain {med(plain, 'cpu_us_per_post'):.0f} us, nginx {med(nginx, 'cpu_us_per_post'):.0f} us")
local = [r for r in runs if r["name"] == "pg-local"]
shared = [r for r in runs if r["name"] == "pg-shared"]
if local and shared:
    for name, rows in (("pg-local", local), ("pg-shared", shared)):
        print(f"  {name}: p50 {med(rows, 'p50_us'):.0f} us, p90 {med(rows, 'p90_us'):.0f} us, p99 {med(rows, 'p99_us'):.0f} us, "
              f"{med(rows, 'posts_per_second'):.0f} POST/s, proxy CPU {med(rows, 'cpu_us_per_post'):.0f} us per POST")
    diff = lambda key: [s[key] - l[key] for l, s in zip(local, shared)]
    ratio = med(shared, 'posts_per_second') / med(local, 'posts_per_second')
    print(f"shared state in PostgreSQL vs in memory (both stores in PostgreSQL): throughput ratio {ratio:.2f} "
          f"(cost {100 * (1 - ratio):.0f} %), extra p50 {statistics.median(diff('p50_us')):.0f} us, "
          f"extra p99 {statistics.median(diff('p99_us')):.0f} us (per round p99: {', '.join(str(x) for x in diff('p99_us'))}), "
          f"proxy CPU per POST {med(shared, 'cpu_us_per_post'):.0f} vs {med(local, 'cpu_us_per_post'):.0f} us, "
          f"PostgreSQL CPU per POST {med(shared, 'pg_cpu_us_per_post'):.0f} vs {med(local, 'pg_cpu_us_per_post'):.0f} us")
PY
if [[ -n $SHARED_PG ]]; then psql -q "$SHARED_PG" -c "DROP DATABASE IF EXISTS gk_bench_$$ WITH (FORCE)" >&2 || true; fi
