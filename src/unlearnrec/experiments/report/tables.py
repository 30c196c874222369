"""Reports from ``results.jsonl`` only (no training): the paper's Table 2 layout, with its numbers.

Rows are dataset x backbone (x request ratio when the grid has several, or its requests are
not adversarial), columns are methods, each with Recall@20 / NDCG@20 / MI-BF / MI-NG averaged
over seeds. With a ratio column comes the share of the training edges forgotten (the paper's
Table 5 axis): an adversarial ratio is a fraction of users, a random one a fraction of edges, a
users / items one a fraction of the users / items forgotten whole, and this column puts them on
the same scale (with the number of nodes for users / items requests, whose rows carry the kind
beside the ratio). Where the paper reports the same cell (docs/method.md §8: Retrain and
UnlearnRec only) its value and our relative difference are shown beside ours. A second table
gives what the paper does not: membership AUC, the distance to the retrained model's
forgotten-edge score distribution, time and peak memory.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from unlearnrec.experiments.columns import BY_KEY, COLUMNS, EXTRA, MAIN
from unlearnrec.experiments.report.paper import NOTE, PAPER_TABLE2
from unlearnrec.experiments.results import latest_records, read_results, request_of

MAIN_KEYS = tuple(c.key for c in MAIN)


@dataclass
class Cell:
    """One (dataset, backbone, ratio, method label) cell averaged over its seeds."""

    dataset: str
    backbone: str
    ratio: float
    label: str
    method: str
    request: str = "adversarial"
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def mean(self, key: str) -> float:
        v = [x for x in self.values.get(key, []) if x is not None and not math.isnan(x)]
        return sum(v) / len(v) if v else float("nan")

    def std(self, key: str) -> float:
        v = [x for x in self.values.get(key, []) if x is not None and not math.isnan(x)]
        if len(v) < 2:
            return float("nan")
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    @property
    def seeds(self) -> int:
        return len(self.values.get("recall@20", []))

    def paper(self, key: str) -> float | None:
        if self.request != "adversarial":  # Table 2 is the adversarial protocol
            return None
        p = PAPER_TABLE2.get((self.dataset, self.backbone, self.method))
        k = MAIN_KEYS.index(key) if key in MAIN_KEYS else len(MAIN_KEYS)
        return p[k] if p is not None and k < len(p) else None  # the paper has four Table 2 metrics


def table_cells(records: list[dict]) -> list[Cell]:
    """The cells of the tables: the ok records of each (dataset, backbone, ratio, label, request
    kind) with one value per seed (for the mean and the spread), in grid order (first appearance).

    Two cells under one label and seed (a method's config changed and the grid re-run into the
    same folder) are not averaged: the one recorded last stands for that seed.
    """
    ok, _ = latest_records(records)
    last_line = {r["cell"]: i for i, r in enumerate(records) if r.get("kind") == "cell" and "cell" in r}
    per_seed: dict[tuple, dict] = {}
    for r in sorted(ok, key=lambda r: last_line[r["cell"]]):
        kind, _ = request_of(r)
        key = (r["dataset"], r["backbone"], float(r.get("ratio", 1.0)), r.get("label") or r["method"], kind)
        per_seed[(key, r.get("seed"))] = r  # in order of recording: the latest wins
    order = {id(r): i for i, r in enumerate(ok)}
    cells: dict[tuple, Cell] = {}
    for r in sorted(per_seed.values(), key=lambda r: order[id(r)]):
        kind, req = request_of(r)
        key = (r["dataset"], r["backbone"], float(r.get("ratio", 1.0)), r.get("label") or r["method"], kind)
        c = cells.setdefault(key, Cell(*key[:4], method=r["method"], request=kind))
        for col in COLUMNS:
            v = col.value(r)
            if v is not None:
                c.values[col.key].append(float(v))
        for k, src in (
            ("forgotten_edges", "edges"),
            ("forgotten_fraction", "fraction_of_train"),
            ("forgotten_nodes", "nodes"),
        ):
            if isinstance(req.get(src), (int, float)):
                c.values[k].append(float(req[src]))
    return list(cells.values())


def _fmt(v: float | None, key: str) -> str:
    return BY_KEY[key].fmt(v)


def _diff_pct(ours: float, paper: float | None) -> float | None:
    if paper is None or math.isnan(ours) or paper == 0:
        return None
    return 100.0 * (ours - paper) / paper


NODE_KINDS = ("users", "items")


def _forgotten(cells: list[Cell]) -> str:
    """The share of the training edges forgotten (and how many; with the number of nodes for a
    users / items request), from the first cell that has it."""
    for c in cells:
        f, n, nodes = c.mean("forgotten_fraction"), c.mean("forgotten_edges"), c.mean("forgotten_nodes")
        if not math.isnan(f):
            if c.request in NODE_KINDS and not math.isnan(nodes):
                edges = f"{n:,.0f} edges, " if not math.isnan(n) else ""
                return f"{100 * f:.2f}% ({edges}{nodes:,.0f} {c.request})"
            return f"{100 * f:.2f}%" + (f" ({n:,.0f})" if not math.isnan(n) else "")
    return "–"


def _ratio_label(c: Cell) -> str:
    """The ratio column: the ratio, with the kind for users / items (``0.01 users``) so that their
    rows stay apart from a random grid's at the same ratio in one results file."""
    return f"{c.ratio} {c.request}" if c.request in NODE_KINDS else str(c.ratio)


