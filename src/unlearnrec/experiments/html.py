# long file: being split into grid / store / cell / results / report (issue 23, in progress)
"""One self-contained HTML page of every table and figure of an experiment folder.

:func:`render_html` reads what the runner and the studies wrote under a results folder and
writes a single file that needs nothing else to be read: inline CSS, no scripts, figures as
base64 ``data:`` PNGs. Tables put the paper's numbers (METHOD.md §8) beside ours; where the
paper's values are not restated in METHOD.md (Tables 3 and 5) the page says so rather than
inventing them. The folder layout it understands::

    DIR/results.jsonl            one JSON object per finished runner cell
    DIR/*/results.jsonl          the same for sub-experiments (e.g. one folder per TOML)
    DIR/**/config.toml           experiment configs copied by the runner (shown verbatim)
    DIR/**/studies/*.json        study outputs written by :func:`~unlearnrec.experiments.results.write_study`

Figures need matplotlib (the ``plots`` extra); without it the tables are still rendered and
the page says which figures were left out.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnrec import __version__
from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments import studies
from unlearnrec.experiments.report import PAPER_TABLE2
from unlearnrec.experiments.results import (  # noqa: F401 (re-exported: the names of this module before issue 23)
    RESULTS as RESULTS_FILE,
)
from unlearnrec.experiments.results import (
    load_pretrain_curves,
    load_records,
    load_studies,
)
from unlearnrec.io.checkpoint import atomic_write_text

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the paper's numbers (METHOD.md §8)
#: Table 4 (seconds on one RTX 3090): method -> dataset -> seconds. Ours(k) adds about
#: PAPER_FINETUNE_EPOCH_SECONDS[dataset] per fine-tuning epoch (METHOD.md gives no exact Ours(k) row).
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "retrain": {"gowalla": 839, "ml-1m": 1208, "yelp2018": 3030},
    "gif": {"gowalla": 132, "ml-1m": 8.3, "yelp2018": 146},
    "ceu": {"gowalla": 39, "ml-1m": 6.9, "yelp2018": 52},
    "unlearnrec(0)": {"gowalla": 0.43, "ml-1m": 0.31, "yelp2018": 0.47},
}
PAPER_FINETUNE_EPOCH_SECONDS = {"gowalla": 3.4, "ml-1m": 7.0, "yelp2018": 20.0}
PAPER_NOTES = {
    "gowalla": "our gowalla is the larger LightGCN Gowalla, not the paper's: compare shapes, not values",
}
DISPLAY = {
    "ml-1m": "ML-1M",
    "ml-100k": "ML-100K",
    "gowalla": "Gowalla",
    "yelp2018": "Yelp2018",
    "lightgcn": "LightGCN",
    "sgl": "SGL",
    "simgcl": "SimGCL",
}
MAIN_METRICS = ("recall@20", "ndcg@20", "mi_bf", "mi_ng")
DIGITS = {"recall@20": 4, "ndcg@20": 4, "mi_bf": 2, "mi_ng": 2}
METRIC_TITLES = {
    "recall@20": "Recall@20",
    "ndcg@20": "NDCG@20",
    "mi_bf": "MI-BF",
    "mi_ng": "MI-NG",
    "auc": "MI AUC",
    "w1_to_ref": "W1 to retrain",
    "seconds": "seconds",
    "peak_memory_mb": "peak MiB",
}


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


# ================================================================== aggregation
def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _mean(vals: Iterable[Any]) -> float | None:
    xs = [float(v) for v in vals if _num(v)]
    return sum(xs) / len(xs) if xs else None


def aggregate(
    records: Iterable[Mapping[str, Any]], keys: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Mean of each metric over the records sharing ``keys`` (e.g. seeds), in first-seen order;
    ``n`` = number of records in the group."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    rows = []
    for g, rs in groups.items():
        row = dict(zip(keys, g, strict=True))
        row["n"] = len(rs)
        for m in metrics:
            row[m] = _mean(r.get(m) for r in rs)
        rows.append(row)
    return rows


def study_of(rec: Mapping[str, Any]) -> str:
    """Which table a record belongs to: ``ablation``, ``ratio``, ``efficiency`` or ``main``,
    from its ``study`` field, else its experiment name."""
    s = str(rec.get("study") or rec.get("experiment") or "").lower()
    for k in ("ablation", "ratio", "efficiency"):
        if k in s:
            return k
    return "main"


def _paper_method(rec: Mapping[str, Any]) -> str | None:
    """The paper's Table 2 column a row compares with: its registered method name."""
    m = str(rec.get("method") or rec.get("label") or "").lower()
    return m if m in ("retrain", "unlearnrec") else None


