# long file: being split into grid / store / cell / results / report (issue 23, in progress)
"""The experiment grid: datasets x backbones x methods (x request ratios x seeds) -> results.jsonl.

Two kinds of deletion request (the top-level ``request`` key):

- ``"adversarial"`` (the default; Table 2): for each dataset, seed and ratio of ``ratios`` a
  clean LightGCN is trained and the adversarial edges are built from it (METHOD.md §7); for each
  backbone the model to unlearn is trained on the attacked set; every method forgets the
  adversarial edges.
- ``"random"`` (the unlearning-ratio study, the paper's Table 5): there is no attack. For each
  dataset, seed and backbone one model is trained on the clean training set and shared by every
  ratio of ``request_ratios``; a ratio r forgets a uniform random r of the clean training edges
  (:func:`~unlearnrec.data.requests.sample_edges`, drawn with the grid seed; at least one
  edge). Retrain trains on the residual set. ``ratios``, ``item_ratio`` and ``clean`` belong to
  the attack and are rejected here.
- ``"users"`` / ``"items"`` (whole-node forgetting, as ``unlearnrec forget --user``): like
  ``"random"`` (no attack, one model per dataset, seed and backbone trained on the clean set and
  shared by every ratio and with a random grid of the same recipe in the same ``OUT``), but a
  ratio r draws ``max(1, round(r * num_users))`` users (items), uniformly among those with at
  least one training edge, seeded by the grid seed, and forgets *every* training edge of each.
  The method receives ``Request.of_users`` / ``Request.of_items``, so the nodes' layer-0 rows are
  erased (:func:`~unlearnrec.unlearn.base.erase_nodes`: zero rows, no recommendations for an erased
  user, an erased item never recommended); Retrain trains on the residual set. MI-BF / MI-NG are
  computed on the forgotten edges as for the other kinds. For erased users MI-NG is exactly 1 by
  construction, not a bug: such a user has a zero layer-0 row and no edge left in the graph, so
  its final embedding is zero and every item scores 0 for it, the forgotten edges and the
  same-user non-edges alike (σ = 0.5 on both sides). The drawn node ids are stored under
  ``requests/<key>/`` with the edges they imply.

One JSON line per cell is appended to ``OUT/results.jsonl``; its ``ratio`` is the grid's ratio
of the request axis, and ``attack`` (adversarial) or ``request`` (the other kinds: ``{kind,
ratio, edges, fraction_of_train, key}``, plus ``nodes`` for users / items) holds ``edges`` (the
number forgotten) and ``fraction_of_train`` (their share of the training set the model was
trained on). Everything expensive is cached under ``OUT`` by a hash of its config:

- ``models/<hash>/``: the clean, attacked (no attack: original) and retrained models (checkpoint
  directories);
- ``attacks/<key>/``: the adversarial edges; ``requests/<key>/``: the random and node requests;
- ``prepared/<hash>/``: what a method's ``prepare`` built (``save_prepared``/``load_prepared``);
  without an attack ``prepare`` sees the same model and training set at every ratio and request
  kind, so one entry serves them all.

The hashed payloads of an adversarial grid never mention the request kind, so adding the other
kinds left every adversarial cache key as it was; a random grid's keys did not change either
when the node kinds came (their request keys hash a different ``kind``).

A re-run skips every cell already in ``results.jsonl`` with status ``ok`` (and trains nothing
if a whole group is done), so a crash or Ctrl-C loses at most the cell in progress. A cell that
fails (a method whose module is not importable yet, a diverging run) is recorded with status
``error`` and retried on the next run; it never stops the grid.

Config (TOML; see ``experiments/*.toml``)::

    name = "ml-1m-table2"
    datasets = ["ml-1m"]            # names or LightGCN-format folders
    backbones = ["lightgcn", "sgl", "simgcl"]
    request = "adversarial"         # or "random", "users", "items"
    ratios = [1.0]                  # adversarial: fraction of users given an adversarial item
    # request_ratios = [0.001, 0.005, 0.01, 0.02]   # random: fraction of training edges forgotten
    #                                               # users / items: fraction of users / items forgotten
    seeds = [0]
    [train]                         # TrainConfig fields for every model (seed = the grid's seed)
    [train_overrides.sgl]           # per-backbone TrainConfig changes
    [model.lightgcn]                # per-backbone config
    [clean]                         # the attack's LightGCN: {model = {...}, train = {...}}
    [[methods]]
    name = "unlearnrec"
    label = "UnlearnRec(3)"
    config = { finetune_epochs = 3 }
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec import __version__
from unlearnrec.backbones import backbone_config, build_backbone
from unlearnrec.config import check_ranges, from_dict, read_toml, to_dict
from unlearnrec.data.datasets import Dataset, load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.requests import sample_edges
from unlearnrec.errors import UnlearnRecError
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.experiments.protocol import Attack, AttackConfig, build_attack
from unlearnrec.io.checkpoint import atomic_write_bytes, atomic_write_text
from unlearnrec.model import TrainedModel
from unlearnrec.runtime import resolve_device
from unlearnrec.train.loop import TrainConfig, fit
from unlearnrec.unlearn.base import MemoryMeter, Request

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
RUNNER_VERSION = 1
REQUESTS = ("adversarial", "random", "users", "items")
NODE_REQUESTS = ("users", "items")  # whole-node requests: every training edge of the drawn nodes
# fields of a method's config that only affect ``forget``: methods differing only in these
# share one prepared cache entry (UnlearnRec(0) and UnlearnRec(3) share one pre-trained encoder)
FORGET_ONLY_FIELDS: dict[str, tuple[str, ...]] = {"unlearnrec": ("finetune_epochs", "finetune_lr")}


@dataclass(frozen=True)
class MethodSpec:
    """One column of the table: a registered method name, its config, and a display label."""

    name: str
    label: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ExperimentConfig:
    """The grid. ``request``: ``"adversarial"`` (METHOD.md §7), ``"random"``, ``"users"`` or
    ``"items"`` (see the module docstring). ``ratios`` is the attack's user ratio (``item_ratio``
    is fixed); ``request_ratios`` the random request's share of the clean training edges, or the
    share of users / items forgotten whole, each in (0, 1).
    ``train`` holds TrainConfig fields shared by every trained model, ``train_overrides[backbone]``
    and ``model[backbone]`` the per-backbone ones; ``clean`` = ``{model, train}`` overrides for the
    attack's clean LightGCN. ``max_retained``: retained edges scored for the statistics."""

    datasets: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    name: str = "experiment"
    backbones: tuple[str, ...] = ("lightgcn",)
    ratios: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    item_ratio: float = 0.0
    attack_batch: int = 1024
    device: str = "cpu"
    data_dir: str | None = None
    val_ratio: float = 0.1
    split_seed: int = 0
    max_retained: int = 100_000
    train: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    clean: dict[str, Any] = field(default_factory=dict)
    request: str = "adversarial"
    request_ratios: tuple[float, ...] = ()

    RANGES = {
        "ratios": "[0, 1]",
        "seeds": "[0, 4294967295]",
        "item_ratio": "[0, 1]",
        "attack_batch": "[1, 16777216]",
        "val_ratio": "[0, 1)",
        "split_seed": "[0, 4294967295]",
        "max_retained": ">= 1",
    }

    @property
    def request_axis(self) -> tuple[float, ...]:
        """The ratios the grid iterates over: ``ratios`` (adversarial) or ``request_ratios``."""
        return self.request_ratios if self.request != "adversarial" else self.ratios

    def __post_init__(self):
        check_ranges(self)
        if not self.datasets or not self.methods or not self.backbones:
            raise ValueError("datasets, backbones and methods must each name at least one entry")
        titles = [m.title for m in self.methods]
        dup = sorted({t for t in titles if titles.count(t) > 1})
        if dup:
            raise ValueError(f"two methods share the label '{dup[0]}': give each a distinct label")
        unknown = sorted(set(self.clean) - {"model", "train"})
        if unknown:
            raise ValueError(f"unknown key 'clean.{unknown[0]}' (valid: model, train)")
        if self.request not in REQUESTS:
            raise ValueError(
                f"unknown value '{self.request}' for key 'request' (valid: {', '.join(REQUESTS)})"
            )
        if self.request == "adversarial":
            if self.request_ratios:
                raise ValueError(
                    'key \'request_ratios\' needs request = "random", "users" or "items" '
                    "(the attack's axis is 'ratios')"
                )
            return
        if not self.request_ratios:
            what = "the training edges" if self.request == "random" else f"the {self.request}"
            raise ValueError(f"request = \"{self.request}\" needs key 'request_ratios' (shares of {what})")
        for k, r in enumerate(self.request_ratios):
            if not 0.0 < r < 1.0:
                raise ValueError(f"key 'request_ratios[{k}]' must be in (0, 1), got {r}")
        for key, unset in (("ratios", self.ratios == (1.0,)), ("item_ratio", not self.item_ratio)):
            if not unset:
                raise ValueError(
                    f"key '{key}' belongs to the attack: with request = \"{self.request}\" "
                    "use 'request_ratios'"
                )
        if self.clean:
            raise ValueError(
                f"key 'clean' configures the attack's LightGCN: request = \"{self.request}\" has none"
            )


