"""The grid's cache: datasets, trained models, requests, attacks and prepared methods, each built once.

Everything expensive is stored under one root folder by the hashes of :mod:`~unlearnrec.experiments.grid`
(so a grid stopped at any point resumes from any checkout that computes the same hashes):

- ``models/<hash>/``: the clean, attacked (no attack: original) and retrained models (checkpoint
  directories);
- ``attacks/<key>/``: the adversarial edges; ``requests/<key>/``: the random and node requests;
- ``prepared/<hash>/``: what a method's ``prepare`` built (``save_prepared``/``load_prepared``);
  without an attack ``prepare`` sees the same model and training set at every ratio and request
  kind, so one entry serves them all;
- ``partial/<hash>/``: the saved state of a model being trained (:mod:`unlearnrec.train.resume`),
  ``scratch/<cell>/``: a cell's resumable work (the Retrain's training state, the partition
  baselines' trained shards). A run stopped half-way through a training resumes it from there;
  each is removed once its model is stored or its cell's record is written.

Every entry is written aside and renamed into place (or its ``meta.json`` written last), so a crash
never leaves a half-written entry, and an entry whose fingerprints do not match is built again.

``fallbacks``: other roots searched for an entry the cache does not have, such as a grid's ``OUT`` from
before the cache moved out of it (``OUT/models``, ``OUT/attacks``, ...): such a grid resumes without
retraining; new entries always go to ``root``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.config import from_dict
from unlearnrec.data.datasets import Dataset, load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.requests import sample_edges
from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments.grid import (
    NODE_REQUESTS,
    ExperimentConfig,
    Group,
    MethodSpec,
    cell_hash,
    clean_spec,
    split_of,
)
from unlearnrec.experiments.grid import prepare_hash as _prepare_hash
from unlearnrec.experiments.protocol import Attack, AttackConfig, attack_key, build_attack
from unlearnrec.io.checkpoint import atomic_write_bytes, atomic_write_text
from unlearnrec.model import TrainedModel
from unlearnrec.runtime import resolve_device
from unlearnrec.train import resume
from unlearnrec.train.loop import TrainConfig, fit
from unlearnrec.unlearn.base import MemoryMeter, Request, Unlearner

log = logging.getLogger(__name__)


class Store:
    """The cache of one grid under ``root`` (see the module docstring); artefacts are built on first use."""

    def __init__(
        self,
        config: ExperimentConfig,
        root: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        fallbacks: tuple[str | os.PathLike, ...] = (),
    ):
        self.config = config
        self.root = Path(root)
        self.fallbacks = tuple(Path(f) for f in fallbacks if Path(f).resolve() != self.root.resolve())
        self.data_dir = data_dir if data_dir is not None else config.data_dir
        self.device = resolve_device(device or config.device)
        self._data: dict[str, Dataset] = {}
        self._models: dict[str, TrainedModel] = {}
        self._attacks: dict[Any, Attack] = {}
        self._nodes: dict[str, np.ndarray] = {}  # request key -> the users / items forgotten whole
        self.checkpoint_every = 600.0  # seconds between the saved states of a model being trained

    # ---------------------------------------------------------------- datasets
    def dataset(self, name: str) -> Dataset:
        """The dataset ``name`` with the grid's split (loaded once)."""
        if name not in self._data:
            t = time.perf_counter()
            self._data[name] = load_dataset(
                name, self.data_dir, val_ratio=self.config.val_ratio, seed=self.config.split_seed
            )
            log.info("loaded %s in %.1fs: %s", name, time.perf_counter() - t, self._data[name].stats())
        return self._data[name]

    def use_dataset(self, name: str, data: Dataset) -> None:
        """Serve ``data`` for ``name`` instead of loading it (tests, data built in memory)."""
        self._data[name] = data

    def _entry(self, kind: str, key: str) -> Path:
        """Entry ``kind/key``: in the root, else in a fallback that has it, else (new) in the root."""
        for root in (self.root, *self.fallbacks):
            if (root / kind / key).exists():
                return root / kind / key
        return self.root / kind / key

    # ---------------------------------------------------------------- models
    def model_dir(self, key: str) -> Path:
        """Where the model of hash ``key`` is (or will be) stored."""
        return self._entry("models", key)

    def has_model(self, group: Group) -> bool:
        """Whether the group's model to unlearn is stored already."""
        return (self.model_dir(group.attacked_hash) / "meta.json").is_file()

    def model(self, group: Group) -> TrainedModel:
        """The model to unlearn: trained on the attacked set, or (no attack) on the clean one."""
        data = self.dataset(group.dataset)
        if group.request != "adversarial":
            train, meta = data.train, {"role": "original"}
        else:
            att = self.attack(group)
            train, meta = att.train, {"role": "attacked", "attack": att.meta}
        return self._trained(group.attacked_hash, group.dataset, group.backbone, group.backbone_cfg,
                             group.train_cfg, train, data, meta)  # fmt: skip

    def clean_model(self, group: Group) -> TrainedModel:
        """The attack's clean LightGCN of the group's dataset and seed."""
        data = self.dataset(group.dataset)
        h, mcfg, tcfg = clean_spec(self.config, group.dataset, group.seed)
        return self._trained(h, group.dataset, "lightgcn", mcfg, tcfg, data.train, data, {"role": "clean"})

    def evict(self, group: Group) -> None:
        """Forget the in-memory copy of the group's model (it is reloaded from disk when asked again)."""
        self._models.pop(group.attacked_hash, None)

    def retrained(self, group: Group, spec: MethodSpec) -> TrainedModel | None:
        """The retrained model of a Retrain cell, from memory or ``models/``; None if there is none."""
        key = cell_hash(group, spec)
        if key in self._models:
            return self._models[key]
        folder = self.model_dir(key)
        if (folder / "meta.json").is_file():
            try:
                self._models[key] = TrainedModel.load(folder, device=self.device)
                return self._models[key]
            except UnlearnRecError as e:
                log.warning("retrained model %s unreadable: %s", folder, e)
        return None

    def save_retrained(self, group: Group, spec: MethodSpec, model: TrainedModel) -> None:
        """Keep the model a Retrain cell produced (the reference of the other methods)."""
        key = cell_hash(group, spec)
        model.save(self.model_dir(key), config_hash=key, role="retrained")
        self._models[key] = model

    def _trained(
        self,
        key: str,
        dataset: str,
        backbone: str,
        bcfg: dict,
        tcfg: dict,
        train: Interactions,
        data: Dataset,
        meta: dict,
    ) -> TrainedModel:
        """Train (or load from ``models/<key>``) a backbone on ``train``."""
        if key in self._models:
            return self._models[key]
        folder = self.model_dir(key)
        if (folder / "meta.json").is_file():
            try:
                model = TrainedModel.load(folder, device=self.device)
                if model.train.fingerprint() == train.fingerprint():
                    log.info("model %s %s from cache %s", backbone, dataset, folder)
                    self._models[key] = model
                    return model
                log.warning("cached model %s was trained on other data; retraining", folder)
            except UnlearnRecError as e:
                log.warning("cached model %s unreadable (%s); retraining", folder, e)
        cfg = from_dict(TrainConfig, tcfg, "train")
        graph = Graph.from_interactions(train, device=self.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        net = build_backbone(backbone, train.num_users, train.num_items, bcfg, generator=gen).to(self.device)
        log.info("training %s on %s (%d edges, up to %d epochs)", backbone, dataset, len(train), cfg.epochs)
        partial = self.root / "partial" / key
        res = fit(net, graph, cfg, val=data.val, checkpoint=partial, checkpoint_every=self.checkpoint_every)
        model = TrainedModel(
            net,
            graph,
            backbone,
            dataset,
            split_of(self.config),
            meta={"original_train_fingerprint": data.train.fingerprint(), **meta},
        )
        model.meta.update(
            {
                "train_config": tcfg,
                "best_epoch": res.best_epoch,
                "train_seconds": res.seconds,
                "epochs_run": res.epochs_run,
                "metrics": {"test": model.evaluate(data, "test", cfg.ks)},
                "config_hash": key,
            }
        )
        if res.resumed_epoch:
            model.meta["resumed_after_epoch"] = res.resumed_epoch
        model.save(folder)
        resume.discard(partial)
        self._models[key] = model
        return model

    # ---------------------------------------------------------------- requests
    def forget_set(self, group: Group) -> Attack:
        """The group's training set (of the model to unlearn) and the edges to forget, as an
        :class:`~unlearnrec.experiments.protocol.Attack`: the adversarial one, the random request,
        or every training edge of the users / items of a node request."""
        return self.attack(group) if group.request == "adversarial" else self._drawn(group)

    def request(self, group: Group) -> Request:
        """The :class:`Request` a method receives: the forgotten edges, and for users / items
        requests the whole nodes (``Request.of_users`` / ``of_items``: their rows are erased)."""
        att = self.forget_set(group)
        if group.request == "users":
            return Request.of_users(att.train, self._nodes[group.request_key])
        if group.request == "items":
            return Request.of_items(att.train, self._nodes[group.request_key])
        return Request(att.edges)

    def attack(self, group: Group) -> Attack:
        """The adversarial edges of a group (docs/method.md §7), built once per clean model and ratio."""
        key = (group.clean_hash, group.ratio)
        if key not in self._attacks:
            data = self.dataset(group.dataset)
            ue, ie = self.clean_model(group).embeddings()
            cfg = AttackConfig(
                user_ratio=group.ratio, item_ratio=group.item_ratio, batch_size=self.config.attack_batch
            )
            name = attack_key(group.dataset, group.seed, cfg, group.clean_hash, data.train.fingerprint())
            self._attacks[key] = build_attack(
                ue,
                ie,
                data.train,
                [data.val, data.test],
                cfg,
                group.seed,
                dataset=group.dataset,
                clean_id=group.clean_hash,
                cache_dir=self._entry("attacks", name).parent,
            )
        return self._attacks[key]

    def _drawn(self, group: Group) -> Attack:
        """A drawn request, stored under ``requests/<key>/`` so a resumed run forgets the same edges:

        - ``random``: a uniform random ``ratio`` of the clean training edges (at least one);
        - ``users`` / ``items``: ``max(1, round(ratio * n))`` nodes drawn uniformly among those with
          a training edge, with every training edge of theirs.

        Both are seeded by the grid seed."""
        key = group.request_key
        if key in self._attacks:
            return self._attacks[key]
        kind = group.request
        train = self.dataset(group.dataset).train
        folder = self._entry("requests", key)
        payload = "nodes.npz" if kind in NODE_REQUESTS else "edges.npz"

        def edges_of(nodes: np.ndarray) -> Interactions:
            return train.of_users(nodes) if kind == "users" else train.of_items(nodes)

        nodes = edges = None
        if (folder / "meta.json").is_file() and (folder / payload).is_file():
            meta = json.loads((folder / "meta.json").read_text())
            with np.load(folder / payload) as z:
                if kind in NODE_REQUESTS:
                    nodes = np.asarray(z["nodes"], dtype=np.int64)
                    edges = edges_of(nodes)
                else:
                    edges = Interactions(z["users"], z["items"], train.num_users, train.num_items)
            if (
                meta.get("train_fingerprint") == train.fingerprint()
                and meta.get("edges_fingerprint") == edges.fingerprint()
                and meta.get("kind") == kind
            ):
                log.info("%s request from cache %s (%d edges)", kind, folder, len(edges))
            else:
                log.warning("cached request %s is inconsistent; drawing it again", folder)
                nodes = edges = None
        if edges is None:
            rng = np.random.default_rng(group.seed)
            extra: dict[str, Any] = {}
            if kind in NODE_REQUESTS:
                degree = train.user_degrees() if kind == "users" else train.item_degrees()
                active = np.flatnonzero(degree > 0)
                n = train.num_users if kind == "users" else train.num_items
                count = max(1, int(round(group.ratio * n)))
                if count > len(active):
                    raise UnlearnRecError(
                        f"cannot forget {count} {kind}: only {len(active)} have training edges"
                    )
                nodes = np.sort(rng.choice(active, size=count, replace=False)).astype(np.int64)
                edges = edges_of(nodes)
                extra = {"num_nodes": int(count), "nodes": nodes.tolist()}
            else:
                edges = sample_edges(train, group.ratio, rng)
            meta = {
                "key": key,
                "kind": kind,
                "dataset": group.dataset,
                "seed": int(group.seed),
                "ratio": group.ratio,
                "train_fingerprint": train.fingerprint(),
                "edges_fingerprint": edges.fingerprint(),
                **extra,
                "num_edges": len(edges),
                "fraction_of_train": len(edges) / max(len(train), 1),
            }
            arrays = {"nodes": nodes} if nodes is not None else {"users": edges.users, "items": edges.items}
            # the drawn ids first, meta last: meta.json's presence marks a complete entry
            atomic_write_bytes(folder / payload, writer=lambda f: np.savez(f, **arrays))
            atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        if nodes is not None:
            self._nodes[key] = nodes
        self._attacks[key] = Attack(train, edges, meta)
        return self._attacks[key]

    # ---------------------------------------------------------------- resumable work
    def scratch_dir(self, group: Group, spec: MethodSpec) -> Path:
        """Where the cell's resumable work is kept until its record is written (``Unlearner.set_scratch``)."""
        return self.root / "scratch" / cell_hash(group, spec)

    def in_progress(self) -> list[dict]:
        """The trainings stopped half-way whose state is kept: ``{"kind": "model", "key", "epoch",
        "seconds", "done"}`` (``partial/``), and the cells with resumable work (``scratch/``): ``{"kind":
        "cell", "key", "shards"}`` with ``"retrain"`` / ``"pretrain"`` (``{"epoch", "seconds", "done"}``)
        where they have one."""
        out = []
        for state in sorted(p for p in (self.root / "partial").glob("*") if p.is_dir()):
            if (seen := resume.peek(state)) is not None:
                out.append({"kind": "model", "key": state.name, **seen})
        for cell in sorted(p for p in (self.root / "scratch").glob("*") if p.is_dir()):
            entry: dict = {
                "kind": "cell",
                "key": cell.name,
                "shards": len(list(cell.glob("shards/shard-*.npz"))),
            }
            for what in ("retrain", "pretrain"):  # a Retrain's training, an encoder's pre-training
                if (seen := resume.peek(cell / what)) is not None:
                    entry[what] = seen
            out.append(entry)
        return out

    # ---------------------------------------------------------------- prepared methods
    def prepared_dir(self, group: Group, spec: MethodSpec) -> Path:
        """Where the prepared state of ``spec`` on the group's model is (or will be) stored."""
        return self._entry("prepared", _prepare_hash(group, spec))

    def prepare(
        self, method: Unlearner, group: Group, spec: MethodSpec, model: TrainedModel, train: Interactions
    ) -> tuple[float, float, bool]:
        """``method.prepare`` through the cache; returns (seconds, peak MiB, from_cache)."""
        folder = self.prepared_dir(group, spec)
        if folder.is_dir() and method.load_prepared(folder, model):
            log.info("%s: prepared state from cache %s", spec.title, folder)
            return 0.0, 0.0, True
        with MemoryMeter(self.device) as mem:
            t = time.perf_counter()
            method.prepare(model, train)
            # shards an earlier, stopped preparation trained and this one reused count too
            seconds = time.perf_counter() - t + method.take_carried()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:  # written aside and renamed: a crash never leaves a half-written entry
            if method.save_prepared(tmp):
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return seconds, mem.peak_mb, False
