"""Figures: PNG bytes from the studies' data, written atomically, clear errors on empty input."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from unlearnrec.errors import UnlearnRecError  # noqa: E402
from unlearnrec.experiments import studies  # noqa: E402
from unlearnrec.experiments.report import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")


def _summary():
    rng = np.random.default_rng(0)
    scores = {
        name: {
            "forgotten": rng.normal(mu, 1, 200),
            "retained": rng.normal(2, 1, 300),
            "negative": rng.normal(-1, 1, 200),
        }
        for name, mu in (("original", 2.0), ("retrain", -1.0), ("unlearnrec", -0.5))
    }
    return studies.summarize_distributions(scores, bins=15)


def _case():
    return {
        "user": 3,
        "item": 7,
        "k": 3,
        "similar": [1, 2, 5],
        "similarity": [0.9, 0.8, 0.5],
        "scores": {
            "original": {"forgotten": 2.0, "similar": [1.5, 1.0, 0.2]},
            "unlearnrec": {"forgotten": -1.0, "similar": [0.5, 0.7, 0.1]},
            "retrain": {"forgotten": -0.8, "similar": [0.6, 0.5, 0.3]},
        },
        "delta": {"original": 0.0, "unlearnrec": -0.47, "retrain": -0.43},
    }


def test_score_distributions_png_and_atomic_file(tmp_path):
    out = tmp_path / "figs" / "scores.png"
    png = plots.plot_score_distributions(_summary(), out=out)
    assert png.startswith(PNG_MAGIC)
    assert out.read_bytes() == png
    assert [p.name for p in out.parent.iterdir()] == ["scores.png"]  # no temporary file left behind
    img = _decode(png)
    assert img.shape[0] > 100 and img.shape[1] > 300  # three panels side by side
    with pytest.raises(UnlearnRecError):
        plots.plot_score_distributions({"models": {}, "bins": {}})


def test_write_atomic_replaces(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(b"old")
    plots.write_atomic(p, b"new")
    assert p.read_bytes() == b"new"


def test_pretrain_curve_skips_bookkeeping_terms():
    hist = [
        {
            "epoch": e,
            "total": 1 / e,
            "unlearn": 0.5 / e,
            "preserve": 0.01 * e,
            "contrast": 3 - 0.1 * e,
            "request_edges": 1000,
            "steps": 4,
            "seconds": 1.0 * e,
        }
        for e in range(1, 6)
    ]
    png = plots.plot_pretrain_curve(hist)
    assert plots.loss_terms(hist) == ["total", "unlearn", "preserve", "contrast"]
    few = plots.plot_pretrain_curve(hist, terms=["total"])
    # four loss panels (a 2 x 3 grid) are taller than one
    assert _decode(few).shape[0] < _decode(png).shape[0]
    with pytest.raises(UnlearnRecError):
        plots.plot_pretrain_curve([])
    with pytest.raises(UnlearnRecError):
        plots.plot_pretrain_curve([{"epoch": 1, "steps": 3}])


def test_case_study_png():
    png = plots.plot_case_study(_case(), item_names={7: "Toy Story"})
    assert png.startswith(PNG_MAGIC) and _decode(png).shape[1] > 300
    with pytest.raises(UnlearnRecError):
        plots.plot_case_study({"scores": {}})


def test_efficiency_and_ratio_pngs():
    rows = [
        {
            "method": m,
            "backbone": "lightgcn",
            "train_edges": n,
            "seconds": s * n / 1e3,
            "peak_memory_mb": n / 1e4,
        }
        for m, s in (("retrain", 1.0), ("unlearnrec", 0.01))
        for n in (1e3, 1e5, 1e6)
    ]
    png = plots.plot_efficiency(rows, series_key=("method", "backbone"))
    assert png.startswith(PNG_MAGIC)
    with pytest.raises(UnlearnRecError):
        plots.plot_efficiency([{"method": "x", "seconds": 1.0}])  # no dataset size
    ratio_rows = [
        {"method": m, "ratio": r, "recall@20": 0.2, "ndcg@20": 0.3, "mi_bf": 2.0, "mi_ng": 1.5}
        for m in ("retrain", "unlearnrec")
        for r in (0.001, 0.01, 0.02)
    ]
    assert plots.plot_ratio(ratio_rows).startswith(PNG_MAGIC)
    with pytest.raises(UnlearnRecError):
        plots.plot_ratio([{"method": "x"}])


# ----------------------------------------------------------------------------- legibility (issue 22)
def _ratio_rows(n_series: int) -> list[dict]:
    return [
        {
            "label": f"method {s}",
            "ratio": r,
            "recall@20": 0.2 + 0.001 * s,
            "ndcg@20": 0.3,
            "mi_bf": 2.0 + s,
            "mi_ng": 1.5,
        }
        for s in range(n_series)
        for r in (0.001, 0.005, 0.01)
    ]


def _drawn(monkeypatch_ctx, draw) -> list:
    """The figures ``draw()`` finishes (each already drawn into its PNG), for inspection."""
    kept = []
    real = plots._finish

    def finish(fig, out):
        kept.append(fig)
        return real(fig, out)

    monkeypatch_ctx.setattr(plots, "_finish", finish)
    draw()
    return kept


def _every_plot() -> None:
    plots.plot_score_distributions(_summary())
    plots.plot_pretrain_curve([{"epoch": e, "total": 1 / e, "unlearn": 0.5 / e} for e in (1, 2, 3)])
    plots.plot_case_study(_case())
    rows = [
        {"label": f"m{s}", "train_edges": n, "seconds": 0.1 * (s + 1) * n / 1e5, "peak_memory_mb": 10.0 + s}
        for s in range(12)
        for n in (1e5, 1e6)
    ]
    plots.plot_efficiency(rows, series_key="label")
    plots.plot_ratio(_ratio_rows(23), series_key="label")


@pytest.fixture(scope="module")
def every_figure():
    """Each kind of figure at its default size, with more than ten series where a plot has series."""
    with pytest.MonkeyPatch.context() as mp:
        return _drawn(mp, _every_plot)


def test_text_is_at_least_10_px_at_the_default_size_and_shown_unscaled(every_figure):
    """Every text of every figure is >= 10 px high in the PNG, and every PNG is narrower than the report's
    column (1,200 px less margins), so the page shows it at that size."""
    from matplotlib.text import Text

    assert len(every_figure) == 5
    for fig in every_figure:
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert texts
        small = {
            t.get_text(): t.get_fontsize() * fig.dpi / 72
            for t in texts
            if t.get_fontsize() * fig.dpi / 72 < 10
        }
        assert not small, small
        # the PNG is the tight box of the drawn figure at the figure's dpi (savefig bbox_inches="tight")
        width = fig.get_tightbbox(fig.canvas.get_renderer()).width * fig.dpi
        assert width <= 1150, width


def test_legends_never_cover_data(every_figure):
    with_legend = 0
    for fig in every_figure:
        renderer = fig.canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        with_legend += bool(legends)
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in fig.axes:
                if ax.get_visible():
                    assert not box.overlaps(ax.get_window_extent(renderer)), (fig.texts, ax.get_title())
    assert with_legend == 4  # all but the pre-training curve (one series per panel) have a legend


def test_more_than_ten_series_get_distinct_colours_and_markers(every_figure):
    ratio = every_figure[-1]  # 23 series
    lines = [ln for ln in ratio.axes[0].get_lines() if ln.get_marker() not in (None, "None", "")]
    assert len(lines) == 23
    assert len({(ln.get_color(), ln.get_marker()) for ln in lines}) == 23
    # the first ten differ in colour and in marker
    first = lines[:10]
    assert len({ln.get_color() for ln in first}) == 10 and len({ln.get_marker() for ln in first}) == 10
