#!/usr/bin/env bash
# Autobahn|Testsuite through wsgate, side by side with the same backend directly.
#
#   bash tests/interop/autobahn.sh                 # install if needed, run, summarise
#   bash tests/interop/autobahn.sh --install-only  # only step 1
#
# 1. Installs the suite (Python 2.7 only; pins in autobahn-requirements.txt) into
#    tests/interop/.cache/autobahn27 if it is not there yet.
# 2. Starts a third-party, Autobahn-clean echo backend and a release build of wsgate
#    with one route to it. The backend is Node `ws` (node/echo_server.mjs: the library's
#    own echo, no compression, no size or fragment cap, no pings), which scores 0 FAILED
#    directly. AUTOBAHN_BACKEND=python uses Python `websockets` (ws_backend.py /echo)
#    instead: websockets 15 itself FAILS case 7.1.5 (it answers a Close that arrives
#    between two fragments with 1002 "incomplete fragmented message" instead of 1000),
#    directly and so also through wsgate, so that run exits 1.
# 3. Runs the fuzzing client against the backend directly (agent `direct`) and through
#    wsgate (agent `wsgate`): cases 1-7, 9 and 10 (12 and 13 are permessage-deflate,
#    which wsgate does not negotiate in frame mode).
# 4. Prints the summary (tests/interop/autobahn_summary.py): behavior counts per agent,
#    every case that differs, every case not OK through wsgate. The full HTML/JSON
#    report is in tests/interop/reports/autobahn/ (open index.html).
#
# Exits non-zero on any FAILED case through wsgate, and when Python 2.7, the suite or
# any process it needs is missing: nothing here is ever skipped as a pass.
#
# Environment:
#   PYTHON27         Python 2.7 interpreter (default: pyenv's 2.7.18, else python2.7)
#   PYTHON           Python 3 for the backend and the summary (default: python3)
#   AUTOBAHN_CASES   comma-separated case patterns (default: 1.*,...,7.*,9.*,10.*)
#   AUTOBAHN_AGENTS  `direct,wsgate` (default), or `wsgate` alone
#   AUTOBAHN_TIMEOUT seconds for the whole fuzzing run (default: 900; it takes ~2 min)
#   AUTOBAHN_BACKEND node (default) or python
#   WSGATE_BIN       use this wsgate binary instead of building target/release/wsgate
set -euo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CASES="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*}"
AGENTS="${AUTOBAHN_AGENTS:-direct,wsgate}"
TIMEOUT_S="${AUTOBAHN_TIMEOUT:-900}"
BACKEND="${AUTOBAHN_BACKEND:-node}"
SUITE_DIR="$CACHE_DIR/autobahn27"
REQUIREMENTS="$INTEROP_DIR/autobahn-requirements.txt"
REPORT_DIR="$INTEROP_DIR/reports/autobahn"

find_python27() {
    local candidate
    for candidate in "${PYTHON27:-}" "$HOME/.pyenv/versions/2.7.18/bin/python" python2.7; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# The suite's command line, from the --target install (site.addsitedir so that the zope
# namespace package's .pth file is honoured).
WSTEST_LAUNCHER='
import site, sys
site.addsitedir(sys.argv[1])
sys.argv = ["wstest"] + sys.argv[2:]
from autobahntestsuite.wstest import run
run()
'
wstest() {
    "$PY27" -W ignore -c "$WSTEST_LAUNCHER" "$SUITE_DIR" "$@"
}

install_suite() {
    local stamp="$SUITE_DIR/.requirements.sha256" want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && wstest --autobahnversion >/dev/null 2>&1; then
        echo "Autobahn|Testsuite already installed in $SUITE_DIR"
        return 0
    fi
    echo "installing Autobahn|Testsuite with $("$PY27" -m pip --version) into $SUITE_DIR"
    rm -rf "$SUITE_DIR"
    mkdir -p "$SUITE_DIR"
    "$PY27" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$SUITE_DIR" -r "$REQUIREMENTS" ||
        die "pip (Python 2.7) could not install the suite from $REQUIREMENTS"
    wstest --autobahnversion >/dev/null || die "the suite was installed but wstest does not start"
    echo "$want" >"$stamp"
}

PY27="$(find_python27)" || die "Python 2.7 not found (PYTHON27, ~/.pyenv/versions/2.7.18/bin/python, python2.7): \
Autobahn|Testsuite needs it; this conformance run did NOT happen"
install_suite
wstest --autobahnversion 2>/dev/null | sed 's/^/  /'
if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi

build_wsgate
make_workdir autobahn
work="$WORK_DIR"
case "$BACKEND" in
python)
    start_backend "$work"
    echo "backend: Python websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)') (ws_backend.py) on $BACKEND_ADDR"
    ;;
