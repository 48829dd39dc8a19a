#!/usr/bin/env bash
# README's headline table: bitnet-rs next to bitnet.cpp and llama.cpp on the same model files,
# from one run on one machine, with the machine described (CPU, cores, read bandwidth).
#
# The model is the synthetic BitNet b1.58 2B4T shape (random ternary weights, F16 tied head),
# written twice with the same weights: as I2_S (bitnet.cpp's format; bitnet-rs and bitnet.cpp
# run it) and as TQ2_0 (llama.cpp cannot read I2_S; bitnet-rs and llama.cpp run it). Every
# engine runs pp128 and tg128 with 1 and 2 threads, one repetition at a time, the engines
# alternating, so all see the same machine load; the table shows medians.
#
# Usage: tests/headline-bench.sh [prepare|run|all]     (default: all)
#   prepare  builds bitnet-rs and the pinned llama.cpp, writes the two model files
#   run      only runs the benchmarks (nothing is built): on the shared machine,
#            `bash tests/headline-bench.sh prepare`, then
#            `bash tests/headline-bench.sh run` (on an otherwise idle machine)
# Environment:
#   BITNET_CPP_BIN   folder with bitnet.cpp's llama-bench (built with clang, TL2 off, native);
#                    without it the bitnet.cpp column says "not built" and the rest runs
#   REPS             alternating repetitions (default 3; ~8 min on a 2-core guest)
#   N_PROMPT, N_GEN  test sizes (default 128 and 128; smaller ones make a quick smoke run)
#   BITNET_BENCH_MODELS  where the model files go (default ~/.cache/bitnet-llama-cpp/models)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-all}"
reps="${REPS:-3}"
n_prompt="${N_PROMPT:-128}"
n_gen="${N_GEN:-128}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
bitnet="$CARGO_TARGET_DIR/release/bitnet"
synthetic="$CARGO_TARGET_DIR/release/examples/synthetic_gguf"
models="${BITNET_BENCH_MODELS:-$HOME/.cache/bitnet-llama-cpp/models}"
i2s="$models/headline-2b4t-i2_s.gguf"
tq2="$models/headline-2b4t-tq2_0.gguf"
bitnet_cpp_bench="${BITNET_CPP_BIN:+$BITNET_CPP_BIN/llama-bench}"

prepare() {
  (cd "$root" && cargo build -q --release -p bitnet-cli \
    && cargo build -q --release -p bitnet-ggml-plugin --features synthetic --example synthetic_gguf)
  bash "$root/tests/llama_cpp/build-llama.sh" >/dev/null
  mkdir -p "$models"
  # Always rewritten: both files must come from the same generator to hold the same weights.
  "$synthetic" "$i2s" i2_s
  "$synthetic" "$tq2" tq2_0
}

llama_bench() {
  local root_dir
  root_dir="$(BITNET_LLAMA_CPP_NO_BUILD=1 bash "$root/tests/llama_cpp/build-llama.sh")"
  echo "$root_dir/build/bin/llama-bench"
}

