#!/usr/bin/env bash
# Puts what tests/cuda/device-check.sh needs into DEST (e.g. the lead checkout's .device/, which
# the device tool carries): the script and the gzipped release binaries `cuda_check` and
# `bitnet` built with --features cuda in TARGET (default target/cuda). The device tool carries at
# most 64 MiB, so the binaries travel gzipped (about 11 MB each).
#
#   bash tests/cuda/pack.sh /work/main/.device [target/cuda]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${1:?usage: pack.sh DEST [TARGET_DIR]}"
target="${2:-$root/target/cuda}"
mkdir -p "$dest"
cp "$root/tests/cuda/device-check.sh" "$dest/device-check.sh"
for bin in "$target/release/examples/cuda_check" "$target/release/bitnet"; do
  [ -x "$bin" ] || { echo "pack: $bin is missing (build it with --features cuda)" >&2; exit 1; }
  gzip -6 -c "$bin" >"$dest/$(basename "$bin").gz.tmp"
  mv "$dest/$(basename "$bin").gz.tmp" "$dest/$(basename "$bin").gz"
done
du -ch "$dest"/* | tail -1 >&2
