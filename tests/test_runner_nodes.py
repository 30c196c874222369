"""The runner's whole-node requests (``request = "users"`` / ``"items"``): every training edge of a
random share of the users (items) is forgotten and their rows are erased."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnrec.config import read_toml
from unlearnrec.errors import ConfigError, UnlearnRecError
from unlearnrec.experiments import study_runner
from unlearnrec.experiments.cell import run_cell
from unlearnrec.experiments.grid import cell_hash, prepare_hash
from unlearnrec.experiments.report import to_csv, to_markdown
from unlearnrec.experiments.runner import Runner, load_config, read_results, run_experiment
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.registry import build_method

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _grid(tiny_dir, request: str, ratios: list[float], methods: list[dict] | None = None) -> dict:
    return {
        "name": f"{request}-tiny",
        "datasets": [str(tiny_dir)],
        "backbones": ["lightgcn"],
        "request": request,
        "request_ratios": ratios,
        "train": {"epochs": 3, "batch_size": 256, "lr": 0.01, "eval_every": 1, "patience": 0},
        "model": {"lightgcn": {"dim": 8, "layers": 2}},
        "methods": methods
        or [
            {"name": "retrain", "label": "Retrain"},
            {
                "name": "unlearnrec",
                "label": "UnlearnRec(0)",
                "config": {"epochs": 1, "batch_size": 256, "finetune_epochs": 0},
            },
        ],
    }


# ----------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("kind", ["users", "items"])
@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"request_ratios": []}, r"request = \"{kind}\" needs key 'request_ratios' \(shares of the {kind}\)"),
        ({"request_ratios": [0.5, 1.0]}, r"key 'request_ratios\[1\]' must be in \(0, 1\), got 1.0"),
        ({"request_ratios": [-0.1]}, r"key 'request_ratios\[0\]' must be in \(0, 1\)"),
        ({"ratios": [0.5]}, r"key 'ratios' belongs to the attack: with request = \"{kind}\""),
        ({"item_ratio": 0.1}, r"key 'item_ratio' belongs to the attack"),
        (
            {"clean": {"train": {"epochs": 2}}},
            r"key 'clean' configures the attack's LightGCN: request = \"{kind}",
        ),
    ],
)
def test_node_request_config_errors(kind, over, match):
    cfg = {"datasets": ["ds"], "methods": ["retrain"], "request": kind, "request_ratios": [0.01], **over}
    with pytest.raises(ConfigError, match=match.format(kind=kind)) as e:
        load_config(cfg)
    assert "\n" not in str(e.value)


def test_unknown_request_names_every_kind():
    with pytest.raises(ConfigError, match=r"key 'request' \(valid: adversarial, random, users, items\)"):
        load_config({"datasets": ["ds"], "methods": ["retrain"], "request": "user", "request_ratios": [0.1]})
    with pytest.raises(ConfigError, match=r"key 'request_ratios' needs request = \"random\", \"users\""):
        load_config({"datasets": ["ds"], "methods": ["retrain"], "request_ratios": [0.1]})


def test_too_many_nodes_is_an_error(tiny_dir, tmp_path):
    """Nodes are drawn among those with a training edge; asking for more is a one-line error."""
    cfg = _grid(tiny_dir, "items", [0.9], methods=[{"name": "retrain"}])
    runner = Runner(load_config(cfg), tmp_path / "out")
    [g] = runner.groups()
    data = runner.store.dataset(g.dataset)
    few = data.train.of_users(np.arange(3))  # 3 users' edges: far fewer than 36 of the 40 items
    runner.store.use_dataset(g.dataset, dataclasses.replace(data, train=few))
    active = int((few.item_degrees() > 0).sum())
    with pytest.raises(UnlearnRecError, match=f"cannot forget 36 items: only {active} have training edges"):
        runner.store.forget_set(g)


# ----------------------------------------------------------------------------- cache keys
# the random grid's keys (computed with the runner before the node kinds existed): its cached ML-1M
# models, requests and prepared encoders must stay where they are
RATIO_CPU = [  # (ratio, request key, cells)
    (0.001, "b7fded0619b6b303", ("b66fd042bdc56226", "5084f377ff1ef25c", "863fa83a62389638")),
    (0.005, "1969428985f713c2", ("f4add7b0b66baec9", "79d672a8d41801ca", "a8f4fc4fdab07302")),
    (0.01, "c82849c3e99fd493", ("c3f24de97fcd1cd5", "8d8690400cdc19dc", "d63e3bbec9169e16")),
]
RATIO_CPU_MODEL = "f845acf18a681b1f"
RATIO_CPU_PREPARED = ("790909c34634cf52", "fce3bedf808b23f5", "fce3bedf808b23f5")


def _keys(runner: Runner) -> list[tuple]:
    return [
        (
            g.ratio,
            g.attacked_hash,
            g.request_key,
            tuple(cell_hash(g, m) for m in runner.config.methods),
            tuple(prepare_hash(g, m) for m in runner.config.methods),
        )
        for g in runner.groups()
    ]


def test_users_config_shares_the_ratio_grid_model_and_encoder(tmp_path):
    ratio = _keys(Runner(load_config(read_toml(EXPERIMENTS / "ratio-ml-1m-cpu.toml")), tmp_path / "a"))
    # the first three methods keep the cells they were run under; methods appended later add cells
    assert [(r, k, c[:3]) for r, _, k, c, _ in ratio][:3] == RATIO_CPU
    assert {m for _, m, *_ in ratio} == {RATIO_CPU_MODEL} and {p[:3] for *_, p in ratio} == {
        RATIO_CPU_PREPARED
    }
    # the item-side variant (influence_on = "items") pre-trains its own encoder, once for the grid
    assert len({p[3:] for *_, p in ratio}) == 1 and not set(ratio[0][4][3:]) & set(RATIO_CPU_PREPARED)

    cfg = load_config(read_toml(EXPERIMENTS / "users-ml-1m-cpu.toml"))
    assert cfg.request == "users" and cfg.request_axis("ml-1m") == (0.001, 0.01)
    assert cfg.datasets == ("ml-1m",)
    assert [m.title for m in cfg.methods][:3] == ["Retrain", "UnlearnRec(0)", "UnlearnRec(3)"]
    users = _keys(Runner(cfg, tmp_path / "b"))
    assert len(users) == 2
    for r, model, key, cells, prepared in users:
        assert model == RATIO_CPU_MODEL and prepared[:3] == RATIO_CPU_PREPARED  # trained and pre-trained once
        assert prepared[3:] == ratio[0][4][3:]  # the item-side encoder too
        same_ratio = next(x for x in RATIO_CPU if x[0] == r)
        assert key != same_ratio[1] and not set(cells) & set(same_ratio[2])  # its own request and cells
    # the same ratio under "items" is a third request
    items_cfg = load_config({**read_toml(EXPERIMENTS / "users-ml-1m-cpu.toml"), "request": "items"})
    items = _keys(Runner(items_cfg, tmp_path / "c"))
    assert {k for _, _, k, _, _ in items}.isdisjoint({k for _, _, k, _, _ in users})


# ----------------------------------------------------------------------------- end to end
def test_users_grid_end_to_end(tiny_dir, tmp_path, counted_fit, runner_cache):
    out = tmp_path / "out"
    cfg = _grid(tiny_dir, "users", [0.05, 0.1])
    recs = run_experiment(cfg, out)
    assert [(r["ratio"], r["label"], r["status"]) for r in recs] == [
        (0.05, "Retrain", "ok"),
        (0.05, "UnlearnRec(0)", "ok"),
        (0.1, "Retrain", "ok"),
        (0.1, "UnlearnRec(0)", "ok"),
    ], [r.get("error") for r in recs]
    assert len(counted_fit) == 1  # one model on the clean set, shared by both ratios

    runner = Runner(load_config(cfg), out)
    train = runner.store.dataset(str(tiny_dir)).train
    groups = runner.groups()
    assert len({g.attacked_hash for g in groups}) == 1 and len({g.request_key for g in groups}) == 2
    retrain = next(m for m in runner.config.methods if m.name == "retrain")
    drawn = []
    for g, pair in zip(groups, (recs[:2], recs[2:]), strict=True):
        req = runner.store.request(g)
        nodes = req.users
        drawn.append(nodes)
        assert len(nodes) == max(1, round(g.ratio * train.num_users)) and len(req.items) == 0
        # every training edge of the drawn users, and nothing else
        assert req.edges.fingerprint() == train.of_users(nodes).fingerprint()
        assert set(np.unique(req.edges.users).tolist()) == set(nodes.tolist())
        stored = json.loads((runner_cache / "requests" / g.request_key / "meta.json").read_text())
        assert stored["kind"] == "users" and stored["nodes"] == nodes.tolist()
        with np.load(runner_cache / "requests" / g.request_key / "nodes.npz") as z:
            assert z["nodes"].tolist() == nodes.tolist()
        for r in pair:
            assert "attack" not in r and set(r["hashes"]) == {"model", "request"}
            assert r["request"] == {
                "kind": "users",
                "ratio": g.ratio,
                "nodes": len(nodes),
                "edges": len(req.edges),
                "fraction_of_train": pytest.approx(len(req.edges) / len(train)),
                "key": g.request_key,
            }
            # erased users: zero embedding, so forgotten edges and same-user non-edges both score 0
            assert r["metrics"]["mi_ng"] == pytest.approx(1.0, abs=1e-6)
            assert r["metrics"]["mi_bf"] > 0
        # Retrain trained on the residual: none of the users' edges, and their rows erased
        retrained = TrainedModel.load(runner_cache / "models" / cell_hash(g, retrain))
        assert not retrained.train.contains(req.edges.users, req.edges.items).any()
        assert retrained.train.fingerprint() == train.drop(req.edges).fingerprint()
        assert retrained.forgotten_users.tolist() == nodes.tolist()
        with pytest.raises(UnlearnRecError, match="has been forgotten"):
            retrained.recommend(nodes[:1])
    assert len(drawn[0]) < len(drawn[1])
    # UnlearnRec was pre-trained once for both ratios
    assert recs[1]["prepare_cached"] is False and recs[3]["prepare_cached"] is True

    # the unlearned model (UnlearnRec(0), run again on the cached state): the users' rows are zero,
    # they get no recommendations, and everyone else still does
    g = groups[1]
    spec = next(m for m in runner.config.methods if m.name == "unlearnrec")
    rec, result = run_cell(runner.store, g, spec, build_method)
    new = result.model
    nodes = drawn[1]
    assert rec["prepare_cached"] is True and new.forgotten_users.tolist() == nodes.tolist()
    assert torch.count_nonzero(new.backbone.e0[torch.as_tensor(nodes)]) == 0
    ue, _ = new.embeddings()
    assert torch.count_nonzero(ue[torch.as_tensor(nodes)]) == 0
    with pytest.raises(UnlearnRecError, match=f"user {nodes[0]} has been forgotten"):
        new.recommend(nodes[:1])
    kept = np.setdiff1d(np.arange(train.num_users), nodes)[:3]
    items, _ = new.recommend(kept, k=5)
    assert items.shape == (3, 5)
    # the model it was given is untouched
    original = TrainedModel.load(runner_cache / "models" / g.attacked_hash)
    assert torch.count_nonzero(original.backbone.e0[torch.as_tensor(nodes)]) > 0

    # a random grid of the same recipe in the same folder trains nothing and reuses the encoder
    counted_fit.clear()
    rnd = run_experiment({**cfg, "name": "ratio-tiny", "request": "random", "request_ratios": [0.05]}, out)
    assert [(r["label"], r["status"], r["request"]["kind"]) for r in rnd] == [
        ("Retrain", "ok", "random"),
        ("UnlearnRec(0)", "ok", "random"),
    ]
    assert counted_fit == [] and rnd[1]["prepare_cached"] is True
    assert rnd[0]["hashes"]["model"] == recs[0]["hashes"]["model"]
    assert rnd[0]["cell"] not in {r["cell"] for r in recs}

    # resume: every users cell is done, nothing is trained or written; a fresh runner reuses the nodes
    assert run_experiment(cfg, out) == [] and counted_fit == []
    assert len(read_results(out)) == 6
    again = Runner(load_config(cfg), out)
    assert again.store.request(groups[0]).users.tolist() == drawn[0].tolist()
    # drawn again elsewhere: the same nodes (seeded by the grid seed)
    assert (
        Runner(load_config(cfg), tmp_path / "b", cache_dir=tmp_path / "b-cache")
        .store.request(groups[0])
        .users.tolist()
        == drawn[0].tolist()
    )

    # the studies (Fig. 2-3, 6) forget the same whole-user requests, under their own file names
    paths = study_runner.run_studies(cfg, out, k=3)
    assert (
        sorted(p.name.rsplit("-s0-", 1)[1] for p in paths)
        == ["users-r0.05.json"] * 3 + ["users-r0.1.json"] * 3
    )
    scores = json.loads(next(p for p in paths if p.name.startswith("scores-")).read_text())["data"]
    assert scores["models"]["original"]["forgotten"]["n"] == recs[0]["request"]["edges"]

    # the report keeps users and random rows apart at the same ratio, with the nodes
    md = to_markdown(read_results(out))
    first = recs[0]["request"]
    frac = f"{100 * first['fraction_of_train']:.2f}%"
    assert f"| 0.05 users | {frac} ({first['edges']:,} edges, {first['nodes']} users) |" in md
    assert "| 0.05 | " in md and "fraction of users drawn at random and forgotten whole" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(read_results(out)))))
    assert [(r["ratio"], r["label"], r["request"], r["forgotten_nodes"]) for r in rows] == [
        ("0.05", "Retrain", "users", "3"),
        ("0.05", "UnlearnRec(0)", "users", "3"),
        ("0.1", "Retrain", "users", "6"),
        ("0.1", "UnlearnRec(0)", "users", "6"),
        ("0.05", "Retrain", "random", ""),
        ("0.05", "UnlearnRec(0)", "random", ""),
    ]


def test_items_grid_smoke(tiny_dir, tmp_path, counted_fit, runner_cache):
    out = tmp_path / "out"
    cfg = _grid(tiny_dir, "items", [0.05])
    recs = run_experiment(cfg, out)
    assert [(r["label"], r["status"]) for r in recs] == [("Retrain", "ok"), ("UnlearnRec(0)", "ok")], [
        r.get("error") for r in recs
    ]
    runner = Runner(load_config(cfg), out)
    train = runner.store.dataset(str(tiny_dir)).train
    [g] = runner.groups()
    req = runner.store.request(g)
    assert len(req.items) == max(1, round(0.05 * train.num_items)) and len(req.users) == 0
    assert req.edges.fingerprint() == train.of_items(req.items).fingerprint()
    for r in recs:
        assert r["request"]["kind"] == "items" and r["request"]["nodes"] == len(req.items)
        assert r["request"]["edges"] == len(req.edges) > 0
    retrained = TrainedModel.load(runner_cache / "models" / cell_hash(g, runner.config.methods[0]))
    assert not retrained.train.contains(req.edges.users, req.edges.items).any()
    assert retrained.forgotten_items.tolist() == req.items.tolist()
    # an erased item is never recommended
    items, _ = retrained.recommend(np.arange(train.num_users), k=10)
    assert not np.isin(items, req.items).any()
    assert len(counted_fit) == 1 and run_experiment(cfg, out) == []
    assert "items" in to_markdown(read_results(out))
