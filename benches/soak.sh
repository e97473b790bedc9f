#!/usr/bin/env bash
# Soak test: one wsgate (release build, the benchmark config of compare.sh) in front of
# the echo backend, driven for a long time at half its measured 64 B echo rate with
# connection churn, to show that memory and descriptors stay flat.
#
#   bash benches/soak.sh                      # 1 hour
#   SOAK_DURATION=1800 bash benches/soak.sh   # 30 minutes
#
# First it measures the maximum 64 B echo rate through wsgate (compare.sh's echo64:
# 50 connections, one message in flight each; median of SOAK_PROBE_REPS short runs),
# then runs `loadgen soak` at half that rate: 50 long-lived connections echoing paced
# 64 B messages, plus a steady stream of short-lived connections that each echo a few
# messages and end in turn with a Close handshake, a TCP FIN without Close, or a reset.
# Every SOAK_INTERVAL it prints one row: elapsed, wsgate's VmRSS, its open descriptors,
# wsgate_connections_active, messages/s, churned connections/s, errors (descriptors: the
# least of 5 counts 0.1 s apart, so a burst of churn in flight is not taken for growth).
# At the end: the
# drift of RSS and descriptors (first row against last) and a verdict against the goal
# (RSS within SOAK_RSS_GOAL %, descriptors flat within SOAK_FD_SLACK), then whether
# connections and descriptors went back to their idle values once the load stopped.
#
# All traffic is on 127.0.0.1; every process started here is stopped at exit.
# Knobs (environment), with defaults:
#   SOAK_DURATION=3600      seconds of soak (after the short rate probe)
#   SOAK_INTERVAL=60        seconds between rows
#   SOAK_RATE=              messages/s for the long-lived connections; empty = half the probe's
#   SOAK_CONNS=50           long-lived connections
#   SOAK_SIZE=64            message payload bytes
#   SOAK_CHURN_RATE=100     short-lived connections started per second
#   SOAK_CHURN_MAX=64       short-lived connections open at most at once
#   SOAK_CHURN_MSGS=3       messages each short-lived connection echoes
#   SOAK_PROBE_REPS=3       rate probe runs (median taken)
#   SOAK_PROBE_DURATION=4   seconds per probe run
#   SOAK_RSS_GOAL=5         allowed RSS growth, percent (last row against the first)
#   SOAK_FD_SLACK=8         allowed descriptor growth (short-lived connections in flight
#                           at every sample hold 2 each)
#   SOAK_NICE=              autogroup/nice value for the run (root), as BENCH_NICE in
#                           compare.sh; empty = none, so a long run does not starve others
#   SOAK_PORT_BASE=18800    ports: +1 backend, +2 wsgate, +9 admin (/metrics)
#   SOAK_LOADGEN_CPU=0 / SOAK_SERVER_CPU=1   pinning, as in compare.sh
#   SOAK_WSGATE_BIN=PATH    soak this wsgate binary instead of building the work tree
#   SOAK_SKIP_BUILD=1       use the binaries already built
#   SOAK_KEEP=1             keep the scratch folder (config, logs, raw ticks)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${SOAK_DURATION:-3600}
INTERVAL=${SOAK_INTERVAL:-60}
RATE=${SOAK_RATE:-}
CONNS=${SOAK_CONNS:-50}
SIZE=${SOAK_SIZE:-64}
CHURN_RATE=${SOAK_CHURN_RATE:-100}
CHURN_MAX=${SOAK_CHURN_MAX:-64}
CHURN_MSGS=${SOAK_CHURN_MSGS:-3}
PROBE_REPS=${SOAK_PROBE_REPS:-3}
PROBE_DUR=${SOAK_PROBE_DURATION:-4}
RSS_GOAL=${SOAK_RSS_GOAL:-5}
FD_SLACK=${SOAK_FD_SLACK:-8}
NICE=${SOAK_NICE:-}
PORT_BASE=${SOAK_PORT_BASE:-18800}
LG_CPU=${SOAK_LOADGEN_CPU:-0}
SRV_CPU=${SOAK_SERVER_CPU:-1}

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

# ---------------------------------------------------------------- preparation
check_host "$LG_CPU" "$SRV_CPU" curl ss awk
[ "$INTERVAL" -gt 0 ] && [ "$DURATION" -ge "$INTERVAL" ] || die "need SOAK_DURATION >= SOAK_INTERVAL > 0"

WSGATE_BIN=${SOAK_WSGATE_BIN:-$ROOT/target/release/wsgate}
build_binaries "${SOAK_SKIP_BUILD:-}" "${SOAK_WSGATE_BIN:-}"

RUN=$(mktemp -d /tmp/wsgate-soak.XXXXXX)
BIN=$RUN/bin
stage_binaries "$BIN" "$WSGATE_BIN"

