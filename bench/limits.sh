#!/usr/bin/env bash
# The cost of the per-request decisions the policy adds: rate limits and quota reservations,
# decided in memory and in Redis, measured in one run against the same gateway with the
# same token but no limits at all.
#
#   none   JWT on, a policy with every limit off (the baseline)
#   local  JWT on, org/user rate limits and a monthly quota that never bind, in memory
#   redis  the same, decided in Redis (REDIS_URL)
#
# Each is measured at 64 connections (throughput) and 1 connection (latency per request
# when the machine is not saturated). Small non-streaming /api/chat, 1 token replies.
# Knobs: DURATION [8], SKIP_BUILD=1, REDIS_URL [redis://127.0.0.1:6379], BIN [target/release]
# (binaries built elsewhere, e.g. in another CARGO_TARGET_DIR), WAIT_QUIET_S [0]: before each
# measurement, wait up to this long for the machine to be at most QUIET_PCT [15] percent busy
# (a shared machine: other builds and tests); other_cpu_pct says how busy it was anyway.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-8}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
BIN=${BIN:-target/release}
WORK=$(mktemp -d -t corral-limits.XXXXXX)
PIDS=()
cleanup() {
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[[ -n ${SKIP_BUILD:-} ]] || cargo build --release -p gateway -p corral-tests >&2

SECRET=$(openssl rand -hex 32)
TOKEN=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=")
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "bench", "org": "bench", "exp": int(time.time()) + 3600}).encode())
s = b(hmac.new(sys.argv[1].encode(), h + b"." + p, hashlib.sha256).digest())
print((h + b"." + p + b"." + s).decode())
PY
)

mkdir -p "$WORK/none" "$WORK/limits"
cp bench/policies/unlimited.toml "$WORK/none/"
cat > "$WORK/limits/limits.toml" <<'TOML'
# Limits that are checked on every request but never bind during the run (the stream limit
# too: with Redis each request takes and frees a lease).
[defaults]
requests_per_minute = 100000000
burst = 1000000
user_requests_per_minute = 100000000
tokens_per_minute = 0
max_concurrent_streams = 1000000
[defaults.quota]
soft_tokens = 0
hard_tokens = 1000000000000
TOML

FAKE_PORT=$(free_port)
$BIN/fake-ollama --listen 127.0.0.1:$FAKE_PORT --models llama3:8b --tokens 1 --token-delay-ms 0 >/dev/null &
FAKE_PID=$!
PIDS+=($FAKE_PID)

# CPU time (user + system) a process has used, in microseconds.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000000 / hz }' "/proc/$1/stat"; }
REDIS_PID=$(redis-cli -u "$REDIS" info server 2>/dev/null | awk -F: '/^process_id/ { print $2 + 0 }')
# CPU time the whole machine spent busy, in microseconds (user, nice, system, irq, softirq, steal).
busy_us() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%d", ($2 + $3 + $4 + $7 + $8 + $9) * 1000000 / hz; exit }' /proc/stat; }
# Script calls Redis has run (admission and settlement scripts alike).
scripts_run() { redis-cli -u "$REDIS" info commandstats 2>/dev/null | awk -F'[=,:]' '/^cmdstat_evalsha:/ { print $3 + 0; f = 1 } END { if (!f) print 0 }'; }
wait_quiet() {
  local limit=${WAIT_QUIET_S:-0} max=${QUIET_PCT:-15} start=$SECONDS b0 b1 pct
  ((limit > 0)) || return 0
  while :; do
    b0=$(busy_us)
    sleep 1
    b1=$(busy_us)
    pct=$(( (b1 - b0) / 10000 / $(nproc) ))
    ((pct <= max)) && return 0
    if ((SECONDS - start >= limit)); then
      echo "the machine is still ${pct}% busy after ${limit}s; measuring anyway" >&2
      return 0
    fi
  done
}

