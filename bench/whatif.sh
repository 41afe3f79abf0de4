#!/usr/bin/env bash
# Policy what-if and the console on a big audit trail: generates RECORDS audit records
# (default 1,000,000) spread over the last 7 days in a fresh SQLite store (and, with
# --postgres URL, in a fresh schema of that PostgreSQL server), then times
# `gaitkeeper policy what-if --since 7d` with tried thresholds: once cold (the run packs the
# settled hours, as a running gaitkeeper does in the background every 10 minutes), then --runs
# times (a fresh process each: config load, store open, the read and the replay — what an
# operator waits for). Then starts `gaitkeeper run` on the same store and times the console's
# 7-day overview, plain and with the what-if form's thresholds, --runs times each (curl's
# time_total: the whole page, server-side read, replay and rendering).
#
# The trail: 900,000 logins of 20,000 users, one in nine challenged (a login.decision and a
# challenge.passed/failed/expired record: 100,000 more records), the others allowed (verified
# or refused by the app), blocked, enrolling or without telemetry; every record has its JSON
# detail (~450 bytes, as the proxy writes them) in audit_events and its row in audit_logins.
# It is written with SQL (sqlite3, psql), not through the proxy: this measures the read.
#
# Usage: bench/whatif.sh [--records N] [--runs R] [--postgres URL]
#   e.g. bench/whatif.sh --postgres postgres://postgres@127.0.0.1:5432/test
# Needs: sqlite3 (and psql for --postgres); a release build (built if missing).
# (GAITKEEPER_BIN=... times another gaitkeeper build.)
set -euo pipefail

RECORDS=1000000 RUNS=5 PG=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --records) RECORDS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --postgres) PG=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ -n "${GAITKEEPER_BIN:-}" ]]; then
  GK=$GAITKEEPER_BIN
else
  build_release --bin gaitkeeper
  GK="$TARGET/release/gaitkeeper"
fi
# Logins: one in nine challenged has two records.
LOGINS=$(( RECORDS * 9 / 10 ))
NOW_MS=$(( $(date +%s) * 1000 ))
SPAN_MS=$(( 7 * 86400 * 1000 - 60000 ))

new_secret "$WORK/secret"
PORT=$(free_port) ADMIN=$(free_port)
# config FILE STORE_YAML: a config whose store is STORE_YAML.
config() {
  cat > "$1" <<CONF
listen: ["127.0.0.1:$PORT"]
admin: { listen: "127.0.0.1:$ADMIN" }
logging: { level: warn }
upstream: { address: "127.0.0.1:3000" }
server: { data_dir: "$WORK/data" }
secrets: { key: { file: "$WORK/secret" } }
audit: { stream: off }
$2
routes:
  - name: login
    page: { paths: ["/login"] }
    submit: { path: "/login" }
CONF
}

# The generated logins, as SQL rows: n, at, user, kind of login. Shared by both backends
# (only the functions differ). Kinds by n % 20: 0,1 challenged (n % 9 == 0 decides instead,
# below), 2 blocked, 3,4 enrolling, 5 without telemetry, the rest scored and allowed.
detail_sql() { # $1: the JSON object function, $2: the concatenation of kind-specific fields
  echo "$1('id', 'r' || n, 'at', at, 'kind', kind, 'incident', incident, 'request_id', 'req-' || n,
    'app', 'default', 'route', 'login', 'user_key', user_hex, 'risk', risk,
    'reasons', $3, 'decision', decision, 'policy', rule, 'mode', 'enforce',
    'finding', finding, 'model_risk', risk, 'outcome', outcome, 'client_ip', '192.0.2.7')"
}

time_runs() { # $1: label, $2: config
  local i start end ms to from
  # A fixed window for the cold run and the check run (--since moves with the clock).
  to=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  from=$(date -u -d "$to - 7 days" +%Y-%m-%dT%H:%M:%SZ)
  echo "== $1: $RECORDS records; what-if --since 7d --allow-below 0.5 --block-at 0.9, $RUNS runs"
  start=$(date +%s%N)
  "$GK" policy what-if --config "$2" --from "$from" --to "$to" --allow-below 0.5 --block-at 0.9 --format json > "$WORK/cold.json"
  end=$(date +%s%N)
  echo "cold run (reads the rows, packs the settled hours): $(( (end - start) / 1000000 )) ms"
  for i in $(seq 1 "$RUNS"); do
    start=$(date +%s%N)
    "$GK" policy what-if --config "$2" --since 7d --allow-below 0.5 --block-at 0.9 --format json > "$WORK/report.json"
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    echo "run $i: ${ms} ms"
  done
  python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"records {r['records']}, logins {r['logins']}, decisions then {r['decisions']['then']}, now {r['decisions']['now']}, users challenged more often {r['users']['challenged_more_often']}")
PY
  "$GK" policy what-if --config "$2" --from "$from" --to "$to" --allow-below 0.5 --block-at 0.9 --format json > "$WORK/check.json"
  cmp -s "$WORK/cold.json" "$WORK/check.json" \
    && echo "the cold run and a packed run of the same window report the same numbers" \
    || { echo "the cold and the packed runs of the same window differ" >&2; diff "$WORK/cold.json" "$WORK/check.json" >&2; exit 1; }
  time_console "$1" "$2"
}

