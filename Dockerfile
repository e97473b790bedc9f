# syntax=docker/dockerfile:1
#
# wsgate container image.
#
#   docker build -t wsgate .
#   docker run --rm -p 8080:8080 -p 8443:8443 wsgate
#   docker run --rm -v "$PWD/my.yaml:/etc/wsgate/wsgate.yaml:ro" -v "$PWD/certs:/etc/wsgate/certs:ro" wsgate
#   docker run --rm -v "$PWD/my.yaml:/etc/wsgate/wsgate.yaml:ro" wsgate --check   # validate, exit
#
# Graceful shutdown drains connections for up to `shutdown.drain_timeout` (30s by
# default) after SIGTERM, longer than `docker stop`'s 10s: run with
# `--stop-timeout 35` (Kubernetes: terminationGracePeriodSeconds >= 35).
#
# HEALTHCHECK asks the admin listener's `/healthz` (127.0.0.1:9090 in the default
# config) with bash's /dev/tcp, so the image needs no curl. A config that moves or
# removes `admin:` needs `--health-cmd ...` or `--no-healthcheck` at `docker run`.

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
    && groupadd --system --gid 10001 wsgate \
    && useradd --system --uid 10001 --gid wsgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin wsgate \
    && install -d -m 0755 /etc/wsgate /etc/wsgate/certs

COPY --from=build /out/wsgate /usr/local/bin/wsgate
# The default config is root-owned and read-only for wsgate: the process never
# needs to write its own configuration or certificates.
COPY --chmod=0644 config/container.yaml /etc/wsgate/wsgate.yaml

# Relative paths in the config (certs/server.pem) resolve under /etc/wsgate.
WORKDIR /etc/wsgate
# Read by the binary when --config is absent, so `docker run IMAGE --check` works too.
ENV WSGATE_CONFIG=/etc/wsgate/wsgate.yaml
# Declared after the files above, so a fresh anonymous volume starts with the
# default config; mount your own over either path.
VOLUME ["/etc/wsgate", "/etc/wsgate/certs"]

# 8080 plain ws, 8443 wss, 9090 admin (metrics, health). The admin listener binds
# 0.0.0.0 in config/container.yaml so Prometheus can scrape the container.
EXPOSE 8080 8443 9090

# One HTTP/1.1 GET, healthy on a `200` status line; no answer within --timeout is unhealthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r status <&3 && [[ $status == 'HTTP/1.1 200 '* ]]"]

# Numeric, so Kubernetes `runAsNonRoot` can verify it without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["wsgate"]
CMD ["--config", "/etc/wsgate/wsgate.yaml"]
