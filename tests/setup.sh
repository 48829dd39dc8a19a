#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine that has only the Rust
# toolchain, gcc and python3. Idempotent: each step is skipped when already satisfied.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: aarch64 cross linker + user-mode emulator for the NEON kernels; cmake, make
# and g++ build the pinned llama.cpp for the ggml plugin tests; haproxy balances two server
# replicas in the serve tests.
apt_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static libclang-dev cmake make g++ valgrind haproxy)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust components and the aarch64 target.
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' || rustup target add aarch64-unknown-linux-gnu

# Python venv for the independent cross-checks (gguf-py).
bash "$root/tests/setup-python.sh"
