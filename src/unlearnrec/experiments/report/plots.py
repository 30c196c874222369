"""Figures of the paper's studies (matplotlib, the ``plots`` extra; imported lazily).

Every ``plot_*`` function takes the JSON-friendly data of :mod:`unlearnrec.experiments.studies`
(or result rows) and returns PNG bytes; with ``out=`` it also writes them atomically (temporary
file + rename). Drawing uses matplotlib's object API on an Agg canvas, so no global pyplot state
or backend is touched and nothing needs a display.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnrec.errors import UnlearnRecError

SET_COLORS = {"forgotten": "#d62728", "retained": "#2ca02c", "negative": "#1f77b4"}
SET_LABELS = {"forgotten": "forgotten (E_Δ)", "retained": "retained positive", "negative": "negative"}
DPI = 80  # the committed reports embed ~11 figures and should stay under 1 MB (96 dpi: 1.19 MB)
# type sizes in points: at DPI 80 a point is 1.11 px, so the smallest text is 10 px high in the PNG, which
# the page shows at its own size (every figure is narrower than the page: MAX_WIDTH_IN)
FONT = 9.0  # ticks, legends, axis labels
TITLE = 10.5
SUPTITLE = 11.5
MAX_WIDTH_IN = 14.0  # 1,120 px: the report's column is 1,200 px less its margins
# ten colours (tab10) and eleven markers: series k gets colour k mod 10 and marker k mod 11, so no two of
# the first 110 series share both, and the first ten differ in colour AND marker
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")


def series_style(k: int) -> dict[str, Any]:
    """Colour, marker and line style of the k-th series of a line plot (distinct pairs for k < 110;
    dashed from the eleventh series on, so repeated colours are told apart at a glance too)."""
    return {
        "color": COLORS[k % len(COLORS)],
        "marker": MARKERS[k % len(MARKERS)],
        "linestyle": "-" if k < len(COLORS) else "--",
    }


def _legend_below(fig, handles, labels, ncol: int | None = None) -> None:
    """A figure legend under the axes (never over the data); ``bbox_inches="tight"`` keeps it in the PNG."""
    if not handles:
        return
    ncol = ncol or min(4, len(handles))
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=ncol,
        fontsize=FONT,
        frameon=False,
    )


def _figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas; a clear error if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise UnlearnRecError("plots need matplotlib: pip install 'unlearnrec[plots]'") from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, out: str | os.PathLike | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    data = buf.getvalue()
    if out is not None:
        write_atomic(out, data)
    return data


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling file and an atomic rename."""
    from unlearnrec.io.checkpoint import atomic_write_bytes

    return atomic_write_bytes(path, data)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _model_order(names: list[str]) -> list[str]:
    """The model before unlearning first, then retraining (the target), then the methods."""
    return sorted(names, key=lambda n: (n != "original", n.lower() != "retrain"))


