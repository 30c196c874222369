"""The paper's studies as pure functions over embeddings and result records (docs/method.md §7 step 5).

- Score distributions (Fig. 2-3): raw scores ŷ of the forgotten, retained-positive and negative
  edges under the original model and under every unlearned model, summarised on shared bins and
  compared with retraining (the target distribution).
- Case study (Fig. 6): when a user forgets an item, how the scores of the k items most similar
  to it (cosine of the original model's final item embeddings) move for that user.
- Efficiency (Table 4, Fig. 4): seconds and peak memory of each method, against dataset size.

Every function here is pure (the driver that loads the runner's cached models and writes the
studies' JSON is :func:`~unlearnrec.experiments.study_runner.run_studies`): inputs are embeddings
``(user (U, d), item (I, d))``, :class:`~unlearnrec.data.interactions.Interactions` and result
records (dicts, one
per finished runner cell); outputs are JSON-friendly dicts that
:mod:`unlearnrec.experiments.report.plots` draws and :mod:`unlearnrec.experiments.report.html` renders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import UnlearnRecError
from unlearnrec.eval.membership import edge_scores, ks_statistic, sample_non_edges, wasserstein_1d

log = logging.getLogger(__name__)

Embeddings = tuple[torch.Tensor, torch.Tensor]
EDGE_SETS = ("forgotten", "retained", "negative")
ORIGINAL = "original"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ================================================================== score distributions (Fig. 2-3)
def study_edges(
    forgotten: Interactions,
    residual: Interactions,
    known: Interactions,
    seed: int = 0,
    max_retained: int = 20_000,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three edge sets of the score study as ``name -> (users (n,), items (n,))``.

    ``forgotten``: E_Δ. ``residual``: the retained training edges E_r, of which a seeded uniform
    sample of at most ``max_retained`` is kept. ``known``: every edge ever seen (train ∪ val ∪
    test ∪ E_Δ); the negatives are one never-seen item per forgotten edge, for the same user
    (the non-edges MI-NG uses), so the three sets are scored on comparable users.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(len(residual))
    if len(idx) > max_retained:
        idx = np.sort(rng.choice(len(residual), size=max_retained, replace=False))
    nu, ni = sample_non_edges(known, forgotten.users, seed)
    return {
        "forgotten": (np.asarray(forgotten.users), np.asarray(forgotten.items)),
        "retained": (np.asarray(residual.users)[idx], np.asarray(residual.items)[idx]),
        "negative": (nu, ni),
    }


@torch.no_grad()
def edge_set_scores(
    models: Mapping[str, Embeddings], edges: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """Raw scores ŷ_ui = ē_u · ē_i of every edge set under every model: ``model -> set -> (n,)``.

    ``models``: name -> final embeddings; conventionally ``"original"`` (before unlearning),
    ``"retrain"`` and one entry per unlearning method.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, (ue, ie) in models.items():
        out[name] = {
            s: edge_scores(ue, ie, u, i).detach().cpu().double().numpy() for s, (u, i) in edges.items()
        }
    return out


def summarize_distributions(
    scores: Mapping[str, Mapping[str, np.ndarray]], bins: int = 40, reference: str | None = "retrain"
) -> dict[str, Any]:
    """Summarise per-model, per-set score samples on shared bins (JSON-friendly).

    ``scores``: ``model -> set -> (n,)`` as from :func:`edge_set_scores`. For each edge set one
    set of ``bins`` equal-width bin edges spans that set's samples over all models (1st to 99th
    percentile, so one outlier does not flatten every histogram), and each model gets the
    density histogram on those edges, n, mean, variance, mean σ(ŷ), quantiles and, when a
    ``reference`` model is present, the 1-Wasserstein distance and KS statistic to the
    reference's sample of the same set (0 = the reference's distribution exactly).

    Returns ``{"bins": {set: edges (bins+1,)}, "reference": name|None, "models": {model: {set:
    {...}}}}``.
    """
    if bins < 1:
        raise UnlearnRecError(f"bins must be >= 1, got {bins}")
    sets = sorted({s for per in scores.values() for s in per}, key=_set_order)
    ref = reference if reference in scores else None
    edges: dict[str, list[float]] = {}
    for s in sets:
        pooled = np.concatenate(
            [np.asarray(per[s], np.float64) for per in scores.values() if s in per] or [np.zeros(0)]
        )
        pooled = pooled[np.isfinite(pooled)]
        if len(pooled) == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(v) for v in np.quantile(pooled, [0.01, 0.99]))
            if not hi > lo:
                lo, hi = float(pooled.min()) - 0.5, float(pooled.max()) + 0.5
        edges[s] = np.linspace(lo, hi, bins + 1).tolist()
    models: dict[str, dict[str, Any]] = {}
    for name, per in scores.items():
        models[name] = {}
        for s, x in per.items():
            x = np.asarray(x, np.float64)
            entry = _sample_summary(x, np.asarray(edges[s]))
            if ref is not None and s in scores[ref]:
                r = np.asarray(scores[ref][s], np.float64)
                entry["w1_to_ref"] = _nan_to_none(wasserstein_1d(x, r))
                entry["ks_to_ref"] = _nan_to_none(ks_statistic(x, r))
            models[name][s] = entry
    return {"bins": edges, "reference": ref, "models": models}


