#!/usr/bin/env bash
# Routing decision cost (issue 12's "under 20 µs p99 at 64 connections, beside today's"):
# the gateway's own measure of choosing an instance (`corral_routing_decision_seconds`:
# hashing the prompt, the prefix index, ranking, recording; queue waits left out), per
# balance mode, under CONC (64) connections of non-streaming chats for DURATION (6) seconds.
#
# Pool: INSTANCES (4) plain fake Ollama instances (one token, no delay), and
# max_inflight_per_instance = CONC / INSTANCES so that every request is placed at once (a
# queued request's wait is not a decision). For each mode in MODES (least_busy cache_aware)
# and each history size in HISTORIES (0 16384: one short message; a system prompt and 16 KiB
# of earlier turns, about 4,000 tokens, resent whole as chat clients do), a fresh gateway;
# the histogram is read before and after the load, so start-up requests do not count.
#
# Prints per case: requests per second, the gateway's CPU time per request (user + system,
# from /proc: what the mode costs in all, parsing included), decisions measured, their mean,
# and the p50 and p99 as the histogram bucket they fall in (1, 2, 5, 10, 20, 50 µs ...).
# Knobs: SKIP_BUILD=1, BIN, CONC, DURATION, INSTANCES, MODES, HISTORIES.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CONC=${CONC:-64}
DURATION=${DURATION:-6}
INSTANCES=${INSTANCES:-4}
MODES=${MODES:-least_busy cache_aware}
HISTORIES=${HISTORIES:-0 16384}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
WORK=$(mktemp -d -t corral-decision.XXXXXX)
PIDS=()

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '==> %s\n' "$*" >&2; }

if [[ -z ${SKIP_BUILD:-} ]]; then
  . scripts/deps.sh
  ensure_build_deps
  cargo build --release -p gateway -p corral-tests --bins >&2
fi

# free_port and gateway_header.
. bench/lib.sh

# wait_line FILE PATTERN: the first match of a sed -n pattern in FILE, within 5 s.
wait_line() {
  local got=""
  for _ in $(seq 1 100); do
    got=$(sed -n "$2" "$1")
    [[ -n $got ]] && break
    sleep 0.05
  done
  printf '%s' "$got"
}

URLS=()
for i in $(seq 1 "$INSTANCES"); do
  "$BIN/fake-ollama" --listen 127.0.0.1:0 --tokens 1 >"$WORK/fake-$i.out" 2>&1 &
  PIDS+=($!)
  url=$(wait_line "$WORK/fake-$i.out" 's/^listening on //p')
  [[ -n $url ]] || { cat "$WORK/fake-$i.out" >&2; echo "fake-ollama $i did not start" >&2; exit 1; }
  URLS+=("$url")
done
LIST=$(printf '"%s", ' "${URLS[@]}")

# decision_buckets URL: the histogram's cumulative bucket counts and sum, one "le count" per line.
decision_buckets() {
  curl -fsS "$1/metrics" | awk -v mode="$MODE" '
    $1 ~ "^corral_routing_decision_seconds_bucket" && $1 ~ "balance=\"" mode "\"" {
      match($1, /le="[^"]*"/); print substr($1, RSTART + 4, RLENGTH - 5), $2 }
    $1 ~ "^corral_routing_decision_seconds_sum" && $1 ~ "balance=\"" mode "\"" { print "sum", $2 }'
}

# summary BEFORE AFTER: decisions, mean µs, p50 and p99 bucket bounds of the difference.
summary() {
  python3 - "$1" "$2" <<'PY'
import sys
def read(path):
    d = {}
    for line in open(path):
        k, v = line.split()
        d[k] = float(v)
    return d
a, b = read(sys.argv[1]), read(sys.argv[2])
diff = {k: b[k] - a.get(k, 0.0) for k in b}
n = diff.get("+Inf", 0.0)
if n <= 0:
    print("decisions=0")
    sys.exit()
bounds = sorted((float(k), v) for k, v in diff.items() if k not in ("sum", "+Inf"))
def quantile(q):
    for le, count in bounds:
        if count >= q * n:
            return f"<={le * 1e6:g}us"
    return ">" + f"{bounds[-1][0] * 1e6:g}us"
print(f"decisions={n:.0f} mean_us={diff['sum'] / n * 1e6:.2f} p50={quantile(0.5)} p99={quantile(0.99)}")
PY
}

# cpu_ticks PID: user + system clock ticks of a process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

printf '\n%-12s %8s %9s %8s  %s\n' mode history rps cpu_us "decision cost"
for MODE in $MODES; do
  for HISTORY in $HISTORIES; do
    port=$(free_port)
    dir="$WORK/gw-$MODE-$HISTORY"
    mkdir -p "$dir"
    {
      gateway_header "$dir" "$port"
      cat <<TOML

[pool]
instances = [${LIST%, }]
max_inflight_per_instance = $(((CONC + INSTANCES - 1) / INSTANCES))
balance = "$MODE"

[policies]
dir = "$ROOT/bench/policies"
TOML
    } >"$dir/gateway.toml"
    env -u OLLAMA_BASE_URL -u GATEWAY_LISTEN -u JWT_SECRET -u REDIS_URL -u GATEWAY_POOL_BALANCE \
      "$BIN/gateway" --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    GW="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
      curl -fsS --max-time 1 "$GW/readyz" 2>/dev/null | grep -q "\"healthy\": *${INSTANCES}[,}]" && break
      sleep 0.1
    done
    log "$MODE, history $HISTORY bytes: $CONC connections for $DURATION s"
    decision_buckets "$GW" >"$dir/before"
    t0=$(cpu_ticks "$gw")
    line=$("$BIN/corral-bench" --url "$GW/api/chat" --label "$MODE" --concurrency "$CONC" \
      --duration-s "$DURATION" --history-bytes "$HISTORY")
    t1=$(cpu_ticks "$gw")
    decision_buckets "$GW" >"$dir/after"
    rps=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
    requests=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
      'BEGIN { if (n > 0) printf "%.1f", t / hz / n * 1e6; else print "-" }')
    printf '%-12s %8s %9s %8s  %s\n' "$MODE" "$HISTORY" "$rps" "$cpu" "$(summary "$dir/before" "$dir/after")"
    kill -INT "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
  done
done
