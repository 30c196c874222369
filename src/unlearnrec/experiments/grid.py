"""The experiment grid as a typed config, its groups, and the hashes that key every cache entry.

A grid is datasets x backbones x methods (x request ratios x seeds); see ``experiments/*.toml``::

    name = "ml-1m-table2"
    datasets = ["ml-1m"]            # names or LightGCN-format folders
    backbones = ["lightgcn", "sgl", "simgcl"]
    request = "adversarial"         # or "random", "users", "items"
    seeds = [0]
    study = "main"                  # the report's section: main, ablation, ratio, efficiency
    [attack]                        # adversarial only (protocol.ATTACK_PROTOCOLS)
    protocol = "authors"            # per user AND per item (the default, table or not); or "per-user"
    user_ratio = 1.0                # share of users given their lowest-scored item (a list: a sweep)
    item_ratio = 1.0                # share of items given their lowest-scored user
    # request_ratios = [0.001, 0.01]  # random: share of training edges; users / items: share of nodes
    [train]                         # TrainConfig fields for every model (seed = the grid's seed)
    [train_overrides.sgl]           # per-backbone TrainConfig changes
    [model.lightgcn]                # per-backbone config
    [clean]                         # the attack's LightGCN: {model = {...}, train = {...}}
    [[methods]]
    name = "unlearnrec"
    label = "UnlearnRec(3)"
    config = { finetune_epochs = 3 }

The attack is the authors' protocol (docs/method.md §10), table or not, at their shares of each dataset
where unset (:func:`~unlearnrec.experiments.protocol.authors_fractions`); ``protocol = "per-user"``: every
user, no item. Without the table, the older top-level ``ratios`` / ``item_ratio`` (``0.0``: per user only)
still set the shares. Every key is checked at load: a bad key or value anywhere (``train``,
``train_overrides``, ``model``, ``clean``, a registered method's ``config``) is a
:class:`~unlearnrec.errors.ConfigError`, never a row of failed cells. The hashes (:func:`groups`,
:func:`cell_hash`, :func:`prepare_hash`) are those the runner always computed (``tests/test_pins.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from unlearnrec.backbones import BACKBONES, backbone_config
from unlearnrec.config import check_ranges, from_dict, read_toml, to_dict
from unlearnrec.errors import ConfigError
from unlearnrec.experiments.protocol import AttackTable, authors_fractions
from unlearnrec.train.loop import TrainConfig

REQUESTS = ("adversarial", "random", "users", "items")
#: the report's sections a grid's cells may belong to (the grid's ``study`` key; empty: ``ratio`` for a
#: random / users / items request, else ``main``)
STUDIES = ("main", "ablation", "ratio", "efficiency")
NODE_REQUESTS = ("users", "items")  # whole-node requests: every training edge of the drawn nodes
# fields of a method's config that only affect ``forget``: methods differing only in these
# share one prepared cache entry (UnlearnRec(0) and UnlearnRec(3) share one pre-trained encoder)
# (every ``finetune_*`` and ``forget_*`` field of UnlearnRecConfig; tests/test_unlearnrec.py checks the list)
FORGET_ONLY_FIELDS: dict[str, tuple[str, ...]] = {
    "unlearnrec": (
        *("finetune_epochs", "finetune_lr", "finetune_batch_size", "finetune_steps"),
        *("finetune_stop_share", "finetune_check_every", "finetune_lambda_u", "finetune_lambda_p"),
        *("finetune_mlp", "finetune_min_mi_ng", "finetune_recover_steps", "finetune_recover_lambda_u"),
        *("forget_rule", "forget_guard", "forget_guard_share", "forget_guard_every"),
        *("finetune_recover_hold", "finetune_recover_warmup"),
    )
}
# backbone-config fields added after models were first cached, with the value every earlier model had:
# a field at that value is left out of the hashed dict, so a grid written before the field existed keeps
# its hashes (and its cached models). Building from the dict restores the default.
LATER_FIELDS: dict[str, Any] = {"init": "normal"}


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
class CleanConfig:
    """The attack's clean LightGCN: ``model`` / ``train`` override ``model.lightgcn`` / ``train``."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:  # a clean table that sets something
        return bool(self.model or self.train)


