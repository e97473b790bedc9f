#!/usr/bin/env bash
# The one test command of wsgate:
#
#   bash scripts/test.sh
#
# On a fresh Debian 12 machine with the Rust toolchain it installs what the tests
# need, then runs every check: formatting, clippy (warnings are errors), all test
# targets and the doc tests, then the interop and conformance suites of
# tests/interop (third-party clients, headless Chromium, Socket.IO, Jupyter Server,
# curl, Autobahn|Testsuite).
# Every step runs even if an earlier one failed, so one run shows everything that
# is wrong; the exit status is non-zero if any step failed.
# Fast and silent about installing when everything is already there.
#
# Environment:
#   FUZZ_SECONDS  seconds per fuzz target in the fuzz smoke step (default: 20).
#   PYTHON   interpreter for the interop tests (default: python3); the Rust tests
#            read the same variable.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PYTHON="${PYTHON:-python3}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

# The new asyncio client API (websockets.asyncio.client) used by
# tests/interop/python_echo.py appeared in websockets 13; the interop clients use send(text=True), new in 14.
readonly WEBSOCKETS_SPEC='websockets>=14,<16'

failed=()
summary=()

section() {
    printf '\n==== %s ====\n' "$*"
}

# run_step NAME CMD...: run a step, record its result, never abort the script.
run_step() {
    local name="$1" start rc
    shift
    section "$name"
    echo "+ $*"
    start=$SECONDS
    if "$@"; then rc=0; else rc=$?; fi
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '%-28s ok      %4ds' "$name" $((SECONDS - start)))")
    else
        summary+=("$(printf '%-28s FAILED  %4ds  (exit %d)' "$name" $((SECONDS - start)) "$rc")")
        failed+=("$name")
    fi
}

websockets_ok() {
    "$PYTHON" - <<'EOF' 2>/dev/null
import sys
import websockets
from websockets.asyncio.client import connect  # noqa: F401  (the API the tests use)
major, minor = (int(x) for x in websockets.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (14, 0) else 1)
EOF
}

# Python `websockets` for the interop tests. pip only: Debian 12's
# python3-websockets is 10.4 (too old, no websockets.asyncio) and would go into
# /usr/bin/python3's dist-packages rather than into the python3 on PATH (pyenv's).
ensure_python_websockets() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: $PYTHON not found; the interop tests need Python 3 with pip" >&2
        return 1
    fi
    if websockets_ok; then
        echo "already installed: websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)')"
        return 0
    fi
    echo "installing '$WEBSOCKETS_SPEC' with $("$PYTHON" -m pip --version)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "$WEBSOCKETS_SPEC" || {
        echo "error: pip could not install '$WEBSOCKETS_SPEC' for $PYTHON" >&2
        return 1
    }
    websockets_ok || {
        echo "error: websockets still not importable by $PYTHON after pip install" >&2
        return 1
    }
    echo "installed: websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)')"
}

# rustfmt and clippy are part of the CI toolchain; add them if a local one lacks them.
ensure_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing rust components: ${missing[*]}"
        rustup component add "${missing[@]}"
    fi
    cargo --version
    cargo fmt --version
    cargo clippy --version
}

