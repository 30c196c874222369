"""Pins taken before the experiments layer was split up (issue 23): every committed grid keeps its config
hashes (the keys of every cached model, attack, request, prepared state and result cell), and every
committed ``report.html`` is rebuilt with the same table rows.

``tests/data/grid_hashes.json``, ``tests/data/report_tables.json`` and ``tests/data/report_text/`` were
captured with the code before the refactor (main at the merge of #22); regenerate them only for a deliberate,
documented change of hashes or tables.
"""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unlearnrec.experiments.grid import cell_hash, groups, load_config, prepare_hash

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GRID_HASHES = json.loads((DATA / "grid_hashes.json").read_text())
REPORT_TABLES = json.loads((DATA / "report_tables.json").read_text())


def grid_hashes(path: Path) -> list[list]:
    """(dataset, seed, ratio, backbone, clean, model, request, cells, prepared) per group of a grid."""
    cfg = load_config(path)
    return [
        [
            g.dataset,
            g.seed,
            g.ratio,
            g.backbone,
            g.clean_hash,
            g.attacked_hash,
            g.request_key,
            [cell_hash(g, m) for m in cfg.methods],
            [prepare_hash(g, m) for m in cfg.methods],
        ]
        for g in groups(cfg)
    ]


def test_every_committed_grid_is_pinned():
    grids = [*ROOT.glob("experiments/*.toml"), *ROOT.glob("experiments/*/*.toml")]
    committed = sorted(str(p.relative_to(ROOT)) for p in grids)
    assert committed == sorted(GRID_HASHES), "a grid was added or removed: pin its hashes in tests/data"


@pytest.mark.parametrize("grid", sorted(GRID_HASHES))
def test_committed_grid_hashes_are_unchanged(grid):
    assert grid_hashes(ROOT / grid) == GRID_HASHES[grid]


class _Tables(HTMLParser):
    """The text of every table cell, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(page: str) -> Counter:
    """Every data row of every table as ``((header, value), ...)``: splitting one table into several
    with the same columns keeps this multiset."""
    parser = _Tables()
    parser.feed(page)
    rows: Counter = Counter()
    for table in parser.tables:
        header, *body = table
        for row in body:
            rows[tuple(zip(header, row, strict=True))] += 1
    return rows


def test_table_parser_sees_rows():
    page = "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td> 2 <i>x</i></td></tr></table>"
    assert table_rows(page) == Counter({(("a", "1"), ("b", "2 x")): 1})


@pytest.mark.parametrize("name", sorted(REPORT_TABLES))
def test_committed_reports_keep_their_tables(name):
    from unlearnrec.experiments.report.html import render_html

    page = render_html(ROOT / "experiments" / "results" / name, None, figures=False)
    before = Counter()
    for header, *body in REPORT_TABLES[name]:
        for row in body:
            before[tuple(zip(header, row, strict=True))] += 1
    assert table_rows(page) == before


REPORT_TEXT = DATA / "report_text"


@pytest.mark.parametrize("name", sorted(p.stem for p in REPORT_TEXT.glob("*.txt")))
def test_committed_results_keep_their_markdown_and_csv(name):
    """``unlearnrec report`` (both Markdown layouts, the CSV) prints what it printed before the refactor."""
    from unlearnrec.experiments.report import to_csv, to_markdown
    from unlearnrec.experiments.results import read_results

    records = read_results(ROOT / "experiments" / "results" / name)
    text = to_markdown(records) + to_markdown(records, "long") + to_csv(records)
    assert text == (REPORT_TEXT / f"{name}.txt").read_text()