# ================================================================== HTML building blocks
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:.25em .55em;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}td.paper{color:#777;background:#fafafa}
td.good{color:#1a7f37}td.bad{color:#b42318}.note{color:#555;font-size:.9em}figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.88em;color:#555}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.82em}details{margin:.4em 0}
nav a{margin-right:1em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if not _num(v):
        return "—"
    if isinstance(v, int):
        return f"{v:,}"
    v = float(v)
    if digits == 0 or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if digits == 4 and abs(v) >= 10:
        return f"{v:.2f}"
    return f"{v:.{digits}f}"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], caption: str | None = None
) -> str:
    """``rows``: cells as (html, css class). The first column is left-aligned."""
    h = "".join(f'<th class="{"l" if k == 0 else ""}">{_e(c)}</th>' for k, c in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls}">{txt}</td>' for txt, cls in row) + "</tr>" for row in rows
    )
    cap = f"<caption class='note'>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str, caption: str | None = None) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def _diff_cell(ours: Any, paper: Any, higher_better: bool = True) -> tuple[str, str]:
    if not (_num(ours) and _num(paper)) or paper == 0:
        return "—", ""
    d = 100.0 * (float(ours) - float(paper)) / abs(float(paper))
    cls = "good" if (d >= 0) == higher_better else "bad"
    return f"{d:+.1f}%", cls


# ================================================================== sections
def _section_main(records: list[dict[str, Any]]) -> str:
    rows = aggregate(records, ("dataset", "backbone", "label", "method"), (*MAIN_METRICS, "seconds", "auc"))
    if not rows:
        return "<p class='note'>No main-grid cells in this folder.</p>"
    header = ["dataset", "backbone", "method", "n"]
    for m in MAIN_METRICS:
        header += [METRIC_TITLES[m], "paper", "Δ"]
    header += ["MI AUC", "seconds"]
    out_rows = []
    for r in rows:
        paper = PAPER_TABLE2.get((str(r["dataset"]), str(r["backbone"]), _paper_method(r)))
        cells = [
            (_e(DISPLAY.get(r["dataset"], r["dataset"])), "l"),
            (_e(DISPLAY.get(r["backbone"], r["backbone"])), "l"),
            (_e(r["label"]), "l"),
            (str(r["n"]), ""),
        ]
        for k, m in enumerate(MAIN_METRICS):
            p = paper[k] if paper else None
            cells += [(_fmt(r[m], DIGITS[m]), ""), (_fmt(p), "paper"), _diff_cell(r[m], p)]
        cells += [(_fmt(r["auc"], 3), ""), (_fmt(r["seconds"], 2), "")]
        out_rows.append(cells)
    notes = [
        f"{DISPLAY.get(d, d)}: {t}." for d, t in PAPER_NOTES.items() if any(r["dataset"] == d for r in rows)
    ]
    return (
        _table(
            header,
            out_rows,
            "Mean over seeds; paper = METHOD.md §8 (Table 2): 'Retrain' and 'UnlearnRec' "
            "rows; every unlearnrec(k) row is set against the paper's UnlearnRec.",
        )
        + "".join(f"<p class='note'>{_e(n)}</p>" for n in notes)
        + "<p class='note'>MI-BF, MI-NG &gt; 1 mean the forgotten edges became less likely than before "
        "and than "
        "random non-edges; MI AUC 0.5 means forgotten edges are indistinguishable from non-edges.</p>"
    )


def _section_ablation(records: list[dict[str, Any]]) -> str:
    if not records:
        return "<p class='note'>No ablation cells in this folder (run experiments/ablation-ml-1m.toml).</p>"
    rows = aggregate(records, ("dataset", "backbone", "label"), (*MAIN_METRICS, "seconds"))
    header = ["dataset", "backbone", "variant", "n", *(METRIC_TITLES[m] for m in MAIN_METRICS), "seconds"]
    body = [
        [
            (_e(DISPLAY.get(r["dataset"], r["dataset"])), "l"),
            (_e(DISPLAY.get(r["backbone"], r["backbone"])), "l"),
            (_e(r["label"]), "l"),
            (str(r["n"]), ""),
        ]
        + [(_fmt(r[m], DIGITS[m]), "") for m in MAIN_METRICS]
        + [(_fmt(r["seconds"], 2), "")]
        for r in rows
    ]
    return (
        _table(header, body)
        + "<p class='note'>Paper (Table 3): its values are not restated in METHOD.md, so no paper column is "
        "shown; the paper's conclusion is that removing any of L_u, L_p, L_c or fine-tuning hurts "
        "forgetting (MI-BF/MI-NG) or utility.</p>"
    )


