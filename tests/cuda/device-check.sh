#!/usr/bin/env bash
# The GPU check, run on the lent GPU machine (no cargo there) from the repository root:
#
#   bash .device/device-check.sh          # with .device/ holding what tests/cuda/pack.sh put there
#
# It needs the gzipped release binaries `cuda_check` and `bitnet` (built with --features cuda)
# beside it. Every step runs even when an earlier one failed; eight files land under $OUT
# (default ./device-out; the device tool brings back at most eight): report.json (the summary),
# check.json and check-dp4a.json (cuda_check's reports), bench.json (`bitnet bench`),
# run-cpu.txt / run-cuda.txt (`bitnet run` on a converted transformers fixture), serve.json
# (`bitnet serve --device cuda`), log.txt.
# Without a usable GPU it says so and exits 3 (rehearse with the libcuda stand-in of
# tests/cuda/setup.sh: BITNET_CUDA_LIB_DIR is put first on the library path).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$PWD/device-out}"
mkdir -p "$OUT"
log="$OUT/log.txt"
exec > >(tee -a "$log") 2>&1
work="$(mktemp -d)"
status=0
step() { echo; echo "== $*  ($(date +%T))"; }
fail() { echo "FAILED: $*"; status=1; }

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 || echo "no nvidia-smi"
ldd --version 2>&1 | head -1
# The CUDA 13 user-space libraries (cudart, cublas, curand, nvrtc) of a PyTorch venv: found by
# glob, not by a fixed path.
libdir=""
for d in /opt/*/.venv/lib/python3.*/site-packages/nvidia/cu13/lib \
         /opt/*/lib/python3.*/site-packages/nvidia/cu13/lib \
         /usr/local/lib/python3.*/dist-packages/nvidia/cu13/lib \
         /usr/lib/python3/dist-packages/nvidia/cu13/lib; do
  if [ -e "$d/libcublas.so.13" ]; then libdir="$d"; break; fi
done
if [ -z "$libdir" ]; then
  libdir="$(find / -xdev -name libcublas.so.13 -path '*cu13*' 2>/dev/null | head -1 | xargs -r dirname)"
fi
echo "CUDA 13 libraries: ${libdir:-not found}"
# The driver's libcuda.so.1: on the linker's path, or in the driver's mount.
drvdir=""
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib64 /usr/lib/x86_64-linux-gnu; do
    if [ -e "$d/libcuda.so.1" ]; then drvdir="$d"; break; fi
  done
fi
echo "driver library: $(ldconfig -p 2>/dev/null | grep -m1 'libcuda.so.1 ' || echo "${drvdir:-not on the linker path}")"
export LD_LIBRARY_PATH="${BITNET_CUDA_LIB_DIR:+$BITNET_CUDA_LIB_DIR:}${libdir:+$libdir:}${drvdir:+$drvdir:}${LD_LIBRARY_PATH:-}"

step "binaries"
for b in cuda_check bitnet; do
  if [ -f "$here/$b.gz" ]; then gunzip -c "$here/$b.gz" >"$work/$b" && chmod +x "$work/$b"; else fail "$here/$b.gz missing"; fi
done
ldd "$work/cuda_check" 2>&1 | grep -E "cuda|cublas|curand|nvrtc|not found" || true

step "cuda_check (op, model, fixtures, bench)"
model="$work/bitnet-2b4t.gguf"
timeout 420 "$work/cuda_check" --out "$OUT/check.json" --model "$model" --fixtures tests/fixtures \
  --sections op,model,fixtures,bench --tg 128 --pp 512
rc=$?
if [ "$rc" = 2 ]; then
  echo "no usable CUDA device: nothing else to check"
  python3 - "$OUT" <<'PY' 2>/dev/null || true
import json, sys, os
out = sys.argv[1]
rep = json.load(open(os.path.join(out, "check.json")))
json.dump({"device": "unavailable", "check": rep}, open(os.path.join(out, "report.json"), "w"), indent=1)
PY
  rm -rf "$work"
  exit 3
fi
[ "$rc" = 0 ] || fail "cuda_check exited $rc"

step "cuda_check with BITNET_CUDA_GEMM=dp4a (the GEMV fallback for prefill)"
BITNET_CUDA_GEMM=dp4a timeout 120 "$work/cuda_check" --out "$OUT/check-dp4a.json" --model "$model" --sections op || fail "dp4a check"

