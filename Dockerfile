# syntax=docker/dockerfile:1
# Corral: both binaries (`gateway`, `backend`) in one slim image that runs as a non-root user.
#
#   docker build -t corral .
#   docker run --rm -p 8080:8080 -e OLLAMA_BASE_URL=http://gpu-1:11434 corral
#   docker run --rm -e DATABASE_URL=... corral backend serve
#
# The default command is the gateway with the image's conf/gateway.toml and policies/;
# every setting can be overridden by its environment variable (see the README). The backend's
# migrations are compiled into its binary (refinery's embed_migrations!): nothing to copy.

# Cargo.lock needs Rust 1.95 (the newest rust-version among the locked crates). Bookworm on
# both stages, so the binaries link against the glibc they run with.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# cmake and make build zlib-ng for Pingora (libz-ng-sys); make also builds jemalloc.
# Unpinned like the runtime stage's packages (why: see there).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target directories are build caches (BuildKit), so a rebuild after a code
# change recompiles only the workspace; the binaries are copied out of the cache in the same
# step. --locked: exactly the dependency versions of Cargo.lock, or fail.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p backend \
    && install -D -m 0755 target/release/gateway target/release/backend -t /out/bin/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="Edge gateway for pools of Ollama servers (gateway) and its conversations backend (backend)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# ca-certificates: JWKS and PostgreSQL/Redis over TLS; curl: the HEALTHCHECK below (the
# slim base has no HTTP client). Versions are not pinned: they follow the base image's
# Debian release, and bookworm's archive drops superseded versions, which would break the
# build on each point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 corral \
    && useradd --system --uid 10001 --gid corral --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin corral
COPY --from=build /out/bin/ /usr/local/bin/
# The repository's layout, so the gateway's defaults (conf/gateway.toml, policies/) and the
# backend's (conf/backend.toml) work from this directory. Owned by root: the service reads
# them and never writes them (mount your own over conf/ and policies/).
WORKDIR /opt/corral
COPY conf/gateway.toml conf/backend.toml conf/
COPY policies/ policies/
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 8081
# Liveness of the gateway (the backend's services override it: its port is 8081). Only
# /healthz, not /readyz: a pool with no healthy instance is not a reason to restart the gateway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "2", "http://127.0.0.1:8080/healthz"]
# SIGTERM: /readyz turns 503, requests in flight finish (at most server.grace_period_s, 30 s),
# then the gateway exits (at once when idle). Give `docker stop` a --time (compose:
# stop_grace_period) above the grace period, or long streams are cut.
STOPSIGNAL SIGTERM
CMD ["gateway", "--config", "conf/gateway.toml"]
