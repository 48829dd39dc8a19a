#!/usr/bin/env bash
# llama-bench with and without the ggml-bitnet plugin on 2B4T-shaped synthetic models (TQ2_0 and
# TQ1_0, arch `bitnet`, F16 tied embedding), same machine, same run. Not part of CI (~20 min
# with 3 repetitions; run it under `flock /tmp/bitnet-cpu.lock` on the shared machine).
# Usage: tests/llama_cpp/bench.sh [repetitions]   (prints a markdown table of medians)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
reps="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
llama="$(bash "$root/tests/llama_cpp/build-llama.sh")"
bin="$llama/build/bin"
cargo build -q --release -p bitnet-ggml-plugin --features synthetic --example synthetic_gguf
# Last, so libggml_bitnet.so is the plain library (no optional features).
cargo build -q --release -p bitnet-ggml-plugin --lib
plugin="$CARGO_TARGET_DIR/release/libggml_bitnet.so"
models="${BITNET_BENCH_MODELS:-$HOME/.cache/bitnet-llama-cpp/models}"
mkdir -p "$models"
for ty in tq2_0 tq1_0; do
  m="$models/synthetic-2b4t-bitnet-$ty.gguf"
  [ -f "$m" ] || "$CARGO_TARGET_DIR/release/examples/synthetic_gguf" "$m" "$ty"
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# One repetition at a time, CPU-only and plugin alternating, so both see the same machine load
# (a shared machine's load drifts over the minutes one llama-bench -r N run takes).
for ty in tq2_0 tq1_0; do
  m="$models/synthetic-2b4t-bitnet-$ty.gguf"
  for threads in 1 2; do
    for test in pp128 tg128; do
      if [ "$test" = pp128 ]; then shape=(-p 128 -n 0); else shape=(-p 0 -n 128); fi
      for _ in $(seq "$reps"); do
        "$bin/llama-bench" -m "$m" "${shape[@]}" -t "$threads" -r 1 -o jsonl 2>/dev/null \
          >>"$out/$ty-$threads-$test-cpu.jsonl"
        GGML_BACKEND_PATH="$plugin" "$bin/llama-bench" -m "$m" "${shape[@]}" -t "$threads" -r 1 \
          -o jsonl 2>/dev/null >>"$out/$ty-$threads-$test-plugin.jsonl"
      done
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys, os
d = sys.argv[1]
print("| model | threads | test | llama.cpp CPU (tok/s) | with plugin (tok/s) | speed-up |")
print("|---|---|---|---|---|---|")
for ty in ("tq2_0", "tq1_0"):
    for t in (1, 2):
        for test in ("pp128", "tg128"):
            med = {}
            for k in ("cpu", "plugin"):
                with open(os.path.join(d, f"{ty}-{t}-{test}-{k}.jsonl")) as f:
                    med[k] = statistics.median(json.loads(l)["avg_ts"] for l in f if l.strip())
            print(f"| 2B4T-shaped {ty.upper()} | {t} | {test} | {med['cpu']:.2f} | {med['plugin']:.2f} | {med['plugin'] / med['cpu']:.2f}x |")
PY
