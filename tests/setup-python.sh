#!/usr/bin/env bash
# Creates <workspace>/.venv with the pinned packages of tests/requirements-*.txt: gguf-py for
# the cross-checks, the openai client and friends for the server tests (they use
# $BITNET_PYTHON, else .venv/bin/python).
# Idempotent: does nothing when the venv already has every pinned version.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup-python: creating $venv" >&2
  python3 -m venv "$venv"
fi

pins_satisfied() {
  "$venv/bin/python" - "$1" <<'PY'
import importlib.metadata as md
import sys

for line in open(sys.argv[1]):
    spec = line.split("#", 1)[0].strip()
    if not spec:
        continue
    name, version = spec.split("==")
    try:
        if md.version(name) != version:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
PY
}

for req in "$root"/tests/requirements-*.txt; do
  if ! pins_satisfied "$req"; then
    echo "setup-python: installing $(grep -v '^#' "$req" | xargs)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  fi
done
