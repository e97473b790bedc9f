#!/usr/bin/env bash
# Plain HTTP through wsgate with curl: Server-Sent Events (`curl -N`, each event must
# arrive before the backend writes the next) and `curl --http1.1` GET/HEAD/POST with
# bodies (Content-Length and chunked, a reused keep-alive connection, forwarding
# headers), against tests/interop/http_backend.py behind a release build of wsgate;
# then `curl --http2` and `--http1.1` against the same route on a TLS listener (ALPN
# `h2, http/1.1`): the protocol each negotiated, and bodies both ways over HTTP/2.
#
#   bash tests/interop/http.sh
#
# Prints a table (check, result, detail); exits non-zero if any check failed or anything
# needed (curl, python3) is missing.
#
# Environment: PYTHON, WSGATE_BIN (as autobahn.sh).
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install -y curl)"
build_wsgate
make_workdir http
work="$WORK_DIR"
start_bg "$work/backend.log" env PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" "$INTEROP_DIR/http_backend.py"
line="$(wait_for_match "$work/backend.log" "$BG_PID" '^listening ' 20)"
BACKEND_ADDR="${line#listening }"
cat >"$work/wsgate.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:0"
  - bind: "127.0.0.1:0"
    tls: { self_signed: true }
routes:
  - name: app
    path: /
    backends: ["ws://$BACKEND_ADDR"]
log: { format: text, level: info }
YAML
start_wsgate "$work" "$work/wsgate.yaml" 2
echo "backend on $BACKEND_ADDR, wsgate on $WSGATE_ADDR"
base="http://$WSGATE_ADDR"
# Every transfer is bounded; --http1.1 throughout (wsgate's plain listener is HTTP/1.1).
CURL=(curl --http1.1 -sS --max-time 20)

rows=()
failed=0
row() { # row NAME ok|FAIL DETAIL
    rows+=("$(printf '%-44s  %-6s  %s' "$1" "$2" "$3")")
    [ "$2" = ok ] || failed=$((failed + 1))
}
check() { # check NAME CONDITION-EXIT DETAIL
    if [ "$2" -eq 0 ]; then row "$1" ok "$3"; else row "$1" FAIL "$3"; fi
}
# Conditions are taken as `COND && r=0 || r=1` (set -e would end the script on a bare
# failing test).

# --- SSE: arrival time of each event (bash's clock, no fork) against its write time.
"${CURL[@]}" -N "$base/sse" 2>"$work/sse.err" | while IFS= read -r l; do
    printf '%s %s\n' "$EPOCHREALTIME" "$l"
done >"$work/sse.txt" || true
sse_verdict="$("$PYTHON" - "$work/sse.txt" <<'EOF'
import json, sys
events = []  # (arrived, n, written)
for line in open(sys.argv[1]):
    at, _, rest = line.rstrip("\n").partition(" ")
    if rest.startswith("data: "):
        d = json.loads(rest[6:])
        events.append((float(at), d["n"], d["written"]))
problems = []
if [n for _, n, _ in events] != list(range(10)):
    problems.append(f"events {[n for _, n, _ in events]}")
early = [round(events[i + 1][2] - events[i][0], 3) for i in range(len(events) - 1)]
late = [i for i, lead in enumerate(early) if lead <= 0]
if late:
    problems.append(f"events {late} arrived only after the next was written")
lag = max((a - w for a, _, w in events), default=0)
if problems:
    print("FAIL " + "; ".join(problems))
else:
    print(f"ok 10 events, each arrived {min(early)*1000:.0f}+ ms before the next was written (max lag {lag*1000:.1f} ms)")
EOF
)" || sse_verdict="FAIL no verdict: $(head -c 200 "$work/sse.err")"
row "SSE (curl -N): each event before the next" "${sse_verdict%% *}" "${sse_verdict#* }"

# --- GET with a body (Content-Length), compared byte for byte.
n=$((5 * 1024 * 1024))
"$PYTHON" -c "import sys; b=bytes(i % 251 for i in range(251)); sys.stdout.buffer.write((b * ($n // 251 + 1))[:$n])" >"$work/want.bin"
code="$("${CURL[@]}" -o "$work/got.bin" -w '%{http_code} %{size_download}' "$base/bytes?n=$n" 2>&1)" || true
cmp -s "$work/want.bin" "$work/got.bin" && r=0 || r=1
check "GET 5 MiB response" "$r" "$code (status, bytes), body identical: $(cmp -s "$work/want.bin" "$work/got.bin" && echo yes || echo no)"

# --- HEAD: the length, no body.
head_out="$("${CURL[@]}" -I "$base/bytes?n=1234" 2>&1 | tr -d '\r')" || true
grep -qx 'HTTP/1.1 200 OK' <<<"$head_out" && grep -qix 'content-length: 1234' <<<"$head_out" && r=0 || r=1
check "HEAD: Content-Length, no body" "$r" "$(grep -i '^content-length' <<<"$head_out" || echo "${head_out:0:80}")"

