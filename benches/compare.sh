#!/usr/bin/env bash
# wsgate vs nginx vs HAProxy, all on loopback, one table.
#
#   bash benches/compare.sh
#
# Builds wsgate and the load generator (benches/loadgen) in release mode, installs
# nginx-light and haproxy from Debian if missing, starts the echo backend and every
# proxy (one worker each, configs rendered from benches/peers/), pins the load
# generator to CPU $BENCH_LOADGEN_CPU and backend + proxy to CPU $BENCH_SERVER_CPU, and
# measures for each target: 64 B msg/s, 64 KiB MB/s, p50/p99 at a fixed rate, new
# connections/s (rates $BENCH_REPS times, latency $BENCH_LAT_REPS times, targets
# interleaved in a rotated order each repeat), and RSS per idle connection; then the same
# with TLS on the client hop; then the HTTP, HTTP/2, JWT and registry measures. Every
# timed run also records the 1-min load average and the CPU time of other processes on
# both cores. Prints one markdown report, writes it to benches/results/latest.md (raw
# results beside it) and the run's duration (about 14 min of measures with the defaults
# on 2 cores, plus the builds).
#
# Knobs (environment):
#   BENCH_DURATION=4  BENCH_WARMUP=0.5  BENCH_REPS=3      seconds per measure, repeats
#   BENCH_LAT_REPS=7   repeats of the latency measure (a p99 each; the report takes the
#                      median of the per-repeat wsgate ÷ best-peer ratios)
#   BENCH_ECHO_CONNS=50  BENCH_BIG_CONNS=50  BENCH_BIG_SIZE=65536
#   BENCH_LAT_CONNS=50  BENCH_LAT_RATE=5000  BENCH_CONN_CONCURRENCY=32
#   BENCH_IDLE_CONNS=9000  BENCH_IDLE_HOLD=3
#   BENCH_TARGETS="direct wsgate nginx haproxy"  (also: caddy; wsgate-nometrics =
#                    wsgate with metrics.per_frame off, to see what counting costs;
#                    wsgate-fwd = wsgate with forward auth to a local auth service, the
#                    http-backend answering 200: BENCH_TARGETS="direct wsgate wsgate-fwd"
#                    BENCH_MEASURES=connrate BENCH_TLS_TARGETS="" for its connection cost)
#   BENCH_TLS_TARGETS="wsgate nginx"  (haproxy too if wanted; "" skips the TLS suite)
#   BENCH_MEASURES="echo64 echo64k latency connrate idle idle_used connauth http1 http2 h2echo h2idle"
#                    (idle: connections that never sent anything; idle_used: after one
#                    64 B echo each, so per-connection buffers have been touched;
#                    http1: wrk keep-alive GETs; http2: h2load over TLS + ALPN h2;
#                    h2echo: 64 B WebSocket echo over HTTP/2 (RFC 8441) vs HTTP/1.1, both
#                    TLS; h2idle: RSS per idle WebSocket on h2 streams vs on h1 over TLS.
#                    BENCH_MEASURES="http1 http2 h2echo h2idle" runs only these, ~4 min;
#                    connauth: new connections/s with authentication at the door, and
#                    the proxy's CPU µs per connection: JWT (ES256, RS256, JWKS cached)
#                    against none; needs node for the keys and tokens;
#                    registry: benches/registry.sh, the admin registry's instructions per
#                    insert/listing/removal under callgrind and bytes per entry)
#   BENCH_AUTH_TARGETS="wsgate wsgate-jwt-es256 wsgate-jwt-rs256 wsgate-fwd"   (targets of connauth)
#   BENCH_HTTP_TARGETS="direct wsgate wsgate-pool32 nginx haproxy"  BENCH_H2_TARGETS="wsgate nginx"
#                    (wsgate: pool of 64 idle backend connections like nginx's keepalive 64;
#                    wsgate-pool32: wsgate.yaml with the default pool, which was 32 idle
#                    connections when the README table was measured and is 256 since)
#   BENCH_H2WS_TARGETS="wsgate haproxy"   (targets of http1, http2, h2echo/h2idle)
#   BENCH_HTTP_CONNS=50  BENCH_HTTP_SIZE=100   wrk connections, response body bytes
#   BENCH_H2_CONNS=10  BENCH_H2_STREAMS=10     h2load -c, -m (streams per connection)
#   BENCH_H2ECHO_STREAMS=50  BENCH_H2ECHO_CONNS="1 10"   h2echo streams, connection counts
#   BENCH_H2IDLE_STREAMS=5000  BENCH_H2IDLE_CONNS=50   (100 streams each: HAProxy allows 100)
#   BENCH_NICE=-10   scheduler priority of this run (autogroup + nice; "" leaves it)
#   BENCH_PORT_BASE=18700  BENCH_LOADGEN_CPU=0  BENCH_SERVER_CPU=1
#   BENCH_WSGATE_EXTRA=""  YAML lines appended to the wsgate configs
#   BENCH_SKIP_BUILD=1     use the binaries already built
#   BENCH_WSGATE_BIN=PATH  measure this wsgate binary instead of building the work tree
#                          (e.g. a build of a clean commit while src/ is being edited)
#   BENCH_BASE_BIN=PATH    another wsgate binary (say, a build of the previous commit),
#                          measured as target `wsgate-base` in the same run, interleaved
#                          with the others: add it to BENCH_TARGETS to compare two builds
#   BENCH_BASE_ENV="K=V …" environment of wsgate-base; without BENCH_BASE_BIN it is the
#                          same binary as wsgate, so settings read from the environment
#                          can be compared in one run
#   BENCH_KEEP=1           keep the scratch folder (configs, logs, raw results)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T_START=$SECONDS
DUR=${BENCH_DURATION:-4}
WARMUP=${BENCH_WARMUP:-0.5}
REPS=${BENCH_REPS:-3}
LAT_REPS=${BENCH_LAT_REPS:-7}
ECHO_CONNS=${BENCH_ECHO_CONNS:-50}
BIG_CONNS=${BENCH_BIG_CONNS:-50}
BIG_SIZE=${BENCH_BIG_SIZE:-65536}
LAT_CONNS=${BENCH_LAT_CONNS:-50}
LAT_RATE=${BENCH_LAT_RATE:-5000}
CONN_CONC=${BENCH_CONN_CONCURRENCY:-32}
IDLE_CONNS=${BENCH_IDLE_CONNS:-9000}
IDLE_HOLD=${BENCH_IDLE_HOLD:-3}
TARGETS=${BENCH_TARGETS:-direct wsgate nginx haproxy}
TLS_TARGETS=${BENCH_TLS_TARGETS-wsgate nginx}
MEASURES=${BENCH_MEASURES:-echo64 echo64k latency connrate idle idle_used connauth http1 http2 h2echo h2idle registry}
AUTH_TARGETS=${BENCH_AUTH_TARGETS:-wsgate wsgate-jwt-es256 wsgate-jwt-rs256 wsgate-fwd}
HTTP_TARGETS=${BENCH_HTTP_TARGETS:-direct wsgate wsgate-pool32 nginx haproxy}
H2_TARGETS=${BENCH_H2_TARGETS:-wsgate nginx}
H2WS_TARGETS=${BENCH_H2WS_TARGETS:-wsgate haproxy}
HTTP_CONNS=${BENCH_HTTP_CONNS:-50}
HTTP_SIZE=${BENCH_HTTP_SIZE:-100}
H2_CONNS=${BENCH_H2_CONNS:-10}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
H2ECHO_STREAMS=${BENCH_H2ECHO_STREAMS:-50}
H2ECHO_CONNS=${BENCH_H2ECHO_CONNS:-1 10}
H2IDLE_STREAMS=${BENCH_H2IDLE_STREAMS:-5000}
H2IDLE_CONNS=${BENCH_H2IDLE_CONNS:-50}
NICE=${BENCH_NICE--10}
PORT_BASE=${BENCH_PORT_BASE:-18700}
LG_CPU=${BENCH_LOADGEN_CPU:-0}
SRV_CPU=${BENCH_SERVER_CPU:-1}

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

