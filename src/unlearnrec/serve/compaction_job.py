"""The compaction's child process: retrain the base without the forgotten data and pre-train its encoder,
from a job directory written by :class:`unlearnrec.serve.compaction.Compactor`.

``python -m unlearnrec.serve.compaction_job JOB_DIR`` reads ``job.json`` and ``input.safetensors``, writes the
new base and encoder into a staging directory (``COMPLETE`` last, fsync, one rename) and ``result.json``. It
stops by itself when the service that started it dies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"  # marker file, written last inside the staging directory
PARENT_ENV = "UNLEARNREC_COMPACTION_PARENT"


def _watch_parent(parent: int) -> None:
    def run():
        while True:
            if os.getppid() != parent:
                os._exit(3)  # the service died: stop now, the restart abandons or restarts this job
            time.sleep(0.25)

    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def run_job(job_dir: str | os.PathLike) -> dict[str, Any]:
    """Train the compacted base and its encoder from a job directory (the child process)."""
    import torch
    from safetensors.torch import load_file

    from unlearnrec.backbones import build_backbone
    from unlearnrec.config import from_dict, to_dict
    from unlearnrec.data.graph import Graph
    from unlearnrec.data.interactions import Interactions
    from unlearnrec.io.checkpoint import atomic_write_text
    from unlearnrec.model import TrainedModel
    from unlearnrec.serve.versions import fsync_tree
    from unlearnrec.train.loop import fit
    from unlearnrec.unlearn.retrain import Retrain, RetrainConfig
    from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

    job = Path(job_dir)
    spec = json.loads((job / "job.json").read_text())
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    t0 = time.perf_counter()
    arrays = load_file(str(job / "input.safetensors"))
    nu, ni = int(spec["num_users"]), int(spec["num_items"])
    train = Interactions(arrays["train_users"].numpy(), arrays["train_items"].numpy(), nu, ni)
    val = Interactions(arrays["val_users"].numpy(), arrays["val_items"].numpy(), nu, ni)
    fu = arrays["forgotten_users"].numpy().astype(np.int64)
    fi = arrays["forgotten_items"].numpy().astype(np.int64)
    base = TrainedModel.load(spec["base"])
    seed = int(spec["seed"])
    # the base's recipe, exactly as `unlearnrec forget --method retrain` takes it
    retrain = Retrain(RetrainConfig(), seed=seed).set_validation(val if len(val) else None)
    recipe = retrain.recipe(base)
    graph = Graph.from_interactions(train)
    gen = torch.Generator().manual_seed(seed)
    backbone = build_backbone(base.backbone_name, nu, ni, base.backbone.config, generator=gen)
    log.info(
        "compaction: retraining %s on %d edges, up to %d epochs",
        base.backbone_name,
        len(train),
        recipe.epochs,
    )
    res = fit(backbone, graph, recipe, val=val if retrain._validate_with(base) is not None else None)
    t_train = time.perf_counter() - t0
    with torch.no_grad():  # forgotten nodes keep no trained (or initial) row
        if len(fu):
            backbone.e0[torch.as_tensor(fu)] = 0
        if len(fi):
            backbone.e0[torch.as_tensor(fi + nu)] = 0
    original = base.meta.get("original_train_fingerprint", base.meta.get("train_fingerprint"))
    model = TrainedModel(
        backbone=backbone,
        graph=graph,
        backbone_name=base.backbone_name,
        dataset=base.dataset,
        split=dict(base.split),
        forgotten_users=fu,
        forgotten_items=fi,
        meta={
            "train_config": to_dict(recipe),
            "best_epoch": res.best_epoch,
            "original_train_fingerprint": original,
            "compaction": spec["compaction"],
        },
    )
    enc_meta = json.loads((Path(spec["encoder"]) / "meta.json").read_text())
    ie = UnlearnRec(
        from_dict(UnlearnRecConfig, enc_meta["config"], "encoder config"), seed=int(enc_meta.get("seed", 0))
    )
    t1 = time.perf_counter()
    ie.prepare(model, model.train)
    t_enc = time.perf_counter() - t1
    with torch.no_grad():
        rows = np.concatenate([fu, fi + nu]).astype(np.int64)
        if len(rows):
            ie.encoder.h0[torch.as_tensor(rows)] = 0
    out = Path(spec["out"])
    staging = out.parent / f".staging-{out.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    model.save(staging / "model")
    ie.save_prepared(staging / "encoder")
    result = {
        "train_edges": len(train),
        "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch,
        "train_seconds": round(t_train, 3),
        "encoder_seconds": round(t_enc, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "early_stopping": len(val) > 0,
    }
    atomic_write_text(staging / COMPLETE, json.dumps(result))
    fsync_tree(staging)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    atomic_write_text(job / "result.json", json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m unlearnrec.serve.compaction_job JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads((Path(argv[0]) / "job.json").read_text())
    if spec.get("nice"):
        os.nice(int(spec["nice"]))
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _watch_parent(int(parent))
    res = run_job(argv[0])
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
