"""The adversarial evaluation protocol (docs/method.md §7, paper §4.1.4).

A LightGCN trained on the clean data scores every user-item pair. For a seeded subset of users
we add the item the model scores *lowest* among the items the user never interacted with, and
for a seeded subset of items the lowest-scoring user. These edges look like ordinary
interactions but are implausible to the model; the model trained on the attacked set is then
asked to forget exactly them.

The attacked set is cached on disk (``edges.npz`` + ``meta.json``, both written atomically),
keyed by dataset, seed, ratios and the clean model's identity, so every backbone and method of a
grid forgets the same edges.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.config import check_ranges
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError, DataError
from unlearnrec.io.checkpoint import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: the adversarial request: ``authors`` (the UnlearnRec authors' ``make_noise_dataset``: one
#: lowest-scored item for each of a share of users AND one lowest-scored user for each of a share
#: of items; docs/method.md §10; the default of a grid) or ``per-user`` (users only: this
#: project's grids before the authors' code was read)
ATTACK_PROTOCOLS = ("authors", "per-user")
#: the authors' (user, item) shares per dataset name: every user and item on ML-1M and Gowalla, a
#: random 60% of each on Yelp2018 (docs/method.md §10). §10 names no Gowalla share: 1.0 / 1.0 is issue
#: 21's; earlier notes read "about half of the users on Gowalla" from the paper's text
AUTHORS_FRACTIONS: dict[str, tuple[float, float]] = {
    "ml-1m": (1.0, 1.0),
    "gowalla": (1.0, 1.0),
    "yelp2018": (0.6, 0.6),
}
#: the shares of any other dataset (ml-100k, a LightGCN-format folder of another name, synthetic
#: data): every user and every item, as on ML-1M
OTHER_FRACTIONS: tuple[float, float] = (1.0, 1.0)


def dataset_name(dataset: str | os.PathLike) -> str:
    """A dataset by name: a registry name, or a folder's last path component (``.../Yelp2018/`` is
    ``yelp2018``), so that a grid's path and a record written on another machine match."""
    return os.path.basename(os.path.normpath(os.fspath(dataset))).lower()


def authors_fractions(dataset: str | os.PathLike) -> tuple[float, float]:
    """The (user share, item share) the authors' protocol uses on ``dataset``: a registry name or a
    LightGCN-format folder, matched by :func:`dataset_name` (``.../yelp2018`` is Yelp2018);
    :data:`OTHER_FRACTIONS` for a name not in :data:`AUTHORS_FRACTIONS`."""
    return AUTHORS_FRACTIONS.get(dataset_name(dataset), OTHER_FRACTIONS)


