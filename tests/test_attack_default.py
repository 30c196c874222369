"""The adversarial request a grid builds by default: the authors' protocol (docs/method.md §10), one
lowest-scored item per user AND one lowest-scored user per item, at the authors' share of each dataset;
``[attack] protocol = "per-user"`` is the request the grids used before (every user, no item)."""

from __future__ import annotations

import json
import re
from ast import literal_eval
from pathlib import Path

import numpy as np
import pytest

from unlearnrec.config import read_toml
from unlearnrec.data.synthetic import write_adjacency_list
from unlearnrec.errors import ConfigError
from unlearnrec.experiments.grid import cell_hash, groups, load_config
from unlearnrec.experiments.protocol import authors_fractions
from unlearnrec.experiments.store import Store

from .conftest import run_cli


def _folder(tmp_path, tiny_split, name: str):
    """The tiny graph as a LightGCN-format folder called ``name``."""
    train, val, test = tiny_split
    d = tmp_path / name
    d.mkdir()
    write_adjacency_list(train.union(val), d / "train.txt")
    write_adjacency_list(test, d / "test.txt")
    return d


def _grid(dataset, **extra) -> dict:
    """A grid with no ``[attack]`` table and no top-level ratio keys (unless ``extra`` adds them)."""
    return {
        "name": "default-attack",
        "datasets": [str(dataset)],
        "methods": ["retrain"],
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.01, "eval_every": 1, "patience": 0},
        "model": {"lightgcn": {"dim": 8, "layers": 2}},
        **extra,
    }


def _lowest(cfg, tmp_path):
    """(attack edges, each user's lowest-scored free item, each item's lowest-scored free user,
    group, number of users, number of items) of the grid's one group, from the clean model."""
    (group,) = groups(cfg)
    store = Store(cfg, tmp_path / "cache")
    data = store.dataset(group.dataset)
    att = store.attack(group)
    ue, ie = store.clean_model(group).embeddings()
    scores = (ue @ ie.T).detach().cpu().numpy().astype(np.float64)
    known = (data.train.to_csr() + data.val.to_csr() + data.test.to_csr()).toarray() > 0
    free = np.where(known, np.inf, scores)
    user_low = {u: int(free[u].argmin()) for u in range(free.shape[0]) if np.isfinite(free[u]).any()}
    item_low = {i: int(free[:, i].argmin()) for i in range(free.shape[1]) if np.isfinite(free[:, i]).any()}
    edges = set(zip(att.edges.users.tolist(), att.edges.items.tolist(), strict=True))
    return edges, user_low, item_low, group, data.num_users, data.num_items


def test_a_grid_without_attack_table_builds_the_authors_request(tiny_dir, tmp_path):
    cfg = load_config(_grid(tiny_dir))
    assert cfg.attack is None and cfg.protocol == "authors"
    edges, user_low, item_low, group, nu, ni = _lowest(cfg, tmp_path)
    assert (group.ratio, group.item_ratio) == (1.0, 1.0)  # any dataset but Yelp2018: every user and item
    assert len(user_low) == nu and len(item_low) == ni  # the tiny graph leaves every node a free partner
    # exactly each user's lowest-scored free item and each item's lowest-scored free user, nothing else
    expected = {(u, i) for u, i in user_low.items()} | {(u, i) for i, u in item_low.items()}
    assert edges == expected
    assert nu < len(edges) <= nu + ni


def test_yelp2018_default_shares_are_the_authors_60_percent(tiny_split, tmp_path):
    folder = _folder(tmp_path, tiny_split, "yelp2018")  # named as the dataset: its authors' shares
    cfg = load_config(_grid(folder))
    edges, user_low, item_low, group, nu, ni = _lowest(cfg, tmp_path)
    assert (group.ratio, group.item_ratio) == (0.6, 0.6) == authors_fractions(folder)
    # the seeded draw of the builder (docs/method.md §7): a 60% subset of users, then of items
    rng = np.random.default_rng(group.seed)
    users = rng.choice(nu, size=round(0.6 * nu), replace=False)
    items = rng.choice(ni, size=round(0.6 * ni), replace=False)
    expected = {(int(u), user_low[int(u)]) for u in users} | {(item_low[int(i)], int(i)) for i in items}
    assert edges == expected
    # the shares are respected: 36 of 60 users hold their lowest-scored item, 24 of 40 items their user,
    # and no edge is anyone else's
    assert len({u for u, i in edges if user_low[u] == i}) >= round(0.6 * nu)
    assert len({i for u, i in edges if item_low[i] == u}) >= round(0.6 * ni)
    assert len(edges) < round(0.6 * nu) + round(0.6 * ni) + 1
    assert all(user_low[u] == i or item_low[i] == u for u, i in edges)


