"""Block vectors from gguf-py's numpy (de)quantizers (gguf.quants): TQ1_0, TQ2_0, and the LM
head types Q8_0, Q4_0 (quantized and dequantized) and Q6_K (dequantized only: gguf-py has no
Q6_K quantizer).

Usage: quant_vectors.py OUT.json

For each type: "float_cases" (input f32, gguf-py's quantized bytes, its dequantization of
them) and "byte_cases" (arbitrary block bytes with a finite f16 scale and gguf-py's
dequantization). Everything is hex: f32 arrays little endian.
"""

import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize


def float_inputs(rng):
    cases = {}
    cases["normal"] = rng.standard_normal(8 * 256).astype(np.float32)
    tern = rng.integers(-1, 2, 4 * 256).astype(np.float32) * np.float32(0.0421)
    cases["ternary_times_scale"] = tern
    ties = rng.integers(-2, 3, 2 * 256).astype(np.float32) * np.float32(0.5)
    ties[0] = 1.0  # amax 1: the +-0.5 entries are exact ties (round half away from zero)
    ties[256] = -1.0
    cases["exact_ties"] = ties
    cases["zeros"] = np.zeros(256, dtype=np.float32)
    cases["tiny"] = (rng.standard_normal(256) * 1e-9).astype(np.float32)
    cases["large"] = (rng.standard_normal(256) * 1000.0).astype(np.float32)
    mixed = rng.standard_normal(3 * 256).astype(np.float32)
    mixed[256:512] = 0.0  # one all-zero block between two normal ones
    cases["mixed_zero_block"] = mixed
    return cases


def byte_cases(rng, qtype, n_blocks, scale_first):
    """Random blocks whose f16 scale (first or last two bytes) is finite."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scales = rng.standard_normal(n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    if scale_first:
        raw[:, :2] = scales
    else:
        raw[:, size - 2 :] = scales
    return raw.reshape(-1), n_blocks * block


# (name, type, gguf-py quantizes it, the f16 scale leads the block)
TYPES = (
    ("TQ1_0", Q.TQ1_0, True, False),
    ("TQ2_0", Q.TQ2_0, True, False),
    ("Q8_0", Q.Q8_0, True, True),
    ("Q4_0", Q.Q4_0, True, True),
    ("Q6_K", Q.Q6_K, False, False),
)


def main(path):
    rng = np.random.default_rng(20240905)
    out = {}
    for name, qtype, quantizes, scale_first in TYPES:
        block, _ = GGML_QUANT_SIZES[qtype]
        floats = []
        for case, x in float_inputs(rng).items() if quantizes else ():
            q = quantize(x.reshape(-1, block), qtype).reshape(-1)
            dq = dequantize(q, qtype).astype("<f4").reshape(-1)
            floats.append(
                {
                    "case": case,
                    "n": int(x.size),
                    "input": x.astype("<f4").tobytes().hex(),
                    "quantized": q.tobytes().hex(),
                    "dequantized": dq.tobytes().hex(),
                }
            )
        raw, n = byte_cases(rng, qtype, 16, scale_first)
        dq = dequantize(raw, qtype).astype("<f4").reshape(-1)
        out[name] = {
            "float_cases": floats,
            "byte_cases": [{"n": n, "bytes": raw.tobytes().hex(), "dequantized": dq.tobytes().hex()}],
        }
    with open(path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
