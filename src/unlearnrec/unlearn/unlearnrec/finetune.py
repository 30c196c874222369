"""Ours(k): fine-tuning the unlearned model for k epochs on E_r (docs/method.md §5).

One step costs one propagation of Ẽ⁰ over Â_r (forward and backward), shared by every loss term:
the backbone's BPR (+ SSL) and UnlearnRec's L_u and L_p are all computed on the final embeddings
that :meth:`~unlearnrec.backbones.base.Backbone.loss_and_output` returns (the former step ran a
second propagation for L_u / L_p; :func:`step_terms` is equal to it, tests/test_unlearnrec.py).
A fine-tuning epoch is one pass over E_r, or ``finetune_steps`` steps; ``finetune_batch_size``
sets the batch. With a :class:`~unlearnrec.unlearn.unlearnrec.guard.ValidationStop` the run ends at
the first check where the model's Recall on the *validation split* reaches a target: the rule never
sees the request. The guard that picks the state to serve is in :mod:`.guard`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.errors import TrainingError
from unlearnrec.losses import holding_loss
from unlearnrec.train.loop import FitResult, adam
from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.encoder import IdentityMLP
from unlearnrec.unlearn.unlearnrec.guard import ValidationStop
from unlearnrec.unlearn.unlearnrec.pretrain import auxiliary_terms, final_embeddings, forgotten_chunks

log = logging.getLogger(__name__)


#: bytes of fine-tuning states ``keep`` may hold unchecked (:func:`finetune`); a dim-64 table is 2.5 MB on
#: ML-1M (all 16 of the default's candidates fit), 17.8 MB on Yelp2018 (14 fit)
KEEP_BUDGET = 256 * 2**20


@dataclass
class FinetuneResult(FitResult):
    """:class:`FitResult` of :func:`finetune`, with ``kept``: (step, validation Recall, Ẽ⁰) of the
    latest state that reached ``keep``'s target (``forget_guard_every``), or None."""

    kept: tuple[int, float, torch.Tensor] | None = None


@dataclass
class Hold:
    """The recovery's hold on E_Δ (``finetune_recover_hold``): ``weight`` x mean relu(ŷ - ceiling)²
    over every request edge, ``ceiling`` its score when the recovery starts."""

    users: torch.Tensor
    items: torch.Tensor  # rows of the final embeddings: item ids + num_users
    ceiling: torch.Tensor
    weight: float

    @classmethod
    def of(cls, out: torch.Tensor, forgotten: Interactions, num_users: int, weight: float) -> Hold:
        """The hold at the state whose final embeddings are ``out`` (N, d)."""
        users = torch.as_tensor(np.array(forgotten.users, dtype=np.int64), device=out.device)
        items = torch.as_tensor(np.array(forgotten.items, dtype=np.int64) + num_users, device=out.device)
        hold = cls(users, items, out.new_empty(0), weight)
        hold.ceiling = hold.scores(out).detach()
        return hold

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        """ŷ of every request edge on final embeddings ``out``."""
        return (out[self.users] * out[self.items]).sum(-1)

    def term(self, out: torch.Tensor) -> torch.Tensor:
        """The unweighted loss on final embeddings ``out``."""
        return holding_loss(self.scores(out), self.ceiling)


