#!/usr/bin/env bash
# llama.cpp with and without the ggml-bitnet plugin on 2B4T-shaped synthetic models (TQ2_0 and
# TQ1_0, arch `bitnet`, F16 tied embedding), same machine, same run:
#   llama-bench          pp128 and tg128, 1 and 2 threads;
#   batched              llama-batched-bench, 2 threads, 1, 4 and 8 parallel sequences (as
#                        llama-server's parallel slots decode them): a shared 128-token prompt
#                        (-pps), then 32 decode steps of every sequence at once; S_PP and S_TG.
# Every row alternates single runs (CPU, plugin, bitnet-rs, CPU, plugin, ...) so all see the same
# machine load, and reports medians; bitnet-rs is our own engine (`bitnet bench`, and
# `bitnet bench --batched` for llama-batched-bench's test) on the same file. Not part of CI;
# on the shared machine build first (a second run builds nothing), then run each section and
# model type inside one `cpu bench` call (3 repetitions, 2-core Zen 4 guest: llama-bench ~4 min
# per model type, batched ~2.5 min).
# Usage: tests/llama_cpp/bench.sh [repetitions] [llama-bench|batched|all] [types]
#   types: space-separated, default "tq2_0 tq1_0". Prints markdown tables of medians.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
reps="${1:-3}"
section="${2:-all}"
types="${3:-tq2_0 tq1_0}"
case "$section" in llama-bench | batched | all) ;; *)
  echo "bench.sh: section must be llama-bench, batched or all" >&2
  exit 2
  ;;
esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
llama="$(bash "$root/tests/llama_cpp/build-llama.sh")"
bin="$llama/build/bin"
cargo build -q --release -p bitnet-ggml-plugin --features synthetic --example synthetic_gguf
cargo build -q --release -p bitnet-cli
bitnet="$CARGO_TARGET_DIR/release/bitnet"
# Last, so libggml_bitnet.so is the plain library (no optional features).
cargo build -q --release -p bitnet-ggml-plugin --lib
plugin="$CARGO_TARGET_DIR/release/libggml_bitnet.so"
models="${BITNET_BENCH_MODELS:-$HOME/.cache/bitnet-llama-cpp/models}"
mkdir -p "$models"
for ty in $types; do
  m="$models/synthetic-2b4t-bitnet-$ty.gguf"
  [ -f "$m" ] || "$CARGO_TARGET_DIR/release/examples/synthetic_gguf" "$m" "$ty"
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# `alternate NAME OURS CMD...`: runs CMD reps times without and with the plugin, and the
# function OURS (the same test on bitnet-rs), alternating; appends each run's stdout (JSON
# lines) to $out/NAME-cpu.jsonl, $out/NAME-plugin.jsonl and $out/NAME-ours.jsonl.
alternate() {
  local name="$1" ours="$2"
  shift 2
  for _ in $(seq "$reps"); do
    "$@" 2>/dev/null >>"$out/$name-cpu.jsonl"
    GGML_BACKEND_PATH="$plugin" "$@" 2>/dev/null >>"$out/$name-plugin.jsonl"
    "$ours" 2>/dev/null >>"$out/$name-ours.jsonl"
  done
}
# bitnet-rs's runs of the two tests (the model $m, shape and threads of the caller's loop).
ours_bench() { "$bitnet" bench -m "$m" "${shape[@]}" -t "$threads" -r 1 -o jsonl --no-bandwidth; }
ours_batched() {
  "$bitnet" bench --batched -m "$m" -c 2048 -b 2048 -t 2 -npp 128 -ntg 32 -npl 1,4,8 -pps -o jsonl
}

if [ "$section" != batched ]; then
  for ty in $types; do
    m="$models/synthetic-2b4t-bitnet-$ty.gguf"
    for threads in 1 2; do
      for test in pp128 tg128; do
        if [ "$test" = pp128 ]; then shape=(-p 128 -n 0); else shape=(-p 0 -n 128); fi
        alternate "bench-$ty-$threads-$test" ours_bench \
          "$bin/llama-bench" -m "$m" "${shape[@]}" -t "$threads" -r 1 -o jsonl
      done
    done
  done
fi
if [ "$section" != llama-bench ]; then
  for ty in $types; do
    m="$models/synthetic-2b4t-bitnet-$ty.gguf"
    alternate "batched-$ty" ours_batched "$bin/llama-batched-bench" -m "$m" -c 2048 -b 2048 -ub 512 -t 2 \
      -npp 128 -ntg 32 -npl 1,4,8 -pps --output-format jsonl
  done
fi

python3 - "$out" "$types" <<'PY'
import json, os, statistics, sys
d, types = sys.argv[1], sys.argv[2].split()

def records(name, kind):
    path = os.path.join(d, f"{name}-{kind}.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]

KINDS = ("cpu", "plugin", "ours")

if records(f"bench-{types[0]}-1-pp128", "cpu") is not None:
    print("| model | threads | test | llama.cpp CPU (tok/s) | with plugin (tok/s) | speed-up | bitnet-rs (tok/s) |")
    print("|---|---|---|---|---|---|---|")
    for ty in types:
        for t in (1, 2):
            for test in ("pp128", "tg128"):
                med = {k: statistics.median(r["avg_ts"] for r in records(f"bench-{ty}-{t}-{test}", k))
                       for k in KINDS}
                print(f"| 2B4T-shaped {ty.upper()} | {t} | {test} | {med['cpu']:.2f} | {med['plugin']:.2f} "
                      f"| {med['plugin'] / med['cpu']:.2f}x | {med['ours']:.2f} |")
    print()
if records(f"batched-{types[0]}", "cpu") is not None:
    print("llama-batched-bench, 2 threads, shared 128-token prompt, 32 decode steps per sequence (tok/s)")
    print("| model | parallel sequences | S_PP CPU | S_PP plugin | speed-up | S_PP bitnet-rs "
          "| S_TG CPU | S_TG plugin | speed-up | S_TG bitnet-rs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ty in types:
        recs = {k: records(f"batched-{ty}", k) for k in KINDS}
        for pl in sorted({r["pl"] for r in recs["cpu"]}):
            med = {(k, s): statistics.median(r[s] for r in recs[k] if r["pl"] == pl)
                   for k in KINDS for s in ("speed_pp", "speed_tg")}
            pp = med["plugin", "speed_pp"] / med["cpu", "speed_pp"]
            tg = med["plugin", "speed_tg"] / med["cpu", "speed_tg"]
            print(f"| 2B4T-shaped {ty.upper()} | {pl} | {med['cpu', 'speed_pp']:.2f} | {med['plugin', 'speed_pp']:.2f} "
                  f"| {pp:.2f}x | {med['ours', 'speed_pp']:.2f} | {med['cpu', 'speed_tg']:.2f} "
                  f"| {med['plugin', 'speed_tg']:.2f} | {tg:.2f}x | {med['ours', 'speed_tg']:.2f} |")
PY
