"""What an experiment folder holds, read and written in one place.

- ``results.jsonl``: one JSON line per finished (or failed) cell, appended by the runner;
  :class:`ResultsLog` reads it once and keeps what the runner needs (done cells, the latest record
  of each) up to date as it appends, :func:`read_results` reads it, :func:`load_records` reads every
  one under a folder tree, flattened by the one normaliser :func:`normalize_record`;
- ``studies/*.json``: the studies' outputs (:func:`write_study`, :func:`load_studies`) and the
  pre-training curves kept in ``prepared/*/meta.json`` (:func:`load_pretrain_curves`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnrec.errors import UnlearnRecError
from unlearnrec.io.checkpoint import atomic_write_text

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
STUDY_KINDS = ("scores", "case", "pretrain", "shift")


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ================================================================== results.jsonl
def _read_lines(path: Path) -> list[dict]:
    """Every parseable JSON object of a JSONL file (a torn or unreadable line is skipped)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable line skipped", path, n)
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def read_results(out_dir: str | os.PathLike) -> list[dict]:
    """Every parseable line of ``OUT/results.jsonl`` (a torn last line is skipped)."""
    path = Path(out_dir) / RESULTS
    return _read_lines(path) if path.is_file() else []


def read_history(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """The finished cells of earlier runs as the runner wrote them (raw, not flattened), for
    ``experiment --status`` estimates: each path a ``results.jsonl`` file or a folder searched for them
    at any depth (e.g. the committed ``experiments/results``); per file the last line of a cell wins
    and only ``ok`` cells are kept. A path that does not exist, or a folder with no results file in
    it, is an error (a typo is not "no history")."""
    rows: list[dict] = []
    for p in map(Path, paths):
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = sorted(p.rglob(RESULTS))
            if not files:
                raise UnlearnRecError(f"--estimate-from {p}: no {RESULTS} in this folder or below it")
        else:
            raise UnlearnRecError(f"--estimate-from {p}: no such file or folder")
        for f in files:
            rows += latest_records(_read_lines(f))[0]
    return rows


class ResultsLog:
    """``OUT/results.jsonl`` as the runner sees it: read once, then appended to (fsynced per line)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir)
        self.records = read_results(self.out)
        self._latest_ok: dict[str, dict] = {}
        for r in self.records:
            self._note(r)

    def _note(self, record: dict) -> None:
        if record.get("status") == "ok" and "cell" in record:
            self._latest_ok[record["cell"]] = record

    @property
    def done(self) -> set[str]:
        """The cells with an ``ok`` record."""
        return set(self._latest_ok)

    def latest_ok(self, cell: str) -> dict | None:
        """The last ``ok`` record of a cell, or None."""
        return self._latest_ok.get(cell)

    def append(self, record: dict) -> None:
        """Append one record as a JSON line (written and fsynced before returning)."""
        self.out.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, default=_json_default)
        with (self.out / RESULTS).open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._note(record)


def latest_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(ok records, errors still unresolved): the last line of each cell wins."""
    last: dict[str, dict] = {}
    for r in records:
        if r.get("kind") == "cell" and "cell" in r:
            last[r["cell"]] = r
    ok = [r for r in last.values() if r.get("status") == "ok"]
    err = [r for r in last.values() if r.get("status") != "ok"]
    return ok, err


def request_of(record: Mapping[str, Any]) -> tuple[str, dict]:
    """(request kind, its summary ``{edges, fraction_of_train, ...}``) of a runner record: the
    ``request`` table of a random / users / items cell, else the ``attack`` table (adversarial)."""
    req = record.get("request")
    if isinstance(req, dict):
        return str(req.get("kind") or "random"), req
    att = record.get("attack")
    return "adversarial", att if isinstance(att, dict) else {}


def normalize_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one runner record: the keys of its ``metrics`` table are lifted to the top level
    (top-level keys win), ``label`` defaults to ``method``, and from the ``request`` (else
    ``attack``) table (``edges``, ``fraction_of_train``) come
    ``request_edges`` (|E_Δ|), ``request_fraction`` (|E_Δ| / training edges) and ``train_edges``
    (the size of the training set that was forgotten from, the x-axis of Fig. 4)."""
    rec: dict[str, Any] = dict(raw)
    metrics = raw.get("metrics")
    if isinstance(metrics, Mapping):
        for k, v in metrics.items():
            rec.setdefault(k, v)
    rec["label"] = rec.get("label") or rec.get("method")
    # ``attack``: the adversarial protocol's table; ``request``: the same fields for other
    # request kinds (e.g. random requests of a ratio sweep), whichever the runner writes
    att = raw.get("request") if isinstance(raw.get("request"), Mapping) else raw.get("attack")
    if isinstance(att, Mapping):
        edges, frac = att.get("edges"), att.get("fraction_of_train")
        if is_number(edges):
            rec.setdefault("request_edges", int(edges))
            if is_number(frac) and frac > 0:
                rec.setdefault("request_fraction", float(frac))
                rec.setdefault("train_edges", int(round(edges / frac)))
    return rec


def load_records(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished cell under ``results_dir`` as a flat record (see :func:`normalize_record`).

    Reads the runner's ``results.jsonl`` in the folder and in its sub-folders (any depth). Per
    file, the last line of each cell wins and only cells with status ``ok`` are kept (the
    runner appends a new line when it retries a failed cell). A torn last line is skipped.
    ``experiment`` defaults to the name of the folder holding the file.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise UnlearnRecError(f"results folder not found: {root}")
    out: list[dict[str, Any]] = []
    for path in sorted(root.rglob(RESULTS)):
        ok, _ = latest_records(_read_lines(path))
        for obj in ok:
            rec = normalize_record(obj)
            rec.setdefault("experiment", path.parent.name)
            rec["_file"] = str(path.relative_to(root))
            out.append(rec)
    return out


# ================================================================== studies
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


def load_pretrain_curves(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Pre-training loss curves of UnlearnRec found in the runner's ``prepared/*/meta.json``
    caches (the Influence Encoder's sidecar keeps its per-epoch ``history``), as ``pretrain``
    study entries titled by dataset, backbone and the pre-training switches."""
    out = []
    for p in sorted(Path(results_dir).rglob("prepared/*/meta.json")):
        try:
            meta = json.loads(p.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        hist = meta.get("history") if isinstance(meta, dict) else None
        if not hist or not isinstance(hist, list):
            continue
        cfg = meta.get("config") or {}
        switches = ", ".join(
            f"{k}={cfg[k]}"
            for k in ("epochs", "ratio", "lr", "lambda_p", "use_lu", "use_lp", "use_lc")
            if k in cfg
        )
        name = f"{meta.get('dataset', '?')} / {meta.get('backbone', '?')}"
        out.append(
            {
                "kind": "pretrain",
                "name": f"{name} ({p.parent.name})",
                "title": f"{name}: {switches}" if switches else name,
                "data": {"history": hist, "config": cfg},
                "prepared": p.parent.name,
                "_file": str(p),
            }
        )
    return out


# ================================================================== the one aggregate
def _mean(vals) -> float | None:
    xs = [float(v) for v in vals if is_number(v)]
    return sum(xs) / len(xs) if xs else None


def aggregate(
    records: list[Mapping[str, Any]] | Any,
    keys: tuple[str, ...] | list[str],
    metrics: tuple[str, ...] | list[str],
) -> list[dict[str, Any]]:
    """Mean of each of ``metrics`` over the (normalised) records sharing ``keys`` (e.g. the seeds of
    one cell), in first-seen order; ``n`` = the number of records in the group (None: no value)."""
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
