#!/usr/bin/python3
"""An independent safetensors reader and writer (struct + json + numpy), used by test_learn_safetensors as the
reference the C++ implementation must agree with byte for byte. Debian's Python has no `safetensors` package.

  safetensors_reference.py write OUT.safetensors MANIFEST.json   write a file with every dtype, dump what it holds
  safetensors_reference.py read IN.safetensors MANIFEST.json     read a file (validating it), dump what it holds

A manifest is JSON: {"metadata": {...}, "tensors": {name: {"dtype", "shape", "hex", ["f32_hex"]}}} where "hex" is
the tensor's little-endian bytes and "f32_hex", for F16 and BF16, the bytes of the same values as float32."""
import json
import struct
import sys

import numpy as np

DTYPES = {  # safetensors name -> numpy little-endian dtype (BF16 handled as raw uint16 bit patterns)
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"), "I64": np.dtype("<i8"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
}


def as_f32(dtype, arr):
    if dtype == "F16":
        return arr.astype("<f4")
    if dtype == "BF16":
        return (arr.astype("<u4") << np.uint32(16)).view("<f4")
    return None


def manifest_entry(dtype, arr):
    e = {"dtype": dtype, "shape": list(arr.shape), "hex": arr.tobytes().hex()}
    f = as_f32(dtype, arr)
    if f is not None:
        e["f32_hex"] = f.tobytes().hex()
    return e


def bf16_bits(values):
    """bfloat16 bit patterns of float32 values by truncation (exact for the values used here)."""
    return (np.asarray(values, dtype="<f4").view("<u4") >> np.uint32(16)).astype("<u2")


def sample_tensors():
    rng = np.random.default_rng(1234)
    half = rng.standard_normal((3, 4)).astype("<f2")
    half.flat[:5] = [np.inf, -np.inf, -0.0, 6e-8, 65504.0]  # infinities, signed zero, subnormal, max
    return [  # (name, dtype, array)
        ("model.embed.weight", "F32", rng.standard_normal((5, 7)).astype("<f4")),
        ("h.0.attn.c_attn.bias", "F64", rng.standard_normal(6)),
        ("half", "F16", half),
        ("bf16", "BF16", bf16_bits([1.0, -2.5, 0.0, -0.0, np.inf, 3.0e38, 1.0e-39, 0.15625])),
        ("long", "I64", np.array([[-2**63, 2**63 - 1, 0], [1, -1, 123456789012]], dtype="<i8")),
        ("int", "I32", np.array([-2**31, 2**31 - 1, 7, -7], dtype="<i4")),
        ("short", "I16", np.array([-32768, 32767, 5], dtype="<i2")),
        ("tiny", "I8", np.array([-128, 127, 0, -1], dtype="i1")),
        ("bytes", "U8", np.arange(250, 260, dtype=np.int64).astype("u1")),
        ("mask", "BOOL", np.array([[True, False, True, True, False], [False, False, True, False, True]])),
        ("scalar", "F32", np.array(3.25, dtype="<f4")),
        ("empty", "F32", np.zeros((0, 3), dtype="<f4")),
    ]


def write(path, manifest_path):
    tensors = sample_tensors()
    metadata = {"format": "pt", "note": "written by safetensors_reference.py \u2713"}
    # Data in reverse order, header keys in yet another order: readers must follow the offsets, not the order.
    header, blobs, offset = {}, [], 0
    for name, dtype, arr in reversed(tensors):
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    keys = sorted(header, key=lambda k: (len(k), k))
    ordered = {"__metadata__": metadata}
    ordered.update((k, header[k]) for k in keys)
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    dump(manifest_path, metadata, [(n, d, a) for n, d, a in tensors])


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header length beyond the file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    buf = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    out, spans = [], []
    for name, info in header.items():
        dt = DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= begin <= end <= len(buf) or count * dt.itemsize != end - begin:
            raise ValueError(f"tensor {name}: bad data_offsets")
        arr = np.frombuffer(buf[begin:end], dtype=dt).reshape(shape)
        out.append((name, info["dtype"], arr))
        spans.append((begin, end))
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise ValueError("data ranges overlap or leave a gap")
        pos = end
    if pos != len(buf):
        raise ValueError("trailing bytes")
    return metadata, out


def dump(manifest_path, metadata, tensors):
    m = {"metadata": metadata, "tensors": {name: manifest_entry(d, a) for name, d, a in tensors}}
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(m, f, ensure_ascii=False, indent=1)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("write", "read"):
        sys.exit(__doc__)
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    else:
        metadata, tensors = read(sys.argv[2])
        dump(sys.argv[3], metadata, tensors)


if __name__ == "__main__":
    main()
