"""``fit``: the one training loop used by every backbone and every method that trains."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.errors import TrainingError
from unlearnrec.eval.ranking import evaluate_embeddings
from unlearnrec.train import distributed, resume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe. ``epochs`` is a maximum: early stopping on validation may end sooner."""

    epochs: int = 100
    batch_size: int = 4096
    lr: float = 1e-3
    eval_every: int = 5
    patience: int = 3  # evaluations without improvement before stopping (0: never stop early)
    metric: str = "recall@20"
    ks: tuple[int, ...] = (20,)
    eval_batch: int = 4096
    seed: int = 0
    # torch intra-op threads while training (0: leave torch's setting). On a small machine shared
    # with other work, 1 avoids OpenMP barrier stalls on every op (benchmarks/README.md)
    threads: int = 0
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch (1: constant)

    RANGES = {
        "epochs": "[0, 100000]",
        "batch_size": "[1, 16777216]",
        "lr": "(0, 100]",
        "eval_every": "[1, 100000]",
        "patience": "[0, 100000]",
        "ks": "[1, 100000]",
        "eval_batch": "[1, 16777216]",
        "seed": "[0, 4294967295]",
        "threads": "[0, 4096]",
        "lr_decay": "(0, 1]",
    }

    def __post_init__(self):
        check_ranges(self)
        if self.epochs < 0 or self.batch_size <= 0 or self.lr <= 0 or self.eval_every <= 0:
            raise ValueError("epochs >= 0, batch_size > 0, lr > 0 and eval_every > 0 are required")
        if self.threads < 0:
            raise ValueError("threads >= 0 is required (0: torch's default)")
        if not 0 < self.lr_decay <= 1:
            raise ValueError("lr_decay must be in (0, 1]")


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    seconds: float = 0.0  # including the seconds of an interrupted call this one resumed
    epochs_run: int = 0
    resumed_epoch: int = 0  # the last epoch of the saved state this call resumed after (0: none)
    resumed_seconds: float = 0.0  # the seconds that state had trained