run_mode() { # label policies-dir [redis]
  local label=$1 dir=$2 redis=${3:-} port
  port=$(free_port)
  env GATEWAY_LISTEN=127.0.0.1:$port OLLAMA_BASE_URL=http://127.0.0.1:$FAKE_PORT \
    GATEWAY_MAX_INFLIGHT_PER_INSTANCE=2000 LOG_LEVEL=warn JWT_SECRET="$SECRET" POLICIES_DIR="$dir" \
    ${redis:+REDIS_URL=$redis REDIS_KEY_PREFIX=bench-$RANDOM-$port:} \
    $BIN/gateway --config conf/gateway.toml >"$WORK/$label.log" 2>&1 &
  local pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  for conc in 64 1; do
    local g0 r0 f0 b0 e0 out
    wait_quiet
    g0=$(cpu_us "$pid")
    r0=$( [[ -n $REDIS_PID ]] && cpu_us "$REDIS_PID" || echo 0)
    f0=$(cpu_us "$FAKE_PID")
    b0=$(busy_us)
    e0=$(scripts_run)
    : >"$WORK/time.out"
    out=$(/usr/bin/time -f '%U %S' -o "$WORK/time.out" \
      $BIN/corral-bench --url "http://127.0.0.1:$port/api/chat" --concurrency $conc --duration-s "$DURATION" \
      --label "$label-c$conc" --header "Authorization: Bearer $TOKEN")
    # Where the CPU went, per request: the gateway's, and Redis's (the dependency's own cost);
    # how many scripts Redis ran per request; and how busy other processes kept the machine.
    local n g1 r1 f1 b1 e1 client other
    n=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$out")
    n=$(( n > 0 ? n : 1 ))
    g1=$(cpu_us "$pid")
    r1=$( [[ -n $REDIS_PID ]] && cpu_us "$REDIS_PID" || echo 0)
    f1=$(cpu_us "$FAKE_PID")
    b1=$(busy_us)
    e1=$(scripts_run)
    client=$(awk '{ printf "%d", ($1 + $2) * 1000000 }' "$WORK/time.out")
    other=$(( (b1 - b0) - (g1 - g0) - (r1 - r0) - (f1 - f0) - client ))
    other=$(( other > 0 ? other * 100 / (DURATION * 1000000 * $(nproc)) : 0 ))
    echo "$out gw_cpu_us=$(( (g1 - g0) / n )) redis_cpu_us=$(( (r1 - r0) / n ))" \
      "scripts_per_req=$(awk -v e=$((e1 - e0)) -v n=$n 'BEGIN { printf "%.2f", e / n }') other_cpu_pct=$other"
  done
  kill $pid 2>/dev/null || true
}

{
  run_mode none "$WORK/none"
  run_mode local "$WORK/limits"
  run_mode redis "$WORK/limits" "$REDIS"
  # Redis's own floor on this machine, same run: CPU per call of a plain GET and of a script
  # that does nothing, at 64 connections (what any design pays per Redis call).
  if [[ -n $REDIS_PID ]] && command -v redis-benchmark >/dev/null; then
    noop=$(redis-cli -u "$REDIS" SCRIPT LOAD "return 1")
    for cmd in "GET corral-bench-floor" "EVALSHA $noop 0"; do
      r0=$(cpu_us "$REDIS_PID")
      # shellcheck disable=SC2086
      redis-benchmark -u "$REDIS" -n 100000 -c 64 -q $cmd >/dev/null 2>&1
      r1=$(cpu_us "$REDIS_PID")
      echo "label=floor-${cmd%% *} redis_cpu_us=$(( (r1 - r0) / 100000 ))"
    done
  fi
} | tee "$WORK/results.txt"

echo
python3 - "$WORK/results.txt" <<'PY'
import sys, re
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if "label" in kv:
        rows[kv["label"]] = kv
def f(label, key):
    return float(rows[label][key]) if label in rows else float("nan")
print(f"{'mode':8} {'rps@64':>9} {'p50@64 ms':>10} {'p99@64 ms':>10} {'p50@1 ms':>9} {'p99@1 ms':>9} {'added p50@1 us':>15} {'gw cpu us/req':>14} {'redis cpu us/req':>17} {'scripts/req':>12} {'other% 64/1':>12}")
for m in ("none", "local", "redis"):
    print(f"{m:8} {f(m+'-c64','rps'):9.0f} {f(m+'-c64','p50_ms'):10.2f} {f(m+'-c64','p99_ms'):10.2f} "
          f"{f(m+'-c1','p50_ms'):9.3f} {f(m+'-c1','p99_ms'):9.3f} {1000*(f(m+'-c1','p50_ms')-f('none-c1','p50_ms')):15.0f} "
          f"{f(m+'-c64','gw_cpu_us'):14.0f} {f(m+'-c64','redis_cpu_us'):17.0f} {f(m+'-c64','scripts_per_req'):12.2f} "
          f"{f(m+'-c64','other_cpu_pct'):6.0f}/{f(m+'-c1','other_cpu_pct'):<5.0f}")
print()
for m in ("local", "redis"):
    print(f"rate limit + quota decisions ({m}): +{1000*(f(m+'-c1','p50_ms')-f('none-c1','p50_ms')):.0f} us p50 per request, "
          f"throughput x{f(m+'-c64','rps')/f('none-c64','rps'):.2f} of no limits")
print(f"redis mode: x{f('redis-c64','rps')/f('local-c64','rps'):.2f} of in-memory throughput at 64 connections, "
      f"+{1000*(f('redis-c1','p50_ms')-f('local-c1','p50_ms')):.0f} us p50 over in-memory at 1; "
      f"Redis itself spent {f('redis-c64','redis_cpu_us'):.0f} us of CPU per request on this machine's shared cores")
print(f"Redis's floor here: {f('floor-GET','redis_cpu_us'):.0f} us of its CPU per plain GET, "
      f"{f('floor-EVALSHA','redis_cpu_us'):.0f} us per empty script ({f('redis-c64','scripts_per_req'):.2f} scripts per request at 64 connections)")
PY
