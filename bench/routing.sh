#!/usr/bin/env bash
# Routing benchmark (issue 12): the gateway's balance modes on a multi-turn chat workload
# over simulated GPUs, in one comparison table.
#
# Pool: INSTANCES (4) `fake-ollama --gpu` instances with two models (llama3.2:3b and
# qwen2.5:7b), NUM_PARALLEL (4) slots per loaded model and a prompt cache per slot; the
# odd-numbered instances hold one model at a time (max_loaded_models 1: a model switch
# costs a load) and the even-numbered ones two, so each model starts loaded on three of
# the four. Every duration of the simulator is multiplied by TIME_SCALE (0.2: each run
# takes one to two minutes, about 15 in all). The gateway caps in-flight per instance at NUM_PARALLEL, as
# the README advises, so requests queue at the gateway where routing decides.
#
# Workload (target/release/corral-chat-bench): CONVERSATIONS (200) conversations of 4-12
# turns, a shared system prompt of 300 tokens, user turns of 50-400 tokens, replies of
# 50-250, histories resent whole each turn; Poisson arrivals; THINK_MS (500) mean pause
# between turns; conversations split between the two models; the same seed every run.
#
# Capacity: unless RATE is given (conversations/s at 100%), a closed loop of as many
# conversations as the pool has slots, no think time, on least_busy, measures how many turns
# per second the pool completes with every slot busy, converted to conversations/s of this
# workload. (Twice as many thrash the prompt caches, which understates what the pool serves.)
#
# Runs: for each mode in MODES (round_robin least_busy cache_aware; also cache_aware_fifo:
# cache_aware with pool.affinity_queue_window = 0) and each load in LOADS
# (70 100, percent of capacity), fresh instances (cold caches) and a fresh gateway with
# GATEWAY_POOL_BALANCE=<mode>; then one cache_aware run at REPLICA_LOAD (70) percent with
# two gateway replicas sharing Redis (REDIS_URL, default redis://127.0.0.1:6379, with a
# key prefix of its own), each conversation's turns alternating between them. A gateway
# that does not know GATEWAY_POOL_BALANCE yet routes every mode as least_busy.
#
# Prints each run's summary, then the comparison table with ratios against least_busy at
# the same load. Exits non-zero when a run failed (more than 5% of its turns failed, or a
# process did not start).
#
# Knobs: QUICK=1 (a smoke run in well under 30 s: 24 conversations of 2-4 turns with short
# replies, TIME_SCALE 0.1, RATE 16 unless given, no capacity measurement), SKIP_BUILD=1,
# SKIP_REDIS=1, SESSION_HEADER=1 (send X-Corral-Session: <conversation id>), SEED (1),
# INSTANCES, NUM_PARALLEL, TIME_SCALE, CONVERSATIONS, THINK_MS, RATE, MODES, LOADS,
# REPLICA_LOAD, REDIS_URL, QUEUE_WINDOW (pool.affinity_queue_window of cache_aware runs;
# the gateway's default when unset), SATURATED=1 (also each mode's closed-loop capacity: the
# throughput comparison, at as many conversations at once as the pool has slots, row
# `closed-1x`, and at twice as many, row `closed-2x`; SATURATED_TIMES="2" runs only the
# latter), CACHE_ENTRIES (not Ollama: the simulated runners also keep this many earlier
# prompts per model, each serving its prefix from any slot, like vLLM's or SGLang's paged
# prefix cache; to measure what Ollama's one prompt per slot leaves to routing), BIN (where the binaries are:
# $CARGO_TARGET_DIR/release, else target/release). Results stay in $WORK (printed) when
# KEEP=1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-}
INSTANCES=${INSTANCES:-4}
NUM_PARALLEL=${NUM_PARALLEL:-4}
MODELS=llama3.2:3b,qwen2.5:7b
SEED=${SEED:-1}
MODES=${MODES:-round_robin least_busy cache_aware}
LOADS=${LOADS-70 100}  # LOADS="" runs no open-loop load (SATURATED=1 alone, say)
REPLICA_LOAD=${REPLICA_LOAD:-70}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
if [[ -n $QUICK ]]; then
  TIME_SCALE=${TIME_SCALE:-0.1}
  CONVERSATIONS=${CONVERSATIONS:-24}
  THINK_MS=${THINK_MS:-50}
  RATE=${RATE:-16}
  WORKLOAD=(--turns-min 2 --turns-max 4 --reply-tokens-min 20 --reply-tokens-max 60)
else
  TIME_SCALE=${TIME_SCALE:-0.2}
  CONVERSATIONS=${CONVERSATIONS:-200}
  THINK_MS=${THINK_MS:-500}
  RATE=${RATE:-}
  WORKLOAD=()