def _rows(cells: list[Cell]) -> tuple[list[tuple], list[str], dict]:
    multi_ratio = len({c.ratio for c in cells}) > 1 or any(c.request != "adversarial" for c in cells)
    rows: list[tuple] = []
    labels: list[str] = []
    by: dict[tuple, Cell] = {}
    for c in cells:
        row = (c.dataset, c.backbone, _ratio_label(c)) if multi_ratio else (c.dataset, c.backbone)
        if row not in rows:
            rows.append(row)
        if c.label not in labels:
            labels.append(c.label)
        by[(row, c.label)] = c
    return rows, labels, by


def _value(c: Cell, k: str) -> str:
    """Ours (± std over seeds), with the paper's value and our relative difference where it has one."""
    ours = c.mean(k)
    s = _fmt(ours, k)
    if c.seeds > 1 and not math.isnan(c.std(k)):
        s += f" ± {_fmt(c.std(k), k)}"
    p = c.paper(k)
    d = _diff_pct(ours, p)
    if p is not None:
        s += f" (paper {_fmt(p, k)}, {d:+.1f}%)" if d is not None else f" (paper {_fmt(p, k)})"
    return s


# the wide layout (methods as column groups, as in the paper) up to this many methods; beyond it
# a row per method is the readable one
WIDE_MAX_METHODS = 4
LAYOUTS = ("auto", "wide", "long")


def _of_retrain(c: Cell, ref: Cell | None) -> str:
    """The cell's Recall@20 as a share of its row's Retrain ``ref`` (the issue's ">= 99%" test)."""
    if ref is None or math.isnan(ref.mean("recall@20")) or ref.mean("recall@20") == 0:
        return "–"
    return f"{100 * c.mean('recall@20') / ref.mean('recall@20'):.1f}%"