def _with_node_kind(rec: dict[str, Any]) -> dict[str, Any]:
    req = rec.get("request")
    kind = req.get("kind") if isinstance(req, Mapping) else None
    return {**rec, "label": f"{rec['label']} ({kind})"} if kind in ("users", "items") else rec


def _section_ratio(records: list[dict[str, Any]], figures: bool) -> tuple[str, list[str]]:
    if not records:
        return "<p class='note'>No ratio cells in this folder (run experiments/ratio-ml-1m.toml).</p>", []
    # whole-node requests (users / items) share a folder and ratios with a random grid: keep
    # them apart in the table and the figure
    records = [_with_node_kind(r) for r in records]
    rows = aggregate(
        records,
        ("dataset", "backbone", "label", "ratio"),
        (*MAIN_METRICS, "seconds", "request_fraction", "request_edges"),
    )
    rows.sort(
        key=lambda r: (
            str(r["dataset"]),
            str(r["backbone"]),
            str(r["label"]),
            r["request_fraction"] if _num(r["request_fraction"]) else -1,
        )
    )
    header = [
        "dataset",
        "backbone",
        "method",
        "grid ratio",
        "edges forgotten",
        "% of train",
        "n",
        *(METRIC_TITLES[m] for m in MAIN_METRICS),
        "seconds",
    ]
    body = [
        [
            (_e(DISPLAY.get(r["dataset"], r["dataset"])), "l"),
            (_e(DISPLAY.get(r["backbone"], r["backbone"])), "l"),
            (_e(r["label"]), "l"),
            (_fmt(r["ratio"], 3), ""),
            (_fmt(r["request_edges"], 0), ""),
            (f"{100 * r['request_fraction']:.2f}%" if _num(r["request_fraction"]) else "—", ""),
            (str(r["n"]), ""),
        ]
        + [(_fmt(r[m], DIGITS[m]), "") for m in MAIN_METRICS]
        + [(_fmt(r["seconds"], 2), "")]
        for r in rows
    ]
    html_ = (
        _table(
            header,
            body,
            "grid ratio: the runner's request axis (adversarial: fraction of users given an "
            "adversarial edge; random: fraction of the training edges drawn at random; (users) / "
            "(items): fraction of the users / items forgotten whole); % of train: "
            "the request's share of the training edges, the paper's x-axis",
        )
        + "<p class='note'>Paper (Table 5): its values are not restated in METHOD.md, so no paper column is "
        "shown; the paper forgets 0.1% to 2% of the edges and reports stable Recall/NDCG with MI-BF and "
        "MI-NG above 1 throughout.</p>"
    )
    missing = []
    if figures:
        try:
            from unlearnrec.experiments.plots import plot_ratio

            for (ds, bb), rs in _groupby(rows, ("dataset", "backbone")).items():
                pts = [{**r, "ratio": r["request_fraction"]} for r in rs if _num(r["request_fraction"])]
                if not pts:
                    continue
                png = plot_ratio(
                    pts,
                    series_key="label",
                    title=f"Unlearning ratio — {DISPLAY.get(ds, ds)} {DISPLAY.get(bb, bb)}",
                )
                html_ += _img(
                    png,
                    f"ratio {ds} {bb}",
                    "Recall@20, NDCG@20, MI-BF and MI-NG against the percentage of training edges forgotten.",
                )
        except UnlearnRecError as e:
            missing.append(f"ratio figure: {e}")
    return html_, missing


