#!/usr/bin/env bash
# Instructions and system calls per request: wsgate vs nginx vs HAProxy, counted rather
# than timed, so the figures repeat on a busy machine (wall-clock rates do not).
#
#   bash benches/callgrind.sh                 # http1: keep-alive GETs of a 100 B body
#   CG_MEASURE=ws64 bash benches/callgrind.sh  # 64 B WebSocket echo (ws64k: 64 KiB)
#   CG_TARGETS=wsgate CG_TOP=40 bash benches/callgrind.sh   # + where wsgate's go
#
# For each target it runs the proxy twice, in front of the same backend:
#   1. under `valgrind --tool=callgrind` (user-space instructions only, every thread):
#      a warm-up load (fills the backend pools), then the counters are zeroed
#      (`callgrind_control -z`), the measured load runs, and the counters are dumped;
#      instructions/request = the dump's total ÷ the requests the load tool reports done;
#   2. natively, pinned like compare.sh (load on CPU $CG_LOADGEN_CPU, backend + proxy on
#      CPU $CG_SERVER_CPU), with `strace -c -f` attached for the measured load only:
#      system calls/request, and the calls (and failed calls, EAGAIN mostly) per request
#      of each system call that any target makes at least 0.05 times per request.
# The measured load opens its own connections, so their accept and close are counted
# (CG_CONNS of them, amortised over CG_REQUESTS).
#
# Measures (CG_MEASURE): each names a load and a peer config per target, so another path
# is one more case in `load` and `config` below.
#   http1   h2load --h1 -n CG_REQUESTS -c CG_CONNS (keep-alive, one request in flight per
#           connection) against http-backend (--size CG_SIZE) through each proxy;
#           configs benches/peers/{wsgate-http.yaml, nginx-http.conf, haproxy-http.cfg}
#   ws64    WebSocket echo of 64 B binary messages through each proxy to loadgen's
#           echo-backend: `loadgen echo --rounds` sends CG_REQUESTS/CG_CONNS round trips
#           per connection (one message in flight), and an operation is one RELAYED
#           message, two per round trip (client→backend, backend→client), as in issue
#           #17; configs benches/peers/{wsgate.yaml, nginx.conf, haproxy.cfg}. The
#           CG_CONNS upgrades and closes of the measured load are counted with it
#           (amortised: ~100 k instructions per connection, so ≈ 10 per message at the
#           defaults of 20000 round trips over 5 connections).
#   ws64k   the same with 64 KiB messages (defaults: 2000 round trips, 2 connections)
#   conn    instructions per NEW WebSocket connection: `loadgen conncycles` runs
#           CG_REQUESTS whole connection lives on CG_CONNS workers (TCP connect →
#           upgrade → one CG_SIZE-byte binary message and its echo → close handshake →
#           FIN) against echo-backend through each proxy; configs
#           benches/peers/{wsgate.yaml, nginx.conf, haproxy.cfg}.
#           Defaults for it: CG_REQUESTS=3000 CG_WARMUP=300 CG_CONNS=8 CG_SIZE=64
#   conn-tls  the same with TLS on the client hop (full handshakes, no resumption);
#           configs benches/peers/{wsgate-tls.yaml, nginx-tls.conf, haproxy-tls.cfg}
#
# Knobs (environment):
#   CG_TARGETS="wsgate nginx haproxy"  CG_MEASURE=http1
#   CG_REQUESTS=20000  CG_WARMUP=2000  CG_CONNS=50  CG_SIZE=100   (http1; ws64:
#   20000 round trips, 2000 warm-up, 5 connections, 64 B; ws64k: 2000, 200, 2, 65536)
#   CG_TOP=0           print wsgate's hottest N functions (callgrind_annotate, exclusive)
#   CG_TUNABLES=…      GLIBC_TUNABLES for the callgrind runs (ws measures: vector copies)
#   CG_PORT_BASE=19600  CG_LOADGEN_CPU=0  CG_SERVER_CPU=1
#   WSGATE_BIN=PATH    measure this wsgate binary (default: target/release/wsgate)
#   CG_SKIP_BUILD=1    do not build wsgate and the load generator first
#   CG_KEEP=1          keep the scratch folder (configs, logs, callgrind and strace output)
# Needs valgrind, strace, h2load (nghttp2-client), nginx, haproxy, taskset, ss.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGETS=${CG_TARGETS:-wsgate nginx haproxy}
MEASURE=${CG_MEASURE:-http1}
case $MEASURE in
ws64) defaults=(20000 2000 5 64) ;;
ws64k) defaults=(2000 200 2 65536) ;;
conn | conn-tls) defaults=(3000 300 8 64) ;; # a connection costs ~100× a request
*) defaults=(20000 2000 50 100) ;;
esac
REQUESTS=${CG_REQUESTS:-${defaults[0]}}
WARMUP=${CG_WARMUP:-${defaults[1]}}
CONNS=${CG_CONNS:-${defaults[2]}}
SIZE=${CG_SIZE:-${defaults[3]}}
# glibc copies with `rep movsb` past a size threshold, and callgrind counts each byte of
# one as an instruction: the ws measures force glibc's vector copies instead (as issue
# #17's counts did), so a 64 KiB copy counts as the ~2k instructions it executes, not 64k.
# http1 keeps its earlier figures comparable (CG_TUNABLES= for none, or set it for http1).
case $MEASURE in
ws64 | ws64k) TUNABLES=${CG_TUNABLES-glibc.cpu.x86_rep_movsb_threshold=1000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000} ;;
*) TUNABLES=${CG_TUNABLES-} ;;
esac
# What one operation is, for the tables.
case $MEASURE in
ws64 | ws64k) OP="relayed message" UNIT="round trips" ;;
conn | conn-tls) OP=connection UNIT=connections ;;
*) OP=request UNIT=requests ;;
esac
TOP=${CG_TOP:-0}
PORT_BASE=${CG_PORT_BASE:-19600}
LG_CPU=${CG_LOADGEN_CPU:-0}
SRV_CPU=${CG_SERVER_CPU:-1}
WSGATE=${WSGATE_BIN:-$ROOT/target/release/wsgate}
LG=$ROOT/benches/loadgen/target/release
BACKEND_PORT=$PORT_BASE
PROXY_PORT=$((PORT_BASE + 1))

