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
# FLOOR=1 adds a fourth mode: the redis one with a gateway built with the feature
# `bench-floor`, whose scripts decode the same arguments and decide nothing (no key read or
# written): what one Redis round trip per call costs here, the floor under the redis mode.
#
# The gateways run side by side and are measured in turn, ROUNDS [3] times over; figures are
# medians over the rounds, ratios the median of each round's ratio.
# Knobs: DURATION [8], ROUNDS [3], FLOOR=1, SKIP_BUILD=1, REDIS_URL [redis://127.0.0.1:6379], BIN [target/release]
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
# free_port.
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
FLOOR_BIN=${FLOOR_BIN:-target/floor/release}
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build --release -p gateway -p corral-tests >&2
  if [[ -n ${FLOOR:-} ]]; then
    # Same target dir (only the gateway crate differs), then the normal build again.
    cargo build --release -p gateway --features bench-floor >&2
    mkdir -p "$FLOOR_BIN"
    cp target/release/gateway "$FLOOR_BIN/gateway"
    cargo build --release -p gateway >&2
  fi
fi

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

start_mode() { # label policies-dir [redis] [bin]: starts its gateway; sets PORT_<label>, PID_<label>
  local label=$1 dir=$2 redis=${3:-} bin=${4:-$BIN} port
  port=$(free_port)
  env GATEWAY_LISTEN=127.0.0.1:$port OLLAMA_BASE_URL=http://127.0.0.1:$FAKE_PORT \
    GATEWAY_MAX_INFLIGHT_PER_INSTANCE=2000 LOG_LEVEL=warn JWT_SECRET="$SECRET" POLICIES_DIR="$dir" \
    ${redis:+REDIS_URL=$redis REDIS_KEY_PREFIX=bench-$RANDOM-$port:} \
    "$bin/gateway" --config conf/gateway.toml >"$WORK/$label.log" 2>&1 &
  local pid=$!
  PIDS+=($pid)
  printf -v "PORT_$label" %s "$port"
  printf -v "PID_$label" %s "$pid"
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the $label gateway did not become ready; its log:" >&2
  cat "$WORK/$label.log" >&2
  exit 1
}

measure() { # label connections round
  local label=$1 conc=$2 round=$3 port pid
  port=PORT_$label pid=PID_$label
  port=${!port} pid=${!pid}
  local g0 r0 f0 b0 e0 out
  wait_quiet
  g0=$(cpu_us "$pid")
  r0=$( [[ -n $REDIS_PID ]] && cpu_us "$REDIS_PID" || echo 0)
  f0=$(cpu_us "$FAKE_PID")
  b0=$(busy_us)
  e0=$(scripts_run)
  : >"$WORK/time.out"
  out=$(/usr/bin/time -f '%U %S' -o "$WORK/time.out" \
    $BIN/corral-bench --url "http://127.0.0.1:$port/api/chat" --concurrency "$conc" --duration-s "$DURATION" \
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
  echo "$out round=$round gw_cpu_us=$(( (g1 - g0) / n )) redis_cpu_us=$(( (r1 - r0) / n ))" \
    "scripts_per_req=$(awk -v e=$((e1 - e0)) -v n=$n 'BEGIN { printf "%.2f", e / n }') other_cpu_pct=$other"
}

MODES=(none local redis)
start_mode none "$WORK/none"
start_mode local "$WORK/limits"
start_mode redis "$WORK/limits" "$REDIS"
if [[ -n ${FLOOR:-} ]]; then
  MODES+=(floor)
  start_mode floor "$WORK/limits" "$REDIS" "$FLOOR_BIN"
fi

{
  # Every mode is measured once per round, in turn, so that a slow minute on this shared
  # machine hits all of them alike; the table gives each figure's median over the rounds.
  for round in $(seq 1 "$ROUNDS"); do
    for conc in 64 1; do
      for m in "${MODES[@]}"; do measure "$m" "$conc" "$round"; done
    done
  done
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
from statistics import median
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if "label" in kv:
        rows.setdefault(kv["label"], []).append(kv)
def ratio(a, b, key="rps"):
    """The median over the rounds of a/b, each round's pair measured minutes apart at most."""
    pairs = zip(rows.get(a, []), rows.get(b, []))
    r = [float(x[key]) / float(y[key]) for x, y in pairs if float(y[key]) > 0]
    return median(r) if r else float("nan")
def added(a, b):
    """The median over the rounds of a's p50 minus b's, in microseconds."""
    pairs = zip(rows.get(a, []), rows.get(b, []))
    r = [1000 * (float(x["p50_ms"]) - float(y["p50_ms"])) for x, y in pairs]
    return median(r) if r else float("nan")
def f(label, key):
    """The median over the rounds."""
    if label not in rows:
        return float("nan")
    return median(float(kv[key]) for kv in rows[label])
print(f"{'mode':8} {'rps@64':>9} {'p50@64 ms':>10} {'p99@64 ms':>10} {'p50@1 ms':>9} {'p99@1 ms':>9} {'added p50@1 us':>15} {'gw cpu us/req':>14} {'redis cpu us/req':>17} {'scripts/req':>12} {'other% 64/1':>12}")
modes = [m for m in ("none", "local", "redis", "floor") if m + "-c64" in rows]
print(f"medians of {len(rows['none-c64'])} rounds")
for m in modes:
    print(f"{m:8} {f(m+'-c64','rps'):9.0f} {f(m+'-c64','p50_ms'):10.2f} {f(m+'-c64','p99_ms'):10.2f} "
          f"{f(m+'-c1','p50_ms'):9.3f} {f(m+'-c1','p99_ms'):9.3f} {1000*(f(m+'-c1','p50_ms')-f('none-c1','p50_ms')):15.0f} "
          f"{f(m+'-c64','gw_cpu_us'):14.0f} {f(m+'-c64','redis_cpu_us'):17.0f} {f(m+'-c64','scripts_per_req'):12.2f} "
          f"{f(m+'-c64','other_cpu_pct'):6.0f}/{f(m+'-c1','other_cpu_pct'):<5.0f}")
print()
for m in ("local", "redis"):
    print(f"rate limit + quota decisions ({m}): +{added(m+'-c1','none-c1'):.0f} us p50 per request, "
          f"throughput x{ratio(m+'-c64','none-c64'):.2f} of no limits")
print(f"redis mode: x{ratio('redis-c64','local-c64'):.2f} of in-memory throughput at 64 connections, "
      f"+{added('redis-c1','local-c1'):.0f} us p50 over in-memory at 1; "
      f"Redis itself spent {f('redis-c64','redis_cpu_us'):.0f} us of CPU per request on this machine's shared cores")
if "floor" in modes:
    print(f"floor (the same gateway, scripts that decide nothing: one round trip per call): "
          f"x{ratio('floor-c64','local-c64'):.2f} of in-memory throughput at 64 connections, "
          f"+{added('floor-c1','local-c1'):.0f} us p50 at 1; redis mode is "
          f"x{ratio('redis-c64','floor-c64'):.2f} of the floor's throughput and "
          f"+{added('redis-c1','floor-c1'):.0f} us p50 over it")
print(f"Redis's floor here: {f('floor-GET','redis_cpu_us'):.0f} us of its CPU per plain GET, "
      f"{f('floor-EVALSHA','redis_cpu_us'):.0f} us per empty script ({f('redis-c64','scripts_per_req'):.2f} scripts per request at 64 connections)")
PY
