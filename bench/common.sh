# Shared by the bench scripts (sourced, not run): tools, the release build, a scratch dir whose
# processes are stopped on exit, ports, and nginx configs.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# need_tools nginx [wrk]: installs what is missing with apt-get (nginx from nginx-light).
need_tools() {
  local missing=() tool
  for tool in "$@"; do
    case "$tool" in
      nginx) command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light) ;;
      *) command -v "$tool" >/dev/null || missing+=("$tool") ;;
    esac
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# build_release ARGS...: `cargo build --release ARGS`, then TARGET is where cargo put it
# (CARGO_TARGET_DIR, build.target-dir, or target/).
build_release() {
  (cd "$ROOT" && cargo build --release -q "$@")
  TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
}

WORK=$(mktemp -d)
PIDS=()
# Stops what the bench started: SIGTERM, up to 5 s to exit (pingora shuts down gracefully and
# the bare example may not exit on it at all), then SIGKILL.
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# bench_options ARGS...: --threads N --duration SECONDS --connections C --rounds R into THREADS,
# DURATION, CONNECTIONS and ROUNDS (whose defaults the script set before sourcing this).
bench_options() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --threads) THREADS=$2; shift 2 ;;
      --duration) DURATION=$2; shift 2 ;;
      --connections) CONNECTIONS=$2; shift 2 ;;
      --rounds) ROUNDS=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
}

# start_passthrough_gaitkeeper "LISTEN YAML": gaitkeeper ($GK) with no routes in front of the
# upstream on $UP, admin on $GKA, $THREADS threads, access log off; sets GK_PID.
start_passthrough_gaitkeeper() {
  new_secret "$WORK/secret"
  cat > "$WORK/gk.yaml" <<CONF
listen: $1
upstream: { address: "127.0.0.1:$UP" }
admin: { listen: "127.0.0.1:$GKA" }
server: { threads: $THREADS, data_dir: "$WORK/gkdata" }
logging: { access_log: false, format: json, level: warn }
secrets: { key: { file: "$WORK/secret" } }
CONF
  "$GK" run -c "$WORK/gk.yaml" 2>"$WORK/gk.log" & PIDS+=($!); GK_PID=$!
}

# A random key file readable by its owner only (gaitkeeper refuses secret files others can read).
new_secret() { (umask 077 && head -c 32 /dev/urandom | base64 > "$1"); }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# cpu_ticks PID: CPU time (user + system, in clock ticks) of a process with all its threads and
# its child processes (nginx's workers).
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

# nginx_conf NAME "HTTP BLOCK BODY" [WORKERS]: writes $WORK/NAME/nginx.conf (no access log,
# temp files under $WORK/NAME, long keep-alive).
nginx_conf() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes ${3:-1};
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body; proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fcgi; uwsgi_temp_path $WORK/$1/uwsgi; scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 1000000;
  $2
}
CONF
}

# nginx_proxy_conf NAME PORT UPSTREAM_PORT [WORKERS]: the peer — nginx as a reverse proxy on PORT
# in front of 127.0.0.1:UPSTREAM_PORT, with upstream keep-alive and the forwarding headers
# gaitkeeper sets.
nginx_proxy_conf() {
  nginx_conf "$1" "upstream app { server 127.0.0.1:$3; keepalive 256; }
  server { listen 127.0.0.1:$2; location / { proxy_pass http://app; proxy_http_version 1.1;
    proxy_set_header Connection \"\"; proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } }" "${4:-1}"
}

# A legacy app's login route for nginx: the form on GET; 303 to /account with a session
# cookie on POST.
LOGIN_LOCATION='location = /login {
      if ($request_method = POST) { add_header Set-Cookie "sid=1; Path=/; HttpOnly"; return 303 /account; }
      default_type text/html;
      return 200 '"'"'<!doctype html><html><head><title>Sign in</title></head><body><form method="post" action="/login"><input name="username"><input type="password" name="password"><button>Sign in</button></form></body></html>'"'"';
    }'
# wrk_measure URL PID [WRK ARGS...] → "rps p50 p99 cpu_us_per_request status": wrk with
# $CONNECTIONS connections for $DURATION seconds
wrk_measure() {
  # (latencies in ms; CPU of the proxy alone, not of wrk or the upstream); a run wrk could not
  # measure (no percentiles: every connection failed) is printed as "- - - - FAILED" with
  # wrk's output on stderr, and left out of the medians.
  local url=$1 pid=$2 before after
  shift 2
  before=$(cpu_ticks "$pid")
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" > "$WORK/wrk.out" || true
  after=$(cpu_ticks "$pid")
  python3 - "$WORK/wrk.out" "$(( after - before ))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[unit]
try:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    # Anchored: the "+/- Stdev" column can end in "50%" too (e.g. "72.50%").
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
except (AttributeError, ValueError):
    print("- - - - FAILED")
    print(f"wrk output not understood:\n{text}", file=sys.stderr)
    sys.exit(0)
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / max(requests, 1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", text)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {cpu_us:.1f} {'ERRORS' if errors else 'ok'}")
PY
}

