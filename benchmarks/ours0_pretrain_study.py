"""Issue 21: how close does the paper's rule (influence_on = "both") get to the authors' Ours(0)
0.2179 Recall@20 on ML-1M LightGCN under the authors' attack, and at what pre-training cost?

``run``: for one setup (a one-group adversarial grid whose attacked model is cached), pre-train the
paper-rule encoder once with the grid's tuned config up to the last checkpoint, and at each
checkpoint (epoch 0 = the untrained encoder, the residual graph only) forget the setup's request
with Ours(0) and Ours(k) and append one JSON line per (checkpoint, k) to
``CACHE/ours0-pretrain-study/results.jsonl`` (library: ``unlearnrec.experiments.pretrain_study``).
``--role evaluated`` ranks on the grid's test split; ``--role validation`` on its held-out
validation split and never reads the test split. A killed run keeps its rows; a re-run does only
what is missing.

``report``: the tables (markdown) and the curve figure (PNG) from both setups' rows, with the
selection rules, fixed before any number of E was seen:

- rule A: on V, the checkpoint with the highest validation Recall@20 among those whose MI-NG on
  V's request is > 1 (fallback if none: the highest MI-NG);
- rule B: on V, the highest MI-NG among checkpoints keeping >= 95% of V's residual-graph row's
  validation Recall@20 (fallback if none: the highest validation Recall);
- REFERENCE only: the authors' selection, the checkpoint with the best test Recall@20 on E.

Ties go to the earlier (cheaper) checkpoint. The selected pre-training length is applied to E.

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src \\
      .venv/bin/python benchmarks/ours0_pretrain_study.py run \\
        --grid experiments/ml-1m-table2-cpu-full-authors.toml \\
        --cache ~/.cache/unlearnrec/runs/ml-1m-table2-cpu-full-authors --role evaluated
    ... run --grid experiments/ml-1m-authors-validation.toml \\
        --cache ~/.cache/unlearnrec/runs/ml-1m-authors-validation --role validation
    ... report --evaluated-grid experiments/ml-1m-table2-cpu-full-authors.toml \\
        --evaluated-cache ~/.cache/unlearnrec/runs/ml-1m-table2-cpu-full-authors \\
        --validation-cache ~/.cache/unlearnrec/runs/ml-1m-authors-validation \\
        --out experiments/results/ours0-pretrain-study
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments.grid import load_config
from unlearnrec.experiments.pretrain_select import checkpoint_rows, markdown, residual_reference
from unlearnrec.experiments.pretrain_study import STUDY_DIR, PretrainStudy, StudySpec, grid_row
from unlearnrec.experiments.results import read_results
from unlearnrec.experiments.store import Store

#: the grid's tuned paper-rule encoder (experiments/ml-1m-table2-cpu-full-authors.toml's
#: "UnlearnRec(0) tuned, λp/8", without its epochs)
ENCODER = {"ratio": 0.2, "batch_size": 4096, "lr": 5e-3, "lambda_p": 1.25e-3}
#: the fine-tuning settings of Ours(k > 0) benchmarks/bench_forget.py found
FINETUNE = {"finetune_batch_size": 8192, "finetune_lr": 5e-3}
CHECKPOINTS = (0, 1, 2, 5, 10, 15, 20, 30)
AUTHORS_OURS0 = 0.2179


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="pre-train once and measure Ours(k) at every checkpoint")
    r.add_argument("--grid", required=True, help="the setup's grid TOML (one group, adversarial)")
    r.add_argument("--cache", required=True, help="the grid's cache root (models/, attacks/, ...)")
    r.add_argument("--role", choices=("evaluated", "validation"), required=True)
    r.add_argument("--checkpoints", type=_ints, default=CHECKPOINTS, help="epochs (0: untrained encoder)")
    r.add_argument("--ks", type=_ints, default=(0, 1), help="the Ours(k) to run at each checkpoint")
    r.add_argument("--encoder", default=json.dumps(ENCODER), help="JSON: the encoder's pre-training fields")
    r.add_argument("--finetune", default=json.dumps(FINETUNE), help="JSON: the fine-tuning fields of k > 0")
    r.add_argument("--out", default=None, help=f"the study folder (default CACHE/{STUDY_DIR})")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--threads", type=int, default=1)
    q = sub.add_parser("report", help="tables and figure from both setups' rows")
    q.add_argument("--evaluated-grid", required=True)
    q.add_argument("--evaluated-cache", required=True)
    q.add_argument("--validation-cache", required=True)
    q.add_argument("--out", required=True, help="folder for study.md and curve.png")
    q.add_argument(
        "--encoder", default=json.dumps(ENCODER), help="JSON: the encoder config whose rows to report"
    )
    q.add_argument("--checkpoints", type=_ints, default=None, help="report only these epochs (default: all)")
    return p.parse_args(argv)


def _json(text: str, what: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise UnlearnRecError(f"--{what}: not JSON ({e})") from None
    if not isinstance(v, dict):
        raise UnlearnRecError(f"--{what}: expected a JSON object")
    return v


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, args.threads))
    config = load_config(args.grid)
    ft = _json(args.finetune, "finetune")
    spec = StudySpec(
        encoder=_json(args.encoder, "encoder"),
        checkpoints=tuple(args.checkpoints),
        ks={k: (ft if k > 0 else {}) for k in args.ks},
        role=args.role,
    )
    cache = Path(args.cache).expanduser()
    store = Store(config, cache, data_dir=args.data_dir)
    out = Path(args.out).expanduser() if args.out else cache / STUDY_DIR

    def show(row: dict) -> None:
        m = row["metrics"]
        if row["kind"] == "model":
            print(f"{args.role}: attacked model {row['split']} Recall@20 {m['recall@20']:.4f}", flush=True)
            return
        print(
            f"{args.role} epoch {row['epoch']:3d} Ours({row['k']}): "
            f"{row['split']} Recall@20 {m['recall@20']:.4f} "
            f"NDCG@20 {m['ndcg@20']:.4f} MI-BF {m['mi_bf']:.2f} MI-NG {m['mi_ng']:.2f} AUC {m['auc']:.3f} "
            f"forget {row['forget_seconds']:.2f}s pre-training {row['pretrain_seconds']:.0f}s",
            flush=True,
        )

    PretrainStudy(store, spec, out, on_row=show).run()
    print(f"rows in {out / 'results.jsonl'}")


def figure(e_rows: list[dict], v_rows: list[dict], retrain: float | None, path: Path) -> None:
    """Recall share (E: of Retrain; V: of V's residual graph) and MI-NG against pre-training epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v_res = residual_reference(v_rows)
    v_ref = v_res["metrics"]["recall@20"] if v_res else None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for rows, ref, name, style in (
        (e_rows, retrain, "E (test, of Retrain)", "-"),
        (v_rows, v_ref, "V (val, of residual)", "--"),
    ):
        for k in sorted({r["k"] for r in rows}):
            pts = [r for r in rows if r["k"] == k]
            xs = [r["epoch"] for r in pts]
            if ref:
                a1.plot(
                    xs,
                    [r["metrics"]["recall@20"] / ref for r in pts],
                    style,
                    marker="o",
                    label=f"{name} Ours({k})",
                )
            a2.plot(
                xs,
                [r["metrics"]["mi_ng"] for r in pts],
                style,
                marker="o",
                label=f"{name.split()[0]} Ours({k})",
            )
    a1.axhline(AUTHORS_OURS0 / 0.2287, color="grey", lw=0.8, ls=":", label="authors' Ours(0) 95.3%")
    a2.axhline(1.0, color="grey", lw=0.8, ls=":", label="MI-NG = 1")
    a1.set(xlabel="pre-training epochs", ylabel="Recall@20 share", title="Recall@20 share")
    a2.set(xlabel="pre-training epochs", ylabel="MI-NG", title="MI-NG on the setup's request")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(args: argparse.Namespace) -> None:
    e_cache = Path(args.evaluated_cache).expanduser()
    v_cache = Path(args.validation_cache).expanduser()
    config = load_config(args.evaluated_grid)
    # the study folders may hold other encoder configs' rows: keep this one's
    key = StudySpec(_json(args.encoder, "encoder"), (0,), {0: {}}, "evaluated").key
    evaluated = checkpoint_rows(read_results(e_cache / STUDY_DIR), key)
    validation = checkpoint_rows(read_results(v_cache / STUDY_DIR), key)
    if args.checkpoints is not None:
        evaluated = [r for r in evaluated if r["epoch"] in args.checkpoints]
        validation = [r for r in validation if r["epoch"] in args.checkpoints]
    if not checkpoint_rows(evaluated) and not checkpoint_rows(validation):
        raise UnlearnRecError(f"no study rows under {e_cache / STUDY_DIR} nor {v_cache / STUDY_DIR}")
    retrain = grid_row(e_cache, config, "retrain", {})
    grid_ours0 = grid_row(e_cache, config, "unlearnrec", {**ENCODER, "epochs": 10, "finetune_epochs": 0})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(evaluated, validation, retrain, grid_ours0, AUTHORS_OURS0)
    (out / "study.md").write_text(text)
    ret = retrain["metrics"]["recall@20"] if retrain else None
    figure(evaluated, validation, ret, out / "curve.png")
    print(text)
    print(f"wrote {out / 'study.md'} and {out / 'curve.png'}")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        cmd_run(args) if args.command == "run" else cmd_report(args)
    except (UnlearnRecError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
