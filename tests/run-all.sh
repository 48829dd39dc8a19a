#!/usr/bin/env bash
# The whole test suite: lints, every Rust test on x86_64 (every kernel path this CPU has),
# the NEON kernels under qemu, and the cross-language checks. README's test command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash tests/setup.sh
export BITNET_PYTHON="$root/.venv/bin/python"

echo "== fmt + clippy" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests (x86_64)" >&2
cargo test --workspace

echo "== NEON kernels under qemu-aarch64 (with and without dotprod)" >&2
for kernel in neon neon-dotprod; do
  BITNET_KERNEL=$kernel cargo test -p bitnet-backend --target aarch64-unknown-linux-gnu --lib --tests
done

echo "== CUDA feature: build only (no GPU here; toolkit from PyPI wheels, see tests/cuda/setup.sh)" >&2
# Own target dir, so the CPU build above stays valid. candle-kernels' GPU code is most of this
# step's time: every invocation uses the release profile and builds dev targets (so the same
# features are resolved), which compiles it once for clippy and the build.
cuda_start=$SECONDS
cuda_env="$(bash tests/cuda/setup.sh)"
(
  . "$cuda_env"
  cuda_build=(--release --features cuda -p bitnet-candle -p bitnet-cli --target-dir target/cuda)
  # bitnet-ffi too: its `device` field's CUDA side is only compiled with the feature.
  cargo clippy "${cuda_build[@]}" -p bitnet-ffi --all-targets -- -D warnings
  cargo build "${cuda_build[@]}" --example cuda_check --bin bitnet
  # The device check must fail cleanly where there is no GPU (the stand-in libcuda has none).
  rehearsal="$(mktemp -d)"
  bash tests/cuda/pack.sh "$rehearsal/device" target/cuda
  rc=0
  OUT="$rehearsal/out" bash "$rehearsal/device/device-check.sh" >"$rehearsal/log" 2>&1 || rc=$?
  if [ "$rc" != 3 ] || ! grep -q "no usable CUDA device" "$rehearsal/log"; then
    cat "$rehearsal/log" >&2
    echo "device-check.sh without a GPU: exit $rc (expected 3, 'no usable CUDA device')" >&2
    exit 1
  fi
  rm -rf "$rehearsal"
)
echo "== CUDA feature step: $((SECONDS - cuda_start)) s" >&2

echo "== llama.cpp (pinned b11434, built once and cached in ~/.cache) with the ggml-bitnet plugin" >&2
bash tests/llama_cpp/run.sh
