#!/usr/bin/env bash
# Many sequences decoded together, side by side: bitnet-rs `bitnet bench --batched` (I2_S),
# llama.cpp b11434's llama-batched-bench (TQ2_0) and, when it is built, bitnet.cpp's
# llama-batched-bench (I2_S), on the BitNet b1.58 2B4T-shaped synthetic model that
# tests/headline-bench.sh uses (random ternary weights, F16 tied head, the same weights written
# as I2_S and as TQ2_0). Not part of CI: bitnet.cpp is not built there, and one round of all
# three engines takes ~10 min on 2 cores with the defaults.
#
#   tests/llama_cpp/batched-bench.sh prepare       builds bitnet-rs and llama.cpp, writes the
#                                                  two model files when they are missing
#   tests/llama_cpp/batched-bench.sh run [REPS]    only runs the engines, REPS (default 1)
#                                                  rounds, alternating within each round, then
#                                                  prints the tables over everything in $out
#   tests/llama_cpp/batched-bench.sh report        only prints the tables from $out
#
# On the team's shared machine: `cpu build bash tests/llama_cpp/batched-bench.sh prepare`, then
# `cpu bench bash tests/llama_cpp/batched-bench.sh run`. To keep each timed section short, run
# one engine (or one -npl value) per call with the same BITNET_BENCH_OUT; records accumulate
# there and `report` takes medians over all of them.
#
# Tables (stdout): S_TG and S_PP per engine and npl with the ratios; bitnet-rs's S_TG scaling
# over its own npl 1 figure; the peak RSS of each engine's whole run (/usr/bin/time) next to
# bitnet-rs's weights + F32 KV budget for -c.
#
# Settings (environment): THREADS (2), NPP (128), NTG (128), NPL (1,2,4,8,16), CTX (4096: the KV
# budget shared by the sequences, llama.cpp's -c), BATCH (2048: -b; llama.cpp's -ub stays 512),
# ENGINES ("bitnet-rs llama.cpp bitnet.cpp"), BITNET_CPP (/work/anchors/bitnet.cpp: its
# build/bin/llama-batched-bench is used when it exists and skipped with a note when not),
# BITNET_BENCH_MODELS (~/.cache/bitnet-llama-cpp/models), BITNET_BENCH_OUT (where the raw JSON
# lines go; default a temp folder removed at the end).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mode="${1:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
threads="${THREADS:-2}"
npp="${NPP:-128}"
ntg="${NTG:-128}"
npl="${NPL:-1,2,4,8,16}"
ctx="${CTX:-4096}"
batch="${BATCH:-2048}"
engines="${ENGINES:-bitnet-rs llama.cpp bitnet.cpp}"
bitnet_cpp="${BITNET_CPP:-/work/anchors/bitnet.cpp}"
models="${BITNET_BENCH_MODELS:-$HOME/.cache/bitnet-llama-cpp/models}"
# The files tests/headline-bench.sh writes: one generator run per type, the same weights.
i2s="$models/headline-2b4t-i2_s.gguf"
tq2="$models/headline-2b4t-tq2_0.gguf"
bitnet="$CARGO_TARGET_DIR/release/bitnet"
synthetic="$CARGO_TARGET_DIR/release/examples/synthetic_gguf"

case "$mode" in
  prepare)
    (cd "$root" && cargo build -q --release -p bitnet-cli \
      && cargo build -q --release -p bitnet-ggml-plugin --features synthetic --example synthetic_gguf)
    llama="$(bash "$root/tests/llama_cpp/build-llama.sh")"
    mkdir -p "$models"
    # Written together or not at all, so that both hold the same weights.
    if [ ! -f "$i2s" ] || [ ! -f "$tq2" ]; then
      "$synthetic" "$i2s" i2_s
      "$synthetic" "$tq2" tq2_0
    fi
    echo "ready: $bitnet, $llama/build/bin/llama-batched-bench, $i2s, $tq2" >&2
    exit 0
    ;;
  run) reps="${2:-1}" ;;
  report) reps=0 ;;
  *) echo "usage: $0 prepare | run [REPS] | report" >&2; exit 2 ;;
esac

out="${BITNET_BENCH_OUT:-}"
if [ -z "$out" ]; then
  [ "$mode" = report ] && { echo "report needs BITNET_BENCH_OUT" >&2; exit 2; }
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

