# long file: the one UnlearnRec class (prepare, Ours(0) / Ours(k) / the guard, save and load of the encoder)
"""UnlearnRec as an :class:`~unlearnrec.unlearn.base.Unlearner` (docs/method.md §2-5).

``prepare(model, train)`` pre-trains the Influence Encoder on simulated requests against the
trained model (or reuses one loaded with ``load_prepared``). ``forget(model, train, request)``
is Ours(0) — build the IDM Â_Δ from the request alone and the residual graph Â_r, run the IE
forward once, and return a new model (Ẽ⁰, Â_r) — followed by ``finetune_epochs`` epochs of
fine-tuning (Ours(k)) when the config asks for it. The input model is never modified.

A second request after a first
------------------------------
Two ways, both supported (see ``docs/forgetting.md``):

1. **Cumulative (recommended)**: keep the original trained model privately and serve every new
   request as the union of all requests so far against it, with :meth:`UnlearnRec.forget_cumulative`
   (CLI: ``unlearnrec forget --model CURRENT --original ORIGINAL ...``). Each answer is one IE
   step from the model the encoder was pre-trained on, so errors never compound and the result
   does not depend on the order of requests. The price: the original still encodes every
   forgotten edge, and the difference between its training set and the current one *is* the
   list of forgotten edges, so it must be access-controlled as strictly as the raw data, and
   deleted once no further request can come (after which only option 2 remains).
2. **Sequential**: ``forget(current, current.train, request)`` on an already-unlearned model. The
   encoder's H⁰ and η are reused on the new IDM and Ē is recomputed from the current model. No
   copy of the forgotten data needs to be kept, but the approximation errors of successive
   steps add up, and the encoder was pre-trained against the original model, not this one.

Lineage (method, sizes, request fingerprints — never the edges) is recorded in ``meta``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.config import from_dict, to_dict
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import UnlearnRecError
from unlearnrec.eval.membership import edge_scores, mi_ng, sample_non_edges
from unlearnrec.io.checkpoint import META, TENSORS, load_checkpoint, reading, save_checkpoint
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request, Result, Unlearner
from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.encoder import InfluenceEncoder, local_idm
from unlearnrec.unlearn.unlearnrec.finetune import finetune
from unlearnrec.unlearn.unlearnrec.guard import ValidationStop, guard_scale, validation_recall
from unlearnrec.unlearn.unlearnrec.pretrain import (
    EpochCallback,
    StepCallback,
    copy_backbone,
    final_embeddings,
    idm_degrees,
    preserve_target,
    pretrain,
)

log = logging.getLogger(__name__)

ENCODER_KIND = "unlearnrec-encoder"
# config fields that shape the encoder or its pre-training (fine-tuning fields do not)
_PRETRAIN_FIELDS = tuple(
    f for f in UnlearnRecConfig.__dataclass_fields__ if not f.startswith(("finetune_", "forget_"))
)


class UnlearnRec(Unlearner):
    """Pre-trained Influence Encoder + sub-second forgetting (Ours(0)) + optional fine-tuning (Ours(k)).

    Attributes after ``prepare``/``load_prepared``: ``encoder`` (:class:`InfluenceEncoder`),
    ``history`` (the pre-training loss curve, one dict per epoch). ``on_step`` may be set to a
    ``(epoch, step, steps, terms)`` callback to follow pre-training (the CLI's progress bar), and
    ``on_epoch`` to an ``(epoch, state, row)`` callback that receives a copy of the encoder after
    each pre-training epoch (checkpoints; see :func:`~unlearnrec.unlearn.unlearnrec.pretrain.pretrain`).
    """

    name = "unlearnrec"

    def __init__(self, config: UnlearnRecConfig = UnlearnRecConfig(), seed: int = 0):
        self.config = config
        self.seed = int(seed)
        self.encoder: InfluenceEncoder | None = None
        self.history: list[dict[str, float]] = []
        self.prepared_for: dict[str, Any] = {}
        self.on_step: StepCallback | None = None
        self.on_epoch: EpochCallback | None = None
        self._ebar: tuple[Any, Any, int, torch.Tensor] | None = None
        self._base_cache: tuple[Any, Any, tuple, torch.Tensor] | None = None
        self.validation: Interactions | None = None
        self._val_ref: tuple[Any, Any, int, float] | None = None

    def set_validation(self, val: Interactions | None) -> UnlearnRec:
        """The validation split read by fine-tuning's stopping rule (``finetune_stop_share``); the
        rule compares the tuned model's validation Recall@20 with the input model's, never the request."""
        self.validation = val
        return self

    # ---------------------------------------------------------------------------- preparation
    def new_encoder(self, model: TrainedModel) -> InfluenceEncoder:
        return _encoder(model.graph.num_nodes, model.backbone.dim, self.config, model).to(model.graph.device)

    def prepare(self, model: TrainedModel, train: Interactions | None = None) -> None:
        """Pre-train the encoder on ``model`` (§4), unless a compatible one is already loaded."""
        if self.encoder is not None and self._fits(model):
            log.info("reusing the loaded Influence Encoder")
            return
        enc = self.new_encoder(model)
        self.history = pretrain(
            enc,
            model.backbone,
            model.graph,
            self.config,
            self.seed,
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            checkpoint=self.scratch("pretrain") if self.on_epoch is None else None,
            checkpoint_every=self._scratch_every,
        )
        resumed = [row["seconds"] for row in self.history if row.get("resumed")]
        self.carry(max(resumed, default=0.0))  # the epochs an earlier, stopped call pre-trained
        self.encoder = enc
        self.prepared_for = _model_identity(model)

    def _fits(self, model: TrainedModel) -> bool:
        enc = self.encoder
        return enc is not None and enc.num_nodes == model.graph.num_nodes and enc.dim == model.backbone.dim

    def _require_encoder(self, model: TrainedModel) -> InfluenceEncoder:
        if self.encoder is None:
            raise UnlearnRecError(
                "UnlearnRec has no Influence Encoder: call prepare() or load_prepared() first"
            )
        if not self._fits(model):
            raise UnlearnRecError(
                f"the Influence Encoder ({self.encoder.num_nodes} nodes, dim {self.encoder.dim}) does not "
                f"fit this model ({model.graph.num_nodes} nodes, dim {model.backbone.dim})"
            )
        return self.encoder.to(model.graph.device)

    def final_embeddings(self, model: TrainedModel) -> torch.Tensor:
        """Ē (N, d) of ``model`` on its own graph, cached while the model's E⁰ is unchanged."""
        bb, g = model.backbone, model.graph
        c = self._ebar
        if c is not None and c[0] is bb and c[1] is g and c[2] == bb.e0._version:
            return c[3]
        e_bar = final_embeddings(bb, g)
        self._ebar = (bb, g, bb.e0._version, e_bar)
        return e_bar

    # ---------------------------------------------------------------------------- forgetting
    def _forget(
        self, model: TrainedModel, train: Interactions, request: Request
    ) -> tuple[TrainedModel, dict]:
        enc = self._require_encoder(model)
        pretrained_rule = enc.influence_on
        enc.influence_on = self.config.forget_rule or pretrained_rule
        try:
            return self._forget_with(enc, model, request)
        finally:
            enc.influence_on = pretrained_rule

    def _forget_with(
        self, enc: InfluenceEncoder, model: TrainedModel, request: Request
    ) -> tuple[TrainedModel, dict]:
        """:meth:`_forget` with the encoder's rule set to the forget-time one."""
        k = self.config.finetune_epochs
        info: dict[str, Any] = {"finetune_epochs": k, "request_edges": len(request.edges)}
        if k > 0 and self.config.forget_guard and not self._has_validation():
            # fine-tuning meant to run under the guard is not run without it: at the guard's L_u
            # weights it can cost far more Recall than it forgets (docs/forgetting.md)
            log.warning("forget_guard is off (no validation split): Ours(0) served, fine-tuning skipped")
            info["finetune_skipped"] = "forget_guard without a validation split"
            k = 0
        if len(request.edges) == 0:
            # nothing to forget: E_r = E and the IDM is empty; return an equal copy rather than
            # apply H⁰ (which, with a layer-0 readout, would shift every node)
            return self._new_model(model, copy_backbone(model.backbone), model.graph), {
                **info,
                "noop": True,
            }
        device = model.graph.device
        degrees = idm_degrees(model.graph, self.config)
        nodes, sub_idm = local_idm(request.edges, device, degrees)  # §2, on the touched nodes only
        residual = model.graph.residual(request.edges)  # Â_r in O(nnz)
        e_bar = self.final_embeddings(model)
        e0 = model.backbone.e0.detach()
        ours0: torch.Tensor | None = None

        def ours0_table() -> torch.Tensor:
            """Ẽ⁰ of Ours(0) (Eq. 15-18; rows outside the request from the cached base), computed once
            for the gate, the served table and the guard."""
            nonlocal ours0
            if ours0 is None:
                with torch.no_grad():
                    ours0 = enc.serve(nodes, sub_idm, e0, e_bar, base=self._base(model, enc))
            return ours0

        if k > 0 and self.config.finetune_min_mi_ng > 0:
            info["ours0_mi_ng"] = mi = self._own_mi_ng(model, residual, ours0_table(), request.edges)
            if mi < self.config.finetune_min_mi_ng:  # ordinary edges: L_u would push real ones down
                info["finetune_skipped"] = (
                    f"Ours(0)'s MI-NG on the request {mi:.3f} < finetune_min_mi_ng "
                    f"{self.config.finetune_min_mi_ng:g}"
                )
                k = 0
        if k == 0:
            e0_new = ours0_table()  # Ours(0)
        else:
            with torch.no_grad():
                delta = enc.delta_full(nodes, sub_idm, e_bar)  # Eq. 15-17, fixed while fine-tuning
            e0_new = e0.clone()
        backbone = copy_backbone(model.backbone, e0_new)
        guard = (
            self._stop_rule(model, residual, self.config.forget_guard_share)
            if self.config.forget_guard
            else None
        )
        kept, final_value = None, None
        if k > 0:
            # ΔE⁰ is zero outside the request's nodes unless the readout includes H⁰ itself
            rows = nodes if enc.outside_delta() is None else None
            stop = self._stop_rule(model, residual)
            keep = guard if self.config.forget_guard_every else None
            res = finetune(
                backbone,
                residual,
                enc.mlp,
                delta,
                preserve_target(model.backbone, residual, e_bar, self.config),
                request.edges,
                self.config,
                self.seed,
                rows,
                stop,
                keep,
            )
            kept = res.kept
            info["finetune_seconds"] = res.seconds
            info["finetune_history"] = res.history
            info["finetune_steps_run"] = sum(int(r["steps"]) for r in res.history)
            if keep is not None:
                info["guard_keep_checks"] = keep.checks  # (step, validation Recall) while fine-tuning
                if keep.checks and keep.checks[-1][0] == info["finetune_steps_run"]:
                    final_value = keep.checks[-1][1]  # the served state was checked at its last step
            if stop is not None:
                info["finetune_val_target"] = stop.target
                info["finetune_val_checks"] = stop.checks
                info["finetune_stopped"] = bool(stop.checks) and stop.checks[-1][1] >= stop.target
        if self.config.forget_guard:
            if guard is None:  # the share is > 0 (config check): the validation split is missing
                log.warning("forget_guard is off: no validation split (UnlearnRec.set_validation)")
                info["guard_off"] = "no validation split"
            else:
                info.update(guard_scale(backbone, residual, e0, ours0_table(), guard, kept, final_value))
        return self._new_model(model, backbone, residual), info

    def _own_mi_ng(self, model: TrainedModel, residual, e0_new: torch.Tensor, edges: Interactions) -> float:
        """``finetune_min_mi_ng``'s criterion: MI-NG of the request's edges under the model with layer-0
        table ``e0_new`` on the residual graph (mean σ of as many non-edges of the same users, drawn
        avoiding the training and validation edges with the method's seed, over the request's mean σ).
        Reads the request and the models, never a test split or a retrained model."""
        out = final_embeddings(model.backbone, residual, e0_new)
        nu = residual.num_users
        known = model.train if not self._has_validation() else model.train.union(self.validation)
        neg_u, neg_i = sample_non_edges(known, edges.users, self.seed)
        emb = (out[:nu], out[nu:])
        return mi_ng(edge_scores(*emb, neg_u, neg_i), edge_scores(*emb, edges.users, edges.items))

    def _has_validation(self) -> bool:
        return self.validation is not None and len(self.validation) > 0

    def _stop_rule(self, model: TrainedModel, residual, share: float = 0.0) -> ValidationStop | None:
        """Fine-tuning's stopping rule: the validation Recall@20 to reach, ``share`` (0:
        ``finetune_stop_share``) x the input model's (cached per model), ranking with the residual
        training edges masked; None without a share or a validation split. Built from the
        validation split and the models only."""
        share, val = share or self.config.finetune_stop_share, self.validation
        if share <= 0 or not self._has_validation():
            return None
        bb, g = model.backbone, model.graph
        c = self._val_ref
        if c is None or c[0] is not bb or c[1] is not g or c[2] != bb.e0._version:
            e_bar = self.final_embeddings(model)
            nu = g.num_users
            ref = validation_recall(e_bar[:nu], e_bar[nu:], val, [model.train])
            self._val_ref = c = (bb, g, bb.e0._version, ref)
        return ValidationStop(val, [residual.interactions], share * c[3])

    def _base(self, model: TrainedModel, enc: InfluenceEncoder) -> torch.Tensor:
        """E⁰ + MLP(H⁰) (or E⁰ + MLP(0)), the Ẽ⁰ rows of untouched nodes, cached per model and encoder."""
        bb = model.backbone
        key = (bb.e0._version, enc.h0._version, *(p._version for p in enc.mlp.parameters()))
        c = self._base_cache
        if c is not None and c[0] is bb and c[1] is enc and c[2] == key:
            return c[3]
        with torch.no_grad():
            base = enc.base(bb.e0.detach())
        self._base_cache = (bb, enc, key, base)
        return base

    @staticmethod
    def _new_model(model: TrainedModel, backbone, graph) -> TrainedModel:
        return model.derive(
            backbone,
            graph,
            # the input's recorded fingerprint when it has one (hashing every edge costs ~20 ms on
            # Gowalla); the new model's own is unknown until it is saved, so none is inherited
            meta={
                "unlearned_from": model.meta.get("train_fingerprint") or model.train.fingerprint(),
                "train_fingerprint": None,
            },
        )

    def forget_cumulative(self, original: TrainedModel, current: TrainedModel, request: Request) -> Result:
        """Serve ``request`` against the stored ``original``, together with everything ``current``
        (derived from ``original``) has already forgotten. The request must be valid for
        ``current`` (its edges still in ``current.train``). Lineage continues ``current``'s."""
        prior = prior_request(original, current)
        merged = prior.merge(request)
        res = self.forget(original, original.train, merged)
        entry = dict(res.model.meta["lineage"][-1])
        entry.update(
            {
                "edges": len(request.edges),
                "users": len(request.users),
                "items": len(request.items),
                "cumulative": True,
                "edges_total": len(merged.edges),
            }
        )
        res.model.meta["lineage"] = [*current.meta.get("lineage", []), entry]
        res.info["cumulative_edges"] = len(merged.edges)
        return res

    # ---------------------------------------------------------------------------- persistence
    def save_prepared(self, directory: str | os.PathLike) -> bool:
        """Write the encoder (H⁰, η, MLP) as safetensors + a JSON sidecar; False if none."""
        if self.encoder is None:
            return False
        tensors = {k: v.detach() for k, v in self.encoder.state_dict().items()}
        meta = {
            "kind": ENCODER_KIND,
            "config": to_dict(self.config),
            "seed": self.seed,
            "num_nodes": self.encoder.num_nodes,
            "dim": self.encoder.dim,
            "history": self.history,
            **self.prepared_for,
        }
        save_checkpoint(directory, tensors, meta)
        return True

    def load_prepared(self, directory: str | os.PathLike, model: TrainedModel) -> bool:
        """Restore an encoder written by ``save_prepared`` if it was pre-trained for ``model`` (or
        the original it derives from) with the same pre-training config; False otherwise."""
        d = Path(directory)
        if not ((d / META).is_file() and (d / TENSORS).is_file()):
            return False
        try:
            tensors, meta = _read_encoder(d)
        except UnlearnRecError as e:
            log.warning("%s", e)
            return False
        saved = from_dict(UnlearnRecConfig, meta["config"], "encoder config")
        if any(getattr(saved, f) != getattr(self.config, f) for f in _PRETRAIN_FIELDS):
            log.warning("%s: pre-trained with another config; not reused", d)
            return False
        if not _same_lineage(meta, model):
            log.warning("%s: pre-trained for another model; not reused", d)
            return False
        self._install(tensors, meta, model)
        return True

    @classmethod
    def from_encoder(cls, directory: str | os.PathLike, model: TrainedModel, **overrides: Any) -> UnlearnRec:
        """An UnlearnRec with the encoder saved at ``directory`` and its pre-training config;
        ``overrides`` change serving fields (``finetune_epochs``, ``finetune_lr``, ...).
        A clear :class:`UnlearnRecError` if the encoder does not belong to ``model``."""
        tensors, meta = _read_encoder(Path(directory))
        with reading(directory, "encoder"):
            if not _same_lineage(meta, model):
                raise UnlearnRecError(
                    f"{directory}: this encoder was pre-trained for another model or dataset "
                    "(training-set fingerprints differ)"
                )
            config = from_dict(UnlearnRecConfig, {**meta["config"], **overrides}, "unlearnrec")
            self = cls(config, seed=int(meta.get("seed", 0)))
            self._install(tensors, meta, model)
        return self

    @classmethod
    def with_encoder(
        cls,
        config: UnlearnRecConfig,
        state: dict[str, torch.Tensor],
        model: TrainedModel,
        seed: int = 0,
        history: list[dict[str, float]] | tuple = (),
    ) -> UnlearnRec:
        """An UnlearnRec for ``model`` with the encoder ``state`` (an ``on_epoch`` checkpoint, or any
        ``state_dict`` of an encoder with ``config``'s IE fields pre-trained on ``model``)."""
        self = cls(config, seed=seed)
        n, d = model.graph.num_nodes, model.backbone.dim
        meta = {"num_nodes": n, "dim": d, "config": to_dict(config), "history": list(history)}
        self._install(state, {**meta, **_model_identity(model)}, model)
        return self

    def _install(self, tensors: dict[str, torch.Tensor], meta: dict, model: TrainedModel) -> None:
        n, d = int(meta["num_nodes"]), int(meta["dim"])
        if n != model.graph.num_nodes or d != model.backbone.dim:
            raise UnlearnRecError(
                f"encoder has {n} nodes and dim {d}; "
                f"the model has {model.graph.num_nodes} and {model.backbone.dim}"
            )
        c = from_dict(UnlearnRecConfig, meta["config"], "encoder config")
        enc = _encoder(n, d, c, model)
        enc.load_state_dict(tensors)
        enc.requires_grad_(False)
        self.encoder = enc.to(model.graph.device)
        self.history = list(meta.get("history", []))
        self.prepared_for = {
            k: meta[k] for k in ("train_fingerprint", "original_train_fingerprint") if k in meta
        }


def _encoder(num_nodes: int, dim: int, c: UnlearnRecConfig, model: TrainedModel) -> InfluenceEncoder:
    """A fresh encoder with the IE fields of ``c`` for ``model``'s users."""
    return InfluenceEncoder(
        num_nodes,
        dim,
        c.ie_layers,
        c.alpha,
        c.eta_init,
        c.readout,
        c.readout_layer0,
        model.graph.num_users,
        c.influence_on,
    )


def _model_identity(model: TrainedModel) -> dict[str, Any]:
    fp = model.train.fingerprint()
    return {
        "train_fingerprint": fp,
        "original_train_fingerprint": model.meta.get("original_train_fingerprint", fp),
        "backbone": model.backbone_name,
        "dataset": model.dataset,
    }


def _same_lineage(meta: dict, model: TrainedModel) -> bool:
    """The encoder was pre-trained for ``model`` itself or for the original it was unlearned from."""
    fp = model.meta.get("train_fingerprint")
    if meta.get("train_fingerprint") in (fp, model.meta.get("unlearned_from")):
        return True
    orig = model.meta.get("original_train_fingerprint")
    if orig is not None and orig == meta.get("original_train_fingerprint"):
        return True
    return meta.get("train_fingerprint") == model.train.fingerprint()


def _read_encoder(d: Path) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = load_checkpoint(d)
    if meta.get("kind") != ENCODER_KIND:
        raise UnlearnRecError(f"{d}: not an UnlearnRec encoder (kind={meta.get('kind')!r})")
    return tensors, meta


def prior_request(original: TrainedModel, current: TrainedModel) -> Request:
    """What ``current`` has already forgotten relative to ``original``: the edges of
    ``original.train`` missing from ``current.train`` and the forgotten users/items."""
    if not original.train.same_space(current.train):
        raise UnlearnRecError("the current model's id space differs from the original's")
    try:
        gone = original.train.drop(current.train)
    except UnlearnRecError:
        raise UnlearnRecError(
            "the current model was not derived from this original (it has training edges the original lacks)"
        ) from None
    users = np.setdiff1d(current.forgotten_users, original.forgotten_users)
    items = np.setdiff1d(current.forgotten_items, original.forgotten_items)
    return Request(gone, users.astype(np.int64), items.astype(np.int64))
