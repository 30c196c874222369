"""A trained (or unlearned) recommender as a unit: backbone + its training graph + provenance.

A checkpoint directory holds the backbone's tensors, the interactions it was trained on (after
any forgetting: the residual set, never the forgotten edges), and a JSON sidecar with the
backbone config, the dataset name, split seed and fingerprints, metrics and the lineage of
forgetting requests. Loading runs no code and checks the fingerprints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unlearnrec.backbones import LOADABLE, Backbone, backbone_config, build_backbone
from unlearnrec.config import to_dict
from unlearnrec.data.datasets import Dataset, load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import UnlearnRecError
from unlearnrec.eval.ranking import evaluate_embeddings, recommend
from unlearnrec.io.checkpoint import load_checkpoint, reading, save_checkpoint


@dataclass
class TrainedModel:
    """A backbone with the graph it was trained on.

    ``forgotten_users`` / ``forgotten_items``: whole nodes erased by forgetting; they get no
    recommendations (users) or are never recommended (items), and their layer-0 rows are zero.
    ``meta``: provenance (dataset, split, fingerprints, metrics, lineage) kept in the sidecar.
    """

    backbone: Backbone
    graph: Graph
    backbone_name: str
    dataset: str | None = None
    split: dict[str, Any] = field(default_factory=dict)
    forgotten_users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    forgotten_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    meta: dict[str, Any] = field(default_factory=dict)

    def derive(
        self,
        backbone: Backbone,
        graph: Graph | None = None,
        *,
        backbone_name: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> TrainedModel:
        """A new model made from this one: ``backbone`` on ``graph`` (default: this graph, which is
        immutable and shared), with this model's dataset, split and forgotten nodes (copied, so the
        two never share a mutable array) and ``meta`` (default: none inherited)."""
        return TrainedModel(
            backbone=backbone,
            graph=self.graph if graph is None else graph,
            backbone_name=self.backbone_name if backbone_name is None else backbone_name,
            dataset=self.dataset,
            split=dict(self.split),
            forgotten_users=np.array(self.forgotten_users, dtype=np.int64, copy=True),
            forgotten_items=np.array(self.forgotten_items, dtype=np.int64, copy=True),
            meta=dict(meta or {}),
        )

    @property
    def train(self) -> Interactions:
        return self.graph.interactions

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user (U, d), item (I, d)) embeddings; one propagation."""
        self.backbone.eval()
        return self.backbone.embed(self.graph)

    def evaluate(self, data: Dataset, split: str = "test", ks=(20,)) -> dict[str, float]:
        """Recall@K / NDCG@K on ``split`` with all known training interactions masked."""
        target = {"test": data.test, "val": data.val}[split]
        exclude = [self.train] if split == "val" else [self.train, data.val]
        users = None
        if len(self.forgotten_users):
            users = np.setdiff1d(np.arange(self.train.num_users), self.forgotten_users)
        ue, ie = self.embeddings()
        return evaluate_embeddings(
            ue, ie, target, exclude=exclude, ks=ks, users=users, banned_items=self.forgotten_items
        )

    def recommend(self, users, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items and scores for ``users``; a forgotten or unknown user is an error."""
        users = np.asarray(users, dtype=np.int64).ravel()
        bad = users[(users < 0) | (users >= self.train.num_users)]
        if len(bad):
            raise UnlearnRecError(f"unknown user id {int(bad[0])} (valid: 0..{self.train.num_users - 1})")
        gone = np.intersect1d(users, self.forgotten_users)
        if len(gone):
            raise UnlearnRecError(f"user {int(gone[0])} has been forgotten: no recommendations")
        ue, ie = self.embeddings()
        return recommend(ue, ie, users, k, exclude=self.train, banned_items=self.forgotten_items)

    # ------------------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike, **extra_meta: Any) -> None:
        """Atomically write the checkpoint directory (safetensors + meta.json)."""
        tensors = {
            "e0": self.backbone.e0.detach(),
            "train_users": torch.from_numpy(self.train.users.copy()),
            "train_items": torch.from_numpy(self.train.items.copy()),
            "forgotten_users": torch.from_numpy(np.asarray(self.forgotten_users, dtype=np.int64)),
            "forgotten_items": torch.from_numpy(np.asarray(self.forgotten_items, dtype=np.int64)),
        }
        for k, v in self.backbone.state_dict().items():
            if k != "e0":
                tensors[f"backbone.{k}"] = v
        meta = {
            **self.meta,
            **extra_meta,
            "kind": "model",
            "backbone": self.backbone_name,
            "backbone_config": to_dict(self.backbone.config),
            "dataset": self.dataset,
            "split": self.split,
            "num_users": self.train.num_users,
            "num_items": self.train.num_items,
            "train_fingerprint": self.train.fingerprint(),
        }
        save_checkpoint(directory, tensors, meta)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: torch.device | str = "cpu") -> TrainedModel:
        """Read a checkpoint directory; anything missing, inconsistent or corrupt is one clear error."""
        tensors, meta = load_checkpoint(directory)
        with reading(directory, "model checkpoint"):
            return cls._from_checkpoint(directory, tensors, meta, device)

    @classmethod
    def _from_checkpoint(cls, directory, tensors: dict, meta: dict, device) -> TrainedModel:
        if meta.get("kind") != "model":
            raise UnlearnRecError(f"{directory}: not a model checkpoint (kind={meta.get('kind')!r})")
        nu, ni = int(meta["num_users"]), int(meta["num_items"])
        train = Interactions(tensors["train_users"].numpy(), tensors["train_items"].numpy(), nu, ni)
        if train.fingerprint() != meta.get("train_fingerprint"):
            raise UnlearnRecError(f"{directory}: training interactions do not match their fingerprint")
        cfg = backbone_config(meta["backbone"], meta["backbone_config"], LOADABLE)
        backbone = build_backbone(meta["backbone"], nu, ni, cfg, registry=LOADABLE)
        if tensors["e0"].is_floating_point() and not bool(torch.isfinite(tensors["e0"]).all()):
            raise UnlearnRecError(f"{directory}: corrupt checkpoint (NaN or inf in the embedding table)")
        state = {"e0": tensors["e0"]}
        state.update({k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")})
        backbone.load_state_dict(state)
        backbone.to(device)
        return cls(
            backbone=backbone,
            graph=Graph.from_interactions(train, device=device),
            backbone_name=meta["backbone"],
            dataset=meta.get("dataset"),
            split=meta.get("split", {}),
            forgotten_users=tensors["forgotten_users"].numpy(),
            forgotten_items=tensors["forgotten_items"].numpy(),
            meta={k: v for k, v in meta.items() if k not in ("format", "version", "kind")},
        )

    def load_dataset(self, root=None) -> Dataset:
        """The dataset this model was trained on, with the same split (checked by fingerprint)."""
        if not self.dataset:
            raise UnlearnRecError("this model does not name its dataset")
        data = load_dataset(
            self.dataset, root, val_ratio=self.split.get("val_ratio", 0.1), seed=self.split.get("seed", 0)
        )
        expected = self.meta.get("original_train_fingerprint", self.meta.get("train_fingerprint"))
        if expected and data.train.fingerprint() != expected:
            raise UnlearnRecError(
                f"dataset '{self.dataset}' at {data.meta.get('folder')} differs from the one this model "
                "was trained on (fingerprint mismatch)"
            )
        return data