def test_per_user_protocol_is_the_old_request(tiny_dir, tmp_path):
    per_user = load_config(_grid(tiny_dir, attack={"protocol": "per-user"}))
    assert per_user.protocol == "per-user"
    edges, user_low, _, group, nu, _ = _lowest(per_user, tmp_path)
    assert (group.ratio, group.item_ratio) == (1.0, 0.0)
    assert edges == set(user_low.items()) and len(edges) == nu  # one lowest-scored item per user, no item's
    # the same cached models as a grid written with the old top-level keys (the old fallback's values)
    old = load_config(_grid(tiny_dir, ratios=[1.0], item_ratio=0.0))
    assert old.protocol == "per-user"

    def keys(cfg):
        return [(g.clean_hash, g.attacked_hash, [cell_hash(g, m) for m in cfg.methods]) for g in groups(cfg)]

    assert keys(per_user) == keys(old)
    assert keys(load_config(_grid(tiny_dir))) != keys(old)


def test_old_top_level_keys_set_the_shares_and_unset_ones_take_the_authors(tiny_split, tmp_path):
    folder = _folder(tmp_path, tiny_split, "yelp2018")
    (g,) = groups(load_config(_grid(folder, ratios=[0.5])))
    assert (g.ratio, g.item_ratio) == (0.5, 0.6)
    (g,) = groups(load_config(_grid(folder, item_ratio=0.0)))
    assert (g.ratio, g.item_ratio) == (0.6, 0.0)
    # the [attack] table: authors' shares per dataset unless given
    cfg = load_config(_grid(folder, datasets=[str(folder), "ml-1m"], attack={"item_ratio": 0.2}))
    assert [(g.dataset.rsplit("/", 1)[-1], g.ratio, g.item_ratio) for g in groups(cfg)] == [
        ("yelp2018", 0.6, 0.2),
        ("ml-1m", 1.0, 0.2),
    ]
    with pytest.raises(ConfigError, match="per-user.* drop 'attack.item_ratio'"):
        load_config(_grid(folder, attack={"protocol": "per-user", "item_ratio": 0.6}))


def test_status_prints_the_resolved_attack_and_trains_nothing(tiny_split, tmp_path, capsys):
    folder = _folder(tmp_path, tiny_split, "yelp2018")
    toml = tmp_path / "grid.toml"
    toml.write_text(f'name = "g"\ndatasets = ["{folder}"]\nmethods = ["retrain"]\n')
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, text, _ = run_cli(capsys, "experiment", toml, "--out", out, "--cache", cache, "--status")
    assert code == 0
    assert "attack on yelp2018: authors protocol, share of users 0.6, of items 0.6" in text
    assert "0 of 1 cells done" in text and not out.exists() and not cache.exists()
    toml.write_text(toml.read_text() + '[attack]\nprotocol = "per-user"\n')
    code, text, _ = run_cli(capsys, "experiment", toml, "--out", out, "--status", "--json")
    assert code == 0 and json.loads(text)["attack"] == [
        {"dataset": str(folder), "protocol": "per-user", "user_ratios": [1.0], "item_ratio": 0.0}
    ]


@pytest.mark.parametrize(
    "name,shares",
    [
        ("ml-1m", (1.0, 1.0)),
        ("gowalla", (1.0, 1.0)),
        ("yelp2018", (0.6, 0.6)),
        ("/data/Yelp2018/", (0.6, 0.6)),  # a folder: by its name
        ("ml-100k", (1.0, 1.0)),
        ("synthetic", (1.0, 1.0)),
    ],
)
def test_authors_fractions_per_dataset(name, shares):
    assert authors_fractions(name) == shares


ROOT = Path(__file__).resolve().parents[1]
TABLE2 = {  # grid -> {backbone: the config file (or measured run) whose recipe its models use}
    "yelp2018-table2-cpu-authors.toml": {
        "lightgcn": "configs/lightgcn-yelp2018-cpu.toml",
        "sgl": "configs/sgl-yelp2018-cpu.toml",
        "simgcl": "configs/simgcl-yelp2018-cpu.toml",
    },
    "gowalla-table2-cpu-authors.toml": {"lightgcn": "benchmarks/results/tta-lightgcn-gowalla-decay0.99.json"},
    "gowalla-table2-sgl-authors.toml": {"sgl": "configs/sgl-gowalla-cpu.toml"},
}


