"""The ``unlearnrec`` command line: a thin layer over the library API.

Errors in user input print one line to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec import __version__
from unlearnrec.errors import TrainingError, UnlearnRecError
from unlearnrec.runtime import resolve_device, tune_allocator

log = logging.getLogger("unlearnrec")


# ----------------------------------------------------------------------------------- helpers
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


def dataset_folder(name: str, data_dir: str | None) -> str | None:
    """The folder a dataset name resolves to (an input that no output may touch), if it exists."""
    if Path(name).is_dir():
        return name
    root = data_dir or os.environ.get("UNLEARNREC_DATA")
    if root and (Path(root) / name).exists():
        return str(Path(root) / name)
    return None


NO_VAL = "none (no validation split: val_ratio = 0)"
DEVICE_HELP = "cpu, cuda or cuda:N (default cpu)"


def _emit(args, obj: dict[str, Any], lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, default=_json_default))
    else:
        print("\n".join(lines))


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _fmt_metrics(m: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (the CLI's business, never the library's)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def _load_train_config(args):
    from unlearnrec.backbones import backbone_config
    from unlearnrec.config import from_dict, read_toml
    from unlearnrec.errors import ConfigError
    from unlearnrec.train.loop import TrainConfig

    raw: dict[str, Any] = read_toml(args.config) if args.config else {}
    unknown = sorted(set(raw) - {"model", "train", "data"})
    if unknown:
        raise ConfigError(f"unknown config section '[{unknown[0]}]' (valid: data, model, train)")
    model_raw = dict(raw.get("model", {}))
    name = model_raw.pop("backbone", None) or args.backbone or "lightgcn"
    if args.backbone and model_raw and name != args.backbone:
        name = args.backbone
    if args.dim is not None:
        model_raw["dim"] = args.dim
    mcfg = backbone_config(name, model_raw)
    train_raw = dict(raw.get("train", {}))
    for key in ("epochs", "seed", "lr", "batch_size"):
        v = getattr(args, key, None)
        if v is not None:
            train_raw[key] = v
    tcfg = from_dict(TrainConfig, train_raw, "train")
    data_raw = dict(raw.get("data", {}))
    unknown = sorted(set(data_raw) - {"val_ratio", "split_seed"})
    if unknown:
        raise ConfigError(f"unknown config key 'data.{unknown[0]}' (valid: split_seed, val_ratio)")
    from unlearnrec.config import check_value

    for key, kind, interval in (("val_ratio", float, "[0, 1)"), ("split_seed", int, "[0, 4294967295]")):
        if key in data_raw:
            v = data_raw[key]
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or (kind is int and isinstance(v, float))
            ):
                what = "an integer" if kind is int else "a number"
                raise ConfigError(f"data.{key}: expected {what}, got {v!r}")
            check_value(f"data.{key}", v, interval)
    return name, mcfg, tcfg, data_raw


# ----------------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    from unlearnrec.backbones import build_backbone
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.graph import Graph
    from unlearnrec.model import TrainedModel
    from unlearnrec.train import distributed
    from unlearnrec.train.loop import fit

    name, mcfg, tcfg, data_raw = _load_train_config(args)
    check_out(args, {"--config": args.config, "--dataset": dataset_folder(args.dataset, args.data_dir)})
    split = {"seed": int(data_raw.get("split_seed", 0)), "val_ratio": float(data_raw.get("val_ratio", 0.1))}
    device = resolve_device(args.device)
    part = distributed.init_from_env(device)  # under torchrun: data-parallel, rank 0 writes
    data = load_dataset(args.dataset, args.data_dir, val_ratio=split["val_ratio"], seed=split["seed"])
    graph = Graph.from_interactions(data.train, device=device)
    gen = torch.Generator().manual_seed(tcfg.seed)
    backbone = build_backbone(name, data.num_users, data.num_items, mcfg, generator=gen).to(device)
    bar = _progress(tcfg.epochs, f"train {name} on {args.dataset}", not args.quiet and part.is_main)

    def on_epoch(row):
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("total", "val_recall@20")})

    res = fit(backbone, graph, tcfg, val=data.val, on_epoch=on_epoch)
    bar.close()
    distributed.finish()
    if not part.is_main:  # every rank holds the same model; rank 0 evaluates, saves and reports
        return 0
    model = TrainedModel(
        backbone,
        graph,
        name,
        args.dataset,
        split,
        meta={"original_train_fingerprint": data.train.fingerprint()},
    )
    test = model.evaluate(data, "test", ks=tcfg.ks)
    val = model.evaluate(data, "val", ks=tcfg.ks) if len(data.val) else None
    model.meta.update(
        {
            "train_config": _asdict(tcfg),
            "metrics": {"test": test, "val": val},
            "history": res.history,
            "train_seconds": res.seconds,
            "best_epoch": res.best_epoch,
        }
    )
    model.save(args.out)
    _emit(
        args,
        {
            "out": str(args.out),
            "seconds": res.seconds,
            "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run,
            "test": test,
            "val": val,
        },
        [
            f"trained {name} on {args.dataset} in {res.seconds:.1f}s "
            f"({res.epochs_run} epochs, best {res.best_epoch})",
            f"test  {_fmt_metrics(test)}",
            f"val   {_fmt_metrics(val)}" if val is not None else f"val   {NO_VAL}",
            f"saved to {args.out}",
        ],
    )
    return 0


def _asdict(cfg) -> dict:
    from unlearnrec.config import to_dict

    return to_dict(cfg)


def cmd_evaluate(args) -> int:
    from unlearnrec.model import TrainedModel

    model = TrainedModel.load(args.model, device=resolve_device(args.device))
    data = model.load_dataset(args.data_dir)
    ks = tuple(args.k)
    test = model.evaluate(data, "test", ks=ks)
    _emit(
        args,
        {"model": str(args.model), "dataset": model.dataset, "test": test},
        [f"{args.model} on {model.dataset} (test, {test['users']} users)", _fmt_metrics(test)],
    )
    return 0


def cmd_recommend(args) -> int:
    from unlearnrec.model import TrainedModel

    model = TrainedModel.load(args.model, device=resolve_device(args.device))
    items, scores = model.recommend([args.user], args.k)
    ok = np.isfinite(scores[0])
    items, scores = items[0][ok], scores[0][ok]
    info = _item_info(model.dataset, args.data_dir, model.train.num_items)
    _emit(
        args,
        {
            "user": args.user,
            "items": items.tolist(),
            "scores": scores.tolist(),
            "raw_ids": [info.raw(int(i)) for i in items],
            "titles": [info.title(int(i)) for i in items],
        },
        [f"user {args.user}: top {len(items)}"]
        + [
            f"{r + 1:3d}. {info.label(int(i))}  ({s:.4f})"
            for r, (i, s) in enumerate(zip(items, scores, strict=True))
        ]
        + ([f"({info.note})"] if info.note else []),
    )
    return 0


def _item_info(dataset: str | None, data_dir: str | None, num_items: int):
    """Raw ids and titles of the dataset's items where its folder has them (else an empty ItemInfo)."""
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.items import ItemInfo, item_metadata

    if not dataset:
        return ItemInfo()
    try:
        data = load_dataset(dataset, data_dir, val_ratio=0.0)
        return item_metadata(data.meta.get("folder"), num_items, data.meta.get("item_ids"))
    except (UnlearnRecError, OSError) as e:  # titles are a courtesy: recommend works without them
        log.info("no item metadata: %s", e)
        return ItemInfo()


