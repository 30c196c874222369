"""``unlearnrec experiment --status``: every cell of a grid, done (its recorded seconds) or pending (an
estimate from the finished cells of this ``--out``, and of earlier runs elsewhere when given), without
running or training anything."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnrec.experiments.grid import (
    FORGET_ONLY_FIELDS,
    ExperimentConfig,
    Group,
    MethodSpec,
    cell_hash,
    groups,
    prepare_hash,
    prepared_key,
)
from unlearnrec.experiments.protocol import dataset_name
from unlearnrec.experiments.results import ResultsLog
from unlearnrec.experiments.store import Store


@dataclass(frozen=True)
class CellStatus:
    """One cell of a grid: done or pending, with its recorded or estimated seconds (None: unknown)."""

    group: Group
    label: str
    method: str
    done: bool
    seconds: float | None
    resumes: str = ""  # the stopped work a run of this cell picks up (a model's or Retrain's epochs, shards)


def _cell_seconds(rec: dict) -> float:
    return float(rec.get("seconds") or 0.0) + float(rec.get("prepare_seconds") or 0.0)


def _finetune_steps(config: dict[str, Any], residual_edges: float | None) -> int | None:
    """UnlearnRec's fine-tuning steps under ``config`` at most (the stopping rule may end it sooner):
    ``finetune_epochs`` x :func:`~unlearnrec.unlearn.unlearnrec.finetune.epoch_steps`, plus
    ``finetune_recover_steps``; None when the epoch is a pass over the residual edges and their number
    is unknown."""
    from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
    from unlearnrec.unlearn.unlearnrec.finetune import epoch_steps

    cfg = UnlearnRecConfig(**config)
    if not cfg.finetune_epochs:
        return 0
    if residual_edges is None:
        epochs = cfg.finetune_epochs * cfg.finetune_steps
        return epochs + cfg.finetune_recover_steps if epochs else None
    return cfg.finetune_epochs * epoch_steps(cfg, math.ceil(residual_edges)) + cfg.finetune_recover_steps


def _same_data(record: dict, group: Group) -> bool:
    """A finished cell of the group's dataset (by :func:`dataset_name`) and backbone."""
    return (dataset_name(record.get("dataset") or ""), record.get("backbone")) == (
        dataset_name(group.dataset),
        group.backbone,
    )


def forget_seconds(record: dict, spec: MethodSpec) -> float:
    """A finished cell's forget seconds as an estimate for ``spec``: for UnlearnRec, its fine-tuning
    part rescaled from the steps it ran to the steps ``spec`` runs at most (the same time a step:
    a pass over Yelp2018's residual edges is not timed like 80 steps), else as recorded."""
    seconds = float(record.get("seconds") or 0.0)
    info = record.get("info") or {}
    ran, tuned = info.get("finetune_steps_run"), info.get("finetune_seconds")
    if spec.name != "unlearnrec" or not ran or tuned is None:
        return seconds
    attack = record.get("attack") or {}
    residual = None
    if attack.get("edges") and attack.get("fraction_of_train"):
        residual = attack["edges"] / attack["fraction_of_train"] - attack["edges"]
    want = _finetune_steps(spec.config, residual)
    if want is None:
        return seconds
    return seconds - float(tuned) + float(tuned) / int(ran) * want


