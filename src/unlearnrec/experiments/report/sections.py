"""The sections of the HTML page built from result records: Table 2, the ablation (Table 3), the
unlearning ratio (Table 5), efficiency (Table 4, Fig. 4), and provenance. Each returns blocks
(:mod:`~unlearnrec.experiments.report.blocks`), one table per dataset and backbone."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unlearnrec import __version__
from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments import studies
from unlearnrec.experiments.columns import BY_KEY, COLUMNS, MAIN
from unlearnrec.experiments.report.blocks import (
    Block,
    Details,
    Heading,
    Note,
    Pre,
    Table,
    diff_cell,
    display_name,
    figure,
    fmt,
    groupby,
    per_backbone,
)
from unlearnrec.experiments.report.paper import (
    PAPER_FINETUNE_EPOCH_SECONDS,
    PAPER_NOTES,
    PAPER_TABLE2,
    PAPER_TABLE4,
    paper_method,
)
from unlearnrec.experiments.results import aggregate, is_number

HTML_EXTRA = tuple(c for c in COLUMNS if c.html)


def section_main(records: list[dict[str, Any]]) -> list[Block]:
    rows = aggregate(
        records,
        ("dataset", "backbone", "label", "method"),
        (*(c.key for c in MAIN), *(c.key for c in HTML_EXTRA)),
    )
    if not rows:
        return [Note("No main-grid cells in this folder.")]
    header = ["dataset", "backbone", "method", "n"]
    for c in MAIN:
        header += [c.title, "paper", "Δ"]
    header += [c.title for c in HTML_EXTRA]

    def table(rs: list[dict[str, Any]]) -> Table:
        body = []
        for r in rs:
            paper = PAPER_TABLE2.get((str(r["dataset"]), str(r["backbone"]), paper_method(r)))
            cells = [
                (display_name(r["dataset"]), "l"),
                (display_name(r["backbone"]), "l"),
                (str(r["label"]), "l"),
            ]
            cells.append((str(r["n"]), ""))
            for k, c in enumerate(MAIN):
                p = paper[k] if paper and k < len(paper) else None
                cells += [(fmt(r[c.key], c.html_digits), ""), (fmt(p), "paper"), diff_cell(r[c.key], p)]
            cells += [(fmt(r[c.key], c.html_digits), "") for c in HTML_EXTRA]
            body.append(cells)
        return Table(
            header,
            body,
            "Mean over seeds; paper = docs/method.md §8 (Table 2): 'Retrain' and 'UnlearnRec' "
            "rows; every unlearnrec(k) row is set against the paper's UnlearnRec.",
        )

    blocks = per_backbone(rows, table)
    blocks += [
        Note(f"{display_name(d)}: {t}.")
        for d, t in PAPER_NOTES.items()
        if any(r["dataset"] == d for r in rows)
    ]
    blocks.append(
        Note(
            "MI-BF, MI-NG > 1 mean the forgotten edges became less likely than before and than "
            "random non-edges; MI AUC 0.5 means forgotten edges are indistinguishable from non-edges."
        )
    )
    return blocks


def section_ablation(records: list[dict[str, Any]]) -> list[Block]:
    if not records:
        return [Note("No ablation cells in this folder (run experiments/ablation-ml-1m.toml).")]
    rows = aggregate(records, ("dataset", "backbone", "label"), (*(c.key for c in MAIN), "seconds"))
    header = ["dataset", "backbone", "variant", "n", *(c.title for c in MAIN), "seconds"]

    def table(rs: list[dict[str, Any]]) -> Table:
        body = [
            [
                (display_name(r["dataset"]), "l"),
                (display_name(r["backbone"]), "l"),
                (str(r["label"]), "l"),
                (str(r["n"]), ""),
            ]
            + [(fmt(r[c.key], c.html_digits), "") for c in MAIN]
            + [(fmt(r["seconds"], 2), "")]
            for r in rs
        ]
        return Table(header, body)

    return per_backbone(rows, table) + [
        Note(
            "Paper (Table 3): its values are not restated in docs/method.md, so no paper column is shown; "
            "the paper's conclusion is that removing any of L_u, L_p, L_c or fine-tuning hurts forgetting "
            "(MI-BF/MI-NG) or utility."
        )
    ]


def _with_node_kind(rec: dict[str, Any]) -> dict[str, Any]:
    req = rec.get("request")
    kind = req.get("kind") if isinstance(req, Mapping) else None
    return {**rec, "label": f"{rec['label']} ({kind})"} if kind in ("users", "items") else rec


def section_ratio(records: list[dict[str, Any]], figures: bool) -> tuple[list[Block], list[str]]:
    if not records:
        return [Note("No ratio cells in this folder (run experiments/ratio-ml-1m.toml).")], []
    # whole-node requests (users / items) share a folder and ratios with a random grid: keep
    # them apart in the table and the figure
    records = [_with_node_kind(r) for r in records]
    rows = aggregate(
        records,
        ("dataset", "backbone", "label", "ratio"),
        (*(c.key for c in MAIN), "seconds", "request_fraction", "request_edges"),
    )
    rows.sort(
        key=lambda r: (
            str(r["dataset"]),
            str(r["backbone"]),
            str(r["label"]),
            r["request_fraction"] if is_number(r["request_fraction"]) else -1,
        )
    )
    header = ["dataset", "backbone", "method", "grid ratio", "edges forgotten", "% of train", "n"]
    header += [*(c.title for c in MAIN), "seconds"]
    caption = (
        "grid ratio: the runner's request axis (adversarial: fraction of users given an adversarial edge; "
        "random: fraction of the training edges drawn at random; (users) / (items): fraction of the users / "
        "items forgotten whole); % of train: the request's share of the training edges, the paper's x-axis"
    )
    missing: list[str] = []

    def table(rs: list[dict[str, Any]]) -> Table:
        body = [
            [
                (display_name(r["dataset"]), "l"),
                (display_name(r["backbone"]), "l"),
                (str(r["label"]), "l"),
                (fmt(r["ratio"], 3), ""),
                (fmt(r["request_edges"], 0), ""),
                (f"{100 * r['request_fraction']:.2f}%" if is_number(r["request_fraction"]) else "—", ""),
                (str(r["n"]), ""),
            ]
            + [(fmt(r[c.key], c.html_digits), "") for c in MAIN]
            + [(fmt(r["seconds"], 2), "")]
            for r in rs
        ]
        return Table(header, body, caption)

    blocks: list[Block] = []
    for (ds, bb), rs in groupby(rows, ("dataset", "backbone")).items():
        blocks += [Heading(f"{display_name(ds)} · {display_name(bb)}"), table(list(rs))]
        pts = [{**r, "ratio": r["request_fraction"]} for r in rs if is_number(r["request_fraction"])]
        if figures and pts:
            try:
                from unlearnrec.experiments.report.plots import plot_ratio

                png = plot_ratio(
                    pts, series_key="label", title=f"Unlearning ratio — {display_name(ds)} {display_name(bb)}"
                )
                blocks.append(
                    figure(
                        png,
                        f"ratio {ds} {bb}",
                        "Recall@20, NDCG@20, MI-BF and MI-NG against the percentage of training edges "
                        "forgotten.",
                    )
                )
            except UnlearnRecError as e:
                missing.append(f"ratio figure: {e}")
    blocks.append(
        Note(
            "Paper (Table 5): its values are not restated in docs/method.md, so no paper column is shown; "
            "the paper forgets 0.1% to 2% of the edges and reports stable Recall/NDCG with MI-BF and "
            "MI-NG above 1 throughout."
        )
    )
    return blocks, missing


def section_efficiency(records: list[dict[str, Any]], figures: bool) -> tuple[list[Block], list[str]]:
    rows = studies.efficiency_rows(
        records, keys=("dataset", "backbone", "label"), reference="retrain", method_key="label"
    )
    if not rows:
        return [Note("No timed cells in this folder.")], []
    header = ["dataset", "backbone", "method", "n", "train edges", "forget s", "± sd", "paper s"]
    header += ["speed-up vs retrain", BY_KEY["peak_memory_mb"].title, "prepare s (one-off)"]

    def table(rs: list[dict[str, Any]]) -> Table:
        body = []
        for r in rs:
            paper = PAPER_TABLE4.get(str(r["label"]).lower(), {}).get(str(r["dataset"]))
            body.append(
                [
                    (display_name(r["dataset"]), "l"),
                    (display_name(r["backbone"]), "l"),
                    (str(r["label"]), "l"),
                    (str(r["n"]), ""),
                    (fmt(r["train_edges"]), ""),
                    (fmt(r["seconds"], 3), ""),
                    (fmt(r["seconds_std"], 3) if r["n"] > 1 else "—", ""),
                    (fmt(paper, 2), "paper"),
                    (f"{r['speedup']:.1f}×" if is_number(r["speedup"]) else "—", ""),
                    (fmt(r["peak_memory_mb"], 1), ""),
                    (fmt(r.get("prepare_seconds"), 2), ""),
                ]
            )
        return Table(header, body)

    ft = ", ".join(f"{display_name(d)} {s:g} s" for d, s in PAPER_FINETUNE_EPOCH_SECONDS.items())
    blocks = per_backbone(rows, table)
    blocks.append(
        Note(
            "Paper (Table 4, one RTX 3090; docs/method.md §8): Retrain, GIF, CEU and Ours(0) rows; each "
            f"fine-tuning epoch of Ours(k) adds about {ft}. Peak memory (peak MiB): CUDA peak allocation "
            "on a GPU, else the growth of the process's resident memory during the forgetting step. In a "
            "grid's long-running process that figure depends on what the process already holds and on the"
            " order of the cells (memory an earlier step left mapped is reused unseen): the committed "
            "ML-1M grids record 0-0.3 MiB for most UnlearnRec(0) cells and up to 323 MiB for others. "
            "Compare methods by a fresh-process measurement instead: UnlearnRec(0) on ML-1M needs +72 "
            "MiB, most of it the residual graph (benchmarks/bench_forget.py; docs/RESULTS.md, 'Memory of "
            "forgetting')."
        )
    )
    exps = []
    for method in sorted({r["label"] for r in rows}):
        rs = [r for r in rows if r["label"] == method]
        b = studies.growth_exponent([r["train_edges"] for r in rs], [r["seconds"] for r in rs])
        if b is not None:
            exps.append(f"{method}: time ∝ size^{b:.2f}")
    if exps:
        blocks.append(Note(f"Growth with dataset size (log-log slope): {'; '.join(exps)}."))
    missing = []
    if figures and any(is_number(r.get("train_edges")) for r in rows):
        try:
            from unlearnrec.experiments.report.plots import plot_efficiency

            multi = len({r["backbone"] for r in rows}) > 1
            png = plot_efficiency(rows, series_key=("label", "backbone") if multi else "label")
            blocks.append(
                figure(
                    png,
                    "efficiency",
                    "Forgetting time and peak memory against the number of training edges (Fig. 4).",
                )
            )
        except UnlearnRecError as e:
            missing.append(f"efficiency figure: {e}")
    return blocks, missing


def section_provenance(root: Path, records: list[dict[str, Any]]) -> list[Block]:
    versions: dict[str, set[str]] = {}
    for r in records:
        v = r.get("versions")
        if isinstance(v, Mapping):
            for k, x in v.items():
                versions.setdefault(str(k), set()).add(str(x))
    here = {"unlearnrec (report)": __version__, "python (report)": platform.python_version()}
    rows = [[(k, "l"), (", ".join(sorted(v)), "l")] for k, v in sorted(versions.items())]
    rows += [[(k, "l"), (v, "l")] for k, v in here.items()]
    blocks: list[Block] = [Table(["component", "version(s)"], rows)]
    for p in sorted(p for p in root.rglob("*.toml") if "studies" not in p.parts):
        try:
            blocks.append(Details(str(p.relative_to(root)), [(None, p.read_text())]))
        except OSError:
            continue
    configs: dict[str, Any] = {}
    for r in records:
        c = r.get("method_config")
        if isinstance(c, Mapping):
            configs.setdefault(f"{r.get('experiment')}: {r.get('label')} ({r.get('method')})", c)
    if configs:
        blocks.append(
            Details(
                f"{len(configs)} method configuration(s) recorded in the results",
                [
                    (k, json.dumps(c, indent=1, sort_keys=True, default=str))
                    for k, c in sorted(configs.items())
                ],
            )
        )
    commands = sorted({str(r["command"]) for r in records if r.get("command")})
    if commands:
        blocks.append(Pre("\n".join(commands), "Commands:"))
    return blocks