def _section_efficiency(records: list[dict[str, Any]], figures: bool) -> tuple[str, list[str]]:
    rows = studies.efficiency_rows(
        records, keys=("dataset", "backbone", "label"), reference="retrain", method_key="label"
    )
    if not rows:
        return "<p class='note'>No timed cells in this folder.</p>", []
    header = [
        "dataset",
        "backbone",
        "method",
        "n",
        "train edges",
        "forget s",
        "± sd",
        "paper s",
        "speed-up vs retrain",
        "peak MiB",
        "prepare s (one-off)",
    ]
    body = []
    for r in rows:
        paper = PAPER_TABLE4.get(str(r["label"]).lower(), {}).get(str(r["dataset"]))
        body.append(
            [
                (_e(DISPLAY.get(r["dataset"], r["dataset"])), "l"),
                (_e(DISPLAY.get(r["backbone"], r["backbone"])), "l"),
                (_e(r["label"]), "l"),
                (str(r["n"]), ""),
                (_fmt(r["train_edges"]), ""),
                (_fmt(r["seconds"], 3), ""),
                (_fmt(r["seconds_std"], 3) if r["n"] > 1 else "—", ""),
                (_fmt(paper, 2), "paper"),
                (f"{r['speedup']:.1f}×" if _num(r["speedup"]) else "—", ""),
                (_fmt(r["peak_memory_mb"], 1), ""),
                (_fmt(r.get("prepare_seconds"), 2), ""),
            ]
        )
    ft = ", ".join(f"{DISPLAY.get(d, d)} {s:g} s" for d, s in PAPER_FINETUNE_EPOCH_SECONDS.items())
    html_ = (
        _table(header, body)
        + "<p class='note'>Paper (Table 4, one RTX 3090; METHOD.md §8): Retrain, GIF, CEU and Ours(0) rows; "
        "each "
        f"fine-tuning epoch of Ours(k) adds about {ft}. Peak memory: CUDA peak allocation on a GPU, else "
        "growth of the process's peak RSS during the forgetting step (0 when it stayed under an earlier "
        "peak).</p>"
    )
    exps = []
    for method in sorted({r["label"] for r in rows}):
        rs = [r for r in rows if r["label"] == method]
        b = studies.growth_exponent([r["train_edges"] for r in rs], [r["seconds"] for r in rs])
        if b is not None:
            exps.append(f"{method}: time ∝ size^{b:.2f}")
    if exps:
        html_ += f"<p class='note'>Growth with dataset size (log-log slope): {_e('; '.join(exps))}.</p>"
    missing = []
    if figures and any(_num(r.get("train_edges")) for r in rows):
        try:
            from unlearnrec.experiments.plots import plot_efficiency

            multi = len({r["backbone"] for r in rows}) > 1
            png = plot_efficiency(rows, series_key=("label", "backbone") if multi else "label")
            html_ += _img(
                png,
                "efficiency",
                "Forgetting time and peak memory against the number of training edges (Fig. 4).",
            )
        except UnlearnRecError as e:
            missing.append(f"efficiency figure: {e}")
    return html_, missing


def _section_studies(items: list[dict[str, Any]], figures: bool) -> tuple[str, list[str]]:
    if not items:
        return ("<p class='note'>No study outputs (studies/*.json) in this folder.</p>", [])
    parts, missing = [], []
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "scores": _study_scores,
        "case": _study_case,
        "pretrain": _study_pretrain,
        "shift": _study_shift,
    }
    titles = {
        "scores": "Score distributions (Fig. 2-3)",
        "pretrain": "Pre-training curve (Fig. 5)",
        "case": "Case study (Fig. 6)",
        "shift": "Similar-item score shift (Fig. 6, all forgotten edges)",
    }
    for kind in ("scores", "pretrain", "case", "shift"):
        its = [s for s in items if s["kind"] == kind]
        if not its:
            continue
        parts.append(f"<h3>{_e(titles[kind])}</h3>")
        for s in its:
            parts.append(f"<h4>{_e(s.get('title') or s.get('name'))}</h4>")
            try:
                parts.append(renderers[kind](s["data"], figures))
            except UnlearnRecError as e:
                missing.append(f"{kind} {s.get('name')}: {e}")
            except (KeyError, TypeError, ValueError) as e:
                missing.append(f"{kind} {s.get('name')}: malformed study data ({e!r})")
    return "".join(parts), missing


