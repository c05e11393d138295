#!/usr/bin/env bash
# Benchmark: the Corral gateway against a direct connection and against nginx, in front
# of fake Ollama instances (target/release/fake-ollama), in one run.
#
#   A: small non-streaming /api/chat, 64 concurrent clients, 10 s (fake: 1 token, no delay)
#   L: the same request at light load: 1 client, 8 s (the latency added per request when
#      the machine is not saturated)
#   B: streaming /api/chat, 1,000 concurrent streams, 20 s (fake: 64 tokens, 5 ms apart)
#
# Each scenario is measured direct to the fake, through a bare Pingora proxy (the example
# gateway/examples/bare_pingora.rs: one fixed upstream, no filters, the gateway's thread
# count: the floor of Pingora's own request path on this machine), through the gateway, and
# through nginx (worker_processes 2, proxy_buffering off, keepalive upstream pool). Unless SKIP_TLS=1,
# also with TLS and JWT (issue 3): a test CA and a leaf certificate for 127.0.0.1 are made
# with openssl, and an HS256 token (sub, org, exp) is minted with python3's standard library:
#   gw-tls       gateway, HTTPS listener (GATEWAY_TLS_LISTEN, TLS_CERT_FILE, TLS_KEY_FILE)
#   gw-jwt       gateway with JWT_SECRET, plain HTTP listener, Authorization: Bearer <jwt>
#   gw-tls-jwt   gateway with JWT_SECRET, HTTPS listener, Authorization: Bearer <jwt>
# and, unless SKIP_KEYS=1 (needs PostgreSQL at BENCH_DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/postgres, where a database of its own is made and dropped),
# API keys against JWT on one gateway with API_KEY_PEPPER and DATABASE_URL (so both pay the
# same usage ledger), at a warm key cache (issue 11):
#   gw-db-jwt    that gateway, Authorization: Bearer <jwt>
#   gw-key       that gateway, Authorization: Bearer crl_... (made by `backend keys create`)
#   nginx-tls    nginx `listen ... ssl` with the same certificate and key, TLS 1.2/1.3
# for A and L, and gw-tls / nginx-tls for B (SKIP_B_TLS=1 leaves those out). The client
# (target/release/corral-bench) speaks HTTP/1.1 over TLS on one connection per worker made
# before the clock starts, so TLS handshakes are not part of the per-request figures.
#
# Prints a summary table: rps, p50/p99, latency added over direct, server and client CPU
# time per request, then the TLS and JWT costs per request, gateway/nginx rps ratios, and
# the gateway's peak RSS during B.
#
# Environment knobs (defaults in brackets):
#   A_CONC [64] A_DURATION [10] L_DURATION [8] B_CONC [1000] B_DURATION [20] B_TOKENS [64]
#   B_DELAY_MS [5]   GATEWAY_CONFIG [conf/gateway.toml]   TLS_KEY_TYPE [ec (P-256), or rsa]
#   BENCH_GATEWAY_HEADER ["" e.g. "Authorization: Bearer ..."]
#   BARE_THREADS [2]
#   SKIP_BUILD=1  SKIP_GATEWAY=1  SKIP_BARE=1  SKIP_NGINX=1  SKIP_TLS=1  SKIP_B_TLS=1  SKIP_LIGHT=1
#   NGINX [/usr/sbin/nginx]
#   BENCH_POLICIES_DIR [a generated directory whose policy has no rate limits, stream caps or
#   quotas, so that JWT runs measure authentication, not 429s; give policies/ to measure the
#   shipped policy]
#   WAIT_QUIET_S [0]: before each run, wait up to this long for other processes to use at
#   most QUIET_PCT [15] percent of the CPU (on a shared machine). The table's other% column
#   shows how much they used during each run anyway.
# Exits non-zero when a measurement failed or the gateway could not be started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

A_CONC=${A_CONC:-64}
A_DURATION=${A_DURATION:-10}
L_DURATION=${L_DURATION:-8}
B_CONC=${B_CONC:-1000}
B_DURATION=${B_DURATION:-20}
B_TOKENS=${B_TOKENS:-64}
B_DELAY_MS=${B_DELAY_MS:-5}
GATEWAY_CONFIG=${GATEWAY_CONFIG:-conf/gateway.toml}
BENCH_GATEWAY_HEADER=${BENCH_GATEWAY_HEADER:-}
NGINX=${NGINX:-/usr/sbin/nginx}
TLS_KEY_TYPE=${TLS_KEY_TYPE:-ec}
MODEL=llama3:8b
BIN=target/release

# 1,000 client connections plus as many upstream ones: ask for plenty of descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d -t corral-bench.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
PIDS=()
FAILED=0
CLK_TCK=$(getconf CLK_TCK)
TLS_OK=0
TLS_DIR=""

KEYS_DB=""
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  if [[ -n $KEYS_DB ]]; then
    psql -q "${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}" \
      -c "DROP DATABASE IF EXISTS $KEYS_DB" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; FAILED=1; }

# free_port and gateway_header.
. bench/lib.sh

# wait_http URL TIMEOUT_S PID [curl flags]: until URL answers 2xx. Returns 1 when PID
# exited first, 2 on timeout.
wait_http() {
  local url=$1 pid=$3 deadline=$((SECONDS + $2))
  shift 3
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 2
}

