#!/usr/bin/env bash
# A real browser through wsgate over wss: Debian's headless Chromium, driven by
# playwright-core (tests/interop/browser/run.mjs), runs the page in
# tests/interop/browser/page/ against wsgate's TLS listener.
#
#   bash tests/interop/browser.sh
#
# Generates a throw-away test CA and a leaf for 127.0.0.1/localhost (openssl), starts
# the Python `websockets` backend (ws_backend.py) and a release build of wsgate with a
# TLS listener on that leaf, and these routes:
#   /           → the backend, path forwarded unchanged (echo, pingpong, close, record,
#                 report), only for the page's Origin https://127.0.0.1:PAGE_PORT (run.mjs
#                 serves the page there over https with the same leaf)
#   /down       → a closed port (wsgate answers 502)
#   /forbidden  → the backend's echo, but only for Origin https://elsewhere.example (403)
#   /jwt        → the backend's /record, behind a JWT check (ES256, key made by openssl
#                 here; run.mjs mints the tokens with its private half) reading the token
#                 from a Sec-WebSocket-Protocol entry, as a browser must send it (and
#                 showing that Chromium fails a 101 naming none of its offers, which is
#                 why the client offers the marker too and wsgate answers with it)
# Chromium trusts the leaf only through --ignore-certificate-errors-spki-list=<its SPKI
# sha256>. Prints the table of run.mjs; exits non-zero if any check failed or anything
# it needs (chromium, node, openssl, Python websockets) is missing.
#
#   BROWSER_VIA=h2 bash tests/interop/browser.sh
#
# runs the same page and checks with the page itself served THROUGH wsgate: run.mjs
# serves page/ over plain http as the backend of a plain-HTTP route /page, Chromium
# loads https://127.0.0.1:GATE/page/ from wsgate's TLS listener (ALPN h2), and the
# page's WebSockets to wss://127.0.0.1:GATE are same-origin, so Chromium sends them as
# RFC 8441 extended CONNECTs on that HTTP/2 connection (no flag needed: Chromium uses
# them once the server's SETTINGS carry ENABLE_CONNECT_PROTOCOL). Besides run.mjs's
# checks (one more: the page arrived over h2), every close report wsgate logged must
# say protocol="h2": the run fails if the WebSockets went over HTTP/1.1.
#
# Environment: CHROMIUM (default /usr/bin/chromium), PYTHON, WSGATE_BIN (as autobahn.sh),
# BROWSER_VIA (`wss`, the default, or `h2`).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || die "$CHROMIUM not found: apt-get install -y chromium (scripts/test.sh does)"
command -v openssl >/dev/null 2>&1 || die "openssl not found (it makes the test certificates)"
ensure_npm browser
build_wsgate
make_workdir browser
work="$WORK_DIR"

# Test CA and leaf (P-256), valid two days, made fresh for every run.
make_certs() {
    local d="$1"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=wsgate interop test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/leaf.key" -out "$d/leaf.csr" -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$d/leaf.ext"
    openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/leaf.ext" -out "$d/leaf.pem" 2>/dev/null
    cat "$d/leaf.pem" "$d/ca.pem" >"$d/chain.pem"
    # What Chromium pins: base64(sha256(SubjectPublicKeyInfo DER)) of the leaf.
    openssl x509 -in "$d/leaf.pem" -pubkey -noout | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64
}
SPKI="$(make_certs "$work")" || die "openssl could not make the test certificates"
# The JWT route's key (P-256): wsgate gets the public half, run.mjs signs with the private.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/jwt.key" 2>/dev/null &&
    openssl pkey -in "$work/jwt.key" -pubout -out "$work/jwt.pub" 2>/dev/null ||
    die "openssl could not make the JWT key"
echo "test CA + leaf made in $work; leaf SPKI sha256: $SPKI"

start_backend "$work"
DEAD_PORT="$(closed_port)"
PAGE_PORT="$(closed_port)"
VIA="${BROWSER_VIA:-wss}"
case "$VIA" in
wss)
    GATE_BIND="127.0.0.1:0"
    PAGE_ORIGIN="https://127.0.0.1:$PAGE_PORT"
    PAGE_ROUTE=""
    ;;