# apt packages the tests use: promtool (Debian package prometheus) checks the metrics exposition;
# HAProxy stands in front of wsgate with send-proxy and send-proxy-v2 (tests/it/edge_proxy_haproxy.rs);
# `ip` (iproute2) brings loopback up in the network namespace of tests/it/edge_source.rs
# (`unshare` is util-linux, always there).
ensure_apt_packages() {
    local missing=()
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    if [ ${#missing[@]} -eq 0 ]; then
        echo "already installed: promtool, haproxy, ip"
        return 0
    fi
    echo "installing with apt-get: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages start their services; the tests only need the binaries.
    systemctl stop prometheus haproxy >/dev/null 2>&1 || true
    command -v promtool
    [ -x /usr/sbin/haproxy ]
}

# Fuzz smoke (fuzz/, cargo-fuzz): each target for FUZZ_SECONDS on its committed corpus, with
# one process (the long runs are documented in README.md). Needs the nightly toolchain; without
# one the step says so and passes. cargo-fuzz is installed the same way as in the README.
fuzz_smoke() {
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        echo "skipped: no nightly toolchain (rustup toolchain install nightly to run it)"
        return 0
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "installing cargo-fuzz with cargo install --locked"
        cargo install cargo-fuzz --locked --quiet || {
            echo "error: cargo install cargo-fuzz failed" >&2
            return 1
        }
    fi
    cargo +nightly fuzz --version
    local target rc=0 targets log scratch
    targets=$(cd fuzz && cargo +nightly fuzz list) || return 1
    log=$(mktemp)
    for target in $targets; do
        echo "-- fuzz target $target (${FUZZ_SECONDS}s)"
        # New inputs go to a scratch directory (libFuzzer writes to the first one), so the
        # committed corpus stays as it is.
        scratch=$(mktemp -d)
        if (cd fuzz && cargo +nightly fuzz run "$target" "$scratch" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -print_final_stats=1) >"$log" 2>&1; then
            grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' "$log" || true
        else
            # cargo fuzz exits non-zero on a crash, a leak or a timeout; the log names the artifact.
            tail -n 40 "$log"
            echo "error: fuzz target $target failed" >&2
            rc=1
        fi
        rm -rf "$scratch"
    done
    rm -f "$log"
    return "$rc"
}

run_step "apt packages" ensure_apt_packages
run_step "python websockets" ensure_python_websockets
run_step "rust toolchain" ensure_rust_components
run_step "cargo fmt --check" cargo fmt --all --check
run_step "cargo clippy" cargo clippy --all-targets -- -D warnings
run_step "cargo test --all-targets" cargo test --all-targets
# --all-targets leaves out doc tests; run them too (a library is always present).
run_step "cargo test --doc" cargo test --doc
run_step "fuzz smoke" fuzz_smoke
# Interop and conformance (tests/interop/): Python `websockets` and Node `ws` clients, a
# real headless Chromium over wss (and with the page through wsgate over h2), real socket apps (Socket.IO servers with the Node and
# browser clients, Jupyter Server with a kernel), plain HTTP with curl (SSE, bodies), and
# Autobahn|Testsuite (direct vs through wsgate), all against a release build of wsgate.
# install.sh brings Debian's chromium and curl, the npm packages (npm ci), Jupyter
# Server (pip, pinned) and the Python 2.7 suite; each script prints its own table.
run_step "interop install" bash tests/interop/install.sh
run_step "cargo build --release" cargo build --release --bin wsgate
run_step "interop: clients" bash tests/interop/clients.sh
run_step "interop: browser (wss)" bash tests/interop/browser.sh
# The same page loaded through wsgate over HTTP/2, its WebSockets as RFC 8441 streams.
run_step "interop: browser (h2)" env BROWSER_VIA=h2 bash tests/interop/browser.sh
run_step "interop: socket.io" bash tests/interop/socketio.sh
run_step "interop: jupyter" bash tests/interop/jupyter.sh
run_step "interop: http (curl)" bash tests/interop/http.sh
run_step "interop: admin api" bash tests/interop/admin_api.sh
run_step "interop: status page" bash tests/interop/status_page.sh
run_step "interop: autobahn" bash tests/interop/autobahn.sh
# deploy/kubernetes/ against the Kubernetes schemas (pinned kubernetes-validate, offline),
# the probes against the ConfigMap's admin.bind, and `wsgate --check` on its config.
run_step "kubernetes manifests" bash tests/kubernetes/validate.sh
# The container build-and-run checks (tests/container/run.sh) are a separate step: a cold
# image build costs several minutes of CI's two cores; README "Running in containers".

section "summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    printf '\nFAILED:'
    printf ' [%s]' "${failed[@]}"
    printf '\n'
    exit 1
fi
printf '\nall checks passed\n'
