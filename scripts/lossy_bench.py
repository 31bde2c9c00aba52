#!/usr/bin/env python3
"""The measurements behind scripts/lossy-bench: `pack --lossy fp8` on a real model (MiniLM, the
fp32 original and its bf16 cast, scripts/finetune.py). For each: the stored bytes against the
file's, and the order-0 bound of the FP8 codes (their entropy plus one scale byte per 128
values); every float value of the export within the stated bound (1/16 of its block's largest
magnitude), every other tensor and the header byte-exact; and `transformers` loading the model
from a mount: sentence embeddings of 100 sentences against the original's, cosine >= 0.99."""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import finetune  # noqa: E402
from checks import report  # noqa: E402
from delta_bench import chunk_bytes, sh, tensors  # noqa: E402

BLOCK = 128


def as_f32(dtype, raw):
    if dtype == "BF16":
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, np.float16).astype(np.float32)
    return np.frombuffer(raw, np.float32)


def check_export(original, exported):
    """(every float within 1/16 of its block's largest magnitude, the rest exact, worst error
    as a fraction of the block's largest, order-0 bits per value of the FP8 codes)."""
    a, b = tensors(original), tensors(exported)
    with open(original, "rb") as f, open(exported, "rb") as g:
        n = 8 + int.from_bytes(f.read(8), "little")
        f.seek(0)
        same_header = f.read(n) == g.read(n)
    ok, worst, counts = same_header, 0.0, np.zeros(256)
    import torch

    for name, (dtype, raw) in a.items():
        if dtype not in ("BF16", "F16", "F32"):
            ok &= b[name][1] == raw
            continue
        x, y = as_f32(dtype, raw), as_f32(dtype, b[name][1])
        pad = (-len(x)) % BLOCK
        xb = np.concatenate([x, np.zeros(pad, np.float32)]).reshape(-1, BLOCK)
        yb = np.concatenate([y, np.zeros(pad, np.float32)]).reshape(-1, BLOCK)
        top = np.abs(xb).max(axis=1, keepdims=True)
        err = np.abs(xb - yb)
        if (err > top / 16).any():
            ok = False
        worst = max(worst, float((err / np.where(top > 0, top, 1)).max()))
        k = np.ceil(np.log2(np.where(top > 0, top, 1) / 448.0))
        codes = torch.from_numpy((yb / np.exp2(k)).astype(np.float32)).to(torch.float8_e4m3fn)
        counts += np.bincount(codes.view(torch.uint8).numpy().ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return ok, worst, float(-(p * np.log2(p)).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", default=os.path.join(os.getcwd(), "bench-results"))
    args = ap.parse_args()
    dirs = finetune.fine_tune()
    work = tempfile.mkdtemp(prefix="shardfs-lossy.")
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")  # default local tiers
    results, checks = {}, []
    try:
        for kind, folder in (("bf16", dirs["base-bf16"]), ("fp32", dirs["base"])):
            src = os.path.join(work, f"model-{kind}")
            shutil.copytree(folder, src, ignore=shutil.ignore_patterns(".*"))
            weights = os.path.join(src, "model.safetensors")
            size = os.path.getsize(weights)
            alone = os.path.join(work, f"alone-{kind}")
            sh(args.bin, "pack", weights, "--store", alone, "--name", "m", "--lossy", "fp8", "--init", "--unsigned")
            stored = chunk_bytes(alone)
            exported = os.path.join(work, f"export-{kind}.safetensors")
            sh(args.bin, "export", "--store", alone, "--name", "m", "-o", exported)
            within, worst, bits = check_export(weights, exported)
            store = os.path.join(work, f"store-{kind}")
            sh(args.bin, "pack", src, "--store", store, "--name", "m", "--lossy", "fp8", "--init", "--unsigned")
            mnt, state = os.path.join(work, f"mnt-{kind}"), os.path.join(work, f"state-{kind}")
            os.makedirs(mnt)
            env = dict(os.environ, SHARDFS_STATE_DIR=state)
            sh(args.bin, "mount", "--store", store, mnt, "--cache-size", "16MiB", env=env)
            try:
                out = sh(sys.executable, os.path.join(HERE, "finetune.py"), "--compare", src, os.path.join(mnt, "m"))
            finally:
                sh(args.bin, "unmount", mnt, env=env)
            cosine = json.loads(out.decode().strip().splitlines()[-1])["min_cosine"]
            bound = (16 if kind == "bf16" else 32) / (bits + 8 / BLOCK)
            r = {"bytes": size, "stored_bytes": stored, "ratio": size / stored, "order0_bound_ratio": bound,
                 "code_bits": bits, "within_bound_and_rest_exact": within, "worst_error_of_block_max": worst,
                 "min_cosine_100_sentences": cosine}
            results[kind] = r
            print(f"{kind}: {size / 2**20:.1f} MiB -> {stored / 2**20:.2f} MiB, ratio {r['ratio']:.3f}x "
                  f"(order-0 bound of the codes {bound:.3f}x: {bits:.3f} bits per code); worst error "
                  f"{worst:.4f} of its block's largest; embeddings from the mount: min cosine {cosine:.5f}", flush=True)
            checks += [(f"{kind}: every value within 1/16 of its block's largest, the rest exact", float(within), 1.0),
                       (f"{kind}: min cosine of 100 sentence embeddings >= 0.99", cosine, 0.99)]
        checks.insert(0, ("ratio >= 2.5x against the bf16 original", results["bf16"]["ratio"], 2.5))
        report(checks, results, args.out, "lossy.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