# ---------------------------------------------------------------- preparation
check_host "$LG_CPU" "$SRV_CPU" openssl python3 ss

has_measure() { case " $MEASURES " in *" $1 "*) return 0 ;; esac; return 1; }
ws_measures=0 # any of the WebSocket suites' measures selected?
for m in echo64 echo64k latency connrate idle idle_used; do has_measure "$m" && ws_measures=1; done
[ $ws_measures = 1 ] || { TARGETS=""; TLS_TARGETS=""; }
has_measure http1 || HTTP_TARGETS=""
if has_measure http1 || has_measure http2; then
    [[ $DUR =~ ^[0-9]+$ ]] || die "BENCH_DURATION must be whole seconds for http1/http2 (wrk, h2load): $DUR"
fi
has_measure http2 || H2_TARGETS=""
has_measure h2echo || has_measure h2idle || H2WS_TARGETS=""
has_measure connauth || AUTH_TARGETS=""
if [ -n "$AUTH_TARGETS" ] && ! command -v node >/dev/null; then
    log "connauth skipped: node (for the JWT keys and tokens) not found"
    AUTH_TARGETS=""
fi

want_pkgs=()
need() { case " $TARGETS $TLS_TARGETS $HTTP_TARGETS $H2_TARGETS $H2WS_TARGETS " in *" $1 "*) command -v "$2" >/dev/null || want_pkgs+=("$3") ;; esac; }
need nginx nginx nginx-light
need haproxy haproxy haproxy
need caddy caddy caddy
if [ -n "$HTTP_TARGETS" ]; then command -v wrk >/dev/null || want_pkgs+=(wrk); fi
if [ -n "$H2_TARGETS" ]; then command -v h2load >/dev/null || want_pkgs+=(nghttp2-client); fi
if has_measure registry; then command -v valgrind >/dev/null || want_pkgs+=(valgrind); fi
if [ ${#want_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${want_pkgs[*]}; run as root or install them"
    log "installing ${want_pkgs[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want_pkgs[@]}" >/dev/null
fi

WSGATE_BIN=${BENCH_WSGATE_BIN:-$ROOT/target/release/wsgate}
build_binaries "${BENCH_SKIP_BUILD:-}" "${BENCH_WSGATE_BIN:-}"
if has_measure registry && [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    REGISTRY_BUILD_ONLY=1 bash "$ROOT/benches/registry.sh" || die "benches/registry.sh could not build its test"
fi
T_MEASURE=$SECONDS # builds done

RUN=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
BIN=$RUN/bin
mkdir -p "$ROOT/benches/results"
stage_binaries "$BIN" "$WSGATE_BIN"
if [ -n "${BENCH_BASE_BIN:-}" ]; then
    cp "$BENCH_BASE_BIN" "$BIN/wsgate-base"
elif [ -n "${BENCH_BASE_ENV:-}" ]; then # the same build, started with other settings
    cp "$WSGATE_BIN" "$BIN/wsgate-base"
fi
RESULTS=$RUN/results.tsv
HTTP_RESULTS=$RUN/http.tsv # the HTTP and HTTP/2 measures, reported by report_http.py
: >"$RESULTS"
: >"$HTTP_RESULTS"

declare -A PID=()      # target name -> PID whose CPU and RSS are measured
declare -A PORT=()     # target name -> listening port
declare -A MAIN=()     # target name -> PID we started (nginx: the master)

cleanup() {
    stop_started
    if [ -n "${BENCH_KEEP:-}" ]; then log "scratch folder kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
set_priority "$NICE"

# ---------------------------------------------------------------- certificates
TLSDIR=$RUN/tls
bash "$ROOT/benches/make-certs.sh" "$TLSDIR"

# ---------------------------------------------------------------- processes
BACKEND_PORT=$((PORT_BASE + 1))
HTTP_BACKEND_PORT=$((PORT_BASE + 21))
declare -A PORT_OF=([direct]=1 [wsgate]=2 [wsgate-nometrics]=6 [wsgate-base]=7 [wsgate-jwt-es256]=8 [wsgate-jwt-rs256]=9 [jwks]=10 [wsgate-fwd]=11 [nginx]=3 [haproxy]=4 [caddy]=5 [wsgate-tls]=12 [nginx-tls]=13 [haproxy-tls]=14
    [http-direct]=21 [wsgate-http]=22 [nginx-http]=23 [haproxy-http]=24 [wsgate-pool32-http]=25 [wsgate-h2]=32 [nginx-h2]=33)

render() { # template out port [scratch dir for @RUN@] [backend port]
    sed -e "s|@RUN@|${4:-$RUN}|g" -e "s|@PORT@|$3|g" -e "s|@BACKEND@|127.0.0.1:${5:-$BACKEND_PORT}|g" \
        -e "s|@JWKS@|http://127.0.0.1:$((PORT_BASE + ${PORT_OF[jwks]}))/jwks.json|g" \
        -e "s|@CERT@|$TLSDIR/server.pem|g" -e "s|@KEY@|$TLSDIR/server.key|g" \
        -e "s|@PEM@|$TLSDIR/server-with-key.pem|g" "$ROOT/benches/peers/$1" >"$RUN/$2"
}

start() { # name port command...
    local name=$1 port=$2
    shift 2
    spawn_pinned "$name" "$port" "$SRV_CPU" "$@"
    local pid=$LAST_PID
    MAIN[$name]=$pid
    PID[$name]=$pid
    PORT[$name]=$port
    # nginx: connections live in the (single) worker, a child of the master.
    if [ "${name%%-*}" = nginx ]; then
        PID[$name]=""
        for _ in $(seq 100); do
            PID[$name]=$(pgrep -P "$pid" | head -n 1) && [ -n "${PID[$name]}" ] && break
            sleep 0.05
        done
        [ -n "${PID[$name]}" ] || die "no nginx worker under $pid"
    fi
    log "started $name (pid ${PID[$name]}) on 127.0.0.1:$port"
}

stop_target() { # name: stops it and waits until its port is free
    local name=$1 pid=${MAIN[$1]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_started "$pid"
    for _ in $(seq 100); do port_free "${PORT[$name]}" && break; sleep 0.05; done
}

start_target() { # name
    local name=$1 port=$((PORT_BASE + ${PORT_OF[$1]}))
    case $name in
    direct) start direct "$port" "$BIN/echo-backend" --listen "127.0.0.1:$port" ;;
    http-direct) start http-direct "$port" "$BIN/http-backend" --listen "127.0.0.1:$port" --size "$HTTP_SIZE" ;;
    wsgate-http | wsgate-h2 | wsgate-pool32-http) # plain requests on a route go to its backend URL
        local tpl=$name.yaml
        [ "$name" = wsgate-pool32-http ] && tpl=wsgate.yaml # the default pool (256 idle per backend now)
        render "$tpl" "$name.yaml" "$port" "" "$HTTP_BACKEND_PORT"
        [ -n "${BENCH_WSGATE_EXTRA:-}" ] && printf '%s\n' "$BENCH_WSGATE_EXTRA" >>"$RUN/$name.yaml"
        check_wsgate "$BIN/wsgate" "$RUN/$name.yaml"
        start "$name" "$port" "$BIN/wsgate" --config "$RUN/$name.yaml"
        ;;
    nginx-http | nginx-h2)
        mkdir -p "$RUN/$name"
        render "$name.conf" "$name/nginx.conf" "$port" "$RUN/$name" "$HTTP_BACKEND_PORT"
        start "$name" "$port" nginx -p "$RUN/$name/" -e "$RUN/$name/error.log" -c "$RUN/$name/nginx.conf"
        ;;
    haproxy-http)
        render "$name.cfg" "$name.cfg" "$port" "" "$HTTP_BACKEND_PORT"
        start "$name" "$port" haproxy -db -f "$RUN/$name.cfg"
        ;;
    wsgate-base)
        [ -x "$BIN/wsgate-base" ] || die "target wsgate-base needs BENCH_BASE_BIN"
        render wsgate.yaml "$name.yaml" "$port"
        [ -n "${BENCH_WSGATE_EXTRA:-}" ] && printf '%s\n' "$BENCH_WSGATE_EXTRA" >>"$RUN/$name.yaml"
        # shellcheck disable=SC2086 # BENCH_BASE_ENV: space-separated NAME=value words
        start "$name" "$port" env ${BENCH_BASE_ENV:-} "$BIN/wsgate-base" --config "$RUN/$name.yaml"
        ;;
    jwks) # the JWKS of the JWT targets, fetched once at their start
        mkdir -p "$RUN/jwt"
        node "$ROOT/benches/jwt-fixture.mjs" "$RUN/jwt" || die "benches/jwt-fixture.mjs failed"
        start jwks "$port" python3 -m http.server "$port" --bind 127.0.0.1 --directory "$RUN/jwt"
        ;;
    wsgate-jwt-es256 | wsgate-jwt-rs256 | wsgate-fwd)
        if [ "$name" = wsgate-fwd ]; then # every upgrade asks the http-backend (always 200) first
            render wsgate.yaml "$name.yaml" "$port"
            sed -i "s|^    backends: .*|&\n    forward_auth: { url: \"http://127.0.0.1:$HTTP_BACKEND_PORT/auth\" }|" "$RUN/$name.yaml"
        else
            [ -n "${PID[jwks]:-}" ] || start_target jwks
            render wsgate-jwt.yaml "$name.yaml" "$port"
        fi
        [ -n "${BENCH_WSGATE_EXTRA:-}" ] && printf '%s\n' "$BENCH_WSGATE_EXTRA" >>"$RUN/$name.yaml"
        check_wsgate "$BIN/wsgate" "$RUN/$name.yaml"
        start "$name" "$port" "$BIN/wsgate" --config "$RUN/$name.yaml"
        ;;
    wsgate | wsgate-tls | wsgate-nometrics)
        render "${name%-nometrics}.yaml" "$name.yaml" "$port"
        [ -n "${BENCH_WSGATE_EXTRA:-}" ] && printf '%s\n' "$BENCH_WSGATE_EXTRA" >>"$RUN/$name.yaml"
        # The cost of per-frame counting: the same wsgate with it switched off.
        [ "$name" = wsgate-nometrics ] && printf 'metrics:\n  per_frame: false\n' >>"$RUN/$name.yaml"
        check_wsgate "$BIN/wsgate" "$RUN/$name.yaml"
        start "$name" "$port" "$BIN/wsgate" --config "$RUN/$name.yaml"
        ;;
    nginx | nginx-tls)
        mkdir -p "$RUN/$name"
        render "$name.conf" "$name/nginx.conf" "$port" "$RUN/$name"
        start "$name" "$port" nginx -p "$RUN/$name/" -e "$RUN/$name/error.log" -c "$RUN/$name/nginx.conf"
        ;;
    haproxy | haproxy-tls)
        render "$name.cfg" "$name.cfg" "$port"
        start "$name" "$port" haproxy -db -f "$RUN/$name.cfg"
        ;;
    caddy)
        mkdir -p "$RUN/caddy"
        render Caddyfile caddy/Caddyfile "$port"
        HOME=$RUN/caddy XDG_DATA_HOME=$RUN/caddy XDG_CONFIG_HOME=$RUN/caddy \
            start caddy "$port" caddy run --adapter caddyfile --config "$RUN/caddy/Caddyfile"
        ;;
    *) die "unknown target $name" ;;
    esac
}

