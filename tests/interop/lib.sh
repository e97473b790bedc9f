# shellcheck shell=bash
# shellcheck disable=SC2034  # BACKEND_ADDR, WSGATE_ADDR... are this library's outputs
# Shared helpers for the interop scripts in tests/interop (sourced, not run).
#
# Every process started here is recorded by its PID and stopped by that PID when the
# sourcing script exits (trap), never by name. Every wait is bounded.

INTEROP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$INTEROP_DIR/../.." && pwd)"
# Installed tools (python2.7 suite, npm packages) and per-run scratch, git-ignored.
CACHE_DIR="$INTEROP_DIR/.cache"
PYTHON="${PYTHON:-python3}"

_interop_pids=()
_interop_tmpdirs=()

interop_cleanup() {
    local pid i
    for ((i = ${#_interop_pids[@]} - 1; i >= 0; i--)); do
        pid="${_interop_pids[$i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${_interop_pids[@]}"; do
        # Bounded: 50 x 0.1 s, then SIGKILL.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    _interop_pids=()
    if [ -z "${INTEROP_KEEP_TMP:-}" ]; then
        for d in "${_interop_tmpdirs[@]}"; do rm -rf "$d"; done
    fi
}
trap interop_cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "error: $*" >&2
    exit 1
}

# make_workdir NAME: sets WORK_DIR to a fresh scratch folder under .cache/run, removed
# at exit (kept with INTEROP_KEEP_TMP=1). Not in $(...): the folder must be recorded
# in this shell.
make_workdir() {
    mkdir -p "$CACHE_DIR/run"
    WORK_DIR="$(mktemp -d "$CACHE_DIR/run/$1.XXXXXX")"
    _interop_tmpdirs+=("$WORK_DIR")
}

# start_bg LOG CMD...: start CMD in the background, stdout+stderr to LOG; sets BG_PID.
start_bg() {
    local log="$1"
    shift
    "$@" >"$log" 2>&1 &
    BG_PID=$!
    _interop_pids+=("$BG_PID")
}

# wait_for_match LOG PID REGEX SECONDS: wait until LOG has a line matching the extended
# REGEX (prints the first match) or fail if PID exits or the time runs out.
wait_for_match() {
    local log="$1" pid="$2" regex="$3" seconds="$4" line i
    for ((i = 0; i < seconds * 10; i++)); do
        line="$(grep -E -m1 "$regex" "$log" 2>/dev/null || true)"
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: process $pid exited before printing /$regex/; its log ($log):" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "error: no /$regex/ in $log within ${seconds}s; log:" >&2
    tail -n 30 "$log" >&2
    return 1
}

# require_python_websockets: the Python `websockets` library (>= 14) or a loud failure.
require_python_websockets() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Python 3 with pip is needed)"
    "$PYTHON" - <<'EOF' || die "Python websockets >= 14 is required for $PYTHON: $PYTHON -m pip install 'websockets>=14,<16' (scripts/test.sh installs it)"
import sys
import websockets
major, minor = (int(x) for x in websockets.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (14, 0) else 1)
EOF
}

# build_wsgate: sets WSGATE_BIN (a release build of this tree unless WSGATE_BIN is set).
build_wsgate() {
    if [ -n "${WSGATE_BIN:-}" ]; then
        [ -x "$WSGATE_BIN" ] || die "WSGATE_BIN=$WSGATE_BIN is not an executable"
        return 0
    fi
    echo "building wsgate (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --quiet --bin wsgate) || die "cargo build --release failed"
    WSGATE_BIN="$REPO_DIR/target/release/wsgate"
}

# start_backend DIR: start tests/interop/ws_backend.py; sets BACKEND_ADDR (IP:PORT).
start_backend() {
    local dir="$1" line
    require_python_websockets
    start_bg "$dir/backend.log" env PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
        "$PYTHON" "$INTEROP_DIR/ws_backend.py" --port 0
    BACKEND_PID=$BG_PID
    line="$(wait_for_match "$dir/backend.log" "$BACKEND_PID" '^listening ' 20)" || return 1
    BACKEND_ADDR="${line#listening }"
}

# start_wsgate DIR CONFIG_FILE [N]: start the wsgate binary and wait for its N (default 1)
# `listening addr=...` log lines; sets WSGATE_ADDRS (one per listener, in the order
# logged) and WSGATE_ADDR (the first).
start_wsgate() {
    local dir="$1" config="$2" n="${3:-1}" i
    start_bg "$dir/wsgate.log" env RUST_LOG="${WSGATE_RUST_LOG:-info}" "$WSGATE_BIN" --config "$config"
    WSGATE_PID=$BG_PID
    WSGATE_ADDRS=()
    for ((i = 0; i < 100; i++)); do
        mapfile -t WSGATE_ADDRS < <(grep -E ': listening addr=' "$dir/wsgate.log" |
            sed -E 's/.* listening addr=([^ ]+).*/\1/')
        [ "${#WSGATE_ADDRS[@]}" -ge "$n" ] && break
        kill -0 "$WSGATE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ "${#WSGATE_ADDRS[@]}" -lt "$n" ]; then
        echo "error: wsgate did not report $n listener(s) within 10s; its log:" >&2
        tail -n 30 "$dir/wsgate.log" >&2
        return 1
    fi
    WSGATE_ADDR="${WSGATE_ADDRS[0]}"
}

# closed_port: a loopback TCP port with nothing listening (bound, then released).
closed_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ensure_npm DIR: `npm ci` in tests/interop/DIR unless its node_modules already match
# its package-lock.json (stamp); fails loudly without node/npm.
ensure_npm() {
    local dir="$INTEROP_DIR/$1" stamp want
    command -v node >/dev/null 2>&1 || die "node not found (Node.js >= 20 is needed for tests/interop/$1)"
    command -v npm >/dev/null 2>&1 || die "npm not found (needed to install tests/interop/$1)"
    stamp="$dir/node_modules/.wsgate-lock.sha256"
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "already installed: npm packages of tests/interop/$1"
        return 0
    fi
    echo "npm ci in tests/interop/$1"
    # Never let an install step fetch a browser: Chromium is Debian's.
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed in tests/interop/$1"
    echo "$want" >"$stamp"
}

# start_node_echo DIR: start the Node `ws` echo server; sets BACKEND_ADDR (IP:PORT).
start_node_echo() {
    local dir="$1" line
    ensure_npm node
    start_bg "$dir/backend.log" node "$INTEROP_DIR/node/echo_server.mjs" --port 0
    BACKEND_PID=$BG_PID
    line="$(wait_for_match "$dir/backend.log" "$BACKEND_PID" '^listening ' 20)" || return 1
    BACKEND_ADDR="${line#listening }"
}
