"""Issue 21's Ours(0) pre-training-length study: one pre-training run, Ours(k) at its checkpoints.

For one setup (a grid whose attacked model and request are cached) the paper-rule encoder is
pre-trained once up to the longest checkpoint; after each checkpoint epoch (``on_epoch`` of
:func:`~unlearnrec.unlearn.unlearnrec.pretrain.pretrain`, bit-identical to a run of that length)
Ours(k) forgets the setup's request and is measured exactly as a grid cell is
(:func:`~unlearnrec.experiments.cell.run_cell`): Recall@20 / NDCG@20 of the unlearned model, MI-BF,
MI-NG and the membership AUC of :func:`~unlearnrec.eval.membership.forgetting_metrics`. One JSON
line per (checkpoint, k) is appended (fsynced) to ``results.jsonl`` of the study folder as it goes,
and each checkpoint's encoder is kept (``encoders/epoch-NNN``), so a killed run keeps what it did
and a re-run evaluates only what is missing (pre-training again only if an encoder it needs is
missing). Epoch 0 is the untrained encoder: Ours(0) there is the grid's "Residual graph only" row.

Two roles:

- ``"evaluated"`` (E): the grid the question is about; ranking on its **test** split.
- ``"validation"`` (V): a held-out attack (its own clean model, adversarial edges and attacked
  model on 90% of the training split); ranking on its held-out **validation** split. The test
  split is never read in this role: not for the ranking, not for MI's sampled non-edges (whose
  known edges are then training + validation only).

The selection rules that pick a pre-training length on V's rows, and the summary tables, are the
pure functions of :mod:`~unlearnrec.experiments.pretrain_select`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearnrec.config import from_dict, to_dict
from unlearnrec.errors import UnlearnRecError
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.experiments.cell import stamp, versions
from unlearnrec.experiments.grid import ExperimentConfig, Group, cell_hash, groups
from unlearnrec.experiments.results import ResultsLog
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.method import UnlearnRec

log = logging.getLogger(__name__)

ROLES = {"evaluated": "test", "validation": "val"}
STUDY_DIR = "ours0-pretrain-study"
#: the summary metrics of every row
METRICS = ("recall@20", "ndcg@20", "mi_bf", "mi_ng", "auc")


# ================================================================== running one setup
@dataclass(frozen=True)
class StudySpec:
    """What one study run does: the paper-rule encoder config (pre-training fields of
    :class:`UnlearnRecConfig`, ``epochs`` excluded), the checkpoint epochs (0 allowed: the
    untrained encoder), the Ours(k) to run at each (k -> extra config fields, e.g. the fine-tuning
    batch and lr) and the role (``evaluated`` or ``validation``)."""

    encoder: dict[str, Any]
    checkpoints: tuple[int, ...]
    ks: dict[int, dict[str, Any]]
    role: str

    def __post_init__(self):
        if self.role not in ROLES:
            raise UnlearnRecError(f"role must be one of {sorted(ROLES)}, got {self.role!r}")
        if not self.checkpoints or any(e < 0 for e in self.checkpoints):
            raise UnlearnRecError(f"checkpoints must be epochs >= 0, got {list(self.checkpoints)}")
        if 0 not in self.ks:
            raise UnlearnRecError("the study needs Ours(0) (k = 0)")
        for bad in ("epochs", "finetune_epochs"):
            if bad in self.encoder:
                raise UnlearnRecError(f"encoder config: {bad!r} is set by the study, not by the config")
        self.config(0, 0)  # unknown keys or bad values fail here, before anything runs

    @property
    def split(self) -> str:
        return ROLES[self.role]

    def config(self, epoch: int, k: int) -> UnlearnRecConfig:
        """The UnlearnRec config of Ours(k) with an encoder pre-trained for ``epoch`` epochs."""
        fields = {**self.encoder, **(self.ks.get(k) or {}), "epochs": epoch, "finetune_epochs": k}
        return from_dict(UnlearnRecConfig, fields, "unlearnrec")

    @property
    def key(self) -> str:
        """A hash of the encoder config (the rows of another config are not mixed with these)."""
        blob = json.dumps(to_dict(self.config(0, 0)), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def the_group(config: ExperimentConfig) -> Group:
    """The one group of a single-group grid (one dataset, backbone, ratio and seed)."""
    gs = groups(config)
    if len(gs) != 1:
        raise UnlearnRecError(f"grid {config.name!r} has {len(gs)} groups; the study takes a one-group grid")
    return gs[0]


def row_id(spec: StudySpec, epoch: int, k: int) -> str:
    """The ``cell`` key of a checkpoint row."""
    return f"{spec.role}-{spec.key}-e{epoch}-k{k}"


class PretrainStudy:
    """One setup's study: its store (the grid's cache), group, spec and study folder ``out``.

    Nothing is trained here but the encoder: the grid's attacked model must be in the cache
    (otherwise a clear :class:`UnlearnRecError`). ``on_row(row)`` is called after each row.
    """

    def __init__(
        self,
        store: Store,
        spec: StudySpec,
        out: str | os.PathLike,
        on_row: Callable[[dict], None] | None = None,
    ):
        self.store = store
        self.spec = spec
        self.out = Path(out)
        self.on_row = on_row
        self.group = the_group(store.config)
        if store.config.request != "adversarial":
            raise UnlearnRecError("the study takes an adversarial grid (the authors' attack)")
        if not store.has_model(self.group):
            raise UnlearnRecError(
                f"grid {store.config.name!r}: its attacked model is not in the cache {store.root} "
                "(run the grid first; the study trains no model)"
            )
        self.results = ResultsLog(self.out)

    # ------------------------------------------------------------------ setup
    def _load(self) -> None:
        g, store = self.group, self.store
        self.data = store.dataset(g.dataset)
        if self.spec.split == "val" and len(self.data.val) == 0:
            raise UnlearnRecError(f"grid {store.config.name!r} has no validation split (val_ratio = 0)")
        self.att = store.forget_set(g)
        self.model = store.model(g)
        self.request = store.request(g)
        known = self.att.train.union(self.data.val)
        if self.spec.split == "test":  # the validation role never reads the test split
            known = known.union(self.data.test)
        self.known = known
        self.before = self.model.embeddings()
        retrain = next((m for m in store.config.methods if m.name == "retrain"), None)
        ref = store.retrained(g, retrain) if retrain is not None and self.spec.split == "test" else None
        self.reference = ref.embeddings() if ref is not None else None

    def _base(self, **extra: Any) -> dict:
        g, cfg = self.group, self.store.config
        return {
            "study": "ours0-pretrain",
            "role": self.spec.role,
            "split": self.spec.split,
            "experiment": cfg.name,
            "dataset": g.dataset,
            "backbone": g.backbone,
            "ratio": g.ratio,
            "seed": g.seed,
            "hashes": {"clean": g.clean_hash, "attacked": g.attacked_hash},
            "encoder_key": self.spec.key,
            "encoder_config": dict(self.spec.encoder),
            "request_edges": len(self.att.edges),
            "versions": versions(),
            **extra,
        }

    def _emit(self, row: dict) -> None:
        self.results.append(stamp(row))
        if self.on_row is not None:
            self.on_row(row)

    def _pending(self, epoch: int) -> list[int]:
        ks = [0] if epoch == 0 else sorted(self.spec.ks)
        return [k for k in ks if row_id(self.spec, epoch, k) not in self.results.done]

    def encoder_dir(self, epoch: int) -> Path:
        return self.out / "encoders" / f"{self.spec.role}-{self.spec.key}" / f"epoch-{epoch:03d}"

    # ------------------------------------------------------------------ one checkpoint
    def measure(self, epoch: int, state: dict[str, torch.Tensor], history: list[dict]) -> None:
        """Ours(k) for every pending k with the encoder ``state`` after ``epoch`` epochs."""
        self._keep_encoder(epoch, state, history)
        pre_s = float(history[-1]["seconds"]) if history else 0.0
        for k in self._pending(epoch):
            cfg = self.spec.config(epoch, k)
            method = UnlearnRec.with_encoder(cfg, state, self.model, seed=self.group.seed, history=history)
            method.set_validation(self.data.val)
            t = time.perf_counter()
            result = method.forget(self.model, self.att.train, self.request)
            new = result.model
            metrics: dict[str, Any] = {
                k2: v for k2, v in new.evaluate(self.data, self.spec.split).items() if k2 != "users"
            }
            metrics.update(
                forgetting_metrics(
                    self.before,
                    new.embeddings(),
                    self.att.edges,
                    self.known,
                    retained=new.train,
                    reference=self.reference,
                    seed=self.group.seed,
                    max_retained=self.store.config.max_retained,
                )
            )
            row = self._base(
                kind="checkpoint",
                cell=row_id(self.spec, epoch, k),
                status="ok",
                epoch=epoch,
                k=k,
                label=f"Ours({k}) @ {epoch} epochs",
                method_config=to_dict(cfg),
                metrics=metrics,
                forget_seconds=result.seconds,
                measure_seconds=time.perf_counter() - t,
                pretrain_seconds=pre_s,
                pretrain_row=dict(history[-1]) if history else {},
                finetune_steps=result.info.get("finetune_steps_run", 0),
            )
            log.info(
                "%s epoch %d Ours(%d): %s (pre-training %.0fs)",
                self.spec.role,
                epoch,
                k,
                {m: round(float(metrics[m]), 4) for m in METRICS},
                pre_s,
            )
            self._emit(row)

    def _keep_encoder(self, epoch: int, state: dict[str, torch.Tensor], history: list[dict]) -> None:
        folder = self.encoder_dir(epoch)
        if (folder / "meta.json").is_file():
            return
        m = UnlearnRec.with_encoder(self.spec.config(epoch, 0), state, self.model, self.group.seed, history)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:  # written aside and renamed: never half-written
            m.save_prepared(tmp)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _saved(self, epoch: int) -> tuple[dict[str, torch.Tensor], list[dict]] | None:
        folder = self.encoder_dir(epoch)
        if not (folder / "meta.json").is_file():
            return None
        m = UnlearnRec.from_encoder(folder, self.model)
        if to_dict(m.config) != to_dict(self.spec.config(epoch, 0)):
            log.warning("%s: another encoder config; pre-training again", folder)
            return None
        return {k: v.clone() for k, v in m.encoder.state_dict().items()}, list(m.history)

    # ------------------------------------------------------------------ the whole run
    def run(self) -> None:
        """Measure every pending (checkpoint, k); pre-train only if a needed encoder is not kept."""
        self._load()
        if not any(r.get("kind") == "model" for r in self.results.records):
            ranking = self.model.evaluate(self.data, self.spec.split)
            self._emit(
                self._base(
                    kind="model",
                    status="ok",
                    label="attacked model (before forgetting)",
                    metrics={k: v for k, v in ranking.items() if k != "users"},
                    model={k: self.model.meta.get(k) for k in ("train_seconds", "epochs_run")},
                )
            )
        todo = [e for e in sorted(set(self.spec.checkpoints)) if self._pending(e)]
        if not todo:
            log.info("%s: every checkpoint measured", self.spec.role)
            return
        saved = {e: self._saved(e) for e in todo if e > 0}
        if 0 in todo:
            fresh = UnlearnRec(self.spec.config(0, 0), seed=self.group.seed).new_encoder(self.model)
            self.measure(0, {k: v.detach().clone() for k, v in fresh.state_dict().items()}, [])
        if all(saved.get(e) is not None for e in todo if e > 0):
            for e in todo:
                if e > 0:
                    self.measure(e, *saved[e])
            return
        wanted = {e for e in todo if e > 0}
        last = max(wanted)
        history: list[dict] = []

        def on_epoch(epoch: int, state: dict[str, torch.Tensor], row: dict) -> None:
            history.append(row)
            if epoch in wanted:
                self.measure(epoch, state, list(history))

        method = UnlearnRec(self.spec.config(last, 0), seed=self.group.seed)
        method.on_epoch = on_epoch
        log.info(
            "%s: pre-training the encoder for %d epochs (checkpoints %s)",
            self.spec.role,
            last,
            sorted(wanted),
        )
        method.prepare(self.model, self.att.train)


def grid_row(
    out_dir: str | os.PathLike, config: ExperimentConfig, method: str, method_config: dict
) -> dict | None:
    """The grid's latest ok record of the method with exactly ``method_config`` (e.g. Retrain, the
    grid's own 10-epoch Ours(0)), or None."""
    g = the_group(config)
    log_ = ResultsLog(out_dir)
    for spec in config.methods:
        if spec.name == method and dict(spec.config) == dict(method_config):
            return log_.latest_ok(cell_hash(g, spec))
    return None