LossFn = Callable[[Batch, torch.Generator], dict]


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """The Adam of :func:`fit`: the fused implementation where every parameter allows it.

    Fused Adam updates a parameter, its gradient and both moments in one pass; the default
    implementation makes ~7 passes over them. For a Gowalla N x 64 table on one core that is
    5 ms against 18 ms a step (benchmarks/README.md). The update is Adam's either way, up to
    float rounding.
    """
    params = list(params)
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") and not p.is_sparse for p in params
    )
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def fit(
    model: Backbone,
    graph: Graph,
    config: TrainConfig,
    *,
    val: Interactions | None = None,
    loss_fn: LossFn | None = None,
    params: Iterable[torch.nn.Parameter] | None = None,
    embed_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    parallel: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 600.0,
) -> FitResult:
    """Train ``model`` on ``graph.interactions`` with Adam and mini-batch BPR (+ the model's terms).

    Every ``eval_every`` epochs the validation Recall/NDCG is computed (training edges masked);
    the best state is kept and restored at the end; ``patience`` evaluations without
    improvement stop training. ``loss_fn(batch, generator)`` and ``params`` let a method train
    something else than the plain model loss (fine-tuning); ``embed_fn`` gives the embeddings
    to evaluate. A NaN or infinite loss raises :class:`TrainingError`. ``config.threads`` (if
    > 0) sets torch's intra-op threads for the duration of the call; the previous setting is
    restored on return. ``on_step(step, terms)`` is called after every optimiser step with the
    batch's loss terms (step counts from 1 over the whole run).

    Data-parallel: when a ``torch.distributed`` default group of several processes is initialised
    (``torchrun``; see :mod:`unlearnrec.train.distributed`), every rank draws the same global
    batches, computes the loss of its part (``batch.parted(rank, world)``), and the gradients and
    loss terms are summed over the ranks before the step. ``parallel`` (default: only when
    ``loss_fn`` is None, i.e. the model's own loss) turns this on or off; a ``loss_fn`` trained
    with ``parallel=True`` must honour ``batch.part`` the way :meth:`Backbone.loss` does. Rank 0
    evaluates and its metrics (hence early stopping and the best state) are broadcast, so every
    rank ends with the same model.

    ``checkpoint``: a directory where the loop's whole state is saved at the end of an epoch, at most
    every ``checkpoint_every`` seconds, and (marked done) when training ends; a call that finds the
    state of the same training there resumes it and ends with the model an uninterrupted call would
    have produced (:mod:`unlearnrec.train.resume`). Not with callbacks that keep state (they are not
    replayed), and ignored in data-parallel training. The caller removes the directory
    (:func:`unlearnrec.train.resume.discard`) once it has kept the result.
    """
    previous = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        return _fit(
            model,
            graph,
            config,
            val=val,
            loss_fn=loss_fn,
            params=params,
            embed_fn=embed_fn,
            on_epoch=on_epoch,
            on_step=on_step,
            parallel=parallel,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _fit(
    model,
    graph,
    config,
    *,
    val,
    loss_fn,
    params,
    embed_fn,
    on_epoch,
    on_step,
    parallel,
    checkpoint,
    checkpoint_every,
) -> FitResult:
    train = graph.interactions
    if parallel is None:
        parallel = loss_fn is None  # a custom loss may not know how to compute a part of a batch
    part = distributed.current() if parallel else distributed.Part()
    device = graph.device
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    if loss_fn is None:

        def loss_fn(batch: Batch, g: torch.Generator) -> dict:
            return model.loss(graph, batch, generator=g)

    if embed_fn is None:

        def embed_fn():
            return model.embed(graph)

    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = adam(params, config.lr)
    res = FitResult()
    best_state = None
    bad = 0
    step = 0
    start = 1
    fp = None
    if checkpoint is not None and part.world > 1:
        log.info("data-parallel training: its state is not saved (%s ignored)", checkpoint)
        checkpoint = None
    if checkpoint is not None:
        fp = resume.fingerprint(model, params, config, train, val)
        got = resume.load(checkpoint, fp, model, opt, rng, gen)
        if got is not None:
            saved, best_state = got
            res.history = saved.history
            res.best_epoch, res.best_metric, bad, step = (
                saved.best_epoch,
                saved.best_metric,
                saved.bad,
                saved.step,
            )
            res.resumed_epoch, res.resumed_seconds, start = saved.epoch, saved.seconds, saved.epoch + 1
            if saved.done:  # finished before: the model holds its final state
                res.epochs_run, res.seconds = saved.epochs_run, saved.seconds
                log.info(
                    "training state %s: done (%d epochs, %.0f s)", checkpoint, res.epochs_run, res.seconds
                )
                return res
            res.epochs_run = saved.epoch
            log.info(
                "training state %s: resuming after epoch %d (%.0f s trained)",
                checkpoint,
                saved.epoch,
                saved.seconds,
            )
    t0 = time.perf_counter() - res.resumed_seconds
    schedule = resume.Schedule(checkpoint, checkpoint_every, config.epochs)

    def save_state(epoch: int, done: bool = False) -> None:
        state = resume.LoopState(
            epoch=epoch,
            step=step,
            seconds=res.seconds if done else time.perf_counter() - t0,
            history=res.history,
            best_epoch=res.best_epoch,
            best_metric=res.best_metric,
            bad=bad,
            done=done,
            epochs_run=res.epochs_run,
        )
        resume.save(checkpoint, fp, state, model, None if done else best_state, opt, rng, gen)

    for epoch in range(start, config.epochs + 1):
        model.train()
        hook = getattr(model, "on_epoch_start", None)
        if hook is not None:  # per-epoch augmentation (SGL's views), drawn from the loop's generator
            hook(graph, gen)
        sums: dict[str, float] = {}
        n = 0
        te = time.perf_counter()
        for batch in bpr_batches(train, config.batch_size, rng, device):
            if part.world > 1:  # the same global batch on every rank; each computes its part
                batch = batch.parted(part.rank, part.world)
            terms = loss_fn(batch, gen)
            loss = terms["total"]
            if part.world == 1 and not torch.isfinite(loss):
                _diverged(float(loss.detach()), epoch, config.lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if part.world > 1:
                keys = list(terms)
                summed = distributed.all_reduce_step(
                    params, torch.stack([terms[k].detach().float() for k in keys])
                )
                values = dict(zip(keys, summed.tolist(), strict=True))
                if not math.isfinite(values["total"]):  # the same sum on every rank: all stop
                    _diverged(values["total"], epoch, config.lr)
            else:
                values = {k: float(v.detach()) for k, v in terms.items()}
            opt.step()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            step += 1
            if on_step is not None:
                on_step(step, values)
        row = {"epoch": epoch, "seconds": time.perf_counter() - t0, "epoch_seconds": time.perf_counter() - te}
        row.update({k: v / max(n, 1) for k, v in sums.items()})
        if val is not None and len(val) and (epoch % config.eval_every == 0 or epoch == config.epochs):
            metrics = None
            if part.is_main:  # the same model on every rank: rank 0 evaluates, the others follow it
                model.eval()
                with torch.no_grad():
                    ue, ie = embed_fn()
                metrics = evaluate_embeddings(
                    ue, ie, val, exclude=[train], ks=config.ks, batch_size=config.eval_batch
                )
            metrics = distributed.broadcast_object(metrics, part)
            row.update({f"val_{k}": v for k, v in metrics.items() if k != "users"})
            score = metrics.get(config.metric, float("nan"))
            if math.isnan(res.best_metric) or score > res.best_metric:
                res.best_metric, res.best_epoch, bad = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        res.history.append(row)
        if config.lr_decay != 1.0:
            for group in opt.param_groups:
                group["lr"] *= config.lr_decay
        res.epochs_run = epoch
        log.info("epoch %d %s", epoch, {k: round(v, 5) for k, v in row.items() if k != "epoch"})
        if on_epoch is not None:
            on_epoch(row)
        if config.patience and bad >= config.patience:
            log.info("early stop at epoch %d (best %d: %.5f)", epoch, res.best_epoch, res.best_metric)
            break
        if schedule.due(epoch):
            save_state(epoch)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        res.best_epoch = res.epochs_run
    res.seconds = time.perf_counter() - t0
    if checkpoint is not None:
        save_state(res.epochs_run, done=True)
    return res


def _diverged(value: float, epoch: int, lr: float):
    raise TrainingError(f"loss became {value} at epoch {epoch}; lower the learning rate ({lr})")