if [ -n "$TARGETS$TLS_TARGETS$H2WS_TARGETS" ]; then start_target direct; fi
# wsgate-fwd's auth service is the plain HTTP backend.
case " $TARGETS $AUTH_TARGETS " in *" wsgate-fwd "*) start_target http-direct ;; esac
for t in $TARGETS; do [ "$t" = direct ] || start_target "$t"; done
for t in $TLS_TARGETS; do start_target "$t-tls"; done
if [ -n "$AUTH_TARGETS" ] && [ -z "${PID[direct]:-}" ]; then start_target direct; fi
for t in $AUTH_TARGETS; do [ -n "${PID[$t]:-}" ] || start_target "$t"; done
for t in $H2WS_TARGETS; do [ -n "${PID[$t-tls]:-}" ] || start_target "$t-tls"; done
if [ -n "$HTTP_TARGETS$H2_TARGETS" ] && [ -z "${PID[http-direct]:-}" ]; then start_target http-direct; fi
for t in $HTTP_TARGETS; do [ "$t" = direct ] || start_target "$t-http"; done
for t in $H2_TARGETS; do start_target "$t-h2"; done

# ---------------------------------------------------------------- measuring
CLK_TCK=$(getconf CLK_TCK)

# watched_ticks PID,PID...: their CPU ticks together.
watched_ticks() {
    local p sum=0
    for p in ${1//,/ }; do sum=$((sum + $(cpu_ticks "$p"))); done
    echo "$sum"
}

# lg SUITE TARGET MEASURE REP loadgen-args...  → one line in $RESULTS
#
# Besides the load generator's result, the machine's other load over the run: the CPU
# time of everything but the measured processes, per core, as % of that core
# (other_srv_cpu_pct: the server core's busy time minus the proxy's and the backend's;
# other_lg_cpu_pct: the load generator core's minus the load generator's). Interrupt work
# the kernel charges to no process counts as other load too.
lg() {
    local suite=$1 target=$2 measure=$3 rep=$4
    shift 4
    local watch=${PID[direct]} tls=() load out w0 w1 s0 s1 l0 l1 t0 t1
    [ "$target" = direct ] || watch="${PID[$target]},${PID[direct]}"
    case $target in *-tls) tls=(--tls-ca "$TLSDIR/ca.pem" --sni localhost) ;; esac
    case $target in wsgate-jwt-*) tls+=(--bearer-file "$RUN/jwt/${target#wsgate-jwt-}.token") ;; esac
    load=$(cut -d' ' -f1 /proc/loadavg)
    w0=$(watched_ticks "$watch") s0=$(busy_ticks "$SRV_CPU") l0=$(busy_ticks "$LG_CPU") t0=$(date +%s.%N)
    if out=$({ TIMEFORMAT='%U %S'; time taskset -c "$LG_CPU" "$BIN/loadgen" "$@" --addr "127.0.0.1:${PORT[$target]}" \
        "${tls[@]}" --watch "$watch" --warmup "$WARMUP" --duration "$DUR" 2>"$RUN/loadgen.err"; } 2>"$RUN/lg.time"); then
        w1=$(watched_ticks "$watch") s1=$(busy_ticks "$SRV_CPU") l1=$(busy_ticks "$LG_CPU") t1=$(date +%s.%N)
        out=$(grep '^RESULT ' <<<"$out" | sed 's/^RESULT //')
        out+=$(awk -v w="$((w1 - w0))" -v s="$((s1 - s0))" -v l="$((l1 - l0))" -v t0="$t0" -v t1="$t1" \
            -v hz="$CLK_TCK" -v lg="$(cat "$RUN/lg.time")" 'BEGIN {
                split(lg, c, " "); wall = (t1 - t0) * hz; if (wall <= 0) wall = 1
                o = s - w; g = l - (c[1] + c[2]) * hz
                printf " other_srv_cpu_pct=%.1f other_lg_cpu_pct=%.1f", (o > 0 ? o : 0) * 100 / wall, (g > 0 ? g : 0) * 100 / wall
            }')
    else
        out="FAILED $(tail -n 1 "$RUN/loadgen.err")"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$suite" "$target" "$measure" "$rep" "$load" "$out" >>"$RESULTS"
    log "$(printf '%-5s %-11s %-8s #%s load %-5s %s' "$suite" "$target" "$measure" "$rep" "$load" \
        "$(tr ' ' '\n' <<<"$out" | grep -E '^(msg_per_s|mb_per_s|p50_us|p99_us|conn_per_s|cpu_pct|watch_cpu_pct|other_srv_cpu_pct|FAILED)' | tr '\n' ' ')")"
}

