"""Type-tagged JSON for GGUF metadata values, shared by the gguf-py cross-check scripts.

A value is {"t": <GGUFValueType name>, "v": ...}; arrays add "item": <item type name> and
hold tagged items in "v". Floats are carried as their IEEE bit patterns so that nothing is
lost in JSON: FLOAT32 -> u32 bits, FLOAT64 -> u64 bits.
"""

import struct

from gguf import GGUFValueType as T


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def scalar(vtype, value):
    if vtype == T.FLOAT32:
        return {"t": vtype.name, "v": f32_bits(value)}
    if vtype == T.FLOAT64:
        return {"t": vtype.name, "v": f64_bits(value)}
    if vtype == T.BOOL:
        return {"t": vtype.name, "v": bool(value)}
    if vtype == T.STRING:
        return {"t": vtype.name, "v": value}
    return {"t": vtype.name, "v": int(value)}


def infer_type(value):
    """The item type gguf-py's writer infers for a Python value (GGUFValueType.get_type)."""
    if isinstance(value, str):
        return T.STRING
    if isinstance(value, list):
        return T.ARRAY
    if isinstance(value, float):
        return T.FLOAT32
    if isinstance(value, bool):
        return T.BOOL
    if isinstance(value, int):
        return T.INT32
    raise ValueError(f"no GGUF type for {value!r}")


def expected(vtype, value, sub_type=None):
    """Tagged form of what gguf-py's writer is asked to write."""
    if vtype != T.ARRAY:
        return scalar(vtype, value)
    item = sub_type if sub_type is not None else infer_type(value[0])
    return {"t": "ARRAY", "item": item.name, "v": [expected(item, x) for x in value]}


def decode_parts(parts, idx, vtype):
    """Decodes one value from a gguf-py ReaderField's parts, starting at parts[idx].

    gguf-py's own ReaderField.contents() flattens nested arrays, so we walk the parts list
    it produced (the raw numpy views of each encoded piece) ourselves.
    Returns (tagged value, next index).
    """
    if vtype == T.STRING:
        # parts[idx] is the u64 length, parts[idx + 1] the bytes.
        return scalar(T.STRING, bytes(parts[idx + 1]).decode("utf-8")), idx + 2
    if vtype == T.ARRAY:
        item = T(int(parts[idx][0]))
        count = int(parts[idx + 1][0])
        idx += 2
        items = []
        for _ in range(count):
            v, idx = decode_parts(parts, idx, item)
            items.append(v)
        return {"t": "ARRAY", "item": item.name, "v": items}, idx
    raw = parts[idx].tolist()[0]
    return scalar(vtype, raw), idx + 1


def decode_field(field):
    """Tagged value of a gguf-py ReaderField (key/value metadata entry)."""
    # parts: [key length, key bytes, value type, value parts...]
    vtype = T(int(field.parts[2][0]))
    value, end = decode_parts(field.parts, 3, vtype)
    assert end == len(field.parts), f"{field.name}: {end} of {len(field.parts)} parts used"
    return value
