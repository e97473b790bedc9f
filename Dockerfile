# syntax=docker/dockerfile:1
#
# wsgate container image.
#
#   docker build -t wsgate .
#   docker run --rm -p 8080:8080 -p 8443:8443 wsgate
#   docker run --rm -v "$PWD/my.yaml:/etc/wsgate/wsgate.yaml:ro" -v "$PWD/certs:/etc/wsgate/certs:ro" wsgate
#   docker run --rm wsgate --check --config /etc/wsgate/wsgate.yaml   # validate a config and exit
#
# Graceful shutdown drains connections for up to `shutdown.drain_timeout` (30s by
# default) after SIGTERM, longer than `docker stop`'s 10s: run with
# `--stop-timeout 35` (Kubernetes: terminationGracePeriodSeconds >= 35).
#
# No HEALTHCHECK yet: the image has no curl, and `--check` only validates the config
# file, which says nothing about a running process. Add one on the admin `/healthz`
# endpoint once it exists (see design.md section 6), probed by the wsgate binary
# itself, not by a tool installed for the purpose.

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Registry and target directory live in BuildKit cache mounts, so a rebuild after a
# source change recompiles only wsgate, not its dependencies. The cache is not part
# of any layer, hence the copy out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/wsgate /out/wsgate

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the system trust store, for wss:// backends and anything else
# that verifies a public certificate.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin wsgate \
    && install -d -m 0755 /etc/wsgate /etc/wsgate/certs

COPY --from=build /out/wsgate /usr/local/bin/wsgate
# The default config is root-owned and read-only for wsgate: the process never
# needs to write its own configuration or certificates.
COPY --chmod=0644 config/wsgate.yaml /etc/wsgate/wsgate.yaml

# Relative paths in the config (certs/server.pem) resolve under /etc/wsgate.
WORKDIR /etc/wsgate
# Declared after the files above, so a fresh anonymous volume starts with the
# default config; mount your own over either path.
VOLUME ["/etc/wsgate", "/etc/wsgate/certs"]

# 8080 plain ws, 8443 wss, 9090 admin (metrics, health). The admin listener binds
# 127.0.0.1 by default: set `admin.bind: "0.0.0.0:9090"` to reach it from outside.
EXPOSE 8080 8443 9090

# Numeric, so Kubernetes `runAsNonRoot` can verify it without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["wsgate"]
CMD ["--config", "/etc/wsgate/wsgate.yaml"]
