#!/usr/bin/env bash
# What the admin API's registry of live connections costs per connection, counted:
#
#   bash benches/registry.sh
#
# Runs the ignored unit test `shared::registry::tests::registry_cost` (REGISTRY_N entries
# made and inserted as relays open, walked in pages of 1,000 as `GET /api/connections`
# does, removed as relays end) four times under valgrind's callgrind, each time counting
# one phase only (`--toggle-collect` on the phase's function), and prints user-space
# instructions to make an entry (its allocation; the facts it holds move from the relay),
# per insert, per entry listed and per removal (the entry's free included), with the
# entry's size and the RSS the entries add.
# A counted measure rather than "connections/s with and without the registry": the
# registry is always on, a build without it does not exist, and a difference of a few
# hundred instructions in ~100,000 per connection is far below the noise of a timed rate.
#
# The test binary is built in release mode without fat LTO (LTO off, 16 codegen units,
# in target/bench-registry): the code counted is the registry's own, std's B-tree and
# malloc, which LTO does not change, and it saves a several-minute whole-program build.
# glibc's vector copies are forced as in the issue (callgrind would count each byte of a
# `rep movsb`).
#
# Knobs: REGISTRY_N=20000  REGISTRY_SKIP_BUILD=1 (reuse the last test binary)
#        REGISTRY_BUILD_ONLY=1 (build and stop: compare.sh builds before it measures).
# Last line: `RESULT key=value ...` (read by benches/compare.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${REGISTRY_N:-20000}
TARGET_DIR=$ROOT/target/bench-registry
TEST=shared::registry::tests::registry_cost
need=(cargo python3)
[ -n "${REGISTRY_BUILD_ONLY:-}" ] || need+=(valgrind)
for tool in "${need[@]}"; do command -v "$tool" >/dev/null || { echo "registry.sh: $tool not found" >&2; exit 1; }; done

bin_file=$TARGET_DIR/registry-test-binary
if [ -z "${REGISTRY_SKIP_BUILD:-}" ] || [ ! -s "$bin_file" ]; then
    echo "[registry] building the library's unit tests (release, LTO off)" >&2
    mkdir -p "$TARGET_DIR"
    (cd "$ROOT" && CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo test --release --lib --no-run --target-dir "$TARGET_DIR" --message-format=json 2>/dev/null) |
        python3 -c 'import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])' >"$bin_file"
fi
BIN=$(cat "$bin_file")
[ -z "${REGISTRY_BUILD_ONLY:-}" ] || exit 0
[ -x "$BIN" ] || { echo "registry.sh: no test binary built (see cargo test --release --lib --no-run)" >&2; exit 1; }

RUN=$(mktemp -d /tmp/wsgate-registry.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
export GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000
export REGISTRY_COST_N=$N

count() { # phase → instructions inside registry_cost_<phase>
    valgrind --tool=callgrind --callgrind-out-file="$RUN/$1.out" --collect-atstart=no \
        --toggle-collect="*registry_cost_$1*" "$BIN" --ignored --exact "$TEST" --test-threads=1 \
        >"$RUN/$1.log" 2>&1 || { tail -n 20 "$RUN/$1.log" >&2; exit 1; }
    awk '/^(summary|totals):/ {print $2; exit}' "$RUN/$1.out"
}
# Four runs of the whole test, each counting one phase.
make=$(count make)
insert=$(count insert)
list=$(count list)
close=$(count close)
# The RSS figure from a run without valgrind (its own allocator would change it).
# (libtest prints the test's name on the line its output starts.)
native=$("$BIN" --ignored --exact "$TEST" --test-threads=1 --nocapture 2>&1 | sed -n 's/.*RESULT //p')
entry=$(sed -n 's/.*entry_bytes=\([0-9]*\).*/\1/p' <<<"$native")
rss=$(sed -n 's/.*rss_bytes_per_entry=\([0-9]*\).*/\1/p' <<<"$native")
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
awk -v n="$N" -v m="$make" -v o="$insert" -v l="$list" -v c="$close" -v e="$entry" -v r="$rss" -v commit="$commit" 'BEGIN {
    printf "registry, %d entries (commit %s): %.0f instructions to make an entry, %.0f per insert, %.0f per entry listed, %.0f per removal; entry %d B, RSS %d B per entry\n", n, commit, m / n, o / n, l / n, c / n, e, r
    printf "RESULT entries=%d make_instr=%.0f insert_instr=%.0f list_instr_per_entry=%.0f remove_instr=%.0f open_close_instr=%.0f entry_bytes=%d rss_bytes_per_entry=%d\n", n, m / n, o / n, l / n, c / n, (m + o + c) / n, e, r
}'
