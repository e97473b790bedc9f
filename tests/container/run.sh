#!/usr/bin/env bash
# Builds the wsgate image and runs it the way production would, then checks it:
#
#   bash tests/container/run.sh
#
# Route (no registry reachable; see README "Running in containers"): Debian's docker.io,
# a dockerd of its own (data root WSGATE_DOCKER_ROOT, default /var/lib/wsgate-docker;
# socket /run/wsgate-docker/docker.sock; no iptables, forwarding or masquerading) unless
# DOCKER_HOST already answers, base images from tests/container/bases.sh, then
# `DOCKER_BUILDKIT=1 docker build --network host`. Clients run on the host (Python
# `websockets`) against the ports published on 127.0.0.1.
#
# Prints one table (check, result, detail) and exits non-zero if any check failed.
#
# Environment:
#   WSGATE_DOCKER_ROOT  data root of the dockerd this script starts
#   IMAGE               tag to build and test (default wsgate:test)
#   CONTAINER_PRUNE=1   remove the image and the build cache at the end
#   PYTHON              interpreter for the clients (default python3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HERE=tests/container
PYTHON="${PYTHON:-python3}"
IMAGE="${IMAGE:-wsgate:test}"
# Debian's CLI: it builds with BuildKit on its own (a newer CLI first on PATH may need
# the buildx plugin, which is not packaged here).
DOCKER=/usr/bin/docker
export DOCKER DOCKER_BUILDKIT=1