machine() {
  local cpu family model cores
  cpu="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  family="$(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')"
  model="$(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')"
  cores="$(nproc)"
  local virt=""
  grep -qw hypervisor /proc/cpuinfo && virt=", virtual machine"
  local vnni="no AVX-512 VNNI"
  grep -qw avx512_vnni /proc/cpuinfo && vnni="AVX-512 VNNI"
  echo "$cpu (family $family, model $model$virt), $cores cores, $vnni"
}

gb() {
  python3 -c 'import os, sys; print(f"{os.path.getsize(sys.argv[1]) / 1e9:.2f}")' "$1"
}

# Read bandwidth measured by bitnet-rs's probe, "1T / 2T" in GB/s.
bandwidth() {
  "$bitnet" bench -m "$i2s" -p 0 -n 0 -t 1,2 2>&1 >/dev/null \
    | sed -n 's/^memory read bandwidth, \([0-9]*\) threads, before the tests: \([0-9.]*\) GB\/s$/\2/p' \
    | paste -sd/ | sed 's#/# / #'
}

run() {
  local lb
  lb="$(llama_bench)" || exit 1
  for f in "$bitnet" "$lb" "$i2s" "$tq2"; do
    [ -e "$f" ] || { echo "headline-bench: $f is missing; run '$0 prepare' first" >&2; exit 1; }
  done
  local have_bitnet_cpp=1
  if [ -z "$bitnet_cpp_bench" ] || [ ! -x "$bitnet_cpp_bench" ]; then
    have_bitnet_cpp=0
    echo "headline-bench: bitnet.cpp is not built (set BITNET_CPP_BIN to the folder with its llama-bench); skipping it" >&2
  fi
  out="$(mktemp -d)"  # global: the EXIT trap reads it
  trap 'rm -rf "$out"' EXIT
  echo "headline-bench: $reps alternating repetitions of pp$n_prompt and tg$n_gen, 1 and 2 threads" >&2
  local bw_before bw_after
  bw_before="$(bandwidth)"
  for rep in $(seq "$reps"); do
    for threads in 1 2; do
      for test in "pp$n_prompt" "tg$n_gen"; do
        if [ "$test" = "pp$n_prompt" ]; then shape=(-p "$n_prompt" -n 0); else shape=(-p 0 -n "$n_gen"); fi
        echo "headline-bench: repetition $rep, $test, $threads threads" >&2
        "$bitnet" bench -m "$i2s" "${shape[@]}" -t "$threads" -r 1 -o json --no-bandwidth 2>/dev/null \
          >>"$out/ours-i2s-$threads-$test.json"
        if [ "$have_bitnet_cpp" = 1 ]; then
          "$bitnet_cpp_bench" -m "$i2s" "${shape[@]}" -t "$threads" -r 1 -o jsonl 2>/dev/null \
            >>"$out/bitnetcpp-i2s-$threads-$test.jsonl"
        fi
        "$bitnet" bench -m "$tq2" "${shape[@]}" -t "$threads" -r 1 -o json --no-bandwidth 2>/dev/null \
          >>"$out/ours-tq2-$threads-$test.json"
        "$lb" -m "$tq2" "${shape[@]}" -t "$threads" -r 1 -o jsonl 2>/dev/null \
          >>"$out/llamacpp-tq2-$threads-$test.jsonl"
      done
    done
  done
  bw_after="$(bandwidth)"
  local ours_commit bitnet_cpp_commit="not built"
  ours_commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ "$have_bitnet_cpp" = 1 ]; then
    bitnet_cpp_commit="$(git -C "$BITNET_CPP_BIN" rev-parse --short HEAD 2>/dev/null || echo "commit unknown")"
  fi
  python3 - "$out" "$reps" "pp$n_prompt" "tg$n_gen" <<PY
import json, os, statistics, sys
d, reps, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def rates(name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return []
    text = open(path).read()
    if name.endswith(".jsonl"):
        return [json.loads(l)["avg_ts"] for l in text.splitlines() if l.strip()]
    # bitnet bench -o json: one JSON array per run, appended.
    dec, i, out = json.JSONDecoder(), 0, []
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        arr, i = dec.raw_decode(text, i)
        out += [r["avg_ts"] for r in arr]
    return out

def med(name):
    r = rates(name)
    return statistics.median(r) if r else None

def cell(v):
    return "not built" if v is None else f"{v:.1f}"

def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}×"

print("Machine: $(machine)")
print("Read bandwidth (bitnet-rs probe, 1 / 2 threads): $bw_before GB/s before the runs, $bw_after GB/s after")
print("bitnet-rs $ours_commit; bitnet.cpp $bitnet_cpp_commit; llama.cpp b11434")
print("Model: synthetic BitNet b1.58 2B4T shape (random ternary weights, F16 tied head), "
      "$(gb "$i2s") GB as I2_S, the same weights as TQ2_0 in $(gb "$tq2") GB")
print(f"tok/s, medians of {reps} alternating runs")
print()
print("| test | threads | bitnet-rs I2_S | bitnet.cpp I2_S | bitnet-rs ÷ bitnet.cpp | bitnet-rs TQ2_0 | llama.cpp TQ2_0 | bitnet-rs ÷ llama.cpp |")
print("|---|---|---|---|---|---|---|---|")
for test in tests:
    for t in (1, 2):
        a, b = med(f"ours-i2s-{t}-{test}.json"), med(f"bitnetcpp-i2s-{t}-{test}.jsonl")
        c, e = med(f"ours-tq2-{t}-{test}.json"), med(f"llamacpp-tq2-{t}-{test}.jsonl")
        print(f"| {test} | {t} | {cell(a)} | {cell(b)} | {ratio(a, b)} | {cell(c)} | {cell(e)} | {ratio(c, e)} |")
PY
}

case "$mode" in
  prepare) prepare ;;
  run) run ;;
  all) prepare; run ;;
  *) echo "usage: $0 [prepare|run|all]" >&2; exit 2 ;;
esac
