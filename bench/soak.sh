#!/usr/bin/env bash
# Soak run (not part of CI): the release gateway in front of three fake Ollama instances,
# under mixed traffic, while instances are killed and restarted and clients hang up.
#
#   bench/soak.sh [--duration SECONDS]        (default 600; SOAK_DURATION works too)
#
# What happens:
#   - builds `cargo build --release -p gateway -p corral-tests --bins` (SKIP_BUILD=1 skips);
#   - starts 3 target/release/fake-ollama on free loopback ports (32 tokens 20 ms apart, so
#     a stream lasts about 0.7 s) and the gateway with a temporary config: no JWT, Redis or
#     database; pool.max_inflight_per_instance = 4, pool.health_interval_ms = 1000,
#     pool.retries = 2, server.max_body_bytes = 1 MiB; a policy with every limit off;
#   - target/release/corral-soak (tests/src/bin/soak.rs) sends mixed traffic from 32
#     workers for the whole duration: streaming and non-streaming /api/chat, /api/generate
#     and /v1/chat/completions (with and without stream_options.include_usage), /api/tags,
#     chats over 64 KiB, malformed JSON (400 expected) and oversize bodies (413 expected);
#     15% of streaming clients hang up after a few lines;
#   - after a 10 s warm-up, every 20-40 s one instance is SIGKILLed and restarted on the
#     same port 2-5 s later; a third of the restarts use --fail-after-tokens (streams die
#     part-way; that instance is the next one killed); once, at 60% of a run of 60 s or
#     more, all three are down for 3 s. Each change is appended to an events file that the
#     driver reads to excuse what no gateway can avoid (every instance down, or the
#     instance holding a request dying) from what it must avoid.
#
# Prints the driver's count of requests by class, then the checks:
#   failed unstarted requests (a 5xx or no response while an instance was healthy) = 0,
#   malformed last lines (a stream whose last line is not whole JSON) = 0,
#   cut streams (ended with neither done/[DONE] nor an error line) = 0, timeouts = 0,
#   corral_upstream_in_flight summed over instances, 5 s after traffic stops = 0,
#   the gateway still running;
# and, for information, requests refused while every instance was down, unexpected answers,
# oversize bodies whose 413 the client never saw (the gateway closed while the body was
# still being sent), the gateway's RSS after the warm-up and at the end (VmRSS) with the
# growth ratio, its peak (VmHWM), corral_queue_waiting, retries and interrupted streams.
# Exits 1 when a check fails; the work directory is then kept: gateway.log, events (what the
# chaos did), problems.log (every request of a problem class), driver.out.
#
# Knobs (defaults in brackets): SOAK_DURATION [600] SOAK_CONCURRENCY [32] SOAK_WARMUP_S [10]
#   SOAK_KILL_MIN_S [20] SOAK_KILL_MAX_S [40] SOAK_FAULTY_PCT [33] SOAK_OUTAGE [1]
#   SOAK_CANCEL_PCT [15] SOAK_KEEP=1 (keep the work directory)  SKIP_BUILD=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

DURATION=${SOAK_DURATION:-600}
while (($#)); do
  case $1 in
    --duration) DURATION=${2:?--duration needs a number of seconds}; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1)); then
  echo "soak.sh: --duration must be a whole number of seconds, got '$DURATION'" >&2
  exit 2
fi

CONCURRENCY=${SOAK_CONCURRENCY:-32}
WARMUP_S=${SOAK_WARMUP_S:-10}
KILL_MIN_S=${SOAK_KILL_MIN_S:-20}
KILL_MAX_S=${SOAK_KILL_MAX_S:-40}
FAULTY_PCT=${SOAK_FAULTY_PCT:-33}
OUTAGE=${SOAK_OUTAGE:-1}
CANCEL_PCT=${SOAK_CANCEL_PCT:-15}
INSTANCES=3
TOKENS=32
TOKEN_DELAY_MS=20
MAX_BODY_BYTES=1048576
IDLE_WAIT_S=5
OUTAGE_S=3
MODEL=llama3:8b
BIN=target/release

