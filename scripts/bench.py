#!/usr/bin/env python3
"""The read-path benchmark behind scripts/bench. Every figure is the median of --runs runs and is
reported as a ratio against its baseline from the same run on the same machine:

  1. cold sequential read (dd bs=4M): shardfs (--no-local-cache: the store's read path), a
     default mount (its local tier empty, making a copy as it reads), shardfs --codec none, plain file, squashfuse, and
     the FUSE ceiling: the file served from a FUSE daemon's memory (examples/memfs)
  2. warm re-read of each (page cache; shardfs-default: a default mount, whose local tier made a
     copy of the file on the cold read, re-read once the copy is checked), and the share of each file's cached pages held in large
     folios (what sets the page cache's speed)
  3. safetensors load_file and safe_open touching every tensor, cold: shardfs, squashfuse, plain
  4. random 4 KiB preads, cold: p50/p99 latency and IOPS, shardfs vs squashfuse
  5. pack time and stored size: shardfs pack vs mksquashfs -comp zstd -b 128K (+ fsync of the
     image, since pack ends with its chunks durable)
  6. the shardfs daemon's peak RSS and CPU seconds
  7. the local tier (`--local-cache`, filled beforehand and checked by the daemon): cold dd and
     load_file with the page cache dropped, and the warm re-read, against the plain file
  8. decode + verification CPU: user + system seconds of `export -o -` of the file, and the
     disk's buffered write speed (a default mount's tier writes its copy there as it reads)
  9. a 4-bit GGUF laid out as llama.cpp's (gen_gguf.py: Q4_K matrices of TinyLlama's shapes,
     0.6 GB), read cold with gguf's reader touching every tensor: through a mount of its own
     store (--no-local-cache) against the file on local disk

shardfs mounts with --cache-size 256MiB by default (--cache-size), smaller than the 1 GiB model
as in real use; the row shardfs-bigcache keeps a cache as large as the model.

Each cold run mounts afresh (an empty daemon cache) and drops the page cache first; each run
starts with a different target.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dd(path):
    sh("dd", f"if={path}", "of=/dev/null", "bs=4M")


LOAD_SCRIPT = r"""
import sys, time, torch
from safetensors import safe_open
from safetensors.torch import load_file
path, how = sys.argv[1], sys.argv[2]
# Touch one byte of every 4 KiB page of every tensor: the bytes must arrive, without timing
# arithmetic over a gigabyte.
def touch(t):
    return int(t.reshape(-1).view(torch.uint8)[::4096].sum())
# Timed from here: the loader's own imports (torch from a cold page cache) are not the model.
t0 = time.perf_counter()
total = 0
if how == "load_file":
    for t in load_file(path).values():
        total += touch(t)
else:
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            total += touch(f.get_tensor(k))
print(time.perf_counter() - t0)
"""


GGUF_SCRIPT = r"""
import sys, time
import numpy as np
from gguf import GGUFReader
# Timed from here, after the imports: the file parsed, and every 4 KiB page of every tensor
# touched (as a loader mapping it would).
t0 = time.perf_counter()
total = 0
for t in GGUFReader(sys.argv[1]).tensors:
    total += int(np.asarray(t.data).reshape(-1).view(np.uint8)[::4096].sum())
