"""The studies' driver: for every group of a finished grid, rebuild what the pure functions of
:mod:`~unlearnrec.experiments.studies` need from the runner's cache (through the store's public API)
and write their outputs next to the results."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.results import read_results, write_study
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store
from unlearnrec.experiments.studies import (
    Embeddings,
    case_study,
    pick_case,
    score_distribution_study,
    similar_item_shift,
)
from unlearnrec.unlearn.registry import build_method

log = logging.getLogger(__name__)


def run_studies(
    config: Any,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    labels: Sequence[str] | None = None,
    k: int = 10,
    bins: int = 40,
    case_rule: str = "highest",
    train_missing: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Compute Fig. 2-3 and Fig. 6 for every group of a finished runner grid and store them with
    :func:`~unlearnrec.experiments.results.write_study` under ``out_dir/studies/``.

    ``config``: the experiment TOML (or dict / ``ExperimentConfig``) that produced ``out_dir``;
    ``cache_dir``: the runner's cache root (default: the runner's default).
    Per (dataset, seed, ratio, backbone) group the cached model to unlearn (attacked, or with random
    requests the original) and retrained model are loaded; each non-retrain method (or only those
    whose label is in ``labels``) is rebuilt, its prepared state taken from the cache, and made to
    forget the same request again (cheap for UnlearnRec; a baseline without a cache re-prepares).
    Then the score distributions (reference: the retrained model), the case study of one
    forgotten edge (``case_rule``, see :func:`pick_case`) and the similar-item shift over all
    forgotten edges are written. A group is looked up under the hashes its finished cells recorded
    (``hashes`` in ``results.jsonl``), else under today's. Groups whose model to unlearn is not
    cached are skipped unless ``train_missing``. Returns the written paths.
    """
    cfg = load_config(config)
    root = default_cache() if cache_dir is None else cache_dir
    store = Store(cfg, root, data_dir=data_dir, device=device, fallbacks=(Path(out_dir),))
    retrain = next((m for m in cfg.methods if m.name == "retrain"), None)
    specs = [m for m in cfg.methods if m.name != "retrain" and (labels is None or m.title in labels)]
    written: list[Path] = []
    # the hashes the cells were run under: recomputing them from today's config dataclasses
    # would miss the caches as soon as a config class gains a field
    recorded: dict[tuple, dict] = {}
    for r in read_results(out_dir):
        if r.get("status") == "ok" and isinstance(r.get("hashes"), dict):
            # the request kind too: random and users/items grids may share one OUT and its ratios
            req = r.get("request")
            kind = req.get("kind", "random") if isinstance(req, dict) else "adversarial"
            key = (r.get("dataset"), r.get("backbone"), r.get("seed"), r.get("ratio"), kind)
            recorded[key] = r["hashes"]
    for group in groups(cfg):
        h = recorded.get((group.dataset, group.backbone, group.seed, group.ratio, group.request))
        if h and h.get("attacked") and h.get("clean"):
            group = dataclasses.replace(group, attacked_hash=h["attacked"], clean_hash=h["clean"])
        elif h and h.get("model") and h.get("request"):  # a random-request grid
            group = dataclasses.replace(group, attacked_hash=h["model"], request_key=h["request"])
        kind = f"-{group.request}" if group.request in ("users", "items") else ""
        tag = f"{Path(group.dataset).name}-{group.backbone}-s{group.seed}{kind}-r{group.ratio:g}"
        if not train_missing and not store.has_model(group):
            log.warning("study %s skipped: no cached model to unlearn (run the experiment first)", tag)
            continue
        data = store.dataset(group.dataset)
        att = store.forget_set(group)
        model = store.model(group)
        unlearned: dict[str, Embeddings] = {}
        ref_name = None
        if retrain is not None:
            reference = store.retrained(group, retrain)
            if reference is not None:
                ref_name = retrain.title
                unlearned[ref_name] = reference.embeddings()
        for spec in specs:
            method = build_method(spec.name, dict(spec.config), group.seed)
            method.set_validation(data.val)
            store.prepare(method, group, spec, model, att.train)  # the runner's prepared cache
            unlearned[spec.title] = method.forget(model, att.train, store.request(group)).model.embeddings()
        if not unlearned:
            continue
        original = model.embeddings()
        known = att.train.union(data.val).union(data.test)
        residual = att.train.drop(att.edges)
        title = f"{Path(group.dataset).name} / {group.backbone} (seed {group.seed}, ratio {group.ratio:g})"
        scores = score_distribution_study(
            original,
            unlearned,
            att.edges,
            residual,
            known,
            seed=group.seed,
            bins=bins,
            reference=ref_name or "retrain",
        )
        written.append(write_study(out_dir, "scores", tag, scores, title=title))
        u, i = pick_case(original, att.edges, case_rule)
        written.append(
            write_study(out_dir, "case", tag, case_study(original, unlearned, u, i, k=k), title=title)
        )
        shift = similar_item_shift(original, unlearned, att.edges, k=k)
        written.append(write_study(out_dir, "shift", tag, shift, title=title))
        log.info("studies of %s written", tag)
    return written