def _set_order(s: str) -> tuple[int, str]:
    return (EDGE_SETS.index(s) if s in EDGE_SETS else len(EDGE_SETS), s)


def _sample_summary(x: np.ndarray, bin_edges: np.ndarray) -> dict[str, Any]:
    n = int(len(x))
    if n == 0:
        return {
            "n": 0,
            "mean": None,
            "var": None,
            "mean_prob": None,
            "quantiles": [None] * len(QUANTILES),
            "hist": [0.0] * (len(bin_edges) - 1),
        }
    # clip into the shared range so the tails are visible in the outermost bins, not dropped
    hist, _ = np.histogram(np.clip(x, bin_edges[0], bin_edges[-1]), bins=bin_edges, density=True)
    return {
        "n": n,
        "mean": float(x.mean()),
        "var": float(x.var()),
        "mean_prob": float((1.0 / (1.0 + np.exp(-x))).mean()),
        "quantiles": [float(q) for q in np.quantile(x, QUANTILES)],
        "hist": [float(h) for h in hist],
    }


def _nan_to_none(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def score_distribution_study(
    original: Embeddings,
    unlearned: Mapping[str, Embeddings],
    forgotten: Interactions,
    residual: Interactions,
    known: Interactions,
    *,
    seed: int = 0,
    bins: int = 40,
    max_retained: int = 20_000,
    reference: str = "retrain",
) -> dict[str, Any]:
    """Fig. 2-3 data in one call: :func:`study_edges`, :func:`edge_set_scores` over ``original``
    (the model before unlearning, named ``"original"``) and each of ``unlearned`` (name ->
    embeddings, including ``reference`` = retraining when available), then
    :func:`summarize_distributions`."""
    if ORIGINAL in unlearned:
        raise UnlearnRecError(f"'{ORIGINAL}' is reserved for the model before unlearning")
    edges = study_edges(forgotten, residual, known, seed=seed, max_retained=max_retained)
    scores = edge_set_scores({ORIGINAL: original, **unlearned}, edges)
    out = summarize_distributions(scores, bins=bins, reference=reference)
    out["seed"] = seed
    return out


# ================================================================== case study (Fig. 6)
@torch.no_grad()
def similar_items(item_emb: torch.Tensor, items, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items most similar to each of ``items`` by cosine of ``item_emb`` (I, d).

    The item itself is excluded. Returns ``(indices (m, k), cosines (m, k))``, most similar
    first; ties broken by the lower item id. Chunked over ``items`` so memory is O(chunk · I).
    """
    items = np.array(items, dtype=np.int64).ravel()  # a writable copy: torch refuses read-only arrays
    n_items = item_emb.shape[0]
    if not 1 <= k < n_items:
        raise UnlearnRecError(f"k must be in 1..{n_items - 1}, got {k}")
    z = torch.nn.functional.normalize(item_emb.detach().double(), dim=1)
    idx_out, sim_out = [], []
    for start in range(0, len(items), chunk):
        q = torch.as_tensor(items[start : start + chunk], device=z.device)
        sim = z[q] @ z.T  # (c, I)
        sim[torch.arange(len(q), device=z.device), q] = -math.inf
        # stable descending order: sort by -sim, ties by id (argsort is stable on the id order)
        order = torch.argsort(-sim, dim=1, stable=True)[:, :k]
        idx_out.append(order.cpu().numpy())
        sim_out.append(torch.gather(sim, 1, order).cpu().numpy())
    if not idx_out:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(idx_out), np.concatenate(sim_out)


@torch.no_grad()
def case_study(
    original: Embeddings, unlearned: Mapping[str, Embeddings], user: int, item: int, k: int = 10
) -> dict[str, Any]:
    """Fig. 6 for one forgotten edge (``user``, ``item``).

    The k items most similar to ``item`` are taken from the *original* model's final item
    embeddings (cosine); then for that user the score of the forgotten item and of each
    similar item is read under the original model and each of ``unlearned`` (name ->
    embeddings, e.g. ``"unlearnrec"``, ``"retrain"``). A method that forgets the preference,
    not just the edge, moves the similar items' scores the way retraining does.

    Returns ``{"user", "item", "k", "similar": [k ids], "similarity": [k], "scores": {model:
    {"forgotten": ŷ_ui, "similar": [k]}}, "delta": {model: mean(ŷ_uj - ŷ_uj^orig) over the
    similar items}}``.
    """
    ue0, ie0 = original
    if not 0 <= user < ue0.shape[0] or not 0 <= item < ie0.shape[0]:
        raise UnlearnRecError(f"case study edge ({user}, {item}) is outside the id space")
    sim_idx, sims = similar_items(ie0, [item], k)
    js = sim_idx[0]
    models = {ORIGINAL: original, **unlearned}
    scores: dict[str, dict[str, Any]] = {}
    for name, (ue, ie) in models.items():
        s = edge_scores(ue, ie, np.full(k + 1, user), np.concatenate([[item], js])).cpu().double().numpy()
        scores[name] = {"forgotten": float(s[0]), "similar": [float(v) for v in s[1:]]}
    base = np.asarray(scores[ORIGINAL]["similar"])
    delta = {name: float(np.mean(np.asarray(v["similar"]) - base)) for name, v in scores.items()}
    return {
        "user": int(user),
        "item": int(item),
        "k": int(k),
        "similar": [int(j) for j in js],
        "similarity": [float(c) for c in sims[0]],
        "scores": scores,
        "delta": delta,
    }


@torch.no_grad()
def pick_case(original: Embeddings, forgotten: Interactions, rule: str = "highest") -> tuple[int, int]:
    """A deterministic forgotten edge for the case study.

    ``"highest"``: the one the original model scores highest (the most memorised, where
    forgetting is most visible); ``"median"``: the one at the median score; ``"first"``: the
    first in canonical order.
    """
    if len(forgotten) == 0:
        raise UnlearnRecError("no forgotten edge to pick a case from")
    if rule == "first":
        k = 0
    elif rule in ("highest", "median"):
        s = edge_scores(*original, forgotten.users, forgotten.items).cpu().numpy()
        order = np.argsort(-s, kind="stable")
        k = int(order[0] if rule == "highest" else order[len(order) // 2])
    else:
        raise UnlearnRecError(f"unknown case rule '{rule}' (valid: first, highest, median)")
    return int(forgotten.users[k]), int(forgotten.items[k])


@torch.no_grad()
def similar_item_shift(
    original: Embeddings, unlearned: Mapping[str, Embeddings], forgotten: Interactions, k: int = 10
) -> dict[str, dict[str, float]]:
    """Fig. 6 over every forgotten edge at once: per model, the mean score of the forgotten edges
    and of their users' k most similar items (neighbours of the forgotten item in the original
    model), and the mean change of both against the original model.

    Returns ``{model: {"forgotten_mean", "similar_mean", "forgotten_delta", "similar_delta"}}``
    (``model`` includes ``"original"``, whose deltas are 0). Vectorised: one (m, k) gather per model.
    """
    models = {ORIGINAL: original, **unlearned}
    if len(forgotten) == 0:
        return {
            name: {
                "forgotten_mean": math.nan,
                "similar_mean": math.nan,
                "forgotten_delta": math.nan,
                "similar_delta": math.nan,
            }
            for name in models
        }
    js, _ = similar_items(original[1], forgotten.items, k)  # (m, k)
    users = np.repeat(np.asarray(forgotten.users), k)
    raw: dict[str, tuple[float, float]] = {}
    for name, (ue, ie) in models.items():
        f = edge_scores(ue, ie, forgotten.users, forgotten.items).double()
        s = edge_scores(ue, ie, users, js.ravel()).double()
        raw[name] = (float(f.mean()), float(s.mean()))
    f0, s0 = raw[ORIGINAL]
    return {
        name: {"forgotten_mean": f, "similar_mean": s, "forgotten_delta": f - f0, "similar_delta": s - s0}
        for name, (f, s) in raw.items()
    }


# ================================================================== efficiency (Table 4, Fig. 4)
def efficiency_rows(
    records: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = ("dataset", "backbone", "method"),
    reference: str = "retrain",
    size_key: str = "train_edges",
    method_key: str = "method",
    extra_keys: Sequence[str] = ("prepare_seconds",),
) -> list[dict[str, Any]]:
    """Aggregate seconds and peak memory of finished cells per ``keys`` (e.g. dataset x method).

    Each record needs ``seconds`` and ``peak_memory_mb`` (missing: skipped) and the ``keys``;
    ``size_key`` (the number of training edges) is carried along for plots against dataset size.
    Per group: ``n`` cells, ``seconds`` (mean), ``seconds_std``, ``peak_memory_mb`` (mean),
    ``peak_memory_max_mb``, the size, and ``speedup`` = reference's mean seconds / this one's for
    the same keys except ``method_key`` (None without a reference cell; a reference cell is one
    whose ``method_key`` value or registered ``method`` is ``reference``). ``extra_keys``: other
    numeric fields averaged per group (None when absent). Rows sorted by size, then keys.
    """
    keys = tuple(keys)
    if method_key not in keys:
        raise UnlearnRecError(f"efficiency rows need '{method_key}' among the grouping keys {keys}")
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        if not _is_number(r.get("seconds")):
            continue
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    rows = []
    for g, recs in groups.items():
        secs = np.asarray([float(r["seconds"]) for r in recs])
        mems = np.asarray([float(r["peak_memory_mb"]) for r in recs if _is_number(r.get("peak_memory_mb"))])
        sizes = [r.get(size_key) for r in recs if _is_number(r.get(size_key))]
        row = dict(zip(keys, g, strict=True))
        row.update(
            {
                "n": len(recs),
                "seconds": float(secs.mean()),
                "seconds_std": float(secs.std()) if len(secs) > 1 else 0.0,
                "peak_memory_mb": float(mems.mean()) if len(mems) else None,
                "peak_memory_max_mb": float(mems.max()) if len(mems) else None,
                size_key: int(max(sizes)) if sizes else None,
            }
        )
        for k in extra_keys:
            xs = [float(r[k]) for r in recs if _is_number(r.get(k))]
            row[k] = float(np.mean(xs)) if xs else None
        rows.append(row)
    m = keys.index(method_key)
    # a reference group: its key is the reference name, or its cells' registered method is
    ref_secs = {
        g[:m] + g[m + 1 :]: r["seconds"]
        for (g, recs), r in zip(groups.items(), rows, strict=True)
        if g[m] == reference or all(x.get("method") == reference for x in recs)
    }
    for g, row in zip(groups, rows, strict=True):
        ref = ref_secs.get(g[:m] + g[m + 1 :])
        row["speedup"] = (ref / row["seconds"]) if ref is not None and row["seconds"] > 0 else None
    rows.sort(key=lambda r: (r[size_key] if r[size_key] is not None else -1, *(str(r[k]) for k in keys)))
    return rows


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope b of log(value) = a + b log(size): how cost grows with dataset size
    (1 = linear). None with fewer than two distinct positive sizes."""
    pts = [
        (math.log(s), math.log(v))
        for s, v in zip(sizes, values, strict=True)
        if _is_number(s) and _is_number(v) and s > 0 and v > 0
    ]
    xs = np.asarray([p[0] for p in pts])
    if len(np.unique(xs)) < 2:
        return None
    ys = np.asarray([p[1] for p in pts])
    return float(np.polyfit(xs, ys, 1)[0])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