print(time.perf_counter() - t0)
"""


def run_loader(python, path, how):
    """Seconds the loader took to load and touch every tensor (after its imports)."""
    return float(sh(python, "-c", LOAD_SCRIPT, path, how).stdout.split()[-1])


def large_folio_share(path, pages=4096):
    """Share of the file's cached pages that sit in large folios (compound pages), sampled over
    the file right after it was read: the page cache serves a large folio with one lookup where a
    4 KiB one needs one per page, which is what sets the warm re-read speed of a file system.
    Needs root (/proc/kpageflags); None where it cannot be read."""
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            step = max(1, size // 4096 // pages)
            idx = range(0, size // 4096, step)
            base = ctypes.cast(addr, ctypes.POINTER(ctypes.c_char))
            for i in idx:
                base[i * 4096]  # map the cached page (it was just read: no I/O)
            large = total = 0
            with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
                for i in idx:
                    pm.seek((addr // 4096 + i) * 8)
                    entry = struct.unpack("<Q", pm.read(8))[0]
                    if not entry >> 63:
                        continue
                    kf.seek((entry & ((1 << 55) - 1)) * 8)
                    flags = struct.unpack("<Q", kf.read(8))[0]
                    total += 1
                    large += (flags >> 15) & 3 != 0  # KPF_COMPOUND_HEAD / _TAIL
            return large / total if total else None
        finally:
            libc.munmap(addr, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def random_reads(path, n, seed=1):
    r = random.Random(seed)
    size = os.path.getsize(path)
    offsets = [r.randrange(0, size - 4096) // 4096 * 4096 for _ in range(n)]
    fd = os.open(path, os.O_RDONLY)
    lat = []
    t_all = time.perf_counter()
    for off in offsets:
        t0 = time.perf_counter()
        os.pread(fd, 4096, off)
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    os.close(fd)
    lat.sort()
    return {"p50_us": lat[len(lat) // 2] * 1e6, "p99_us": lat[int(len(lat) * 0.99)] * 1e6, "iops": n / total}


class Shardfs:
    """A shardfs mount. With `fresh_cache` it is a default mount (no tier flag) whose default
    tier goes under that folder, emptied before each mount: a model read for the first time.
    Without, it mounts with `extra` (`--no-local-cache` for the store's own read path)."""

    def __init__(self, bin_, store, mnt, name, cache, extra=(), fresh_cache=None):
        self.bin, self.store, self.mnt, self.name = bin_, store, mnt, name
        self.cache, self.extra, self.fresh_cache = cache, list(extra), fresh_cache

    def mount(self):
        env = None
        if self.fresh_cache:
            shutil.rmtree(self.fresh_cache, ignore_errors=True)
            env = dict(os.environ, XDG_CACHE_HOME=self.fresh_cache)
        sh(self.bin, "mount", "--store", self.store, self.mnt, "--name", self.name,
           "--cache-size", str(self.cache), *self.extra, env=env)
        st = json.loads(sh(self.bin, "status", self.mnt, "--json").stdout)
        self.pid = st["pid"]
        if "--local-cache" in self.extra:
            # The tier's copies found at start are hashed before use: wait for that.
            deadline = time.time() + 120
            while json.loads(sh(self.bin, "status", self.mnt, "--json").stdout)["tier"]["copies"] < 1:
                if time.time() > deadline:
                    raise RuntimeError("the local tier's copy was not ready in 120 s")
                time.sleep(0.05)

    def umount(self):
        sh(self.bin, "unmount", self.mnt)

    def wait_copies(self):
        """Waits until the tier holds a checked copy and makes none, and the daemon has seen the
        last reader's file closed (the kernel sends that after close() returns; an open that
        comes while the inode is still open the page-cache way is served from the copy by the
        daemon, not by passthrough): a serving process restarted later. At most 300 s."""
        deadline = time.time() + 300
        while True:
            st = self.status()
            tier = st["tier"]
            # ... and the page cache the cold read left is emptied (the daemon does it once the
            # copy can serve the file by passthrough), as it is by the time a process restarts.
            if (tier and tier["copies"] >= 1 and tier["filling"] == 0 and not st["open_files"]
                    and tier.get("page_caches_dropped", 0) >= 1):
                return
            if time.time() > deadline:
                raise RuntimeError(f"the default tier made no copy in 300 s: {tier}")
            time.sleep(0.05)

    def status(self):
        return json.loads(sh(self.bin, "status", self.mnt, "--json").stdout)

    def proc(self):
        with open(f"/proc/{self.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return {"peak_rss_mib": hwm / 1024, "cpu_s": cpu}


class Squash:
    def __init__(self, image, mnt):
        self.image, self.mnt = image, mnt

    def mount(self):
        sh("squashfuse", self.image, self.mnt)

    def umount(self):
        sh("fusermount3", "-u", self.mnt)


class MemFs:
    """examples/memfs: the file served from the FUSE daemon's memory with no store, hash or
    decompression, mounted the way shardfs mounts. Its page cache is dropped like the others' but
    its memory is not: its cold read is the ceiling of any FUSE file system on this machine."""

    def __init__(self, bin_, src, mnt):
        self.bin, self.src, self.mnt = bin_, src, mnt

    def mount(self):
        self.proc = subprocess.Popen([self.bin, self.src, self.mnt], stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.wait()
            raise RuntimeError(f"memfs did not mount {self.mnt}")

    def umount(self):
        sh("fusermount3", "-u", self.mnt)
        self.proc.wait()


class Plain:
    def __init__(self, d):
        self.mnt = d

    def mount(self):
        pass

    def umount(self):
        pass


@contextlib.contextmanager
def cold(target, mounted):
    """Mounts `target` afresh (an empty daemon cache) and drops the page cache; unmounts after.
    On an error `target` stays listed in `mounted`, which main unmounts on the way out."""
    target.mount()
    mounted.append(target)
    drop_caches()
    yield
    target.umount()
    mounted.remove(target)


def median(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", help="model file to use (default: a generated 1 GiB bf16 safetensors)")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--memfs", required=True, help="the examples/memfs binary (the FUSE ceiling)")
    # Five: on these noisy machines one slow run in three moves a median across a target's line
    # (squashfuse's own load_file took 1.1-3.1 s from run to run).
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--random-reads", type=int, default=2000)
    ap.add_argument("--cache-size", type=int, default=256 << 20, help="shardfs --cache-size in bytes (default 256 MiB)")
    ap.add_argument("--out", default=os.path.join(os.getcwd(), "bench-results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("scripts/bench needs root: it drops the page cache and mounts")
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        # Once caused by shardfs itself: `export -o /dev/null` renamed its temporary file over the
        # device (export now writes devices in place). Any tool run as root can do the same, and
        # every dd would then write a gigabyte into memory: the figures would all be wrong.
        sys.exit("/dev/null is not the null device (a regular file?): recreate it with "
                 "`rm /dev/null && mknod -m 666 /dev/null c 1 3` and run again")
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="shardfs-bench.")
    # The keys of the stores made here stay in this folder, not in the home of whoever runs it.
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")  # default local tiers
    mounted = []
    try:
        if args.file:
            src = os.path.abspath(args.file)
        else:
            src = os.path.join(work, "model.safetensors")
            sh(sys.executable, os.path.join(HERE, "gen_bf16.py"), src, "--gib", "1", "--tensors", "64")
        fname = os.path.basename(src)
        is_safetensors = fname.endswith(".safetensors")
        size = os.path.getsize(src)
        plain_dir = os.path.dirname(src)

        # 5. pack time and size, shardfs vs mksquashfs (both from a warm source file).
        dd(src)
        pack_t, squash_t = [], []
        for i in range(args.runs):
            shutil.rmtree(os.path.join(work, "s"), ignore_errors=True)
            pack_t.append(timed(lambda: sh(args.bin, "pack", src, "--store", os.path.join(work, "s"), "--name", "m")))
            img = os.path.join(work, "img.sqfs")
            # Both sides end durable on disk: shardfs pack syncs before it writes the manifest,
            # so the image is fsynced too (sync FILE).
            squash_t.append(timed(lambda: (sh("mksquashfs", src, img, "-comp", "zstd", "-Xcompression-level", "3", "-b", "128K", "-noappend", "-quiet", "-no-progress"), sh("sync", img))))
        stored = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(work, "s", "chunks")) for f in fs)
        squash_size = os.path.getsize(img)
        sh(args.bin, "pack", src, "--store", os.path.join(work, "raw"), "--name", "m", "--codec", "none")

        # 8. CPU of decode + verification: export to a pipe, user + system time of the child.
        export_cpu = []
        for i in range(args.runs):
            drop_caches()
            before = os.times()
            with open(os.devnull, "wb") as null:
                subprocess.run([args.bin, "export", "--store", os.path.join(work, "s"), "--name", "m", "-o", "-"],
                               check=True, stdout=null)
            after = os.times()
            export_cpu.append((after.children_user - before.children_user) + (after.children_system - before.children_system))

        # 7. The local tier, filled once through a mount (warm --local) and kept for every run.
        tier_dir = os.path.join(work, "tier")
        filler = Shardfs(args.bin, os.path.join(work, "s"), os.path.join(work, "mnt-t"), "m", args.cache_size,
                         ["--local-cache", tier_dir, "--local-cache-size", "2GiB"])
        os.makedirs(filler.mnt, exist_ok=True)
        sh(args.bin, "mount", "--store", filler.store, filler.mnt, "--name", "m", "--local-cache", tier_dir,
           "--local-cache-size", "2GiB", "--cache-size", str(args.cache_size))
        try:
            sh(args.bin, "warm", "--local", os.path.join(filler.mnt, fname))
            deadline = time.time() + 300
            while json.loads(sh(args.bin, "status", filler.mnt, "--json").stdout)["tier"]["copies"] < 1:
                if time.time() > deadline:
                    raise RuntimeError("the local tier was not filled in 300 s")
                time.sleep(0.1)
        finally:
            sh(args.bin, "unmount", filler.mnt)

        cache = args.cache_size
        store_path = ["--no-local-cache"]
        targets = {
            "shardfs": Shardfs(args.bin, os.path.join(work, "s"), os.path.join(work, "mnt-s"), "m", cache, store_path),
            "shardfs-default": Shardfs(args.bin, os.path.join(work, "s"), os.path.join(work, "mnt-d"), "m", cache,
                                       fresh_cache=os.path.join(work, "cache-default")),
            "shardfs-bigcache": Shardfs(args.bin, os.path.join(work, "s"), os.path.join(work, "mnt-b"), "m", max(cache, size + (64 << 20)), store_path),
            "shardfs-tier": filler,
            "shardfs-none": Shardfs(args.bin, os.path.join(work, "raw"), os.path.join(work, "mnt-raw"), "m", cache, store_path),
            "plain": Plain(plain_dir),
            "squashfuse": Squash(img, os.path.join(work, "mnt-q")),
            "fuse-ceiling": MemFs(args.memfs, src, os.path.join(work, "mnt-m")),
        }
        for t in targets.values():
            os.makedirs(t.mnt, exist_ok=True)

        res = {k: {"cold": [], "warm": [], "load_file": [], "safe_open": []} for k in targets}
        # Random reads with the cache smaller than the model (shardfs), and as large (bigcache).
        rnd = {k: [] for k in ("shardfs", "shardfs-bigcache", "squashfuse")}
        folios = {}
        proc = []  # the daemon after a cold + warm dd: CPU seconds and peak RSS
        peaks = []  # its peak RSS after the loaders and the random reads
        for run in range(args.runs):
            # Each run starts with a different target: the first measurement after the packing
            # (gigabytes just written) is often the slowest, and no target should always take it.
            order = list(targets.items())
            order = order[run % len(order):] + order[:run % len(order)]
            for key, t in order:
                path = os.path.join(t.mnt, fname)
                with cold(t, mounted):
                    res[key]["cold"].append(size / timed(lambda: dd(path)) / 1e9)
                    if key == "shardfs-default":
                        # A serving process restarted later: by then the copy the first read
                        # started is made and checked.
                        t.wait_copies()
                    res[key]["warm"].append(size / timed(lambda: dd(path)) / 1e9)
                    if run == 0:
                        folios[key] = large_folio_share(path)
                    if key == "shardfs":
                        proc.append(t.proc())
                if is_safetensors and key in ("shardfs", "shardfs-tier", "plain", "squashfuse"):
                    for how in ("load_file", "safe_open"):
                        with cold(t, mounted):
                            res[key][how].append(run_loader(sys.executable, path, how))
                            if key == "shardfs":
                                peaks.append(t.proc()["peak_rss_mib"])
                if key in rnd:
                    with cold(t, mounted):
                        r = random_reads(path, args.random_reads, seed=run)
                        if key.startswith("shardfs"):
                            st = t.status()
                            r["chunks_per_read"] = st["chunks_decompressed"] / max(1, st["reads"])
                            r["frame_reads_per_read"] = st.get("frame_reads", 0) / max(1, st["reads"])
                            if key == "shardfs":
                                peaks.append(t.proc()["peak_rss_mib"])
                    rnd[key].append(r)

        # The disk's buffered write speed, where the default tier writes its copies (XDG_CACHE_HOME
        # is in the work folder): a cold read through a default mount cannot outrun it for long.
        wtest = os.path.join(work, "write-test")
        write_s = []
        for _ in range(args.runs):
            with open(src, "rb") as f_in:
                data = f_in.read()
            t0 = time.perf_counter()
            with open(wtest, "wb") as f_out:
                f_out.write(data)
            write_s.append(time.perf_counter() - t0)
            del data
            os.remove(wtest)
            sh("sync")

        # 9. The GGUF: its own store, mounted like the shardfs row, against the local file.
        gsrc = os.path.join(work, "model.gguf")
        sh(sys.executable, os.path.join(HERE, "gen_gguf.py"), gsrc)
        sh(args.bin, "pack", gsrc, "--store", os.path.join(work, "g"), "--name", "g")
        gtargets = [("shardfs", Shardfs(args.bin, os.path.join(work, "g"), os.path.join(work, "mnt-g"), "g",
                                        cache, store_path)), ("plain", Plain(work))]
        os.makedirs(gtargets[0][1].mnt, exist_ok=True)
        gguf_runs = {k: [] for k, _ in gtargets}
        for run in range(args.runs):
            for key, t in gtargets[run % 2:] + gtargets[:run % 2]:
                with cold(t, mounted):
                    out = sh(sys.executable, "-c", GGUF_SCRIPT, os.path.join(t.mnt, "model.gguf")).stdout
                    gguf_runs[key].append(float(out.split()[-1]))

        def med(key, what):
            return median(res[key][what]) if res[key][what] else None

        rm = {k: {m: median([r[m] for r in v]) for m in v[0]} for k, v in rnd.items()}
        summary = {
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "kernel": os.uname().release},
            "file": {"name": fname, "bytes": size},
            "runs": args.runs,
            "cold_GBps": {k: med(k, "cold") for k in targets},
            "warm_GBps": {k: med(k, "warm") for k in targets},
            "large_folio_share": folios,
            "load_file_s": {k: med(k, "load_file") for k in targets if res[k]["load_file"]},
            "safe_open_s": {k: med(k, "safe_open") for k in targets if res[k]["safe_open"]},
            "random_4k": rm,
            "pack": {"shardfs_s": median(pack_t), "mksquashfs_s": median(squash_t), "shardfs_bytes": stored, "squashfs_bytes": squash_size},
            "daemon": {"peak_rss_mib": max([p["peak_rss_mib"] for p in proc] + peaks), "cpu_s": median([p["cpu_s"] for p in proc]), "cache_size_mib": cache / 2**20},
            "export_cpu_s": median(export_cpu),
            "decode_GB_per_cpu_s": size / 1e9 / median(export_cpu),
            "gguf_s": {k: median(v) for k, v in gguf_runs.items()},
            "disk_write_GBps": size / median(write_s) / 1e9,
            "gguf_bytes": os.path.getsize(gsrc),
            "tier_bytes": sum(os.path.getsize(os.path.join(tier_dir, f)) for f in os.listdir(tier_dir)),
            "raw": {"reads": res, "random": rnd, "pack_s": pack_t, "mksquashfs_s": squash_t, "gguf": gguf_runs},
        }
        c, w = summary["cold_GBps"], summary["warm_GBps"]
        targets_met = [
            ("cold read >= 3x squashfuse", c["shardfs"] / c["squashfuse"], 3.0),
            ("cold read >= 0.6x codec none", c["shardfs"] / c["shardfs-none"], 0.6),
            ("warm re-read through a default mount >= 0.8x plain", w["shardfs-default"] / w["plain"], 0.8),
            ("default mount: cold read >= 0.98x --no-local-cache", c["shardfs-default"] / c["shardfs"], 0.98),
            ("random 4K p50 <= squashfuse (ratio sq/ours >= 1)", rm["squashfuse"]["p50_us"] / rm["shardfs"]["p50_us"], 1.0),
            ("random 4K p99 <= 2 ms (2000 us / ours >= 1)", 2000.0 / rm["shardfs"]["p99_us"], 1.0),
            ("pack size <= mksquashfs (ratio sq/ours >= 1)", squash_size / stored, 1.0),
            ("pack time <= 1.5x mksquashfs (ratio sq*1.5/ours >= 1)", 1.5 * median(squash_t) / median(pack_t), 1.0),
            ("daemon peak RSS <= cache + 64 MiB (ratio >= 1)", (cache / 2**20 + 64) / summary["daemon"]["peak_rss_mib"], 1.0),
            ("tier: warm re-read >= 0.95x plain", w["shardfs-tier"] / w["plain"], 0.95),
            ("decode + verify >= 1.2 GB per CPU-second (export -o -)", summary["decode_GB_per_cpu_s"], 1.2),
            ("tier within its size (2 GiB / bytes on disk >= 1)", (2 << 30) / max(1, summary["tier_bytes"]), 1.0),
            ("random 4K: <= ~2 chunks decompressed per read (2/x >= 1)", 2.0 / max(1e-9, rm["shardfs"]["chunks_per_read"]), 1.0),
            ("gguf reader cold, every tensor: >= 0.9x the local file", summary["gguf_s"]["plain"] / summary["gguf_s"]["shardfs"], 0.9),
        ]
        if summary["load_file_s"]:
            lf = summary["load_file_s"]
            targets_met.insert(3, ("load_file cold >= 2x squashfuse", lf["squashfuse"] / lf["shardfs"], 2.0))
            targets_met.insert(4, ("tier: load_file cold >= 0.9x plain", lf["plain"] / lf["shardfs-tier"], 0.9))
            targets_met.insert(5, ("safe_open in key order >= 0.9x load_file (time ratio)",
                                   lf["shardfs"] / summary["safe_open_s"]["shardfs"], 0.9))
        summary["targets"] = [{"target": n, "value": v, "needed": need, "met": v >= need} for n, v, need in targets_met]
        print_table(summary)
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump(summary, f, indent=2)
        chart(summary, os.path.join(args.out, "bench.png"))
        print(f"\nwrote {args.out}/bench.json and {args.out}/bench.png")
    finally:
        for t in mounted:
            try:
                t.umount()
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)