# --- POST bodies, Content-Length (curl adds Expect: 100-continue above 1 MiB) and chunked.
head -c $((2 * 1024 * 1024)) "$work/want.bin" >"$work/post.bin"
code="$("${CURL[@]}" -o "$work/echo1.bin" -D "$work/echo1.h" -w '%{http_code}' \
    -H 'Content-Type: application/octet-stream' --data-binary @"$work/post.bin" "$base/echo" 2>&1)" || true
cmp -s "$work/post.bin" "$work/echo1.bin" && r=0 || r=1
check "POST 2 MiB (Content-Length, Expect)" "$r" "HTTP $code, backend read $(grep -i '^x-request-framing' "$work/echo1.h" | cut -d' ' -f2- | tr -d '\r')"
code="$("${CURL[@]}" -o "$work/echo2.bin" -D "$work/echo2.h" -w '%{http_code}' -H 'Transfer-Encoding: chunked' \
    -H 'Content-Type: application/octet-stream' --data-binary @"$work/post.bin" "$base/echo" 2>&1)" || true
cmp -s "$work/post.bin" "$work/echo2.bin" && r=0 || r=1
check "POST 2 MiB (chunked)" "$r" "HTTP $code, backend read $(grep -i '^x-request-framing' "$work/echo2.h" | cut -d' ' -f2- | tr -d '\r')"
code="$("${CURL[@]}" -o "$work/echo3.bin" -w '%{http_code} %{size_download}' --data-binary '' "$base/echo" 2>&1)" || true
[ "$code" = "200 0" ] && r=0 || r=1
check "POST empty body" "$r" "$code (status, bytes)"

# --- Keep-alive: two requests in one curl, the second on the same connection.
conns="$("${CURL[@]}" -o /dev/null -o /dev/null -w '%{num_connects} ' "$base/bytes?n=10" "$base/bytes?n=20" 2>&1)" || true
[ "$conns" = "1 0 " ] && r=0 || r=1
check "keep-alive: second request reuses" "$r" "new connections per request: $conns"

# --- Forwarding headers the backend saw.
hdrs="$("${CURL[@]}" "$base/headers" 2>&1)" || true
fwd="$("$PYTHON" -c '
import json, sys
h = json.loads(sys.argv[1])
print(h.get("x-forwarded-for"), h.get("x-forwarded-proto"), h.get("host"))' "$hdrs" 2>/dev/null || echo "bad answer: ${hdrs:0:80}")"
[ "$fwd" = "127.0.0.1 http $BACKEND_ADDR" ] && r=0 || r=1
check "X-Forwarded-For/-Proto, backend Host" "$r" "$fwd"

# --- No route, unknown path: the backend's own 404 comes back.
code="$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$base/nothing-here" 2>&1)" || true
[ "$code" = 404 ] && r=0 || r=1
check "backend's 404 relayed" "$r" "HTTP $code"

# --- The same route on the TLS listener: HTTP/2 by ALPN, and HTTP/1.1 when asked for.
tls="https://${WSGATE_ADDRS[1]}"
H2=(curl --http2 -k -sS --max-time 20)
got="$("${H2[@]}" -o "$work/h2.bin" -w '%{http_version} %{http_code} %{size_download}' "$tls/bytes?n=$n" 2>&1)" || true
[ "$got" = "2 200 $n" ] && cmp -s "$work/want.bin" "$work/h2.bin" && r=0 || r=1
check "curl --http2: GET 5 MiB over h2" "$r" "$got (version, status, bytes)"
got="$("${H2[@]}" -o "$work/h2echo.bin" -w '%{http_version} %{http_code}' \
    -H 'Content-Type: application/octet-stream' --data-binary @"$work/post.bin" "$tls/echo" 2>&1)" || true
[ "$got" = "2 200" ] && cmp -s "$work/post.bin" "$work/h2echo.bin" && r=0 || r=1
check "curl --http2: POST 2 MiB over h2" "$r" "$got (version, status), body identical: $(cmp -s "$work/post.bin" "$work/h2echo.bin" && echo yes || echo no)"
got="$(curl --http1.1 -k -sS --max-time 20 -o /dev/null -w '%{http_version} %{http_code}' "$tls/bytes?n=10" 2>&1)" || true
[ "$got" = "1.1 200" ] && r=0 || r=1
check "curl --http1.1 on the TLS listener" "$r" "$got (version, status)"

printf '%-44s  %-6s  %s\n' check result detail
printf '%s\n' "${rows[@]}"
printf '\nhttp: %d of %d checks passed\n' $((${#rows[@]} - failed)) "${#rows[@]}"
if [ "$failed" -ne 0 ]; then
    echo "--- wsgate log (last 20 lines) ---"
    tail -n 20 "$work/wsgate.log"
    exit 1
fi
