"""One cell of the grid (a group and a method) -> one record of ``results.jsonl``.

A record holds the cell's identity (experiment, dataset, backbone, ratio, seed, method, label, hashes),
``status`` (``ok`` or ``error``), and for an ok cell the test metrics, the forgetting metrics
(MI-BF, MI-NG, membership AUC, distances to the retrained model), time and peak memory of ``forget``
and ``prepare``, the method's ``info``, and ``input_mutated`` (a method that changed the model it was
given breaks the Unlearner contract). ``attack`` (adversarial) or ``request`` (the other kinds:
``{kind, ratio, edges, fraction_of_train, key}``, plus ``nodes`` for users / items) holds ``edges``
(the number forgotten) and ``fraction_of_train`` (their share of the training set the model was
trained on).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec import __version__
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.experiments.columns import MetricInputs, computed_metrics
from unlearnrec.experiments.grid import NODE_REQUESTS, ExperimentConfig, Group, MethodSpec, cell_hash
from unlearnrec.experiments.store import Store
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Result, Unlearner

log = logging.getLogger(__name__)

RUNNER_VERSION = 1
#: the metrics a record keeps of the reference (Retrain) cell, and the runner logs per cell
SUMMARY_METRICS = ("recall@20", "ndcg@20", "mi_bf", "mi_ng", "auc")

Builder = Callable[[str, dict, int], Unlearner]


def versions() -> dict[str, str]:
    """The versions a record was produced with."""
    return {
        "unlearnrec": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "runner": str(RUNNER_VERSION),
    }


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def jsonable(d: dict) -> dict:
    """Keep the JSON-serialisable scalar / list / dict entries of a method's ``info``."""
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v, default=_json_default)
        except (TypeError, ValueError):
            continue
        if isinstance(v, (str, int, float, bool, list, dict, type(None))) or hasattr(v, "tolist"):
            out[str(k)] = v
    return out


def state_digest(model: TrainedModel) -> str:
    """sha256 over the model's tensors and training edges: detects a method mutating its input."""
    h = hashlib.sha256(model.train.fingerprint().encode())
    for k, v in sorted(model.backbone.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def base_record(config: ExperimentConfig, group: Group, spec: MethodSpec, device: torch.device) -> dict:
    """The identity of a cell, shared by its ok and error records."""
    if group.request != "adversarial":
        hashes = {"model": group.attacked_hash, "request": group.request_key}
        extra = {"request": {"kind": group.request, "ratio": group.ratio}}
    else:  # exactly the fields an adversarial record always had
        hashes, extra = {"clean": group.clean_hash, "attacked": group.attacked_hash}, {}
    return {
        "kind": "cell",
        "experiment": config.name,
        "study": config.section,
        "cell": cell_hash(group, spec),
        "dataset": group.dataset,
        "backbone": group.backbone,
        "ratio": group.ratio,
        "seed": group.seed,
        "method": spec.name,
        "label": spec.title,
        "method_config": spec.config,
        "hashes": hashes,
        "device": str(device),
        "versions": versions(),
        **extra,
    }


def stamp(record: dict) -> dict:
    """Add the time the record is written."""
    record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def error_record(
    config: ExperimentConfig, group: Group, spec: MethodSpec, device: torch.device, err: BaseException | str
) -> dict:
    """The record of a failed cell: the error's one-line message and the last lines of its traceback."""
    rec = base_record(config, group, spec, device)
    if isinstance(err, BaseException):
        msg = f"{type(err).__name__}: {err}"
        rec["traceback"] = traceback.format_exception(type(err), err, err.__traceback__)[-3:]
    else:
        msg = err
    rec.update({"status": "error", "error": msg})
    log.warning("cell %s %s failed: %s", group.tag, spec.title, msg)
    return rec


def run_cell(
    store: Store,
    group: Group,
    spec: MethodSpec,
    build: Builder,
    reference: TrainedModel | None = None,
) -> tuple[dict, Result]:
    """Forget the group's request with one method and measure; returns (record, result).

    ``reference``: the group's retrained model (the distribution the forgotten edges' scores are
    compared with), if the grid has one. A method that modifies the model it was given is recorded
    (``input_mutated``) and the model is evicted from the store, so the next cell starts clean.
    """
    data = store.dataset(group.dataset)
    att = store.forget_set(group)
    model = store.model(group)
    digest = state_digest(model)
    emb_before = model.embeddings()
    method = build(spec.name, dict(spec.config), group.seed)
    method.set_validation(data.val)
    method.set_scratch(store.scratch_dir(group, spec), store.checkpoint_every)
    prep_s, prep_mb, prep_cached = store.prepare(method, group, spec, model, att.train)
    request = store.request(group)
    result = method.forget(model, att.train, request)
    new = result.model
    mutated = state_digest(model) != digest
    if mutated:  # a contract breach: never let it leak into the next cell
        log.error("%s modified the model it was given; reloading it for the next cell", spec.title)
        store.evict(group)
    ks = tuple(group.train_cfg.get("ks", (20,)))
    test = new.evaluate(data, "test", ks=ks)
    known = att.train.union(data.val).union(data.test)
    fm = forgetting_metrics(
        emb_before,
        new.embeddings(),
        att.edges,
        known,
        retained=new.train,
        reference=reference.embeddings() if reference is not None else None,
        seed=group.seed,
        max_retained=store.config.max_retained,
    )
    before = model.meta.get("metrics", {}).get("test", {})
    metrics: dict[str, Any] = {**{k: v for k, v in test.items() if k != "users"}, **fm}
    metrics.update({f"before_{k}": v for k, v in before.items() if k != "users"})
    metrics.update(computed_metrics(MetricInputs(model, new, att.edges, data, reference, group.seed)))
    rec = base_record(store.config, group, spec, store.device)
    summary = {
        "edges": len(att.edges),
        "fraction_of_train": att.meta.get("fraction_of_train"),
        "key": att.meta.get("key"),
    }
    if group.request in NODE_REQUESTS:
        summary["nodes"] = len(request.users) + len(request.items)
    if group.request != "adversarial":
        rec["request"].update(summary)
    else:
        rec["attack"] = summary
    rec.update(
        {
            "status": "ok",
            "metrics": metrics,
            "seconds": result.seconds,
            "peak_memory_mb": result.peak_memory_mb,
            "prepare_seconds": prep_s,
            "prepare_peak_memory_mb": prep_mb,
            "prepare_cached": prep_cached,
            "info": jsonable(result.info),
            "input_mutated": mutated,
            "model": {
                "train_seconds": model.meta.get("train_seconds"),
                "best_epoch": model.meta.get("best_epoch"),
                "epochs_run": model.meta.get("epochs_run"),
            },
        }
    )
    return rec, result