# stop_pid PID [SIGNAL]: signal (TERM by default) and reap.
stop_pid() {
  kill "-${2:-TERM}" "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# stop_gateway: SIGINT, which the gateway obeys at once (SIGTERM would wait for its grace
# period); the measurement is over.
stop_gateway() {
  local started=$SECONDS
  stop_pid "$GW_PID" INT
  if ((SECONDS - started > 5)); then log "the gateway took $((SECONDS - started)) s to stop"; fi
}

# start_fake NAME FLAGS...: starts fake-ollama on a free port; sets FAKE_URL and FAKE_PID.
start_fake() {
  local name=$1 out="$WORK/$1.out" pid
  shift
  "$BIN/fake-ollama" --listen 127.0.0.1:0 --models "$MODEL" --loaded "$MODEL" "$@" \
    >"$out" 2>"$WORK/$name.err" &
  pid=$!
  PIDS+=("$pid")
  FAKE_PID=$pid
  for _ in $(seq 1 100); do
    if grep -q '^listening on ' "$out"; then
      FAKE_URL=$(sed -n 's/^listening on //p' "$out")
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  cat "$WORK/$name.err" >&2
  echo "error: fake-ollama ($name) did not start" >&2
  exit 1
}

# start_gateway NAME UPSTREAM_URL [VAR=value...]: sets GW_PID and GW_URL (and GW_TLS_URL
# when TLS=1 is among the arguments: an HTTPS listener with the bench certificate), or
# returns 1 with the reason. Other VAR=value arguments go to the gateway's environment.
start_gateway() {
  local name=$1 upstream=$2 port tls_port="" logfile="$WORK/gateway-$1.log" arg
  shift 2
  local env_args=()
  port=$(free_port)
  for arg in "$@"; do
    if [[ $arg == TLS=1 ]]; then
      tls_port=$(free_port)
      while [[ $tls_port == "$port" ]]; do tls_port=$(free_port); done
      env_args+=("GATEWAY_TLS_LISTEN=127.0.0.1:$tls_port" "TLS_CERT_FILE=$TLS_DIR/cert.pem"
        "TLS_KEY_FILE=$TLS_DIR/key.pem")
    else
      env_args+=("$arg")
    fi
  done
  env GATEWAY_LISTEN="127.0.0.1:$port" OLLAMA_BASE_URL="$upstream" LOG_LEVEL=warn \
    GATEWAY_MAX_INFLIGHT_PER_INSTANCE=2000 POLICIES_DIR="$POLICIES" ${env_args[@]+"${env_args[@]}"} \
    "$BIN/gateway" --config "$GATEWAY_CONFIG" >"$logfile" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  local status=0 what="GET /healthz"
  wait_http "http://127.0.0.1:$port/healthz" 30 "$GW_PID" || status=$?
  if ((status == 0)) && [[ -n $tls_port ]]; then
    what="GET https://127.0.0.1:$tls_port/healthz"
    wait_http "https://127.0.0.1:$tls_port/healthz" 30 "$GW_PID" --cacert "$TLS_DIR/ca.pem" || status=$?
  fi
  if ((status != 0)); then
    local why="did not answer $what with 2xx within 30 s"
    if ((status == 1)); then
      wait "$GW_PID" && why="exited" || why="exited with status $?"
      why="$why before answering $what"
    fi
    # The JWT secret stays out of the message.
    local shown=("${env_args[@]/#JWT_SECRET=*/JWT_SECRET=...}")
    shown=("${shown[@]/#API_KEY_PEPPER=*/API_KEY_PEPPER=...}")
    fail "the gateway ($name) $why (GATEWAY_LISTEN=127.0.0.1:$port OLLAMA_BASE_URL=$upstream $(printf '%s ' "${shown[@]}")--config $GATEWAY_CONFIG); last lines of its output:"
    tail -n 20 "$logfile" >&2 || true
    stop_gateway
    return 1
  fi
  GW_URL="http://127.0.0.1:$port"
  GW_TLS_URL=""
  if [[ -n $tls_port ]]; then GW_TLS_URL="https://127.0.0.1:$tls_port"; fi
}

# start_bare NAME UPSTREAM_URL: the bare Pingora proxy in front of UPSTREAM_URL; sets
# BARE_PID and BARE_URL, or returns 1.
start_bare() {
  local port
  port=$(free_port)
  "$BIN/examples/bare_pingora" "127.0.0.1:$port" "${2#http://}" "${BARE_THREADS:-2}" \
    >"$WORK/bare-$1.log" 2>&1 &
  BARE_PID=$!
  PIDS+=("$BARE_PID")
  if ! wait_http "http://127.0.0.1:$port/api/version" 30 "$BARE_PID"; then
    fail "the bare Pingora proxy ($1) did not answer; last lines of its output:"
    tail -n 20 "$WORK/bare-$1.log" >&2 || true
    stop_pid "$BARE_PID" INT
    return 1
  fi
  BARE_URL="http://127.0.0.1:$port"
}

# start_nginx: one nginx, one server per scenario; sets NGINX_A_URL and NGINX_B_URL, and
# with TLS (TLS_OK=1) NGINX_A_TLS_URL and NGINX_B_TLS_URL: the same servers also listening
# on HTTPS with the gateway's certificate and key. Sets NGINX_PID (the master).
start_nginx() {
  local dir="$WORK/nginx" port_a port_b port_at="" port_bt="" files
  local up_a=${FAKE_A#http://} up_b=${FAKE_B#http://}
  mkdir -p "$dir"
  port_a=$(free_port)
  port_b=$(free_port)
  while [[ $port_b == "$port_a" ]]; do port_b=$(free_port); done
  if ((TLS_OK)); then
    port_at=$(free_port)
    while [[ $port_at == "$port_a" || $port_at == "$port_b" ]]; do port_at=$(free_port); done
    port_bt=$(free_port)
    while [[ $port_bt == "$port_a" || $port_bt == "$port_b" || $port_bt == "$port_at" ]]; do
      port_bt=$(free_port)
    done
  fi
  files=$(ulimit -n)
  {
    if [[ $(id -u) == 0 ]]; then echo "user root;"; fi
    cat <<CONF
worker_processes 2;
worker_rlimit_nofile $files;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((files / 2)); }
http {
  access_log off;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
$(if ((TLS_OK)); then
      printf '  %s\n' "ssl_certificate $TLS_DIR/cert.pem;" "ssl_certificate_key $TLS_DIR/key.pem;" \
        "ssl_protocols TLSv1.2 TLSv1.3;" "ssl_session_cache shared:SSL:10m;"
    fi)
  upstream fake_a { server $up_a; keepalive 1024; keepalive_requests 1000000; }
  upstream fake_b { server $up_b; keepalive 1024; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$port_a backlog=4096;
$(if ((TLS_OK)); then echo "    listen 127.0.0.1:$port_at ssl backlog=4096;"; fi)
    location / {
      proxy_pass http://fake_a;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $up_a;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
  server {
    listen 127.0.0.1:$port_b backlog=4096;
$(if ((TLS_OK)); then echo "    listen 127.0.0.1:$port_bt ssl backlog=4096;"; fi)
    location / {
      proxy_pass http://fake_b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $up_b;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
CONF
  } >"$dir/nginx.conf"
  "$NGINX" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  NGINX_PID=$pid
  if ! wait_http "http://127.0.0.1:$port_a/" 10 "$pid" || ! wait_http "http://127.0.0.1:$port_b/" 10 "$pid"; then
    fail "nginx did not start; its logs:"
    cat "$dir/stdout.log" "$dir/error.log" >&2 || true
    return 1
  fi
  if ((TLS_OK)); then
    if ! wait_http "https://127.0.0.1:$port_at/" 10 "$pid" --cacert "$TLS_DIR/ca.pem" ||
      ! wait_http "https://127.0.0.1:$port_bt/" 10 "$pid" --cacert "$TLS_DIR/ca.pem"; then
      fail "nginx did not answer on HTTPS; its logs:"
      cat "$dir/stdout.log" "$dir/error.log" >&2 || true
      return 1
    fi
    NGINX_A_TLS_URL="https://127.0.0.1:$port_at"
    NGINX_B_TLS_URL="https://127.0.0.1:$port_bt"
  fi
  NGINX_A_URL="http://127.0.0.1:$port_a"
  NGINX_B_URL="http://127.0.0.1:$port_b"
}

# make_tls: a test CA and a leaf for 127.0.0.1 and localhost signed by it, in TLS_DIR
# (ca.pem, cert.pem, key.pem), and an HS256 JWT (sub, org, exp in a day) signed with a
# random JWT_SECRET_VALUE, in JWT_TOKEN.
make_tls() {
  TLS_DIR="$WORK/tls"
  mkdir -p "$TLS_DIR"
  local key_args=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
  if [[ $TLS_KEY_TYPE == rsa ]]; then key_args=(-newkey rsa:2048); fi
  if ! (
    cd "$TLS_DIR" &&
      openssl req -x509 "${key_args[@]}" -nodes -days 2 -subj "/CN=Corral bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem &&
      openssl req -new "${key_args[@]}" -nodes -subj "/CN=localhost" -keyout key.pem -out leaf.csr &&
      printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >leaf.ext &&
      openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out cert.pem &&
      openssl verify -CAfile ca.pem cert.pem
  ) >"$WORK/openssl.log" 2>&1; then
    fail "could not make the test certificates with openssl:"
    cat "$WORK/openssl.log" >&2
    return 1
  fi
  JWT_SECRET_VALUE=$(openssl rand -hex 32)
  if ! JWT_TOKEN=$(python3 -c '
import base64, hashlib, hmac, json, sys, time
def part(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
def claims(obj):
    return part(json.dumps(obj, separators=(",", ":")).encode())
signing_input = claims({"alg": "HS256", "typ": "JWT"}) + "." + claims(
    {"sub": "bench-user", "org": "bench-org", "exp": int(time.time()) + 86400})
mac = hmac.new(sys.argv[1].encode(), signing_input.encode(), hashlib.sha256).digest()
print(signing_input + "." + part(mac))
' "$JWT_SECRET_VALUE"); then
    fail "could not mint the JWT with python3"
    return 1
  fi
}

# check_jwt BASE_URL [curl flags]: over HTTP/1.1 (what corral-bench speaks), the gateway
# refuses a chat without the token (401) and serves it with the token (200); otherwise the
# JWT figures would not measure JWT. On https it also tries HTTP/2 and only warns.
check_jwt() {
  local url="$1/api/chat" body without with h2 err
  shift
  body="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":false}"
  without=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --http1.1 "$@" \
    -H 'Content-Type: application/json' -d "$body" "$url" || true)
  with=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --http1.1 "$@" \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $JWT_TOKEN" -d "$body" "$url" || true)
  if [[ $without != 401 || $with != 200 ]]; then
    fail "JWT check on $url (HTTP/1.1): without the token $without (want 401), with it $with (want 200)"
    return 1
  fi
  log "JWT enforced on $url (HTTP/1.1): 401 without the token, 200 with it"
  if [[ $url == https://* ]]; then
    h2=$(curl -sS -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 --http2 "$@" \
      -H 'Content-Type: application/json' -d "$body" "$url" 2>"$WORK/curl-h2.err" || true)
    err=$(head -c 200 "$WORK/curl-h2.err")
    if [[ $h2 != "401 2" || -n $err ]]; then
      log "warning: over HTTP/2 a chat without the token got \"$h2\" (want \"401 2\")${err:+: $err}"
    fi
  fi
}

# proc_ticks PID: user+system CPU ticks of PID (all its threads) and of its children.
proc_ticks() {
  local pid total=0 stat fields
  for pid in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a fields <<<"${stat##*) }"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# busy_ticks: CPU ticks the whole machine spent busy (user, nice, system, irq, softirq, steal).
busy_ticks() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# our_ticks: CPU ticks of the processes this script measures with: the server (SRV_PID and
# its children) and the fake instances (each counted once).
our_ticks() {
  local total=0 pid
  for pid in $(printf '%s\n' ${SRV_PID:-} "$FAKE_A_PID" "$FAKE_B_PID" | sort -u); do
    total=$((total + $(proc_ticks "$pid")))
  done
  echo "$total"
}

# wait_quiet: with WAIT_QUIET_S > 0, waits (up to that many seconds) until processes other
# than ours use at most QUIET_PCT percent of the machine's CPU, so that other work on a
# shared box (builds, tests) does not land in the measurement.
wait_quiet() {
  local limit=${WAIT_QUIET_S:-0} max=${QUIET_PCT:-15} start=$SECONDS b0 o0 b1 o1 w0 w1 pct cores
  ((limit > 0)) || return 0
  cores=$(nproc)
  while :; do
    o0=$(our_ticks)
    b0=$(busy_ticks)
    w0=$(date +%s%N)
    sleep 1
    b1=$(busy_ticks)
    w1=$(date +%s%N)
    o1=$(our_ticks)
    pct=$((((b1 - b0) - (o1 - o0)) * 100 * 1000000000 / (CLK_TCK * cores * (w1 - w0))))
    if ((pct <= max)); then return 0; fi
    if ((SECONDS - start >= limit)); then
      log "other processes still use $pct% of the CPU after ${limit}s; measuring anyway"
      return 0
    fi
    sleep 1
  done
}

# bench SCENARIO TARGET BASE_URL [corral-bench flags]: one measurement, appended to RESULTS.
# SRV_PID (when set) is the server measured: its CPU time (and its children's) per request
# goes in srv_cpu_us, the load generator's in cli_cpu_us. other_cpu_pct is the share of the
# machine's CPU that processes other than these (and the fakes) used during the run: noise.
bench() {
  local scenario=$1 target=$2 url="$3/api/chat" line t0=0 t1=0 o0 o1 b0 b1 w0 w1 cpu=""
  shift 3
  local flags=(--concurrency "$A_CONC" --duration-s "$A_DURATION")
  if [[ $scenario == B ]]; then
    flags=(--concurrency "$B_CONC" --duration-s "$B_DURATION" --stream)
  elif [[ $scenario == L ]]; then
    flags=(--concurrency 1 --duration-s "$L_DURATION")
  fi
  wait_quiet
  log "scenario $scenario via $target: ${flags[*]} $url"
  if [[ -n ${SRV_PID:-} ]]; then t0=$(proc_ticks "$SRV_PID"); fi
  o0=$(our_ticks)
  b0=$(busy_ticks)
  w0=$(date +%s%N)
  : >"$WORK/time.out"
  if line=$(/usr/bin/time -f '%U %S' -o "$WORK/time.out" \
    "$BIN/corral-bench" --url "$url" --label "$target" --model "$MODEL" "${flags[@]}" "$@"); then
    :
  else
    fail "scenario $scenario via $target: too many errors"
  fi
  w1=$(date +%s%N)
  b1=$(busy_ticks)
  o1=$(our_ticks)
  if [[ -n ${SRV_PID:-} ]]; then t1=$(proc_ticks "$SRV_PID"); fi
  echo "$line"
  if [[ -n $line ]]; then
    cpu=$(awk -v line="$line" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v srv="${SRV_PID:-}" \
      -v ours=$((o1 - o0)) -v busy=$((b1 - b0)) -v wall_ns=$((w1 - w0)) -v cores="$(nproc)" '
      $1 ~ /^[0-9.]+$/ {
        n = split(line, kv, " ")
        for (i = 1; i <= n; i++) { split(kv[i], p, "="); f[p[1]] = p[2] }
        ok = f["requests"] - f["errors"]
        if (ok <= 0) exit
        s = srv == "" ? "-" : sprintf("%.1f", (t1 - t0) / hz * 1e6 / ok)
        client = ($1 + $2) * hz
        other = busy - ours - client
        if (other < 0) other = 0
        printf "srv_cpu_us=%s cli_cpu_us=%.1f other_cpu_pct=%.0f\n", s, ($1 + $2) * 1e6 / ok, other / hz / (wall_ns / 1e9 * cores) * 100
        exit
      }' "$WORK/time.out" 2>/dev/null || true)
    echo "scenario=$scenario $line ${cpu:-srv_cpu_us=- cli_cpu_us=- other_cpu_pct=-}" >>"$RESULTS"
  fi
  sleep 1 # let sockets in TIME_WAIT and CPU caches settle between runs
}

# sample_rss PID OUT: the highest VmRSS (kB) seen every 200 ms, kept in OUT.
sample_rss() {
  local pid=$1 out=$2 max=0 rss
  echo 0 >"$out"
  while [[ -r /proc/$pid/status ]]; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [[ -n $rss ]] && ((rss > max)); then
      max=$rss
      echo "$max" >"$out"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------

if [[ -z ${SKIP_BUILD:-} ]]; then
  log "building release binaries"
  cargo build --release -p corral-tests
  if [[ -z ${SKIP_GATEWAY:-} ]] && ! cargo build --release -p gateway; then
    fail "the gateway does not build; skipping its measurements"
    SKIP_GATEWAY=1
  fi
  if [[ -z ${SKIP_KEYS:-} ]] && ! cargo build --release -p backend; then
    fail "the backend does not build; skipping the API key measurements"
    SKIP_KEYS=1
  fi
  if [[ -z ${SKIP_BARE:-} ]] && ! cargo build --release -p gateway --example bare_pingora; then
    fail "the bare Pingora example does not build; skipping it"
    SKIP_BARE=1
  fi
fi

if [[ -n ${SKIP_TLS:-} ]]; then
  log "SKIP_TLS set: not measuring TLS and JWT"
elif ! command -v openssl >/dev/null; then
  fail "openssl not found: skipping the TLS and JWT measurements"
elif make_tls; then
  TLS_OK=1
  log "TLS: test CA and $TLS_KEY_TYPE leaf for 127.0.0.1 in $TLS_DIR; HS256 token minted"
fi

# The gateway's policy: by default one with every limit off (0 = unlimited), so that a run
# with a token (one org, one user) measures the gateway rather than its rate limits.
if [[ -n ${BENCH_POLICIES_DIR:-} ]]; then
  POLICIES=$BENCH_POLICIES_DIR
else
  POLICIES="$WORK/policies"
  mkdir -p "$POLICIES"
  printf '%s\n' "# corral bench: no limits" "[defaults]" "requests_per_minute = 0" "burst = 0" \
    "user_requests_per_minute = 0" "tokens_per_minute = 0" "max_concurrent_streams = 0" "" \
    "[anonymous]" "requests_per_minute = 0" "burst = 0" >"$POLICIES/bench.toml"
fi
log "gateway policy directory: $POLICIES"

start_fake fake-a --tokens 1 --token-delay-ms 0
FAKE_A=$FAKE_URL
FAKE_A_PID=$FAKE_PID
start_fake fake-b --tokens "$B_TOKENS" --token-delay-ms "$B_DELAY_MS"
FAKE_B=$FAKE_URL
FAKE_B_PID=$FAKE_PID
log "fake instances: A $FAKE_A, B $FAKE_B"

NGINX_OK=0
if [[ -n ${SKIP_NGINX:-} ]]; then
  log "SKIP_NGINX set: not measuring nginx"
elif [[ ! -x $NGINX ]]; then
  log "nginx not found at $NGINX: skipping the nginx measurements"
elif start_nginx; then
  NGINX_OK=1
fi

gateway_header=()
if [[ -n $BENCH_GATEWAY_HEADER ]]; then gateway_header=(--header "$BENCH_GATEWAY_HEADER"); fi
tls_flags=()
jwt_header=()
if ((TLS_OK)); then
  tls_flags=(--ca-file "$TLS_DIR/ca.pem")
  jwt_header=(--header "Authorization: Bearer $JWT_TOKEN")
fi
LIGHT=1
if [[ -n ${SKIP_LIGHT:-} ]]; then LIGHT=0; fi

# setup_keys: a database of the bench's own, migrated, with one API key in KEY_TOKEN, a
# pepper in KEY_PEPPER and the database in KEY_DB_URL; returns 1 (and says why) otherwise.
setup_keys() {
  local admin=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
  KEYS_DB="corral_bench_$$"
  if ! psql -q "$admin" -c "CREATE DATABASE $KEYS_DB" >/dev/null 2>"$WORK/keys.log"; then
    fail "cannot create a database at $admin (see BENCH_DATABASE_URL); skipping API keys:"
    cat "$WORK/keys.log" >&2
    KEYS_DB=""
    return 1
  fi
  KEY_DB_URL="${admin%/*}/$KEYS_DB"
  KEY_PEPPER=$(openssl rand -hex 32)
  if ! KEY_TOKEN=$(DATABASE_URL=$KEY_DB_URL API_KEY_PEPPER=$KEY_PEPPER JWT_SECRET=unused-but-long-enough \
    "$BIN/backend" keys create --org bench --name bench 2>"$WORK/keys.log"); then
    fail "backend keys create failed; skipping API keys:"
    cat "$WORK/keys.log" >&2
    return 1
  fi
}
B_TLS=$TLS_OK
if [[ -n ${SKIP_B_TLS:-} ]]; then B_TLS=0; fi
GATEWAY_OK=0
if [[ -z ${SKIP_GATEWAY:-} ]]; then
  if [[ -x $BIN/gateway ]]; then
    GATEWAY_OK=1
  else
    fail "$BIN/gateway is missing; skipping the gateway"
  fi
fi

BARE_OK=0
if [[ -z ${SKIP_BARE:-} ]]; then
  if [[ -x $BIN/examples/bare_pingora ]]; then
    BARE_OK=1
  else
    fail "$BIN/examples/bare_pingora is missing; skipping the bare Pingora baseline"
  fi
fi

# start_rss_sampler PID / stop_rss_sampler PREFIX PID: a server's peak RSS, kept in
# PREFIX_HWM_KB (VmHWM) and PREFIX_MAX_KB (highest VmRSS sampled).
start_rss_sampler() {
  sample_rss "$1" "$WORK/rss" &
  sampler=$!
  PIDS+=("$sampler")
}
stop_rss_sampler() {
  local hwm
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$2/status" 2>/dev/null || true)
  stop_pid "$sampler"
  printf -v "$1_HWM_KB" '%s' "$hwm"
  printf -v "$1_MAX_KB" '%s' "$(cat "$WORK/rss")"
}
RSS_HWM_KB=""
RSS_MAX_KB=""
RSS_TLS_HWM_KB=""
RSS_TLS_MAX_KB=""
RSS_BARE_HWM_KB=""
RSS_BARE_MAX_KB=""

# A (64 clients) and L (1 client): small non-streaming chats.
SRV_PID=$FAKE_A_PID
bench A direct "$FAKE_A"
if ((LIGHT)); then bench L direct "$FAKE_A"; fi
if ((BARE_OK)) && start_bare A "$FAKE_A"; then
  SRV_PID=$BARE_PID
  bench A pingora "$BARE_URL"
  if ((LIGHT)); then bench L pingora "$BARE_URL"; fi
  stop_pid "$BARE_PID" INT
fi
if ((GATEWAY_OK)); then
  if start_gateway A "$FAKE_A"; then
    SRV_PID=$GW_PID
    bench A gateway "$GW_URL" ${gateway_header[@]+"${gateway_header[@]}"}
    if ((LIGHT)); then bench L gateway "$GW_URL" ${gateway_header[@]+"${gateway_header[@]}"}; fi
    stop_gateway
  fi
  if ((TLS_OK)) && start_gateway A-tls "$FAKE_A" TLS=1; then
    SRV_PID=$GW_PID
    bench A gw-tls "$GW_TLS_URL" "${tls_flags[@]}" ${gateway_header[@]+"${gateway_header[@]}"}
    if ((LIGHT)); then
      bench L gw-tls "$GW_TLS_URL" "${tls_flags[@]}" ${gateway_header[@]+"${gateway_header[@]}"}
    fi
    stop_gateway
  fi
  if ((TLS_OK)) && start_gateway A-tls-jwt "$FAKE_A" TLS=1 JWT_SECRET="$JWT_SECRET_VALUE"; then
    SRV_PID=$GW_PID
    if check_jwt "$GW_URL" && check_jwt "$GW_TLS_URL" --cacert "$TLS_DIR/ca.pem"; then
      bench A gw-jwt "$GW_URL" "${jwt_header[@]}"
      bench A gw-tls-jwt "$GW_TLS_URL" "${tls_flags[@]}" "${jwt_header[@]}"
      if ((LIGHT)); then
        bench L gw-jwt "$GW_URL" "${jwt_header[@]}"
        bench L gw-tls-jwt "$GW_TLS_URL" "${tls_flags[@]}" "${jwt_header[@]}"
      fi
    fi
    stop_gateway
  fi
fi
if ((GATEWAY_OK && TLS_OK)) && [[ -z ${SKIP_KEYS:-} ]] && setup_keys &&
  start_gateway A-keys "$FAKE_A" JWT_SECRET="$JWT_SECRET_VALUE" API_KEY_PEPPER="$KEY_PEPPER" \
    DATABASE_URL="$KEY_DB_URL"; then
  SRV_PID=$GW_PID
  key_header=(--header "Authorization: Bearer $KEY_TOKEN")
  bench A gw-db-jwt "$GW_URL" "${jwt_header[@]}"
  bench A gw-key "$GW_URL" "${key_header[@]}"
  if ((LIGHT)); then
    bench L gw-db-jwt "$GW_URL" "${jwt_header[@]}"
    bench L gw-key "$GW_URL" "${key_header[@]}"
  fi
  stop_gateway
fi
if ((NGINX_OK)); then
  SRV_PID=$NGINX_PID
  bench A nginx "$NGINX_A_URL"
  if ((TLS_OK)); then bench A nginx-tls "$NGINX_A_TLS_URL" "${tls_flags[@]}"; fi
  if ((LIGHT)); then
    bench L nginx "$NGINX_A_URL"
    if ((TLS_OK)); then bench L nginx-tls "$NGINX_A_TLS_URL" "${tls_flags[@]}"; fi
  fi
fi

# B: 1,000 concurrent streams.
SRV_PID=$FAKE_B_PID
bench B direct "$FAKE_B"
if ((BARE_OK)) && start_bare B "$FAKE_B"; then
  SRV_PID=$BARE_PID
  start_rss_sampler "$BARE_PID"
  bench B pingora "$BARE_URL"
  stop_rss_sampler RSS_BARE "$BARE_PID"
  stop_pid "$BARE_PID" INT
fi
if ((GATEWAY_OK)); then
  if start_gateway B "$FAKE_B"; then
    SRV_PID=$GW_PID
    start_rss_sampler "$GW_PID"
    bench B gateway "$GW_URL" ${gateway_header[@]+"${gateway_header[@]}"}
    stop_rss_sampler RSS "$GW_PID"
    stop_gateway
  fi
  if ((B_TLS)) && start_gateway B-tls "$FAKE_B" TLS=1; then
    SRV_PID=$GW_PID
    start_rss_sampler "$GW_PID"
    bench B gw-tls "$GW_TLS_URL" "${tls_flags[@]}" ${gateway_header[@]+"${gateway_header[@]}"}
    stop_rss_sampler RSS_TLS "$GW_PID"
    stop_gateway
  fi
fi
if ((NGINX_OK)); then
  SRV_PID=$NGINX_PID
  bench B nginx "$NGINX_B_URL"
  if ((B_TLS)); then bench B nginx-tls "$NGINX_B_TLS_URL" "${tls_flags[@]}"; fi
fi

# ---------------------------------------------------------------------------------------

echo
echo "Summary ($(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1);" \
  "A: $A_CONC clients, non-streaming, ${A_DURATION}s; L: 1 client, ${L_DURATION}s;" \
  "B: $B_CONC streams of $B_TOKENS tokens ${B_DELAY_MS} ms apart, ${B_DURATION}s)"
if ((TLS_OK)); then
  echo "TLS: $TLS_KEY_TYPE leaf certificate from a test CA, HTTP/1.1, one connection per client;" \
    "negotiated: $(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^tls=/ && $i != "tls=off") { sub(/^tls=/, "", $i); seen[$i] = 1 } }
      END { for (k in seen) printf "%s ", k }' "$RESULTS")"
fi
echo "(latencies in ms, added latency over direct in µs; srv_cpu / cli_cpu: CPU time per request" \
  "of the server process(es) / of the load generator, µs; other%: share of the machine's CPU" \
  "used by unrelated processes during the run, i.e. noise)"
awk -v aconc="$A_CONC" '
  {
    delete f
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    key = f["scenario"] SUBSEP f["label"]
    order[++n] = key
    for (k in f) v[key, k] = f[k]
  }
  # has: the run exists and at most 1% of its requests failed (a run of refusals measures
  # nothing the derived lines mean).
  function has(sc, label,   k) {
    k = sc SUBSEP label
    return (k, "rps") in v && v[k, "errors"] * 100 <= v[k, "requests"]
  }
  function val(sc, label, metric) { return v[sc SUBSEP label, metric] }
  function added(key, metric,   d) {
    d = v[key, "scenario"] SUBSEP "direct"
    if (v[key, "label"] == "direct" || !((d, metric) in v)) return "-"
    return sprintf("%+d", v[key, metric] - v[d, metric])
  }
  function msec(key, metric) { return sprintf("%.3f", v[key, metric] / 1000) }
  function delta(sc, a, b, metric) { return sprintf("%+d", val(sc, a, metric) - val(sc, b, metric)) }
  function cpu_delta(sc, a, b) {
    if (val(sc, a, "srv_cpu_us") == "-" || val(sc, b, "srv_cpu_us") == "-") return "-"
    return sprintf("%+.1f", val(sc, a, "srv_cpu_us") - val(sc, b, "srv_cpu_us"))
  }
  function ratio(sc, a, b) {
    return val(sc, b, "rps") > 0 ? sprintf("%.2f", val(sc, a, "rps") / val(sc, b, "rps")) : "-"
  }
  # cost(WHAT, A, B): what A adds over B, per request, in each scenario both ran.
  function cost(what, a, b) {
    if (has("A", a) && has("A", b))
      printf "%s, A (%s clients): %s µs p50, %s µs p99 / rps ratio %s / %s µs server CPU\n", what, aconc, delta("A", a, b, "p50_us"), delta("A", a, b, "p99_us"), ratio("A", a, b), cpu_delta("A", a, b)
    if (has("L", a) && has("L", b))
      printf "%s, L (1 client): %s µs p50, %s µs p99 / rps ratio %s / %s µs server CPU\n", what, delta("L", a, b, "p50_us"), delta("L", a, b, "p99_us"), ratio("L", a, b), cpu_delta("L", a, b)
    if (has("B", a) && has("B", b))
      printf "%s, B (streams): %s µs p50, %s µs p99, %s µs ttfb p99 / rps ratio %s / %s µs server CPU per stream\n", what, delta("B", a, b, "p50_us"), delta("B", a, b, "p99_us"), delta("B", a, b, "ttfb_p99_us"), ratio("B", a, b), cpu_delta("B", a, b)
  }
  function over_direct(label) {
    return has("L", label) ? sprintf("%s %s / %s µs", label, delta("L", label, "direct", "p50_us"), delta("L", label, "direct", "p99_us")) : ""
  }
  END {
    fmt = "%-3s %-10s %9s %8s %8s %8s %8s %8s %8s %9s %8s %8s %6s %6s\n"
    printf fmt, "sc", "via", "rps", "p50_ms", "p99_ms", "+p50_us", "+p99_us", "ttfb_p50", "ttfb_p99", "+ttfb_p99", "srv_cpu", "cli_cpu", "other%", "errors"
    split("A L B", scs, " ")
    for (s = 1; s <= 3; s++)
      for (i = 1; i <= n; i++) {
        k = order[i]
        if (v[k, "scenario"] != scs[s]) continue
        printf fmt, v[k, "scenario"], v[k, "label"], v[k, "rps"], msec(k, "p50_us"), msec(k, "p99_us"), added(k, "p50_us"), added(k, "p99_us"), msec(k, "ttfb_p50_us"), msec(k, "ttfb_p99_us"), added(k, "ttfb_p99_us"), v[k, "srv_cpu_us"], v[k, "cli_cpu_us"], v[k, "other_cpu_pct"], v[k, "errors"]
      }
    print ""
    cost("TLS cost per request (gateway)", "gw-tls", "gateway")
    cost("TLS cost per request (nginx)", "nginx-tls", "nginx")
    cost("JWT cost per request (gateway, over TLS)", "gw-tls-jwt", "gw-tls")
    cost("JWT cost per request (gateway, plain HTTP)", "gw-jwt", "gateway")
    cost("TLS+JWT cost per request (gateway)", "gw-tls-jwt", "gateway")
    cost("API key against JWT per request (one gateway, warm key cache)", "gw-key", "gw-db-jwt")
    if (has("L", "direct")) {
      line = ""
      split("pingora gateway gw-tls gw-tls-jwt nginx nginx-tls", labels, " ")
      for (j = 1; j <= 6; j++) {
        part = over_direct(labels[j])
        if (part != "") line = line (line == "" ? "" : "; ") part
      }
      if (line != "") printf "light load (1 client), added over direct p50 / p99: %s\n", line
    }
    for (s = 1; s <= 3; s++) {
      sc = scs[s]
      line = ""
      if (has(sc, "gateway") && has(sc, "nginx"))
        line = line sprintf(" plain %s", ratio(sc, "gateway", "nginx"))
      if (has(sc, "gw-tls") && has(sc, "nginx-tls"))
        line = line sprintf("%s TLS %s", line == "" ? "" : ",", ratio(sc, "gw-tls", "nginx-tls"))
      if (has(sc, "gw-tls-jwt") && has(sc, "nginx-tls"))
        line = line sprintf(", gateway TLS+JWT / nginx TLS %s", ratio(sc, "gw-tls-jwt", "nginx-tls"))
      if (line != "") printf "gateway/nginx rps ratio, scenario %s:%s\n", sc, line
    }
    # Where the gap to nginx lies: in the Pingora request path, or in what the gateway adds.
    for (s = 1; s <= 3; s++) {
      sc = scs[s]
      if (has(sc, "pingora") && has(sc, "gateway"))
        printf "scenario %s: gateway/bare Pingora rps %s (%s µs server CPU per request)", sc, ratio(sc, "gateway", "pingora"), cpu_delta(sc, "gateway", "pingora")
      if (has(sc, "pingora") && has(sc, "nginx"))
        printf "; bare Pingora/nginx rps %s (%s µs)", ratio(sc, "pingora", "nginx"), cpu_delta(sc, "pingora", "nginx")
      if (has(sc, "pingora") && (has(sc, "gateway") || has(sc, "nginx"))) printf "\n"
    }
  }
' "$RESULTS"
# print_rss WHAT HWM_KB MAX_KB
print_rss() {
  if [[ -n $2 || -n $3 ]]; then
    awk -v what="$1" -v hwm="${2:-0}" -v max="${3:-0}" 'BEGIN {
      printf "peak RSS during B, %s: %d B = %.1f MiB (VmHWM); highest VmRSS sampled every 200 ms: %d B = %.1f MiB\n", what, hwm * 1024, hwm / 1024, max * 1024, max / 1024
    }'
  fi
}
print_rss "bare Pingora" "$RSS_BARE_HWM_KB" "$RSS_BARE_MAX_KB"
print_rss "gateway, plain" "$RSS_HWM_KB" "$RSS_MAX_KB"
print_rss "gateway, TLS" "$RSS_TLS_HWM_KB" "$RSS_TLS_MAX_KB"
exit "$FAILED"
