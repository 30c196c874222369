"""What every command shares: the one-line-error parser, checked number types, output checks, printing,
the progress bar."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``unlearnrec CMD: error: ...``, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def number(kind: type, interval: str):
    """An argparse ``type`` accepting a finite ``kind`` (int or float) within ``interval``."""
    from unlearnrec.config import Interval

    iv = Interval.parse(interval)

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number {iv}, got {text}")
        if v not in iv:
            raise argparse.ArgumentTypeError(f"must be {iv}, got {text}")
        return v

    parse.__name__ = f"{kind.__name__} {iv}"
    return parse


K = number(int, "[1, 100000]")
SEED = number(int, "[0, 4294967295]")
ID = number(int, "[0, 2147483647]")  # ids beyond the model are refused by the model


def check_out(args, inputs: dict[str, Any], option: str = "--out", must_be_new: bool = True) -> None:
    """:func:`unlearnrec.io.paths.check_output` for ``args.<option>`` (shared by every writing command)."""
    from unlearnrec.io.paths import check_output

    value = getattr(args, option.lstrip("-").replace("-", "_"))
    if value is not None:
        check_output(
            value, inputs, force=getattr(args, "force", False), option=option, must_be_new=must_be_new
        )


def training_state(out: str | os.PathLike) -> Path:
    """Where ``train`` / ``pretrain`` keep a training's state until ``--out`` is written: beside it, as
    ``OUT.training-state``; the same command run again after a stop resumes from it
    (:mod:`unlearnrec.train.resume`)."""
    out = Path(out)
    return out.with_name(f"{out.name}.training-state")


def add_checkpoint_every(parser, where: str = "beside --out (OUT.training-state)") -> None:
    """``--checkpoint-every SECONDS`` of the commands that train; ``where`` the state is kept."""
    parser.add_argument(
        "--checkpoint-every",
        type=number(float, ">= 0"),
        default=600.0,
        metavar="SECONDS",
        help=f"save a training's state {where} at most this often (default 600; 0: every epoch); the "
        "same command run again after a stop resumes from it",
    )


def stopped(state: Path) -> None:
    """Say where a stopped training's state is (Ctrl-C), before the interruption goes on."""
    if state.exists():
        print(
            f"unlearnrec: the training's state is kept in {state}: run the same command to resume",
            file=sys.stderr,
        )


def dataset_folder(name: str, data_dir: str | None) -> str | None:
    """The folder a dataset name resolves to (an input that no output may touch), if it exists."""
    if Path(name).is_dir():
        return name
    root = data_dir or os.environ.get("UNLEARNREC_DATA")
    if root and (Path(root) / name).exists():
        return str(Path(root) / name)
    return None


NO_VAL = "none (no validation split: val_ratio = 0)"


def emit(args, obj: dict[str, Any], lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, default=json_default))
    else:
        print("\n".join(lines))


def json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def fmt_metrics(m: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))


def progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (the CLI's business, never the library's)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def config_table(path: str | None, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML file, or its top level when it has no such table."""
    if not path:
        return {}
    from unlearnrec.config import read_toml

    raw = read_toml(path)
    return dict(raw[section]) if section in raw else raw
