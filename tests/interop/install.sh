#!/usr/bin/env bash
# Installs what the interop scripts in tests/interop need, on a fresh Debian 12 machine
# (as root, as CI runs); quick and quiet when everything is already there:
#   - Debian's chromium (apt-get; never a browser downloaded by a test tool),
#   - Debian's curl (apt-get), for http.sh,
#   - Python `websockets` >= 14 for $PYTHON (pip),
#   - Jupyter Server and ipykernel at the versions pinned in jupyter-requirements.txt
#     for $PYTHON (pip), for jupyter.sh,
#   - schemathesis at the version pinned in admin_api-requirements.txt for $PYTHON (pip),
#     for admin_api.sh,
#   - the npm packages of tests/interop/node (ws), tests/interop/browser
#     (playwright-core) and tests/interop/socketio (socket.io, socket.io-client,
#     playwright-core), with `npm ci` from the committed package-lock.json files,
#   - Autobahn|Testsuite for Python 2.7 (autobahn.sh --install-only).
# Fails loudly on anything it cannot install (no Node.js >= 20, no Python 2.7, ...).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly WEBSOCKETS_SPEC='websockets>=14,<16'

ensure_chromium() {
    local chromium="${CHROMIUM:-/usr/bin/chromium}"
    if [ -x "$chromium" ]; then
        echo "already installed: $("$chromium" --version 2>/dev/null | head -n1)"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "$chromium missing and not root: apt-get install -y chromium"
    echo "installing Debian's chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq || die "apt-get update failed"
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null ||
        die "apt-get install chromium failed"
    [ -x "$chromium" ] || die "chromium installed but $chromium is missing"
    echo "installed: $("$chromium" --version 2>/dev/null | head -n1)"
}

ensure_curl() {
    if command -v curl >/dev/null 2>&1; then
        echo "already installed: $(curl --version | head -n1 | cut -d' ' -f1-2)"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "curl missing and not root: apt-get install -y curl"
    echo "installing Debian's curl with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq || die "apt-get update failed"
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq curl >/dev/null || die "apt-get install curl failed"
}

# jupyter_ok: every `name==version` line of jupyter-requirements.txt is installed for $PYTHON.
jupyter_ok() {
    pinned_ok "$INTEROP_DIR/jupyter-requirements.txt"
}

# pinned_ok FILE: every `name==version` line of FILE is installed for $PYTHON.
pinned_ok() {
    "$PYTHON" - "$1" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            sys.exit(1)
EOF
}

ensure_jupyter() {
    if jupyter_ok; then
        echo "already installed: $(grep -v '^#' "$INTEROP_DIR/jupyter-requirements.txt" | tr '\n' ' ')"
        return 0
    fi
    echo "installing tests/interop/jupyter-requirements.txt for $PYTHON"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        -r "$INTEROP_DIR/jupyter-requirements.txt" || die "pip could not install jupyter-requirements.txt"
    jupyter_ok || die "jupyter-requirements.txt still not satisfied for $PYTHON after pip install"
}

ensure_schemathesis() {
    local req="$INTEROP_DIR/admin_api-requirements.txt"
    if pinned_ok "$req"; then
        echo "already installed: $(grep -v '^#' "$req" | tr '\n' ' ')"
        return 0
    fi
    echo "installing tests/interop/admin_api-requirements.txt for $PYTHON"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        -r "$req" || die "pip could not install admin_api-requirements.txt"
    pinned_ok "$req" || die "admin_api-requirements.txt still not satisfied for $PYTHON after pip install"
}

ensure_python_websockets() {
    if (require_python_websockets) 2>/dev/null; then
        echo "already installed: websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)')"
        return 0
    fi
    echo "installing '$WEBSOCKETS_SPEC' for $PYTHON"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "$WEBSOCKETS_SPEC" || die "pip could not install '$WEBSOCKETS_SPEC'"
    require_python_websockets
}

ensure_node() {
    command -v node >/dev/null 2>&1 || die "node not found: Node.js >= 20 is needed (playwright-core, ws)"
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$major" -ge 20 ] || die "Node.js $(node --version) is too old: >= 20 is needed"
    echo "node $(node --version), npm $(npm --version)"
}

ensure_chromium
ensure_curl
ensure_python_websockets
ensure_jupyter
ensure_schemathesis
ensure_node
ensure_npm node
ensure_npm browser
ensure_npm socketio
bash "$INTEROP_DIR/autobahn.sh" --install-only