def step_terms(
    backbone: Backbone,
    residual: Graph,
    e0_tilde: torch.Tensor,
    batch: Batch,
    generator: torch.Generator | None,
    forgotten: Interactions,
    chunk: np.ndarray,
    e_bar: torch.Tensor,
    config: UnlearnRecConfig,
    lambda_p: float | None = None,
    lambda_u: float | None = None,
    hold: Hold | None = None,
) -> dict[str, torch.Tensor]:
    """Every term of one fine-tuning step on one propagation: L_model + λ_u L_u + λ_p L_p (``total``),
    plus the recovery's ``hold`` term (``"hold"``) when given.

    L_model is the backbone's own loss (BPR, L2, SSL) on Ẽ⁰ over Â_r (Eq. 19); L_u (Eq. 20) over
    ``chunk`` of E_Δ and L_p (Eq. 21-22) over the batch are computed on the same final embeddings.
    ``lambda_p`` overrides ``config.lambda_p`` (the batch-size rescaling of :func:`finetune`),
    ``lambda_u`` overrides ``config.lambda_u`` (``finetune_lambda_u``).
    """
    terms, out = backbone.loss_and_output(residual, batch, e0=e0_tilde, generator=generator)
    total = terms["total"]
    if config.use_lu or config.use_lp:
        aux = auxiliary_terms(out, residual.num_users, batch, forgotten, chunk, e_bar, config)
        if "unlearn" in aux:
            total = total + (config.lambda_u if lambda_u is None else lambda_u) * aux["unlearn"]
        if "preserve" in aux:
            total = total + (config.lambda_p if lambda_p is None else lambda_p) * aux["preserve"]
        terms.update(aux)
    if hold is not None:
        terms["hold"] = hold.term(out)
        total = total + hold.weight * terms["hold"]
    terms["total"] = total
    return terms


class RowMLP(torch.nn.Module):
    """MLP(ΔE⁰) (N, d) computing the MLP only on ``rows`` (where ΔE⁰ may be non-zero) and once on a
    zero row broadcast to every other row; ``rows = None`` applies it to all N rows."""

    def __init__(self, mlp: IdentityMLP, delta: torch.Tensor, rows: torch.Tensor | None):
        super().__init__()
        self.mlp = mlp
        self.delta = delta
        self.rows = rows

    def forward(self) -> torch.Tensor:
        if self.rows is None:
            return self.mlp(self.delta)
        out = self.mlp(self.delta.new_zeros(1, self.delta.shape[1])).expand_as(self.delta).clone()
        out[self.rows] = self.mlp(self.delta[self.rows])
        return out


def step_batches(train: Interactions, batch_size: int, n_steps: int, rng: np.random.Generator, device=None):
    """``n_steps`` BPR batches of ``train``: passes over a fresh shuffle each, the last one cut short
    (negatives drawn only for the edges used)."""
    left = n_steps
    while left > 0:
        for batch in bpr_batches(train, batch_size, rng, device or "cpu", max_edges=left * batch_size):
            yield batch
            left -= 1


def epoch_steps(config: UnlearnRecConfig, residual_edges: int) -> int:
    """Steps of one fine-tuning epoch: a pass over ``residual_edges`` in batches of
    ``finetune_batch_size`` (0: ``batch_size``), at most ``finetune_steps`` (0: the whole pass)."""
    n_batches = max(math.ceil(residual_edges / (config.finetune_batch_size or config.batch_size)), 1)
    return min(n_batches, config.finetune_steps) if config.finetune_steps else n_batches


