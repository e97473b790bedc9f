#!/usr/bin/env bash
# The admin API fuzzed with schemathesis against its own OpenAPI document: a release
# build of wsgate with an admin token, a built-in echo route with a few live connections
# (so listing, showing and pushing see real ones), and `schemathesis run` on the document
# served at /api/openapi.json, every check on, a bounded number of examples per
# operation (SCHEMATHESIS_EXAMPLES, default 20) and a time budget (60 s of generation; under 2 minutes in all).
# Also checks that without the token every operation answers 401.
#
#   bash tests/interop/admin_api.sh
#
# Prints a table (check, result, detail); exits non-zero if a check failed or
# schemathesis (tests/interop/admin_api-requirements.txt, installed by install.sh) or
# curl is missing.
#
# Environment: PYTHON, WSGATE_BIN (as autobahn.sh), SCHEMATHESIS_EXAMPLES.
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install -y curl)"
ST="$("$PYTHON" -c 'import sys, os; print(os.path.join(os.path.dirname(sys.executable), "schemathesis"))')"
[ -x "$ST" ] || ST="$(command -v schemathesis || true)"
[ -n "$ST" ] && [ -x "$ST" ] || die "schemathesis not found: bash tests/interop/install.sh installs tests/interop/admin_api-requirements.txt"
examples="${SCHEMATHESIS_EXAMPLES:-20}"

build_wsgate
make_workdir admin_api
work="$WORK_DIR"
token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" >"$work/admin.token"
cat >"$work/wsgate.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:0"
admin: { bind: "127.0.0.1:0", token_file: "$work/admin.token" }
routes:
  - { name: echo, path: /echo, echo: true }
log: { format: text, level: info }
reload: { watch: false }
YAML
start_wsgate "$work" "$work/wsgate.yaml"
admin="$(wait_for_match "$work/wsgate.log" "$WSGATE_PID" 'admin listening addr=Some' 10 |
    sed -E 's/.*addr=Some\(([^)]+)\).*/\1/')"
base="http://$admin"
echo "wsgate on $WSGATE_ADDR, admin on $admin"

# A few live connections: Python clients that hold their socket for the whole run.
require_python_websockets
for i in 1 2 3; do
    start_bg "$work/client$i.log" env PYTHONUNBUFFERED=1 "$PYTHON" -c '
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1]) as ws:
        print("connected", flush=True)
        async for _ in ws:
            pass
asyncio.run(main())
' "ws://$WSGATE_ADDR/echo"
    wait_for_match "$work/client$i.log" "$BG_PID" '^connected' 10 >/dev/null
done

rows=()
failed=0
row() { # row NAME ok|FAIL DETAIL
    rows+=("$(printf '%-40s  %-6s  %s' "$1" "$2" "$3")")
    [ "$2" = ok ] || failed=$((failed + 1))
}
CURL=(curl -sS --max-time 10)

curl_code() { "${CURL[@]}" -o /dev/null -w '%{http_code}' "$@" || echo 000; }
code="$(curl_code "$base/api/connections")"
[ "$code" = 401 ] && row "no token: 401" ok "$code" || row "no token: 401" FAIL "$code"
code="$(curl_code -H "Authorization: Bearer not-the-token-0123456789" "$base/api/connections")"
[ "$code" = 401 ] && row "wrong token: 401" ok "$code" || row "wrong token: 401" FAIL "$code"
live="$("${CURL[@]}" -H "Authorization: Bearer $token" "$base/api/connections" |
    "$PYTHON" -c 'import json, sys; print(len(json.load(sys.stdin)["connections"]))' || echo 0)"
[ "$live" = 3 ] && row "listing sees the live connections" ok "$live" ||
    row "listing sees the live connections" FAIL "$live"
"${CURL[@]}" -H "Authorization: Bearer $token" "$base/api/openapi.json" >"$work/openapi.json" ||
    die "GET /api/openapi.json failed"

# The event stream never ends: it is left out of the fuzzing (the Rust tests read it).
start=$SECONDS
# Run from the scratch folder: schemathesis keeps a cache folder where it runs.
if (cd "$work" && timeout 170 "$ST" run "$work/openapi.json" --url "$base" \
    -H "Authorization: Bearer $token" \
    --checks all --max-examples "$examples" --max-time 60 --seed 1 \
    --request-timeout 5 --exclude-path /api/events \
    --warnings off --no-color >"$work/schemathesis.log" 2>&1); then
    row "schemathesis ($examples examples/op)" ok "$((SECONDS - start))s, $(grep -Eo '[0-9]+ (passed|generated)[^,]*' "$work/schemathesis.log" | head -n1)"
else
    row "schemathesis ($examples examples/op)" FAIL "$((SECONDS - start))s, see below"
    tail -n 80 "$work/schemathesis.log" >&2
fi
grep -q "$token" "$work/wsgate.log" && row "token absent from the log" FAIL "found" ||
    row "token absent from the log" ok "$(wc -l <"$work/wsgate.log") lines"
kill -0 "$WSGATE_PID" 2>/dev/null && row "wsgate still running" ok "" || row "wsgate still running" FAIL "exited"

printf '\n%-40s  %-6s  %s\n' check result detail
printf '%s\n' "${rows[@]}"
[ "$failed" -eq 0 ] || {
    echo "$failed check(s) failed" >&2
    exit 1
}