def _recipe(path: str) -> tuple[dict, dict]:
    """(model, train) of a config file, or of a time-to-accuracy run's recorded config."""
    if path.endswith(".toml"):
        raw = read_toml(ROOT / path)
        return {k: v for k, v in raw["model"].items() if k != "backbone"}, raw["train"]
    cfg = json.loads((ROOT / path).read_text())["ours"]["config"]
    train = {k: literal_eval(v) for k, v in re.findall(r"(\w+)=([^,()]+)", cfg["train"])}
    return cfg["model"], train


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_table2_authors_grids_ask_the_default_request_with_the_cpu_recipes(name):
    raw = read_toml(ROOT / "experiments" / name)
    cfg = load_config(raw)
    assert cfg.protocol == "authors"
    # the [attack] table only writes out the default: without it, the same groups and cache keys
    bare = load_config({k: v for k, v in raw.items() if k != "attack"})
    assert [(g.ratio, g.item_ratio, g.attacked_hash) for g in groups(bare)] == [
        (g.ratio, g.item_ratio, g.attacked_hash) for g in groups(cfg)
    ]
    assert {(g.ratio, g.item_ratio) for g in groups(cfg)} == {authors_fractions(cfg.datasets[0])}
    for g in groups(cfg):  # the model and optimiser of the backbone's CPU recipe (the epoch count aside)
        model, train = _recipe(TABLE2[name][g.backbone])
        assert {k: g.backbone_cfg.get(k, "normal" if k == "init" else None) for k in model} == model
        for k in ("batch_size", "lr", "lr_decay"):
            assert g.train_cfg[k] == train[k], (g.backbone, k)
    assert [m.title for m in cfg.methods][:1] == ["Retrain"]
    names = {m.name for m in cfg.methods}
    assert names == {"retrain", "unlearnrec", "gif", "ceu", "receraser", "grapheraser"}
    rules = {m.config.get("influence_on", "both") for m in cfg.methods if m.config.get("epochs")}
    assert rules == {"both", "items"}


def test_yelp2018_grid_resumes_the_lightgcn_authors_grid():
    """Every cell of experiments/yelp2018-table2-lightgcn-authors.toml is a cell (same hash, same label) of
    the full Yelp2018 grid: run into the same OUT, what the first finished is not run again."""
    small = load_config(ROOT / "experiments" / "yelp2018-table2-lightgcn-authors.toml")
    full = load_config(ROOT / "experiments" / "yelp2018-table2-cpu-authors.toml")
    (g,) = groups(small)
    (lg,) = [h for h in groups(full) if h.backbone == "lightgcn"]
    assert (g.clean_hash, g.attacked_hash) == (lg.clean_hash, lg.attacked_hash)
    cells = {cell_hash(lg, m): m.title for m in full.methods}
    assert {cell_hash(g, m): m.title for m in small.methods}.items() <= cells.items()


@pytest.mark.parametrize("backbone", ["sgl", "simgcl"])
def test_yelp2018_backbone_grids_are_the_full_grids_groups(backbone):
    """experiments/yelp2018-table2-{sgl,simgcl}-authors.toml run the SGL / SimGCL group of the full Yelp2018
    grid in another order: the same attack, models and cells (hash and label), every one and nothing else."""
    small = load_config(ROOT / "experiments" / f"yelp2018-table2-{backbone}-authors.toml")
    full = load_config(ROOT / "experiments" / "yelp2018-table2-cpu-authors.toml")
    (g,) = groups(small)
    (sg,) = [h for h in groups(full) if h.backbone == backbone]
    assert (g.clean_hash, g.attacked_hash) == (sg.clean_hash, sg.attacked_hash)
    cells = {cell_hash(sg, m): m.title for m in full.methods}
    assert {cell_hash(g, m): m.title for m in small.methods} == cells
    assert [m.title for m in small.methods][:2] == ["Retrain", "Residual graph only"]
    assert [m.name for m in small.methods][-2:] == ["receraser", "grapheraser"]


def test_gowalla_sgl_grid_attacks_with_the_lightgcn_grids_clean_model():
    """experiments/gowalla-table2-sgl-authors.toml forgets the request of the Gowalla LightGCN grid: the same
    clean model (hash) and the same attack settings; its cells are its own (another backbone)."""
    sgl = load_config(ROOT / "experiments" / "gowalla-table2-sgl-authors.toml")
    lgcn = load_config(ROOT / "experiments" / "gowalla-table2-cpu-authors.toml")
    (g,) = groups(sgl)
    (lg,) = groups(lgcn)
    assert (g.clean_hash, g.ratio, g.item_ratio) == (lg.clean_hash, lg.ratio, lg.item_ratio)
    assert g.attacked_hash != lg.attacked_hash and g.backbone == "sgl"
    assert g.train_cfg["epochs"] == 18
    assert [m.title for m in sgl.methods][:2] == ["Retrain", "Residual graph only"]
    assert [m.name for m in sgl.methods][-2:] == ["receraser", "grapheraser"]
