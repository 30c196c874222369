"""``pretrain`` (UnlearnRec's Influence Encoder) and ``forget``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearnrec.cli.audit import add_request_args, request_from_args
from unlearnrec.cli.common import (
    SEED,
    add_checkpoint_every,
    check_out,
    config_table,
    emit,
    progress,
    stopped,
    training_state,
)
from unlearnrec.errors import ConfigError, RequestError
from unlearnrec.runtime import resolve_device
from unlearnrec.train import distributed


def _unlearnrec_config(args, extra: dict[str, Any]):
    from unlearnrec.config import from_dict
    from unlearnrec.unlearn.unlearnrec import UnlearnRecConfig

    raw = config_table(args.config, "unlearnrec")
    raw.update({k: v for k, v in extra.items() if v is not None})
    return from_dict(UnlearnRecConfig, raw, "unlearnrec")


class EpochMeans:
    """Running means of the loss terms over the current epoch's steps, for the progress bar.

    At an epoch's last step they are exactly the epoch's row of the loss curve (the same sums in
    the same order, divided by the same step count), so the bar's final numbers and the summary
    line ("last epoch ...") agree; a bar showing the last batch's terms would not.
    """

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
        self.sums: dict[str, float] = {}
        self.step = 0

    def update(self, step: int, terms: dict[str, float]) -> dict[str, float]:
        if step == 1:
            self.sums = {}
        self.step = step
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        return {k: self.sums[k] / step for k in self.keys if k in self.sums}


def cmd_pretrain(args) -> int:

    from unlearnrec.io.checkpoint import atomic_write_text
    from unlearnrec.model import TrainedModel
    from unlearnrec.train import resume
    from unlearnrec.unlearn.unlearnrec import UnlearnRec

    cfg = _unlearnrec_config(
        args, {"epochs": args.epochs, "ratio": args.ratio, "batch_size": args.batch_size}
    )
    check_out(args, {"--model": args.model, "--config": args.config})
    check_out(args, {"--model": args.model, "--config": args.config}, option="--curve")
    device = resolve_device(args.device)
    part = distributed.init_from_env(device)  # under torchrun: data-parallel, rank 0 writes
    model = TrainedModel.load(args.model, device=device)
    method = UnlearnRec(cfg, seed=args.seed)
    bar = progress(cfg.epochs, "pre-train IE", not (args.quiet or not part.is_main))
    shown = ("model", "unlearn", "preserve", "contrast", "total")
    means = EpochMeans(shown)

    def on_step(epoch: int, step: int, steps: int, terms: dict[str, float]) -> None:
        running = means.update(step, terms)  # the epoch's means so far: the curve's row at the end
        bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)
        if step == steps:
            bar.update(1)

    method.on_step = on_step
    state = training_state(args.out)
    method.set_scratch(state, every=args.checkpoint_every)
    try:
        method.prepare(model, model.train)
    except KeyboardInterrupt:
        stopped(state)
        raise
    bar.close()
    distributed.finish()
    if not part.is_main:
        return 0
    method.save_prepared(args.out)
    curve = Path(args.curve) if args.curve else Path(args.out) / "loss_curve.json"
    atomic_write_text(curve, json.dumps(method.history, indent=1))
    resume.discard(state)
    secs = method.history[-1]["seconds"] if method.history else 0.0
    last = method.history[-1] if method.history else {}
    emit(
        args,
        {
            "out": str(args.out),
            "epochs": cfg.epochs,
            "seconds": secs,
            "curve": str(curve),
            "history": method.history,
        },
        [
            f"pre-trained the Influence Encoder for {cfg.epochs} epochs in {secs:.1f}s (ratio {cfg.ratio})",
            f"last epoch (mean of its {last.get('steps', 0)} steps)  "
            + "  ".join(f"{k}={last[k]:.4f}" for k in shown if k in last),
            f"saved to {args.out} (loss curve: {curve})",
        ],
    )
    return 0


def _build_unlearner(args, model, data):
    from unlearnrec.unlearn.registry import build_method

    if args.method == "unlearnrec":
        from unlearnrec.unlearn.unlearnrec import UnlearnRec

        if not args.encoder:
            raise ConfigError(
                "--method unlearnrec needs --encoder IE_DIR (make one with 'unlearnrec pretrain')"
            )
        over = {} if args.finetune_epochs is None else {"finetune_epochs": args.finetune_epochs}
        # the validation split feeds fine-tuning's stopping rule (finetune_stop_share), never the request
        return UnlearnRec.from_encoder(args.encoder, model, **over).set_validation(data.val)
    if args.finetune_epochs is not None:
        raise ConfigError("--finetune-epochs applies to --method unlearnrec only")
    method = build_method(args.method, config_table(args.config, args.method), seed=args.seed)
    method.set_validation(data.val)
    if not (args.encoder and method.load_prepared(args.encoder, model)):
        method.prepare(model, model.train)
    return method


def cmd_forget(args) -> int:
    import numpy as np

    from unlearnrec.eval.membership import forgetting_metrics
    from unlearnrec.model import TrainedModel

    inputs = {
        "--model": args.model,
        "--encoder": args.encoder,
        "--original": args.original,
        "--edges": args.edges,
        "--config": args.config,
        "--ledger": args.ledger,
    }
    check_out(args, inputs)
    if args.ledger:  # appended to: it may exist, but never inside (or be) another input or the output
        check_out(
            args,
            {**{k: v for k, v in inputs.items() if k != "--ledger"}, "--out": args.out},
            option="--ledger",
            must_be_new=False,
        )
    device = resolve_device(args.device)
    part = distributed.init_from_env(device)  # torchrun: shards (and Retrain) across the ranks
    model = TrainedModel.load(args.model, device=device)
    data = model.load_dataset(args.data_dir)
    request = request_from_args(model.train, args)
    if len(np.intersect1d(request.users, model.forgotten_users)) or len(
        np.intersect1d(request.items, model.forgotten_items)
    ):
        raise RequestError("the request names a user or item this model has already forgotten")
    method = _build_unlearner(args, model, data)
    if args.original:
        if not method.supports_cumulative:
            raise ConfigError(
                f"--original (cumulative forgetting) is not supported by --method {args.method}"
            )
        original = TrainedModel.load(args.original, device=device)
        result = method.forget_cumulative(original, model, request)
    else:
        result = method.forget(model, model.train, request)
    distributed.finish()
    if not part.is_main:  # every rank holds the same result; rank 0 evaluates, saves and reports
        return 0
    new = result.model
    test = new.evaluate(data, "test", ks=(20,))
    known = data.train.union(data.val).union(data.test).union(request.edges)
    fm = forgetting_metrics(model.embeddings(), new.embeddings(), request.edges, known, seed=args.seed)
    new.meta["last_request"] = {
        "seconds": result.seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "mi_bf": fm["mi_bf"],
        "mi_ng": fm["mi_ng"],
        "test": test,
    }
    new.save(args.out)
    entry = None
    if args.ledger:
        from unlearnrec.unlearn.ledger import Ledger

        # recorded after the new model is durably saved, before the request is acknowledged
        entry = Ledger(args.ledger).append(
            {
                "method": args.method,
                "request_fingerprint": request.edges.fingerprint(),
                "edges": len(request.edges),
                "users": request.users.tolist(),
                "items": request.items.tolist(),
                "model_in": str(args.model),
                "model_in_fingerprint": model.train.fingerprint(),
                "model_out": str(args.out),
                "model_out_fingerprint": new.train.fingerprint(),
                "seconds": result.seconds,
                "mi_bf": fm["mi_bf"],
                "mi_ng": fm["mi_ng"],
            }
        )
    info = {k: v for k, v in result.info.items() if k != "finetune_history"}
    out = {
        "out": str(args.out),
        "method": args.method,
        "edges": len(request.edges),
        "users": request.users.tolist(),
        "items": request.items.tolist(),
        "cumulative": bool(args.original),
        "seconds": result.seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "test": test,
        "mi_bf": fm["mi_bf"],
        "mi_ng": fm["mi_ng"],
        "info": info,
        "ledger_entry": entry["seq"] if entry else None,
    }
    emit(
        args,
        out,
        [
            f"forgot {len(request.edges)} edges ({len(request.users)} users, {len(request.items)} items) "
            f"with {args.method}{' (cumulative, from the original)' if args.original else ''}",
            f"seconds={result.seconds:.4f}  peak_memory_mb={result.peak_memory_mb:.1f}",
            f"test recall@20={test['recall@20']:.4f}  ndcg@20={test['ndcg@20']:.4f}",
            f"MI-BF={fm['mi_bf']:.4f}  MI-NG={fm['mi_ng']:.4f}",
            *_guard_line(info),
            f"saved to {args.out}",
        ],
    )
    return 0


def _guard_line(info: dict) -> list[str]:
    """What ``finetune_min_mi_ng`` and ``forget_guard`` did, a line each (nothing when neither ran)."""
    gate = []
    if "ours0_mi_ng" in info:
        ran = "skipped" if "finetune_skipped" in info else "run"
        gate = [f"fine-tuning {ran}: Ours(0)'s own MI-NG on the request {info['ours0_mi_ng']:.3f}"]
    return gate + _guard_verdict(info)


def _guard_verdict(info: dict) -> list[str]:
    if "guard_off" in info:
        skipped = ", so fine-tuning was skipped (Ours(0) served)" if "finetune_skipped" in info else ""
        return [
            f"forget_guard: off ({info['guard_off']}: the model's dataset has none){skipped}; "
            "train the model with val_ratio > 0 to guard its Recall"
        ]
    if "guard_checks" not in info:
        return []
    scale, val = info["guard_scale"], info["guard_val_recall"]
    what = "kept the model as served" if scale is None else f"scaled Ours(0)'s shift to {scale:g}"
    if "guard_kept_step" in info:  # forget_guard_every: the final state fell short, an earlier one held
        what = f"served the fine-tuning state of step {info['guard_kept_step']} (the last one fell short)"
    return [f"forget_guard: {what} (validation recall@20={val:.4f}, {len(info['guard_checks'])} checks)"]


def register(sub, common) -> None:
    """Add ``pretrain`` and ``forget`` to the ``unlearnrec`` parser."""
    from unlearnrec.unlearn.registry import METHOD_NAMES

    p = sub.add_parser("pretrain", help="pre-train UnlearnRec's Influence Encoder for a trained model")
    p.add_argument("--model", required=True, help="trained model directory")
    p.add_argument("--epochs", type=int, default=None, help="pre-training rounds (default: config, 10)")
    p.add_argument(
        "--ratio", type=float, default=None, help="simulated request size ρ in (0, 1) (default 0.2)"
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--config", default=None, help="TOML with UnlearnRecConfig keys (top level or [unlearnrec])"
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--curve", default=None, help="where to write the loss curve JSON (default: IE_DIR)")
    p.add_argument("--out", required=True, help="encoder directory to write")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out / --curve")
    add_checkpoint_every(p)
    common(p, data=False)
    p.set_defaults(func=cmd_pretrain)

    f = sub.add_parser("forget", help="forget edges, users or items from a trained model")
    f.add_argument("--model", required=True, help="model directory (original or already unlearned)")
    f.add_argument("--method", default="unlearnrec", choices=METHOD_NAMES)
    f.add_argument(
        "--encoder", default=None, help="Influence Encoder directory (unlearnrec) / prepared cache"
    )
    add_request_args(f)
    f.add_argument(
        "--finetune-epochs", type=int, default=None, help="k of Ours(k) (default: the encoder's, 0)"
    )
    f.add_argument(
        "--original",
        default=None,
        help="the stored original model: forget cumulatively from it (see docs/forgetting.md)",
    )
    f.add_argument("--config", default=None, help="TOML with the method's config keys")
    f.add_argument("--seed", type=SEED, default=0, help="seed of the method and of MI-NG's negatives")
    f.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    f.add_argument("--out", required=True, help="directory for the new model")
    f.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    f.add_argument("--ledger", default=None, help="append a record of this request to this JSONL ledger")
    common(f)
    f.set_defaults(func=cmd_forget)
