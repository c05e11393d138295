# Sourced by scripts/run and scripts/test: installs what building Pingora needs on a fresh
# Debian machine (cmake for zlib-ng), when missing and when we may.
ensure_build_deps() {
    if command -v cmake >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts: installing cmake (needed to build Pingora)" >&2
        apt-get update -qq >/dev/null && apt-get install -y -qq cmake >/dev/null
    else
        echo "scripts: cmake is missing; install it (apt-get install cmake) and retry" >&2
        return 1
    fi
}

# Starts PostgreSQL and Redis when they are installed but not running (later features and
# their tests use them); says clearly what is missing otherwise. Never fatal on its own.
ensure_services() {
    if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
        fi
    fi
    if command -v pg_isready >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        echo "scripts: PostgreSQL is up on 127.0.0.1:5432" >&2
    else
        echo "scripts: PostgreSQL is not reachable on 127.0.0.1:5432 (not needed by the current tests)" >&2
    fi
    if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        if command -v redis-server >/dev/null 2>&1; then
            redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
            sleep 0.5
        fi
    fi
    if command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "scripts: Redis is up on 127.0.0.1:6379" >&2
    else
        echo "scripts: Redis is not reachable on 127.0.0.1:6379 (not needed by the current tests)" >&2
    fi
}
