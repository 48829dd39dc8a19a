#!/usr/bin/env bash
# llama-bench with and without the ggml-bitnet plugin on 2B4T-shaped synthetic models (TQ2_0 and
# TQ1_0, arch `bitnet`, F16 tied embedding), same machine, same run. Not part of CI (~15 min).
# Usage: tests/llama_cpp/bench.sh [repetitions]   (prints a markdown table of medians)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
reps="${1:-5}"
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
for ty in tq2_0 tq1_0; do
  m="$models/synthetic-2b4t-bitnet-$ty.gguf"
  for threads in 1 2; do
    # Alternate CPU-only and plugin runs so both see the same machine load.
    "$bin/llama-bench" -m "$m" -p 128 -n 128 -t "$threads" -r "$reps" -o json >"$out/$ty-$threads-cpu.json" 2>/dev/null
    GGML_BACKEND_PATH="$plugin" "$bin/llama-bench" -m "$m" -p 128 -n 128 -t "$threads" -r "$reps" -o json \
      >"$out/$ty-$threads-plugin.json" 2>/dev/null
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys, os
d = sys.argv[1]
print("| model | threads | test | llama.cpp CPU (tok/s) | with plugin (tok/s) | speed-up |")
print("|---|---|---|---|---|---|")
for ty in ("tq2_0", "tq1_0"):
    for t in (1, 2):
        runs = {k: json.load(open(os.path.join(d, f"{ty}-{t}-{k}.json"))) for k in ("cpu", "plugin")}
        for test in ("pp128", "tg128"):
            med = {}
            for k, rows in runs.items():
                for r in rows:
                    name = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
                    if name == test:
                        med[k] = statistics.median(r["samples_ts"])
            print(f"| 2B4T-shaped {ty.upper()} | {t} | {test} | {med['cpu']:.1f} | {med['plugin']:.1f} | {med['plugin'] / med['cpu']:.2f}x |")
PY
