#!/usr/bin/python3
"""Independent decoder of the fedlora wire format (docs/wire.md), used by test_wire as a reference.

Reads one encoded message from the file given as argv[1] and prints its fields, one per line."""
import struct
import sys
import zlib

DTYPES = {1: ("f32", "<f", 4), 2: ("f64", "<d", 8), 3: ("i32", "<i", 4), 4: ("i64", "<q", 8),
          5: ("u8", "<B", 1), 6: ("c64", "<f", 8), 7: ("c128", "<d", 16)}

buf = open(sys.argv[1], "rb").read()
magic, version, mtype, run_id, rnd, client, seq, n_tensors, flags, body_len, hcrc = struct.unpack_from(
    "<4sHHQIIQIIQI", buf, 0)
assert flags == 0, flags
assert magic == b"FLRW", magic
assert hcrc == zlib.crc32(buf[:48]), "header crc"
body = buf[52:52 + body_len]
assert len(buf) == 52 + body_len + 4, "length"
assert struct.unpack_from("<I", buf, 52 + body_len)[0] == zlib.crc32(body), "body crc"
print(f"version={version} type={mtype} run={run_id} round={rnd} client={client} seq={seq} n={n_tensors}")
pos = 0
table = []
for _ in range(n_tensors):
    (name_len,) = struct.unpack_from("<H", body, pos); pos += 2
    name = body[pos:pos + name_len].decode(); pos += name_len
    dtype, ndim = struct.unpack_from("<BB", body, pos); pos += 2
    shape = list(struct.unpack_from(f"<{ndim}Q", body, pos)); pos += 8 * ndim
    table.append((name, dtype, shape))
for name, dtype, shape in table:
    tag, fmt, size = DTYPES[dtype]
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * size
    data = body[pos:pos + nbytes]; pos += nbytes
    n_values = nbytes // struct.calcsize(fmt)
    total = sum(struct.unpack(f"<{n_values}{fmt[1]}", data)) if n_values else 0
    print(f"tensor {name} {tag} {'x'.join(map(str, shape)) or 'scalar'} sum={total:.6f}")
assert pos == len(body), "trailing bytes"