WORK=$(mktemp -d -t corral-soak.XXXXXX)
EVENTS="$WORK/events"
STOP="$WORK/stop-chaos"
GW_PID=""
CHAOS_PID=""
DRIVER_PID=""
KEEP=${SOAK_KEEP:-}
declare -a PORTS

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# stop_pid PID [SIGNAL]: signal (TERM by default) and reap when it is our child.
stop_pid() {
  if [[ -n $1 ]]; then
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

cleanup() {
  local file
  touch "$STOP"
  stop_pid "$DRIVER_PID"
  stop_pid "$CHAOS_PID"
  for file in "$WORK"/fake-*.pid; do
    if [[ -f $file ]]; then stop_pid "$(cat "$file")" KILL; fi
  done
  stop_pid "$GW_PID" INT
  if [[ -n $KEEP ]]; then
    log "work directory kept: $WORK (gateway.log, events, problems.log, driver.out)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port and gateway_header.
. bench/lib.sh

# pick_ports N: N distinct free ports into PORTS (the last one is the gateway's).
pick_ports() {
  local port
  PORTS=()
  while ((${#PORTS[@]} < $1)); do
    port=$(free_port)
    if [[ " ${PORTS[*]} " != *" $port "* ]]; then PORTS+=("$port"); fi
  done
}

now_ms() { date +%s%3N; }

# event INDEX up|down|faulty: what the driver reads to judge failures.
event() { echo "$(now_ms) fake-$1 $2" >>"$EVENTS"; }

curl_q() { curl -sS --noproxy '*' --max-time 5 "$@"; }

# nap SECONDS: sleeps in small steps; returns 1 as soon as the chaos is asked to stop.
nap() {
  local steps=$(($1 * 5))
  while ((steps-- > 0)); do
    if [[ -e $STOP ]]; then return 1; fi
    sleep 0.2
  done
  [[ ! -e $STOP ]]
}

# start_fake INDEX [FLAGS...]: fake-ollama on its fixed port, waiting for "listening on".
# A killed instance's port can be briefly unavailable, so it is tried for up to 10 s.
start_fake() {
  local index=$1 out="$WORK/fake-$1.out" pid attempt
  shift
  for attempt in $(seq 1 20); do
    if [[ -e $STOP ]]; then return 1; fi # the run is ending: start nothing new
    : >"$out"
    "$BIN/fake-ollama" --listen "127.0.0.1:${PORTS[$index]}" --models "$MODEL" --loaded "$MODEL" \
      --tokens "$TOKENS" --token-delay-ms "$TOKEN_DELAY_MS" "$@" >"$out" 2>>"$WORK/fake-$index.err" &
    pid=$!
    disown "$pid" # it is SIGKILLed on purpose: no "Killed" job notices
    echo "$pid" >"$WORK/fake-$index.pid"
    for _ in $(seq 1 50); do
      if grep -q '^listening on ' "$out"; then return 0; fi
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    stop_pid "$pid" KILL
    rm -f "$WORK/fake-$index.pid"
    log "fake-$index did not start on port ${PORTS[$index]} (attempt $attempt); retrying"
    sleep 0.5
  done
  return 1
}

# kill_fake INDEX: SIGKILL, like an OOM kill or a lost node.
kill_fake() {
  local file="$WORK/fake-$1.pid"
  if [[ -f $file ]]; then
    event "$1" down
    kill -KILL "$(cat "$file")" 2>/dev/null || true
    rm -f "$file"
  fi
}

# restart_fake INDEX: back on the same port; FAULTY_PCT of the time with
# --fail-after-tokens, so its streams die part-way. Prints "faulty" or "up".
restart_fake() {
  local state=up flags=()
  if ((RANDOM % 100 < FAULTY_PCT)); then
    state=faulty
    flags=(--fail-after-tokens $((2 + RANDOM % 20)))
  fi
  if start_fake "$1" "${flags[@]}"; then
    event "$1" "$state"
    echo "$state"
  else
    echo "restart-failed"
  fi
}

# chaos: runs in the background until $STOP exists. One instance at a time is killed and
# brought back; a faulty instance is always the next one killed, so it lives one round;
# once (runs of 60 s or more) every instance goes down for OUTAGE_S.
chaos() {
  local started=$SECONDS outage_at=-1 victim faulty=-1 state i
  if ((OUTAGE)) && ((DURATION >= 60)); then outage_at=$((DURATION * 6 / 10 - WARMUP_S)); fi
  while :; do
    nap $((KILL_MIN_S + RANDOM % (KILL_MAX_S - KILL_MIN_S + 1))) || return 0
    if ((outage_at >= 0 && SECONDS - started >= outage_at)); then
      outage_at=-1
      echo "t=$((SECONDS - traffic_started))s outage: every instance down for ${OUTAGE_S}s" >>"$WORK/chaos.log"
      for ((i = 0; i < INSTANCES; i++)); do kill_fake "$i"; done
      sleep "$OUTAGE_S"
      for ((i = 0; i < INSTANCES; i++)); do
        if start_fake "$i"; then event "$i" up; fi
      done
      faulty=-1
      continue
    fi
    victim=$((faulty >= 0 ? faulty : RANDOM % INSTANCES))
    echo "t=$((SECONDS - traffic_started))s fake-$victim killed" >>"$WORK/chaos.log"
    kill_fake "$victim"
    sleep $((2 + RANDOM % 4))
    state=$(restart_fake "$victim")
    echo "t=$((SECONDS - traffic_started))s fake-$victim restarted: $state" >>"$WORK/chaos.log"
    faulty=$([[ $state == faulty ]] && echo "$victim" || echo -1)
  done
}

rss_kb() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status" 2>/dev/null || true; }

mib() { awk -v kb="${1:-0}" 'BEGIN {printf "%.1f MiB", kb / 1024}'; }

# metric NAME: the sum of a metric's samples in the gateway's /metrics ("" when unreadable).
metric() {
  local text
  text=$(curl_q "$GW_URL/metrics") || return 0
  awk -v name="$1" '$1 == name || index($1, name "{") == 1 {sum += $NF; seen = 1}
    END {if (seen) printf "%d", sum; else print 0}' <<<"$text"
}

# metric_by NAME LABEL: "value=sum ..." of a metric split by one label.
metric_by() {
  local text
  text=$(curl_q "$GW_URL/metrics") || return 0
  awk -v name="$1" -v label="$2" 'index($1, name "{") == 1 {
      v = $1; sub(".*" label "=\"", "", v); sub("\".*", "", v); sum[v] += $NF
    }
    END {for (k in sum) printf "%s=%d ", k, sum[k]}' <<<"$text"
}

readyz_healthy() {
  curl_q "$GW_URL/readyz" 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["checks"]["pool"]["healthy"])' 2>/dev/null ||
    echo "?"
}

# class COUNT_NAME: a class's count from the driver's table.
class() { awk -v c="$1" '$1 == c && $2 ~ /^[0-9]+$/ {print $2; exit}' "$WORK/driver.out"; }

# ---------------------------------------------------------------------------------------

if [[ -z ${SKIP_BUILD:-} ]]; then
  log "building release binaries"
  cargo build --release -p gateway -p corral-tests --bins
fi
for bin in gateway fake-ollama corral-soak; do
  [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing: run without SKIP_BUILD=1"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

pick_ports $((INSTANCES + 1))
GW_PORT=${PORTS[$INSTANCES]}
GW_URL="http://127.0.0.1:$GW_PORT"
: >"$EVENTS"
for ((i = 0; i < INSTANCES; i++)); do
  start_fake "$i" || die "fake-ollama $i did not start on port ${PORTS[$i]}: $(cat "$WORK/fake-$i.err")"
  event "$i" up
done
instances=$(for ((i = 0; i < INSTANCES; i++)); do printf '"http://127.0.0.1:%s", ' "${PORTS[$i]}"; done)

mkdir -p "$WORK/policies"
cat >"$WORK/policies/unlimited.toml" <<'TOML'
# corral soak: the run exercises failures, not limits: no request, token or stream limits.
[defaults]
requests_per_minute = 0
burst = 0
user_requests_per_minute = 0
tokens_per_minute = 0
max_concurrent_streams = 0

[anonymous]
requests_per_minute = 0
burst = 0
TOML
cat >"$WORK/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
threads = 2
max_body_bytes = $MAX_BODY_BYTES
grace_period_s = 3
shutdown_timeout_s = 2
pid_file = "$WORK/gateway.pid"
upgrade_sock = "$WORK/upgrade.sock"

[log]
level = "info"

[pool]
instances = [${instances%, }]
max_inflight_per_instance = 4
health_interval_ms = 1000
retries = 2

[policies]
dir = "$WORK/policies"
TOML

# The run's own config only: no variable from the caller's shell may add JWT, Redis, a
# database or another pool.
GW_ENV=(-u GATEWAY_LISTEN -u GATEWAY_TLS_LISTEN -u GATEWAY_THREADS -u GATEWAY_MAX_BODY_BYTES
  -u GATEWAY_MAX_INFLIGHT_PER_INSTANCE -u TLS_CERT_FILE -u TLS_KEY_FILE -u OLLAMA_BASE_URL
  -u BACKEND_URL -u JWT_SECRET -u JWT_PUBLIC_KEY_FILE -u JWKS_URL -u JWT_ISSUER -u JWT_AUDIENCE
  -u CORS_ORIGINS -u POLICIES_DIR -u REDIS_URL -u REDIS_KEY_PREFIX -u DATABASE_URL
  -u ORG_SOFT_TOKEN_LIMIT -u ORG_HARD_TOKEN_LIMIT -u PROMETHEUS_ENABLED -u LOG_LEVEL -u LOG_FORMAT
  -u CORRAL_CLOCK_OFFSET_S)
env "${GW_ENV[@]}" "$BIN/gateway" check --config "$WORK/gateway.toml" >"$WORK/check.out" 2>&1 ||
  die "gateway check refused the soak config: $(cat "$WORK/check.out")"
env "${GW_ENV[@]}" "$BIN/gateway" --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 150); do
  kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited at start: $(tail -n 20 "$WORK/gateway.log")"
  if [[ $(readyz_healthy) == "$INSTANCES" ]]; then break; fi
  sleep 0.1
done
[[ $(readyz_healthy) == "$INSTANCES" ]] ||
  die "the gateway's /readyz never reported $INSTANCES healthy instances: $(tail -n 20 "$WORK/gateway.log")"
log "gateway $GW_URL (pid $GW_PID) in front of fake-0..2 on ports ${PORTS[*]:0:INSTANCES}; work dir $WORK"

log "traffic: ${DURATION}s from $CONCURRENCY workers; chaos starts after a ${WARMUP_S}s warm-up"
"$BIN/corral-soak" --url "$GW_URL" --duration-s "$DURATION" --concurrency "$CONCURRENCY" \
  --model "$MODEL" --events "$EVENTS" --max-body-bytes "$MAX_BODY_BYTES" \
  --cancel-pct "$CANCEL_PCT" --problems "$WORK/problems.log" >"$WORK/driver.out" 2>&1 &
DRIVER_PID=$!
traffic_started=$SECONDS

sleep "$((WARMUP_S < DURATION ? WARMUP_S : DURATION))"
RSS_START=$(rss_kb "$GW_PID" VmRSS)
if ((SECONDS - traffic_started < DURATION)); then
  chaos &
  CHAOS_PID=$!
fi

# Progress every 30 s, so a long run shows it is alive.
while kill -0 "$DRIVER_PID" 2>/dev/null; do
  for _ in $(seq 1 150); do
    kill -0 "$DRIVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$DRIVER_PID" 2>/dev/null; then
    log "t=$((SECONDS - traffic_started))s: gateway RSS $(mib "$(rss_kb "$GW_PID" VmRSS)"), healthy $(readyz_healthy)/$INSTANCES, in flight $(metric corral_upstream_in_flight), chaos: $(grep -c ' down$' "$EVENTS" || true) kills so far"
  fi
done
DRIVER_RC=0
wait "$DRIVER_PID" || DRIVER_RC=$?
DRIVER_PID=""
RSS_END=$(rss_kb "$GW_PID" VmRSS)
RSS_PEAK=$(rss_kb "$GW_PID" VmHWM)
# The chaos ends by itself at its next step (an instance it just killed stays down); killed
# instead, a restart it was in the middle of could leave a fake behind.
touch "$STOP"
wait "$CHAOS_PID" 2>/dev/null || true
CHAOS_PID=""

log "traffic stopped; waiting ${IDLE_WAIT_S}s before reading the gauges"
sleep "$IDLE_WAIT_S"
GW_ALIVE=0
if kill -0 "$GW_PID" 2>/dev/null; then GW_ALIVE=1; fi
IN_FLIGHT=$(metric corral_upstream_in_flight)
QUEUE_WAITING=$(metric corral_queue_waiting)
RETRIES=$(metric corral_upstream_retries_total)
INTERRUPTED=$(metric_by corral_streams_interrupted_total cause)
EJECTIONS=$(metric_by corral_upstream_ejections_total reason)
RSS_IDLE=$(rss_kb "$GW_PID" VmRSS)

echo
cat "$WORK/driver.out"
echo
kills=$(grep -c ' down$' "$EVENTS" || true)
faulty=$(grep -c ' faulty$' "$EVENTS" || true)
outages=$(grep -c 'outage' "$WORK/chaos.log" 2>/dev/null || true)
echo "Soak summary: ${DURATION}s, $CONCURRENCY workers, $INSTANCES fake instances ($TOKENS tokens ${TOKEN_DELAY_MS} ms apart);" \
  "chaos: $kills instance kills, $faulty faulty restarts (--fail-after-tokens), ${outages:-0} full outages"
if [[ -s $WORK/chaos.log ]]; then sed 's/^/  chaos: /' "$WORK/chaos.log"; fi

FAILED=0
# check NAME VALUE: a must-be-0 figure; an empty VALUE (not measured) fails too.
check() {
  local verdict=PASS
  if [[ $2 != 0 ]]; then verdict=FAIL; FAILED=1; fi
  printf '%-58s %6s  %s\n' "$1 (must be 0):" "${2:-?}" "$verdict"
}
check "failed unstarted requests while an instance was healthy" "$(class failed_unstarted)"
check "streams whose last line is not whole JSON" "$(class malformed_last_line)"
check "streams cut without done/[DONE] or an error line" "$(class stream_cut)"
check "requests without a complete answer in time" "$(class timed_out)"
check "corral_upstream_in_flight ${IDLE_WAIT_S}s after traffic stopped" "${IN_FLIGHT:-}"
check "gateway exits during the run" "$((1 - GW_ALIVE))"
if ((DRIVER_RC != 0)) && ((FAILED == 0)); then
  echo "the driver exited with status $DRIVER_RC (see its output above)"
  FAILED=1
fi
printf '%-58s %6s\n' "unavailable while every instance was down:" "$(class unavailable_all_down)"
printf '%-58s %6s\n' "unexpected answers (see samples):" "$(class unexpected)"
printf '%-58s %6s\n' "oversize bodies whose 413 the client never saw:" "$(class refusal_unseen)"
printf '%-58s %6s\n' "corral_queue_waiting after traffic stopped:" "${QUEUE_WAITING:-?}"
if [[ -n $RSS_START && -n $RSS_END ]]; then
  awk -v s="$RSS_START" -v e="$RSS_END" -v p="$RSS_PEAK" -v i="$RSS_IDLE" -v w="$WARMUP_S" 'BEGIN {
    printf "gateway RSS: %.1f MiB after the %ds warm-up, %.1f MiB at the end: growth x%.2f" \
      " (peak VmHWM %.1f MiB; %.1f MiB after idling)\n", s / 1024, w, e / 1024, e / s, p / 1024, i / 1024
  }'
else
  echo "gateway RSS: not measured (the gateway was gone)"
fi
echo "gateway counters: retries=${RETRIES:-?} streams_interrupted: ${INTERRUPTED:-none} ejections: ${EJECTIONS:-none}"

if ((FAILED)); then
  KEEP=1
  # The gateway's access line for a few of the failed requests (none: it never read them).
  # awk stops by itself: `| head` would end the run with SIGPIPE under pipefail.
  ids=$(awk '$1 ~ /^(failed_unstarted|malformed_last_line|stream_cut|timed_out)$/ {
      for (i = 2; i <= NF; i++) if ($i ~ /^id=/) { print substr($i, 4); break }
      if (++n == 5) exit
    }' "$WORK/problems.log" 2>/dev/null || true)
  for id in $ids; do
    echo "gateway log for $id: $(awk -v id="request_id=$id" '$0 ~ id" " {print; exit}' "$WORK/gateway.log")"
  done
  echo "every failed request: $WORK/problems.log"
  echo "soak: FAIL"
  exit 1
fi
echo "soak: PASS"