@dataclass(frozen=True)
class ExperimentConfig:
    """The grid (see the module docstring). ``ratios`` is the attack's user-ratio axis and
    ``item_ratio`` its fixed item ratio (both set from ``[attack]``; None: per dataset, :meth:`attack_of`);
    ``request_ratios`` the random request's share of the clean training edges, or the share of
    users / items forgotten whole, each in (0, 1). ``max_retained``: retained edges scored for the
    statistics."""

    datasets: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    name: str = "experiment"
    backbones: tuple[str, ...] = ("lightgcn",)
    ratios: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    item_ratio: float | None = None
    attack_batch: int = 1024
    device: str = "cpu"
    data_dir: str | None = None
    val_ratio: float = 0.1
    split_seed: int = 0
    max_retained: int = 100_000
    train: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    clean: CleanConfig = field(default_factory=CleanConfig)
    request: str = "adversarial"
    request_ratios: tuple[float, ...] = ()
    attack: AttackTable | None = None
    study: str = ""

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
    def section(self) -> str:
        """The report section of the grid's cells: ``study``, else by the request kind."""
        return self.study or ("main" if self.request == "adversarial" else "ratio")

    @property
    def protocol(self) -> str:
        """The attack's protocol: the ``[attack]`` table's, else per-user if ``item_ratio`` is 0."""
        return self.attack.protocol if self.attack else "per-user" if self.item_ratio == 0 else "authors"

    def attack_of(self, dataset: str) -> tuple[tuple[float, ...], float]:
        """(user shares, item share) on ``dataset``: ``ratios`` / ``item_ratio``, else the authors'."""
        users, items = authors_fractions(dataset)
        ratios = (users,) if self.ratios is None else self.ratios
        return ratios, items if self.item_ratio is None else self.item_ratio

    def request_axis(self, dataset: str) -> tuple[float, ...]:
        """The ratios the grid iterates over on ``dataset``: user shares (attack) or ``request_ratios``."""
        return self.request_ratios if self.request != "adversarial" else self.attack_of(dataset)[0]

    def __post_init__(self):
        check_ranges(self)
        if isinstance(self.clean, dict):  # built in code rather than loaded
            object.__setattr__(self, "clean", from_dict(CleanConfig, self.clean, "clean"))
        if not self.datasets or not self.methods or not self.backbones:
            raise ValueError("datasets, backbones and methods must each name at least one entry")
        titles = [m.title for m in self.methods]
        dup = sorted({t for t in titles if titles.count(t) > 1})
        if dup:
            raise ValueError(f"two methods share the label '{dup[0]}': give each a distinct label")
        if self.study and self.study not in STUDIES:
            raise ValueError(f"unknown value '{self.study}' for key 'study' (valid: {', '.join(STUDIES)})")
        if self.request not in REQUESTS:
            raise ValueError(
                f"unknown value '{self.request}' for key 'request' (valid: {', '.join(REQUESTS)})"
            )
        self._check_tables()
        if self.request == "adversarial":
            if self.request_ratios:
                raise ValueError(
                    'key \'request_ratios\' needs request = "random", "users" or "items" '
                    "(the attack's axis is 'ratios')"
                )
            return
        if self.attack is not None:
            raise ValueError(
                f"key 'attack' configures the adversarial request: request = \"{self.request}\" has none"
            )
        if not self.request_ratios:
            what = "the training edges" if self.request == "random" else f"the {self.request}"
            raise ValueError(f"request = \"{self.request}\" needs key 'request_ratios' (shares of {what})")
        for k, r in enumerate(self.request_ratios):
            if not 0.0 < r < 1.0:
                raise ValueError(f"key 'request_ratios[{k}]' must be in (0, 1), got {r}")
        for key, unset in (("ratios", self.ratios is None), ("item_ratio", self.item_ratio is None)):
            if not unset:
                raise ValueError(
                    f"key '{key}' belongs to the attack: with request = \"{self.request}\" "
                    "use 'request_ratios'"
                )
        if self.clean:
            raise ValueError(
                f"key 'clean' configures the attack's LightGCN: request = \"{self.request}\" has none"
            )

    def _check_tables(self) -> None:
        """Every key of ``train``, ``train_overrides``, ``model`` and ``clean`` names a real field
        with a valid value (checked the way the runner combines them)."""
        for name in self.backbones:
            if name not in BACKBONES:
                raise ValueError(f"unknown backbone '{name}' (valid: {', '.join(sorted(BACKBONES))})")
        for key, table in (("model", self.model), ("train_overrides", self.train_overrides)):
            for name, values in table.items():
                if name not in BACKBONES:
                    raise ValueError(
                        f"unknown backbone '{key}.{name}' (valid: {', '.join(sorted(BACKBONES))})"
                    )
                if not isinstance(values, dict):
                    raise ValueError(f"key '{key}.{name}' must be a table")
        for name in {*self.backbones, *self.model}:
            backbone_config(name, dict(self.model.get(name, {})))
        for name in {*self.backbones, *self.train_overrides}:
            train_config(self, name, 0)
        if self.request == "adversarial":
            clean_spec(self, "", 0)


