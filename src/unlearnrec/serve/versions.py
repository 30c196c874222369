"""Model versions on disk: ``STATE/versions/vNNNNNN/`` checkpoints, published atomically.

A version is written to a staging directory, every file and the directory are fsynced, and it is
renamed into place (then the parent directory is fsynced): a reader or a restart sees either the
whole version or none of it. A version directory is *live* only once the database records it
(``store.versions``); a directory without a row is debris of a crash between the rename and the
commit and is removed at start (:meth:`VersionStore.cleanup`): the version is recomputed from the
base and the applied requests, so nothing is lost. Version 0 is the base model, which stays where
the operator keeps it (``--model``); its fingerprint is checked at every start.

Retention (issue #20) builds on this: :meth:`VersionStore.remove` deletes a version directory the
database no longer needs.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from unlearnrec.model import TrainedModel

_NAME = re.compile(r"^v(\d{6,})$")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file under ``directory``, then the directories themselves."""
    for root, _dirs, files in os.walk(directory):
        for f in files:
            _fsync_path(Path(root) / f)
        _fsync_path(Path(root))


class VersionStore:
    """The ``versions/`` folder of a state directory."""

    def __init__(self, state_dir: str | os.PathLike):
        self.root = Path(state_dir) / "versions"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, version: int) -> Path:
        return self.root / f"v{int(version):06d}"

    def on_disk(self) -> list[int]:
        """Version numbers with a complete directory here."""
        out = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def publish(self, version: int, model: TrainedModel, **meta) -> Path:
        """Write ``model`` as version ``version`` durably and atomically; returns its directory.

        A directory already there under that number (a crash left it, unrecorded) is replaced.
        """
        final = self.path(version)
        staging = self.root / f".staging-{final.name}-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        model.save(staging, **meta)
        fsync_tree(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_path(self.root)
        return final

    def load(self, version: int, device: torch.device | str = "cpu") -> TrainedModel:
        return TrainedModel.load(self.path(version), device=device)

    def remove(self, version: int) -> None:
        p = self.path(version)
        if p.exists():
            shutil.rmtree(p)
            _fsync_path(self.root)

    def cleanup(self, live: set[int]) -> list[int]:
        """Remove staging debris and version directories the database does not record."""
        removed = []
        for p in self.root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                continue
            m = _NAME.match(p.name)
            if m and int(m.group(1)) not in live:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(int(m.group(1)))
        _fsync_path(self.root)
        return sorted(removed)