RUN=$(mktemp -d /tmp/wsgate-callgrind.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${CG_KEEP:-}" ]; then echo "kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
die() { echo "callgrind.sh: $*" >&2; exit 1; }
log() { echo "[callgrind] $*" >&2; }

for tool in valgrind callgrind_control strace h2load taskset ss; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if [ -z "${CG_SKIP_BUILD:-}" ] && [ -z "${WSGATE_BIN:-}" ]; then
    log "building wsgate and the load generator (release)"
    (cd "$ROOT" && cargo build --release --bin wsgate 2>&1 | tail -n 1) >&2
    (cd "$ROOT/benches/loadgen" && cargo build --release 2>&1 | tail -n 1) >&2
fi
[ -x "$WSGATE" ] && [ -x "$LG/http-backend" ] && [ -x "$LG/echo-backend" ] && [ -x "$LG/loadgen" ] ||
    die "build first (or unset CG_SKIP_BUILD)"
ulimit -n 20000 2>/dev/null || true

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { # port pid: until something listens there (the process must stay alive)
    for _ in $(seq 600); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
spawn() { # cpu-list log command...: starts it in the background, sets SPAWNED
    local cpus=$1 out=$2
    shift 2
    taskset -c "$cpus" "$@" >"$out" 2>&1 &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}
stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for _ in $(seq 100); do port_free "$PROXY_PORT" && break; sleep 0.05; done
}

# The peer config of `target` for this measure, rendered into the scratch folder; prints
# the command that runs it in the foreground with one worker (nginx: no master process,
# so the process valgrind and strace see is the one serving).
config() { # target
    local t=$1 dir=$RUN/$1
    mkdir -p "$dir"
    case $MEASURE:$t in
    http1:wsgate)
        sed -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
            "$ROOT/benches/peers/wsgate-http.yaml" >"$dir/wsgate.yaml"
        echo "$WSGATE --config $dir/wsgate.yaml"
        ;;
    http1:nginx)
        sed -e "s|@RUN@|$dir|g" -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
            -e 's|^worker_processes 1;|worker_processes 1;\nmaster_process off;|' \
            "$ROOT/benches/peers/nginx-http.conf" >"$dir/nginx.conf"
        echo "nginx -p $dir/ -e $dir/error.log -c $dir/nginx.conf"
        ;;
    http1:direct) # the backend alone (hyper's server): what a request costs with no proxy
        echo "$LG/http-backend --listen 127.0.0.1:$PROXY_PORT --size $SIZE"
        ;;
    http1:haproxy)
        sed -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
            "$ROOT/benches/peers/haproxy-http.cfg" >"$dir/haproxy.cfg"
        echo "haproxy -db -f $dir/haproxy.cfg"
        ;;
    ws64:wsgate | ws64k:wsgate)
        sed -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
            "$ROOT/benches/peers/wsgate.yaml" >"$dir/wsgate.yaml"
        echo "$WSGATE --config $dir/wsgate.yaml"
        ;;
    ws64:nginx | ws64k:nginx)
        sed -e "s|@RUN@|$dir|g" -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
            -e 's|^worker_processes 1;|worker_processes 1;\nmaster_process off;|' \
            "$ROOT/benches/peers/nginx.conf" >"$dir/nginx.conf"
        echo "nginx -p $dir/ -e $dir/error.log -c $dir/nginx.conf"
        ;;
    ws64:haproxy | ws64k:haproxy)
        sed -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
            "$ROOT/benches/peers/haproxy.cfg" >"$dir/haproxy.cfg"
        echo "haproxy -db -f $dir/haproxy.cfg"
        ;;
    conn:wsgate | conn-tls:wsgate)
        render "$([ "$MEASURE" = conn ] && echo wsgate.yaml || echo wsgate-tls.yaml)" "$dir/wsgate.yaml"
        echo "$WSGATE --config $dir/wsgate.yaml"
        ;;
    conn:nginx | conn-tls:nginx)
        render "$([ "$MEASURE" = conn ] && echo nginx.conf || echo nginx-tls.conf)" "$dir/nginx.conf" "$dir"
        sed -i 's|^worker_processes 1;|worker_processes 1;\nmaster_process off;|' "$dir/nginx.conf"
        echo "nginx -p $dir/ -e $dir/error.log -c $dir/nginx.conf"
        ;;
    conn:haproxy | conn-tls:haproxy)
        render "$([ "$MEASURE" = conn ] && echo haproxy.cfg || echo haproxy-tls.cfg)" "$dir/haproxy.cfg"
        echo "haproxy -db -f $dir/haproxy.cfg"
        ;;
    ws64:direct | ws64k:direct | conn:direct) # the echo backend alone
        echo "$LG/echo-backend --listen 127.0.0.1:$PROXY_PORT"
        ;;
    *) die "no config for measure $MEASURE, target $t" ;;
    esac
}