measure_args() { # measure → loadgen mode and options
    case $1 in
    echo64) echo "echo --conns $ECHO_CONNS --inflight 1 --size 64" ;;
    echo64k) echo "echo --conns $BIG_CONNS --inflight 1 --size $BIG_SIZE" ;;
    latency) echo "latency --conns $LAT_CONNS --rate $LAT_RATE --size 64" ;;
    connrate) echo "connrate --concurrency $CONN_CONC" ;;
    esac
}

# RSS of the target's process, freshly restarted, before and after opening
# $IDLE_CONNS connections (with one echoed message each if ECHO_FIRST is true), and the
# kernel's memory for the TCP sockets they added, machine-wide as benches/sockmem.sh
# counts it: the slab caches of a socket (/proc/slabinfo, root only) and socket buffer
# pages (/proc/net/sockstat `mem`). Direct holds 2 sockets per connection, a proxy 4.
idle() { # suite target measure echo_first
    local suite=$1 target=$2 measure=$3 echo_first=$4 tls=() before after out load pid
    local slab0 slab1 mem0 mem1 sock0 sock1 page_kib=$(($(getconf PAGESIZE) / 1024))
    stop_target "$target"
    start_target "$target"
    pid=${PID[$target]}
    sleep 0.5
    case $target in *-tls) tls=(--tls-ca "$TLSDIR/ca.pem" --sni localhost) ;; esac
    load=$(cut -d' ' -f1 /proc/loadavg)
    # IDLE_N and IDLE_MODE (loadgen mode and options) let h2idle reuse this.
    local n=${IDLE_N:-$IDLE_CONNS} args=(idle --conns "${IDLE_N:-$IDLE_CONNS}" --hold "$IDLE_HOLD" --echo-first "$echo_first")
    [ -n "${IDLE_MODE:-}" ] && read -r -a args <<<"$IDLE_MODE"
    before=$(rss_kb "$pid") slab0=$(slab_kib) mem0=$(tcp_field mem) sock0=$(tcp_field alloc)
    taskset -c "$LG_CPU" "$BIN/loadgen" "${args[@]}" \
        --addr "127.0.0.1:${PORT[$target]}" "${tls[@]}" >"$RUN/idle.out" 2>"$RUN/idle.err" &
    local lgpid=$!
    for _ in $(seq 2400); do
        grep -q '^ALL_OPEN' "$RUN/idle.out" && break
        kill -0 "$lgpid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1 # let the proxy finish the last handshakes' bookkeeping
    after=$(rss_kb "$pid") slab1=$(slab_kib) mem1=$(tcp_field mem) sock1=$(tcp_field alloc)
    if wait "$lgpid"; then
        out=$(awk -v b="$before" -v a="$after" -v n="$n" -v sl="$((slab1 - slab0))" -v m="$(((mem1 - mem0) * page_kib))" \
            -v so="$((sock1 - sock0))" -v slabs="$([ -r /proc/slabinfo ] && echo 1 || echo 0)" \
            'END {printf "mode='"${args[0]}"' echo_first='"$echo_first"' conns=%d rss_before_kb=%d rss_after_kb=%d kib_per_conn=%.2f tcp_sockets_per_conn=%.2f kernel_buf_kib_per_conn=%.2f", n, b, a, (a-b)/n, so/n, m/n
                  if (slabs) printf " kernel_slab_kib_per_conn=%.2f", sl/n}' </dev/null)
    else
        out="FAILED $(tail -n 1 "$RUN/idle.err")"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$suite" "$target" "$measure" 1 "$load" "$out" >>"$RESULTS"
    log "$(printf '%-5s %-11s %-9s load %-5s %s' "$suite" "$target" "$measure" "$load" "$out")"
    sleep 2 # resets drain through the proxy before the next measure
}

