#!/usr/bin/env bash
# Benchmark: the Corral gateway against a direct connection and against nginx, in front
# of fake Ollama instances (target/release/fake-ollama), in one run.
#
#   A: small non-streaming /api/chat, 64 concurrent clients, 10 s (fake: 1 token, no delay)
#   B: streaming /api/chat, 1,000 concurrent streams, 20 s (fake: 64 tokens, 5 ms apart)
#
# Each scenario is measured direct to the fake, through the gateway, and through nginx
# (worker_processes 2, proxy_buffering off, keepalive upstream pool). Prints a summary
# table: rps, p50/p99, latency added over direct, gateway/nginx rps ratio, and the
# gateway's peak RSS during B.
#
# Environment knobs (defaults in brackets):
#   A_CONC [64] A_DURATION [10] B_CONC [1000] B_DURATION [20] B_TOKENS [64] B_DELAY_MS [5]
#   GATEWAY_CONFIG [conf/gateway.toml]   BENCH_GATEWAY_HEADER ["" e.g. "Authorization: Bearer ..."]
#   SKIP_BUILD=1  SKIP_GATEWAY=1  SKIP_NGINX=1  NGINX [/usr/sbin/nginx]
# Exits non-zero when a measurement failed or the gateway could not be started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

A_CONC=${A_CONC:-64}
A_DURATION=${A_DURATION:-10}
B_CONC=${B_CONC:-1000}
B_DURATION=${B_DURATION:-20}
B_TOKENS=${B_TOKENS:-64}
B_DELAY_MS=${B_DELAY_MS:-5}
GATEWAY_CONFIG=${GATEWAY_CONFIG:-conf/gateway.toml}
BENCH_GATEWAY_HEADER=${BENCH_GATEWAY_HEADER:-}
NGINX=${NGINX:-/usr/sbin/nginx}
MODEL=llama3:8b
BIN=target/release

# 1,000 client connections plus as many upstream ones: ask for plenty of descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d -t corral-bench.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
PIDS=()
FAILED=0

cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; FAILED=1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL TIMEOUT_S PID: until URL answers 2xx. Returns 1 when PID exited first,
# 2 on timeout.
wait_http() {
  local url=$1 pid=$3 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 2
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# start_fake NAME FLAGS...: starts fake-ollama on a free port; sets FAKE_URL.
start_fake() {
  local name=$1 out="$WORK/$1.out" pid
  shift
  "$BIN/fake-ollama" --listen 127.0.0.1:0 --models "$MODEL" --loaded "$MODEL" "$@" \
    >"$out" 2>"$WORK/$name.err" &
  pid=$!
  PIDS+=("$pid")
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

# start_gateway NAME UPSTREAM_URL: sets GW_PID and GW_URL, or returns 1 with the reason.
start_gateway() {
  local name=$1 upstream=$2 port logfile="$WORK/gateway-$1.log"
  port=$(free_port)
  GATEWAY_LISTEN="127.0.0.1:$port" OLLAMA_BASE_URL="$upstream" LOG_LEVEL=warn \
    GATEWAY_MAX_INFLIGHT_PER_INSTANCE=2000 \
    "$BIN/gateway" --config "$GATEWAY_CONFIG" >"$logfile" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  local status=0
  wait_http "http://127.0.0.1:$port/healthz" 30 "$GW_PID" || status=$?
  if ((status != 0)); then
    local why="did not answer GET /healthz with 2xx within 30 s"
    if ((status == 1)); then
      wait "$GW_PID" && why="exited" || why="exited with status $?"
      why="$why before answering GET /healthz"
    fi
    fail "the gateway $why (GATEWAY_LISTEN=127.0.0.1:$port OLLAMA_BASE_URL=$upstream --config $GATEWAY_CONFIG); last lines of its output:"
    tail -n 20 "$logfile" >&2 || true
    stop_pid "$GW_PID"
    return 1
  fi
  GW_URL="http://127.0.0.1:$port"
}

# start_nginx: one nginx, one server per scenario; sets NGINX_A_URL and NGINX_B_URL.
start_nginx() {
  local dir="$WORK/nginx" port_a port_b up_a=${FAKE_A#http://} up_b=${FAKE_B#http://} files
  mkdir -p "$dir"
  port_a=$(free_port)
  port_b=$(free_port)
  while [[ $port_b == "$port_a" ]]; do port_b=$(free_port); done
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
  upstream fake_a { server $up_a; keepalive 1024; keepalive_requests 1000000; }
  upstream fake_b { server $up_b; keepalive 1024; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$port_a backlog=4096;
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
  if ! wait_http "http://127.0.0.1:$port_a/" 10 "$pid" || ! wait_http "http://127.0.0.1:$port_b/" 10 "$pid"; then
    fail "nginx did not start; its logs:"
    cat "$dir/stdout.log" "$dir/error.log" >&2 || true
    return 1
  fi
  NGINX_A_URL="http://127.0.0.1:$port_a"
  NGINX_B_URL="http://127.0.0.1:$port_b"
}

# bench SCENARIO TARGET BASE_URL [corral-bench flags]: one measurement, appended to RESULTS.
bench() {
  local scenario=$1 target=$2 url="$3/api/chat" line
  shift 3
  local flags=(--concurrency "$A_CONC" --duration-s "$A_DURATION")
  if [[ $scenario == B ]]; then
    flags=(--concurrency "$B_CONC" --duration-s "$B_DURATION" --stream)
  fi
  log "scenario $scenario via $target: ${flags[*]}"
  if line=$("$BIN/corral-bench" --url "$url" --label "$target" --model "$MODEL" "${flags[@]}" "$@"); then
    :
  else
    fail "scenario $scenario via $target: too many errors"
  fi
  echo "$line"
  [[ -n $line ]] && echo "scenario=$scenario $line" >>"$RESULTS"
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
fi

start_fake fake-a --tokens 1 --token-delay-ms 0
FAKE_A=$FAKE_URL
start_fake fake-b --tokens "$B_TOKENS" --token-delay-ms "$B_DELAY_MS"
FAKE_B=$FAKE_URL
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

RSS_HWM_KB=""
RSS_MAX_KB=""
for scenario in A B; do
  if [[ $scenario == A ]]; then fake=$FAKE_A; else fake=$FAKE_B; fi
  bench "$scenario" direct "$fake"
  if [[ -z ${SKIP_GATEWAY:-} ]]; then
    if [[ ! -x $BIN/gateway ]]; then
      fail "$BIN/gateway is missing; skipping the gateway"
    elif start_gateway "$scenario" "$fake"; then
      if [[ $scenario == B ]]; then
        sample_rss "$GW_PID" "$WORK/rss" &
        sampler=$!
        PIDS+=("$sampler")
      fi
      bench "$scenario" gateway "$GW_URL" ${gateway_header[@]+"${gateway_header[@]}"}
      if [[ $scenario == B ]]; then
        RSS_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$GW_PID/status" 2>/dev/null || true)
        stop_pid "$sampler"
        RSS_MAX_KB=$(cat "$WORK/rss")
      fi
      stop_pid "$GW_PID"
    fi
  fi
  if ((NGINX_OK)); then
    if [[ $scenario == A ]]; then url=$NGINX_A_URL; else url=$NGINX_B_URL; fi
    bench "$scenario" nginx "$url"
  fi
done

# ---------------------------------------------------------------------------------------

echo
echo "Summary ($(nproc) cores; A: $A_CONC clients, non-streaming, ${A_DURATION}s;" \
  "B: $B_CONC streams of $B_TOKENS tokens ${B_DELAY_MS} ms apart, ${B_DURATION}s)"
awk '
  {
    delete f
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    key = f["scenario"] SUBSEP f["label"]
    order[++n] = key
    for (k in f) v[key, k] = f[k]
  }
  function added(key, metric,   d) {
    d = v[key, "scenario"] SUBSEP "direct"
    if (v[key, "label"] == "direct" || !((d, metric) in v)) return "-"
    return sprintf("%+.2f", v[key, metric] - v[d, metric])
  }
  END {
    printf "%-3s %-8s %10s %9s %9s %9s %9s %9s %9s %9s %7s\n", "sc", "via", "rps", "p50_ms", "p99_ms", "+p50_ms", "+p99_ms", "ttfb_p50", "ttfb_p99", "+ttfb_p99", "errors"
    for (i = 1; i <= n; i++) {
      k = order[i]
      printf "%-3s %-8s %10s %9s %9s %9s %9s %9s %9s %9s %7s\n", v[k, "scenario"], v[k, "label"], v[k, "rps"], v[k, "p50_ms"], v[k, "p99_ms"], added(k, "p50_ms"), added(k, "p99_ms"), v[k, "ttfb_p50_ms"], v[k, "ttfb_p99_ms"], added(k, "ttfb_p99_ms"), v[k, "errors"]
    }
    for (s = 0; s < 2; s++) {
      sc = s ? "B" : "A"
      g = sc SUBSEP "gateway"; x = sc SUBSEP "nginx"
      if ((g, "rps") in v && (x, "rps") in v && v[x, "rps"] > 0)
        printf "gateway/nginx rps ratio, scenario %s: %.2f\n", sc, v[g, "rps"] / v[x, "rps"]
    }
  }
' "$RESULTS"
if [[ -n $RSS_HWM_KB || -n $RSS_MAX_KB ]]; then
  awk -v hwm="${RSS_HWM_KB:-0}" -v max="${RSS_MAX_KB:-0}" 'BEGIN {
    printf "gateway peak RSS during B: %.1f MiB (VmHWM), %.1f MiB (highest VmRSS sampled every 200 ms)\n", hwm / 1024, max / 1024
  }'
fi
exit "$FAILED"
