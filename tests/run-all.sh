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

echo "== llama.cpp (pinned b11434, built once and cached in ~/.cache) with the ggml-bitnet plugin" >&2
bash tests/llama_cpp/run.sh
