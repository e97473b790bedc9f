#!/usr/bin/env bash
# Side-by-side probe of wsgate and nginx under one load (quicker than compare.sh, for
# finding where the time goes). Starts the echo backend, wsgate and nginx pinned to CPU 1,
# runs one loadgen mode against each from CPU 0, and prints per target:
#   PROBE=cpu    (default) the loadgen result, the proxy's CPU %, context switches
#   PROBE=strace system calls counted by `strace -c -f` over 2 s of the load
#   PROBE=perf   the top of `perf report` (kernel vs user share, hottest symbols)
# PROBE_TLS=1 puts TLS on the client hop of both proxies (wsgate-tls / nginx-tls configs).
# Usage: bash benches/probe.sh echo --conns 50 --inflight 1 --size 64
#        PROBE=strace bash benches/probe.sh connrate --concurrency 32
# Needs the binaries compare.sh builds (run it once, or BENCH_SKIP_BUILD=1 after a build);
# WSGATE_BIN measures another wsgate binary; PROBE_KEEP=1 keeps the scratch folder (logs, perf data). Loopback only; every run is bounded (4 s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LG=$ROOT/benches/loadgen/target/release
WSGATE=${WSGATE_BIN:-$ROOT/target/release/wsgate}
PROBE=${PROBE:-cpu}
RUN=$(mktemp -d /tmp/wsgate-probe.XXXXXX)
BACKEND_PORT=${PROBE_PORT_BASE:-19000}
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$RUN/nginx/nginx.pid" ] && kill "$(cat "$RUN/nginx/nginx.pid")" 2>/dev/null || true
    if [ -n "${PROBE_KEEP:-}" ]; then echo "kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
[ -x "$WSGATE" ] && [ -x "$LG/loadgen" ] || { echo "build first: bash benches/compare.sh" >&2; exit 1; }
ulimit -n 20000 2>/dev/null || true

TLS=() SUFFIX=""
if [ -n "${PROBE_TLS:-}" ]; then
    bash "$ROOT/benches/make-certs.sh" "$RUN/tls"
    TLS=(--tls-ca "$RUN/tls/ca.pem" --sni localhost)
    SUFFIX=-tls
fi
render() { # template port out
    sed -e "s|@RUN@|$RUN/nginx|g" -e "s|@PORT@|$2|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
        -e "s|@CERT@|$RUN/tls/server.pem|g" -e "s|@KEY@|$RUN/tls/server.key|g" \
        "$ROOT/benches/peers/$1" >"$3"
}
wait_port() { for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; return 1; }
threads_ctx() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }

taskset -c 1 "$LG/echo-backend" --listen "127.0.0.1:$BACKEND_PORT" >"$RUN/backend.log" 2>&1 &
PIDS+=($!)
render "wsgate$SUFFIX.yaml" $((BACKEND_PORT + 1)) "$RUN/wsgate.yaml"
taskset -c 1 "$WSGATE" --config "$RUN/wsgate.yaml" >"$RUN/wsgate.log" 2>&1 &
WSGATE_PID=$!
PIDS+=("$WSGATE_PID")
mkdir -p "$RUN/nginx"
render "nginx$SUFFIX.conf" $((BACKEND_PORT + 2)) "$RUN/nginx/nginx.conf"
taskset -c 1 nginx -p "$RUN/nginx/" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" &
wait_port $((BACKEND_PORT + 1)) && wait_port $((BACKEND_PORT + 2))
NGINX_PID=$(pgrep -P "$(cat "$RUN/nginx/nginx.pid")" | head -n 1)

for target in "wsgate:$((BACKEND_PORT + 1)):$WSGATE_PID" "nginx:$((BACKEND_PORT + 2)):$NGINX_PID"; do
    IFS=: read -r name port pid <<<"$target"
    before=$(threads_ctx "$pid")
    taskset -c 0 "$LG/loadgen" "$@" --addr "127.0.0.1:$port" "${TLS[@]}" --watch "$pid" \
        --warmup 0.5 --duration 4 >"$RUN/lg.out" 2>&1 &
    lg=$!
    case $PROBE in
    strace) sleep 1; timeout -s INT 2 strace -c -f -p "$pid" -o "$RUN/$name.trace" 2>/dev/null || true ;;
    perf) sleep 1; perf record -q -g -p "$pid" -o "$RUN/$name.perf" -- sleep 2 >/dev/null 2>&1 || true ;;
    esac
    wait "$lg"
    echo "== $name: $(grep '^RESULT' "$RUN/lg.out" | sed 's/^RESULT //'), context switches $(($(threads_ctx "$pid") - before))"
    case $PROBE in
    strace) sed -n '3,20p' "$RUN/$name.trace" ;;
    perf)
        perf report -i "$RUN/$name.perf" --no-children --sort dso -q -g none 2>/dev/null | head -n 4
        perf report -i "$RUN/$name.perf" --no-children --sort dso,sym -q -g none 2>/dev/null | head -n 25
        ;;
    esac
done