def cmd_data_info(args) -> int:
    from unlearnrec.data.datasets import load_dataset

    data = load_dataset(args.name, args.data_dir, val_ratio=0.0 if args.shipped else 0.1)
    st = data.stats()
    from unlearnrec.data.items import item_metadata

    info = item_metadata(data.meta.get("folder"), data.num_items, data.meta.get("item_ids"))
    st["item_metadata"] = list(info.sources)
    if info.note:
        st["item_metadata_note"] = info.note
    if st["split"] == "shipped":
        split = (
            f"  train {st['shipped_train']:,} / test {st['test']:,} (shipped split; validation carved "
            f"from train: fit {st['train']:,} + val {st['val']:,})"
        )
    else:
        split = (
            f"  train {st['train']:,} / val {st['val']:,} / test {st['test']:,} "
            f"(seeded per-user split {'/'.join(f'{f:g}' for f in data.meta.get('fractions', ()))})"
        )
    _emit(
        args,
        st,
        [
            f"{st['name']}: {st['users']:,} users, {st['items']:,} items, "
            f"{st['interactions']:,} interactions",
            split,
            "  items: "
            + ("; ".join(info.sources) if info.sources else "indices only (no raw ids or titles)")
            + (f" ({info.note})" if info.note else ""),
        ],
    )
    return 0