results=()
failures=0
record() { # record CHECK ok|FAIL DETAIL
    results+=("$(printf '%-44s %-5s %s' "$1" "$2" "$3")")
    [ "$2" = ok ] || failures=$((failures + 1))
}
check() { # check NAME DETAIL CMD...: ok when CMD succeeds
    local name="$1" detail="$2"
    shift 2
    if "$@"; then record "$name" ok "$detail"; else record "$name" FAIL "$detail"; fi
}
print_table() {
    printf '\n%-44s %-5s %s\n' check result detail
    printf '%s\n' "${results[@]}"
    local total=${#results[@]}
    printf '\ncontainer: %d passed, %d failed\n' $((total - failures)) "$failures"
}

started_dockerd=""
containers=()
scratch="$(mktemp -d "${TMPDIR:-/tmp}/wsgate-container.XXXXXX")"
cleanup() {
    local c
    for c in "${containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
    if [ -n "${CONTAINER_PRUNE:-}" ]; then
        "$DOCKER" image rm -f "$IMAGE" >/dev/null 2>&1 || true
        "$DOCKER" builder prune -af >/dev/null 2>&1 || true
    fi
    if [ -n "$started_dockerd" ]; then
        # Only the daemon this script started, by its own pid.
        kill "$started_dockerd" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

ensure_docker() {
    if [ ! -x /usr/bin/docker ] || ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
        echo "installing with apt-get: docker.io mmdebstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io mmdebstrap >/dev/null
    fi
    if [ -n "${DOCKER_HOST:-}" ] && "$DOCKER" info >/dev/null 2>&1; then
        echo "using the docker daemon at $DOCKER_HOST"
        return
    fi
    local root="${WSGATE_DOCKER_ROOT:-/var/lib/wsgate-docker}" run=/run/wsgate-docker
    export DOCKER_HOST="unix://$run/docker.sock"
    if "$DOCKER" info >/dev/null 2>&1; then
        echo "using the docker daemon at $DOCKER_HOST"
        return
    fi
    mkdir -p "$root" "$run"
    echo "starting dockerd (data root $root, socket $run/docker.sock)"
    # No iptables rules, forwarding or NAT: published ports are served by docker-proxy
    # on the host, which is all the checks need, and the machine's firewall is left alone.
    dockerd --data-root "$root" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
        -H "$DOCKER_HOST" --iptables=false --ip-forward=false --ip-masq=false \
        >"$scratch/dockerd.log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 1 150); do
        "$DOCKER" info >/dev/null 2>&1 && return
        kill -0 "$started_dockerd" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 20 "$scratch/dockerd.log" >&2
    echo "error: dockerd did not start" >&2
    exit 1
}

# port CONTAINER PORT: the host port 127.0.0.1 publishes PORT on.
port() { "$DOCKER" port "$1" "$2/tcp" | sed -n 's/^127\.0\.0\.1://p' | head -n1; }
# health CONTAINER: the HEALTHCHECK's last verdict.
health() { "$DOCKER" inspect -f '{{.State.Health.Status}}' "$1"; }
# wait_health CONTAINER STATUS SECONDS
wait_health() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt "$deadline" ]; do
        [ "$(health "$1")" = "$2" ] && return 0
        sleep 0.2
    done
    return 1
}
# status_field PID FIELD: a line of /proc/PID/status, value only.
status_field() { awk -v f="$2:" '$1 == f { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$1/status"; }

# run_hardened NAME ARGS...: the production flags, fast health checks for the test.
run_hardened() {
    local name="$1"
    shift
    "$DOCKER" rm -f "$name" >/dev/null 2>&1 || true
    containers+=("$name")
    "$DOCKER" run -d --name "$name" \
        --read-only --cap-drop ALL --security-opt no-new-privileges \
        --stop-timeout 35 \
        --health-interval 1s --health-timeout 3s --health-retries 2 --health-start-period 30s \
        -p 127.0.0.1::8080 -p 127.0.0.1::8443 -p 127.0.0.1::9090 \
        "$@" >/dev/null
}

ensure_docker
"$PYTHON" -c 'from websockets.asyncio.client import connect' 2>/dev/null || {
    echo "error: Python websockets >= 14 is required for $PYTHON (scripts/test.sh installs it)" >&2
    exit 1
}

echo "-- base images"
bash "$HERE/bases.sh"

echo "-- docker build"
build_start=$SECONDS
"$DOCKER" build --network host -t "$IMAGE" . >"$scratch/build.log" 2>&1 || {
    tail -n 40 "$scratch/build.log" >&2
    record "image builds" FAIL "see the build log above"
    print_table
    exit 1
}
build_s=$((SECONDS - build_start))
size_mb=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f", $1 / 1e6}')
record "image builds" ok "${build_s}s, ${size_mb} MB"

# A source change rebuilds wsgate only: the dependency layer stays cached.
touch_file="$scratch/ctx"
mkdir -p "$touch_file"
cp -a Cargo.toml Cargo.lock Dockerfile src config "$touch_file/"
echo "// cache probe" >>"$touch_file/src/main.rs"
rebuild_start=$SECONDS
if "$DOCKER" build --network host -t "$IMAGE-probe" "$touch_file" >"$scratch/rebuild.log" 2>&1; then
    rebuild_s=$((SECONDS - rebuild_start))
    deps_cached=$(grep -c 'CACHED' "$scratch/rebuild.log" || true)
    if grep -q 'Compiling tokio ' "$scratch/rebuild.log"; then
        record "src change keeps dependency layer" FAIL "dependencies recompiled (${rebuild_s}s)"
    else
        record "src change keeps dependency layer" ok "rebuild ${rebuild_s}s, ${deps_cached} steps cached"
    fi
    "$DOCKER" image rm -f "$IMAGE-probe" >/dev/null 2>&1 || true
else
    record "src change keeps dependency layer" FAIL "rebuild failed"
fi

check "no shell in the image" "/bin/sh cannot start" \
    bash -c "! '$DOCKER' run --rm --entrypoint /bin/sh '$IMAGE' -c true >/dev/null 2>&1"
check "--check accepts the shipped config" "docker run IMAGE --check" \
    "$DOCKER" run --rm --read-only --cap-drop ALL "$IMAGE" --check
check "health fails when nothing answers" "wsgate health with no wsgate: exit 1" \
    bash -c "'$DOCKER' run --rm --entrypoint wsgate '$IMAGE' health >/dev/null; [ \$? -eq 1 ]"

echo "-- the hardened container"
C=wsgate-check-$$
start_ns=$(date +%s%N)
run_hardened "$C" "$IMAGE"
admin_port=$(port "$C" 9090)
ready_ms=""
for _ in $(seq 1 500); do
    if "$PYTHON" -c "import sys,urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:$admin_port/healthz', timeout=1).status != 200)" 2>/dev/null; then
        ready_ms=$((($(date +%s%N) - start_ns) / 1000000))
        break
    fi
    sleep 0.02
done
[ -n "$ready_ms" ] && record "starts and answers /healthz" ok "${ready_ms} ms from docker run" ||
    record "starts and answers /healthz" FAIL "no answer within 10 s"

pid=$("$DOCKER" inspect -f '{{.State.Pid}}' "$C")
uid=$(status_field "$pid" Uid | awk '{print $1, $2, $3, $4}')
check "runs as non-root" "uid $uid (image user $("$DOCKER" inspect -f '{{.Config.User}}' "$IMAGE"))" \
    test "$uid" = "10001 10001 10001 10001"
nspid=$(status_field "$pid" NSpid)
check "wsgate is PID 1" "$(cat "/proc/$pid/comm"), NSpid $nspid" \
    bash -c "[ '$(cat "/proc/$pid/comm")' = wsgate ] && [ '${nspid##* }' = 1 ]"
capeff=$(status_field "$pid" CapEff)
nnp=$(status_field "$pid" NoNewPrivs)
check "--cap-drop ALL, no-new-privileges" "CapEff $capeff, NoNewPrivs $nnp" \
    bash -c "[ '$capeff' = 0000000000000000 ] && [ '$nnp' = 1 ]"
check "--read-only, no volumes" "ReadonlyRootfs $("$DOCKER" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$C"), mounts $("$DOCKER" inspect -f '{{len .Mounts}}' "$C")" \
    bash -c "[ \"\$('$DOCKER' inspect -f '{{.HostConfig.ReadonlyRootfs}} {{len .Mounts}}' '$C')\" = 'true 0' ]"
check "HEALTHCHECK healthy" "$("$DOCKER" inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")" \
    wait_health "$C" healthy 30

