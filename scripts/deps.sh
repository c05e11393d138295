# Sourced by scripts/run, scripts/test and .ci/run: what building and testing need on a fresh
# Debian machine, installed when missing and when we may (as root, with apt-get).

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts: installing $* ..." >&2
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        return 1
    fi
}

# cmake builds zlib-ng for Pingora.
ensure_build_deps() {
    command -v cmake >/dev/null 2>&1 && return 0
    apt_install cmake || { echo "scripts: cmake is missing; install it (apt-get install cmake) and retry" >&2; return 1; }
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

# The tests connect as `postgres` without a password, as PostgreSQL is set up on the CI
# machines (trust on loopback).
pg_trusts_us() { psql -h 127.0.0.1 -p 5432 -U postgres -w -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }

# start_pg [restart]: starts Debian's first cluster (or restarts it, to read a new pg_hba.conf).
start_pg() {
    command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] || return 0
    local version
    version=$(ls /etc/postgresql | head -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main "${1:-start}" 2>/dev/null || true
    for _ in $(seq 1 30); do pg_up && return 0; sleep 0.5; done
}

# A PostgreSQL just installed from Debian asks for passwords over TCP: let `postgres` in from
# loopback without one (only on a cluster this script installed).
trust_loopback() {
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        [ -f "$hba" ] || continue
        grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" && continue
        sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    done
}

start_redis() {
    command -v redis-server >/dev/null 2>&1 || return 0
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do redis_up && return 0; sleep 0.25; done
}

# The end-to-end tests use a real PostgreSQL (127.0.0.1:5432, trust auth for `postgres`)
# and a real Redis (127.0.0.1:6379; tests also start their own redis-server on other ports).
# Started when stopped, installed when absent; a clear message and failure otherwise.
ensure_services() {
    if ! command -v pg_isready >/dev/null 2>&1 && apt_install postgresql postgresql-client; then
        trust_loopback
        start_pg restart
    fi
    pg_up || start_pg
    if ! pg_up; then
        echo "scripts: PostgreSQL is not reachable on 127.0.0.1:5432 (user postgres, trust auth); the tests need it" >&2
        return 1
    fi
    if ! pg_trusts_us; then
        echo "scripts: PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password; the tests need trust auth on loopback (pg_hba.conf: host all postgres 127.0.0.1/32 trust)" >&2
        return 1
    fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server || true
    redis_up || start_redis
    if ! redis_up; then
        echo "scripts: Redis is not reachable on 127.0.0.1:6379 and cannot be started; the tests need redis-server" >&2
        return 1
    fi
    echo "scripts: PostgreSQL and Redis are up" >&2
}

# The official OpenAI and Ollama Python clients, which the client tests drive against the
# gateway (tests/tests/python_clients.rs), installed from PyPI when missing.
ensure_python_clients() {
    python3 -c 'import openai, ollama' >/dev/null 2>&1 && return 0
    echo "scripts: installing the openai and ollama Python clients ..." >&2
    python3 -m pip install --quiet --disable-pip-version-check openai ollama >/dev/null 2>&1 ||
        { echo "scripts: could not install the openai and ollama Python packages (pip install openai ollama)" >&2; return 1; }
}

# promtool, from Debian's prometheus package (without its recommended node exporter): the
# observability test pipes the gateway's /metrics through `promtool check metrics`, and
# scripts/validate-deploy checks and unit-tests the alert rules with it.
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    if apt_install --no-install-recommends prometheus && command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    echo "scripts: promtool is missing and could not be installed; install it (apt-get install prometheus) and retry" >&2
    return 1
}

# The console's tests drive Debian's Chromium through chromedriver (apt: chromium,
# chromium-driver).
ensure_browser() {
    command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && return 0
    if apt_install --no-install-recommends chromium chromium-driver \
        && command -v chromedriver >/dev/null 2>&1; then
        return 0
    fi
    echo "scripts: chromium or chromedriver is missing and could not be installed; install them (apt-get install chromium chromium-driver) and retry" >&2
    return 1
}