def cpu_model():
    with open("/proc/cpuinfo") as f:
        return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown")


def print_table(s):
    m = s["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}; file {s['file']['name']} ({s['file']['bytes'] / 2**30:.2f} GiB); medians of {s['runs']} runs")
    print(f"shardfs --cache-size {s['daemon']['cache_size_mib']:.0f} MiB (shardfs, shardfs-bigcache, shardfs-none: --no-local-cache; shardfs-bigcache: cache as large as the file; shardfs-default: a default mount, its tier empty at mount; shardfs-tier: local tier filled)\n")
    c, w = s["cold_GBps"], s["warm_GBps"]
    print(f"{'sequential read (dd bs=4M)':<30}{'cold GB/s':>10}{'x squashfuse':>14}{'x plain':>9}{'warm GB/s':>11}{'x plain':>9}")
    for k in c:
        print(f"{k:<30}{c[k]:>10.2f}{c[k] / c['squashfuse']:>14.2f}{c[k] / c['plain']:>9.2f}{w[k]:>11.2f}{w[k] / w['plain']:>9.2f}")
    lf = s.get("large_folio_share") or {}
    if any(v is not None for v in lf.values()):
        print("page cache after the read, share in large folios: " + ", ".join(
            f"{k} {v:.0%}" if v is not None else f"{k} n/a" for k, v in lf.items()))
    if "fuse-ceiling" in c:
        f = "fuse-ceiling"
        print(f"shardfs reaches {c['shardfs'] / c[f]:.2f}x of the FUSE ceiling cold and {w['shardfs'] / w[f]:.2f}x warm;"
              f" the ceiling itself is {c[f] / c['squashfuse']:.2f}x squashfuse cold and {w[f] / w['plain']:.2f}x plain warm")
    for what in ("load_file_s", "safe_open_s"):
        if s[what]:
            print(f"\n{'safetensors ' + what[:-2] + ', cold':<30}{'seconds':>10}{'speed x squashfuse':>20}{'x plain':>9}")
            for k, v in s[what].items():
                print(f"{k:<30}{v:>10.2f}{s[what]['squashfuse'] / v:>20.2f}{s[what]['plain'] / v:>9.2f}")
    g = s["gguf_s"]
    print(f"\ngguf reader, cold, every tensor of a {s['gguf_bytes'] / 1e9:.2f} GB Q4_K file: shardfs {g['shardfs']:.2f}s,"
          f" local file {g['plain']:.2f}s -> {g['plain'] / g['shardfs']:.2f}x the local file")
    r = s["random_4k"]
    print(f"\n{'random 4 KiB preads, cold':<30}{'p50 us':>10}{'p99 us':>10}{'IOPS':>10}{'p50 x sq':>10}")
    for k, v in r.items():
        print(f"{k:<30}{v['p50_us']:>10.0f}{v['p99_us']:>10.0f}{v['iops']:>10.0f}{r['squashfuse']['p50_us'] / v['p50_us']:>10.2f}")
    print(f"chunks decompressed per random read: shardfs {r['shardfs']['chunks_per_read']:.3f},"
          f" bigcache {r['shardfs-bigcache']['chunks_per_read']:.3f};"
          f" answered from frames alone: {r['shardfs'].get('frame_reads_per_read', 0):.3f} of reads")
    p = s["pack"]
    print(f"\npack: shardfs {p['shardfs_s']:.2f}s, {p['shardfs_bytes'] / 2**20:.1f} MiB; mksquashfs {p['mksquashfs_s']:.2f}s, {p['squashfs_bytes'] / 2**20:.1f} MiB"
          f" -> time x{p['shardfs_s'] / p['mksquashfs_s']:.2f}, size x{p['shardfs_bytes'] / p['squashfs_bytes']:.3f} of mksquashfs")
    d = s["daemon"]
    print(f"daemon: peak RSS {d['peak_rss_mib']:.0f} MiB over every run (cache {d['cache_size_mib']:.0f} MiB), {d['cpu_s']:.2f} CPU s per cold+warm read")
    print(f"export -o - (decode + verify): {s['export_cpu_s']:.2f} CPU s, {s['decode_GB_per_cpu_s']:.2f} GB per CPU-second; local tier on disk {s['tier_bytes'] / 2**20:.0f} MiB")
    print(f"buffered write of the file to the work folder's disk (where a default tier writes): {s['disk_write_GBps']:.2f} GB/s"
          f" (a default mount's cold read, which writes its copy as it goes: {s['cold_GBps']['shardfs-default']:.2f} GB/s)")
    print("\ntargets:")
    for t in s["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']:.2f} (needs >= {t['needed']})")


def chart(s, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(s["cold_GBps"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], [s["cold_GBps"][k] for k in keys], 0.4, label="cold")
    ax.bar([i + 0.2 for i in x], [s["warm_GBps"][k] for k in keys], 0.4, label="warm re-read")
    ax.set_xticks(list(x))
    ax.set_xticklabels(keys)
    ax.set_ylabel("GB/s (median)")
    ax.set_title(f"sequential read of {s['file']['name']} ({s['file']['bytes'] / 2**30:.2f} GiB), {s['machine']['cores']} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