render() { # template out [scratch dir for @RUN@]: the conn measures' peer configs
    sed -e "s|@RUN@|${3:-$RUN}|g" -e "s|@PORT@|$PROXY_PORT|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND_PORT|g" \
        -e "s|@CERT@|$RUN/tls/server.pem|g" -e "s|@KEY@|$RUN/tls/server.key|g" \
        -e "s|@PEM@|$RUN/tls/server-with-key.pem|g" "$ROOT/benches/peers/$1" >"$2"
}

# Runs `n` requests (round trips) of this measure's load (pinned to the load CPU);
# prints how many operations (requests, relayed messages) completed.
load() { # n out
    case $MEASURE in
    http1)
        taskset -c "$LG_CPU" h2load --h1 -n "$1" -c "$CONNS" "http://127.0.0.1:$PROXY_PORT/" >"$2" 2>&1 ||
            die "h2load failed: $(tail -n 3 "$2")"
        awk '/^requests:/ { print $8 }' "$2"
        ;;
    ws64 | ws64k)
        # Round trips per connection, rounded up; the tool reports the replies it got,
        # and each reply is two relayed messages. The window only bounds the run.
        local per=$((($1 + CONNS - 1) / CONNS))
        taskset -c "$LG_CPU" "$LG/loadgen" echo --addr "127.0.0.1:$PROXY_PORT" --conns "$CONNS" \
            --size "$SIZE" --rounds "$per" --warmup 0 --duration 600 >"$2" 2>&1 ||
            die "loadgen failed: $(tail -n 3 "$2")"
        sed -n 's/.* msgs=\([0-9]*\).*/\1/p' "$2" | awk '{ print 2 * $1 }'
        ;;
    conn | conn-tls)
        local tls=()
        [ "$MEASURE" = conn-tls ] && tls=(--tls-ca "$RUN/tls/ca.pem" --sni localhost)
        # --duration only sizes the load generator's watchdog here (no timed window).
        taskset -c "$LG_CPU" "$LG/loadgen" conncycles --addr "127.0.0.1:$PROXY_PORT" "${tls[@]}" \
            --cycles "$1" --concurrency "$CONNS" --size "$SIZE" --duration 600 >"$2" 2>&1 ||
            die "loadgen failed: $(tail -n 3 "$2")"
        grep -q ' errors=0' "$2" || die "connections failed: $(tail -n 1 "$2")"
        sed -n 's/.* conns=\([0-9]*\) .*/\1/p' "$2"
        ;;
    *) die "unknown measure $MEASURE" ;;
    esac
}

