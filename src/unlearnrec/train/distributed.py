"""Data-parallel training on ``torch.distributed``: each process computes its share of a global batch.

Every process (rank) draws the same global batch from the same seeded generator as a single process
would, and computes only its *part* of the loss (:meth:`Batch.parted`): the loss terms are written so
that the parts of a batch add up to the loss of the whole batch (BPR and L2 are sums over the part's
rows divided by the global batch size; an InfoNCE takes the part's share of anchor rows against all
of the batch's nodes). Summing the parts' gradients over the ranks (one all-reduce) therefore gives
the single-process gradient, every rank applies the same Adam step, and the parameters stay equal on
every rank and equal to single-process training up to float rounding.

What is *not* split: the propagation. Every rank propagates the whole graph forward and backward
(the N x d products over Â), because the batch's rows depend on all of it. So the parts split the
batch-sized work (gathers, BPR, the B x B InfoNCE logits) and add an all-reduce of the dense N x d
gradient per step; ``docs/scaling.md`` has the measured trade-off.

Launch with ``torchrun`` (``torchrun --nproc-per-node 2 -m unlearnrec train ...``): it sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address that :func:`init_from_env` reads. gloo
is used on the CPU and NCCL on CUDA.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from unlearnrec.data.sampling import share  # noqa: F401 (defined beside Batch, which uses it)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """This process's place in a data-parallel group: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0


@dataclass
class CommStats:
    """Seconds spent in the gradient all-reduce (``comm``) and the steps that called it."""

    comm: float = 0.0
    steps: int = 0


#: the command-line commands that run data-parallel under ``torchrun`` (the others refuse to)
PARALLEL_COMMANDS = ("train", "pretrain", "forget")

#: accumulated by :func:`all_reduce_step` (benchmarks read and reset it)
STATS = CommStats()


def backend_for(device: torch.device | str) -> str:
    """``"nccl"`` for CUDA, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: torch.device | str = "cpu") -> Part:
    """Join the process group that ``torchrun`` describes in the environment, if it names several
    processes; otherwise do nothing. Returns this process's :class:`Part`.

    The backend is gloo on the CPU and NCCL on CUDA (``device`` is this process's device; with
    CUDA it is made the current one). Idempotent: an already initialised group is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    if env_world_size() <= 1:
        return Part()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device), init_method="env://")
    part = current()
    log.info("data-parallel: rank %d of %d (%s)", part.rank, part.world, dist.get_backend())
    return part


def current() -> Part:
    """The default process group's :class:`Part` (rank 0 of 1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Part(dist.get_rank(), dist.get_world_size())
    return Part()


def finish() -> None:
    """Leave the default process group if this process joined one (a no-op otherwise).

    Every rank first waits for the others (a barrier), so that no collective is still in flight
    when the group is torn down: a process that exits while gloo's threads still hold work can
    abort in the interpreter's finalisation (pytorch/pytorch#179291).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def leave() -> None:
    """Leave the default process group at once, without waiting for the other ranks (an error
    path: they may never arrive); a no-op when there is none."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_step(params: Sequence[torch.nn.Parameter], values: torch.Tensor) -> torch.Tensor:
    """Sum every parameter's gradient and ``values`` (the step's loss terms, a small 1-D tensor)
    over the default group, in place; returns the summed ``values``.

    A parameter without a gradient on this rank contributes zeros, so that every rank makes the
    same collective calls in the same order. The time spent here is added to :data:`STATS`.
    """
    t = time.perf_counter()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
    dist.all_reduce(values)
    STATS.comm += time.perf_counter() - t
    STATS.steps += 1
    return values


def broadcast_object(obj, part: Part):
    """``obj`` of rank 0, on every rank (a metrics dict, an early-stopping decision)."""
    if part.world <= 1:
        return obj
    box = [obj if part.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
