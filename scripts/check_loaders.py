#!/usr/bin/env python3
"""Loads every model file under MOUNTED with the unmodified loaders users run, and compares every
tensor with the same file under ORIGINAL (read directly from disk). Exits non-zero on the first
difference. Files it knows: model.safetensors, numpy.safetensors, array.npy, model.gguf,
model.pkl, model.pth.

Usage: check_loaders.py ORIGINAL MOUNTED
"""
import os
import pickle
import sys

import numpy as np


def check(cond, what):
    if not cond:
        sys.exit(f"MISMATCH: {what}")


def safetensors_torch(orig, mnt):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    a, b = load_file(orig), load_file(mnt)
    check(a.keys() == b.keys(), "safetensors load_file keys")
    for k in a:
        check(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"load_file {k}")
    with safe_open(mnt, framework="pt") as f:  # mmaps the mounted file
        check(set(f.keys()) == set(a), "safe_open(pt) keys")
        for k in f.keys():
            check(torch.equal(f.get_tensor(k), a[k]), f"safe_open(pt) {k}")
    return len(a)


def safetensors_numpy(orig, mnt):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    a = load_file(orig)
    with safe_open(mnt, framework="numpy") as f:  # mmaps the mounted file
        check(set(f.keys()) == set(a), "safe_open(numpy) keys")
        for k in f.keys():
            t = f.get_tensor(k)
            check(t.dtype == a[k].dtype and np.array_equal(t, a[k]), f"safe_open(numpy) {k}")
    b = load_file(mnt)
    for k in a:
        check(np.array_equal(a[k], b[k]), f"numpy load_file {k}")
    return len(a)


def npy(orig, mnt):
    a = np.load(orig)
    b = np.load(mnt, mmap_mode="r")
    check(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), "numpy.load mmap")
    return 1


def gguf_file(orig, mnt):
    from gguf import GGUFReader

    a, b = GGUFReader(orig), GGUFReader(mnt)
    check([t.name for t in a.tensors] == [t.name for t in b.tensors], "gguf tensor names")
    for ta, tb in zip(a.tensors, b.tensors):
        check(ta.tensor_type == tb.tensor_type and np.array_equal(ta.data, tb.data), f"gguf {ta.name}")
    check(list(a.fields) == list(b.fields), "gguf metadata keys")
    for k in a.fields:
        fa, fb = a.fields[k], b.fields[k]
        check(all(np.array_equal(x, y) for x, y in zip(fa.parts, fb.parts)), f"gguf field {k}")
    return len(a.tensors)


def pkl(orig, mnt):
    with open(orig, "rb") as f:
        a = pickle.load(f)
    with open(mnt, "rb") as f:
        b = pickle.load(f)
    check(a.keys() == b.keys(), "pickle keys")
    for k in a:
        check(np.array_equal(a[k], b[k]), f"pickle {k}")
    return len(a)


def pth(orig, mnt):
    import torch

    a = torch.load(orig, weights_only=True)
    for label, b in [("plain", torch.load(mnt, weights_only=True)), ("mmap", torch.load(mnt, mmap=True, weights_only=True))]:
        check(a.keys() == b.keys(), f"torch.load {label} keys")
        for k in a:
            check(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"torch.load {label} {k}")
    return len(a)


LOADERS = {
    "model.safetensors": ("safetensors load_file + safe_open(pt)", safetensors_torch),
    "numpy.safetensors": ("safetensors safe_open(numpy) + load_file", safetensors_numpy),
    "array.npy": ("numpy.load(mmap_mode='r')", npy),
    "model.gguf": ("gguf.GGUFReader", gguf_file),
    "model.pkl": ("pickle.load", pkl),
    "model.pth": ("torch.load plain + mmap=True", pth),
}


def main():
    orig_dir, mnt_dir = sys.argv[1], sys.argv[2]
    checked = 0
    for name, (label, fn) in LOADERS.items():
        orig, mnt = os.path.join(orig_dir, name), os.path.join(mnt_dir, name)
        if not os.path.exists(orig):
            continue
        n = fn(orig, mnt)
        print(f"ok  {name:<20} {label}: {n} tensors identical")
        checked += 1
    check(checked > 0, "no known model file found")


if __name__ == "__main__":
    main()
