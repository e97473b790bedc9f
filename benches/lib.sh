# Helpers shared by benches/compare.sh and benches/soak.sh (sourced, not run).
#
# The caller sets ROOT (the repository) before sourcing, and RUN (its scratch folder)
# before calling spawn_pinned; processes started with spawn_pinned are in STARTED and
# stopped by stop_started (call it from the caller's EXIT trap).

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

STARTED=()      # every PID started here, stopped at exit
OLD_AUTOGROUP="" # the session's autogroup nice value before set_priority changed it

# check_host LOADGEN_CPU SERVER_CPU TOOL...: open-file limit raised, tools on PATH, and
# both CPUs present.
check_host() {
    local lg=$1 srv=$2 tool
    shift 2
    ulimit -n 20000 2>/dev/null || die "cannot raise the open-file limit to 20000 (ulimit -Hn is $(ulimit -Hn))"
    for tool in taskset "$@"; do command -v "$tool" >/dev/null || die "$tool is required"; done
    [ "$(nproc)" -gt "$((lg > srv ? lg : srv))" ] || die "CPUs $lg and $srv must exist (nproc=$(nproc))"
}

# build_binaries SKIP GIVEN_BIN: cargo builds wsgate (unless a binary was given) and the
# load generator, echo and HTTP backends, in release mode; SKIP non-empty builds nothing.
build_binaries() {
    [ -z "$1" ] || return 0
    if [ -z "$2" ]; then
        log "building wsgate (release)"
        (cd "$ROOT" && cargo build --release --bin wsgate 2>&1 | tail -n 3) >&2
    fi
    log "building the load generator and echo backend (release)"
    (cd "$ROOT/benches/loadgen" && cargo build --release 2>&1 | tail -n 3) >&2
}

# stage_binaries DIR WSGATE_BIN: copies of wsgate and the load generator's binaries in
# DIR, so a rebuild during the run does not swap a binary under it.
stage_binaries() {
    mkdir -p "$1"
    cp "$2" "$1/wsgate"
    cp "$ROOT/benches/loadgen/target/release/loadgen" \
        "$ROOT/benches/loadgen/target/release/echo-backend" \
        "$ROOT/benches/loadgen/target/release/http-backend" "$1/"
}

# set_priority NICE: other work on this machine competes for the cores. Where the kernel
# groups tasks by session (autogroup), only the group's weight counts, so raise that;
# else renice. Root only; an empty NICE leaves the priority alone.
set_priority() {
    [ -n "$1" ] && [ "$(id -u)" = 0 ] || return 0
    if [ -w /proc/self/autogroup ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
        OLD_AUTOGROUP=$(sed -n 's/.* nice //p' /proc/self/autogroup)
        echo "$1" >/proc/self/autogroup
    fi
    renice -n "$1" -p $$ >/dev/null
}

# stop_started: TERM every started process, KILL what is left after 5 s, and restore the
# priority set_priority changed.
stop_started() {
    local p alive
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [ -n "$OLD_AUTOGROUP" ]; then echo "$OLD_AUTOGROUP" >/proc/self/autogroup 2>/dev/null || true; fi
}

# forget_started PID: PID was stopped by the caller; stop_started need not.
forget_started() {
    local p keep=()
    for p in "${STARTED[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED=("${keep[@]}")
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# wait_listening NAME PORT PID: until PORT is listened on (≤ 10 s), or die if PID exits.
wait_listening() {
    for _ in $(seq 200); do
        kill -0 "$3" 2>/dev/null || { tail -n 20 "$RUN/$1.log" >&2; die "$1 exited during start"; }
        ss -Hltn "sport = :$2" | grep -q . && return 0
        sleep 0.05
    done
    die "$1 is not listening on $2 after 10 s"
}

# spawn_pinned NAME PORT CPU COMMAND...: starts COMMAND on CPU (log in $RUN/NAME.log)
# and waits until it listens on PORT; its PID in LAST_PID (and in STARTED).
spawn_pinned() {
    local name=$1 port=$2 cpu=$3
    shift 3
    port_free "$port" || die "port $port (for $name) is in use; set the port base"
    taskset -c "$cpu" "$@" >"$RUN/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
    wait_listening "$name" "$port" "$LAST_PID"
}

# wsgate_config TEMPLATE OUT PORT BACKEND: a benches/peers/ template rendered for a port
# and backend address.
wsgate_config() {
    sed -e "s|@PORT@|$3|g" -e "s|@BACKEND@|$4|g" "$ROOT/benches/peers/$1" >"$2"
}

# check_wsgate BIN CONFIG: `wsgate --check`, or die with its complaint.
check_wsgate() {
    "$1" --check --config "$2" >"$2.check" 2>&1 || { cat "$2.check" >&2; die "wsgate rejects $2"; }
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# utime + stime of PID in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# busy_ticks CPU: ticks that CPU spent on anything but idle and iowait (/proc/stat).
busy_ticks() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# key=value from a `key=value ...` line: kv KEY LINE.
kv() { sed -n "s/.*\(^\| \)$1=\([^ ]*\).*/\2/p" <<<"$2"; }

# Kernel memory of TCP sockets, machine-wide (the method of benches/sockmem.sh):
# tcp_field NAME: a field of the TCP line of /proc/net/sockstat (inuse, alloc, mem in pages).
tcp_field() { awk -v f="$1" '$1 == "TCP:" { for (i = 2; i < NF; i += 2) if ($i == f) print $(i + 1) }' /proc/net/sockstat; }
# slab_kib: KiB in the slab caches a TCP socket takes (root only: /proc/slabinfo; else 0).
slab_kib() {
    [ -r /proc/slabinfo ] || { echo 0; return; }
    awk 'NR > 2 && $1 ~ /^(TCP|TCPv6|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq)$/ { s += $2 * $4 } END { printf "%d", s / 1024 }' /proc/slabinfo
}
