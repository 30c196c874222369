"""Run a grid: every pending cell, in order, into ``OUT/results.jsonl``; resume; progress; status.

Four kinds of deletion request (the grid's ``request``; :mod:`~unlearnrec.experiments.grid`):

- ``"adversarial"`` (the default; Table 2): for each dataset, seed and user ratio a clean LightGCN
  is trained and the adversarial edges are built from it (docs/method.md §7); for each backbone the model
  to unlearn is trained on the attacked set; every method forgets the adversarial edges.
- ``"random"`` (the unlearning-ratio study, Table 5): no attack. For each dataset, seed and backbone
  one model is trained on the clean training set and shared by every ratio of ``request_ratios``; a
  ratio r forgets a uniform random r of the clean training edges (at least one). Retrain trains on
  the residual set.
- ``"users"`` / ``"items"`` (whole-node forgetting, as ``unlearnrec forget --user``): like
  ``"random"``, but a ratio r draws ``max(1, round(r * num_users))`` users (items) with a training
  edge and forgets every training edge of each. The method receives ``Request.of_users`` /
  ``Request.of_items``, so the nodes' layer-0 rows are erased. For erased users MI-NG is exactly 1 by
  construction, not a bug: such a user has a zero layer-0 row and no edge left, so every item scores
  0 for it, the forgotten edges and the same-user non-edges alike.

One JSON line per cell is appended to ``OUT/results.jsonl`` (:mod:`~unlearnrec.experiments.cell`).
Everything expensive (models, attacks, requests, prepared methods) is cached by
:class:`~unlearnrec.experiments.store.Store` under the cache root: ``$UNLEARNREC_CACHE``, by default
``~/.cache/unlearnrec``, outside any work tree and keyed by the config hashes, so a grid stopped at
any point resumes from a fresh checkout without retraining what it has. A re-run skips every cell
already in ``results.jsonl`` with status ``ok`` (and trains nothing if a whole group is done), so a
crash or Ctrl-C loses at most the cell in progress. A cell that fails (a method whose module is not
importable yet, a diverging run) is recorded with status ``error`` and retried on the next run; it
never stops the grid. The pre-training sidecars of the prepared methods (``prepared/<hash>/meta.json``,
the loss curves of the report) are copied next to the results.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnrec.experiments.cell import SUMMARY_METRICS, Builder, error_record, run_cell, stamp
from unlearnrec.experiments.grid import (  # noqa: F401 (re-exported: the runner's names before issue 23)
    FORGET_ONLY_FIELDS,
    LATER_FIELDS,
    NODE_REQUESTS,
    REQUESTS,
    ExperimentConfig,
    Group,
    MethodSpec,
    cell_hash,
    check_methods,
    config_hash,
    groups,
    load_config,
    model_config_dict,
    prepare_hash,
    prepared_key,
)
from unlearnrec.experiments.results import RESULTS, ResultsLog, read_results  # noqa: F401 (re-export)
from unlearnrec.experiments.store import Store
from unlearnrec.runtime import resolve_device

log = logging.getLogger(__name__)

CACHE_ENV = "UNLEARNREC_CACHE"


def default_cache() -> Path:
    """The cache root: ``$UNLEARNREC_CACHE``, else ``~/.cache/unlearnrec`` (``$XDG_CACHE_HOME`` honoured)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "unlearnrec"


