# syntax=docker/dockerfile:1
#
# attache: multi-stage image. The builder compiles a release binary from the
# locked dependency set; the runtime stage is Debian slim with the binary, a
# non-root user and a container-ready copy of config/quickstart.yaml.
#
#   docker build -t attache .
#   docker run --rm -p 10000:10000 attache
#   curl localhost:10000/                 -> hello from attache
#
# Mount your own config over /etc/attache/attache.yaml (or pass another path in
# CMD); `attache validate --config FILE` checks it first.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- builder
FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Manifests first, then sources. `benches/` is needed because Cargo.toml declares
# a [[bench]] target; cargo refuses a manifest whose targets are missing.
COPY Cargo.toml Cargo.lock build.rs ./
COPY filters ./filters
# The test kit is a dev-dependency only, but cargo loads every workspace member.
COPY testkit ./testkit
COPY src ./src
COPY benches ./benches

# The registry and target directories are BuildKit cache mounts, so rebuilds only
# recompile what changed; the binary is copied out of the cache in the same step.
# No .git in the build context: `--build-arg ATTACHE_GIT_COMMIT=$(git rev-parse
# --short=12 HEAD)` puts the commit in `attache --version`.
ARG ATTACHE_GIT_COMMIT=
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin attache \
 && install -D -m 0755 target/release/attache /out/attache

# A container-ready config: the quickstart, with the data listener on all
# interfaces so `docker run -p 10000:10000` reaches it. The admin endpoint stays
# on loopback inside the container (the HEALTHCHECK below reaches it there): it
# serves /config_dump and the POST operations, and `attache validate` refuses a
# non-loopback admin address unless `admin.token` is set. To publish it, run with
# both ATTACHE_ADMIN_ADDRESS=0.0.0.0:9901 and ATTACHE_ADMIN_TOKEN=<secret>; every
# POST then needs `Authorization: Bearer <secret>`.
# Note: the quickstart's `admin_passthrough` route proxies /stats* on the data
# listener to the admin endpoint; drop it from configs you publish.
COPY config/quickstart.yaml /out/attache.yaml
RUN sed -i \
      -e 's|address: 127.0.0.1:10000|address: 0.0.0.0:10000|' \
      -e 's|^  address: 127.0.0.1:9901$|  address: ${ATTACHE_ADMIN_ADDRESS:-127.0.0.1:9901}\n  token: ${ATTACHE_ADMIN_TOKEN:-}|' \
      /out/attache.yaml \
 && grep -q 'address: 0.0.0.0:10000' /out/attache.yaml \
 && grep -q 'ATTACHE_ADMIN_TOKEN' /out/attache.yaml \
 && /out/attache validate --config /out/attache.yaml

# ---------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE}

# curl is only for the HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 attache \
 && useradd --system --uid 10001 --gid attache --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin attache

COPY --from=builder /out/attache /usr/local/bin/attache
COPY --from=builder --chown=root:attache --chmod=0640 /out/attache.yaml /etc/attache/attache.yaml

# Numeric, so Kubernetes can check `runAsNonRoot: true` without reading
# /etc/passwd (it refuses to verify a user name).
USER 10001:10001

# 10000: the quickstart HTTP listener (HTTP/1.1 and HTTP/2 cleartext).
# 9901 (admin) is loopback-only by default and therefore not exposed.
EXPOSE 10000

# /ready is 200 while serving and 503 while draining or after
# POST /healthcheck/fail. Adjust the port if you move admin.address.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:9901/ready || exit 1

# SIGTERM (docker stop) drains in-flight requests for up to drain_timeout
# (default 10s), then exits 0. Give `docker stop -t` / the orchestrator's grace
# period a few seconds more than drain_timeout.
STOPSIGNAL SIGTERM

ENTRYPOINT ["attache"]
CMD ["run", "--config", "/etc/attache/attache.yaml"]
