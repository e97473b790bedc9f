#!/usr/bin/env bash
# Third-party clients through wsgate: Python `websockets` (python_client.py) and Node
# `ws` (node/client.mjs), each against the Python `websockets` backend (ws_backend.py)
# behind a release build of wsgate.
#
#   bash tests/interop/clients.sh
#
# wsgate routes: `/` → the backend, path unchanged (default validate_utf8: true, so
# wsgate itself answers 1007 to invalid UTF-8), and `/raw` → the backend's `/echo` with
# validate_utf8: false (the backend's own 1007 must pass back intact). Each client
# prints its table; exits non-zero if any check of either failed or anything needed
# (python3 + websockets >= 14, node + npm) is missing.
#
# Environment: PYTHON, WSGATE_BIN (as autobahn.sh).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_python_websockets
ensure_npm node
build_wsgate
make_workdir clients
work="$WORK_DIR"
start_backend "$work"
cat >"$work/wsgate.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:0"
defaults:
  max_frame_bytes: 16MiB
  max_message_bytes: 64MiB
routes:
  - name: app
    path: /
    backends: ["ws://$BACKEND_ADDR"]
  - name: raw
    path: /raw
    backends: ["ws://$BACKEND_ADDR/echo"]
    validate_utf8: false
log: { format: text, level: info }
YAML
start_wsgate "$work" "$work/wsgate.yaml"
echo "backend on $BACKEND_ADDR, wsgate on $WSGATE_ADDR"

rc=0
echo
echo "== Python websockets client =="
timeout --kill-after=10 180 env PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" "$INTEROP_DIR/python_client.py" --url "ws://$WSGATE_ADDR" --direct "ws://$BACKEND_ADDR" || rc=1
echo
echo "== Node ws client =="
timeout --kill-after=10 180 node "$INTEROP_DIR/node/client.mjs" --url "ws://$WSGATE_ADDR" --direct "ws://$BACKEND_ADDR" || rc=1
if [ "$rc" -ne 0 ]; then
    echo "--- wsgate log (last 30 lines) ---"
    tail -n 30 "$work/wsgate.log"
    echo "--- backend log (last 30 lines) ---"
    tail -n 30 "$work/backend.log"
fi
exit "$rc"
