"""Issue 21's closing table: paper / authors' logs / ours for every Table 2 cell that ran.

Reads the committed ``results.jsonl`` of the given result folders (``experiments/results/<grid>/``),
keeps the Table 2 grids' cells (the ablation and ratio grids stored beside them are left out) and prints
one markdown row per (grid, backbone, method): ours (Recall@20, NDCG@20, MI-BF, MI-NG, AUC, seconds),
the paper's Table 2 value of the row's column (Retrain, or UnlearnRec for every UnlearnRec row), the
authors' logged value of the same k where their logs have one (docs/method.md §10), and a flag where
our Recall is more than 3% from the paper's or MI lies on the other side of 1.

    python benchmarks/table2_compare.py experiments/results/ml-1m-table2-cpu \\
        experiments/results/ml-1m-table2-cpu-full experiments/results/ml-1m-table2-cpu-full-authors \\
        experiments/results/yelp2018-table2-lightgcn-authors
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from unlearnrec.experiments.report.paper import AUTHORS_LOGS, PAPER_TABLE2
from unlearnrec.experiments.results import latest_records, read_results

K = re.compile(r"UnlearnRec\((\d)\)")


def fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rows(folder: Path) -> list[dict]:
    """The latest ok record of each Table 2 cell in ``folder``."""
    path = folder / "results.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    ok, _ = latest_records(read_results(folder))
    return [r for r in ok if "table2" in r.get("experiment", "") and "attack" in r]


def line(rec: dict) -> str:
    m = rec["metrics"]
    ds, bb = rec["dataset"], rec["backbone"]
    k = K.search(rec["label"])
    column = (
        "retrain" if rec["method"] == "retrain" else "unlearnrec" if rec["method"] == "unlearnrec" else None
    )
    paper = PAPER_TABLE2.get((ds, bb, column)) if column and (column == "retrain" or k) else None
    authors = AUTHORS_LOGS.get((ds, bb, f"ours({k.group(1)})")) if k else None
    flags = []
    if paper:
        gap = m["recall@20"] / paper[0] - 1
        if abs(gap) > 0.03:
            flags.append(f"Recall {gap:+.1%}")
        if (m["mi_ng"] - 1) * (paper[3] - 1) < 0:
            flags.append("MI-NG other side of 1")
    protocol = "authors'" if "authors" in rec["experiment"] else "per-user"
    return (
        f"| {rec['experiment']} | {ds} | {bb} | {protocol} ({rec['attack']['edges']:,}) | {rec['label']} | "
        f"{fmt(m['recall@20'])} | {fmt(m['ndcg@20'])} | {m['mi_bf']:.2f} | {m['mi_ng']:.2f} | "
        f"{m['auc']:.3f} | "
        f"{rec['seconds']:,.1f} | "
        + (f"{paper[0]:.4f} / {paper[1]:.4f} / {paper[2]:.2f} / {paper[3]:.2f}" if paper else "-")
        + " | "
        + (f"{authors[0]:.4f} / {fmt(authors[1])}" if authors else "-")
        + f" | {', '.join(flags) or '-'} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    a = p.parse_args(argv)
    recs = [r for f in a.folders for r in rows(f)]
    if not recs:
        print("error: no Table 2 cell in the given folders", file=sys.stderr)
        return 2
    print(
        "| grid | dataset | backbone | attack (edges) | method | Recall@20 | NDCG@20 | MI-BF | MI-NG | AUC | "
        "seconds | paper R / N / MI-BF / MI-NG | authors' logs R / N | differs |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    order = {"retrain": 0, "unlearnrec": 1}
    recs.sort(
        key=lambda r: (r["dataset"], r["experiment"], r["backbone"], order.get(r["method"], 2), r["label"])
    )
    for r in recs:
        print(line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