cleanup() {
    stop_started
    if [ -n "${SOAK_KEEP:-}" ]; then log "scratch folder kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
set_priority "$NICE"

# ---------------------------------------------------------------- processes
BACKEND_PORT=$((PORT_BASE + 1))
PORT=$((PORT_BASE + 2))
ADMIN_PORT=$((PORT_BASE + 9))

start() { # name port command... → sets LAST_PID
    local name=$1 port=$2
    shift 2
    spawn_pinned "$name" "$port" "$SRV_CPU" "$@"
    log "started $name (pid $LAST_PID) on 127.0.0.1:$port"
}

start echo-backend "$BACKEND_PORT" "$BIN/echo-backend" --listen "127.0.0.1:$BACKEND_PORT"
BACKEND_PID=$LAST_PID

wsgate_config wsgate.yaml "$RUN/wsgate.yaml" "$PORT" "127.0.0.1:$BACKEND_PORT"
printf 'admin:\n  bind: "127.0.0.1:%s"\n' "$ADMIN_PORT" >>"$RUN/wsgate.yaml"
check_wsgate "$BIN/wsgate" "$RUN/wsgate.yaml"
start wsgate "$PORT" "$BIN/wsgate" --config "$RUN/wsgate.yaml"
WSGATE_PID=$LAST_PID
for _ in $(seq 200); do ss -Hltn "sport = :$ADMIN_PORT" | grep -q . && break; sleep 0.05; done

alive() { kill -0 "$WSGATE_PID" 2>/dev/null || { tail -n 20 "$RUN/wsgate.log" >&2; die "wsgate exited"; }; }
fds() { find "/proc/$WSGATE_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# The least of 5 counts 0.1 s apart: a burst of short-lived connections in flight at one
# instant (a stall on a busy machine piles up to SOAK_CHURN_MAX of them, 2 descriptors
# each) is not growth, while a leak raises every sample.
fds_min() {
    local m v
    m=$(fds)
    for _ in 1 2 3 4; do sleep 0.1; v=$(fds); [ "$v" -lt "$m" ] && m=$v; done
    echo "$m"
}
metrics() { curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" || true; }
# Sum of a metric over its label sets, from the text in $1.
msum() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%d", s}' <<<"$1"; }
lg() { taskset -c "$LG_CPU" "$BIN/loadgen" "$@" --addr "127.0.0.1:$PORT"; }

IDLE_RSS=$(rss_kb "$WSGATE_PID")
IDLE_FDS=$(fds)
log "wsgate idle: RSS $IDLE_RSS KiB, $IDLE_FDS descriptors"

# ---------------------------------------------------------------- rate probe
if [ -z "$RATE" ]; then
    rates=()
    for rep in $(seq "$PROBE_REPS"); do
        out=$(lg echo --conns 50 --inflight 1 --size 64 --warmup 0.5 --duration "$PROBE_DUR" \
            --watch "$WSGATE_PID,$BACKEND_PID" 2>"$RUN/probe.err") ||
            die "rate probe failed: $(tail -n 1 "$RUN/probe.err")"
        r=$(kv msg_per_s "$out")
        log "probe #$rep: 64 B echo $r msg/s ($(kv watch_cpu_pct "$out") % CPU wsgate,backend)"
        rates+=("$r")
    done
    MAX=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    RATE=$((MAX / 2))
    log "max 64 B echo rate (median of $PROBE_REPS): $MAX msg/s; soaking at half: $RATE msg/s"
    MAX="$MAX msg/s"
    sleep 2 # the probe's connections drain before the first row
else
    MAX="not measured (SOAK_RATE given)"
fi

# ---------------------------------------------------------------- soak
log "soak: ${DURATION}s, $CONNS long-lived connections at $RATE msg/s of $SIZE B, churn $CHURN_RATE conn/s (≤ $CHURN_MAX open, $CHURN_MSGS msgs each; Close / FIN / RST in turn)"
taskset -c "$LG_CPU" "$BIN/loadgen" soak --addr "127.0.0.1:$PORT" --watch "$WSGATE_PID" \
    --conns "$CONNS" --rate "$RATE" --size "$SIZE" --churn-rate "$CHURN_RATE" \
    --churn-max "$CHURN_MAX" --churn-msgs "$CHURN_MSGS" --interval "$INTERVAL" \
    --duration "$DURATION" --hold-after 10 >"$RUN/soak.out" 2>"$RUN/soak.err" &
LG_PID=$!
STARTED+=("$LG_PID")

echo
echo "wsgate soak: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
echo "max 64 B echo: $MAX; soak: $CONNS conns at $RATE msg/s + churn $CHURN_RATE conn/s; row every ${INTERVAL}s for ${DURATION}s"
echo
# fds − 2 × active: descriptors not held by a relayed connection (client + backend
# socket each); constant unless one leaks (the two are read a moment apart, so churn
# in flight can move it by a few).
echo "| elapsed | RSS KiB | fds | active | fds − 2×active | msg/s | churn/s | errors | hs fail | wsgate CPU % |"
echo "|---|---|---|---|---|---|---|---|---|---|"

ROWS_RSS=()
ROWS_FDS=()
HS0=$(msum "$(metrics)" wsgate_handshake_failures_total)
ROWS_TOTAL=$(( (DURATION + INTERVAL - 1) / INTERVAL ))
for k in $(seq "$ROWS_TOTAL"); do
    # Wait for the k-th tick (bounded: one interval plus slack), then sample next to it.
    deadline=$((SECONDS + INTERVAL + 60))
    while [ "$(grep -c '^TICK ' "$RUN/soak.out")" -lt "$k" ]; do
        kill -0 "$LG_PID" 2>/dev/null || break
        [ "$SECONDS" -lt "$deadline" ] || die "no tick $k from loadgen within $((INTERVAL + 60)) s"
        sleep 0.2
    done
    tick=$(grep '^TICK ' "$RUN/soak.out" | sed -n "${k}p")
    [ -n "$tick" ] || { log "loadgen ended early: $(tail -n 3 "$RUN/soak.err")"; break; }
    alive
    rss=$(rss_kb "$WSGATE_PID")
    fd=$(fds_min)
    m=$(metrics)
    active=$(msum "$m" wsgate_connections_active)
    hs=$(msum "$m" wsgate_handshake_failures_total)
    ROWS_RSS+=("$rss")
    ROWS_FDS+=("$fd")
    el=$(kv elapsed_s "$tick")
    printf '| %d:%02d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' $((el / 60)) $((el % 60)) "$rss" "$fd" \
        "$active" "$((fd - 2 * active))" "$(kv msg_per_s "$tick")" "$(kv churn_per_s "$tick")" "$(kv errors "$tick")" \
        "$((hs - HS0))" "$(kv watch_cpu_pct "$tick")"
    HS0=$hs
done

wait "$LG_PID" || log "loadgen soak exited with an error: $(tail -n 3 "$RUN/soak.err")"
result=$(sed -n 's/^RESULT //p' "$RUN/soak.out")
[ -s "$RUN/soak.err" ] && { log "loadgen errors (first of each interval):"; head -n 20 "$RUN/soak.err" >&2; }

# ---------------------------------------------------------------- after the load
# Every connection should end and every descriptor come back (bounded wait).
for _ in $(seq 100); do
    alive
    after_active=$(msum "$(metrics)" wsgate_connections_active)
    after_fds=$(fds)
    [ "$after_active" = 0 ] && [ "$after_fds" -le "$IDLE_FDS" ] && break
    sleep 0.1
done
after_rss=$(rss_kb "$WSGATE_PID")
final_metrics=$(metrics)

n=${#ROWS_RSS[@]}
[ "$n" -gt 0 ] || die "no rows"
rss_first=${ROWS_RSS[0]}
rss_last=${ROWS_RSS[n - 1]}
rss_max=$(printf '%s\n' "${ROWS_RSS[@]}" | sort -n | tail -n 1)
fd_first=${ROWS_FDS[0]}
fd_last=${ROWS_FDS[n - 1]}
fd_max=$(printf '%s\n' "${ROWS_FDS[@]}" | sort -n | tail -n 1)
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f%%", (b - a) * 100 / a}'; }

echo
echo "totals: ${result:-none}"
echo
echo "drift ($n rows):"
echo "- RSS: first row $rss_first KiB, last row $rss_last KiB ($(pct "$rss_first" "$rss_last")), max $rss_max KiB ($(pct "$rss_first" "$rss_max") over the first)"
# A leak keeps growing; a one-off step (the allocator keeping what a stall's backlog
# needed, on a busy machine) does not, so the second half is shown on its own.
rss_mid=${ROWS_RSS[n / 2]}
echo "- RSS, second half: row $((n / 2 + 1)) $rss_mid KiB, last row $rss_last KiB ($(pct "$rss_mid" "$rss_last"))"
echo "- descriptors: first row $fd_first, last row $fd_last ($(pct "$fd_first" "$fd_last"), $((fd_last - fd_first)) descriptors), max $fd_max"
echo "- after the load: $after_active active, $after_fds descriptors (idle before the run: $IDLE_FDS), RSS $after_rss KiB (idle before: $IDLE_RSS KiB)"
echo "- outcomes: $(grep -E '^wsgate_connections_total\{' <<<"$final_metrics" | sed -E 's/.*outcome="([^"]*)".* ([0-9.e+]+)$/\1=\2/' | sort | tr '\n' ' ')"

rss_ok=$(awk -v a="$rss_first" -v b="$rss_last" -v g="$RSS_GOAL" 'BEGIN {print ((b - a) * 100 / a <= g) ? 1 : 0}')
fd_ok=$(( fd_last - fd_first <= FD_SLACK ? 1 : 0 ))
back_ok=$(( after_active == 0 && after_fds <= IDLE_FDS ? 1 : 0 ))
verdict() { [ "$1" = 1 ] && echo pass || echo FAIL; }
echo
echo "verdict: RSS within ${RSS_GOAL}% $(verdict "$rss_ok"); descriptors flat (≤ +$FD_SLACK) $(verdict "$fd_ok"); back to idle after the load $(verdict "$back_ok")"
[ "$rss_ok$fd_ok$back_ok" = 111 ]