def _study_scores(d: dict[str, Any], figures: bool) -> str:
    sets = list(d["bins"])
    header = [
        "model",
        *[f"{s} {k}" for s in sets for k in ("mean", "var")],
        "forgotten W1 to ref",
        "forgotten KS to ref",
    ]
    body = []
    for name, per in d["models"].items():
        row = [(_e(name), "l")]
        for s in sets:
            st = per.get(s, {})
            row += [(_fmt(st.get("mean"), 3), ""), (_fmt(st.get("var"), 3), "")]
        f = per.get("forgotten", {})
        row += [(_fmt(f.get("w1_to_ref"), 3), ""), (_fmt(f.get("ks_to_ref"), 3), "")]
        body.append(row)
    out = _table(header, body, f"Raw scores ŷ; reference = {d.get('reference')}")
    if figures:
        from unlearnrec.experiments.plots import plot_score_distributions

        out += _img(
            plot_score_distributions(d),
            "score distributions",
            "Density of the scores of forgotten, retained-positive and negative edges per model; dashed: "
            "the retrained model's forgotten edges (the target).",
        )
    return out


def _study_pretrain(d: Any, figures: bool) -> str:
    hist = d["history"] if isinstance(d, dict) else d
    last = hist[-1] if hist else {}
    from unlearnrec.experiments.plots import loss_terms  # matplotlib is imported only to draw

    keys = [k for k in loss_terms(hist) if _num(last.get(k))]
    out = _table(
        ["epochs", *keys],
        [[(str(len(hist)), "l")] + [(_fmt(last[k]), "") for k in keys]],
        "Last pre-training epoch",
    )
    if figures:
        from unlearnrec.experiments.plots import plot_pretrain_curve

        out += _img(plot_pretrain_curve(hist), "pre-training curve", "Loss terms per pre-training epoch.")
    return out


def _study_case(d: dict[str, Any], figures: bool) -> str:
    names = list(d["scores"])
    header = ["item", "cosine", *names]
    body = [
        [(f"{d['item']} (forgotten)", "l"), ("—", "")]
        + [(_fmt(d["scores"][n]["forgotten"], 3), "") for n in names]
    ]
    for k, j in enumerate(d["similar"]):
        body.append(
            [(str(j), "l"), (_fmt(d["similarity"][k], 3), "")]
            + [(_fmt(d["scores"][n]["similar"][k], 3), "") for n in names]
        )
    body.append(
        [("mean Δ of similar items vs original", "l"), ("", "")]
        + [(_fmt(d["delta"].get(n), 3), "") for n in names]
    )
    out = _table(
        header, body, f"User {d['user']}: scores of the forgotten item and its {d['k']} most similar items"
    )
    if figures:
        from unlearnrec.experiments.plots import plot_case_study

        out += _img(plot_case_study(d), "case study")
    return out


def _study_shift(d: dict[str, Any], figures: bool) -> str:
    header = ["model", "forgotten mean ŷ", "Δ", "similar-items mean ŷ", "Δ"]
    body = [
        [
            (_e(n), "l"),
            (_fmt(v.get("forgotten_mean"), 3), ""),
            (_fmt(v.get("forgotten_delta"), 3), ""),
            (_fmt(v.get("similar_mean"), 3), ""),
            (_fmt(v.get("similar_delta"), 3), ""),
        ]
        for n, v in d.items()
    ]
    return _table(
        header,
        body,
        "Δ against the original model; similar items = the k nearest neighbours of each "
        "forgotten item (cosine, original embeddings), scored for the forgetting user",
    )


