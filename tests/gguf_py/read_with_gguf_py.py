"""Reads a GGUF file with gguf-py's GGUFReader and dumps what it sees as JSON.

Usage: read_with_gguf_py.py IN.gguf OUT.json

Output: {"version", "alignment", "metadata": [[key, tagged value], ...] in file order,
"tensors": [{"name", "dims" (ggml order), "type", "n_bytes", "data" (hex),
"dequant" (hex of little-endian f32, for types gguf.quants can dequantize)}]}.
"""

import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize

from tagged import decode_field

DEQUANTIZED = {Q.F32, Q.F16, Q.Q8_0, Q.TQ1_0, Q.TQ2_0}


def main(gguf_path, json_path):
    r = GGUFReader(gguf_path)
    meta = [[name, decode_field(f)] for name, f in r.fields.items() if not name.startswith("GGUF.")]
    tensors = []
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data)
        entry = {
            "name": t.name,
            "dims": [int(d) for d in t.shape],
            "type": int(t.tensor_type),
            "n_bytes": int(t.n_bytes),
            "data": raw.tobytes().hex(),
        }
        if t.tensor_type in DEQUANTIZED:
            deq = dequantize(raw, t.tensor_type).astype("<f4")
            entry["dequant"] = deq.tobytes().hex()
        tensors.append(entry)
    out = {
        "version": int(r.fields["GGUF.version"].parts[-1][0]),
        "alignment": int(r.alignment),
        "metadata": meta,
        "tensors": tensors,
    }
    with open(json_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