def cmd_data_download(args) -> int:
    from unlearnrec.data.download import download

    t = time.perf_counter()
    paths = download(args.name, args.data_dir, mirror=args.mirror, force=args.force)
    _emit(
        args,
        {"name": args.name, "files": [str(p) for p in paths], "seconds": time.perf_counter() - t},
        [f"{args.name}: {len(paths)} files verified in {Path(paths[0]).parent if paths else '?'}"],
    )
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="unlearnrec", description="Make GNN recommenders forget.")
    p.add_argument("--version", action="version", version=f"unlearnrec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO) to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, data=True):
        if data:
            sp.add_argument("--data-dir", default=None, help="dataset root (default: $UNLEARNREC_DATA)")
        sp.add_argument("--json", action="store_true", help="print one JSON object")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="train a backbone on a dataset")
    t.add_argument("--dataset", required=True)
    t.add_argument("--backbone", default=None)
    t.add_argument("--config", default=None, help="TOML file with [model], [train], [data] tables")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--dim", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--device", default="cpu", help=DEVICE_HELP)
    t.add_argument("--out", required=True)
    t.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="full-ranking Recall/NDCG of a saved model on its test split")
    e.add_argument("--model", required=True)
    e.add_argument("--k", type=K, nargs="+", default=[20], help="cut-offs K (1..100000)")
    e.add_argument("--device", default="cpu", help=DEVICE_HELP)
    common(e)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("recommend", help="top-k items for a user")
    r.add_argument("--model", required=True)
    r.add_argument("--user", type=ID, required=True)
    r.add_argument("-k", "--k", type=K, default=20, help="how many items (1..100000)")
    r.add_argument("--device", default="cpu", help=DEVICE_HELP)
    common(r)
    r.set_defaults(func=cmd_recommend)

    d = sub.add_parser("data", help="dataset information and download")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("info", help="users, items and interactions per split")
    di.add_argument("name")
    di.add_argument("--shipped", action="store_true", help="no validation carve-out (shipped splits)")
    common(di)
    di.set_defaults(func=cmd_data_info)
    dd = dsub.add_parser("download", help="fetch the public originals, sha256-verified")
    dd.add_argument("name")
    dd.add_argument(
        "--mirror",
        default=None,
        help="base URL serving the same files (tests, caches; default $UNLEARNREC_MIRROR)",
    )
    dd.add_argument("--force", action="store_true")
    common(dd)
    dd.set_defaults(func=cmd_data_download)

    _register_extensions(sub, common)
    return p


def _register_extensions(sub, common) -> None:
    """Commands contributed by the other packages (forgetting, experiments, reports)."""
    from unlearnrec.experiments import commands as experiment_commands
    from unlearnrec.serve import cli as serve_cli
    from unlearnrec.unlearn import audit
    from unlearnrec.unlearn import commands as unlearn_commands

    for mod in (unlearn_commands, audit, experiment_commands, serve_cli):
        mod.register(sub, common)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a failed check, 2 bad input).

    Output to a closed pipe (``unlearnrec ledger x --json | head -1``) ends quietly with 141
    (128 + SIGPIPE, as a tool killed by SIGPIPE reports it).
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests)
        pass


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed on one line)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        tune_allocator()
    except ValueError as e:
        print(f"unlearnrec: error: {e}", file=sys.stderr)
        return 2
    from unlearnrec.train.distributed import PARALLEL_COMMANDS, env_world_size

    if env_world_size() > 1 and args.command not in PARALLEL_COMMANDS:
        # every rank would run the whole command and write the same files
        print(
            f"unlearnrec: error: '{args.command}' does not run under torchrun (WORLD_SIZE="
            f"{env_world_size()}); only {', '.join(PARALLEL_COMMANDS)} do",
            file=sys.stderr,
        )
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # surface a closed pipe here, not in the interpreter's exit
        return status
    except UnlearnRecError as e:
        print(f"unlearnrec: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except TrainingError as e:  # diverged: a setting to change (the message names it), nothing saved
        print(f"unlearnrec: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as e:  # a path that cannot be read or written (a directory, no permission, disk full)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"unlearnrec: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearnrec: interrupted", file=sys.stderr)
        return 130
    finally:
        from unlearnrec.train.distributed import leave

        leave()  # a torchrun rank that failed leaves its process group before the interpreter exits


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