# rotate LIST K: the list started at its K-th element, so no target is always first.
rotate() {
    local -a l
    read -r -a l <<<"$1"
    local k=$(($2 % ${#l[@]}))
    echo "${l[@]:k}" "${l[@]:0:k}"
}

{
    echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1) x $(nproc)"
    echo "kernel=$(uname -r)"
    if [ -n "${BENCH_WSGATE_BIN:-}" ]; then
        echo "commit=binary $BENCH_WSGATE_BIN"
    else
        echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) (+$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null | wc -l) files changed in src/, Cargo.toml)"
    fi
    echo "nginx=$(nginx -v 2>&1 | sed 's|.*/||')"
    echo "haproxy=$(haproxy -v 2>/dev/null | head -n 1 | awk '{print $3}')"
    echo "settings=duration ${DUR}s + warmup ${WARMUP}s, ${REPS} reps; 64 B: ${ECHO_CONNS} conns x 1; 64 KiB: ${BIG_CONNS} conns x 1; latency: ${LAT_CONNS} conns at ${LAT_RATE} msg/s, ${LAT_REPS} reps; connrate: ${CONN_CONC} concurrent; idle: ${IDLE_CONNS} conns; nice ${NICE:-none}; loadgen CPU ${LG_CPU}, backend + proxy CPU ${SRV_CPU}"
} >"$RUN/meta.txt"