time_console() { # $1: label, $2: config
  local pid i url
  "$GK" run -c "$2" 2>"$WORK/run.log" & pid=$!
  PIDS+=($pid)
  wait_port "$ADMIN"
  for url in "/console/?period=7d" "/console/?period=7d&try_allow_below=0.5&try_block_at=0.9"; do
    echo "== $1: console $url, $RUNS runs"
    curl -s -o "$WORK/page.html" -w 'warm-up: %{http_code} %{time_total} s\n' "http://127.0.0.1:$ADMIN$url"
    for i in $(seq 1 "$RUNS"); do
      curl -s -o "$WORK/page.html" -w "run $i: %{http_code} %{time_total} s\n" "http://127.0.0.1:$ADMIN$url"
    done
    grep -o 'data-count="logins"[^<]*' "$WORK/page.html" | head -1 || true
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# ---- SQLite
config "$WORK/sqlite.yaml" ""
"$GK" policy what-if --config "$WORK/sqlite.yaml" --since 1h --format json > /dev/null  # creates the schema
DB="$WORK/data/gaitkeeper.db"
[[ -f "$DB" ]] || DB=$(ls "$WORK"/data/*.db | head -1)
start=$(date +%s)
sqlite3 "$DB" <<SQL
PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;
CREATE TEMP TABLE gen AS
WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < $LOGINS)
SELECT n, $NOW_MS - $SPAN_MS + (n * $SPAN_MS / $LOGINS) AS at,
       printf('%064x', n % 20000) AS user_hex,
       CAST(printf('%032d', n % 20000) AS BLOB) AS user_blob,
       'GK-' || printf('%010d', n) AS incident,
       CASE WHEN n % 9 = 0 THEN 'challenged' WHEN n % 20 = 2 THEN 'blocked'
            WHEN n % 20 IN (3, 4) THEN 'enrolling' WHEN n % 20 = 5 THEN 'missing'
            ELSE 'scored' END AS shape,
       (abs(random()) % 1000000) / 1000000.0 AS r
FROM seq;
CREATE TEMP TABLE rows AS
SELECT n, at, user_hex, user_blob, incident, kind, outcome, challenge,
       CASE shape WHEN 'scored' THEN r * 0.6 WHEN 'challenged' THEN 0.6 + r * 0.35
                  WHEN 'blocked' THEN 0.95 + r * 0.05 END AS risk,
       CASE shape WHEN 'scored' THEN 'allow' WHEN 'enrolling' THEN 'allow' WHEN 'blocked' THEN 'block'
                  ELSE 'challenge' END AS decision,
       CASE shape WHEN 'scored' THEN 'allow_below' WHEN 'enrolling' THEN 'enrolling'
                  WHEN 'blocked' THEN 'block_at' WHEN 'missing' THEN 'on_missing_telemetry'
                  ELSE 'between_thresholds' END AS rule,
       CASE shape WHEN 'enrolling' THEN 'enrolling' WHEN 'missing' THEN 'missing_telemetry'
                  ELSE 'scored' END AS finding,
       2 * n + part AS id, shape
FROM (
  SELECT gen.*, 0 AS part,
         CASE WHEN shape IN ('challenged', 'missing') THEN 'login.decision'
              WHEN shape = 'blocked' THEN 'login.decision' ELSE 'login.outcome' END AS kind,
         CASE WHEN shape IN ('challenged', 'missing') THEN 'challenged' WHEN shape = 'blocked' THEN 'blocked'
              WHEN n % 10 = 7 THEN 'failed' ELSE 'verified' END AS outcome,
         NULL AS challenge
  FROM gen
  UNION ALL
  SELECT gen.*, 1,
         CASE n % 3 WHEN 0 THEN 'challenge.passed' WHEN 1 THEN 'challenge.failed' ELSE 'challenge.expired' END,
         CASE n % 3 WHEN 0 THEN 'verified' WHEN 1 THEN 'challenge_failed' ELSE 'challenge_expired' END,
         CASE n % 3 WHEN 0 THEN 'passed' WHEN 1 THEN 'failed' ELSE 'expired' END
  FROM gen WHERE shape = 'challenged'
);
INSERT INTO audit_events (id, at, user_key, kind, detail, incident, record_id)
SELECT id, at, user_blob, kind,
       $(detail_sql json_object "" "json_array(json_object('feature', 'dwell_mean', 'z', 1.5), json_object('feature', 'flight_mean', 'z', -0.7), json_object('feature', 'mouse_speed', 'z', 0.3))"),
       incident, 'r' || id
FROM rows;
INSERT INTO audit_logins (event_id, at, kind, incident, user_key, app, route, finding, risk,
                          model_risk, factor, decision, rule, mode, outcome, challenge)
SELECT id, at, kind, incident, user_blob, 'default', 'login', finding, risk, risk,
       CASE WHEN decision = 'challenge' THEN 'yes' END, decision, rule, 'enforce', outcome, challenge
FROM rows;
SELECT 'generated ' || (SELECT COUNT(*) FROM audit_events) || ' audit records, '
       || (SELECT COUNT(*) FROM audit_logins) || ' login rows';
SQL
echo "(generation took $(( $(date +%s) - start )) s; store $(du -h "$DB" | cut -f1))"
time_runs "SQLite" "$WORK/sqlite.yaml"

# ---- PostgreSQL
if [[ -n "$PG" ]]; then
  SCHEMA="gk_bench_$$"
  psql -q "$PG" -c "CREATE SCHEMA $SCHEMA"
  trap 'psql -q "$PG" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true; cleanup' EXIT
  sep='?'; [[ "$PG" == *\?* ]] && sep='&'
  config "$WORK/pg.yaml" "store: { url: \"$PG${sep}options=-c%20search_path%3D$SCHEMA\" }"
  "$GK" policy what-if --config "$WORK/pg.yaml" --since 1h --format json > /dev/null
  start=$(date +%s)
  psql -q "$PG" <<SQL
SET search_path = $SCHEMA;
CREATE TEMP TABLE gen AS
SELECT n, $NOW_MS - $SPAN_MS + (n::bigint * $SPAN_MS / $LOGINS) AS at,
       lpad(to_hex(n % 20000), 64, '0') AS user_hex,
       'GK-' || lpad(n::text, 10, '0') AS incident,
       CASE WHEN n % 9 = 0 THEN 'challenged' WHEN n % 20 = 2 THEN 'blocked'
            WHEN n % 20 IN (3, 4) THEN 'enrolling' WHEN n % 20 = 5 THEN 'missing'
            ELSE 'scored' END AS shape,
       random() AS r
FROM generate_series(0, $LOGINS - 1) AS n;
CREATE TEMP TABLE rows AS
SELECT n, at, user_hex, incident, kind, outcome, challenge,
       CASE shape WHEN 'scored' THEN r * 0.6 WHEN 'challenged' THEN 0.6 + r * 0.35
                  WHEN 'blocked' THEN 0.95 + r * 0.05 END AS risk,
       CASE shape WHEN 'scored' THEN 'allow' WHEN 'enrolling' THEN 'allow' WHEN 'blocked' THEN 'block'
                  ELSE 'challenge' END AS decision,
       CASE shape WHEN 'scored' THEN 'allow_below' WHEN 'enrolling' THEN 'enrolling'
                  WHEN 'blocked' THEN 'block_at' WHEN 'missing' THEN 'on_missing_telemetry'
                  ELSE 'between_thresholds' END AS rule,
       CASE shape WHEN 'enrolling' THEN 'enrolling' WHEN 'missing' THEN 'missing_telemetry'
                  ELSE 'scored' END AS finding,
       2 * n + part AS id, shape
FROM (
  SELECT gen.*, 0 AS part,
         CASE WHEN shape IN ('challenged', 'missing', 'blocked') THEN 'login.decision' ELSE 'login.outcome' END AS kind,
         CASE WHEN shape IN ('challenged', 'missing') THEN 'challenged' WHEN shape = 'blocked' THEN 'blocked'
              WHEN n % 10 = 7 THEN 'failed' ELSE 'verified' END AS outcome,
         NULL::text AS challenge
  FROM gen
  UNION ALL
  SELECT gen.*, 1,
         CASE n % 3 WHEN 0 THEN 'challenge.passed' WHEN 1 THEN 'challenge.failed' ELSE 'challenge.expired' END,
         CASE n % 3 WHEN 0 THEN 'verified' WHEN 1 THEN 'challenge_failed' ELSE 'challenge_expired' END,
         CASE n % 3 WHEN 0 THEN 'passed' WHEN 1 THEN 'failed' ELSE 'expired' END
  FROM gen WHERE shape = 'challenged'
) AS parts;
INSERT INTO audit_events (id, at, user_key, kind, detail, incident, record_id) OVERRIDING SYSTEM VALUE
SELECT id, at, decode(user_hex, 'hex'), kind,
       $(detail_sql json_build_object "" "json_build_array(json_build_object('feature', 'dwell_mean', 'z', 1.5), json_build_object('feature', 'flight_mean', 'z', -0.7), json_build_object('feature', 'mouse_speed', 'z', 0.3))")::text,
       incident, 'r' || id
FROM rows;
INSERT INTO audit_logins (event_id, at, kind, incident, user_key, app, route, finding, risk,
                          model_risk, factor, decision, rule, mode, outcome, challenge)
SELECT id, at, kind, incident, decode(user_hex, 'hex'), 'default', 'login', finding, risk, risk,
       CASE WHEN decision = 'challenge' THEN 'yes' END, decision, rule, 'enforce', outcome, challenge
FROM rows;
ANALYZE audit_logins;
SELECT 'generated ' || (SELECT COUNT(*) FROM audit_events) || ' audit records, '
       || (SELECT COUNT(*) FROM audit_logins) || ' login rows';
SQL
  echo "(generation took $(( $(date +%s) - start )) s)"
  time_runs "PostgreSQL" "$WORK/pg.yaml"
fi