def train_config(cfg: ExperimentConfig, backbone: str, seed: int, extra: dict | None = None) -> dict:
    """The TrainConfig (as the hashed dict) of ``backbone``'s models: ``train``, then
    ``train_overrides[backbone]``, then ``extra``; the seed is the grid's."""
    raw = {**cfg.train, **dict(cfg.train_overrides.get(backbone, {})), **(extra or {})}
    raw["seed"] = seed
    return to_dict(from_dict(TrainConfig, raw, f"train[{backbone}]"))


def model_config_dict(backbone: str, values: dict[str, Any]) -> dict[str, Any]:
    """The backbone config of ``values`` as the dict the runner hashes (and builds the backbone from)."""
    d = to_dict(backbone_config(backbone, values))
    return {k: v for k, v in d.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_of(cfg: ExperimentConfig) -> dict:
    """The dataset split every model of the grid uses."""
    return {"val_ratio": cfg.val_ratio, "seed": cfg.split_seed}


def clean_spec(cfg: ExperimentConfig, dataset: str, seed: int) -> tuple[str, dict, dict]:
    """(hash, model config, train config) of the attack's clean LightGCN."""
    mcfg = model_config_dict("lightgcn", {**dict(cfg.model.get("lightgcn", {})), **cfg.clean.model})
    tcfg = train_config(cfg, "lightgcn", seed, dict(cfg.clean.train))
    h = config_hash(
        {"kind": "clean", "dataset": dataset, "split": split_of(cfg), "model": mcfg, "train": tcfg}
    )
    return h, mcfg, tcfg


@dataclass(frozen=True)
class Group:
    """One (dataset, seed, ratio, backbone) group: the cells that share one model to unlearn.

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
    request: str = "adversarial"
    request_key: str = ""
    item_ratio: float = 0.0

    @property
    def tag(self) -> str:
        """A short readable name: ``<dataset>/<backbone>/r<ratio>/s<seed>``."""
        return f"{os.path.basename(self.dataset)}/{self.backbone}/r{self.ratio:g}/s{self.seed}"


def groups(cfg: ExperimentConfig) -> list[Group]:
    """Every group of the grid, with its hashes (no data is read)."""
    out = []
    for dataset in cfg.datasets:
        for seed in cfg.seeds:
            item_ratio = cfg.attack_of(dataset)[1] if cfg.request == "adversarial" else 0.0
            for ratio in cfg.request_axis(dataset):
                if cfg.request == "adversarial":
                    clean_hash, request_key = clean_spec(cfg, dataset, seed)[0], ""
                else:
                    clean_hash = ""
                    # a random request hashes "random-request", as it did before the node kinds
                    request_key = config_hash(
                        {
                            "kind": f"{cfg.request}-request",
                            "dataset": dataset,
                            "split": split_of(cfg),
                            "seed": seed,
                            "ratio": ratio,
                        }
                    )
                for backbone in cfg.backbones:
                    bcfg = model_config_dict(backbone, dict(cfg.model.get(backbone, {})))
                    tcfg = train_config(cfg, backbone, seed)
                    if cfg.request == "adversarial":
                        payload = {
                            "kind": "attacked",
                            "clean": clean_hash,
                            "ratio": ratio,
                            "item_ratio": item_ratio,
                        }
                    else:  # the model to unlearn: trained on the clean set, independent of the ratio
                        payload = {"kind": "original", "dataset": dataset, "split": split_of(cfg)}
                    payload.update({"backbone": backbone, "model": bcfg, "train": tcfg})
                    out.append(
                        Group(
                            dataset,
                            seed,
                            ratio,
                            backbone,
                            clean_hash,
                            config_hash(payload),
                            bcfg,
                            tcfg,
                            cfg.request,
                            request_key,
                            item_ratio,
                        )
                    )
    return out


def cell_hash(group: Group, method: MethodSpec) -> str:
    """The key of one cell (a group and a method): its line in ``results.jsonl``, and the retrained model."""
    payload = {
        "kind": "cell",
        "attacked": group.attacked_hash,
        "method": method.name,
        "config": method.config,
    }
    if group.request_key:  # requests without attack only: an adversarial cell hashes as it always did
        payload["request"] = group.request_key
    return config_hash(payload)


def prepare_hash(group: Group, method: MethodSpec) -> str:
    """The key of a method's prepared state (shared by methods differing only in forget-time fields)."""
    return prepared_key(group.attacked_hash, method.name, method.config)


def prepared_key(model_hash: str, method: str, config: dict[str, Any]) -> str:
    """:func:`prepare_hash` from a record's fields: the model's hash, the method name and config."""
    skip = FORGET_ONLY_FIELDS.get(method, ())
    cfg = {k: v for k, v in config.items() if k not in skip}
    return config_hash({"kind": "prepared", "attacked": model_hash, "method": method, "config": cfg})


def load_config(config: str | os.PathLike | dict[str, Any] | ExperimentConfig) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a TOML path, a dict, or itself; bad keys are errors.

    The config of every method the registry knows is checked against its dataclass; a name the
    registry does not know is left to the builder the runner is given (the default builder refuses it
    before any cell runs).
    """
    if isinstance(config, ExperimentConfig):
        return config
    raw = dict(read_toml(config) if not isinstance(config, dict) else config)
    if "methods" in raw:  # shorthand: a bare method name
        raw["methods"] = [{"name": m} if isinstance(m, str) else m for m in raw["methods"]]
    if "attack" in raw:
        for key in ("ratios", "item_ratio"):
            if key in raw:
                raise ConfigError(
                    f"key '{key}' and the [attack] table both set the attack: "
                    "use attack.user_ratio / attack.item_ratio"
                )
        if not isinstance(raw["attack"], dict):
            raise ConfigError("key 'attack' must be a table")
        attack = from_dict(AttackTable, raw["attack"], "attack")
        raw.update({"ratios": attack.user_ratios, "item_ratio": attack.items})
    cfg = from_dict(ExperimentConfig, raw, "experiment")
    check_methods(cfg, registered_only=False)
    return cfg


def check_methods(cfg: ExperimentConfig, registered_only: bool = True) -> None:
    """Check each method's config against its dataclass; with ``registered_only`` an unknown
    method name is an error too (listing the valid ones)."""
    from unlearnrec.unlearn.registry import METHODS, method_class

    for m in cfg.methods:
        if m.name not in METHODS:
            if registered_only:
                method_class(m.name)  # raises, listing the valid names
            continue
        from_dict(method_class(m.name)[1], dict(m.config), f"methods.{m.title}.config")
