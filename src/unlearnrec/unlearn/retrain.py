"""Retrain: the ground truth of forgetting (docs/method.md §1, §9) — train f from scratch on E_r.

The recipe is the original model's (``model.meta['train_config']``, written by training and by
the experiment runner) unless the config overrides a field; the backbone is rebuilt with the
same name and config and a fresh initialisation drawn from the unlearner's seed.

Early stopping needs a validation split, which is not part of the ``forget(model, train,
request)`` contract. It is supplied once with :meth:`Retrain.set_validation` (the runner and
the CLI do this). Without one, retraining runs for the number of epochs the original training
actually kept (``meta['best_epoch']``) when known, else the recipe's maximum, so that a retrain
never trains longer than the model it replaces just because the validation split is missing.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, fields

import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.config import check_ranges, from_dict, to_dict
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError
from unlearnrec.model import TrainedModel
from unlearnrec.train.loop import TrainConfig, fit
from unlearnrec.unlearn.base import Request, Unlearner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainConfig:
    """Overrides of the original training recipe; ``None`` keeps the original's value.

    ``epochs``: maximum epochs (None: the original recipe's). ``use_validation``: early-stop
    on the validation split when one was given with ``set_validation``.
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    patience: int | None = None
    use_validation: bool = True

    # the overrides of the recipe's keys take the recipe's own ranges
    RANGES = {k: TrainConfig.RANGES[k] for k in ("epochs", "batch_size", "lr", "eval_every", "patience")}

    def __post_init__(self):
        check_ranges(self)
        if self.epochs is not None and self.epochs < 0:
            raise ValueError("epochs must be >= 0")


_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


class Retrain(Unlearner):
    """Forget by training a fresh backbone of the same kind on the residual training set E_r."""

    name = "retrain"

    def __init__(self, config: RetrainConfig = RetrainConfig(), seed: int = 0):
        self.config = config
        self.seed = int(seed)
        self.validation: Interactions | None = None

    uses_validation = True

    def set_validation(self, val: Interactions | None) -> Retrain:
        """The validation split used for early stopping (edges disjoint from training)."""
        self.validation = val
        return self

    def recipe(self, model: TrainedModel) -> TrainConfig:
        """The training recipe of the retrain: the original's, with this config's overrides."""
        raw = {k: v for k, v in dict(model.meta.get("train_config") or {}).items() if k in _TRAIN_FIELDS}
        try:
            base = from_dict(TrainConfig, raw, "train_config")
        except ConfigError as e:
            raise ConfigError(f"model's recorded train_config is invalid: {e}") from None
        changes = {
            k: getattr(self.config, k)
            for k in ("epochs", "batch_size", "lr", "eval_every", "patience")
            if getattr(self.config, k) is not None
        }
        if self.config.epochs is None and not self._validate_with(model) and model.meta.get("best_epoch"):
            changes["epochs"] = int(model.meta["best_epoch"])
        changes["seed"] = self.seed
        return from_dict(TrainConfig, {**to_dict(base), **changes}, "retrain")

    def _validate_with(self, model: TrainedModel) -> Interactions | None:
        val = self.validation
        if not self.config.use_validation or val is None or len(val) == 0:
            return None
        if not val.same_space(model.train):
            raise ConfigError("validation split's id space differs from the model's")
        return val

    def _forget(
        self, model: TrainedModel, train: Interactions, request: Request
    ) -> tuple[TrainedModel, dict]:
        device = model.graph.device
        if len(request.edges) == 0 and len(request.users) == 0 and len(request.items) == 0:
            # nothing to forget: the model already is its own retrain
            return _copy_model(model), {"retrained": False}
        residual = train.drop(request.edges)
        graph = Graph.from_interactions(residual, device=device)
        recipe = self.recipe(model)
        val = self._validate_with(model)
        gen = torch.Generator().manual_seed(self.seed)
        backbone = build_backbone(
            model.backbone_name, residual.num_users, residual.num_items, model.backbone.config, generator=gen
        ).to(device)
        log.info(
            "retraining %s on %d edges (%d forgotten), up to %d epochs",
            model.backbone_name,
            len(residual),
            len(request.edges),
            recipe.epochs,
        )
        res = fit(
            backbone,
            graph,
            recipe,
            val=val,
            checkpoint=self.scratch("retrain"),
            checkpoint_every=self._scratch_every,
        )
        self.carry(res.resumed_seconds)
        new = model.derive(
            backbone,
            graph,
            meta={
                "train_config": to_dict(recipe),
                "best_epoch": res.best_epoch,
                "epochs_run": res.epochs_run,
                "train_seconds": res.seconds,
            },
        )
        info = {
            "retrained": True,
            "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch,
            "train_seconds": res.seconds,
            "early_stopping": val is not None,
        }
        return new, info


def _copy_model(model: TrainedModel) -> TrainedModel:
    """An independent copy (the graph is immutable and shared)."""
    return model.derive(copy.deepcopy(model.backbone))
