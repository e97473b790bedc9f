#!/usr/bin/env bash
# wsgate's live status page (GET / of the admin listener) driven in Debian's headless
# Chromium by playwright-core (tests/interop/browser/status_page.mjs; the npm packages
# of tests/interop/browser).
#
#   bash tests/interop/status_page.sh [--screenshot docs/status-page.png]
#
# Starts the Python `websockets` backend (ws_backend.py) and a release build of wsgate
# with an admin token (token_file), a route `app` to the backend's echo and a built-in
# echo route, keepalive pings every second (for the RTT columns). Then status_page.mjs:
# the page loads without the token and asks for it, refuses a wrong one (401), goes live
# with the right one; a WebSocket opened from a second tab appears in the top
# connections, its close button removes it and the client gets Close 1000; the backend's
# drain button closes a connection on it with 1012; the chart is drawn and a full-page
# screenshot is much larger than a blank one (saved with --screenshot). Prints a table;
# exits non-zero if any check failed or anything it needs (chromium, node, Python
# websockets) is missing. Also checks that the token never appears in wsgate's log.
#
# Environment: CHROMIUM (default /usr/bin/chromium), PYTHON, WSGATE_BIN (as autobahn.sh).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shot=()
if [ "${1:-}" = --screenshot ]; then
    [ -n "${2:-}" ] || die "--screenshot needs a file"
    shot=(--screenshot "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
fi

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || die "$CHROMIUM not found: apt-get install -y chromium (scripts/test.sh does)"
ensure_npm browser
build_wsgate
make_workdir status_page
work="$WORK_DIR"
token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" >"$work/admin.token"

start_backend "$work"
cat >"$work/wsgate.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:0"
admin: { bind: "127.0.0.1:0", token_file: "$work/admin.token" }
defaults:
  ping_interval: 1s
routes:
  - name: app
    path: /app
    backends: ["ws://$BACKEND_ADDR/echo"]
  - { name: echo, path: /echo, echo: true }
log: { format: text, level: debug }
reload: { watch: false }
YAML
start_wsgate "$work" "$work/wsgate.yaml"
admin="$(wait_for_match "$work/wsgate.log" "$WSGATE_PID" 'admin listening addr=Some' 10 |
    sed -E 's/.*addr=Some\(([^)]+)\).*/\1/')"
echo "backend on $BACKEND_ADDR, wsgate on $WSGATE_ADDR, admin (status page) on http://$admin/"

rc=0
timeout --kill-after=10 120 node "$INTEROP_DIR/browser/status_page.mjs" --admin "http://$admin" \
    --gate "ws://$WSGATE_ADDR" --token-file "$work/admin.token" "${shot[@]}" || rc=$?

if grep -qF "$token" "$work/wsgate.log"; then
    echo "FAILED: the admin token appears in wsgate's log"
    rc=1
else
    echo "the admin token is not in wsgate's log (debug level): ok"
fi
if [ "$rc" -ne 0 ]; then
    echo "--- wsgate log (last 30 lines) ---"
    tail -n 30 "$work/wsgate.log"
fi
exit "$rc"
