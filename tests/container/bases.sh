#!/usr/bin/env bash
# Makes the two base images the Dockerfile pins, locally, with no registry:
#
#   bash tests/container/bases.sh      # DOCKER_HOST as for `docker build`
#
#   localhost/wsgate-runtime:bookworm          libc6 + libgcc-s1 extracted from Debian 12
#                                              packages, nothing else: no shell, no package
#                                              manager, no CA bundle (a "distroless"-like base)
#   localhost/wsgate-runtime:bookworm-minbase  `mmdebstrap --variant=minbase` (bash, apt, ...):
#                                              the larger alternative, measured in the README
#   localhost/wsgate-builder:RUST-bookworm     minbase + gcc + libc6-dev + this machine's
#                                              Rust toolchain (RUST = `rustc --version`) +
#                                              this machine's CA bundle, so cargo reaches
#                                              crates.io through the same network path
#
# Both come from `mmdebstrap` (Debian package) over the apt mirror this machine uses and
# go in with `docker import`. An image that exists already is kept (BASES_REBUILD=1 makes
# them anew). With a registry, the same roles are filled by pinned public images; see
# README "Running in containers".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DOCKER="${DOCKER:-docker}"
MIRROR="${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# The toolchain the Dockerfile pins; the host's must be this one (a pin that is not
# checked would drift).
RUST_VERSION="$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)"
RUNTIME=localhost/wsgate-runtime:bookworm
RUNTIME_MINBASE=localhost/wsgate-runtime:bookworm-minbase
BUILDER="localhost/wsgate-builder:${RUST_VERSION}-bookworm"

have_image() { [ -z "${BASES_REBUILD:-}" ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

command -v mmdebstrap >/dev/null || {
    echo "error: mmdebstrap missing (apt-get install mmdebstrap)" >&2
    exit 1
}
host_rust="$(rustc --version | awk '{print $2}')"
if [ "$host_rust" != "$RUST_VERSION" ]; then
    echo "error: the Dockerfile pins Rust $RUST_VERSION, this machine has $host_rust;" \
        "change ARG RUST_VERSION (and the BUILDER tag) in the Dockerfile" >&2
    exit 1
fi
toolchain="$(rustc --print sysroot)"
work="$(mktemp -d "${TMPDIR:-/tmp}/wsgate-bases.XXXXXX")"
trap 'rm -rf "$work"' EXIT

debian_version() { tar -xOf "$1" ./etc/debian_version 2>/dev/null || echo unknown; }

if ! have_image "$RUNTIME"; then
    echo "-- $RUNTIME: libc6 + libgcc-s1 (mmdebstrap --variant=extract)"
    # Documentation, man pages and locales are not needed to run one binary.
    mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1 \
        --dpkgopt='path-exclude=/usr/share/*' \
        bookworm "$work/runtime.tar" "$MIRROR"
    "$DOCKER" import --change 'LABEL org.opencontainers.image.base.name="debian:bookworm libc6+libgcc-s1"' \
        --change "LABEL org.debian.version=$(debian_version "$work/runtime.tar")" \
        "$work/runtime.tar" "$RUNTIME" >/dev/null
    rm -f "$work/runtime.tar"
fi

if ! have_image "$RUNTIME_MINBASE" || ! have_image "$BUILDER"; then
    echo "-- $RUNTIME_MINBASE (mmdebstrap --variant=minbase)"
    mmdebstrap --quiet --variant=minbase --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$work/minbase.tar" "$MIRROR"
    "$DOCKER" import --change "LABEL org.debian.version=$(debian_version "$work/minbase.tar")" \
        "$work/minbase.tar" "$RUNTIME_MINBASE" >/dev/null
    rm -f "$work/minbase.tar"

    echo "-- $BUILDER: minbase + gcc + libc6-dev + Rust $RUST_VERSION from $toolchain"
    # The toolchain without its docs (share/, 800 MB) goes to /usr/local/rust; the CA
    # bundle is this machine's, which holds any extra CA its network path needs.
    mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="mkdir -p \"\$1/usr/local/rust\" && cp -a '$toolchain/bin' '$toolchain/lib' '$toolchain/libexec' \"\$1/usr/local/rust/\"" \
        --customize-hook="mkdir -p \"\$1/etc/ssl/certs\" && cp /etc/ssl/certs/ca-certificates.crt \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
        bookworm "$work/builder.tar" "$MIRROR"
    "$DOCKER" import \
        --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change "LABEL org.debian.version=$(debian_version "$work/builder.tar") rust.version=$RUST_VERSION" \
        "$work/builder.tar" "$BUILDER" >/dev/null
    rm -f "$work/builder.tar"
fi
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}  {{.ID}}' | grep wsgate- || true
