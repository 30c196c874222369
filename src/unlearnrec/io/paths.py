"""The one rule every writing command follows: an output never lands on or inside an input.

:func:`check_output` is called by each CLI command before it does any work, with every path it
reads (model and encoder directories, data folders, config, request and ledger files). It
refuses, in one line, an output that is an input, lies inside one, or contains one (replacing a
directory that holds an input would delete it), and an existing non-empty output unless
``force`` is given. ``force`` never allows writing over an input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from unlearnrec.errors import UnlearnRecError


class OutputError(UnlearnRecError):
    """An output path that would overwrite an input or existing data."""


def _resolve(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(
    out: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike | None],
    force: bool = False,
    option: str = "--out",
    must_be_new: bool = True,
) -> Path:
    """Validate the output path ``out`` against ``inputs`` ({option name: path or None}).

    Raises :class:`OutputError` when ``out`` is one of the inputs, lies inside an input
    directory, or is a directory containing an input; or, with ``must_be_new``, when ``out``
    exists and is not empty and ``force`` is not set. Returns the resolved path; creates nothing.
    """
    target = _resolve(out)
    for name, given in inputs.items():
        if given is None or given == "":
            continue
        src = _resolve(given)
        if _inside(target, src):
            what = "is" if target == src else "is inside"
            raise OutputError(f"{option} {out} {what} the input {name} {given}: choose another path")
        if src.exists() and _inside(src, target):
            raise OutputError(f"{option} {out} contains the input {name} {given}: choose another path")
    if must_be_new and not force and target.exists():
        nonempty = any(target.iterdir()) if target.is_dir() else target.stat().st_size > 0
        if nonempty:
            raise OutputError(f"{option} {out} already exists and is not empty (add --force to replace it)")
    return target