step "bitnet bench --device cuda (pp512, tg128)"
timeout 300 "$work/bitnet" bench --device cuda -m "$model" -p 512 -n 128 -r 3 -o json >"$OUT/bench.json" || fail "bitnet bench"

step "bitnet run: greedy text on cuda equals cpu (a transformers fixture, converted to I2_S)"
fixture=tests/fixtures/bitnet-gqa4-autobitlinear
fx="$work/fixture.gguf"
timeout 120 "$work/bitnet" convert "$fixture" --outfile "$fx" >/dev/null 2>&1 || fail "bitnet convert $fixture"
prompt="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt"]["text"])' "$fixture/reference.json")"
for dev in cuda cpu; do
  timeout 120 "$work/bitnet" run --device "$dev" -m "$fx" -p "$prompt" -n 32 --temp 0 \
    >"$OUT/run-$dev.txt" 2>"$work/run-$dev.err" || fail "bitnet run --device $dev"
  tail -n 3 "$work/run-$dev.err"
done
if cmp -s "$OUT/run-cuda.txt" "$OUT/run-cpu.txt"; then echo "same text"; else fail "cuda and cpu text differ"; fi

step "bitnet serve --device cuda"
port_file="$work/serve.err"
"$work/bitnet" serve --device cuda -m "$fx" --port 0 2>"$port_file" &
spid=$!
port=""
for _ in $(seq 1 120); do
  port="$(grep -oE '127\.0\.0\.1:[0-9]+' "$port_file" | head -1 | cut -d: -f2)"
  [ -n "$port" ] && break
  sleep 1
done
if [ -n "$port" ]; then
  python3 - "$port" "$OUT/serve.json" "$prompt" <<'PY' || fail "serve request"
import json, sys, urllib.request
port, out, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
    data=json.dumps({"prompt": prompt, "max_tokens": 32, "temperature": 0}).encode(),
    headers={"Content-Type": "application/json"})
body = json.load(urllib.request.urlopen(req, timeout=120))
json.dump(body, open(out, "w"), indent=1)
print(body["choices"][0]["text"])
PY
else
  fail "serve did not report a port"; cat "$port_file"
fi
kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null

step "summary"
python3 - "$OUT" <<'PY' || fail "summary"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"missing": str(e)}
check, dp4a, bench, serve = load("check.json"), load("check-dp4a.json"), load("bench.json"), load("serve.json")
run = {d: open(os.path.join(out, f"run-{d}.txt")).read() if os.path.exists(os.path.join(out, f"run-{d}.txt")) else None for d in ("cuda", "cpu")}
b = check.get("bench", {})
rep = {
    "op_all_bit_exact": check.get("op", {}).get("all_bit_exact"),
    "op_worst_max_rel_diff": check.get("op", {}).get("worst_max_rel_diff"),
    "op_dp4a_all_bit_exact": dp4a.get("op", {}).get("all_bit_exact"),
    "fixtures_all_pass": check.get("fixtures", {}).get("all_pass"),
    "model": {k: v for k, v in check.get("model", {}).items() if k != "cuda_modes"},
    "copy_gb_s": b.get("copy_gb_s"),
    "gemv": b.get("gemv_decode_step_210_matrices"),
    "candle_f16": b.get("candle_f16_matmul_210_matrices"),
    "overhead_us": b.get("overhead_us"),
    "gemm": b.get("gemm_prefill_210_matrices"),
    "tg": b.get("tg"),
    "pp": {k: v for k, v in b.items() if k.startswith("pp")},
    "bench_error": b.get("error"),
    "bitnet_bench": [{k: r.get(k) for k in ("n_prompt", "n_gen", "avg_ts", "stddev_ts")} for r in bench] if isinstance(bench, list) else bench,
    "run_same_text": run["cuda"] is not None and run["cuda"] == run["cpu"],
    "serve_text": (serve.get("choices") or [{}])[0].get("text") if isinstance(serve, dict) else None,
    "serve_equals_run": isinstance(serve, dict) and run["cpu"] is not None and bool(serve.get("choices")) and run["cpu"].endswith(serve["choices"][0]["text"].strip()),
    "errors": {k: v.get("error") for k, v in check.items() if isinstance(v, dict) and v.get("error")},
}
json.dump(rep, open(os.path.join(out, "report.json"), "w"), indent=1)
print(json.dumps(rep, indent=1))
PY
rm -rf "$work"
exit "$status"
