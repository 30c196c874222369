"""What the HTML template draws: tables, figures, notes, headings, details, preformatted text; and the
helpers that format numbers for them."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unlearnrec.experiments.report.paper import DISPLAY
from unlearnrec.experiments.results import is_number


@dataclass
class Table:
    """``rows``: cells as (text, css class); the text is escaped by the template."""

    header: list[str]
    rows: list[list[tuple[str, str]]]
    caption: str | None = None
    kind: str = "table"


@dataclass
class Figure:
    png_b64: str
    alt: str
    caption: str | None = None
    kind: str = "figure"


@dataclass
class Note:
    text: str
    kind: str = "note"


@dataclass
class Heading:
    text: str
    level: int = 3
    kind: str = "heading"


@dataclass
class Details:
    summary: str
    items: list[tuple[str | None, str]] = field(default_factory=list)
    kind: str = "details"


@dataclass
class Pre:
    text: str
    label: str | None = None
    kind: str = "pre"


Block = Table | Figure | Note | Heading | Details | Pre


def figure(png: bytes, alt: str, caption: str | None = None) -> Figure:
    return Figure(base64.b64encode(png).decode("ascii"), alt, caption)


def fmt(v: Any, digits: int = 4) -> str:
    if not is_number(v):
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


def diff_cell(ours: Any, paper: Any, higher_better: bool = True) -> tuple[str, str]:
    if not (is_number(ours) and is_number(paper)) or paper == 0:
        return "—", ""
    d = 100.0 * (float(ours) - float(paper)) / abs(float(paper))
    cls = "good" if (d >= 0) == higher_better else "bad"
    return f"{d:+.1f}%", cls


def display_name(x: Any) -> str:
    return DISPLAY.get(x, x) if isinstance(x, str) else str(x)


def groupby(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def per_backbone(rows: list[dict[str, Any]], table: Callable[[list[dict[str, Any]]], Table]) -> list[Block]:
    """One table per dataset and backbone, each under its own heading."""
    blocks: list[Block] = []
    for (ds, bb), rs in groupby(rows, ("dataset", "backbone")).items():
        blocks += [Heading(f"{display_name(ds)} · {display_name(bb)}"), table(list(rs))]
    return blocks