h2)
    # The page's origin is wsgate itself, so its port is known before wsgate starts.
    GATE_PORT="$(closed_port)"
    GATE_BIND="127.0.0.1:$GATE_PORT"
    PAGE_ORIGIN="https://127.0.0.1:$GATE_PORT"
    PAGE_ROUTE="  - name: page
    path: /page
    backends: [\"ws://127.0.0.1:$PAGE_PORT\"]"
    ;;
*) die "BROWSER_VIA=$VIA: expected wss or h2" ;;
esac
cat >"$work/wsgate.yaml" <<EOF
listeners:
  - bind: "$GATE_BIND"
    tls: { cert: "$work/chain.pem", key: "$work/leaf.key" }
defaults:
  ping_interval: 0s
routes:
  - name: app
    path: /
    backends: ["ws://$BACKEND_ADDR"]
    origins: ["$PAGE_ORIGIN"]
  - name: down
    path: /down
    backends: ["ws://127.0.0.1:$DEAD_PORT"]
  - name: forbidden
    path: /forbidden
    backends: ["ws://$BACKEND_ADDR/echo"]
    origins: ["https://elsewhere.example"]
  - name: jwt
    path: /jwt
    backends: ["ws://$BACKEND_ADDR/record"]
    origins: ["$PAGE_ORIGIN"]
    jwt:
      key_file: "$work/jwt.pub"
      algorithm: ES256
      leeway: 0s
      token: { header: false, subprotocol: wsgate.bearer }
      claim_headers: { sub: X-Auth-Sub }
$PAGE_ROUTE
log: { format: text, level: info }
EOF
start_wsgate "$work" "$work/wsgate.yaml"
echo "backend on $BACKEND_ADDR, wsgate (wss) on $WSGATE_ADDR, /down → closed port $DEAD_PORT"

via_args=()
[ "$VIA" = h2 ] && via_args=(--via h2 --page-origin "$PAGE_ORIGIN")
rc=0
timeout --kill-after=10 120 node "$INTEROP_DIR/browser/run.mjs" --wss "wss://$WSGATE_ADDR" --spki "$SPKI" \
    --page-port "$PAGE_PORT" --cert "$work/chain.pem" --key "$work/leaf.key" \
    --jwt-key "$work/jwt.key" "${via_args[@]}" || rc=$?

# h2: the relayed WebSockets (echo, pingpong, backendClose, record, report, and the
# JWT route's record, report, expiry and the 101 Chromium fails without the marker: 9;
# the refused upgrades make no close report)
# must each report protocol="h2". A close report
# is written once both hops are done, which may be just after the page saw its close.
if [ "$VIA" = h2 ]; then
    want=9
    for _ in $(seq 50); do
        [ "$(grep -c 'wsgate::close' "$work/wsgate.log" || true)" -ge "$want" ] && break
        sleep 0.1
    done
    reports="$(grep -c 'wsgate::close' "$work/wsgate.log" || true)"
    over_h2="$(grep 'wsgate::close' "$work/wsgate.log" | grep -c ' protocol="h2"' || true)"
    if [ "$reports" -ge "$want" ] && [ "$over_h2" -eq "$reports" ]; then
        echo "wsgate close reports: $over_h2 of $reports WebSockets over h2 (RFC 8441): ok"
    else
        echo "FAILED: wsgate close reports: $over_h2 of $reports over h2 (want all, at least $want):"
        grep 'wsgate::close' "$work/wsgate.log" | sed -E 's/.*(route=[^ ]+).* (protocol=[^ ]+).*/  \1 \2/'
        rc=1
    fi
fi
# The JWT route's refusal of an upgrade without a token was wsgate's 401 (over h2
# Chromium's console does not name the status).
if grep -q 'upgrade refused status=401 route="jwt"' "$work/wsgate.log"; then
    echo "wsgate refused the upgrade without a token with 401: ok"
else
    echo "FAILED: no 401 of route jwt in wsgate's log"
    rc=1
fi
if [ "$rc" -ne 0 ]; then
    echo "--- wsgate log (last 30 lines) ---"
    tail -n 30 "$work/wsgate.log"
    echo "--- backend log (last 30 lines) ---"
    tail -n 30 "$work/backend.log"
fi
exit "$rc"