ws_port=$(port "$C" 8080)
wss_port=$(port "$C" 8443)
check "ws echo through the published port" "ws://127.0.0.1:$ws_port/echo" \
    "$PYTHON" "$HERE/clients.py" echo "ws://127.0.0.1:$ws_port/echo"
check "wss echo through the published port" "wss://127.0.0.1:$wss_port/echo (self-signed)" \
    "$PYTHON" "$HERE/clients.py" echo "wss://127.0.0.1:$wss_port/echo"

# A process that hangs (stopped, its sockets still accepting) answers nothing.
kill -STOP "$pid"
check "HEALTHCHECK unhealthy when wsgate hangs" "SIGSTOP: $(wait_health "$C" unhealthy 30 && echo unhealthy || health "$C")" \
    test "$(health "$C")" = unhealthy
kill -CONT "$pid"
check "HEALTHCHECK healthy again after SIGCONT" "" wait_health "$C" healthy 30

# SIGTERM: every client gets 1001, the one that never answers the Close is cut after
# close_timeout (5s), and wsgate exits 0 well inside --stop-timeout.
"$PYTHON" "$HERE/clients.py" hold --ready "$scratch/ready" \
    "ws://127.0.0.1:$ws_port/echo" "ws://127.0.0.1:$ws_port/echo" "wss://127.0.0.1:$wss_port/echo" \
    --silent "127.0.0.1:$ws_port" >"$scratch/hold.json" 2>"$scratch/hold.err" &
holder=$!
for _ in $(seq 1 500); do [ -s "$scratch/ready" ] && break; kill -0 "$holder" 2>/dev/null || break; sleep 0.02; done
term_start=$SECONDS
"$DOCKER" kill --signal TERM "$C" >/dev/null
exit_code=$(timeout 40 "$DOCKER" wait "$C" || echo "none")
term_s=$((SECONDS - term_start))
if wait "$holder"; then holder_rc=0; else holder_rc=$?; fi
check "SIGTERM: 1001 to every client" "$(cat "$scratch/hold.json" "$scratch/hold.err" | tr -d '\n' | cut -c1-400)" \
    test "$holder_rc" = 0
check "SIGTERM: exit 0" "exit $exit_code after ${term_s}s" test "$exit_code" = 0
check "logs say the drain" "shutting down … stopped" \
    bash -c "'$DOCKER' logs '$C' 2>&1 | grep -q 'shutting down' && '$DOCKER' logs '$C' 2>&1 | grep -q 'stopped'"

echo "-- a mounted config, admin on another port"
cfg="$scratch/mounted.yaml"
sed 's/0\.0\.0\.0:9090/0.0.0.0:9191/' config/container.yaml >"$cfg"
chmod 0644 "$cfg"
M=wsgate-mounted-$$
run_hardened "$M" -v "$cfg:/etc/wsgate/wsgate.yaml:ro" "$IMAGE"
check "HEALTHCHECK follows admin.bind" "admin on 9191 from a read-only mount" wait_health "$M" healthy 30
"$DOCKER" rm -f "$M" >/dev/null

print_table
[ "$failures" -eq 0 ]