node)
    start_node_echo "$work"
    echo "backend: Node ws $(node -p 'require("'"$INTEROP_DIR"'/node/node_modules/ws/package.json").version') (node/echo_server.mjs) on $BACKEND_ADDR"
    ;;
*) die "AUTOBAHN_BACKEND must be python or node, not '$BACKEND'" ;;
esac

cat >"$work/wsgate.yaml" <<EOF
listeners:
  - bind: "127.0.0.1:0"
defaults:
  max_frame_bytes: 16MiB     # case 9.1.6 / 9.2.6 send one 16 MiB frame
  max_message_bytes: 64MiB
  ping_interval: 0s          # keepalive pings would disturb the fuzzing client
routes:
  - name: autobahn
    path: /echo
    backends: ["ws://$BACKEND_ADDR"]
log: { format: text, level: info }
EOF
start_wsgate "$work" "$work/wsgate.yaml"
echo "wsgate ($WSGATE_BIN) on $WSGATE_ADDR"

servers=()
IFS=',' read -r -a agent_list <<<"$AGENTS"
for agent in "${agent_list[@]}"; do
    case "$agent" in
    direct) servers+=("{\"agent\": \"direct\", \"url\": \"ws://$BACKEND_ADDR/echo\"}") ;;
    wsgate) servers+=("{\"agent\": \"wsgate\", \"url\": \"ws://$WSGATE_ADDR/echo\"}") ;;
    *) die "unknown agent '$agent' in AUTOBAHN_AGENTS (direct, wsgate)" ;;
    esac
done
cases_json="$(printf '%s' "$CASES" | sed -E 's/[^,]+/"&"/g')"
rm -rf "$REPORT_DIR"
mkdir -p "$REPORT_DIR"
cat >"$work/fuzzingclient.json" <<EOF
{
  "outdir": "$REPORT_DIR",
  "servers": [$(IFS=','; echo "${servers[*]}")],
  "cases": [$cases_json],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF

echo "fuzzing client: agents $AGENTS, cases $CASES (bounded to ${TIMEOUT_S}s)"
start=$SECONDS
rc=0
(cd "$work" && timeout --kill-after=10 "$TIMEOUT_S" \
    "$PY27" -W ignore -c "$WSTEST_LAUNCHER" "$SUITE_DIR" --mode fuzzingclient --spec fuzzingclient.json \
    >"$work/wstest.log" 2>&1) || rc=$?
elapsed=$((SECONDS - start))
cp "$work/wstest.log" "$work/wsgate.log" "$work/backend.log" "$REPORT_DIR/" 2>/dev/null || true
kill -0 "$WSGATE_PID" 2>/dev/null || die "wsgate exited during the run; see $REPORT_DIR/wsgate.log"
kill -0 "$BACKEND_PID" 2>/dev/null || die "the backend exited during the run; see $REPORT_DIR/backend.log"
if [ "$rc" -ne 0 ]; then
    echo "error: the fuzzing client exited $rc after ${elapsed}s (124 = timed out); last lines:" >&2
    tail -n 20 "$work/wstest.log" >&2
    exit 1
fi
echo "fuzzing client finished in ${elapsed}s"

# Per-agent wall time, from the suite's own per-case durations (ms).
"$PYTHON" - "$REPORT_DIR/index.json" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1]))
for agent, cases in sorted(index.items()):
    total = sum(c.get("duration", 0) for c in cases.values())
    nine = sum(c.get("duration", 0) for k, c in cases.items() if k.startswith("9."))
    print(f"  {agent}: {len(cases)} cases, {total / 1000:.1f}s in cases ({nine / 1000:.1f}s in 9.x)")
EOF
echo
gate="wsgate"
[[ ",$AGENTS," == *",wsgate,"* ]] || gate="${agent_list[0]}"
"$PYTHON" "$INTEROP_DIR/autobahn_summary.py" "$REPORT_DIR" --agents "$AGENTS" --gate "$gate"
