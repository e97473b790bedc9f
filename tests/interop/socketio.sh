#!/usr/bin/env bash
# Socket.IO through wsgate: three Socket.IO servers (Node, default options:
# tests/interop/socketio/server.mjs) behind one wsgate route, with
#   - the Node client (socket.io-client, default options: long-polling first, then the
#     upgrade to websocket), several clients from different loopback addresses
#     (socketio/client.mjs), and
#   - the browser client in Debian's headless Chromium (socketio/browser.mjs): a page
#     served by a Socket.IO server through wsgate loads /socket.io/socket.io.js and
#     connects with default options.
#
#   bash tests/interop/socketio.sh
#
# The route is README's Socket.IO example: `balance: hash` on the client address
# (`hash_on: client_ip`), so the sid-less first request and every later polling request
# and the websocket upgrade of one client reach the same server. Two more routes hash
# on `query:sid` and `cookie:io` to show that these break sessions. The browser runs a
# second time on a route with round robin and wsgate's own `sticky_cookie` (the other
# README example: the cookie set on the page's answer keeps the session on its server,
# whatever the client address). Each part prints its table; exits
# non-zero if any check failed or anything needed (node + npm, chromium) is missing.
#
# Environment: CHROMIUM (default /usr/bin/chromium), WSGATE_BIN (as autobahn.sh).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || die "$CHROMIUM not found: apt-get install -y chromium (install.sh does)"
ensure_npm socketio
build_wsgate
make_workdir socketio
work="$WORK_DIR"

backends=()
for name in s1 s2 s3; do
    start_bg "$work/$name.log" node "$INTEROP_DIR/socketio/server.mjs" --name "$name"
    line="$(wait_for_match "$work/$name.log" "$BG_PID" '^listening ' 20)"
    backends+=("${line#listening }")
done
yaml_backends="$(printf '"ws://%s", ' "${backends[@]}")"
yaml_backends="[${yaml_backends%, }]"
cat >"$work/wsgate.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:0"
routes:
  # README's Socket.IO example: sticky on the client address.
  - name: socketio
    path: /
    backends: $yaml_backends
    balance: hash
    hash_on: client_ip
  # Sticky on the sid query parameter: only for the check that shows why not.
  - name: sidhash
    host: sidhash.test
    path: /
    backends: $yaml_backends
    balance: hash
    hash_on: query:sid
  # README's other Socket.IO example: round robin, pinned by wsgate's own cookie.
  - name: sticky
    host: sticky.test
    path: /
    backends: $yaml_backends
    sticky_cookie: wsgate_srv
  # Sticky on the io cookie (what Socket.IO's cookie option sets): the same.
  - name: cookiehash
    host: cookiehash.test
    path: /
    backends: $yaml_backends
    balance: hash
    hash_on: cookie:io
log: { format: text, level: info }
YAML
start_wsgate "$work" "$work/wsgate.yaml"
echo "Socket.IO servers on ${backends[*]}, wsgate on $WSGATE_ADDR"

rc=0
echo
echo "== Node socket.io-client (default options) =="
direct="$(printf 'http://%s,' "${backends[@]}")"
timeout --kill-after=10 120 node "$INTEROP_DIR/socketio/client.mjs" --url "http://$WSGATE_ADDR" \
    --backends "${direct%,}" --sid-hash-host sidhash.test --cookie-hash-host cookiehash.test || rc=1
echo
echo "== browser socket.io client in headless Chromium =="
timeout --kill-after=10 120 node "$INTEROP_DIR/socketio/browser.mjs" --url "http://$WSGATE_ADDR" \
    --backends "${direct%,}" || rc=1
echo
echo "== browser socket.io client, round robin pinned by sticky_cookie =="
timeout --kill-after=10 120 node "$INTEROP_DIR/socketio/browser.mjs" \
    --url "http://sticky.test:${WSGATE_ADDR##*:}" --resolve sticky.test \
    --backends "${direct%,}" || rc=1
if [ "$rc" -ne 0 ]; then
    echo "--- wsgate log (last 30 lines) ---"
    tail -n 30 "$work/wsgate.log"
fi
exit "$rc"
