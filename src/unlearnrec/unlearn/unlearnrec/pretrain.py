"""Pre-training the Influence Encoder on simulated requests (docs/method.md §4, Eq. 19-25)."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.requests import sample_edges
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.errors import TrainingError
from unlearnrec.eval.membership import edge_scores
from unlearnrec.train import distributed, resume
from unlearnrec.train.losses import info_nce, preserving_loss, unlearning_loss
from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.encoder import InfluenceEncoder, build_idm, dropped_idm

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, int, dict[str, float]], None]
#: ``on_epoch(epoch, state, row)``: after each pre-training epoch, a detached copy of the encoder's
#: ``state_dict`` (H⁰, η, MLP) and that epoch's loss-curve row
EpochCallback = Callable[[int, dict[str, torch.Tensor], dict[str, float]], None]


def copy_backbone(backbone: Backbone, e0: torch.Tensor | None = None) -> Backbone:
    """A deep copy of ``backbone``, with layer-0 table ``e0`` if given (the old one is then not
    copied). Graphs and sparse tensors a backbone caches (SGL's views) are shared, not copied:
    they are immutable here, and sparse CSR tensors cannot be deep-copied."""
    memo: dict[int, object] = {}
    for v in vars(backbone).values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, Graph) or (isinstance(x, torch.Tensor) and x.layout != torch.strided):
                memo[id(x)] = x
    if e0 is not None:
        memo[id(backbone.e0)] = torch.nn.Parameter(e0, requires_grad=backbone.e0.requires_grad)
    return copy.deepcopy(backbone, memo)


@torch.no_grad()
def final_embeddings(backbone: Backbone, graph: Graph, e0: torch.Tensor | None = None) -> torch.Tensor:
    """Ē (N, d) of the trained model on its own graph, detached (the fixed target of Eq. 16 and L_p);
    with ``e0``, of that layer-0 table in place of the backbone's (the backbone is not changed)."""
    was = backbone.training
    backbone.eval()
    out = backbone.propagate(graph, backbone.e0 if e0 is None else e0).detach()
    backbone.train(was)
    return out


def preserve_target(
    backbone: Backbone, residual: Graph, e_bar: torch.Tensor, config: UnlearnRecConfig
) -> torch.Tensor:
    """L_p's fixed target (N, d): ``e_bar`` (the original model's Ē, the paper) or, with
    ``config.preserve_target = "residual"``, the original E⁰ propagated on the residual graph
    (what dropping the request's edges alone gives). Only L_p reads it: Eq. 16's η term keeps Ē."""
    if config.preserve_target == "residual" and config.use_lp:
        return final_embeddings(backbone, residual)
    return e_bar


def idm_degrees(graph: Graph, config: UnlearnRecConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The (user, item) degrees of ``graph`` when the IDM is normalised by them (``idm_norm =
    "graph"``), else None (the request's own degrees, §2)."""
    if config.idm_norm != "graph":
        return None
    return graph.interactions.user_degrees(), graph.interactions.item_degrees()


def low_score_request(
    train: Interactions, e_bar: torch.Tensor, share: float, rng: np.random.Generator, chunk: int = 262_144
) -> Interactions:
    """A simulated request shaped like the authors' attack, on edges ``train`` already has: for a
    random ``share`` of the users with edges, the training item each scores lowest, and for a random
    ``share`` of the items with edges, the training user that scores it lowest (ŷ = ē_u·ē_i of the
    input model's final embeddings ``e_bar``; an edge both picks is taken once). The attack adds the
    clean model's lowest-scored *non*-edges; among the edges a graph has, the ones its model fits
    least are the nearest thing to them. At least one edge."""
    user_emb, item_emb = e_bar[: train.num_users], e_bar[train.num_users :]
    users, items = train.users, train.items
    scores = np.empty(len(train), np.float32)
    for lo in range(0, len(train), chunk):  # (chunk x d) gathers, not (|E| x d)
        hi = lo + chunk
        scores[lo:hi] = edge_scores(user_emb, item_emb, users[lo:hi], items[lo:hi]).float().cpu().numpy()
    picked = []
    for keys in (users, items):
        order = np.lexsort((scores, keys))  # by node, then by score: each node's lowest edge first
        first = order[np.r_[True, keys[order][1:] != keys[order][:-1]]]
        picked.append(first[rng.random(len(first)) < share])
    index = np.unique(np.concatenate(picked))
    if len(index) == 0:
        index = np.array([int(np.argmin(scores))])
    return train.subset(index)


def simulated_request(
    train: Interactions, e_bar: torch.Tensor, config: UnlearnRecConfig, epoch: int, rng: np.random.Generator
) -> Interactions:
    """Pre-training epoch ``epoch``'s simulated request (``config.pretrain_request``): ρ of the edges
    uniformly; on even epochs under ``"mixed"`` :func:`low_score_request` of half the nodes, under
    ``"small"`` (its control: the size without the shape) as many edges as that request has, drawn
    uniformly."""
    if config.pretrain_request != "random" and epoch % 2 == 0:
        low = low_score_request(train, e_bar, 0.5, rng)
        if config.pretrain_request == "mixed":
            return low
        return train.subset(np.sort(rng.choice(len(train), size=len(low), replace=False)))
    return sample_edges(train, config.ratio, rng)


def forgotten_chunks(forgotten: Interactions, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split a shuffled E_Δ into ``steps`` chunks (indices), so one pass over the batches of E_r
    also visits every forgotten edge once in L_u."""
    if len(forgotten) == 0:
        return [np.zeros(0, np.int64)] * max(steps, 1)
    return np.array_split(rng.permutation(len(forgotten)), max(min(steps, len(forgotten)), 1))


def auxiliary_terms(
    out: torch.Tensor,
    num_users: int,
    batch: Batch,
    forgotten: Interactions,
    chunk: np.ndarray,
    target: torch.Tensor,
    config: UnlearnRecConfig,
) -> dict[str, torch.Tensor]:
    """L_u (Eq. 20) over a chunk of E_Δ and L_p (Eq. 21-22) over the batch's positive pairs.

    ``out``: the unlearned model's final embeddings Ē' (N, d) (Ẽ⁰ propagated on Â_r); ``target``:
    the fixed final embeddings L_p preserves (N, d): the original model's Ē, or with
    ``preserve_target = "residual"`` its E⁰ on Â_r (:func:`preserve_target`). p_ui is the softmax
    of ŷ_ui / τ_p over the batch's positive pairs (one distribution per batch), target from
    ``target``, prediction from Ē'. A part of a
    batch (data-parallel) takes its share of the chunk and of the pairs; the parts add up.
    """
    terms: dict[str, torch.Tensor] = {}
    dev = out.device
    if config.use_lu and len(chunk):
        mine = chunk if batch.whole else chunk[batch.rows(len(chunk))]
        fu = torch.as_tensor(forgotten.users[mine], device=dev)
        fi = torch.as_tensor(forgotten.items[mine] + num_users, device=dev)
        total = None if batch.whole else len(chunk)
        terms["unlearn"] = unlearning_loss((out[fu] * out[fi]).sum(-1), total)  # Eq. 20
    if config.use_lp:
        u, i = batch.users, batch.pos + num_users
        target_scores = (target[u] * target[i]).sum(-1)
        scores = (out[u] * out[i]).sum(-1)
        rows = None if batch.whole else batch.rows()
        terms["preserve"] = preserving_loss(target_scores, scores, config.tau_p, rows)  # Eq. 21-22
    return terms


def contrast_term(
    encoder: InfluenceEncoder,
    layers: list[torch.Tensor],
    view_idm: torch.Tensor,
    nodes: torch.Tensor,
    tau: float,
    anchors: slice | None = None,
) -> torch.Tensor | None:
    """L_c (Eq. 23-24): InfoNCE between the IE layers over Â_Δ and over an edge-dropped view,
    on the given nodes, the dropped view stop-gradient, summed over layers 1..L_IE.

    Layer 0 is H⁰ in both views (nothing to contrast). None when fewer than two nodes remain.
    ``anchors``: only these of the nodes are anchors (a data-parallel part; see ``info_nce``).
    """
    if nodes.numel() < 2:
        return None
    with torch.no_grad():
        other = encoder.h_layers(view_idm, encoder.h0.detach())
    return sum(
        info_nce(a[nodes], b[nodes], tau, anchors=anchors) for a, b in zip(layers[1:], other[1:], strict=True)
    )


def pretrain(
    encoder: InfluenceEncoder,
    backbone: Backbone,
    graph: Graph,
    config: UnlearnRecConfig,
    seed: int = 0,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 600.0,
) -> list[dict[str, float]]:
    """Pre-train H⁰ and η (everything of f and the MLP frozen) with Eq. 25:
    L = L_model + λ_u L_u + λ_p L_p + λ_c L_c.

    Each of ``config.epochs`` rounds draws a simulated request (a fraction ρ of ``graph``'s
    edges, or another shape: ``config.pretrain_request``, :func:`simulated_request`), builds Â_Δ
    and Â_r, and makes one pass over BPR batches of E_r. L_model is the
    backbone's own ``loss(Â_r, batch, e0=Ẽ⁰)`` total (its SSL term included). Neither
    ``backbone`` nor ``graph`` is modified. Returns the loss curve: one dict per epoch with the
    mean of every term, the request size and the elapsed seconds. ``on_step(epoch, step,
    steps, terms)`` is called after every step (progress bars).

    ``on_epoch(epoch, state, row)`` is called after every epoch with a detached copy of the
    encoder's ``state_dict`` (checkpoints of one run: the encoder after 1, 2, 5, ... epochs). It
    changes nothing of the run: it sees copies, the global torch RNG is restored after it (the run
    itself draws only from its own seeded generators), and the time it takes is left out of the
    rows' ``seconds``. Each epoch's request and batches depend on ``seed`` and the epochs before it,
    not on ``config.epochs``, so the state after epoch e of a longer run is the state an e-epoch
    run ends with.

    Data-parallel like :func:`unlearnrec.train.loop.fit` when a ``torch.distributed`` group of
    several processes is initialised: the same requests and batches on every rank, each computing
    its part of every term, gradients and terms summed over the ranks before the step.

    ``checkpoint``: a directory where the run's state is saved after an epoch, at most every
    ``checkpoint_every`` seconds, and when it ends, as :func:`~unlearnrec.train.loop.fit` does
    (:mod:`unlearnrec.train.resume`): a call that finds the same run's state continues it and ends
    with the same encoder; the rows of the epochs it did not run again carry ``"resumed": 1``. Not
    with ``on_epoch`` (its calls for those epochs would be missing), nor data-parallel.
    """
    part = distributed.current()
    if checkpoint is not None and (on_epoch is not None or part.world > 1):
        log.info("pre-training with an epoch callback or data-parallel: its state is not saved")
        checkpoint = None
    device = graph.device
    frozen = copy_backbone(backbone).to(device)
    frozen.requires_grad_(False)
    e0 = frozen.e0.detach()
    e_bar = final_embeddings(frozen, graph)
    nu = graph.num_users
    degrees = idm_degrees(graph, config)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder.mlp.requires_grad_(False)  # Eq. 18's MLP stays the identity during pre-training
    params = [encoder.h0, encoder.eta]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.lr)
    history: list[dict[str, float]] = []
    start, fp, done = 1, None, False
    if checkpoint is not None:
        fp = resume.fingerprint(encoder, params, config, graph.interactions, None,
                                frozen=frozen.state_dict(), salt=f"pretrain seed {seed}")  # fmt: skip
        got = resume.load(checkpoint, fp, encoder, opt, rng, gen)
        if got is not None:
            saved = got[0]
            history = [{**row, "resumed": 1} for row in saved.history]
            start, done = saved.epoch + 1, saved.done
            log.info("pre-training state %s: resuming after epoch %d", checkpoint, saved.epoch)
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    schedule = resume.Schedule(checkpoint, checkpoint_every, config.epochs)

    def save_state(epoch: int, finished: bool = False) -> None:
        state = resume.LoopState(epoch=epoch, seconds=time.perf_counter() - t0, history=history,
                                 done=finished, epochs_run=epoch)  # fmt: skip
        resume.save(checkpoint, fp, state, encoder, None, opt, rng, gen)

    stop = start if done else config.epochs + 1  # a finished run's state: nothing left to train
    for epoch in range(start, stop):
        forgotten = simulated_request(graph.interactions, e_bar, config, epoch, rng)
        idm = build_idm(forgotten, device, degrees)
        residual = graph.residual(forgotten)
        target = preserve_target(frozen, residual, e_bar, config)
        in_idm = torch.zeros(graph.num_nodes, dtype=torch.bool, device=device)
        in_idm[torch.as_tensor(np.concatenate([forgotten.users, forgotten.items + nu]), device=device)] = True
        n_batches = math.ceil(len(residual.interactions) / config.batch_size)
        steps = min(n_batches, config.steps_per_epoch) if config.steps_per_epoch else n_batches
        chunks = forgotten_chunks(forgotten, steps, rng)
        sums: dict[str, float] = {}
        frozen.train()
        for step, batch in enumerate(bpr_batches(residual.interactions, config.batch_size, rng, device)):
            if step >= steps:
                break
            if part.world > 1:
                batch = batch.parted(part.rank, part.world)
            layers = encoder.h_layers(idm)
            e0_tilde = encoder(idm, e0, e_bar, layers)  # Eq. 15-18
            # Eq. 19; its final embeddings are shared by L_u and L_p (one propagation a step)
            terms, out = frozen.loss_and_output(residual, batch, e0=e0_tilde, generator=gen)
            total = terms["total"]
            terms = {f"model_{k}" if k != "total" else "model": v for k, v in terms.items()}
            if config.use_lu or config.use_lp:
                aux = auxiliary_terms(out, nu, batch, forgotten, chunks[step % len(chunks)], target, config)
                if "unlearn" in aux:
                    total = total + config.lambda_u * aux["unlearn"]
                if "preserve" in aux:
                    total = total + config.lambda_p * aux["preserve"]
                terms.update(aux)
            if config.use_lc and config.lambda_c > 0:
                view = dropped_idm(forgotten, config.contrast_keep, gen, device, degrees)
                lc = None
                # users and items contrasted separately, each capped at contrast_nodes rows: the
                # InfoNCE logits are (n x n) per IE layer, 8k x 8k on ML-1M without the cap
                for ids in (batch.users, batch.pos + nu):
                    nodes = torch.unique(ids)
                    nodes = nodes[in_idm[nodes]]
                    if len(nodes) > config.contrast_nodes:
                        pick = torch.randperm(len(nodes), generator=gen)[: config.contrast_nodes]
                        nodes = nodes[pick.to(device)]
                    anchors = None if batch.whole else batch.rows(len(nodes))
                    term = contrast_term(encoder, layers, view, nodes, config.tau_c, anchors)
                    if term is not None:
                        lc = term if lc is None else lc + term
                if lc is not None:
                    total = total + config.lambda_c * lc
                    terms["contrast"] = lc
            if part.world == 1 and not torch.isfinite(total):
                _diverged(float(total), epoch, config.lr)
            opt.zero_grad(set_to_none=True)
            total.backward()
            terms["total"] = total
            if part.world > 1:  # the parts' gradients and terms, summed: the whole batch's
                keys = list(terms)
                summed = distributed.all_reduce_step(
                    params, torch.stack([terms[k].detach().float() for k in keys])
                )
                vals = dict(zip(keys, summed.tolist(), strict=True))
                if not math.isfinite(vals["total"]):
                    _diverged(vals["total"], epoch, config.lr)
            else:
                vals = {k: float(v.detach()) for k, v in terms.items()}
            opt.step()
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            if on_step is not None:
                on_step(epoch, step + 1, steps, vals)
        row = {
            "epoch": epoch,
            "request_edges": len(forgotten),
            "steps": steps,
            "seconds": time.perf_counter() - t0,
        }
        row.update({k: v / max(steps, 1) for k, v in sums.items()})
        history.append(row)
        log.info("pre-training epoch %d %s", epoch, {k: round(v, 5) for k, v in row.items() if k != "epoch"})
        if on_epoch is not None:
            t_hook = time.perf_counter()
            state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
            with torch.random.fork_rng(devices=[]):
                on_epoch(epoch, state, dict(row))
            t0 += time.perf_counter() - t_hook  # the hook's time is not pre-training time
        if schedule.due(epoch):
            save_state(epoch)
    if checkpoint is not None and not done:
        save_state(config.epochs, finished=True)
    encoder.requires_grad_(False)
    return history


def _diverged(value: float, epoch: int, lr: float):
    raise TrainingError(f"pre-training loss became {value} at epoch {epoch}; lower lr ({lr})")