def finetune(
    backbone: Backbone,
    residual: Graph,
    mlp: IdentityMLP,
    delta: torch.Tensor,
    e_bar: torch.Tensor,
    forgotten: Interactions,
    config: UnlearnRecConfig,
    seed: int = 0,
    rows: torch.Tensor | None = None,
    stop: ValidationStop | None = None,
    keep: ValidationStop | None = None,
) -> FinetuneResult:
    """Train the layer-0 table E⁰ (``backbone.e0``) and a copy of the MLP for at most
    ``config.finetune_epochs`` epochs on E_r with L_model + λ_u L_u + λ_p L_p (no L_c); λ_u is
    ``finetune_lambda_u`` when that is >= 0 (λ_p: ``finetune_lambda_p``, not rescaled); the MLP
    stays fixed with ``finetune_mlp = False``.

    ``delta``: ΔE⁰ (N, d) of Eq. 17, fixed (H⁰ and η are not trained); ``rows``: the rows where
    ``delta`` may be non-zero (None: any); ``e_bar``: L_p's fixed target (N, d): the original model's Ē
    (with ``preserve_target = "residual"``, its E⁰ on Â_r). An epoch is one pass over E_r in batches of
    ``finetune_batch_size`` (0: ``batch_size``), or ``finetune_steps`` steps; λ_p is rescaled by
    ``batch_size / finetune_batch_size`` (L_p is a sum over the batch, λ_p was set for ``batch_size``).
    Every forgotten edge enters L_u once per epoch. ``stop`` is checked before the first step (Ours(0)
    may already meet it: then no step is taken), then every ``finetune_check_every`` steps (0: after
    each epoch), and ends the run once reached. On return ``backbone.e0`` holds the final Ẽ⁰ = E⁰ +
    MLP(ΔE⁰) (Eq. 18), so the backbone alone is the unlearned model. ``backbone`` must be a copy owned
    by the caller; ``mlp`` is copied, never modified. ``history``: one row per epoch; ``best_epoch``:
    the epoch the run ended in; ``best_metric``: the last validation check (NaN without ``stop``).

    ``keep`` (``forget_guard_every``): the state every ``config.forget_guard_every`` steps is a
    candidate; the latest one that reaches ``keep.target`` is returned as ``(step, Recall, Ẽ⁰)`` in
    ``FinetuneResult.kept`` (None if none did), for the guard to serve when the final state falls
    short. Only the latest matters, so the candidates are kept aside (up to :data:`KEEP_BUDGET` bytes)
    and checked newest first when the budget is full and at the end, down to the first that holds
    (older ones can never be served): the same state as checking each at its step, with one check
    instead of one per candidate when the last holds. ``keep.checks`` lists the checks made, by step.

    ``finetune_recover_steps`` > 0: after the epochs (unless ``stop`` ended the run), that many steps of
    L_model + ``finetune_recover_lambda_u`` L_u (no L_p) with a fresh Adam at ``finetune_lr``, one
    more ``history`` row (``epoch``: ``"recover"``); ``keep`` and ``stop`` are checked in them as in
    the epochs; ``finetune_recover_hold`` > 0 adds :class:`Hold`'s term to every recovery step, and
    ``finetune_recover_warmup`` = W ramps the recovery's learning rate over its first W steps.
    """
    t0 = time.perf_counter()
    mlp = copy.deepcopy(mlp).to(delta.device)
    mlp.requires_grad_(config.finetune_mlp)
    backbone.requires_grad_(False)
    backbone.e0.requires_grad_(True)
    shift = RowMLP(mlp, delta.detach(), rows)
    batch_size = config.finetune_batch_size or config.batch_size
    lambda_p = config.lambda_p * config.batch_size / batch_size
    if config.finetune_lambda_p >= 0:
        lambda_p = config.finetune_lambda_p
    lambda_u = config.finetune_lambda_u if config.finetune_lambda_u >= 0 else config.lambda_u
    steps = epoch_steps(config, len(residual.interactions))
    check_every = config.finetune_check_every
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    params = [backbone.e0, *(mlp.parameters() if config.finetune_mlp else ())]
    opt = adam(params, config.finetune_lr)
    res = FinetuneResult()
    done, step = False, 0

    def state_reaches(rule: ValidationStop) -> tuple[bool, torch.Tensor]:
        with torch.no_grad():
            table = backbone.e0 + shift()
        return rule.reached(step, backbone, residual, table), table

    def reached() -> bool:
        hit = state_reaches(stop)[0]
        res.best_metric = stop.checks[-1][1]
        return hit

    keep_every = config.forget_guard_every if keep is not None else 0
    pending: list[tuple[int, torch.Tensor]] = []  # candidates of ``keep`` not checked yet, oldest first
    room = max(1, KEEP_BUDGET // max(backbone.e0.numel() * backbone.e0.element_size(), 1))

    def settle() -> None:
        """Check the pending candidates newest first, down to the first that reaches ``keep.target``:
        the latest state known to hold; the older ones can never be served and are dropped."""
        made = []
        while pending:
            at, table = pending.pop()
            value = keep.value(backbone, residual, table)
            made.append((at, value))
            if value >= keep.target:
                res.kept = (at, value, table)
                pending.clear()
        keep.checks.extend(sorted(made))

    def run_steps(
        label,
        n_steps: int,
        lam_u: float,
        lam_p: float,
        opt: torch.optim.Optimizer,
        hold: Hold | None = None,
        warmup: int = 0,
    ) -> bool:
        """``n_steps`` steps of ``opt`` over E_r (each forgotten edge in L_u once, every one in
        ``hold``'s term each step; the learning rate ramped over the first ``warmup`` steps); one
        history row; True when ``stop`` was reached."""
        nonlocal step
        backbone.train()
        hook = getattr(backbone, "on_epoch_start", None)
        if hook is not None:  # per-epoch augmentation (SGL's views)
            hook(residual, gen)
        chunks = forgotten_chunks(forgotten, n_steps, rng)
        sums: dict[str, float] = {}
        n, hit = 0, False
        batches = step_batches(residual.interactions, batch_size, n_steps, rng, residual.device)
        for i, batch in enumerate(batches):
            e0_tilde = backbone.e0 + shift()  # Eq. 18, the MLP once per step
            terms = step_terms(
                backbone,
                residual,
                e0_tilde,
                batch,
                gen,
                forgotten,
                chunks[i % len(chunks)],
                e_bar,
                config,
                lam_p,
                lam_u,
                hold,
            )
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"fine-tuning loss became {float(loss.detach())} at epoch {label}; "
                    f"lower finetune_lr ({config.finetune_lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if i < warmup:
                for group in opt.param_groups:
                    group["lr"] = config.finetune_lr * (i + 1) / warmup
            opt.step()
            for key, v in terms.items():
                sums[key] = sums.get(key, 0.0) + float(v.detach())
            n += 1
            step += 1
            last = i == n_steps - 1
            if keep_every and step % keep_every == 0:
                with torch.no_grad():
                    pending.append((step, backbone.e0 + shift()))
                if len(pending) >= room:
                    settle()
            if stop is not None and ((check_every and step % check_every == 0) or (not check_every and last)):
                hit = reached()
                if hit:
                    break
        row = {"epoch": label, "steps": n, "seconds": time.perf_counter() - t0}
        row.update({key: v / max(n, 1) for key, v in sums.items()})
        if stop is not None and stop.checks:
            row["val_recall"] = stop.checks[-1][1]
        res.history.append(row)
        log.info("fine-tuning %s %s", label, {k: round(v, 5) for k, v in row.items() if k != "epoch"})
        return hit

    if stop is not None:  # Ours(0) may already be there: then no step at all
        done = reached()
    for epoch in range(1, 0 if done else config.finetune_epochs + 1):
        done = run_steps(epoch, steps, lambda_u, lambda_p, opt)
        res.epochs_run = epoch
        if done:
            log.info("fine-tuning stopped after %d steps: validation target %.5f reached", step, stop.target)
            break
    if config.finetune_recover_steps and config.finetune_epochs and not done:
        # issue 25: the ranking back on E_r alone, L_u holding the request's edges down, no L_p. A
        # fresh Adam: the forgetting steps' second moments (L_u at its fine-tuning weight) would
        # scale the new objective's steps on the request's nodes down for hundreds of steps
        recover = adam(params, config.finetune_lr)
        hold = None
        if config.finetune_recover_hold:  # the request's scores where the forgetting left them
            with torch.no_grad():
                out = final_embeddings(backbone, residual, backbone.e0 + shift())
            hold = Hold.of(out, forgotten, residual.num_users, config.finetune_recover_hold)
        lam_u = config.finetune_recover_lambda_u
        warmup = config.finetune_recover_warmup
        run_steps("recover", config.finetune_recover_steps, lam_u, 0.0, recover, hold, warmup)
    if keep is not None:
        settle()
    res.best_epoch = res.epochs_run
    with torch.no_grad():
        backbone.e0.copy_(backbone.e0 + shift())
    backbone.requires_grad_(True)
    res.seconds = time.perf_counter() - t0
    return res
