#!/usr/bin/env bash
# Backend throughput: conversation list and message post, through the gateway, against a
# fresh PostgreSQL database and a fake Ollama (no model time). Release builds.
#   bench/backend.sh [--duration 10] [--list-concurrency 32] [--post-concurrency 16] [--direct]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_build_deps
ensure_services
cargo build --release --workspace --bins
exec target/release/backend-bench "$@"
