#
# wsgate container image.
#
#   bash tests/container/bases.sh       # the two pinned base images, made locally
#   DOCKER_BUILDKIT=1 docker build --network host -t wsgate .
#   docker run --rm -p 8080:8080 -p 8443:8443 wsgate
#   docker run --rm -v "$PWD/my.yaml:/etc/wsgate/wsgate.yaml:ro" -v "$PWD/certs:/etc/wsgate/certs:ro" wsgate
#   docker run --rm -v "$PWD/my.yaml:/etc/wsgate/wsgate.yaml:ro" wsgate --check   # validate, exit
#   bash tests/container/run.sh         # build, then the run checks (README "Running in containers")
#
# No `# syntax=` line: it would fetch a frontend image from a registry on every build;
# the built-in frontend builds the same layers.
#
# Graceful shutdown drains connections for up to `shutdown.drain_timeout` (30s by
# default) after SIGTERM, longer than `docker stop`'s 10s: run with
# `--stop-timeout 35` (Kubernetes: terminationGracePeriodSeconds > drain + preStop).

# Both bases are pinned: an exact Rust release for the builder, Debian 12 for the runtime.
# tests/container/bases.sh makes them from Debian packages with mmdebstrap (no registry
# needed) and refuses a host toolchain other than RUST_VERSION. With a registry, pass
# pinned public images instead, by digest, e.g.
#   --build-arg BUILDER=rust:1.95.0-slim-bookworm@sha256:<digest>
#   --build-arg RUNTIME=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
ARG RUST_VERSION=1.95.0
ARG BUILDER=localhost/wsgate-builder:${RUST_VERSION}-bookworm
ARG RUNTIME=localhost/wsgate-runtime:bookworm

# ---- build ------------------------------------------------------------------
FROM ${BUILDER} AS build
WORKDIR /src
# Dependencies first, against stub sources: this layer depends on the manifests only,
# so a change to src/ recompiles wsgate alone and a change elsewhere (README, tests)
# rebuilds nothing. The stub's own artefacts are removed so the real sources, whose
# copied mtimes may be older than them, are always compiled.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked --bin wsgate \
    && rm -rf src target/release/wsgate* target/release/deps/wsgate-* \
        target/release/deps/libwsgate-* target/release/.fingerprint/wsgate-*
COPY src ./src
RUN cargo build --release --locked --bin wsgate \
    && install -D -m 0755 target/release/wsgate /out/wsgate

# ---- runtime ----------------------------------------------------------------
# libc6 + libgcc-s1 and nothing else: no shell, no package manager, no CA bundle. wsgate
# verifies wss:// backends against the roots compiled into it (webpki-roots, Mozilla's
# list) plus a route's `tls_ca`, so it needs no system trust store.
FROM ${RUNTIME}
COPY --from=build /out/wsgate /usr/local/bin/wsgate
# The default config is root-owned and read-only for wsgate: the process never writes
# its own configuration or certificates. Mount your own file over it (read-only), and
# certificates under /etc/wsgate/certs. No VOLUME: it would leave anonymous volumes
# behind on every run and keep /etc/wsgate writable under --read-only.
COPY --chmod=0644 config/container.yaml /etc/wsgate/wsgate.yaml

# Relative paths in the config (certs/server.pem) resolve under /etc/wsgate.
WORKDIR /etc/wsgate
# Read by the binary when --config is absent, so `docker run IMAGE --check` and the
# HEALTHCHECK's `wsgate health` read the same file.
ENV WSGATE_CONFIG=/etc/wsgate/wsgate.yaml

# 8080 plain ws, 8443 wss, 9090 admin (metrics, health). The admin listener binds
# 0.0.0.0 in config/container.yaml so Prometheus can scrape the container.
EXPOSE 8080 8443 9090

# `wsgate health` GETs /healthz from the admin listener that admin.bind of the config
# names (a wildcard bind is asked on loopback): no shell, no curl, no hard-coded port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["wsgate", "health"]

# Numeric, so Kubernetes `runAsNonRoot` can verify it without reading /etc/passwd
# (the runtime base has none).
USER 10001:10001
ENTRYPOINT ["wsgate"]
CMD ["--config", "/etc/wsgate/wsgate.yaml"]
