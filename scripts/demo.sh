#!/usr/bin/env bash
# `./scripts/run --demo`: the gateway in front of two simulated GPUs, to try by hand.
#
# Builds the gateway and the fake Ollama (release, as ./scripts/run does), starts two
# `fake-ollama --gpu` instances on free loopback ports (both have llama3.2:3b and
# qwen2.5:7b; the first has llama3.2:3b loaded, the second qwen2.5:7b; each keeps prompt
# caches per slot and streams 40 tokens at 20 ms each) and the gateway in front of them
# with a config written to a temp dir (the model routes without authentication, the
# repository's policies/, metrics on). The console (/console/) and its admin API need a
# credential: the demo makes a random JWT_SECRET and prints an operator token to paste.
# Prints the gateway's URL and curl lines to try, then stays in the foreground until
# Ctrl-C, which stops all three processes (so does SIGTERM, or one of them dying).
#
# Environment:
#   CORRAL_DEMO_PORT      the gateway's port (default 8080, else the next free one)
#   CORRAL_DEMO_NO_BUILD  set to 1 to use the binaries already built
#   CORRAL_DEMO_BIN_DIR   where the binaries are (default target/release)
#   GATEWAY_POOL_BALANCE, LOG_LEVEL, LOG_FORMAT are passed on to the gateway; the rest of
#   the environment is not, so a JWT_SECRET or OLLAMA_BASE_URL set in the shell does not
#   change the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${CORRAL_DEMO_BIN_DIR:-target/release}
MODELS=llama3.2:3b,qwen2.5:7b
TOKENS=40

if [[ ${CORRAL_DEMO_NO_BUILD:-} != 1 ]]; then
  . scripts/deps.sh
  ensure_build_deps
  cargo build --release -p gateway -p corral-tests --bin gateway --bin fake-ollama
fi
for binary in gateway fake-ollama; do
  if [[ ! -x $BIN/$binary ]]; then
    echo "demo: $BIN/$binary is missing: build it (cargo build --release -p gateway -p corral-tests --bins)" >&2
    exit 1
  fi
done
command -v curl >/dev/null 2>&1 || { echo "demo: curl is needed (apt-get install curl)" >&2; exit 1; }
command -v openssl >/dev/null 2>&1 || { echo "demo: openssl is needed (apt-get install openssl)" >&2; exit 1; }

# An HS256 JWT for the console: operator "demo" of org "demo", valid for a day.
SECRET=$(openssl rand -hex 32)
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwt_payload=$(printf '{"sub":"demo","org":"demo","role":"operator","exp":%d}' $(($(date +%s) + 86400)) | b64url)
jwt_unsigned="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url).$jwt_payload"
OPERATOR_TOKEN="$jwt_unsigned.$(printf '%s' "$jwt_unsigned" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)"

WORK=$(mktemp -d -t corral-demo.XXXXXX)
PIDS=()
NAMES=()
# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -INT "$pid" 2>/dev/null || true; done
  # The gateway and the fakes exit at once on SIGINT; anything still there after 3 s is killed.
  for _ in $(seq 1 30); do
    local alive=0
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT
trap 'exit 143' TERM

# A port nothing listens on yet: 8080 and up (bash's /dev/tcp connects when one does).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local port
  for port in $(seq 8080 8180); do
    port_in_use "$port" || { echo "$port"; return 0; }
  done
  echo "demo: no free port in 8080-8180; set CORRAL_DEMO_PORT" >&2
  return 1
}

# start_fake NAME LOADED_MODEL: sets FAKE_URL.
start_fake() {
  local name=$1 out="$WORK/$1.out"
  "$BIN/fake-ollama" --gpu --listen 127.0.0.1:0 --models "$MODELS" --loaded "$2" \
    --tokens "$TOKENS" --gen-ms-per-token 20 --num-parallel 4 --max-loaded-models 2 \
    --keep-alive 30m >"$out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  NAMES+=("$name")
  for _ in $(seq 1 100); do
    FAKE_URL=$(sed -n 's/^listening on //p' "$out")
    [[ -n $FAKE_URL ]] && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "demo: fake-ollama ($name) did not start:" >&2
  cat "$WORK/$name.err" >&2
  exit 1
}

start_fake gpu-1 llama3.2:3b
GPU1=$FAKE_URL
start_fake gpu-2 qwen2.5:7b
GPU2=$FAKE_URL

