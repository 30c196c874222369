"""One self-contained HTML page of every table and figure of an experiment folder.

:func:`render_html` reads what the runner and the studies wrote under a results folder, builds each
section as data (tables, figures, notes) and renders them with the Jinja2 template
``templates/report.html.j2`` (escaping on): one file that needs nothing else to be read (inline CSS,
no scripts, figures as base64 ``data:`` PNGs). Tables put the paper's numbers (docs/method.md §8) beside
ours, one table per dataset and backbone; where the paper's values are not restated in docs/method.md
(Tables 3 and 5) the page says so rather than inventing them. The folder layout it understands::

    DIR/results.jsonl            one JSON object per finished runner cell
    DIR/*/results.jsonl          the same for sub-experiments (e.g. one folder per TOML)
    DIR/**/*.toml                experiment configs copied by the runner (shown verbatim)
    DIR/**/studies/*.json        study outputs (:func:`~unlearnrec.experiments.results.write_study`)
    DIR/**/prepared/*/meta.json  pre-training curves of the Influence Encoders

A record goes to a section by its ``study`` field (the grid's ``study`` key; see :func:`study_of`).
Figures need matplotlib (the ``plots`` extra); without it the tables are still rendered and the page
says which figures were left out.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnrec import __version__
from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments.grid import STUDIES
from unlearnrec.experiments.report.blocks import Block
from unlearnrec.experiments.report.sections import (
    section_ablation,
    section_efficiency,
    section_main,
    section_provenance,
    section_ratio,
)
from unlearnrec.experiments.report.study_sections import encoder_titles, section_studies
from unlearnrec.experiments.results import RESULTS, load_pretrain_curves, load_records, load_studies
from unlearnrec.io.checkpoint import atomic_write_text

log = logging.getLogger(__name__)

#: the section of records written before the grids named their ``study``: these grids' names
LEGACY_STUDIES = {
    "ml-1m-ablation-cpu": "ablation",
    "ml-1m-ablation-simgcl-cpu": "ablation",
    "ablation-ml-1m": "ablation",
    "efficiency": "efficiency",
}


def study_of(rec: Mapping[str, Any]) -> str:
    """The section of a record: its ``study`` field (the grid's ``study`` key), else for records
    written before that field the section of its grid's name (:data:`LEGACY_STUDIES`), else
    ``ratio`` for a random / users / items request and ``main`` for the adversarial one."""
    s = rec.get("study")
    if s in STUDIES:
        return str(s)
    if rec.get("experiment") in LEGACY_STUDIES:
        return LEGACY_STUDIES[str(rec["experiment"])]
    req = rec.get("request")
    return "ratio" if isinstance(req, Mapping) and req.get("kind") else "main"


# ================================================================== the page
@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block]

    @property
    def nav(self) -> str:
        return self.title.split(" (")[0]


def _template():
    try:
        import jinja2
    except ImportError:  # pragma: no cover - a dependency
        raise UnlearnRecError("the HTML report needs jinja2: pip install jinja2") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2")


def render_html(
    results_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    figures: bool = True,
) -> str:
    """Render every table and figure of ``results_dir`` as one self-contained HTML page.

    ``results_dir``: a runner output folder (``results.jsonl``, possibly in sub-folders, plus
    optional ``studies/*.json`` and copied ``*.toml`` configs). ``out_path``: where to write the
    page (atomically); None writes nothing. ``title``: the page heading (default: the folder name).
    ``figures``: draw figures (needs matplotlib; if it is missing the page lists the figures left
    out instead of failing).

    Sections: Table 2 (ours beside the paper's numbers and the relative difference), ablation
    (Table 3), unlearning ratio (Table 5), efficiency (Table 4, Fig. 4), studies (Fig. 2-3, 5, 6),
    and provenance (versions, configs, commands). Records are routed by :func:`study_of`. Returns
    the HTML text.
    """
    root = Path(results_dir)
    records = load_records(root)
    items = load_studies(root) + load_pretrain_curves(root)
    if not records and not items:
        raise UnlearnRecError(f"{root}: no {RESULTS} and no studies/*.json to report")
    encoder_titles(items, records)
    if figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            figures = False
            log.warning("matplotlib is not installed: the report will have no figures")
    by_study: dict[str, list[dict[str, Any]]] = {s: [] for s in STUDIES}
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
    missing = (
        [] if figures else ["all figures: matplotlib is not installed (pip install 'unlearnrec[plots]')"]
    )
    ratio_blocks, m1 = section_ratio(by_study["ratio"], figures)
    # Table 4 times the main grids; the ratio sweep forgets requests of other sizes and the
    # ablation's variants would crowd the table
    eff_blocks, m2 = section_efficiency(by_study["main"] + by_study["efficiency"], figures)
    study_blocks, m3 = section_studies(items, figures)
    missing += m1 + m2 + m3
    sections = [
        Section(
            "main", "Forgetting under the adversarial protocol (Table 2)", section_main(by_study["main"])
        ),
        Section("ablation", "Ablation (Table 3)", section_ablation(by_study["ablation"])),
        Section("ratio", "Unlearning ratio (Table 5)", ratio_blocks),
        Section("efficiency", "Efficiency (Table 4, Fig. 4)", eff_blocks),
        Section("studies", "Studies (Fig. 2-3, 5, 6)", study_blocks),
        Section("provenance", "Configs and versions", section_provenance(root, records)),
    ]
    page = _template().render(
        heading=title or f"unlearnrec report — {root.resolve().name}",
        n_records=len(records),
        n_items=len(items),
        now=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        sections=sections,
        missing=missing,
    )
    if out_path is not None:
        atomic_write_text(out_path, page)
        os.chmod(out_path, 0o644)  # a page to share; the temporary file was private
    return page