fi
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
# The simulator loads a model in 3 s (its LOAD_MS) times TIME_SCALE: the gateway's load
# estimate starts from the same, as an operator's would from their GPUs' measured loads.
LOAD_ESTIMATE_MS=$(awk -v s="$TIME_SCALE" 'BEGIN { v = int(3000 * s); if (v < 1) v = 1; print v }')
WORK=$(mktemp -d -t corral-routing.XXXXXX)
PIDS=()
FAILED=0
REPORTS=()

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then echo "results kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; FAILED=1; }

if [[ -z ${SKIP_BUILD:-} ]]; then
  . scripts/deps.sh
  ensure_build_deps
  cargo build --release -p gateway -p corral-tests --bins >&2
fi

# start_instances: fresh simulated GPUs (cold caches); sets INSTANCE_URLS and INSTANCE_ARGS.
start_instances() {
  local i out max loaded
  INSTANCE_URLS=()
  INSTANCE_ARGS=()
  for i in $(seq 1 "$INSTANCES"); do
    if ((i % 2)); then
      max=1
      if (((i / 2) % 2)); then loaded=qwen2.5:7b; else loaded=llama3.2:3b; fi
    else
      max=2
      loaded=$MODELS
    fi
    out="$WORK/fake-$i.out"
    : >"$out"
    "$BIN/fake-ollama" --gpu --listen 127.0.0.1:0 --models "$MODELS" --loaded "$loaded" \
      --tokens 100000 --num-parallel "$NUM_PARALLEL" --max-loaded-models "$max" \
      --time-scale "$TIME_SCALE" ${CACHE_ENTRIES:+--prompt-cache-entries "$CACHE_ENTRIES"} \
      >"$out" 2>"$WORK/fake-$i.err" &
    PIDS+=($!)
    local url=""
    for _ in $(seq 1 100); do
      url=$(sed -n 's/^listening on //p' "$out")
      [[ -n $url ]] && break
      sleep 0.05
    done
    if [[ -z $url ]]; then
      cat "$WORK/fake-$i.err" >&2
      fail "fake-ollama $i did not start"
      return 1
    fi
    INSTANCE_URLS+=("$url")
    INSTANCE_ARGS+=(--instance "$url")
  done
}

# free_port and gateway_header.
. bench/lib.sh

# start_gateway NAME MODE [VAR=value...]: a gateway in front of INSTANCE_URLS; sets GW_URL.
start_gateway() {
  local name=$1 mode=$2 port dir="$WORK/gw-$1" list
  shift 2
  port=$(free_port)
  mkdir -p "$dir"
  list=$(printf '"%s", ' "${INSTANCE_URLS[@]}")
  {
    gateway_header "$dir" "$port"
    cat <<TOML

[pool]
instances = [${list%, }]
max_inflight_per_instance = $NUM_PARALLEL
health_interval_ms = 500
model_load_estimate_ms = $LOAD_ESTIMATE_MS
${CASE_WINDOW:+affinity_queue_window = $CASE_WINDOW}

[policies]
dir = "$ROOT/bench/policies"
TOML
  } >"$dir/gateway.toml"
  env -u OLLAMA_BASE_URL -u GATEWAY_LISTEN -u JWT_SECRET -u REDIS_URL -u REDIS_KEY_PREFIX \
    GATEWAY_POOL_BALANCE="$mode" "$@" "$BIN/gateway" --config "$dir/gateway.toml" \
    >"$dir/gateway.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  GW_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if curl -fsS --max-time 1 "$GW_URL/readyz" 2>/dev/null | grep -q "\"healthy\": *${INSTANCES}[,}]"; then
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$dir/gateway.log" >&2
  fail "the gateway ($name, $mode) did not become ready with $INSTANCES healthy instances"
  return 1
}

stop_all() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