PORT=${CORRAL_DEMO_PORT:-$(pick_port)}
URL="http://127.0.0.1:$PORT"
cat >"$WORK/gateway.toml" <<TOML
# Written by ./scripts/run --demo: two simulated GPUs; the model routes need no credential
# (their chains leave out "auth"), the console and admin API take the demo's operator token.
[server]
listen = "127.0.0.1:$PORT"
grace_period_s = 2
pid_file = "$WORK/gateway.pid"
upgrade_sock = "$WORK/upgrade.sock"

[metrics]
enabled = true

[pool]
instances = ["$GPU1", "$GPU2"]
max_inflight_per_instance = 4      # the fakes' --num-parallel
health_interval_ms = 1000          # notice loads and unloads within a second

[policies]
dir = "$ROOT/policies"

[[routes]]
prefix = "/api/"
target = "ollama"
plugins = ["request_id", "cors", "rate_limit", "body_limit", "model_guard", "model_body", "model_access", "quota"]

[[routes]]
prefix = "/v1/"
target = "ollama"
plugins = ["request_id", "cors", "rate_limit", "body_limit", "model_guard", "model_body", "model_access", "quota"]
TOML
env -i PATH="$PATH" HOME="${HOME:-/tmp}" JWT_SECRET="$SECRET" \
  ${GATEWAY_POOL_BALANCE:+GATEWAY_POOL_BALANCE="$GATEWAY_POOL_BALANCE"} \
  ${LOG_LEVEL:+LOG_LEVEL="$LOG_LEVEL"} ${LOG_FORMAT:+LOG_FORMAT="$LOG_FORMAT"} \
  "$BIN/gateway" --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
NAMES+=(gateway)

# Ready when both instances passed a health check (which also learns what each has loaded).
ready=0
for _ in $(seq 1 300); do
  if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then break; fi
  if curl -fsS --max-time 1 "$URL/readyz" 2>/dev/null | grep -q '"healthy": *2'; then
    ready=1
    break
  fi
  sleep 0.1
done
if ((!ready)); then
  echo "demo: the gateway did not become ready on $URL; its log:" >&2
  tail -n 20 "$WORK/gateway.log" >&2
  exit 1
fi

SYSTEM="You are the Corral demo assistant. Two simulated GPUs stand behind this gateway; each keeps the tokens of recent conversations in prompt-cache slots, so the next turn of a conversation evaluates only what is new."
REPLY=""
for i in $(seq 1 "$TOKENS"); do REPLY+="tok$i "; done
FIRST="{\"model\":\"llama3.2:3b\",\"messages\":[{\"role\":\"system\",\"content\":\"$SYSTEM\"},{\"role\":\"user\",\"content\":\"hello\"}]}"
SECOND="{\"model\":\"llama3.2:3b\",\"messages\":[{\"role\":\"system\",\"content\":\"$SYSTEM\"},{\"role\":\"user\",\"content\":\"hello\"},{\"role\":\"assistant\",\"content\":\"$REPLY\"},{\"role\":\"user\",\"content\":\"tell me more\"}]}"

cat <<EOF
Corral demo: the gateway at $URL, in front of two simulated GPUs
  gpu-1  $GPU1  llama3.2:3b loaded, qwen2.5:7b installed
  gpu-2  $GPU2  qwen2.5:7b loaded, llama3.2:3b installed
  (no credential needed for the model routes; policies from policies/; gateway log: $WORK/gateway.log)

Stream a reply, one JSON line per token; the last line counts the prompt tokens evaluated (prompt_eval_count):
  curl -N $URL/api/chat -d '$FIRST'

The same conversation's next turn, with the reply sent back: its history is in the prompt cache, so prompt_eval_count drops to the new tokens only:
  curl -N $URL/api/chat -d '$SECOND'

Console: $URL/console/  (sign in with this operator token, valid for a day:)
  $OPERATOR_TOKEN
Metrics: $URL/metrics
Ready:   $URL/readyz
Ctrl-C stops the gateway and both GPUs.
EOF

# In the foreground until a signal, or until one of the three exits. A terminal's Ctrl-C
# reaches all of them: the fakes then exit 0 by themselves, which is a stop, not a failure
# (and the only way this shell hears of it when it was started with SIGINT ignored).
set +e
wait -n
status=$?
if ((status == 0)); then
  echo "demo: stopping"
  exit 0
fi
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    echo "demo: ${NAMES[$i]} exited with status $status; stopping" >&2
    [[ ${NAMES[$i]} == gateway ]] && tail -n 20 "$WORK/gateway.log" >&2
  fi
done
exit 1
