"""What the recovery phase costs (issue 25): the shipped default's forgetting with and without
``finetune_recover_steps``, timed alternately in one process on one request-kind grid's request.

Both settings serve from the grid's cached encoder and attacked model (``unlearnrec experiment GRID
--out OUT`` first); each is timed ``--repeats`` times, alternating, and the medians, their ratio and
each one's speed-up over the grid's Retrain (its ``seconds`` in ``OUT/results.jsonl``, measured when
the grid ran) are printed. Only seconds are read: nothing here chooses a setting.

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src python benchmarks/recover_cost.py \\
        experiments/kinds/lightgcn-authors.toml --out ~/.cache/unlearnrec/runs/kinds-lightgcn-authors \\
        [--label "recover 80 at λ_u 0.1"]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.registry import build_method

RECOVER = ("finetune_recover_steps", "finetune_recover_lambda_u")


def retrain_seconds(out: Path) -> float | None:
    """The Retrain cell's seconds in ``out/results.jsonl`` (None without one)."""
    path = out / "results.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.open()]
    done = [r for r in rows if r.get("method") == "retrain" and r.get("status", "ok") == "ok"]
    return float(done[-1]["seconds"]) if done else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", help="a request-kind grid with a row that has finetune_recover_steps")
    p.add_argument("--out", required=True, help="the grid's --out (its Retrain seconds)")
    p.add_argument("--label", default="", help="the first such row whose label has this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load_config(a.grid)
    rows = (m for m in cfg.methods if m.config.get("finetune_recover_steps") and a.label in m.title)
    spec = next(rows, None)
    if spec is None:
        want = f"finetune_recover_steps and {a.label!r} in its label"
        print(f"error: {a.grid} has no row with {want}", file=sys.stderr)
        return 2
    store = Store(cfg, a.cache or default_cache(), data_dir=a.data_dir)
    group = groups(cfg)[0]
    if not store.has_model(group):
        print(f"error: {store.root} has no model of {group.tag}: run {a.grid} first", file=sys.stderr)
        return 2
    if not (store.prepared_dir(group, spec) / "meta.json").is_file():
        print(f"error: no cached encoder of {spec.title!r}: run {a.grid} first", file=sys.stderr)
        return 2
    data, att, model = store.dataset(group.dataset), store.forget_set(group), store.model(group)
    request = store.request(group)
    without = {k: v for k, v in spec.config.items() if k not in RECOVER}
    settings = {"with recovery": dict(spec.config), "without": without}
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(a.repeats):
        for name, config in settings.items():
            method = build_method(spec.name, dict(config), group.seed)
            method.set_validation(data.val)
            store.prepare(method, group, spec, model, att.train)  # the cached encoder (same key)
            t0 = time.perf_counter()
            method.forget(model, att.train, request)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    retrain = retrain_seconds(Path(a.out).expanduser())
    print(f"{spec.title} ({a.repeats} alternating runs, {a.threads} thread(s))")
    for name, v in med.items():
        speed = f", Retrain / it {retrain / v:.1f}x" if retrain else ""
        print(f"  {name}: median {v:.2f} s (runs {', '.join(f'{x:.1f}' for x in times[name])}){speed}")
    print(f"  recovery costs {med['with recovery'] / med['without']:.2f}x the default without it")
    if retrain:
        print(f"  Retrain (the grid's cell): {retrain:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
