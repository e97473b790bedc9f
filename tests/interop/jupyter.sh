#!/usr/bin/env bash
# Jupyter Server through wsgate: a real Jupyter Server (pip jupyter_server + ipykernel,
# pinned in jupyter-requirements.txt) on loopback with a token, behind README's Jupyter
# example route (`preserve_host: true`). jupyter_check.py logs in with the browser's
# cookie flow (GET /login for _xsrf, POST /login with the token), creates a kernel with
# POST /api/kernels (X-XSRFToken), executes `1+1` over the kernel's channels WebSocket
# (/api/kernels/{id}/channels, Jupyter message protocol) and deletes the kernel. A second
# wsgate without `preserve_host` shows what Jupyter does then (it compares Origin with
# Host and refuses).
#
#   bash tests/interop/jupyter.sh
#
# Prints the table of jupyter_check.py; exits non-zero if any check failed or anything
# needed (python3 with jupyter_server, ipykernel and websockets) is missing.
#
# Environment: PYTHON, WSGATE_BIN (as autobahn.sh).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_python_websockets
"$PYTHON" -c 'import jupyter_server, ipykernel' 2>/dev/null ||
    die "jupyter_server and ipykernel are needed for $PYTHON: $PYTHON -m pip install -r tests/interop/jupyter-requirements.txt (install.sh does)"
build_wsgate
make_workdir jupyter
work="$WORK_DIR"
mkdir -p "$work/root" "$work/jupyter" "$work/gate" "$work/gate-plain"

# Everything Jupyter and IPython write stays in the scratch folder.
TOKEN="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
start_bg "$work/jupyter.log" env JUPYTER_PLATFORM_DIRS=1 JUPYTER_CONFIG_DIR="$work/jupyter/config" \
    JUPYTER_RUNTIME_DIR="$work/jupyter/runtime" JUPYTER_DATA_DIR="$work/jupyter/data" \
    IPYTHONDIR="$work/jupyter/ipython" PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" -m jupyter_server --allow-root --ServerApp.ip=127.0.0.1 --ServerApp.port=0 \
    --ServerApp.open_browser=False --ServerApp.root_dir="$work/root" \
    --IdentityProvider.token="$TOKEN"
line="$(wait_for_match "$work/jupyter.log" "$BG_PID" 'http://127\.0\.0\.1:[0-9]+/' 60)"
JUPYTER_ADDR="$(sed -E 's#.*http://(127\.0\.0\.1:[0-9]+)/.*#\1#' <<<"$line")"

write_config() {
    cat >"$1" <<YAML
listeners:
  - bind: "127.0.0.1:0"
routes:
  - name: jupyter
    path: /
    backends: ["ws://$JUPYTER_ADDR"]
    preserve_host: $2
log: { format: text, level: info }
YAML
}
write_config "$work/gate-plain/wsgate.yaml" false
start_wsgate "$work/gate-plain" "$work/gate-plain/wsgate.yaml"
PLAIN_ADDR="$WSGATE_ADDR"
write_config "$work/gate/wsgate.yaml" true
start_wsgate "$work/gate" "$work/gate/wsgate.yaml"
echo "Jupyter Server on $JUPYTER_ADDR, wsgate (preserve_host) on $WSGATE_ADDR, wsgate without it on $PLAIN_ADDR"

rc=0
timeout --kill-after=10 100 env PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" "$INTEROP_DIR/jupyter_check.py" --url "http://$WSGATE_ADDR" --token "$TOKEN" \
    --plain-host "http://$PLAIN_ADDR" || rc=1
if [ "$rc" -ne 0 ]; then
    echo "--- wsgate log (last 30 lines) ---"
    tail -n 30 "$work/gate/wsgate.log"
    echo "--- Jupyter log (last 30 lines) ---"
    tail -n 30 "$work/jupyter.log"
fi
exit "$rc"