@dataclass(frozen=True)
class AttackConfig:
    """The attack builder's settings, always given explicitly by the grid (which resolves the
    protocol and its per-dataset shares, :func:`authors_fractions`). ``user_ratio``: fraction of
    users given one adversarial item; ``item_ratio``: fraction of items given one adversarial user
    (its default 0 is the bare builder's, not the grid's); ``batch_size``: rows of the dense score
    block per step (memory = batch x other side)."""

    user_ratio: float = 1.0
    item_ratio: float = 0.0
    batch_size: int = 1024

    RANGES = {"user_ratio": "[0, 1]", "item_ratio": "[0, 1]", "batch_size": "[1, 16777216]"}

    def __post_init__(self):
        check_ranges(self)
        for k in ("user_ratio", "item_ratio"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {v}")
        if self.batch_size <= 0:
            raise ValueError("batch_size must be positive")


@dataclass(frozen=True)
class AttackTable:
    """The ``[attack]`` table of a grid. ``protocol`` (one of :data:`ATTACK_PROTOCOLS`) sets the
    defaults of ``user_ratio`` and ``item_ratio``: ``authors`` takes both from
    :func:`authors_fractions` per dataset (1.0 / 1.0 on ML-1M and Gowalla, 0.6 / 0.6 on Yelp2018);
    ``per-user`` gives every user one edge (``user_ratio`` 1.0) and no item one (setting
    ``item_ratio`` is an error). ``user_ratio`` may be a list: the grid's ratio axis. A grid without
    the table is ``protocol = "authors"`` unless its older top-level keys ``ratios`` /
    ``item_ratio`` say otherwise."""

    protocol: str = "authors"
    user_ratio: float | tuple[float, ...] | None = None
    item_ratio: float | None = None

    def __post_init__(self):
        valid = ", ".join(ATTACK_PROTOCOLS)
        if self.protocol not in ATTACK_PROTOCOLS:
            raise ValueError(f"unknown value '{self.protocol}' for key 'attack.protocol' (valid: {valid})")
        if self.protocol == "per-user" and self.item_ratio:
            raise ValueError(
                "attack.protocol = \"per-user\" forgets no item's edge: drop 'attack.item_ratio'"
            )
        for k, r in enumerate(self.user_ratios or ()):
            if not 0.0 < r <= 1.0:
                raise ValueError(f"key 'attack.user_ratio[{k}]' must be in (0, 1], got {r}")
        if self.items is not None and not 0.0 <= self.items <= 1.0:
            raise ValueError(f"key 'attack.item_ratio' must be in [0, 1], got {self.items}")

    @property
    def user_ratios(self) -> tuple[float, ...] | None:
        """The user shares (the ratio axis); None: the dataset's (:func:`authors_fractions`)."""
        r = self.user_ratio
        if r is None:
            return (1.0,) if self.protocol == "per-user" else None
        return tuple(float(x) for x in r) if isinstance(r, tuple) else (float(r),)

    @property
    def items(self) -> float | None:
        """The item share; None: the dataset's (:func:`authors_fractions`)."""
        if self.item_ratio is not None:
            return float(self.item_ratio)
        return 0.0 if self.protocol == "per-user" else None


@dataclass(frozen=True)
class Attack:
    """The attacked training set (clean ∪ adversarial) and the adversarial edges E_Δ."""

    train: Interactions
    edges: Interactions
    meta: dict


def _known_csr(known: list[Interactions]) -> sp.csr_matrix:
    m = None
    for k in known:
        c = k.to_csr()
        m = c if m is None else m + c
    return sp.csr_matrix(m)


def _dense_rows(m: sp.csr_matrix, rows: np.ndarray, device) -> torch.Tensor:
    """Dense bool (len(rows), n_cols) mask of a CSR row slice."""
    sub = m[rows]
    out = torch.zeros(len(rows), m.shape[1], dtype=torch.bool, device=device)
    r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    out[torch.from_numpy(r).to(device), torch.from_numpy(sub.indices.astype(np.int64)).to(device)] = True
    return out


@torch.no_grad()
def _lowest(
    a: torch.Tensor, b: torch.Tensor, rows: np.ndarray, mask: sp.csr_matrix, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row r in ``rows``: argmin over columns c not in ``mask[r]`` of a[r] · b[c].

    a: (R, d), b: (C, d). Returns (rows that had a free column, their argmin column). Batched:
    one dense (batch, C) score block at a time, masked with +inf.
    """
    out_r, out_c = [], []
    for s in range(0, len(rows), batch_size):
        rr = rows[s : s + batch_size]
        scores = a[torch.from_numpy(rr).to(a.device)] @ b.T
        scores.masked_fill_(_dense_rows(mask, rr, a.device), float("inf"))
        val, col = scores.min(dim=1)
        ok = torch.isfinite(val).cpu().numpy()
        out_r.append(rr[ok])
        out_c.append(col.cpu().numpy()[ok])
    if not out_r:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_r).astype(np.int64), np.concatenate(out_c).astype(np.int64)


def adversarial_sides(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    known: list[Interactions],
    config: AttackConfig,
    seed: int,
) -> tuple[Interactions, Interactions]:
    """The two halves of the adversarial request of §7, from a clean model's final embeddings.

    user_emb: (U, d), item_emb: (I, d). ``known``: every interaction set the new edges must avoid
    (train, val, test), over one id space. Returns (the user side: a seeded ``user_ratio`` of users,
    those with a free item, each with its lowest-scoring free item; the item side: a seeded
    ``item_ratio`` of items, each with its lowest-scoring free user). The two may share edges.
    """
    if not known:
        raise DataError("adversarial_edges needs at least the training interactions")
    nu, ni = known[0].num_users, known[0].num_items
    if user_emb.shape[0] != nu or item_emb.shape[0] != ni:
        raise DataError(
            f"embeddings ({user_emb.shape[0]} users, {item_emb.shape[0]} items) do not match "
            f"the interactions ({nu}, {ni})"
        )
    rng = np.random.default_rng(seed)
    mask = _known_csr(known)
    n_u = int(round(config.user_ratio * nu))
    n_i = int(round(config.item_ratio * ni))
    users = np.sort(rng.choice(nu, size=n_u, replace=False)) if n_u else np.zeros(0, np.int64)
    items = np.sort(rng.choice(ni, size=n_i, replace=False)) if n_i else np.zeros(0, np.int64)
    uu, ui = _lowest(user_emb, item_emb, users, mask, config.batch_size)
    iu_items, iu_users = _lowest(item_emb, user_emb, items, sp.csr_matrix(mask.T), config.batch_size)
    log.info("adversarial edges: %d from %d users, %d from %d items", len(uu), n_u, len(iu_users), n_i)
    return (
        Interactions.from_pairs(uu, ui, nu, ni, dedupe=True),
        Interactions.from_pairs(iu_users, iu_items, nu, ni, dedupe=True),
    )


def adversarial_edges(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    known: list[Interactions],
    config: AttackConfig,
    seed: int,
) -> Interactions:
    """The adversarial edges of §7: both sides of :func:`adversarial_sides`, duplicates merged."""
    by_users, by_items = adversarial_sides(user_emb, item_emb, known, config, seed)
    return by_users.union(by_items)


def attack_key(dataset: str, seed: int, config: AttackConfig, clean_id: str, train_fingerprint: str) -> str:
    """A stable short hash naming the cache entry of one attack."""
    payload = {
        "protocol": PROTOCOL_VERSION,
        "dataset": dataset,
        "seed": int(seed),
        "user_ratio": config.user_ratio,
        "item_ratio": config.item_ratio,
        "clean_model": clean_id,
        "train": train_fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    atomic_write_bytes(path, writer=lambda f: np.savez(f, **arrays))


def build_attack(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: Interactions,
    other_known: list[Interactions],
    config: AttackConfig,
    seed: int,
    *,
    dataset: str,
    clean_id: str = "",
    cache_dir: str | os.PathLike | None = None,
) -> Attack:
    """The attacked training set and its adversarial edges, from the cache when present.

    ``train``: the clean training set; ``other_known``: val and test (never turned into
    adversarial edges). With ``cache_dir`` the result is stored under ``cache_dir/<key>/`` and
    reused when dataset, seed, ratios, clean model and training set match.
    """
    if not all(train.same_space(k) for k in other_known):
        raise ConfigError("train, val and test must share one id space")
    key = attack_key(dataset, seed, config, clean_id, train.fingerprint())
    folder = Path(cache_dir) / key if cache_dir is not None else None
    if folder is not None and (folder / "meta.json").is_file() and (folder / "edges.npz").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "edges.npz") as z:
            edges = Interactions(z["users"], z["items"], train.num_users, train.num_items)
        if edges.fingerprint() == meta.get("edges_fingerprint"):
            log.info("adversarial edges from cache %s (%d edges)", folder, len(edges))
            return Attack(train.union(edges), edges, meta)
        log.warning("cache %s is inconsistent; rebuilding", folder)
    edges = adversarial_edges(user_emb, item_emb, [train, *other_known], config, seed)
    attacked = train.union(edges)
    meta = {
        "key": key,
        "protocol": PROTOCOL_VERSION,
        "dataset": dataset,
        "seed": int(seed),
        "user_ratio": config.user_ratio,
        "item_ratio": config.item_ratio,
        "clean_model": clean_id,
        "clean_train_fingerprint": train.fingerprint(),
        "attacked_train_fingerprint": attacked.fingerprint(),
        "edges_fingerprint": edges.fingerprint(),
        "num_edges": len(edges),
        "fraction_of_train": len(edges) / max(len(attacked), 1),
    }
    if folder is not None:
        # edges first, meta last: meta.json's presence marks a complete entry
        _atomic_savez(folder / "edges.npz", users=edges.users, items=edges.items)
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
    return Attack(attacked, edges, meta)
