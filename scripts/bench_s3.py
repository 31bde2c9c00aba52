#!/usr/bin/env python3
"""The object-storage benchmark behind scripts/bench-s3. A 1 GiB bf16 safetensors model sits in a
local SeaweedFS server, reached through netshape (our shaping proxy) at each link profile. Every
figure is the median of --runs cold runs (fresh mount, page cache dropped), reported against
baselines from the same run:

  1. cold `dd bs=4M` and cold safetensors `load_file` touching every tensor (timed after the
     loader's imports), through: a shardfs mount of an S3 member (--cache-size smaller than the
     model), the same file stored as one plain object read through `rclone mount` and `s3fs`,
     and `rclone copyto` to a local disk followed by the load from there (download-then-load)
  2. the shardfs daemon's peak RSS against --cache-size + 64 MiB
  3. a partial load: safe_open reading a quarter of the layers (0-15 of 64) from the bucket
     alone: bytes fetched against the stored bytes of those tensors' chunks
  4. a stalled server (SIGSTOP): with a local replica, the longest wait of a reader that keeps
     reading (against the hedge delay); with the bucket only, the time until EIO (against the
     member deadline); and whether `ls` and `status` answer meanwhile

The server, the proxy and every mount listen on 127.0.0.1 only and are stopped by pid.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import cpu_model, drop_caches, median, run_loader, sh  # noqa: E402

KEY, SECRET = "bench", "bench-secret"
PROFILES = [("2gbit", "1ms"), ("10gbit", "1ms")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Weed:
    def __init__(self, weed, work):
        data = os.path.join(work, "weed-data")
        os.makedirs(data, exist_ok=True)
        creds = os.path.join(work, "s3.json")
        with open(creds, "w") as f:
            json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        self.port = free_port()
        args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={creds}",
                "-s3.autoCreateBucket=false", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
                "-s3.port.lance=0", f"-s3.port={self.port}"]
        for flag in ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                     "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg", "admin.port", "admin.port.grpc",
                     "metricsPort"]:
            args.append(f"-{flag}={free_port()}")
        self.log = open(os.path.join(work, "weed.log"), "w")
        self.proc = subprocess.Popen(args, cwd=data, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"weed exited; see {self.log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"GET /status HTTP/1.0\r\n\r\n")
                    if s.recv(5) == b"HTTP/":
                        return
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("weed did not serve S3 within 60 s")
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


class Shaper:
    def __init__(self, bin_, port, rate, latency):
        self.proc = subprocess.Popen([bin_, "--to", f"127.0.0.1:{port}", "--rate", rate, "--latency", latency],
                                     stdout=subprocess.PIPE, text=True)
        self.listen = self.proc.stdout.readline().split()[1]
        self.control = self.proc.stdout.readline().split()[1]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def env_for(endpoint):
    e = dict(os.environ)
    # A CA bundle in the environment makes rclone's S3 client refuse to start (it cannot load one
    # into its own transport); the server here is plain HTTP on loopback.
    e.pop("AWS_CA_BUNDLE", None)
    e.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
              "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
              "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
              "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": KEY, "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET,
              "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint, "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
              "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"})
    return e


class Mount:
    """One way of reading the model through a mount: mount(), path, umount()."""

    def __init__(self, kind, mnt, env, args):
        self.kind, self.mnt, self.env, self.args = kind, mnt, env, args
        self.pid = None

    def mount(self):
        a = self.args
        if self.kind == "shardfs":
            sh(a.bin, "mount", "--store", "s3://bench-shardfs", self.mnt, "--name", "model",
               "--cache-size", a.cache_size, "--no-local-cache", env=self.env)
            self.pid = json.loads(sh(a.bin, "status", self.mnt, "--json").stdout)["pid"]
        elif self.kind == "rclone":
            sh("rclone", "mount", "bench:bench-plain", self.mnt, "--read-only", "--daemon", env=self.env)
        elif self.kind == "s3fs":
            sh("s3fs", "bench-plain", self.mnt, "-o", f"passwd_file={a.passwd}", "-o",
               f"url={self.env['AWS_ENDPOINT_URL']}", "-o", "use_path_request_style", "-o", "ro", env=self.env)
        deadline = time.time() + 30
        while not os.path.exists(self.path()):
            if time.time() > deadline:
                raise RuntimeError(f"{self.kind}: {self.path()} did not appear")
            time.sleep(0.05)

    def path(self):
        return os.path.join(self.mnt, "model.safetensors")

    def umount(self):
        if self.kind == "shardfs":
            sh(self.args.bin, "unmount", self.mnt)
        else:
            sh("fusermount3", "-u", self.mnt)

    def chunk_loads(self):
        """Chunks the daemon loaded (decompressed) since it mounted."""
        st = json.loads(sh(self.args.bin, "status", self.mnt, "--json", env=self.env).stdout)
        return st["chunks_decompressed"]

    def peak_rss_mib(self):
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def profile_runs(args, work, weed, python, rate, latency):
    shaper = Shaper(args.netshape, weed.port, rate, latency)
    env = env_for(f"http://{shaper.listen}")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    res = {k: {"dd": [], "load_file": []} for k in ["shardfs", "rclone", "s3fs"]}
    res["download_then_load"] = {"load_file": []}
    peaks, loads = [], []
    try:
        for run in range(args.runs):
            for kind in ["shardfs", "rclone", "s3fs"]:
                for what in ["dd", "load_file"]:
                    m = Mount(kind, mnt, env, args)
                    m.mount()
                    try:
                        drop_caches()
                        if what == "dd":
                            t = timed(lambda: sh("dd", f"if={m.path()}", "of=/dev/null", "bs=4M"))
                        else:
                            t = run_loader(python, m.path(), "load_file")
                        res[kind][what].append(t)
                        if kind == "shardfs":
                            peaks.append(m.peak_rss_mib())
                            if what == "load_file":
                                loads.append(m.chunk_loads())
                    finally:
                        m.umount()
                    print(f"  {rate}/{latency} run {run + 1}: {kind} {what} {t:.2f}s", flush=True)
            local = os.path.join(work, "downloaded.safetensors")
            drop_caches()
            t0 = time.perf_counter()
            sh("rclone", "copyto", "bench:bench-plain/model.safetensors", local, env=env)
            t = time.perf_counter() - t0 + run_loader(python, local, "load_file")
            os.unlink(local)
            res["download_then_load"]["load_file"].append(t)
            print(f"  {rate}/{latency} run {run + 1}: download-then-load {t:.2f}s", flush=True)
    finally:
        shaper.stop()
    return {k: {w: median(v) for w, v in r.items()} for k, r in res.items()}, max(peaks), loads


PARTIAL_LAYERS = 16  # of the 64: a pipeline stage's quarter


def partial_probe(args, work, src, env_direct):
    """A pipeline stage's load: safe_open reading layers 0-15 of the 64, in sorted-name order,
    every byte touched, from the S3-only store (no local tier, page cache dropped). Against the
    stored bytes of the chunks holding any byte of those tensors (from the manifest of the same
    pack into a folder: packing is deterministic), the bytes fetched from the bucket (`status
    --json`, every member's `bytes_fetched`)."""
    copy = os.path.join(work, "manifest-copy")
    os.makedirs(copy)
    sh(args.bin, "pack", src, "--store", copy, "--name", "model", "--init")
    with open(os.path.join(copy, "manifests", "model.json")) as f:
        envelope, _ = json.JSONDecoder().raw_decode(f.read())
    wanted = {f"layers.{i}.weight" for i in range(PARTIAL_LAYERS)}
    chunks = envelope["manifest"]["files"][0]["chunks"]
    needed = sum(c["stored_len"] for c in chunks if any(t["name"] in wanted for t in c.get("tensors", [])))
    mnt = os.path.join(work, "mnt-partial")
    os.makedirs(mnt, exist_ok=True)
    code = (
        "import sys, torch\n"
        "from safetensors import safe_open\n"
        "wanted = set(sys.argv[2:])\n"
        "with safe_open(sys.argv[1], framework='pt') as f:\n"
        "    total = sum(int(f.get_tensor(k).view(torch.int16).sum()) for k in sorted(f.keys()) if k in wanted)\n"
        "print(total)\n"
    )
    runs = []
    for _ in range(args.runs):
        sh(args.bin, "mount", "--store", "s3://bench-shardfs", mnt, "--name", "model", "--cache-size",
           args.cache_size, "--no-local-cache", env=env_direct)
        try:
            drop_caches()
            sh(sys.executable, "-c", code, os.path.join(mnt, "model.safetensors"), *sorted(wanted))
            st = json.loads(sh(args.bin, "status", mnt, "--json").stdout)
            runs.append(sum(m["bytes_fetched"] for m in st["members"]))
        finally:
            sh(args.bin, "unmount", mnt)
    fetched = median(runs)
    return {"layers": f"0-{PARTIAL_LAYERS - 1} of 64", "needed_stored_bytes": needed,
            "fetched_bytes": fetched, "fetched_each_run": runs, "ratio": fetched / needed}


def stall_probe(args, work, weed, env_direct):
    """Reads through a mount while the server is stopped (SIGSTOP): the longest wait of a reader
    that has a local replica, and the time until EIO without one."""
    out = {}
    mnt = os.path.join(work, "mnt-stall")
    os.makedirs(mnt, exist_ok=True)
    for case, store in [("with_local_replica", f"{work}/local-replica,s3://bench-stall"),
                        ("bucket_only", "s3://bench-stall-only")]:
        sh(args.bin, "mount", "--store", store, mnt, "--name", "model", "--cache-size", "64MiB",
           "--no-local-cache", env=env_direct)
        path = os.path.join(mnt, "model.safetensors")
        try:
            drop_caches()
            with open(path, "rb", buffering=0) as f:
                f.read(64 << 20)  # latencies learned from a healthy server first
                weed.proc.send_signal(signal.SIGSTOP)
                t_stall = time.perf_counter()
                worst, got, err = 0.0, 0, None
                try:
                    while got < (128 << 20):
                        t0 = time.perf_counter()
                        n = len(f.read(1 << 20))
                        worst = max(worst, time.perf_counter() - t0)
                        if n == 0:
                            break
                        got += n
                except OSError as e:
                    err = e.strerror
                elapsed = time.perf_counter() - t_stall
                t0 = time.perf_counter()
                ls_ok = subprocess.run(["timeout", "30", "ls", mnt], stdout=subprocess.DEVNULL).returncode == 0
                st_ok = subprocess.run(["timeout", "30", args.bin, "status", mnt, "--json"],
                                       stdout=subprocess.DEVNULL).returncode == 0
                answer_s = time.perf_counter() - t0
                weed.proc.send_signal(signal.SIGCONT)
            status = json.loads(sh(args.bin, "status", mnt, "--json").stdout)
            s3 = next(m for m in status["members"] if m["location"].startswith("s3://"))
            out[case] = {"read_mib": got >> 20, "worst_read_s": worst, "error": err, "until_end_or_error_s": elapsed,
                         "ls_and_status_answered": ls_ok and st_ok, "ls_and_status_s": answer_s,
                         "s3_member": {k: s3[k] for k in ["state", "hedges", "timeouts", "failures"]}}
        finally:
            weed.proc.send_signal(signal.SIGCONT)
            sh(args.bin, "unmount", mnt)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--netshape", required=True)
    ap.add_argument("--weed", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache-size", default="256MiB")
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--out", default=os.path.join(os.getcwd(), "bench-results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("scripts/bench-s3 needs root: it drops the page cache and mounts")
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="shardfs-bench-s3.", dir="/var/tmp")
    # The keys of the stores made here stay in this folder, not in the home of whoever runs it.
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")  # default local tiers
    weed = None
    python = sys.executable
    try:
        src = os.path.join(work, "src", "model.safetensors")
        os.makedirs(os.path.dirname(src))
        sh(python, os.path.join(HERE, "gen_bf16.py"), src, "--gib", str(args.gib), "--tensors", "64")
        size = os.path.getsize(src)
        weed = Weed(args.weed, work)
        direct = env_for(f"http://127.0.0.1:{weed.port}")
        args.passwd = os.path.join(work, "s3fs.passwd")
        with open(args.passwd, "w") as f:
            f.write(f"{KEY}:{SECRET}\n")
        os.chmod(args.passwd, 0o600)
        # The S3 port answers before the filer and volume servers are ready: wait until a bucket
        # can be made.
        deadline = time.time() + 60
        while subprocess.run(["rclone", "mkdir", "bench:readiness"], env=direct,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            if time.time() > deadline:
                sys.exit("weed does not create buckets after 60 s")
            time.sleep(0.1)
        print("uploading: shardfs pack, rclone copyto (one plain object)", flush=True)
        pack = sh(args.bin, "pack", src, "--store", "s3://bench-shardfs", "--name", "model", "--init", env=direct)
        print("  " + pack.stdout.strip())
        sh("rclone", "mkdir", "bench:bench-plain", env=direct)
        sh("rclone", "copyto", src, "bench:bench-plain/model.safetensors", env=direct)
        stored = json.loads(sh(args.bin, "ls", "--store", "s3://bench-shardfs", "--json", env=direct).stdout)
        stored_bytes = stored["models"][0]["stored_bytes"]
        chunks = stored["models"][0]["chunks"]

        summary = {"machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "damon_pageout": damon_pageout()},
                   "file": {"bytes": size, "stored_bytes": stored_bytes}, "runs": args.runs,
                   "cache_size": args.cache_size, "profiles": {}}
        peaks = []
        for rate, latency in PROFILES:
            print(f"link {rate}, +{latency} each way", flush=True)
            med, peak, loads = profile_runs(args, work, weed, python, rate, latency)
            peaks.append(peak)
            others = {k: med[k]["load_file"] for k in ["rclone", "s3fs", "download_then_load"]}
            best = min(others, key=others.get)
            summary["profiles"][f"{rate}+{latency}"] = {
                "seconds": med,
                "load_file_best_other": best,
                "load_file_speedup_vs_best": others[best] / med["shardfs"]["load_file"],
                "dd_speedup_vs_rclone": med["rclone"]["dd"] / med["shardfs"]["dd"],
                # A cold load_file with a cache smaller than the model: each chunk loaded once
                # (read-ahead never evicts what it fetched for a read still to come).
                "load_file_chunk_loads_per_chunk": max(loads) / chunks,
                "load_file_chunk_loads_each_run": loads,
                "dd_speedup_vs_s3fs": med["s3fs"]["dd"] / med["shardfs"]["dd"],
            }
        cache_mib = parse_mib(args.cache_size)
        summary["daemon"] = {"peak_rss_mib": max(peaks), "cache_size_mib": cache_mib,
                             "rss_within_cache_plus_64": max(peaks) <= cache_mib + 64}
        print(f"partial load (layers 0-{PARTIAL_LAYERS - 1} of 64, safe_open, S3 only)", flush=True)
        summary["partial"] = partial_probe(args, work, src, direct)
        print("stall probe (SIGSTOP of the server)", flush=True)
        os.makedirs(os.path.join(work, "local-replica"))
        sh(args.bin, "pack", src, "--store", f"{work}/local-replica,s3://bench-stall", "--name", "model",
           "--replicas", "2", "--init", env=direct)
        sh(args.bin, "pack", src, "--store", "s3://bench-stall-only", "--name", "model", "--init", env=direct)
        summary["stall"] = stall_probe(args, work, weed, direct)
        print_table(summary)
        with open(os.path.join(args.out, "bench-s3.json"), "w") as f:
            json.dump(summary, f, indent=2)
        chart(summary, os.path.join(args.out, "bench-s3.png"))
        print(f"\nwrote {args.out}/bench-s3.json and {args.out}/bench-s3.png")
    finally:
        for m in [os.path.join(work, "mnt"), os.path.join(work, "mnt-stall")]:
            if os.path.ismount(m):
                subprocess.run(["fusermount3", "-u", m])
        if weed:
            weed.stop()
        shutil.rmtree(work, ignore_errors=True)


def damon_pageout():
    """Whether the kernel's DAMON runs a pageout scheme: it reclaims page cache the loader was
    just sent, which the kernel then asks for again (a chunk load more if it left the cache)."""
    base = "/sys/kernel/mm/damon/admin/kdamonds"
    try:
        for k in os.listdir(base):
            with open(f"{base}/{k}/state") as f:
                if f.read().strip() != "on":
                    continue
            schemes = f"{base}/{k}/contexts/0/schemes"
            for sch in os.listdir(schemes):
                if sch.isdigit():
                    with open(f"{schemes}/{sch}/action") as f:
                        if f.read().strip() == "pageout":
                            return True
    except OSError:
        return False
    return False


def parse_mib(s):
    s = s.strip().lower()
    for suffix, mult in [("gib", 1024), ("g", 1024), ("mib", 1), ("m", 1)]:
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(s) >> 20


def print_table(s):
    print(f"\n{s['file']['bytes'] / 2**30:.2f} GiB bf16 safetensors ({s['file']['stored_bytes'] / 2**30:.2f} GiB stored by shardfs), "
          f"medians of {s['runs']} cold runs, shardfs --cache-size {s['cache_size']}, {s['machine']['cores']} cores")
    for name, p in s["profiles"].items():
        sec = p["seconds"]
        print(f"\nlink {name}")
        print(f"  {'':22} {'dd (s)':>8} {'load_file (s)':>14}")
        for k in ["shardfs", "rclone", "s3fs", "download_then_load"]:
            dd = sec[k].get("dd")
            print(f"  {k:22} {('%.2f' % dd) if dd else '-':>8} {sec[k]['load_file']:>14.2f}")
        print(f"  load_file: shardfs {p['load_file_speedup_vs_best']:.2f}x faster than the best other ({p['load_file_best_other']}); target >= 1.3x"
              if name.startswith("2gbit") else
              f"  load_file: shardfs {p['load_file_speedup_vs_best']:.2f}x faster than the best other ({p['load_file_best_other']})")
        print(f"  dd: {p['dd_speedup_vs_rclone']:.2f}x rclone, {p['dd_speedup_vs_s3fs']:.2f}x s3fs")
        print(f"  cold load_file: {p['load_file_chunk_loads_per_chunk']:.3f} chunk loads per chunk at most (target <= 1.02); "
              f"loads each run {p['load_file_chunk_loads_each_run']}")
    d = s["daemon"]
    print(f"\ndaemon peak RSS {d['peak_rss_mib']:.0f} MiB (cache {d['cache_size_mib']} MiB + 64 MiB allowed): "
          f"{'within' if d['rss_within_cache_plus_64'] else 'OVER'}")
    pl = s["partial"]
    print(f"partial load, layers {pl['layers']}: fetched {pl['fetched_bytes'] / 2**20:.1f} MiB for "
          f"{pl['needed_stored_bytes'] / 2**20:.1f} MiB stored: {pl['ratio']:.2f}x (target <= 1.15x)")
    for case, r in s["stall"].items():
        print(f"stall, {case}: read {r['read_mib']} MiB, worst single read {r['worst_read_s']:.2f}s, "
              f"error {r['error']}, {r['until_end_or_error_s']:.2f}s in all; ls+status answered: "
              f"{r['ls_and_status_answered']} ({r['ls_and_status_s']:.2f}s); s3 member {r['s3_member']}")


def chart(s, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["shardfs", "rclone", "s3fs", "download_then_load"]
    fig, axes = plt.subplots(1, len(s["profiles"]), figsize=(5 * len(s["profiles"]), 4.5), squeeze=False)
    for ax, (name, p) in zip(axes[0], s["profiles"].items()):
        ax.bar(range(len(kinds)), [p["seconds"][k]["load_file"] for k in kinds])
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels(["shardfs", "rclone\nmount", "s3fs", "download\n+ load"])
        ax.set_ylabel("cold load_file, s (median)")
        ax.set_title(f"link {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
