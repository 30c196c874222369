"""A grid serially against the same grid on a local Ray cluster: wall time and CPU seconds.

    flock /tmp/unlearnrec-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_ray.py \\
        --grid experiments/ci-tiny.toml --repeats 3

Every run is a fresh process with a fresh cache (so every run trains everything) and its own OUT:

- ``serial``: ``run_experiment`` with ``--threads`` intra-op threads (default 1, the thread count of a
  Ray task, so the two write the same metrics; ``--serial-threads 1 2`` adds a serial run with 2);
- ``ray``: ``ray.init(address="local", num_cpus=--workers)`` and ``run_experiment_ray`` (one CPU and
  one thread per task), so at most ``--workers`` tasks run at once.

Per run: wall seconds (Ray: with and without ``ray.init``) and CPU seconds (user + system) summed over
the process and, for Ray, every process under it (the GCS, the raylet, its helpers and the task
workers, sampled every 0.2 s with psutil and once more before ``ray.shutdown``), split into the task
workers and Ray's own services. The medians over ``--repeats`` (the runs alternate serial and Ray) and
the ratios Ray / serial are printed, and whether each Ray run wrote the serial run's metrics (per cell
hash, every metric field). ``--ratios`` replaces the attack's user shares (``[attack] user_ratio``,
else ``ratios``; e.g. ``0.5 1.0``: two groups, two attacked models that Ray trains side by side).
``load`` is the highest 1-minute load average seen at the start or end of a run (the machine may be
shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _grid(args) -> dict:
    from unlearnrec.config import read_toml

    raw = dict(read_toml(args.grid))
    if args.ratios:  # the attack's user shares, wherever the grid sets them
        if isinstance(raw.get("attack"), dict):
            raw["attack"] = {**raw["attack"], "user_ratio": list(args.ratios)}
        else:
            raw["ratios"] = list(args.ratios)
    return raw


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TreeCPU:
    """CPU seconds of every process under this one, sampled in a thread (the largest value per pid)."""

    def __init__(self, interval: float = 0.2):
        import psutil  # ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

        self.psutil = psutil
        self.me = psutil.Process()
        self.seen: dict[int, tuple[str, float]] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        for p in self.me.children(recursive=True):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    name = " ".join(p.cmdline()[:2]) or p.name()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
            cpu = t.user + t.system
            if cpu >= self.seen.get(p.pid, ("", 0.0))[1]:
                self.seen[p.pid] = (name, cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def split(self) -> tuple[float, float, int]:
        """(CPU of the task workers, CPU of Ray's other processes, number of workers)."""
        workers = [c for n, c in self.seen.values() if "default_worker" in n or n.startswith("ray::")]
        return sum(workers), sum(c for _, c in self.seen.values()) - sum(workers), len(workers)


def child(args) -> int:
    """One run (``--mode serial`` or ``ray``) into ``--out`` with the cache ``--cache``; prints JSON."""
    import torch

    from unlearnrec.runtime import tune_allocator

    tune_allocator()
    grid = _grid(args)
    cpu0 = _self_cpu()
    t0 = time.perf_counter()
    row: dict = {"mode": args.mode}
    if args.mode == "serial":
        from unlearnrec.experiments.runner import run_experiment

        torch.set_num_threads(args.threads)
        row["threads"] = args.threads
        recs = run_experiment(grid, args.out, data_dir=args.data_dir, cache_dir=args.cache)
        row.update(wall_s=time.perf_counter() - t0, cpu_s=_self_cpu() - cpu0, driver_cpu_s=_self_cpu() - cpu0)
    else:
        import ray

        from unlearnrec.experiments.ray_runner import run_experiment_ray

        torch.set_num_threads(1)
        row["workers"] = args.workers
        with TreeCPU() as tree:
            ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
            t1 = time.perf_counter()
            recs = run_experiment_ray(grid, args.out, data_dir=args.data_dir, cache_dir=args.cache)
            t2 = time.perf_counter()
            tree.sample()
            ray.shutdown()
        workers, services, n = tree.split()
        row.update(
            wall_s=t2 - t0,
            init_s=t1 - t0,
            run_s=t2 - t1,
            driver_cpu_s=_self_cpu() - cpu0,
            workers_cpu_s=workers,
            services_cpu_s=services,
            worker_processes=n,
        )
        row["cpu_s"] = row["driver_cpu_s"] + workers + services
    row["cells"] = len(recs)
    row["ok"] = sum(r["status"] == "ok" for r in recs)
    print(json.dumps(row))
    return 0


def _metrics(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["cell"]: r.get("metrics") for r in rows}


def run(args, mode: str, tmp: Path, tag: str, threads: int = 1) -> dict:
    out, cache = tmp / f"out-{tag}", tmp / f"cache-{tag}"
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--out", str(out), "--cache", str(cache)]
    cmd += ["--grid", str(args.grid), "--threads", str(threads), "--workers", str(args.workers)]
    if args.ratios:
        cmd += ["--ratios", *map(str, args.ratios)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = str(threads)
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{mode} run failed ({proc.returncode})")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(load=max(load0, os.getloadavg()[0]), out=str(out))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default=str(ROOT / "experiments" / "ci-tiny.toml"))
    p.add_argument("--ratios", type=float, nargs="+", default=None, help="replace the grid's ratios")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="num_cpus of the local Ray cluster")
    p.add_argument("--serial-threads", type=int, nargs="+", default=[1])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write every run's row to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        for k in range(args.repeats):
            for threads in args.serial_threads:
                rows.append(run(args, "serial", Path(tmp), f"serial{threads}-{k}", threads))
            rows.append(run(args, "ray", Path(tmp), f"ray-{k}"))
            ref = next(r for r in rows if r["mode"] == "serial" and r["threads"] == 1)
            rows[-1]["same_metrics"] = _metrics(Path(rows[-1]["out"])) == _metrics(Path(ref["out"]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    med = statistics.median
    groups: dict[str, list[dict]] = {}
    for r in rows:
        serial = r["mode"] == "serial"
        name = f"serial, {r['threads']} thread(s)" if serial else f"ray, {r['workers']} workers"
        groups.setdefault(name, []).append(r)
    base = groups[next(g for g in groups if g.startswith("serial, 1"))]
    bw, bc = med(r["wall_s"] for r in base), med(r["cpu_s"] for r in base)
    lines = [
        "| run | n | cells ok | wall s | x serial | without ray.init | CPU s | x serial | "
        "of which workers / Ray services | same metrics | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for name, rs in groups.items():
        w, c = med(r["wall_s"] for r in rs), med(r["cpu_s"] for r in rs)
        ray_rows = rs[0]["mode"] == "ray"
        split = (
            f"{med(r['workers_cpu_s'] for r in rs):.1f} / {med(r['services_cpu_s'] for r in rs):.1f}"
            if ray_rows
            else ""
        )
        run_s = med(r["run_s"] for r in rs) if ray_rows else 0.0
        init = f"{run_s:.1f} ({run_s / bw:.2f})" if ray_rows else ""
        same = ("yes" if all(r["same_metrics"] for r in rs) else "NO") if ray_rows else ""
        lines.append(
            f"| {name} | {len(rs)} | {rs[0]['ok']}/{rs[0]['cells']} | {w:.1f} | {w / bw:.2f} | {init} | "
            f"{c:.1f} | {c / bc:.2f} | {split} | {same} | {max(r['load'] for r in rs):.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