class Runner:
    """Runs one :class:`ExperimentConfig` into ``out_dir`` (results) with its cache under ``cache_dir``.

    ``build(name, config, seed)`` makes a method (default: the registry's ``build_method``, which
    refuses unknown names before any cell runs); ``on_cell(record)`` is called after each cell.
    The constructor reads and writes nothing.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None = None,
        device: str | None = None,
        build: Builder | None = None,
        on_cell: Callable[[dict], None] | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        from unlearnrec.unlearn.registry import build_method

        self.config = config
        self.out = Path(out_dir)
        self.build = build or build_method
        self._check_names = build is None
        self.on_cell = on_cell
        # an OUT written before the cache moved out of it still holds its models, attacks and encoders
        self.store = Store(
            config,
            default_cache() if cache_dir is None else cache_dir,
            data_dir=data_dir,
            device=device,
            fallbacks=(self.out,),
        )

    @property
    def device(self):
        return self.store.device

    def groups(self) -> list[Group]:
        """Every group of the grid (no data is read)."""
        return groups(self.config)

    def run(self) -> list[dict]:
        """Run every pending cell; returns the records written by this run."""
        if self._check_names:
            check_methods(self.config)
        results = ResultsLog(self.out)
        written: list[dict] = []

        def emit(rec: dict) -> None:
            results.append(stamp(rec))
            written.append(rec)
            if self.on_cell is not None:
                self.on_cell(rec)

        # retrain first: its model is the reference distribution of every other method
        methods = sorted(self.config.methods, key=lambda m: m.name != "retrain")
        retrain = next((m for m in methods if m.name == "retrain"), None)
        for group in self.groups():
            pending = [m for m in methods if cell_hash(group, m) not in results.done]
            if not pending:
                log.info("group %s done; skipped", group.tag)
                continue
            try:
                self.store.model(group)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # e.g. a dataset that cannot be read: fail its cells, go on
                log.exception("group %s could not be set up", group.tag)
                for m in pending:
                    emit(error_record(self.config, group, m, self.device, e))
                continue
            for spec in pending:
                is_retrain = spec.name == "retrain"
                reference = self.store.retrained(group, retrain) if retrain and not is_retrain else None
                try:
                    rec, result = run_cell(self.store, group, spec, self.build, reference)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # a broken method fails its cell, never the grid
                    emit(error_record(self.config, group, spec, self.device, e))
                    continue
                if is_retrain:
                    self.store.save_retrained(group, spec, result.model)
                elif retrain is not None and reference is not None:
                    ref = results.latest_ok(cell_hash(group, retrain))
                    if ref is not None:
                        rec["reference"] = {k: ref["metrics"].get(k) for k in SUMMARY_METRICS}
                keep_prepared_sidecar(self.store, self.out, group, spec)
                log.info(
                    "%s %s: %s",
                    group.tag,
                    spec.title,
                    {k: round(v, 4) for k, v in rec["metrics"].items() if k in SUMMARY_METRICS},
                )
                emit(rec)
        return written


def keep_prepared_sidecar(store: Store, out: Path, group: Group, spec: MethodSpec) -> None:
    """Copy a prepared state's ``meta.json`` (its pre-training curve) next to the results in ``out``."""
    src = store.prepared_dir(group, spec) / "meta.json"
    dst = out / "prepared" / src.parent.name / "meta.json"
    if src.is_file() and not dst.is_file() and src.resolve() != dst.resolve():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


# ---------------------------------------------------------------------------------------- status
@dataclass(frozen=True)
class CellStatus:
    """One cell of a grid: done or pending, with its recorded or estimated seconds (None: unknown)."""

    group: Group
    label: str
    method: str
    done: bool
    seconds: float | None


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


def _dataset_name(dataset: Any) -> str:
    """A dataset as records name it: a registry name, or a folder's last part (a grid's path to a
    folder of ours and a record's from another machine match by name)."""
    return os.path.basename(str(dataset).rstrip("/"))


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
            lambda r: (
                (_dataset_name(r.get("dataset")), r.get("backbone"))
                == (_dataset_name(group.dataset), group.backbone)
            ),
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
        same_model = [r for r in ok + past if (r.get("hashes") or {}).get("attacked") == group.attacked_hash]
        if train_seconds(same_model):
            return median(train_seconds(same_model))
        for pool in (ok, past):
            rows = [
                r
                for r in pool
                if (_dataset_name(r.get("dataset")), r.get("backbone"))
                == (_dataset_name(group.dataset), group.backbone)
            ]
            if train_seconds(rows):
                return median(train_seconds(rows))
        return None

    out: list[CellStatus] = []
    for group in groups(config):
        needs_model = not store.has_model(group)
        for spec in config.methods:
            rec = results.latest_ok(cell_hash(group, spec))
            if rec is not None:
                out.append(CellStatus(group, spec.title, spec.name, True, _cell_seconds(rec)))
                continue
            est = estimate(group, spec)
            if needs_model:
                t = train_estimate(group)
                est = None if est is None or t is None else est + t
                needs_model = False
            out.append(CellStatus(group, spec.title, spec.name, False, est))
    return out


def run_experiment(
    config: str | os.PathLike | dict[str, Any] | ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    build: Builder | None = None,
    on_cell: Callable[[dict], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Run (or resume) the grid of ``config`` into ``out_dir``; returns this run's cell records.

    ``build(name, config, seed)`` makes a method (default: the registry's ``build_method``);
    ``on_cell(record)`` is called after each cell (progress display); ``cache_dir``: the cache root
    (default :func:`default_cache`).
    """
    cfg = load_config(config)
    resolve_device(device or cfg.device)  # a device that is not there fails before anything is written
    runner = Runner(
        cfg, out_dir, data_dir=data_dir, device=device, build=build, on_cell=on_cell, cache_dir=cache_dir
    )
    if not isinstance(config, (dict, ExperimentConfig)):
        # keep each grid run into this directory next to its results, for the record
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, Path(out_dir) / f"experiment-{cfg.name}.toml")
    return runner.run()
