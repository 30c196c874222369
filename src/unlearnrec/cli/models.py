"""``train``, ``evaluate``, ``recommend`` and ``data info`` / ``data download``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.cli.common import (
    ID,
    NO_VAL,
    K,
    add_checkpoint_every,
    check_out,
    dataset_folder,
    emit,
    fmt_metrics,
    progress,
    stopped,
    training_state,
)
from unlearnrec.errors import UnlearnRecError
from unlearnrec.runtime import resolve_device
from unlearnrec.train import distributed

DEVICE_HELP = "cpu, cuda or cuda:N (default cpu)"

log = logging.getLogger("unlearnrec")


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


def cmd_train(args) -> int:
    from unlearnrec.backbones import build_backbone
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.graph import Graph
    from unlearnrec.model import TrainedModel
    from unlearnrec.train import resume
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
    bar = progress(tcfg.epochs, f"train {name} on {args.dataset}", not args.quiet and part.is_main)

    def on_epoch(row):
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("total", "val_recall@20")})

    state = training_state(args.out)
    try:
        res = fit(backbone, graph, tcfg, val=data.val, on_epoch=on_epoch, checkpoint=state,
                  checkpoint_every=args.checkpoint_every)  # fmt: skip
    except KeyboardInterrupt:
        stopped(state)
        raise
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
    if res.resumed_epoch:
        model.meta["resumed_after_epoch"] = res.resumed_epoch
    model.save(args.out)
    resume.discard(state)
    resumed = f"; resumed after epoch {res.resumed_epoch}" if res.resumed_epoch else ""
    emit(
        args,
        {
            "out": str(args.out),
            "seconds": res.seconds,
            "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run,
            "resumed_after_epoch": res.resumed_epoch,
            "test": test,
            "val": val,
        },
        [
            f"trained {name} on {args.dataset} in {res.seconds:.1f}s "
            f"({res.epochs_run} epochs, best {res.best_epoch}{resumed})",
            f"test  {fmt_metrics(test)}",
            f"val   {fmt_metrics(val)}" if val is not None else f"val   {NO_VAL}",
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
    emit(
        args,
        {"model": str(args.model), "dataset": model.dataset, "test": test},
        [f"{args.model} on {model.dataset} (test, {test['users']} users)", fmt_metrics(test)],
    )
    return 0


def cmd_recommend(args) -> int:
    from unlearnrec.model import TrainedModel

    model = TrainedModel.load(args.model, device=resolve_device(args.device))
    items, scores = model.recommend([args.user], args.k)
    ok = np.isfinite(scores[0])
    items, scores = items[0][ok], scores[0][ok]
    info = _item_info(model.dataset, args.data_dir, model.train.num_items)
    emit(
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
    emit(
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
    emit(
        args,
        {"name": args.name, "files": [str(p) for p in paths], "seconds": time.perf_counter() - t},
        [f"{args.name}: {len(paths)} files verified in {Path(paths[0]).parent if paths else '?'}"],
    )
    return 0


def register(sub, common) -> None:
    """Add ``train``, ``evaluate``, ``recommend`` and ``data`` to the ``unlearnrec`` parser."""
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
    add_checkpoint_every(t)
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
