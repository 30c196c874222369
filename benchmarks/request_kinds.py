"""Issue 25's table: request kind x method, one table per backbone, from grid output folders.

Each folder is the ``--out`` of one ``unlearnrec experiment`` run (``experiments/kinds/*.toml``): its
``results.jsonl`` and the grid's TOML the runner keeps beside it. A row is one (request, method) cell:
test Recall@20 as a share of the group's Retrain (and of the input model's, the paper's Table 5
measure, for requests without an attack), MI-BF, MI-NG, AUC, forget seconds and Retrain's seconds
over the method's.

    python benchmarks/request_kinds.py runs/kinds-lightgcn-authors runs/kinds-lightgcn-per-user \\
        runs/kinds-lightgcn-random runs/kinds-lightgcn-users > experiments/results/kinds-ml-1m/table.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unlearnrec.experiments.grid import load_config
from unlearnrec.experiments.results import latest_records, read_results


def request_name(rec: dict, item_ratio: float) -> str:
    """A readable name of a record's request."""
    if "request" in rec:
        r = rec["request"]
        return f"{r['kind']} {r['ratio'] * 100:g}% ({r['edges']:,} edges)"
    protocol = "authors' attack" if item_ratio > 0 else "per-user attack"
    return f"{protocol} ({rec['attack']['edges']:,} edges)"


def rows_of(folder: Path) -> list[dict]:
    """The latest ok record of each cell in ``folder``, with its request's name."""
    grids = sorted(folder.glob("experiment-*.toml"))
    if not grids:
        raise SystemExit(f"error: {folder} has no experiment-*.toml (not a grid's --out folder)")
    cfg = load_config(grids[-1])
    item_ratio = cfg.attack_of(cfg.datasets[0])[1] if cfg.request == "adversarial" else 0.0
    if not (folder / "results.jsonl").is_file():
        raise SystemExit(f"error: {folder} has no results.jsonl")
    ok, _ = latest_records(read_results(folder))
    order = {m.title: i for i, m in enumerate(cfg.methods)}
    out = [{**r, "_request": request_name(r, item_ratio)} for r in ok]
    return sorted(out, key=lambda r: (r["backbone"], r["ratio"], order.get(r["label"], 99)))


def table(rows: list[dict]) -> list[str]:
    """Markdown lines of one backbone's rows."""
    lines = [
        "| request | method | Recall@20 | of Retrain | of input | MI-BF | MI-NG | AUC | seconds "
        "| Retrain / it |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for req in dict.fromkeys(r["_request"] for r in rows):
        group = [r for r in rows if r["_request"] == req]
        ref = next((r for r in group if r["method"] == "retrain"), None)
        for r in group:
            m = r["metrics"]
            rec = m["recall@20"]
            share = f"{rec / ref['metrics']['recall@20']:.1%}" if ref else "-"
            before = m.get("before_recall@20")
            of_input = f"{rec / before:.1%}" if before else "-"
            speed = f"{ref['seconds'] / r['seconds']:,.1f}x" if ref and r["seconds"] > 0 else "-"
            lines.append(
                f"| {req} | {r['label']} | {rec:.4f} | {share} | {of_input} | {m['mi_bf']:.2f} | "
                f"{m['mi_ng']:.2f} | {m['auc']:.3f} | {r['seconds']:.2f} | {speed} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    a = p.parse_args(argv)
    rows = [r for f in a.folders for r in rows_of(f)]
    if not rows:
        print("error: no finished cell in the given folders", file=sys.stderr)
        return 2
    for backbone in sorted({r["backbone"] for r in rows}):
        datasets = sorted({r["dataset"] for r in rows if r["backbone"] == backbone})
        print(f"\n### {backbone} on {', '.join(datasets)}\n")
        print("\n".join(table([r for r in rows if r["backbone"] == backbone])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
