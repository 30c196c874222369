"""What checking the guard's candidates newest first saves (issue 25): the shipped default's forgetting with
``forget_guard_every``'s candidates checked each at its step (a budget of one table: the behaviour until
session 21) and newest first (``finetune.KEEP_BUDGET``), timed alternately in one process on one request-kind
grid's request.

Both serve from the grid's cached encoder and attacked model (``unlearnrec experiment GRID --out OUT``
first); each is timed ``--repeats`` times, alternating; the medians, their ratio, the validation checks each
made, each one's speed-up over the grid's Retrain (its ``seconds`` in ``OUT/results.jsonl``; with
``--retrain`` also over a Retrain timed in this command, under the same load) and whether the two served
the same embeddings (they must: the served state is the latest that holds either way) are printed.

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src python benchmarks/guard_checks.py \\
        experiments/kinds/lightgcn-authors.toml --out ~/.cache/unlearnrec/runs/kinds/lightgcn-authors
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.registry import build_method
from unlearnrec.unlearn.unlearnrec import finetune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recover_cost import retrain_seconds  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", help="a request-kind grid with a row that has forget_guard_every")
    p.add_argument("--out", required=True, help="the grid's --out (its Retrain seconds)")
    p.add_argument("--label", default="recover 80 at λ_u 0.1", help="the first such row whose label has this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--retrain",
        action="store_true",
        help="also time the grid's Retrain once in this process, between the repeats (the same load)",
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load_config(a.grid)
    spec = next((m for m in cfg.methods if m.config.get("forget_guard_every") and a.label in m.title), None)
    if spec is None:
        print(
            f"error: {a.grid} has no row with forget_guard_every and {a.label!r} in its label",
            file=sys.stderr,
        )
        return 2
    store = Store(cfg, a.cache or default_cache(), data_dir=a.data_dir)
    group = groups(cfg)[0]
    if not store.has_model(group) or not (store.prepared_dir(group, spec) / "meta.json").is_file():
        print(
            f"error: {store.root} lacks the model or the encoder of {spec.title!r}: run {a.grid}",
            file=sys.stderr,
        )
        return 2
    data, att, model = store.dataset(group.dataset), store.forget_set(group), store.model(group)
    request = store.request(group)
    budgets = {"each at its step": 1, "newest first": finetune.KEEP_BUDGET}
    times: dict[str, list[float]] = {name: [] for name in budgets}
    checks: dict[str, int] = {}
    served: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    retrain_now = None
    for n in range(a.repeats):
        if a.retrain and n == a.repeats // 2:  # mid-way: the load it sees is the default's
            rspec = next(m for m in cfg.methods if m.name == "retrain")
            method = build_method(rspec.name, dict(rspec.config), group.seed)
            method.set_validation(data.val)
            retrain_now = method.forget(model, att.train, request).seconds
        for name, budget in budgets.items():
            finetune.KEEP_BUDGET = budget
            method = build_method(spec.name, dict(spec.config), group.seed)
            method.set_validation(data.val)
            store.prepare(method, group, spec, model, att.train)  # the cached encoder
            t0 = time.perf_counter()
            res = method.forget(model, att.train, request)
            times[name].append(time.perf_counter() - t0)
            checks[name] = len(res.info.get("guard_keep_checks", []))
            served[name] = res.model.embeddings()
    same = all(torch.equal(x, y) for x, y in zip(*served.values(), strict=True))
    med = {name: statistics.median(v) for name, v in times.items()}
    retrain = retrain_seconds(Path(a.out).expanduser())
    print(f"{spec.title} ({a.repeats} alternating runs, {a.threads} thread(s))")
    for name, v in med.items():
        speed = f", Retrain / it {retrain / v:.1f}x" if retrain else ""
        if retrain_now:
            speed += f", this command's Retrain / it {retrain_now / v:.1f}x"
        runs = ", ".join(f"{x:.1f}" for x in times[name])
        print(f"  {name}: {checks[name]} candidates checked, median {v:.2f} s (runs {runs}){speed}")
    ratio = med["newest first"] / med["each at its step"]
    print(f"  newest first takes {ratio:.2f}x the time; the same embeddings served: {same}")
    if retrain:
        print(f"  Retrain (the grid's cell): {retrain:.1f} s")
    if retrain_now:
        print(f"  Retrain (in this command): {retrain_now:.1f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