case $MEASURE in
http1)
    port_free "$BACKEND_PORT" || die "port $BACKEND_PORT in use; set CG_PORT_BASE"
    spawn "$SRV_CPU" "$RUN/backend.log" "$LG/http-backend" --listen "127.0.0.1:$BACKEND_PORT" --size "$SIZE"
    wait_port "$BACKEND_PORT" "$SPAWNED" || die "http-backend did not start"
    ;;
ws64 | ws64k | conn | conn-tls)
    port_free "$BACKEND_PORT" || die "port $BACKEND_PORT in use; set CG_PORT_BASE"
    [ "$MEASURE" = conn-tls ] && bash "$ROOT/benches/make-certs.sh" "$RUN/tls"
    spawn "$SRV_CPU" "$RUN/backend.log" "$LG/echo-backend" --listen "127.0.0.1:$BACKEND_PORT"
    wait_port "$BACKEND_PORT" "$SPAWNED" || die "echo-backend did not start"
    ;;
*) die "unknown measure $MEASURE" ;;
esac

declare -A IR SYS SYS_N CALLS ERRS
for t in $TARGETS; do
    port_free "$PROXY_PORT" || die "port $PROXY_PORT in use; set CG_PORT_BASE"
    read -r -a cmd <<<"$(config "$t")"

    log "$t: callgrind ($WARMUP warm-up, $REQUESTS measured $UNIT)"
    spawn "$SRV_CPU" "$RUN/$t/valgrind.log" env ${TUNABLES:+GLIBC_TUNABLES=$TUNABLES} valgrind --tool=callgrind \
        --callgrind-out-file="$RUN/$t/callgrind.out" "${cmd[@]}"
    pid=$SPAWNED
    wait_port "$PROXY_PORT" "$pid" || die "$t did not start under valgrind: $(tail -n 5 "$RUN/$t/valgrind.log")"
    load "$WARMUP" "$RUN/$t/warmup.txt" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    done_n=$(load "$REQUESTS" "$RUN/$t/load-cg.txt")
    [ "${done_n:-0}" -gt 0 ] || die "$t: no request done under valgrind"
    callgrind_control -d "$pid" >/dev/null
    dump=$(ls "$RUN/$t"/callgrind.out.* 2>/dev/null | head -n 1)
    [ -n "$dump" ] || die "$t: no callgrind dump"
    total=$(awk '/^summary:/ { print $2 }' "$dump")
    IR[$t]=$((total / done_n))
    if [ "$t" = wsgate ] && [ "$TOP" -gt 0 ]; then
        echo "### wsgate's hottest functions (instructions/$OP, exclusive)"
        echo
        # The frames that were active when the counters were zeroed (thread start, the
        # runtime's block_on) come out of callgrind_annotate with the whole total as their
        # own cost: rows of 90% and more are those, not real exclusive costs.
        callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null |
            awk -v n="$done_n" -v top="$TOP" -v total="$total" '
                /file:function/ { on = 1; next }
                on && match($0, /^ *[0-9,]+ +\( *[0-9.]+%\) +/) {
                    ir = $1; gsub(",", "", ir); ir += 0
                    name = substr($0, RLENGTH + 1); sub(/ \[.*\]$/, "", name); sub(/^\?\?\?:/, "", name)
                    if (ir >= 0.9 * total || ir / n < 1 || shown >= top) next
                    printf "%8.0f  %s\n", ir / n, name; shown++
                }'
        echo
    fi
    stop "$pid"

    log "$t: strace ($REQUESTS $UNIT)"
    spawn "$SRV_CPU" "$RUN/$t/native.log" "${cmd[@]}"
    pid=$SPAWNED
    wait_port "$PROXY_PORT" "$pid" || die "$t did not start: $(tail -n 5 "$RUN/$t/native.log")"
    load "$WARMUP" "$RUN/$t/warmup-native.txt" >/dev/null
    strace -c -f -p "$pid" -o "$RUN/$t/strace.txt" 2>/dev/null &
    tracer=$!
    # Attached once every thread of the proxy has a tracer.
    for _ in $(seq 100); do
        untraced=$(grep -h '^TracerPid:' /proc/"$pid"/task/*/status 2>/dev/null | awk '$2 == 0' | wc -l)
        [ "$untraced" -eq 0 ] && break
        sleep 0.05
    done
    done_n=$(load "$REQUESTS" "$RUN/$t/load-strace.txt")
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    stop "$pid"
    [ "${done_n:-0}" -gt 0 ] || die "$t: no request done under strace"
    # strace -c: "% time seconds usecs/call calls errors syscall", errors may be blank.
    while read -r name calls errs; do
        CALLS[$t:$name]=$calls
        ERRS[$t:$name]=$errs
    done < <(awk '$NF != "total" && $1 ~ /^[0-9.]+$/ {
                 if (NF == 6) print $6, $4, $5; else if (NF == 5) print $5, $4, 0 }' "$RUN/$t/strace.txt")
    SYS[$t]=$(awk -v n="$done_n" '$NF == "total" { printf "%.2f", $4 / n }' "$RUN/$t/strace.txt")
    SYS_N[$t]=$done_n
done

echo "### $MEASURE: per $OP ($REQUESTS $UNIT, $CONNS connections)"
echo
echo "| target | instructions/$OP | syscalls/$OP |"
echo "|---|---|---|"
for t in $TARGETS; do echo "| $t | ${IR[$t]} | ${SYS[$t]} |"; done
echo
names=$(for k in "${!CALLS[@]}"; do echo "${k#*:}"; done | sort -u)
header="| syscall |" rule="|---|"
for t in $TARGETS; do header+=" $t calls (failed) |"; rule+="---|"; done
echo "$header"
echo "$rule"
for name in $names; do
    row="| $name |" keep=""
    for t in $TARGETS; do
        c=${CALLS[$t:$name]:-0} e=${ERRS[$t:$name]:-0} n=${SYS_N[$t]}
        cell=$(awk -v c="$c" -v e="$e" -v n="$n" 'BEGIN {
            if (c == 0) { printf "–"; exit }
            printf "%.2f", c / n; if (e > 0) printf " (%.2f)", e / n }')
        awk -v c="$c" -v n="$n" 'BEGIN { exit !(c / n >= 0.05) }' && keep=1
        row+=" $cell |"
    done
    [ -n "$keep" ] && echo "$row"
done