suite() { # name targets...
    local name=$1
    shift
    local targets="$*" rep m t
    # Memory first, each target restarted fresh before each measure.
    for t in $targets; do
        if has_measure idle; then idle "$name" "$t" idle false; fi
        if has_measure idle_used; then idle "$name" "$t" idle_used true; fi
    done
    for rep in $(seq "$REPS"); do
        for m in echo64 echo64k connrate; do
            has_measure "$m" || continue
            # shellcheck disable=SC2046
            for t in $(rotate "$targets" $((rep - 1))); do lg "$name" "$t" "$m" "$rep" $(measure_args "$m"); done
        done
    done
    # The tail is the noisiest figure: more repeats, each a p99 of its own with every
    # target run back to back in a rotated order, so the report can take a ratio per
    # repeat (against the peers measured minutes, not tens of minutes, apart).
    if has_measure latency; then
        for rep in $(seq "$LAT_REPS"); do
            # shellcheck disable=SC2046
            for t in $(rotate "$targets" $((rep - 1))); do lg "$name" "$t" latency "$rep" $(measure_args latency); done
        done
    fi
}

# ---------------------------------------------------------------- HTTP and HTTP/2
# wrk or h2load against one target, with the proxy's and the backend's CPU time over
# the run: one line in $HTTP_RESULTS. The tool's own CPU comes from bash's `time`.
http_run() { # suite target measure rep tool-args...
    local suite=$1 target=$2 measure=$3 rep=$4 pid bpid p0 b0 p1 b1 t0 t1 load out
    shift 4
    pid=${PID[$target]} bpid=${PID[http-direct]}
    load=$(cut -d' ' -f1 /proc/loadavg)
    p0=$(cpu_ticks "$pid") b0=$(cpu_ticks "$bpid") t0=$(date +%s.%N)
    { TIMEFORMAT='%U %S'; time taskset -c "$LG_CPU" timeout $((DUR + 30)) "$@" >"$RUN/http.out" 2>&1; } 2>"$RUN/http.time" ||
        { out="FAILED $(tail -n 1 "$RUN/http.out")"; }
    p1=$(cpu_ticks "$pid") b1=$(cpu_ticks "$bpid") t1=$(date +%s.%N)
    if [ -z "${out:-}" ]; then
        out=$(awk -v p="$((p1 - p0))" -v b="$((b1 - b0))" -v t0="$t0" -v t1="$t1" -v tool="$1" -v lg="$(cat "$RUN/http.time")" '
            function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
            /^Requests\/sec:/ { rps = $2 }
            /requests in/ { reqs = $1 }
            /^ +50%/ { p50 = us($2) }
            /^ +99%/ { p99 = us($2) }
            /Non-2xx/ { err += $NF }
            /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
            /^finished in/ { gsub(/,/, ""); rps = $4 }
            /^requests:/ { reqs = $8; err += $10 + $12 + $14 }
            /^time for request:/ { mean = us($6) }
            END {
                if (reqs == 0) { print "FAILED no requests parsed"; exit }
                split(lg, c, " "); wall = t1 - t0
                printf "mode=%s reqs=%d req_per_s=%.0f p50_us=%s p99_us=%s mean_us=%s errors=%d proxy_us_per_op=%.2f backend_us_per_op=%.2f cpu_pct=%.1f watch_cpu_pct=%.1f,%.1f",
                    tool, reqs, rps, (p50 == "" ? "-" : p50), (p99 == "" ? "-" : p99), (mean == "" ? "-" : mean), err,
                    p * 10000 / reqs, b * 10000 / reqs, (c[1] + c[2]) / wall * 100, p / wall, b / wall
            }' "$RUN/http.out")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$suite" "$target" "$measure" "$rep" "$load" "$out" >>"$HTTP_RESULTS"
    log "$(printf '%-5s %-12s %-8s #%s load %-5s %s' "$suite" "$target" "$measure" "$rep" "$load" \
        "$(tr ' ' '\n' <<<"$out" | grep -E '^(req_per_s|p99_us|mean_us|errors|proxy_us_per_op|cpu_pct|FAILED)' | tr '\n' ' ')")"
}

wrk_args() { echo "wrk -t1 -c$HTTP_CONNS -d$1s --latency http://127.0.0.1:${PORT[$2]}/"; }
h2load_args() { echo "h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D $1 https://127.0.0.1:${PORT[$2]}/"; }

http_suites() {
    local rep t tl=() h2l=() wsl=()
    for t in $HTTP_TARGETS; do if [ "$t" = direct ]; then tl+=(http-direct); else tl+=("$t-http"); fi; done
    for t in $H2_TARGETS; do h2l+=("$t-h2"); done
    for t in $H2WS_TARGETS; do wsl+=("$t-tls"); done
    # One short run per target first (connections, pools, caches), not recorded.
    # shellcheck disable=SC2046
    for t in "${tl[@]}"; do taskset -c "$LG_CPU" $(wrk_args 1 "$t") >/dev/null 2>&1 || true; done
    # shellcheck disable=SC2046
    for t in "${h2l[@]}"; do taskset -c "$LG_CPU" $(h2load_args 1 "$t") >/dev/null 2>&1 || true; done
    for rep in $(seq "$REPS"); do
        if [ ${#tl[@]} -gt 0 ]; then
            # shellcheck disable=SC2046
            for t in $(rotate "${tl[*]}" $((rep - 1))); do http_run http1 "$t" http1 "$rep" $(wrk_args "$DUR" "$t"); done
        fi
        if [ ${#h2l[@]} -gt 0 ]; then
            # shellcheck disable=SC2046
            for t in $(rotate "${h2l[*]}" $((rep - 1))); do http_run http2 "$t" http2 "$rep" $(h2load_args "$DUR" "$t"); done
        fi
        if [ ${#wsl[@]} -gt 0 ] && has_measure h2echo; then
            local v variants=("h1 echo --conns $H2ECHO_STREAMS --inflight 1 --size 64")
            for c in $H2ECHO_CONNS; do variants+=("h2x$c h2echo --streams $H2ECHO_STREAMS --h2conns $c --size 64"); done
            for t in $(rotate "${wsl[*]}" $((rep - 1))); do
                for v in "${variants[@]}"; do
                    # shellcheck disable=SC2086
                    RESULTS=$HTTP_RESULTS lg h2ws "$t" "h2echo_${v%% *}" "$rep" ${v#* }
                done
            done
        fi
    done
    if has_measure h2idle; then
        for t in "${wsl[@]}"; do
            RESULTS=$HTTP_RESULTS IDLE_N=$H2IDLE_STREAMS idle h2ws "$t" h2idle_h1 false
            RESULTS=$HTTP_RESULTS IDLE_N=$H2IDLE_STREAMS \
                IDLE_MODE="h2idle --streams $H2IDLE_STREAMS --h2conns $H2IDLE_CONNS --hold $IDLE_HOLD" idle h2ws "$t" h2idle false
        done
    fi
}

if [ -n "$TARGETS" ]; then
    log "plain suite: $TARGETS ($REPS reps of ${DUR}s per measure)"
    # shellcheck disable=SC2086 # target lists are space-separated words
    suite plain $TARGETS
fi
if [ -n "$TLS_TARGETS" ]; then
    tls_list=""
    for t in $TLS_TARGETS; do tls_list+="$t-tls "; done
    log "TLS suite: $tls_list"
    # shellcheck disable=SC2086
    suite tls $tls_list
fi
if [ -n "$AUTH_TARGETS" ]; then
    log "auth suite (connauth): $AUTH_TARGETS"
    for rep in $(seq "$REPS"); do
        # shellcheck disable=SC2046
        for t in $(rotate "$AUTH_TARGETS" $((rep - 1))); do lg auth "$t" connrate "$rep" $(measure_args connrate); done
    done
fi
if [ -n "$HTTP_TARGETS$H2_TARGETS$H2WS_TARGETS" ]; then
    log "HTTP suites: http1 [$HTTP_TARGETS] http2 [$H2_TARGETS] h2 WebSockets [$H2WS_TARGETS]"
    http_suites
fi
if has_measure registry; then
    log "registry: benches/registry.sh (instructions under callgrind, RSS per entry)"
    out=""
    if command -v valgrind >/dev/null; then
        out=$(REGISTRY_SKIP_BUILD=1 bash "$ROOT/benches/registry.sh" 2>"$RUN/registry.err" | sed -n 's/^RESULT //p') || true
    else
        echo "valgrind not found" >"$RUN/registry.err"
    fi
    [ -n "$out" ] || out="FAILED $(tail -n 1 "$RUN/registry.err")"
    printf 'registry\twsgate\tregistry\t1\t%s\t%s\n' "$(cut -d' ' -f1 /proc/loadavg)" "$out" >>"$RESULTS"
    log "registry: $out"
fi
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/meta.txt"
echo "duration_s=$((SECONDS - T_START))" >>"$RUN/meta.txt"
echo "measure_s=$((SECONDS - T_MEASURE))" >>"$RUN/meta.txt"
echo "http_settings=wrk -t1 -c$HTTP_CONNS, ${HTTP_SIZE} B body; h2load -t1 -c$H2_CONNS -m$H2_STREAMS; h2echo: $H2ECHO_STREAMS WebSockets over $H2ECHO_CONNS h2 connections vs $H2ECHO_STREAMS h1 connections (TLS); h2idle: $H2IDLE_STREAMS WebSockets over $H2IDLE_CONNS h2 connections vs as many h1 over TLS; $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2), h2load $(h2load --version 2>&1 | awk '{print $NF}')" >>"$RUN/meta.txt"

: >"$ROOT/benches/results/latest.md"
if [ -s "$RESULTS" ] || [ -s "$HTTP_RESULTS" ]; then
    python3 "$ROOT/benches/report.py" "$RUN/meta.txt" "$RESULTS" "$HTTP_RESULTS" >"$ROOT/benches/results/latest.md"
fi
if [ -s "$HTTP_RESULTS" ]; then python3 "$ROOT/benches/report_http.py" "$RUN/meta.txt" "$HTTP_RESULTS" >>"$ROOT/benches/results/latest.md"; fi
cp "$RESULTS" "$ROOT/benches/results/latest.tsv"
cp "$HTTP_RESULTS" "$ROOT/benches/results/latest-http.tsv"
cat "$ROOT/benches/results/latest.md"
log "written: benches/results/latest.md (raw: benches/results/latest.tsv)"
log "the run took $(((SECONDS - T_START) / 60)) min $(((SECONDS - T_START) % 60)) s ($(((SECONDS - T_MEASURE) / 60)) min $(((SECONDS - T_MEASURE) % 60)) s after the builds)"