if [ "$reps" -gt 0 ]; then
  llama_root="$(BITNET_LLAMA_CPP_NO_BUILD=1 bash "$root/tests/llama_cpp/build-llama.sh")" || {
    echo "llama.cpp is not built: run '$0 prepare' first" >&2
    exit 1
  }
  llama_bin="$llama_root/build/bin/llama-batched-bench"
  for f in "$bitnet" "$i2s" "$tq2" "$llama_bin"; do
    [ -e "$f" ] || { echo "missing $f: run '$0 prepare' first" >&2; exit 1; }
  done
  bitnet_cpp_bin="$bitnet_cpp/build/bin/llama-batched-bench"
  if [[ " $engines " == *" bitnet.cpp "* ]] && [ ! -x "$bitnet_cpp_bin" ]; then
    echo "bitnet.cpp: $bitnet_cpp_bin is not built; its column is skipped" >&2
    engines="${engines/bitnet.cpp/}"
  fi
  llama_args=(-c "$ctx" -b "$batch" -ub 512 -npp "$npp" -ntg "$ntg" -npl "$npl" -t "$threads"
    -tb "$threads" --output-format jsonl)
  # Peak RSS of one engine run (KiB) appended to $out/<engine>.rss; JSON records to .jsonl.
  timed() {
    local engine="$1"
    shift
    /usr/bin/time -f %M -o "$out/rss.tmp" "$@" | grep '^{' >>"$out/$engine.jsonl"
    cat "$out/rss.tmp" >>"$out/$engine.rss"
  }
  for round in $(seq "$reps"); do
    for engine in $engines; do
      echo "round $round of $reps: $engine (npp $npp, ntg $ntg, npl $npl)" >&2
      case "$engine" in
        bitnet-rs) timed bitnet-rs "$bitnet" bench --batched -m "$i2s" -c "$ctx" -b "$batch" \
          -npp "$npp" -ntg "$ntg" -npl "$npl" -t "$threads" -o jsonl 2>/dev/null ;;
        llama.cpp) timed llama.cpp "$llama_bin" -m "$tq2" "${llama_args[@]}" 2>/dev/null ;;
        bitnet.cpp) timed bitnet.cpp "$bitnet_cpp_bin" -m "$i2s" "${llama_args[@]}" 2>/dev/null ;;
        *) echo "unknown engine $engine (bitnet-rs, llama.cpp, bitnet.cpp)" >&2; exit 2 ;;
      esac
    done
  done
fi

# bitnet-rs's memory budget: the weights (file size) plus an F32 K and V row per layer and
# position of -c (`bitnet bench --batched` uses an F32 cache).
meta() {
  "$bitnet" info --no-tensors "$i2s" | sed -n "s/^ *[a-z0-9.-]*\.$1 *= *\([0-9]*\)$/\1/p" | head -1
}
n_layer="$(meta block_count)"
n_embd="$(meta embedding_length)"
n_head="$(meta attention.head_count)"
n_head_kv="$(meta attention.head_count_kv)"
kv_bytes=$((ctx * n_layer * 2 * n_head_kv * (n_embd / n_head) * 4))
weight_bytes="$(stat -c %s "$i2s")"

python3 - "$out" "$threads" "$weight_bytes" "$kv_bytes" "$ctx" <<'PY'
import json, os, statistics, sys
d, threads, weights, kv, ctx = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
engines = [e for e in ("bitnet-rs", "llama.cpp", "bitnet.cpp") if os.path.exists(os.path.join(d, e + ".jsonl"))]
if not engines:
    sys.exit(f"no records in {d}")
rows = {}
for e in engines:
    with open(os.path.join(d, e + ".jsonl")) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.setdefault((e, r["pp"], r["tg"], r["pl"]), []).append(r)
keys = sorted({k[1:] for k in rows})
def med(e, k, field):
    rs = rows.get((e,) + k)
    return statistics.median(r[field] for r in rs) if rs else None
fmt = lambda v: "n/a" if v is None else f"{v:.1f}"
ratio = lambda a, b: "n/a" if a is None or not b else f"{a / b:.2f}×"
names = {"bitnet-rs": "bitnet-rs I2_S", "llama.cpp": "llama.cpp TQ2_0", "bitnet.cpp": "bitnet.cpp I2_S"}
for field, label in (("speed_tg", "S_TG (aggregate decode)"), ("speed_pp", "S_PP (prompt)")):
    n = [len(rows[(e,) + k]) for e in engines for k in keys if (e,) + k in rows]
    print(f"\n{label}, tok/s, {threads} threads, medians of {min(n)}–{max(n)} runs\n")
    head = ["PP", "TG", "B"] + [names[e] for e in engines] + [f"÷ {names[e]}" for e in engines[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k in keys:
        vals = [med(e, k, field) for e in engines]
        cells = [str(k[0]), str(k[1]), str(k[2])] + [fmt(v) for v in vals]
        cells += [ratio(vals[0], v) for v in vals[1:]] if engines[0] == "bitnet-rs" else []
        print("| " + " | ".join(cells) + " |")
if "bitnet-rs" in engines:
    for pp, tg in sorted({k[:2] for k in keys}):
        one = med("bitnet-rs", (pp, tg, 1), "speed_tg")
        if one:
            scale = [(k[2], med("bitnet-rs", k, "speed_tg") / one) for k in keys if k[:2] == (pp, tg)]
            print(f"\nbitnet-rs S_TG over its npl 1 figure (pp {pp}, tg {tg}): "
                  + ", ".join(f"B={b}: {s:.2f}×" for b, s in scale))
print("\nPeak RSS of each engine's whole run (all npl values), GB, max over runs:")
for e in engines:
    path = os.path.join(d, e + ".rss")
    if os.path.exists(path):
        kib = [int(l) for l in open(path) if l.strip().isdigit()]
        if kib:
            print(f"- {names[e]}: {max(kib) * 1024 / 1e9:.3f}")
print(f"- bitnet-rs budget: weights {weights / 1e9:.3f} + F32 KV for -c {ctx} {kv / 1e9:.3f} "
      f"= {(weights + kv) / 1e9:.3f}; +10 %: {(weights + kv) * 1.1 / 1e9:.3f}")
PY
