#!/usr/bin/env python3
"""Writes a safetensors file of bf16 tensors holding normal(0, 0.02) values, like the weights of
a trained model, without needing torch. Usage: gen_bf16.py OUT [--gib 1] [--tensors 64]"""
import argparse
import json
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    total = int(args.gib * (1 << 30)) // 2  # elements
    cols = 4096
    rows = max(1, total // args.tensors // cols)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for i in range(args.tensors):
        n = rows * cols * 2
        header[f"layers.{i}.weight"] = {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(args.seed)
    with open(args.out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _ in range(args.tensors):
            a = rng.normal(0, 0.02, size=rows * cols).astype(np.float32)
            # round to nearest even bf16
            u = a.view(np.uint32)
            u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            f.write(u.astype(np.uint16).tobytes())


if __name__ == "__main__":
    main()