def status(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    history: list[dict] | None = None,
) -> list[CellStatus]:
    """Every cell of the grid, done (recorded seconds) or pending (estimated seconds).

    ``history``: finished cells of earlier runs elsewhere (``results.read_history``, e.g. of the
    committed ``experiments/results``), so that a fresh checkout with an empty OUT and cache gets
    estimates. A pending cell measured there under the same cell hash (the same models, request
    and method) is estimated from that record alone; otherwise the history only joins the search below
    where OUT has no peer at that level (OUT's own cells first).

    A pending cell's estimate is the median forget ``seconds`` of the finished cells of the same method
    on the same dataset and backbone (else the same backbone, else the same method) in
    ``OUT/results.jsonl`` whose method config is nearest to the cell's (fewest differing fields; an
    UnlearnRec cell's fine-tuning time rescaled to the pending cell's steps, :func:`forget_seconds`); plus
    its preparation when its prepared state is neither in the cache nor made by an earlier pending cell
    of this listing: the median ``prepare_seconds`` of those finished cells that prepared afresh (not
    from the cache) with the pre-training settings nearest to the cell's (forget-time fields ignored;
    more than one field apart: unknown, so an encoder pre-trained for 10 epochs is never estimated from
    one with none); plus, for the first pending cell of a group whose model to unlearn is not in the
    cache, its training time: recorded for the same model (attacked hash), else the median recorded for
    that dataset and backbone (OUT's, else the history's). Unknown: None.
    """
    from unlearnrec.experiments.runner import default_cache

    results = ResultsLog(out_dir)
    store = Store(config, default_cache() if cache_dir is None else cache_dir, fallbacks=(Path(out_dir),))
    ok = [r for r in results.records if r.get("status") == "ok"]
    past = list(history or ())
    by_cell: dict[str, list[dict]] = {}
    for r in past:
        by_cell.setdefault(str(r.get("cell")), []).append(r)

    def median(rows: list[float]) -> float | None:
        return statistics.median(rows) if rows else None

    def peers(group: Group, spec: MethodSpec) -> list[dict]:
        """The finished cells of ``spec``'s method nearest to the group: same dataset and backbone, else
        the same backbone, else any."""
        for same in (
            lambda r: _same_data(r, group),
            lambda r: r.get("backbone") == group.backbone,
            lambda r: True,
        ):
            for pool in (ok, past):
                rows = [r for r in pool if r.get("method") == spec.name and same(r)]
                if rows:
                    return rows
        return []

    def distance(r: dict, spec: MethodSpec, skip: tuple[str, ...] = ()) -> int:
        """How many fields of a finished cell's method config differ from ``spec``'s (``skip`` left out)."""
        cfg = r.get("method_config") or {}
        return sum(cfg.get(k) != spec.config.get(k) for k in (set(cfg) | set(spec.config)) - set(skip))

    prepared: set[str] = set()  # prepared states an earlier pending cell of this listing makes
    timed_prep: dict[str, list[float]] = {}  # prepared key -> preparations timed afresh (OUT, history)
    for r in ok + past:
        attacked = (r.get("hashes") or {}).get("attacked")
        if attacked and r.get("method") and not r.get("prepare_cached"):
            key = prepared_key(attacked, r["method"], r.get("method_config") or {})
            timed_prep.setdefault(key, []).append(float(r.get("prepare_seconds") or 0.0))

    def prepare_estimate(group: Group, spec: MethodSpec, rows: list[dict]) -> float | None:
        key = prepare_hash(group, spec)
        if key in prepared or store.prepared_dir(group, spec).is_dir():
            return 0.0
        prepared.add(key)
        if key in timed_prep:  # this very state was prepared before (same model, pre-training settings)
            return median(timed_prep[key])
        fresh = [r for r in rows if not r.get("prepare_cached")]
        if not fresh:
            return None
        skip = FORGET_ONLY_FIELDS.get(spec.name, ())
        nearest = min(distance(r, spec, skip) for r in fresh)
        if nearest > 1:  # no finished cell prepared anything like it: unknown, not a guess
            return None
        return median(
            [float(r.get("prepare_seconds") or 0.0) for r in fresh if distance(r, spec, skip) == nearest]
        )

    def estimate(group: Group, spec: MethodSpec) -> float | None:
        exact = by_cell.get(cell_hash(group, spec), [])  # this very cell, measured in the history
        rows = peers(group, spec)
        if not rows:
            return None
        prep = prepare_estimate(group, spec, rows)
        if prep is None:
            return None
        if exact:
            return median([forget_seconds(r, spec) for r in exact]) + prep
        near = min(distance(r, spec) for r in rows)  # Ours(0) is not timed like Ours(3)
        return median([forget_seconds(r, spec) for r in rows if distance(r, spec) == near]) + prep

    def train_seconds(rows: list[dict]) -> list[float]:
        return [
            float(r["model"]["train_seconds"])
            for r in rows
            if isinstance(r.get("model"), dict) and r["model"].get("train_seconds") is not None
        ]

    def train_estimate(group: Group) -> float | None:
        """The training time recorded for this very model (its attacked hash), else the median for the
        group's dataset and backbone: OUT's, else the history's."""
        same_model = [r for r in ok + past if (r.get("hashes") or {}).get("attacked") == group.attacked_hash]
        same_data = [[r for r in pool if _same_data(r, group)] for pool in (ok, past)]
        for rows in (same_model, *same_data):
            if seconds := train_seconds(rows):
                return median(seconds)
        return None

    progress = {p["key"]: p for p in store.in_progress()}

    def resumes(group: Group, spec: MethodSpec, needs_model: bool) -> str:
        """What a run of this pending cell resumes: its models' saved training, its own scratch."""
        said = []
        models = (("clean model", group.clean_hash), ("model", group.attacked_hash)) if needs_model else ()
        for what, key in models:
            if key in progress and progress[key].get("epoch"):
                said.append(f"{what} after epoch {progress[key]['epoch']}")
        cell = progress.get(cell_hash(group, spec)) or {}
        for what, name in (("retrain", "Retrain"), ("pretrain", "pre-training")):
            state = cell.get(what) or {}
            if state.get("done"):
                said.append(f"{name} done")
            elif state.get("epoch"):
                said.append(f"{name} after epoch {state['epoch']}")
        if cell.get("shards"):
            said.append(f"{cell['shards']} shards trained")
        return "; ".join(said)

    out: list[CellStatus] = []
    for group in groups(config):
        needs_model = not store.has_model(group)
        for spec in config.methods:
            rec = results.latest_ok(cell_hash(group, spec))
            if rec is not None:
                out.append(CellStatus(group, spec.title, spec.name, True, _cell_seconds(rec)))
                continue
            est = estimate(group, spec)
            said = resumes(group, spec, needs_model)
            if needs_model:
                t = train_estimate(group)
                est = None if est is None or t is None else est + t
                needs_model = False
            out.append(CellStatus(group, spec.title, spec.name, False, est, said))
    return out
