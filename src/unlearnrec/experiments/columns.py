"""The metric columns of every report, declared once.

Each :class:`Column` names a value of a result record (a key of its ``metrics`` table, else a
top-level key such as ``seconds``) and how every writer shows it: the Markdown tables and the CSV
of :mod:`~unlearnrec.experiments.report.tables` and the HTML page of
:mod:`~unlearnrec.experiments.report.html` all iterate over :data:`COLUMNS`. A column with a
``compute`` function is also a new metric: :func:`computed_metrics` calls it for every cell the
runner runs (see ``docs/extending.md``).

``group``: ``main`` is the paper's Table 2 (ours beside the paper's value); ``extra`` the table of
what the paper does not report (membership AUC, distance to the retrained model, cost). ``html``:
also a column of the HTML page's Table 2 (after the paper's four).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unlearnrec.data.datasets import Dataset
from unlearnrec.data.interactions import Interactions
from unlearnrec.model import TrainedModel


@dataclass(frozen=True)
class MetricInputs:
    """What a metric function sees of one cell: the model before and after forgetting, the
    forgotten edges, the dataset (splits), the retrained reference (None if the grid has none)."""

    original: TrainedModel
    unlearned: TrainedModel
    forgotten: Interactions
    data: Dataset
    reference: TrainedModel | None
    seed: int


@dataclass(frozen=True)
class Column:
    """One metric column: ``key`` in the records, ``title`` (HTML and Markdown), ``short`` (the
    Markdown wide layout), ``digits`` (Markdown), ``html_digits``, ``group`` (``main`` or
    ``extra``), ``html`` (in the HTML Table 2), ``md_title`` (Markdown, default ``title``) and an
    optional ``compute(MetricInputs) -> float`` that makes it a metric of every new cell."""

    key: str
    title: str
    short: str = ""
    digits: int = 4
    html_digits: int = 3
    group: str = "extra"
    html: bool = False
    md_title: str = ""
    compute: Callable[[MetricInputs], float] | None = None

    @property
    def markdown_title(self) -> str:
        return self.md_title or self.title

    def value(self, record: dict[str, Any]) -> Any:
        """The column's value in a raw runner record (``metrics`` first, then top level)."""
        metrics = record.get("metrics")
        if isinstance(metrics, dict) and self.key in metrics:
            return metrics[self.key]
        return record.get(self.key)

    def fmt(self, v: float | None) -> str:
        """The Markdown text of a value (``–`` for none)."""
        if v is None or v != v:  # NaN
            return "–"
        return f"{v:.{self.digits}f}"


COLUMNS: tuple[Column, ...] = (
    Column("recall@20", "Recall@20", "Recall", 4, 4, "main"),
    Column("ndcg@20", "NDCG@20", "NDCG", 4, 4, "main"),
    Column("mi_bf", "MI-BF", "MI-BF", 2, 2, "main"),
    Column("mi_ng", "MI-NG", "MI-NG", 2, 2, "main"),
    Column("auc", "MI AUC", digits=4, html_digits=3, html=True, md_title="AUC"),
    Column("auc_before", "AUC before", digits=4),
    Column("w1_to_ref", "W1 to retrain", digits=4),
    Column("ks_to_ref", "KS to retrain", digits=4),
    Column("seconds", "seconds", digits=2, html_digits=2, html=True, md_title="forget s"),
    Column("prepare_seconds", "prepare s", digits=2),
    Column("peak_memory_mb", "peak MiB", digits=0),
)
MAIN = tuple(c for c in COLUMNS if c.group == "main")
EXTRA = tuple(c for c in COLUMNS if c.group == "extra")
BY_KEY = {c.key: c for c in COLUMNS}


def computed_metrics(inputs: MetricInputs) -> dict[str, float]:
    """The value of every column that declares a ``compute`` function, for one cell."""
    return {c.key: float(c.compute(inputs)) for c in COLUMNS if c.compute is not None}
