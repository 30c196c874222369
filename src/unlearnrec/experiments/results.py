"""What an experiment folder holds on disk, read and written in one place: the study outputs
(``studies/*.json``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from unlearnrec.errors import UnlearnRecError
from unlearnrec.io.checkpoint import atomic_write_text

log = logging.getLogger(__name__)

STUDY_KINDS = ("scores", "case", "pretrain", "shift")


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def write_study(
    results_dir: str | os.PathLike, kind: str, name: str, data: Any, title: str | None = None
) -> Path:
    """Store a study's output (JSON) where :func:`render_html` finds it:
    ``results_dir/studies/<kind>-<name>.json``, written atomically.

    ``kind``: ``scores`` (:func:`~unlearnrec.experiments.studies.score_distribution_study`),
    ``case`` (:func:`~unlearnrec.experiments.studies.case_study`), ``shift``
    (:func:`~unlearnrec.experiments.studies.similar_item_shift`) or ``pretrain`` (a list of
    per-epoch dicts from UnlearnRec's pre-training).
    """
    if kind not in STUDY_KINDS:
        raise UnlearnRecError(f"unknown study kind '{kind}' (valid: {', '.join(STUDY_KINDS)})")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path = Path(results_dir) / "studies" / f"{kind}-{safe}.json"
    atomic_write_text(
        path,
        json.dumps(
            {"kind": kind, "name": name, "title": title or name, "data": data},
            indent=1,
            default=_json_default,
        ),
    )
    return path


def load_studies(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every study JSON under ``results_dir`` (``**/studies/*.json``), sorted by path."""
    out = []
    for p in sorted(Path(results_dir).rglob("studies/*.json")):
        try:
            obj = json.loads(p.read_text())
        except (json.JSONDecodeError, OSError) as e:
            log.warning("skipping unreadable study %s: %s", p, e)
            continue
        if isinstance(obj, dict) and obj.get("kind") in STUDY_KINDS:
            obj["_file"] = str(p)
            out.append(obj)
    return out
