"""The safetensors layout, for the scripts that write sample files without torch: the length
prefix and JSON header, and fp32 -> bf16 rounding to nearest even."""
import json
import struct

import numpy as np


def header(entries, metadata=None):
    """The bytes before the data: entries are (name, dtype, shape, nbytes) in data order."""
    table = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        table[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    h = json.dumps(table, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h


def to_bf16_bits(a):
    """bf16 bit patterns of `a`, rounded to nearest even."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