def load_config(config: str | os.PathLike | dict[str, Any] | ExperimentConfig) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a TOML path, a dict, or itself; bad keys are errors."""
    if isinstance(config, ExperimentConfig):
        return config
    raw = dict(read_toml(config) if not isinstance(config, dict) else config)
    if "methods" in raw:  # shorthand: a bare method name
        raw["methods"] = [{"name": m} if isinstance(m, str) else m for m in raw["methods"]]
    return from_dict(ExperimentConfig, raw, "experiment")


# backbone-config fields added after models were first cached, with the value every earlier model had:
# a field at that value is left out of the hashed dict, so a grid written before the field existed keeps
# its hashes (and its cached models). Building from the dict restores the default.
LATER_FIELDS: dict[str, Any] = {"init": "normal"}


def model_config_dict(backbone: str, values: dict[str, Any]) -> dict[str, Any]:
    """The backbone config of ``values`` as the dict the runner hashes (and builds the backbone from)."""
    d = to_dict(backbone_config(backbone, values))
    return {k: v for k, v in d.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    return {
        "unlearnrec": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "runner": str(RUNNER_VERSION),
    }


def read_results(out_dir: str | os.PathLike) -> list[dict]:
    """Every parseable line of ``OUT/results.jsonl`` (a torn last line is skipped)."""
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable line skipped", path, n)
    return rows


def _append(out_dir: Path, record: dict) -> None:
    line = json.dumps(record, sort_keys=True, default=_json_default)
    with (out_dir / RESULTS).open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _jsonable(d: dict) -> dict:
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


def _state_digest(model: TrainedModel) -> str:
    """sha256 over the model's tensors and training edges: detects a method mutating its input."""
    h = hashlib.sha256(model.train.fingerprint().encode())
    for k, v in sorted(model.backbone.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------- one group
@dataclass
class _Group:
    """One (dataset, seed, ratio, backbone) group: its hashes and lazily built artefacts.

    ``attacked_hash`` names the model to unlearn (adversarial: trained on the attacked set;
    otherwise on the clean set, shared by every ratio and non-adversarial kind) and keys
    ``models/`` and ``prepared/``; ``request_key`` (empty for adversarial) names the random or
    node request and enters the cell hash.
    """

    dataset: str
    seed: int
    ratio: float
    backbone: str
    clean_hash: str
    attacked_hash: str
    backbone_cfg: dict
    train_cfg: dict
    error: str | None = None
    request: str = "adversarial"
    request_key: str = ""


class Runner:
    """Runs one :class:`ExperimentConfig` into ``out_dir``; see the module docstring."""

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None = None,
        device: str | None = None,
        build: Callable[[str, dict, int], Any] | None = None,
        on_cell: Callable[[dict], None] | None = None,
    ):
        from unlearnrec.unlearn.registry import build_method

        self.config = config
        self.out = Path(out_dir)
        self.data_dir = data_dir if data_dir is not None else config.data_dir
        self.device = resolve_device(device or config.device)
        self.build = build or build_method
        self.on_cell = on_cell
        self.out.mkdir(parents=True, exist_ok=True)
        self._done = {r["cell"] for r in read_results(self.out) if r.get("status") == "ok" and "cell" in r}
        self._data: dict[str, Dataset] = {}
        self._models: dict[str, TrainedModel] = {}
        self._attacks: dict[str, Any] = {}
        self._nodes: dict[str, np.ndarray] = {}  # request key -> the users / items forgotten whole

    # ---------------------------------------------------------------- configs and hashes
    def _train_cfg(self, backbone: str, seed: int, extra: dict | None = None) -> dict:
        raw = {**self.config.train, **dict(self.config.train_overrides.get(backbone, {})), **(extra or {})}
        raw["seed"] = seed
        return to_dict(from_dict(TrainConfig, raw, f"train[{backbone}]"))

    def _split(self) -> dict:
        return {"val_ratio": self.config.val_ratio, "seed": self.config.split_seed}

    def _clean_spec(self, dataset: str, seed: int) -> tuple[str, dict, dict]:
        mcfg = {**dict(self.config.model.get("lightgcn", {})), **dict(self.config.clean.get("model", {}))}
        mcfg = model_config_dict("lightgcn", mcfg)
        tcfg = self._train_cfg("lightgcn", seed, dict(self.config.clean.get("train", {})))
        h = config_hash(
            {"kind": "clean", "dataset": dataset, "split": self._split(), "model": mcfg, "train": tcfg}
        )
        return h, mcfg, tcfg

    def _backbone_cfgs(self, backbone: str, seed: int) -> tuple[dict, dict, str | None]:
        """The backbone's model and training config dicts (as hashed), or ``({}, {}, error)``."""
        try:
            bcfg = model_config_dict(backbone, dict(self.config.model.get(backbone, {})))
            return bcfg, self._train_cfg(backbone, seed), None
        except UnlearnRecError as e:
            return {}, {}, str(e)

    def groups(self) -> list[_Group]:
        """Every (dataset, seed, ratio, backbone) group of the grid, with its hashes."""
        if self.config.request != "adversarial":
            return self._random_groups()
        out = []
        for dataset in self.config.datasets:
            for seed in self.config.seeds:
                for ratio in self.config.ratios:
                    try:
                        clean_hash, _, _ = self._clean_spec(dataset, seed)
                    except UnlearnRecError as e:
                        clean_hash, err = config_hash({"dataset": dataset, "seed": seed}), str(e)
                    else:
                        err = None
                    for backbone in self.config.backbones:
                        bcfg, tcfg, berr = ({}, {}, err) if err else self._backbone_cfgs(backbone, seed)
                        attacked_hash = config_hash(
                            {
                                "kind": "attacked",
                                "clean": clean_hash,
                                "ratio": ratio,
                                "item_ratio": self.config.item_ratio,
                                "backbone": backbone,
                                "model": bcfg or dict(self.config.model.get(backbone, {})),
                                "train": tcfg,
                            }
                        )
                        out.append(
                            _Group(
                                dataset, seed, ratio, backbone, clean_hash, attacked_hash, bcfg, tcfg, berr
                            )
                        )
        return out

    def _random_groups(self) -> list[_Group]:
        """The groups of a grid without attack (random or node requests)."""
        out = []
        kind = self.config.request
        for dataset in self.config.datasets:
            for seed in self.config.seeds:
                for ratio in self.config.request_ratios:
                    request_key = config_hash(
                        {
                            # a random request hashes "random-request", as it did before the node kinds
                            "kind": f"{kind}-request",
                            "dataset": dataset,
                            "split": self._split(),
                            "seed": seed,
                            "ratio": ratio,
                        }
                    )
                    for backbone in self.config.backbones:
                        bcfg, tcfg, err = self._backbone_cfgs(backbone, seed)
                        # the model to unlearn: trained on the clean set, independent of the ratio
                        model_hash = config_hash(
                            {
                                "kind": "original",
                                "dataset": dataset,
                                "split": self._split(),
                                "backbone": backbone,
                                "model": bcfg or dict(self.config.model.get(backbone, {})),
                                "train": tcfg,
                            }
                        )
                        out.append(
                            _Group(
                                dataset,
                                seed,
                                ratio,
                                backbone,
                                "",
                                model_hash,
                                bcfg,
                                tcfg,
                                err,
                                kind,
                                request_key,
                            )
                        )
        return out

    def cell_hash(self, group: _Group, method: MethodSpec) -> str:
        payload = {
            "kind": "cell",
            "attacked": group.attacked_hash,
            "method": method.name,
            "config": method.config,
        }
        if group.request_key:  # requests without attack only: an adversarial cell hashes as it always did
            payload["request"] = group.request_key
        return config_hash(payload)

    def _prepare_hash(self, group: _Group, method: MethodSpec) -> str:
        skip = FORGET_ONLY_FIELDS.get(method.name, ())
        cfg = {k: v for k, v in method.config.items() if k not in skip}
        return config_hash(
            {"kind": "prepared", "attacked": group.attacked_hash, "method": method.name, "config": cfg}
        )

    # ---------------------------------------------------------------- artefacts (cached)
    def dataset(self, name: str) -> Dataset:
        if name not in self._data:
            t = time.perf_counter()
            self._data[name] = load_dataset(
                name, self.data_dir, val_ratio=self.config.val_ratio, seed=self.config.split_seed
            )
            log.info("loaded %s in %.1fs: %s", name, time.perf_counter() - t, self._data[name].stats())
        return self._data[name]

    def _train_model(
        self,
        key: str,
        dataset: str,
        backbone: str,
        bcfg: dict,
        tcfg: dict,
        train: Interactions,
        data: Dataset,
        meta: dict,
    ) -> TrainedModel:
        """Train (or load from ``models/<key>``) a backbone on ``train``."""
        if key in self._models:
            return self._models[key]
        folder = self.out / "models" / key
        if (folder / "meta.json").is_file():
            try:
                model = TrainedModel.load(folder, device=self.device)
                if model.train.fingerprint() == train.fingerprint():
                    log.info("model %s %s from cache %s", backbone, dataset, folder)
                    self._models[key] = model
                    return model
                log.warning("cached model %s was trained on other data; retraining", folder)
            except UnlearnRecError as e:
                log.warning("cached model %s unreadable (%s); retraining", folder, e)
        cfg = from_dict(TrainConfig, tcfg, "train")
        seed = cfg.seed
        graph = Graph.from_interactions(train, device=self.device)
        net = build_backbone(
            backbone, train.num_users, train.num_items, bcfg, generator=torch.Generator().manual_seed(seed)
        ).to(self.device)
        log.info("training %s on %s (%d edges, up to %d epochs)", backbone, dataset, len(train), cfg.epochs)
        res = fit(net, graph, cfg, val=data.val)
        model = TrainedModel(
            net,
            graph,
            backbone,
            dataset,
            self._split(),
            meta={"original_train_fingerprint": data.train.fingerprint(), **meta},
        )
        model.meta.update(
            {
                "train_config": tcfg,
                "best_epoch": res.best_epoch,
                "train_seconds": res.seconds,
                "epochs_run": res.epochs_run,
                "metrics": {"test": model.evaluate(data, "test", cfg.ks)},
                "config_hash": key,
            }
        )
        model.save(folder)
        self._models[key] = model
        return model

    def clean_model(self, group: _Group) -> TrainedModel:
        data = self.dataset(group.dataset)
        h, mcfg, tcfg = self._clean_spec(group.dataset, group.seed)
        return self._train_model(
            h, group.dataset, "lightgcn", mcfg, tcfg, data.train, data, {"role": "clean"}
        )

    def forget_set(self, group: _Group) -> Attack:
        """The group's training set (of the model to unlearn) and the edges to forget, as an
        :class:`~unlearnrec.experiments.protocol.Attack`: the adversarial one, the random request,
        or every training edge of the users / items of a node request."""
        if group.request == "random":
            return self.random_request(group)
        if group.request in NODE_REQUESTS:
            return self.node_request(group)
        return self.attack(group)

    def request(self, group: _Group) -> Request:
        """The :class:`Request` a method receives: the forgotten edges, and for users / items
        requests the whole nodes (``Request.of_users`` / ``of_items``: their rows are erased)."""
        att = self.forget_set(group)
        if group.request == "users":
            return Request.of_users(att.train, self._nodes[group.request_key])
        if group.request == "items":
            return Request.of_items(att.train, self._nodes[group.request_key])
        return Request(att.edges)

    def node_request(self, group: _Group) -> Attack:
        """``max(1, round(ratio * n))`` users (items) of the clean training set, drawn uniformly
        among those with a training edge (seeded by the grid seed), with every training edge of
        theirs; the node ids are stored under ``requests/<key>/`` so a resumed run forgets the
        same nodes."""
        key = group.request_key
        if key in self._attacks:
            return self._attacks[key]
        train = self.dataset(group.dataset).train
        users = group.request == "users"
        folder = self.out / "requests" / key
        nodes = None
        if (folder / "meta.json").is_file() and (folder / "nodes.npz").is_file():
            meta = json.loads((folder / "meta.json").read_text())
            with np.load(folder / "nodes.npz") as z:
                cached = np.asarray(z["nodes"], dtype=np.int64)
            edges = train.of_users(cached) if users else train.of_items(cached)
            if (
                meta.get("train_fingerprint") == train.fingerprint()
                and meta.get("edges_fingerprint") == edges.fingerprint()
                and meta.get("kind") == group.request
            ):
                log.info("%s request from cache %s (%d nodes)", group.request, folder, len(cached))
                nodes = cached
            else:
                log.warning("cached request %s is inconsistent; drawing it again", folder)
        if nodes is None:
            n = train.num_users if users else train.num_items
            degree = train.user_degrees() if users else train.item_degrees()
            active = np.flatnonzero(degree > 0)
            count = max(1, int(round(group.ratio * n)))
            if count > len(active):
                raise UnlearnRecError(
                    f"cannot forget {count} {group.request}: only {len(active)} have training edges"
                )
            rng = np.random.default_rng(group.seed)
            nodes = np.sort(rng.choice(active, size=count, replace=False)).astype(np.int64)
            edges = train.of_users(nodes) if users else train.of_items(nodes)
            meta = {
                "key": key,
                "kind": group.request,
                "dataset": group.dataset,
                "seed": int(group.seed),
                "ratio": group.ratio,
                "train_fingerprint": train.fingerprint(),
                "edges_fingerprint": edges.fingerprint(),
                "num_nodes": int(count),
                "nodes": nodes.tolist(),
                "num_edges": len(edges),
                "fraction_of_train": len(edges) / max(len(train), 1),
            }
            # nodes first, meta last: meta.json's presence marks a complete entry
            atomic_write_bytes(folder / "nodes.npz", writer=lambda f: np.savez(f, nodes=nodes))
            atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        self._nodes[key] = nodes
        self._attacks[key] = Attack(train, edges, meta)
        return self._attacks[key]

    def random_request(self, group: _Group) -> Attack:
        """A uniform random ``group.ratio`` of the clean training edges (seeded by the grid seed),
        stored under ``requests/<key>/`` so a resumed run forgets exactly the same edges."""
        key = group.request_key
        if key in self._attacks:
            return self._attacks[key]
        train = self.dataset(group.dataset).train
        folder = self.out / "requests" / key
        edges = None
        if (folder / "meta.json").is_file() and (folder / "edges.npz").is_file():
            meta = json.loads((folder / "meta.json").read_text())
            with np.load(folder / "edges.npz") as z:
                cached = Interactions(z["users"], z["items"], train.num_users, train.num_items)
            if (
                cached.fingerprint() == meta.get("edges_fingerprint")
                and meta.get("train_fingerprint") == train.fingerprint()
            ):
                log.info("random request from cache %s (%d edges)", folder, len(cached))
                edges = cached
            else:
                log.warning("cached request %s is inconsistent; drawing it again", folder)
        if edges is None:
            edges = sample_edges(train, group.ratio, np.random.default_rng(group.seed))
            meta = {
                "key": key,
                "kind": "random",
                "dataset": group.dataset,
                "seed": int(group.seed),
                "ratio": group.ratio,
                "train_fingerprint": train.fingerprint(),
                "edges_fingerprint": edges.fingerprint(),
                "num_edges": len(edges),
                "fraction_of_train": len(edges) / max(len(train), 1),
            }
            # edges first, meta last: meta.json's presence marks a complete entry
            atomic_write_bytes(
                folder / "edges.npz", writer=lambda f: np.savez(f, users=edges.users, items=edges.items)
            )
            atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        self._attacks[key] = Attack(train, edges, meta)
        return self._attacks[key]

    def attack(self, group: _Group) -> Attack:
        """The adversarial edges of a group (METHOD.md §7), built once per clean model and ratio."""
        key = (group.clean_hash, group.ratio)
        if key not in self._attacks:
            data = self.dataset(group.dataset)
            clean = self.clean_model(group)
            ue, ie = clean.embeddings()
            cfg = AttackConfig(
                user_ratio=group.ratio, item_ratio=self.config.item_ratio, batch_size=self.config.attack_batch
            )
            self._attacks[key] = build_attack(
                ue,
                ie,
                data.train,
                [data.val, data.test],
                cfg,
                group.seed,
                dataset=group.dataset,
                clean_id=group.clean_hash,
                cache_dir=self.out / "attacks",
            )
        return self._attacks[key]

    def attacked_model(self, group: _Group) -> TrainedModel:
        """The model to unlearn: trained on the attacked set, or (no attack) on the clean one."""
        data = self.dataset(group.dataset)
        if group.request != "adversarial":
            train, meta = data.train, {"role": "original"}
        else:
            att = self.attack(group)
            train, meta = att.train, {"role": "attacked", "attack": att.meta}
        return self._train_model(
            group.attacked_hash,
            group.dataset,
            group.backbone,
            group.backbone_cfg,
            group.train_cfg,
            train,
            data,
            meta,
        )

    # ---------------------------------------------------------------- cells
    def _base_record(self, group: _Group, method: MethodSpec) -> dict:
        if group.request != "adversarial":
            hashes = {"model": group.attacked_hash, "request": group.request_key}
            extra = {"request": {"kind": group.request, "ratio": group.ratio}}
        else:  # exactly the fields an adversarial record always had
            hashes, extra = {"clean": group.clean_hash, "attacked": group.attacked_hash}, {}
        return {
            "kind": "cell",
            "experiment": self.config.name,
            "cell": self.cell_hash(group, method),
            "dataset": group.dataset,
            "backbone": group.backbone,
            "ratio": group.ratio,
            "seed": group.seed,
            "method": method.name,
            "label": method.title,
            "method_config": method.config,
            "hashes": hashes,
            "device": str(self.device),
            "versions": versions(),
            **extra,
        }

    def _emit(self, record: dict) -> dict:
        record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _append(self.out, record)
        if record.get("status") == "ok":
            self._done.add(record["cell"])
        if self.on_cell is not None:
            self.on_cell(record)
        return record

    def _error(self, group: _Group, method: MethodSpec, err: BaseException | str) -> dict:
        rec = self._base_record(group, method)
        if isinstance(err, BaseException):
            msg = f"{type(err).__name__}: {err}"
            rec["traceback"] = traceback.format_exception(type(err), err, err.__traceback__)[-3:]
        else:
            msg = err
        rec.update({"status": "error", "error": msg})
        log.warning("cell %s %s %s failed: %s", group.dataset, group.backbone, method.title, msg)
        return self._emit(rec)

    def _prepare(self, method, group: _Group, spec: MethodSpec, model: TrainedModel, train: Interactions):
        """``prepare`` through the cache; returns (seconds, peak MiB, from_cache)."""
        folder = self.out / "prepared" / self._prepare_hash(group, spec)
        if folder.is_dir() and method.load_prepared(folder, model):
            log.info("%s: prepared state from cache %s", spec.title, folder)
            return 0.0, 0.0, True
        with MemoryMeter(self.device) as mem:
            t = time.perf_counter()
            method.prepare(model, train)
            seconds = time.perf_counter() - t
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:  # written aside and renamed: a crash never leaves a half-written entry
            if method.save_prepared(tmp):
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return seconds, mem.peak_mb, False

    def run_cell(self, group: _Group, spec: MethodSpec, reference: TrainedModel | None) -> tuple[dict, Any]:
        """Forget the group's request with one method and measure; returns (record, result)."""
        data = self.dataset(group.dataset)
        att = self.forget_set(group)
        model = self.attacked_model(group)
        digest = _state_digest(model)
        emb_before = model.embeddings()
        method = self.build(spec.name, dict(spec.config), group.seed)
        method.set_validation(data.val)
        prep_s, prep_mb, prep_cached = self._prepare(method, group, spec, model, att.train)
        request = self.request(group)
        result = method.forget(model, att.train, request)
        new = result.model
        mutated = _state_digest(model) != digest
        if mutated:  # a contract breach: never let it leak into the next cell
            log.error("%s modified the model it was given; reloading it for the next cell", spec.title)
            self._models.pop(group.attacked_hash, None)
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
            max_retained=self.config.max_retained,
        )
        before = model.meta.get("metrics", {}).get("test", {})
        metrics = {**{k: v for k, v in test.items() if k != "users"}, **fm}
        metrics.update({f"before_{k}": v for k, v in before.items() if k != "users"})
        rec = self._base_record(group, spec)
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
                "info": _jsonable(result.info),
                "input_mutated": mutated,
                "model": {
                    "train_seconds": model.meta.get("train_seconds"),
                    "best_epoch": model.meta.get("best_epoch"),
                    "epochs_run": model.meta.get("epochs_run"),
                },
            }
        )
        return rec, result

    def _reference(self, group: _Group) -> TrainedModel | None:
        """The retrained model of this group (from memory or ``models/``), if retrain is in the grid."""
        spec = next((m for m in self.config.methods if m.name == "retrain"), None)
        if spec is None:
            return None
        key = self.cell_hash(group, spec)
        if key in self._models:
            return self._models[key]
        folder = self.out / "models" / key
        if (folder / "meta.json").is_file():
            try:
                self._models[key] = TrainedModel.load(folder, device=self.device)
                return self._models[key]
            except UnlearnRecError as e:
                log.warning("retrained model %s unreadable: %s", folder, e)
        return None

    def run(self) -> list[dict]:
        """Run every pending cell; returns the records written by this run."""
        written: list[dict] = []
        # retrain first: its model is the reference distribution of every other method
        methods = sorted(self.config.methods, key=lambda m: m.name != "retrain")
        for group in self.groups():
            pending = [m for m in methods if self.cell_hash(group, m) not in self._done]
            if not pending:
                log.info(
                    "group %s/%s/r%s/s%d done; skipped",
                    group.dataset,
                    group.backbone,
                    group.ratio,
                    group.seed,
                )
                continue
            if group.error is not None:
                written += [self._error(group, m, group.error) for m in pending]
                continue
            try:
                self.attacked_model(group)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # e.g. an unregistered backbone: fail its cells, go on
                log.exception("group %s/%s could not be set up", group.dataset, group.backbone)
                written += [self._error(group, m, e) for m in pending]
                continue
            for spec in pending:
                reference = self._reference(group) if spec.name != "retrain" else None
                try:
                    rec, result = self.run_cell(group, spec, reference)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # a broken method fails its cell, never the grid
                    written.append(self._error(group, spec, e))
                    continue
                if spec.name == "retrain":
                    key = self.cell_hash(group, spec)
                    result.model.save(self.out / "models" / key, config_hash=key, role="retrained")
                    self._models[key] = result.model
                else:
                    ref = self._reference(group)
                    if ref is not None:
                        rec["reference"] = self._reference_metrics(group)
                log.info(
                    "%s %s %s: %s",
                    group.dataset,
                    group.backbone,
                    spec.title,
                    {
                        k: round(v, 4)
                        for k, v in rec["metrics"].items()
                        if k in ("recall@20", "ndcg@20", "mi_bf", "mi_ng", "auc")
                    },
                )
                written.append(self._emit(rec))
        return written

    def _reference_metrics(self, group: _Group) -> dict | None:
        spec = next((m for m in self.config.methods if m.name == "retrain"), None)
        key = self.cell_hash(group, spec) if spec else None
        for r in reversed(read_results(self.out)):
            if r.get("cell") == key and r.get("status") == "ok":
                m = r["metrics"]
                return {k: m.get(k) for k in ("recall@20", "ndcg@20", "mi_bf", "mi_ng", "auc")}
        return None


def run_experiment(
    config: str | os.PathLike | dict[str, Any] | ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    build: Callable[[str, dict, int], Any] | None = None,
    on_cell: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run (or resume) the grid of ``config`` into ``out_dir``; returns this run's cell records.

    ``build(name, config, seed)`` makes a method (default: the registry's ``build_method``);
    ``on_cell(record)`` is called after each cell (progress display).
    """
    cfg = load_config(config)
    resolve_device(device or cfg.device)  # a device that is not there fails before anything is written
    if not isinstance(config, (dict, ExperimentConfig)):
        # keep each grid run into this directory next to its results, for the record
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, Path(out_dir) / f"experiment-{cfg.name}.toml")
    return Runner(cfg, out_dir, data_dir=data_dir, device=device, build=build, on_cell=on_cell).run()
