#!/usr/bin/env bash
# Serving benchmarks on a 2B4T-shaped I2_S model (not part of the test suite). Build first, then
# time alone on the shared machine:
#   cargo build --release -p bitnet-cli && cargo build --release -p bitnet-candle --example bench_2b4t
#   bash tests/serve/bench.sh perf|load [server flags...]
# perf: tests/serve/perf.py (the issue-14 targets: 1 vs 8 clients, time to first token, a
#       1,000-token shared prefix); load: tests/serve/load_test.py, 32 clients for 60 s with
#       the server's RSS. Server flags default to `-t 2 --parallel 8 -c 8192`.
# The synthetic model (1.2 GB) is written to a temporary folder and removed at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
what="${1:?usage: bench.sh perf|load [server flags...]}"
shift
flags=("$@")
[ "${#flags[@]}" -gt 0 ] || flags=(-t 2 --parallel 8 -c 8192)
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/bitnet"
writer="$target/release/examples/bench_2b4t"
py="${BITNET_PYTHON:-$root/.venv/bin/python}"
for f in "$bin" "$writer" "$py"; do
  [ -x "$f" ] || { echo "bench.sh: $f is missing (see the build commands at the top)" >&2; exit 1; }
done
work="$(mktemp -d)"
server=""
cleanup() {
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
model="${BITNET_SERVE_BENCH_MODEL:-$work/synthetic-2b4t-i2_s.gguf}"
[ -f "$model" ] || "$writer" --write-only "$model" >&2

"$bin" serve -m "$model" --port 0 --alias bitnet "${flags[@]}" 2>"$work/server.log" &
server=$!
base=""
for _ in $(seq 600); do
  base="$(sed -n 's/^listening on //p' "$work/server.log")"
  [ -n "$base" ] && curl -sf "$base/health" >/dev/null && break
  sleep 0.1
done
curl -sf "$base/health" >/dev/null || { cat "$work/server.log" >&2; exit 1; }
echo "server: bitnet serve ${flags[*]} on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" >&2
case "$what" in
  perf) "$py" "$root/tests/serve/perf.py" "$base" ${PERF_ARGS:-} ;;
  load) "$py" "$root/tests/serve/load_test.py" "$base" --server-pid "$server" ${LOAD_ARGS:-} ;;
  *) echo "bench.sh: unknown benchmark $what" >&2; exit 2 ;;
esac
