"""Checkpoints: tensors in ``tensors.safetensors``, everything else in ``meta.json``.

A checkpoint is a directory. It is written to a temporary sibling directory and renamed into
place, so a crash never leaves a half-written checkpoint and never destroys the previous one.
Loading parses JSON and safetensors only: no pickle, no code runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unlearnrec import __version__
from unlearnrec.errors import UnlearnRecError

TENSORS = "tensors.safetensors"
META = "meta.json"
FORMAT = "unlearnrec-checkpoint/1"


def atomic_write_bytes(path: str | os.PathLike, data: bytes | None = None, writer=None) -> Path:
    """Write a file via a temporary file in the same directory, fsync and an atomic rename.

    Give either ``data`` or ``writer(f)`` (called with the open binary file). The file is
    readable by all (0644), like a normally created one. A failure leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private
        with os.fdopen(fd, "wb") as f:
            if writer is not None:
                writer(f)
            else:
                f.write(data or b"")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode())


def save_checkpoint(
    directory: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Atomically write ``tensors`` and ``meta`` (JSON-serialisable) to ``directory``.

    An existing checkpoint at ``directory`` is replaced only once the new one is complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UnlearnRecError(f"refusing to save tensor '{k}': it contains NaN or inf")
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        full_meta = {"format": FORMAT, "version": __version__, **meta}
        (tmp / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=_json_default))
        old = None
        if directory.exists():
            if not (directory / META).is_file() and any(directory.iterdir()):
                raise UnlearnRecError(
                    f"refusing to overwrite {directory}: it is not an unlearnrec checkpoint"
                )
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


@contextmanager
def reading(directory: str | os.PathLike, what: str = "checkpoint") -> Iterator[None]:
    """Turn any failure while interpreting a checkpoint's contents into one :class:`UnlearnRecError`.

    A sidecar edited by hand or a damaged tensor file can hold the wrong keys, types or shapes;
    the loader then fails deep inside (a KeyError, a size mismatch in ``load_state_dict``). For
    the user that is one fact: the checkpoint is corrupt.
    """
    try:
        yield
    except UnlearnRecError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise UnlearnRecError(f"{directory}: corrupt {what} ({type(e).__name__}: {detail})") from None


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint directory; a missing or foreign directory is a clear error."""
    directory = Path(directory)
    if not (directory / META).is_file() or not (directory / TENSORS).is_file():
        raise UnlearnRecError(f"not a checkpoint: {directory} (expected {META} and {TENSORS})")
    try:
        meta = json.loads((directory / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnlearnRecError(f"{directory / META}: corrupt JSON: {e}") from None
    if not isinstance(meta, dict):
        raise UnlearnRecError(f"{directory / META}: corrupt JSON: not an object")
    if meta.get("format") != FORMAT:
        raise UnlearnRecError(f"{directory}: unknown checkpoint format {meta.get('format')!r}")
    try:
        tensors = load_file(str(directory / TENSORS))
    except Exception as e:  # safetensors raises its own error types
        raise UnlearnRecError(f"{directory / TENSORS}: unreadable: {e}") from None
    return tensors, meta