def _model_color(name: str, k: int) -> str:
    if name == "original":
        return "#7f7f7f"
    if name.lower() == "retrain":
        return "#2ca02c"
    return ("#1f77b4", "#ff7f0e", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")[k % 8]


def _model_hatch(k: int) -> str:
    """A hatch for the k-th bar series beyond the eight colours (so the ninth differs from the first)."""
    return ("", "//", "..", "xx")[(k // 8) % 4]


def _label(row: Mapping[str, Any], keys: str | Sequence[str]) -> str:
    """A series name from one key or several (joined by ' / ')."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    return " / ".join(str(row.get(k)) for k in keys)


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


# ---------------------------------------------------------------- score distributions (Fig. 2-3)
def plot_score_distributions(
    summary: Mapping[str, Any], out: str | os.PathLike | None = None, title: str | None = None
) -> bytes:
    """One panel per model (original first, then the reference, then the methods): density of
    the raw scores ŷ of the forgotten, retained-positive and negative edges, from
    :func:`~unlearnrec.experiments.studies.summarize_distributions`. The reference's (retrain's)
    forgotten-edge density is drawn dashed in every other panel: the shape to match.
    """
    models = list(summary.get("models", {}))
    if not models:
        raise UnlearnRecError("score summary has no models to plot")
    ref = summary.get("reference")
    order = [m for m in ("original", ref) if m in models] + [
        m for m in _model_order(models) if m not in ("original", ref)
    ]
    bins = summary["bins"]
    rows, cols = _grid(len(order))
    fig = _figure(min(3.4 * cols, MAX_WIDTH_IN), 2.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=False)
    for k, name in enumerate(order):
        ax = axes[k // cols][k % cols]
        for s, st in summary["models"][name].items():
            if not st.get("n"):
                continue
            edges = bins[s]
            ax.stairs(
                st["hist"],
                edges,
                color=SET_COLORS.get(s, "gray"),
                label=SET_LABELS.get(s, s),
                fill=True,
                alpha=0.25,
            )
            ax.stairs(st["hist"], edges, color=SET_COLORS.get(s, "gray"), linewidth=1.2)
        if ref and name != ref and "forgotten" in summary["models"][ref]:
            r = summary["models"][ref]["forgotten"]
            if r.get("n"):
                ax.stairs(
                    r["hist"],
                    bins["forgotten"],
                    color="black",
                    linestyle="--",
                    linewidth=1.0,
                    label=f"{ref}: forgotten",
                )
        f = summary["models"][name].get("forgotten", {})
        sub = ""
        if f.get("w1_to_ref") is not None and name != ref:
            sub = f"\nW1 to {ref} (forgotten) = {f['w1_to_ref']:.3f}"
        ax.set_title(f"{name}{sub}", fontsize=TITLE)
        ax.set_xlabel("score ŷ", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
    for k in range(len(order), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for k in range(1, len(order)):
        h, lab = axes[k // cols][k % cols].get_legend_handles_labels()
        for hh, ll in zip(h, lab, strict=True):
            seen.setdefault(ll, hh)
    fig.suptitle(title or "Score distributions before and after unlearning", fontsize=SUPTITLE)
    fig.tight_layout()
    _legend_below(fig, list(seen.values()), list(seen.keys()))
    return _finish(fig, out)


# ---------------------------------------------------------------- pre-training curve (Fig. 5)
NOT_LOSS_TERMS = frozenset({"epoch", "request_edges", "steps", "seconds", "lr", "resumed"})


def loss_terms(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric loss terms of a pre-training history, ``total`` then ``model`` first, then in
    order of appearance; bookkeeping keys (:data:`NOT_LOSS_TERMS`) are left out."""
    terms: list[str] = []
    for h in history:
        for key, v in h.items():
            if key not in NOT_LOSS_TERMS and key not in terms and _num(v):
                terms.append(key)
    return sorted(terms, key=lambda t: (t != "total", t != "model"))  # stable: the rest keep their order


def plot_pretrain_curve(
    history: Sequence[Mapping[str, Any]],
    out: str | os.PathLike | None = None,
    title: str | None = None,
    terms: Sequence[str] | None = None,
) -> bytes:
    """Pre-training loss terms per epoch (Fig. 5). ``history``: one dict per epoch (as returned
    by UnlearnRec's ``pretrain``) with an optional ``epoch`` and numeric loss terms (``total``,
    ``model``, ``unlearn``, ``preserve``, ``contrast``, ...); bookkeeping keys (request size,
    steps, seconds) are skipped unless named in ``terms``. Each term gets its own panel, as their
    scales differ by orders of magnitude."""
    if not history:
        raise UnlearnRecError("empty pre-training history: nothing to plot")
    epochs = [int(h.get("epoch", k + 1)) for k, h in enumerate(history)]
    if terms is None:
        terms = loss_terms(history)
    terms = list(terms)
    if not terms:
        raise UnlearnRecError("pre-training history has no numeric terms")
    from matplotlib.ticker import MaxNLocator

    rows, cols = _grid(len(terms), 3)
    fig = _figure(3.4 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, term in enumerate(terms):
        ax = axes[k // cols][k % cols]
        pts = [(e, float(h[term])) for e, h in zip(epochs, history, strict=True) if _num(h.get(term))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, linewidth=1.2)
        ax.set_title(term, fontsize=TITLE)
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    for k in range(len(terms), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(title or "Influence Encoder pre-training", fontsize=SUPTITLE)
    fig.tight_layout()
    return _finish(fig, out)


# ---------------------------------------------------------------- case study (Fig. 6)
def plot_case_study(
    case: Mapping[str, Any],
    out: str | os.PathLike | None = None,
    title: str | None = None,
    item_names: Mapping[int, str] | None = None,
) -> bytes:
    """Grouped bars of the user's score for the forgotten item and its k most similar items under
    each model (original, unlearned, retrained), from :func:`~unlearnrec.experiments.studies.case_study`."""
    scores = case.get("scores", {})
    if not scores:
        raise UnlearnRecError("case study has no scores to plot")
    names = _model_order(list(scores))
    ids = [case["item"], *case["similar"]]

    def label(j: int, k: int) -> str:
        base = (item_names or {}).get(j, f"item {j}")
        return f"{base}\n(forgotten)" if k == 0 else f"{base}\ncos {case['similarity'][k - 1]:.2f}"

    fig = _figure(min(12.0, max(6.0, 0.3 * len(ids) * max(1, len(names)) + 1.5)), 4.2)
    ax = fig.subplots()
    width = 0.8 / len(names)
    for m, name in enumerate(names):
        vals = [scores[name]["forgotten"], *scores[name]["similar"]]
        xs = [x + (m - (len(names) - 1) / 2) * width for x in range(len(ids))]
        ax.bar(xs, vals, width=width, label=name, color=_model_color(name, m), hatch=_model_hatch(m))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0.5, color="gray", linewidth=0.6, linestyle=":")
    ax.set_xticks(range(len(ids)))
    ax.set_xticklabels([label(j, k) for k, j in enumerate(ids)], fontsize=FONT, rotation=45, ha="right")
    ax.set_ylabel(f"score ŷ for user {case['user']}", fontsize=FONT)
    ax.tick_params(axis="y", labelsize=FONT)
    ax.set_title(
        title or f"User {case['user']} forgets item {case['item']}: its {case['k']} most similar items",
        fontsize=TITLE,
    )
    fig.tight_layout()
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=min(5, len(names)),
        fontsize=FONT,
        frameon=False,
    )
    return _finish(fig, out)


# ---------------------------------------------------------------- efficiency (Table 4, Fig. 4)
def plot_efficiency(
    rows: Sequence[Mapping[str, Any]],
    out: str | os.PathLike | None = None,
    size_key: str = "train_edges",
    series_key: str | Sequence[str] = "method",
    title: str | None = None,
) -> bytes:
    """Forgetting time and peak memory against dataset size, one line per method (log-log), from
    :func:`~unlearnrec.experiments.studies.efficiency_rows`. Rows without a size are skipped."""
    pts = [r for r in rows if isinstance(r.get(size_key), (int, float)) and r.get("seconds") is not None]
    if not pts:
        raise UnlearnRecError(f"no efficiency rows with '{size_key}' and 'seconds' to plot")
    series: dict[str, list[Mapping[str, Any]]] = {}
    for r in pts:
        series.setdefault(_label(r, series_key), []).append(r)
    fig = _figure(10.0, 3.8)
    ax_t, ax_m = fig.subplots(1, 2)
    for k, (name, rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r[size_key])
        xs = [r[size_key] for r in rs]
        ax_t.plot(xs, [max(r["seconds"], 1e-4) for r in rs], label=name, **series_style(k))
        mem = [(r[size_key], r["peak_memory_mb"]) for r in rs if r.get("peak_memory_mb") is not None]
        if mem:
            ax_m.plot([p[0] for p in mem], [max(p[1], 1e-2) for p in mem], label=name, **series_style(k))
    for ax, ylab in ((ax_t, "forgetting time (s)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training edges", fontsize=FONT)
        ax.set_ylabel(ylab, fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title or "Cost of forgetting against dataset size", fontsize=SUPTITLE)
    fig.tight_layout()
    _legend_below(fig, *ax_t.get_legend_handles_labels(), ncol=3)
    return _finish(fig, out)


# ---------------------------------------------------------------- unlearning ratio (Table 5)
def plot_ratio(
    rows: Sequence[Mapping[str, Any]],
    out: str | os.PathLike | None = None,
    metrics: Sequence[str] = ("recall@20", "ndcg@20", "mi_bf", "mi_ng"),
    series_key: str | Sequence[str] = "method",
    title: str | None = None,
) -> bytes:
    """Each metric against the request ratio (fraction of edges forgotten), one line per method.
    ``rows``: dicts with ``ratio``, ``series_key`` and the metrics (mean over seeds)."""
    pts = [r for r in rows if isinstance(r.get("ratio"), (int, float))]
    if not pts:
        raise UnlearnRecError("no rows with a request 'ratio' to plot")
    series: dict[str, list[Mapping[str, Any]]] = {}
    for r in pts:
        series.setdefault(_label(r, series_key), []).append(r)
    fig = _figure(min(3.2 * len(metrics), MAX_WIDTH_IN), 3.0)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for k, (name, rs) in enumerate(sorted(series.items())):
            rs = sorted((r for r in rs if isinstance(r.get(metric), (int, float))), key=lambda r: r["ratio"])
            if rs:
                ax.plot(
                    [100 * r["ratio"] for r in rs], [r[metric] for r in rs], label=name, **series_style(k)
                )
        if metric.startswith("mi_"):
            ax.axhline(1.0, color="gray", linewidth=0.6, linestyle=":")
        ax.set_title(metric, fontsize=TITLE)
        ax.set_xlabel("edges forgotten (%)", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Unlearning ratio", fontsize=SUPTITLE)
    fig.tight_layout()
    # every series, from whichever panel has it (a series may lack one metric)
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    _legend_below(fig, list(seen.values()), list(seen.keys()), ncol=4)
    return _finish(fig, out)
