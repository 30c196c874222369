"""Training steps with glibc's allocator as it is ("system") and told to keep freed memory ("keep").

    .venv/bin/python benchmarks/bench_allocator.py --dataset yelp2018 --batch-size 8192 \\
        --backbones lightgcn sgl simgcl --batches 6 --repeats 2 --threads 1

``unlearnrec.runtime.tune_allocator`` (called by the command line and the training benchmarks) stops
glibc from returning large freed blocks to the OS, so the next step reuses them instead of faulting in
and zeroing fresh pages. The setting is per process and cannot be undone, so every (backbone, mode) runs
in a fresh process; the two modes alternate ``--repeats`` times to spread the machine's noise. Each
process times ``--batches`` optimiser steps after ``--warmup`` (``bench_backbones.time_backbone``: the
shipped config of each backbone, the same BPR batches) and reports, per step, the median wall time, the
kernel and user CPU seconds and the minor page faults (``getrusage`` over warm-up and timed steps), and
the peak resident size of the process. The last table gives system / keep: above 1 means keeping is
faster or faults less; the peak-memory column is keep / system (the price).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(args) -> int:
    """One process: apply ``args.mode`` before anything is allocated, then time one backbone."""
    from unlearnrec.runtime import tune_allocator

    applied = tune_allocator(args.mode)
    import torch

    sys.path.insert(0, str(HERE))
    from bench_backbones import time_backbone

    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.graph import Graph

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir)
    graph = Graph.from_interactions(data.train)
    before = resource.getrusage(resource.RUSAGE_SELF)
    r = time_backbone(args.backbone, data, graph, args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps = args.warmup + args.batches
    row = {
        "backbone": args.backbone,
        "mode": args.mode,
        "applied": applied,
        "step_s": r["batch_s"],
        "sys_s": (after.ru_stime - before.ru_stime) / steps,
        "user_s": (after.ru_utime - before.ru_utime) / steps,
        "minflt": (after.ru_minflt - before.ru_minflt) / steps,
        "peak_mb": after.ru_maxrss / 1024,  # KiB on Linux
    }
    print(json.dumps(row), flush=True)
    return 0


def run_child(args, backbone: str, mode: str) -> dict:
    argv = [sys.executable, __file__, "--child", "--mode", mode, "--backbone", backbone]
    for flag in ("dataset", "data_dir", "batches", "warmup", "batch_size", "dim", "threads"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    rows = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not rows:
        raise SystemExit(f"child {backbone}/{mode} failed: {out.stderr.strip().splitlines()[-1:]}")
    return rows[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "sgl", "simgcl"])
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="override the configs' batch size")
    p.add_argument("--dim", type=int, default=None, help="override the configs' embedding size")
    p.add_argument("--repeats", type=int, default=2, help="processes per (backbone, mode)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write every process's row to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["system", "keep"], default="keep", help=argparse.SUPPRESS)
    p.add_argument("--backbone", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = "cpu"
    if args.child:
        return child(args)
    rows = []
    for name in args.backbones:
        for _ in range(args.repeats):
            for mode in ("system", "keep"):
                rows.append(run_child(args, name, mode))
                r = rows[-1]
                print(
                    f"  {name:<9}{mode:<7}step {r['step_s']:.3f} s  sys {r['sys_s']:.3f} s  "
                    f"faults {r['minflt']:.0f}  peak {r['peak_mb']:.0f} MB",
                    flush=True,
                )
    med = {}
    for name in args.backbones:
        for mode in ("system", "keep"):
            mine = [r for r in rows if r["backbone"] == name and r["mode"] == mode]
            med[name, mode] = {
                k: statistics.median(r[k] for r in mine) for k in ("step_s", "sys_s", "minflt", "peak_mb")
            }
    print(
        f"\n{args.dataset}, batch {args.batch_size or 'of the config'}, {args.threads or 'default'} threads; "
        f"medians of {args.repeats} processes per cell"
    )
    print(f"{'backbone':<10}{'mode':<8}{'step s':>9}{'sys s/step':>12}{'faults/step':>13}{'peak MB':>10}")
    for (name, mode), m in med.items():
        print(
            f"{name:<10}{mode:<8}{m['step_s']:>9.3f}{m['sys_s']:>12.3f}{m['minflt']:>13.0f}{m['peak_mb']:>10.0f}"
        )
    print(
        f"\n{'backbone':<10}{'step system/keep':>18}{'sys system/keep':>17}"
        f"{'faults system/keep':>20}{'peak keep/system':>18}"
    )
    for name in args.backbones:
        s, k = med[name, "system"], med[name, "keep"]
        print(
            f"{name:<10}{s['step_s'] / k['step_s']:>18.2f}{s['sys_s'] / max(k['sys_s'], 1e-9):>17.1f}"
            f"{s['minflt'] / max(k['minflt'], 1.0):>20.1f}{k['peak_mb'] / s['peak_mb']:>18.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