def to_markdown(records: list[dict], layout: str = "auto") -> str:
    """Table 2 (ours, and the paper's value with our relative difference where it has one), then
    the cost / beyond-the-paper table and any failed cells.

    ``layout``: ``wide`` is the paper's (a row per dataset x backbone, the methods side by side),
    ``long`` a row per method (with its Recall as a share of the row's Retrain), ``auto`` wide up
    to ``WIDE_MAX_METHODS`` methods and long beyond.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    cells = table_cells(records)
    _, errors = latest_records(records)
    if not cells and not errors:
        return "_no results yet_\n"
    rows, labels, by = _rows(cells)
    with_ratio = bool(rows) and len(rows[0]) == 3
    head = ["dataset", "backbone"] + (["ratio", "forgotten (% of train)"] if with_ratio else [])
    if layout == "auto":
        layout = "wide" if len(labels) <= WIDE_MAX_METHODS else "long"
    if layout == "wide":
        cols = [f"{lab} {c.short}" for lab in labels for c in MAIN]
    else:
        cols = ["method", *(c.short for c in MAIN), "Recall / Retrain"]
        retrain = {row: c for (row, _), c in by.items() if c.method == "retrain"}
    out = ["| " + " | ".join(head + cols) + " |", "|" + "---|" * (len(head) + len(cols))]
    for row in rows:
        vals = [str(x) for x in row]
        if with_ratio:
            vals.append(_forgotten([c for lab in labels if (c := by.get((row, lab))) is not None]))
        if layout == "wide":
            vals += [_value(c, k) if (c := by.get((row, lab))) else "" for lab in labels for k in MAIN_KEYS]
            out.append("| " + " | ".join(vals) + " |")
            continue
        for lab in labels:
            if (c := by.get((row, lab))) is not None:
                line = [*vals, lab, *(_value(c, k) for k in MAIN_KEYS), _of_retrain(c, retrain.get(row))]
                out.append("| " + " | ".join(line) + " |")
    out.append("")
    out.append(
        'Metrics averaged over seeds; "(paper X, ±d%)" is the paper\'s Table 2 value and our relative '
        "difference. Recall/NDCG @20 on the test split; MI-BF / MI-NG on the forgotten edges."
    )
    if with_ratio:
        kinds = {c.request for c in cells}
        meaning = {
            "adversarial": "an adversarial ratio is the fraction of users given one adversarial edge",
            "random": "a random ratio is the fraction of the clean training edges drawn at random",
            "users": "a users ratio is the fraction of users drawn at random and forgotten whole "
            "(every training edge; their rows erased)",
            "items": "an items ratio is the fraction of items drawn at random and forgotten whole "
            "(every training edge; their rows erased)",
        }
        out.append(
            "Ratio: "
            + "; ".join(meaning.get(k, k) for k in sorted(kinds))
            + ". Forgotten: the request's share of the training edges the model was trained on "
            "(and its size), the paper's Table 5 axis."
        )
    if any(c.dataset == "gowalla" for c in cells):
        out.append(f"Note: {NOTE}.")
    out += [
        "",
        "| dataset | backbone | "
        + ("ratio | " if with_ratio else "")
        + "method | seeds | "
        + " | ".join(c.markdown_title for c in EXTRA)
        + " |",
        "|---|---|---|---|" + "---|" * len(EXTRA) + ("---|" if with_ratio else ""),
    ]
    for c in cells:
        ratio = f"{c.ratio:g}" + (f" {c.request}" if c.request in NODE_KINDS else "")
        head_vals = [c.dataset, c.backbone] + ([ratio] if with_ratio else []) + [c.label]
        out.append(
            "| " + " | ".join(head_vals + [str(c.seeds)] + [col.fmt(c.mean(col.key)) for col in EXTRA]) + " |"
        )
    out.append("")
    out.append(
        "AUC: forgotten edges vs never-seen non-edges by score (0.5 = indistinguishable). Adversarial "
        "edges are chosen as implausible, so there the retrained model's AUC (the target) is well below 0.5. "
        "W1/KS: distance between the σ-scores of the forgotten edges under this model and under the "
        "retrained one (0 = the retrain's distribution)."
    )
    if errors:
        out += ["", "Failed cells (retried on the next run):", ""]
        out += [
            f"- {e['dataset']} / {e['backbone']} / {e.get('label') or e['method']} (seed {e.get('seed')}): "
            f"{e.get('error', '?')}"
            for e in errors
        ]
    return "\n".join(out) + "\n"


def to_csv(records: list[dict]) -> str:
    """One row per (dataset, backbone, ratio, method): ours (mean, std over seeds), the paper's
    value and the relative difference for the four Table 2 metrics, then the extra columns, then
    the request kind, the edges forgotten, their share of the training edges and (users / items
    requests) the number of nodes forgotten whole."""
    cells = table_cells(records)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["dataset", "backbone", "ratio", "method", "label", "seeds"]
    for k in MAIN_KEYS:
        header += [k, f"{k}_std", f"paper_{k}", f"diff_pct_{k}"]
    header += [*(c.key for c in EXTRA), "request", "forgotten_edges", "forgotten_fraction", "forgotten_nodes"]
    w.writerow(header)

    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"

    for c in cells:
        row = [c.dataset, c.backbone, c.ratio, c.method, c.label, c.seeds]
        for k in MAIN_KEYS:
            ours, p = c.mean(k), c.paper(k)
            row += [num(ours), num(c.std(k)), num(p), num(_diff_pct(ours, p))]
        row += [num(c.mean(col.key)) for col in EXTRA]
        row += [c.request, num(c.mean("forgotten_edges")), num(c.mean("forgotten_fraction"))]
        row.append(num(c.mean("forgotten_nodes")))
        w.writerow(row)
    return buf.getvalue()


def report(out_dir: str | os.PathLike, fmt: str = "markdown", layout: str = "auto") -> str:
    """The report of an experiment directory as ``markdown`` (in ``layout``) or ``csv`` text."""
    records = read_results(Path(out_dir))
    return to_csv(records) if fmt == "csv" else to_markdown(records, layout)