# run_case LABEL MODE LOAD RATE [replicas] [chat-bench flags...]: one run on a fresh pool.
# MODE cache_aware_fifo is cache_aware with affinity_queue_window = 0 (queued requests get
# freed slots strictly in fair order), to show what the cache-aware hand-over buys.
run_case() {
  local label=$1 mode=$2 load=$3 rate=$4 replicas=${5:-1} json urls=() prefix CASE_WINDOW="" shown=$2
  shift 5 || shift $#
  if [[ $mode == cache_aware_fifo ]]; then
    mode=cache_aware
    CASE_WINDOW=0
  elif [[ $mode == cache_aware ]]; then
    CASE_WINDOW=${QUEUE_WINDOW:-}
  fi
  json="$WORK/$label-$load.json"
  start_instances || { stop_all; return 1; }
  if ((replicas == 2)); then
    prefix="corral-routing-$$-$RANDOM:"
    start_gateway "$label-a" "$mode" REDIS_URL="$REDIS" REDIS_KEY_PREFIX="$prefix" || { stop_all; return 1; }
    urls+=(--url "$GW_URL")
    start_gateway "$label-b" "$mode" REDIS_URL="$REDIS" REDIS_KEY_PREFIX="$prefix" || { stop_all; return 1; }
    urls+=(--url "$GW_URL")
  else
    start_gateway "$label" "$mode" || { stop_all; return 1; }
    urls+=(--url "$GW_URL")
  fi
  if [[ $rate == 0 ]]; then
    log "$label: a closed loop"
  else
    log "$label at $load ($rate conversations/s)"
  fi
  local session=()
  [[ -n ${SESSION_HEADER:-} ]] && session=(--session-header)
  if ! "$BIN/corral-chat-bench" run "${urls[@]}" "${INSTANCE_ARGS[@]}" --seed "$SEED" \
    --models "$MODELS" --conversations "${CASE_CONVERSATIONS:-$CONVERSATIONS}" \
    --think-ms "${CASE_THINK_MS:-$THINK_MS}" --rate "$rate" \
    ${WORKLOAD[@]+"${WORKLOAD[@]}"} ${session[@]+"${session[@]}"} \
    --label "$label" --mode "$shown" --load "$load" --json "$json" "$@" | tee "$WORK/$label-$load.txt"; then
    fail "$label at $load failed"
  fi
  # The gateway's own counters (affinity, model loads, warm waits), kept with KEEP=1.
  curl -fsS --max-time 2 "$GW_URL/metrics" >"$WORK/$label-$load.metrics" 2>/dev/null || true
  stop_all
  [[ -s $json ]] && REPORTS+=("$json")
  return 0
}

slots=$((INSTANCES * NUM_PARALLEL))

# SATURATED=1: each mode's own capacity in closed loops (open-loop runs cannot show a
# throughput gain: their tokens/s follows the offered load). At as many conversations as
# slots, a conversation's next turn can find its slot again if routing sends it there; at
# twice as many, every freed slot goes to a queued request, which overwrites the cache the
# slot held unless the request's own prefix lives there (see pool.affinity_queue_window).
if [[ -n ${SATURATED:-} ]]; then
  for times in ${SATURATED_TIMES:-1 2}; do
    for mode in $MODES; do
      CASE_CONVERSATIONS=$((6 * slots)) CASE_THINK_MS=0 \
        run_case "$mode" "$mode" "closed-${times}x" 0 1 --concurrency $((times * slots))
    done
  done
fi

# The capacity (100%): least_busy's closed loop at as many conversations as slots, from the
# SATURATED runs when they had one, else measured now.
if [[ -z $RATE && -s $WORK/least_busy-closed-1x.txt ]]; then
  RATE=$(sed -n 's/.* capacity_conv_per_s=\([0-9.]*\).*/\1/p' "$WORK/least_busy-closed-1x.txt")
fi
if [[ -z $RATE ]]; then
  log "measuring capacity: a closed loop of $slots conversations at once, least_busy"
  saved=(${REPORTS[@]+"${REPORTS[@]}"})
  CASE_CONVERSATIONS=$((6 * slots)) CASE_THINK_MS=0 \
    run_case capacity least_busy saturated 0 1 --concurrency "$slots"
  RATE=$(sed -n 's/.* capacity_conv_per_s=\([0-9.]*\).*/\1/p' "$WORK/capacity-saturated.txt")
  REPORTS=(${saved[@]+"${saved[@]}"})
  if [[ -z $RATE ]]; then
    fail "could not measure the capacity; give RATE (conversations/s at 100%)"
    exit 1
  fi
fi
log "capacity (100%): $RATE conversations/s"

rate_at() { awk -v r="$RATE" -v p="$1" 'BEGIN { printf "%.4f", r * p / 100 }'; }

for load in $LOADS; do
  for mode in $MODES; do
    run_case "$mode" "$mode" "$load%" "$(rate_at "$load")"
  done
done

if [[ -z ${SKIP_REDIS:-} ]]; then
  redis_ok=0
  if command -v redis-cli >/dev/null 2>&1 && redis-cli -u "$REDIS" ping >/dev/null 2>&1; then
    redis_ok=1
  elif [[ $REDIS == redis://127.0.0.1:6379 ]]; then
    . scripts/deps.sh
    start_redis
    redis_up && redis_ok=1
  fi
  if ((redis_ok)); then
    run_case cache_aware+2gw cache_aware "$REPLICA_LOAD%" "$(rate_at "$REPLICA_LOAD")" 2
  else
    log "Redis is not reachable at $REDIS: skipping the two-replica run (SKIP_REDIS=1 to silence)"
  fi
fi

echo
echo "Routing comparison: $INSTANCES instances x $NUM_PARALLEL slots, time scale $TIME_SCALE," \
  "$CONVERSATIONS conversations, 100% = $RATE conversations/s$([[ -n $QUICK ]] && echo ' (QUICK: a fixed rate, not measured)')"
if ((${#REPORTS[@]})); then
  "$BIN/corral-chat-bench" compare "${REPORTS[@]}"
fi
exit "$FAILED"
