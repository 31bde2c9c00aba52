#!/usr/bin/env python3
"""Writes sample model files in the formats shardfs users serve, with the libraries that
normally write them:

  model.safetensors  bf16 + fp32 tensors (safetensors.torch.save_file)
  numpy.safetensors  fp32 + fp16 tensors (safetensors.numpy.save_file; numpy has no bf16)
  model.gguf         f32 / f16 tensors and metadata (gguf.GGUFWriter)
  model.pth          a torch.save zip checkpoint (state dict)
  array.npy          a float32 array (numpy.save)
  model.pkl          a pickled dict of numpy arrays

Usage: gen_models.py OUTDIR [--mib N] [--only safetensors,gguf,...]
Weights are normal(0, 0.02), like trained weights; the same seed gives the same bytes.
"""
import argparse
import os
import pickle

import numpy as np


def tensors(total_bytes, rng):
    """Shapes adding up to about total_bytes of 2-byte elements, several layers."""
    layers = max(2, min(16, total_bytes // (1 << 20)))
    per = max(1024, total_bytes // layers // 2)
    cols = 256
    rows = max(1, per // cols)
    return [(f"layers.{i}.weight", (rows, cols)) for i in range(layers)] + [("norm.bias", (cols,))]


def write_safetensors(path, total, rng):
    import torch
    from safetensors.torch import save_file

    out = {}
    for i, (name, shape) in enumerate(tensors(total, rng)):
        t = torch.from_numpy(rng.normal(0, 0.02, size=shape).astype(np.float32))
        out[name] = t.to(torch.bfloat16) if i % 3 else t
    save_file(out, path, metadata={"format": "pt"})


def write_np_safetensors(path, total, rng):
    from safetensors.numpy import save_file

    out = {}
    for i, (name, shape) in enumerate(tensors(total, rng)):
        out[name] = rng.normal(0, 0.02, size=shape).astype(np.float16 if i % 2 else np.float32)
    save_file(out, path)


def write_gguf(path, total, rng):
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(4)
    w.add_context_length(2048)
    w.add_string("general.name", "shardfs-sample")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(100)])
    for i, (name, shape) in enumerate(tensors(total, rng)):
        a = rng.normal(0, 0.02, size=shape).astype(np.float16 if i % 2 else np.float32)
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_pth(path, total, rng):
    import torch

    sd = {}
    for i, (name, shape) in enumerate(tensors(total, rng)):
        t = torch.from_numpy(rng.normal(0, 0.02, size=shape).astype(np.float32))
        sd[name] = t.to(torch.bfloat16) if i % 2 else t
    sd["step"] = torch.tensor(1234, dtype=torch.int64)
    torch.save(sd, path)


def write_npy(path, total, rng):
    np.save(path, rng.normal(0, 0.02, size=(max(1, total // 4 // 512), 512)).astype(np.float32))


def write_pkl(path, total, rng):
    obj = {name: rng.normal(0, 0.02, size=shape).astype(np.float32) for name, shape in tensors(total // 2, rng)}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


WRITERS = {
    "safetensors": ("model.safetensors", write_safetensors),
    "npsafetensors": ("numpy.safetensors", write_np_safetensors),
    "gguf": ("model.gguf", write_gguf),
    "pth": ("model.pth", write_pth),
    "npy": ("array.npy", write_npy),
    "pkl": ("model.pkl", write_pkl),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--mib", type=float, default=8, help="approximate size of each file in MiB")
    ap.add_argument("--only", default=",".join(WRITERS), help="comma-separated formats")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    for kind in args.only.split(","):
        name, writer = WRITERS[kind]
        rng = np.random.default_rng(args.seed)
        path = os.path.join(args.outdir, name)
        writer(path, int(args.mib * (1 << 20)), rng)
        print(path)


if __name__ == "__main__":
    main()