def _groupby(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _section_provenance(root: Path, records: list[dict[str, Any]]) -> str:
    parts = []
    versions: dict[str, set[str]] = {}
    for r in records:
        v = r.get("versions")
        if isinstance(v, Mapping):
            for k, x in v.items():
                versions.setdefault(str(k), set()).add(str(x))
    here = {"unlearnrec (report)": __version__, "python (report)": platform.python_version()}
    rows = [[(_e(k), "l"), (_e(", ".join(sorted(v))), "l")] for k, v in sorted(versions.items())]
    rows += [[(_e(k), "l"), (_e(v), "l")] for k, v in here.items()]
    parts.append(_table(["component", "version(s)"], rows))
    tomls = sorted(p for p in root.rglob("*.toml") if "studies" not in p.parts)
    for p in tomls:
        try:
            text = p.read_text()
        except OSError:
            continue
        parts.append(f"<details><summary>{_e(p.relative_to(root))}</summary><pre>{_e(text)}</pre></details>")
    configs: dict[str, Any] = {}
    for r in records:
        c = r.get("method_config")
        if isinstance(c, Mapping):
            configs.setdefault(f"{r.get('experiment')}: {r.get('label')} ({r.get('method')})", c)
    if configs:
        body = "".join(
            f"<p>{_e(k)}</p><pre>{_e(json.dumps(c, indent=1, sort_keys=True, default=str))}</pre>"
            for k, c in sorted(configs.items())
        )
        parts.append(
            f"<details><summary>{len(configs)} method configuration(s) recorded in the results"
            f"</summary>{body}</details>"
        )
    commands = sorted({str(r["command"]) for r in records if r.get("command")})
    if commands:
        parts.append("<p>Commands:</p><pre>" + _e("\n".join(commands)) + "</pre>")
    return "".join(parts)


# ================================================================== the page
def render_html(
    results_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    figures: bool = True,
) -> str:
    """Render every table and figure of ``results_dir`` as one self-contained HTML page.

    ``results_dir``: a runner output folder (``results.jsonl``, possibly in sub-folders, plus
    optional ``studies/*.json`` from :func:`write_study` and copied ``*.toml`` configs).
    ``out_path``: where to write the page (atomically); None writes nothing. ``title``: the
    page heading (default: the folder name). ``figures``: draw figures (needs matplotlib; if it
    is missing the page lists the figures left out instead of failing).

    Sections: Table 2 (ours beside the paper's numbers and the relative difference), ablation
    (Table 3), unlearning ratio (Table 5), efficiency (Table 4, Fig. 4), studies (Fig. 2-3, 5,
    6), and provenance (versions, configs, commands). Cells are routed to a section by
    :func:`study_of`. Returns the HTML text.
    """
    root = Path(results_dir)
    records = load_records(root)
    items = load_studies(root) + load_pretrain_curves(root)
    if not records and not items:
        raise UnlearnRecError(f"{root}: no {RESULTS_FILE} and no studies/*.json to report")
    if figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            figures = False
            log.warning("matplotlib is not installed: the report will have no figures")
    by_study: dict[str, list[dict[str, Any]]] = {"main": [], "ablation": [], "ratio": [], "efficiency": []}
    for r in records:
        by_study[study_of(r)].append(r)
    # an ablation run sharing --out with a Table 2 grid shares its Retrain cell, which is then
    # recorded under the grid's experiment: borrow it as the ablation's reference row
    abl_keys = {(r.get("dataset"), r.get("backbone")) for r in by_study["ablation"]}
    has_ref = {
        (r.get("dataset"), r.get("backbone")) for r in by_study["ablation"] if r.get("method") == "retrain"
    }
    by_study["ablation"] += [
        r
        for r in by_study["main"]
        if r.get("method") == "retrain" and (r.get("dataset"), r.get("backbone")) in abl_keys - has_ref
    ]
    missing: list[str] = (
        [] if figures else ["all figures: matplotlib is not installed (pip install 'unlearnrec[plots]')"]
    )
    ratio_html, m1 = _section_ratio(by_study["ratio"], figures)
    # Table 4 times the main grids; the ratio sweep forgets requests of other sizes and the
    # ablation's variants would crowd the table
    eff_html, m2 = _section_efficiency(by_study["main"] + by_study["efficiency"], figures)
    studies_html, m3 = _section_studies(items, figures)
    missing += m1 + m2 + m3
    heading = title or f"unlearnrec report — {root.resolve().name}"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("main", "Forgetting under the adversarial protocol (Table 2)", _section_main(by_study["main"])),
        ("ablation", "Ablation (Table 3)", _section_ablation(by_study["ablation"])),
        ("ratio", "Unlearning ratio (Table 5)", ratio_html),
        ("efficiency", "Efficiency (Table 4, Fig. 4)", eff_html),
        ("studies", "Studies (Fig. 2-3, 5, 6)", studies_html),
        ("provenance", "Configs and versions", _section_provenance(root, records)),
    ]
    nav = "".join(f'<a href="#{sid}">{_e(t.split(" (")[0])}</a>' for sid, t, _ in sections)
    body = "".join(f'<h2 id="{sid}">{_e(t)}</h2>{h}' for sid, t, h in sections)
    warn = ("<p class='note'>Left out: " + _e("; ".join(missing)) + "</p>") if missing else ""
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(heading)}</h1><p class='note'>{len(records)} result cells, {len(items)} study outputs; "
        f"generated {now} by unlearnrec {__version__}. Paper: "
        "<i>Pre-training for Recommendation Unlearning</i> "
        f"(SIGIR 2025).</p><nav>{nav}</nav>{warn}{body}</body></html>\n"
    )
    if out_path is not None:
        atomic_write_text(out_path, page)
        os.chmod(out_path, 0o644)  # a page to share; the temporary file was private
    return page
