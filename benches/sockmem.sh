#!/usr/bin/env bash
# Kernel memory per idle WebSocket, as the kernel counts it (README "Scaling"):
#
#   bash benches/sockmem.sh            # SOCKMEM_CONNS (default 5000) idle connections
#
# Opens SOCKMEM_CONNS idle WebSockets with benches/loadgen (`idle`, plain ws), once to the
# echo backend directly and once through wsgate (benches/peers/wsgate.yaml), and reads
# before and after, machine-wide: /proc/net/sockstat (TCP sockets, and `mem`: pages of
# socket buffers) and /proc/slabinfo (the slab caches a TCP socket takes: TCP, TCPv6,
# sock_inode_cache, filp, dentry, eventpoll_epi, eventpoll_pwq; root only), plus wsgate's
# RSS. Direct has 2 sockets per connection (client, backend), through wsgate 4: wsgate's
# own two sockets cost (through − direct) / N. With --echo-first the same after one 64 B
# echo per connection (buffers touched once). The machine is shared: other processes move
# the slab counters too, so keep N large and compare the two rows of one run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${SOCKMEM_CONNS:-5000}"
ECHO_FIRST="${SOCKMEM_ECHO_FIRST:-false}"
HOLD=20
B=benches/loadgen/target/release
cargo build --release --quiet --bin wsgate
(cd benches/loadgen && cargo build --release --quiet)
[ -r /proc/slabinfo ] || { echo "error: /proc/slabinfo is readable by root only" >&2; exit 1; }
# Two descriptors per connection in wsgate, one in each other process.
ulimit -n "$(ulimit -Hn)"
run="$(mktemp -d "${TMPDIR:-/tmp}/sockmem.XXXXXX")"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run"' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
tcp_field() { awk -v f="$1" '$1 == "TCP:" { for (i = 2; i < NF; i += 2) if ($i == f) print $(i + 1) }' /proc/net/sockstat; }
slab_kib() {
    awk 'NR > 2 && $1 ~ /^(TCP|TCPv6|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq)$/ { s += $2 * $4 } END { printf "%d", s / 1024 }' /proc/slabinfo
}
page_kib=$(($(getconf PAGESIZE) / 1024))

backend_port=$(free_port)
"$B/echo-backend" --listen "127.0.0.1:$backend_port" >"$run/backend.log" 2>&1 &
pids+=($!)
proxy_port=$(free_port)
sed -e "s/@PORT@/$proxy_port/" -e "s/@BACKEND@/127.0.0.1:$backend_port/" benches/peers/wsgate.yaml >"$run/wsgate.yaml"
target/release/wsgate --config "$run/wsgate.yaml" >"$run/wsgate.log" 2>&1 &
wsgate_pid=$!
pids+=("$wsgate_pid")
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$backend_port") 2>/dev/null && break
    sleep 0.1
done

measure() { # name port
    local name=$1 port=$2 s0 m0 a0 r0 s1 m1 a1 r1 lg
    sleep 2 # sockets of the previous round gone
    s0=$(slab_kib) m0=$(tcp_field mem) a0=$(tcp_field alloc) r0=$(awk '/^VmRSS:/ {print $2}' "/proc/$wsgate_pid/status")
    "$B/loadgen" idle --conns "$N" --hold "$HOLD" --echo-first "$ECHO_FIRST" --addr "127.0.0.1:$port" >"$run/idle.out" 2>"$run/idle.err" &
    lg=$!
    for _ in $(seq 1200); do grep -q '^ALL_OPEN' "$run/idle.out" && break; kill -0 "$lg" 2>/dev/null || break; sleep 0.1; done
    sleep 1
    s1=$(slab_kib) m1=$(tcp_field mem) a1=$(tcp_field alloc) r1=$(awk '/^VmRSS:/ {print $2}' "/proc/$wsgate_pid/status")
    wait "$lg" || { echo "loadgen failed: $(tail -n 1 "$run/idle.err")" >&2; exit 1; }
    printf '%s %d %d %d %d\n' "$name" $((a1 - a0)) $((s1 - s0)) $(((m1 - m0) * page_kib)) $((r1 - r0)) >>"$run/rows"
}
measure direct "$backend_port"
measure wsgate "$proxy_port"
echo "$N idle connections, echo_first=$ECHO_FIRST, kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
awk -v n="$N" '
    { name[NR] = $1; socks[NR] = $2; slab[NR] = $3; buf[NR] = $4; rss[NR] = $5 }
    END {
        printf "%-8s %14s %18s %18s %16s\n", "target", "TCP sockets/conn", "slab KiB/conn", "sockbuf KiB/conn", "wsgate RSS KiB/conn"
        for (i = 1; i <= NR; i++)
            printf "%-8s %14.2f %18.2f %18.2f %16.2f\n", name[i], socks[i] / n, slab[i] / n, buf[i] / n, (name[i] == "wsgate" ? rss[i] / n : 0)
        printf "wsgate own sockets (through - direct): %.2f sockets, %.2f KiB slab + %.2f KiB buffers per connection\n",
            (socks[2] - socks[1]) / n, (slab[2] - slab[1]) / n, (buf[2] - buf[1]) / n
    }' "$run/rows"
