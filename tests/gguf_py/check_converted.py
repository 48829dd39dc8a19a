"""Checks a GGUF written by bitnet-convert with gguf-py (PyPI `gguf`), an independent reader.

Usage: check_converted.py <model.gguf> <expect.json>

expect.json: {"architecture": str, "metadata": {key: value}, "tensors": [{"name", "type", "shape",
"dequant": raw little-endian f32 file (optional), "quant_of": raw f32 source (optional)}]}.
For each tensor: the type and ggml shape must match; gguf-py's numpy dequantization must equal
the f32 values in `dequant` exactly; gguf-py's numpy quantizer applied to `quant_of` must give
exactly the bytes in the file. Exits non-zero with a message on the first mismatch.
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize, quantize


def fail(msg):
    print(f"check_converted: {msg}", file=sys.stderr)
    sys.exit(1)


def field_value(reader, key):
    field = reader.fields.get(key)
    if field is None:
        fail(f"metadata key {key} missing")
    return field.contents()


def main():
    path, expect_path = sys.argv[1], sys.argv[2]
    with open(expect_path) as f:
        expect = json.load(f)
    reader = GGUFReader(path)
    arch = field_value(reader, "general.architecture")
    if arch != expect["architecture"]:
        fail(f"architecture {arch!r}, expected {expect['architecture']!r}")
    for key, want in expect.get("metadata", {}).items():
        got = field_value(reader, key)
        if isinstance(want, float):
            ok = abs(got - want) <= 1e-6 * max(1.0, abs(want))
        else:
            ok = got == want
        if not ok:
            fail(f"metadata {key} = {got!r}, expected {want!r}")
    tensors = {t.name: t for t in reader.tensors}
    if len(tensors) != len(expect["tensors"]):
        fail(f"{len(tensors)} tensors in the file, expected {len(expect['tensors'])}")
    for e in expect["tensors"]:
        t = tensors.get(e["name"])
        if t is None:
            fail(f"tensor {e['name']} missing")
        if t.tensor_type.name != e["type"]:
            fail(f"{e['name']}: type {t.tensor_type.name}, expected {e['type']}")
        shape = [int(d) for d in t.shape]
        if shape != e["shape"]:
            fail(f"{e['name']}: shape {shape}, expected {e['shape']}")
        if "dequant" in e:
            got = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
            want = np.fromfile(e["dequant"], dtype="<f4")
            if got.shape != want.shape or not np.array_equal(got, want):
                bad = np.flatnonzero(got != want)[:3] if got.shape == want.shape else "shape"
                fail(f"{e['name']}: gguf-py dequantization differs from ours (at {bad})")
        if "quant_of" in e:
            src = np.fromfile(e["quant_of"], dtype="<f4").reshape(shape[1], shape[0])
            q = quantize(src, t.tensor_type)
            if q.tobytes() != np.asarray(t.data).tobytes():
                fail(f"{e['name']}: gguf-py's {e['type']} quantizer gives other bytes than ours")
    print(f"check_converted: {path}: {len(expect['tensors'])} tensors agree")


if __name__ == "__main__":
    main()
