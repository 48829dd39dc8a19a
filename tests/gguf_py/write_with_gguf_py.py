"""Writes a GGUF file with gguf-py (PyPI `gguf`) plus a JSON description of what it holds.

Usage: write_with_gguf_py.py OUT.gguf OUT.json

The file has metadata of every value type, including nested arrays, and tensors of types
F32, F16, Q8_0, TQ1_0 and TQ2_0 (quantized with gguf.quants). The JSON lists the metadata
in file order as type-tagged values (see tagged.py) and each tensor's ggml dims, type id and
data bytes (hex), so the Rust reader can be checked against an independent writer.
"""

import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as T
from gguf import GGUFWriter
from gguf.quants import quantize

from tagged import expected

ARCH = "crosscheck-arch"

METADATA = [
    ("t.u8", T.UINT8, 200, None),
    ("t.i8", T.INT8, -100, None),
    ("t.u16", T.UINT16, 60000, None),
    ("t.i16", T.INT16, -30000, None),
    ("t.u32", T.UINT32, 4_000_000_000, None),
    ("t.i32", T.INT32, -2_000_000_000, None),
    ("t.f32", T.FLOAT32, 1e-5, None),
    ("t.bool", T.BOOL, True, None),
    ("t.string", T.STRING, "grüße ✓", None),
    ("t.u64", T.UINT64, 2**64 - 1, None),
    ("t.i64", T.INT64, -(2**63), None),
    ("t.f64", T.FLOAT64, 0.1, None),
    ("t.arr_u8", T.ARRAY, [0, 1, 255], T.UINT8),
    ("t.arr_i8", T.ARRAY, [-128, 127], T.INT8),
    ("t.arr_u16", T.ARRAY, [1, 65535], T.UINT16),
    ("t.arr_i16", T.ARRAY, [-1, 2], T.INT16),
    ("t.arr_u32", T.ARRAY, [7], T.UINT32),
    ("t.arr_i32", T.ARRAY, [-7, 0, 7], T.INT32),
    ("t.arr_f32", T.ARRAY, [0.5, -3.25, 1e-7], T.FLOAT32),
    ("t.arr_bool", T.ARRAY, [True, False, True], T.BOOL),
    ("t.arr_str", T.ARRAY, ["a", "", "ccc", "ü"], T.STRING),
    ("t.arr_u64", T.ARRAY, [2**64 - 1, 0], T.UINT64),
    ("t.arr_i64", T.ARRAY, [-(2**63), 5], T.INT64),
    ("t.arr_f64", T.ARRAY, [0.1, -2.5], T.FLOAT64),
    # Nested arrays: gguf-py infers inner item types (int -> INT32, float -> FLOAT32, ...).
    ("t.nested_int", T.ARRAY, [[1, 2, 3], [4], [-5, 6]], None),
    ("t.nested_str", T.ARRAY, [["x"], ["y", "z"]], None),
    ("t.nested_deep", T.ARRAY, [[[True, False]], [[False]]], None),
    ("t.nested_float", T.ARRAY, [[0.25], [1.5, -2.0]], None),
]


def tensors():
    rng = np.random.default_rng(1234)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal((2, 4)).astype(np.float16)
    q8 = quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0)
    # Ternary-ish weights with a few exact ties, as TQ types are meant for.
    tq1_src = (rng.integers(-1, 2, (2, 256)) * 0.75).astype(np.float32)
    tq1_src[0, :4] = [0.375, -0.375, 0.2, 0.0]
    tq1 = quantize(tq1_src, Q.TQ1_0)
    tq2 = quantize(rng.standard_normal((1, 512)).astype(np.float32), Q.TQ2_0)
    # (name, array to write, raw ggml type or None, ggml type id, ggml dims)
    return [
        ("w.f32", f32, None, Q.F32, [5, 3]),
        ("w.f16", f16, None, Q.F16, [4, 2]),
        ("w.q8_0", q8, Q.Q8_0, Q.Q8_0, [64, 2]),
        ("w.tq1_0", tq1, Q.TQ1_0, Q.TQ1_0, [256, 2]),
        ("w.tq2_0", tq2, Q.TQ2_0, Q.TQ2_0, [512, 1]),
    ]


def main(gguf_path, json_path):
    writer = GGUFWriter(gguf_path, ARCH)
    for key, vtype, value, sub_type in METADATA:
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    ts = tensors()
    for name, arr, raw, _, _ in ts:
        writer.add_tensor(name, arr, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    meta = [["general.architecture", expected(T.STRING, ARCH)]]
    meta += [[k, expected(t, v, s)] for k, t, v, s in METADATA]
    desc = {
        "metadata": meta,
        "tensors": [
            {"name": n, "dims": dims, "type": int(ty), "data": np.ascontiguousarray(a).tobytes().hex()}
            for n, a, _, ty, dims in ts
        ],
    }
    with open(json_path, "w") as f:
        json.dump(desc, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
