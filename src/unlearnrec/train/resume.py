"""Training that survives being stopped: :func:`~unlearnrec.train.loop.fit`'s saved state.

A grid's models, retrains and shards take minutes to hours each; a process stopped half-way (a
machine given back, a session that ends, Ctrl-C) used to lose all of it. With ``fit(...,
checkpoint=DIR)`` the loop saves, at the end of an epoch and at most every ``checkpoint_every``
seconds, everything the remaining epochs depend on:

- the model's state, the best state kept for early stopping, Adam's moments and step counts and its
  (decayed) learning rate;
- the two random streams of the loop (numpy's batch sampler, torch's generator of the model's noise
  and augmentations);
- the loop's bookkeeping (epoch, step, history, best epoch and metric, evaluations without improvement)
  and the seconds trained so far.

A call that finds a state with the same :func:`fingerprint` continues after its epoch and ends with the
model an uninterrupted call would have produced (the same floating-point operations in the same order:
the tests compare them bit for bit). When training ends the final state is saved marked ``done``, so a
call repeated after a crash later on (evaluation, saving the model) returns it at once; the caller removes
the directory once its own result is safe. A state whose fingerprint differs (another model, recipe,
training set or validation split) is ignored and replaced.

The fingerprint hashes the recipe, the training and validation edges, and the names, shapes and
initial values of the model's state and of the trained parameters, so a directory can only resume the
very training that wrote it. Callbacks (``on_epoch``, ``on_step``) are not replayed for the epochs done
before the resume; a caller whose callbacks keep state does not pass ``checkpoint``.

Files: ``DIR/tensors.safetensors`` and ``DIR/meta.json`` (:func:`~unlearnrec.io.checkpoint.save_checkpoint`:
written aside and renamed, so a crash while saving keeps the previous state).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.errors import UnlearnRecError
from unlearnrec.io.checkpoint import load_checkpoint, reading, save_checkpoint

log = logging.getLogger(__name__)

KIND = "fit-state/1"


def fingerprint(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    config: Any,
    train,
    val,
    frozen: dict[str, torch.Tensor] | None = None,
    salt: str = "",
) -> str:
    """What identifies one training: recipe, edges, the model's and trained parameters' initial values,
    and (``frozen``, ``salt``) whatever else it reads: a frozen model's tensors, a seed."""
    h = hashlib.sha256(salt.encode())
    recipe = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    recipe.pop("threads", None)  # how many threads does not change what is trained
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    h.update(train.fingerprint().encode())
    h.update((val.fingerprint() if val is not None and len(val) else "no validation").encode())
    for name, t in sorted(model.state_dict().items()):
        _hash_tensor(h, name, t)
    for i, p in enumerate(params):
        _hash_tensor(h, f"param {i}", p)
    for name, t in sorted((frozen or {}).items()):
        _hash_tensor(h, f"frozen {name}", t)
    return h.hexdigest()


def _hash_tensor(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


class Schedule:
    """When a loop saves its state: after an epoch before the last, at most every ``every`` seconds
    (never without a directory)."""

    def __init__(self, directory: str | os.PathLike | None, every: float, last_epoch: int):
        self.directory, self.every, self.last_epoch = directory, every, last_epoch
        self._at = time.perf_counter()

    def due(self, epoch: int) -> bool:
        if self.directory is None or epoch >= self.last_epoch or time.perf_counter() - self._at < self.every:
            return False
        self._at = time.perf_counter()
        return True


@dataclass
class LoopState:
    """The loop's bookkeeping, as saved (tensors aside)."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    bad: int = 0
    done: bool = False
    epochs_run: int = 0


def save(
    directory: str | os.PathLike,
    fp: str,
    state: LoopState,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> None:
    """Write the loop's state to ``directory`` (atomically: the previous one is kept until this is whole)."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    opt_state = opt.state_dict()
    for i, s in opt_state["state"].items():
        for k, v in s.items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["generator"] = gen.get_state()
    meta = {
        "kind": KIND,
        "fingerprint": fp,
        "loop": dataclasses.asdict(state),
        "has_best": best_state is not None,
        "optimizer_groups": opt_state["param_groups"],
        "optimizer_states": sorted(int(i) for i in opt_state["state"]),
        "numpy_rng": rng.bit_generator.state,
    }
    # floats the loop keeps as NaN (no evaluation yet) are not JSON: store them as null
    meta["loop"]["best_metric"] = None if np.isnan(state.best_metric) else state.best_metric
    save_checkpoint(directory, tensors, meta)


def load(
    directory: str | os.PathLike,
    fp: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> tuple[LoopState, dict[str, torch.Tensor] | None] | None:
    """Restore a state saved by :func:`save` into the given objects; None when there is none to resume.

    A missing directory, another training's state (fingerprint) or an unreadable one returns None (the
    last two with a warning): the caller then trains from the start and overwrites it.
    """
    directory = Path(directory)
    if not (directory / "meta.json").is_file():
        return None
    try:
        tensors, meta = load_checkpoint(directory)
    except UnlearnRecError as e:
        log.warning("training state %s unreadable (%s); training from the start", directory, e)
        return None
    if meta.get("kind") != KIND or meta.get("fingerprint") != fp:
        log.warning("training state %s is another training's; training from the start", directory)
        return None
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    # what to put back if the state turns out unusable half-way: the caller then starts from here
    before = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), gen.get_state(),
              rng.bit_generator.state)  # fmt: skip
    try:
        with reading(directory, "training state"):
            model.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
            best = None
            if meta["has_best"]:
                best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
            groups = [
                {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["optimizer_groups"]
            ]
            states = {
                i: {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
                for i in meta["optimizer_states"]
            }
            opt.load_state_dict({"state": states, "param_groups": groups})
            gen.set_state(tensors["generator"])
            rng.bit_generator.state = meta["numpy_rng"]
            loop = dict(meta["loop"])
            loop["best_metric"] = float("nan") if loop["best_metric"] is None else float(loop["best_metric"])
            state = LoopState(**loop)
    except UnlearnRecError as e:
        model.load_state_dict(before[0])
        opt.load_state_dict(before[1])
        gen.set_state(before[2])
        rng.bit_generator.state = before[3]
        log.warning("%s; training from the start", e)
        return None
    return state, best


def peek(directory: str | os.PathLike) -> dict | None:
    """``{"epoch", "seconds", "done"}`` of the state saved in ``directory`` (nothing loaded); None if none
    is readable there."""
    try:
        loop = json.loads((Path(directory) / "meta.json").read_text())["loop"]
        return {"epoch": loop.get("epoch"), "seconds": loop.get("seconds"), "done": bool(loop.get("done"))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def discard(directory: str | os.PathLike | None) -> None:
    """Remove a training state (and any other resumable work under ``directory``) once its result is safe."""
    if directory is not None and Path(directory).exists():
        shutil.rmtree(directory, ignore_errors=True)
