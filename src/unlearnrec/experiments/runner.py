"""Run a grid: every pending cell, in order, into ``OUT/results.jsonl``; resume; progress (the listing of
done and pending cells: :mod:`~unlearnrec.experiments.status`).

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
import os
import shutil
from collections.abc import Callable
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
)
from unlearnrec.experiments.results import RESULTS, ResultsLog, read_results  # noqa: F401 (re-export)
from unlearnrec.experiments.store import Store
from unlearnrec.runtime import resolve_device
from unlearnrec.train import resume

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
        checkpoint_every: float = 600.0,
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
        self.store.checkpoint_every = checkpoint_every

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
                resume.discard(self.store.scratch_dir(group, spec))  # its result is kept: nothing to resume
        return written


def keep_prepared_sidecar(store: Store, out: Path, group: Group, spec: MethodSpec) -> None:
    """Copy a prepared state's ``meta.json`` (its pre-training curve) next to the results in ``out``."""
    src = store.prepared_dir(group, spec) / "meta.json"
    dst = out / "prepared" / src.parent.name / "meta.json"
    if src.is_file() and not dst.is_file() and src.resolve() != dst.resolve():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def run_experiment(
    config: str | os.PathLike | dict[str, Any] | ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    build: Builder | None = None,
    on_cell: Callable[[dict], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    checkpoint_every: float = 600.0,
) -> list[dict]:
    """Run (or resume) the grid of ``config`` into ``out_dir``; returns this run's cell records.

    ``build(name, config, seed)`` makes a method (default: the registry's ``build_method``);
    ``on_cell(record)`` is called after each cell (progress display); ``cache_dir``: the cache root
    (default :func:`default_cache`); ``checkpoint_every``: seconds between the saved states of a
    model being trained (the grid's models and Retrain's; a stopped run resumes from the last one).
    """
    cfg = load_config(config)
    resolve_device(device or cfg.device)  # a device that is not there fails before anything is written
    runner = Runner(
        cfg,
        out_dir,
        data_dir=data_dir,
        device=device,
        build=build,
        on_cell=on_cell,
        cache_dir=cache_dir,
        checkpoint_every=checkpoint_every,
    )
    if not isinstance(config, (dict, ExperimentConfig)):
        # keep each grid run into this directory next to its results, for the record
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, Path(out_dir) / f"experiment-{cfg.name}.toml")
    return runner.run()
