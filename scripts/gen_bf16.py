#!/usr/bin/env python3
"""Writes a safetensors file of bf16 tensors holding normal(0, 0.02) values, like the weights of
a trained model, without needing torch. Usage: gen_bf16.py OUT [--gib 1] [--tensors 64]"""
import argparse

import numpy as np

from st_format import header, to_bf16_bits


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
    n = rows * cols * 2
    entries = [(f"layers.{i}.weight", "BF16", (rows, cols), n) for i in range(args.tensors)]
    rng = np.random.default_rng(args.seed)
    with open(args.out, "wb") as f:
        f.write(header(entries, metadata={"format": "pt"}))
        for _ in range(args.tensors):
            f.write(to_bf16_bits(rng.normal(0, 0.02, size=rows * cols)).tobytes())

if __name__ == "__main__":
    main()
