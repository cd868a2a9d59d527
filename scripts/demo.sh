#!/usr/bin/env bash
# popcorn demo: a 3-node local cluster (each node its own network, PID and
# mount namespaces, with its own agent; node c is declared aarch64 and runs
# its programs under qemu-user), a program run under popcorn on node a,
# frozen, inspected and thawed, then migrated live a → b → a while it keeps
# counting, its output arriving where it was started; then a program built
# with `popcorn build` moves x86_64 → aarch64 → x86_64 mid-run with output
# identical to an unmigrated run; `popcorn top` shows the cluster once at
# the end. Run as root after `cargo build --workspace`, or simply
# `sudo make demo`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="$root/target/debug"
[ -x "$bin/popcorn" ] && [ -x "$bin/popcorn-agent" ] \
    || { echo "demo: build first: cargo build --workspace (or: sudo make demo)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "demo: run as root (sudo): it creates namespaces" >&2; exit 1; }

popcorn() { "$bin/popcorn" "$@"; }
# `on NODE ARGS…`: popcorn ARGS run inside NODE (its PIDs, its network).
on() { local node=$1; shift; popcorn cluster exec "$node" -- "$bin/popcorn" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

run_pid=""
cleanup() {
    [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null || true
    say "popcorn cluster down"
    popcorn cluster down
}
popcorn cluster down >/dev/null 2>&1 || true   # leftovers of an earlier run
trap cleanup EXIT

say "popcorn cluster up --nodes 3 --isa c=aarch64"
popcorn cluster up --nodes 3 --isa c=aarch64

# Peer links come up within a second or two (mutual TLS + first heartbeat).
for _ in $(seq 50); do
    on a nodes --json | grep -q '"health": "down"' || break
    sleep 0.2
done
say "popcorn nodes   (from node a)"
on a nodes

gcc -O1 -o "$bin/demo-counter" scripts/counter.c
say "popcorn run demo-counter 40   (on node a: prints a count every 200 ms)"
on a run "$bin/demo-counter" 40 &
run_pid=$!
sleep 1

say "popcorn ps   (node a; PIDs are node a's)"
on a ps
pid=$(on a ps | awk '$4 == "running" && /demo-counter/ { print $1; exit }')
[ -n "$pid" ] || { echo "demo: the counter is not in popcorn ps" >&2; exit 1; }

say "popcorn freeze $pid   (the counting stops; no signal is sent)"
on a freeze "$pid"
sleep 1.5

say "popcorn inspect $pid   (its captured state, summarised)"
inspect=$(on a inspect "$pid")
printf '%s\n' "$inspect" | head -n 25
lines=$(printf '%s\n' "$inspect" | wc -l)
[ "$lines" -le 25 ] || echo "… $((lines - 25)) more lines (popcorn inspect $pid --json has everything)"

say "popcorn thaw $pid   (the counting resumes where it stopped)"
on a thaw "$pid"

for to in b a; do
    sleep 1.2
    say "popcorn migrate $pid --to $to   (live: memory follows on demand)"
    on a migrate "$pid" --to "$to"
    on a ps
done
status=0
wait "$run_pid" || status=$?
run_pid=""
say "the counter exited with status $status"

say "popcorn build xisa_kernels.c -o xisa-demo   (x86_64 + aarch64 executables, one address per symbol)"
popcorn build tests/programs/xisa/xisa_kernels.c -o "$bin/xisa-demo"
"$bin/xisa-demo.x86_64" 40 > "$bin/xisa-demo.expected" || true
say "popcorn run --nodes a,c xisa-demo 40 150   (on node a, x86_64: a recursion, a sort and a CG loop per round)"
on a run --nodes a,c "$bin/xisa-demo" 40 150 | tee "$bin/xisa-demo.out" &
run_pid=$!
sleep 1.5
xpid=$(on a ps | awk '$4 == "running" && /xisa-demo/ { print $1; exit }')
[ -n "$xpid" ] || { echo "demo: xisa-demo is not in popcorn ps" >&2; exit 1; }
say "popcorn migrate $xpid --to c   (x86_64 → aarch64: stops at its next migration point, translated, heap on demand)"
on a migrate "$xpid" --to c
on a ps
sleep 2
say "popcorn migrate $xpid --to a   (aarch64 → x86_64)"
on a migrate "$xpid" --to a
wait "$run_pid" || true
run_pid=""
if cmp -s "$bin/xisa-demo.out" "$bin/xisa-demo.expected"; then
    say "output identical to an unmigrated x86_64 run"
else
    say "output differs from an unmigrated run!"; diff "$bin/xisa-demo.expected" "$bin/xisa-demo.out" | head
fi

say "popcorn top --once   (the live monitor, one frame: nodes, processes, migrations)"
on a top --once --width 150 --height 34
