"""The runner's random-request axis (the unlearning-ratio study, Table 5), and the adversarial cache keys
it must leave untouched."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest

from unlearnrec.cli import main
from unlearnrec.config import read_toml
from unlearnrec.errors import ConfigError
from unlearnrec.experiments import study_runner
from unlearnrec.experiments.grid import cell_hash, prepare_hash
from unlearnrec.experiments.report import to_csv, to_markdown
from unlearnrec.experiments.runner import Runner, load_config, read_results, run_experiment
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.registry import build_method

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


# ----------------------------------------------------------------------------- adversarial hashes
# Literal values computed with the runner *before* the random axis existed: every adversarial
# cache entry (models/, attacks/, prepared/, the cells of results.jsonl) is keyed by them.
def _golden() -> dict:
    return {
        "name": "golden",
        "datasets": ["ds"],
        "backbones": ["lightgcn", "sgl"],
        "ratios": [0.5, 1.0],
        "item_ratio": 0.0,  # per user only: the fallback of a grid without it before the authors' default
        "seeds": [0, 1],
        "methods": [
            "retrain",
            {"name": "unlearnrec", "label": "U(3)", "config": {"epochs": 2, "finetune_epochs": 3}},
        ],
        "train": {"epochs": 3, "batch_size": 256, "lr": 0.01},
        "model": {"lightgcn": {"dim": 8, "layers": 2}},
        "clean": {"train": {"epochs": 2}},
    }


GOLDEN = [  # (seed, ratio, backbone, clean, attacked, cells, prepared)
    (0, 0.5, "lightgcn", "5ff14cc62f3a9116", "b7400e0805c7df71", ("00fd0607fe9d7bdf", "368787af5e7aff04"),
     ("59ce241858446579", "e77033d04b74bed4")),
    (0, 0.5, "sgl", "5ff14cc62f3a9116", "d572a17e6220ff0d", ("e9a7ee00e0391d3f", "e0e935da553342dc"),
     ("40488da8ebc57f38", "05517d6c88910a49")),
    (0, 1.0, "lightgcn", "5ff14cc62f3a9116", "dc64f321ee8fb289", ("3540699570a9ec0e", "86f87446b2e10b1b"),
     ("6c342fd29349767e", "7f0cfb794861ac92")),
    (0, 1.0, "sgl", "5ff14cc62f3a9116", "027c016326eb7438", ("2ffc7d496469b0d7", "4d03114cc8003098"),
     ("75f188ed5d2a8a90", "7c4dcf86a10bd9da")),
    (1, 0.5, "lightgcn", "9dd4024460f7e5dc", "c8568115a98e31c7", ("c836e67d5bc3285f", "8c2f995c9b1ef981"),
     ("ba9737c88211f292", "cae4c64e6389f152")),
    (1, 0.5, "sgl", "9dd4024460f7e5dc", "ac24146c9baa3e9e", ("814420aee0476b0b", "c8b2032d54a51b0f"),
     ("f02ccacff3886646", "ea109753f018e720")),
    (1, 1.0, "lightgcn", "9dd4024460f7e5dc", "ab29288d45793851", ("78f77011438bf8cc", "a1404b1166c39609"),
     ("8e52aacd2ca02974", "d0ceb49ad1a91db2")),
    (1, 1.0, "sgl", "9dd4024460f7e5dc", "9185cc2434fbccfd", ("e5770355e4079c4c", "66138fa2e0e3ef33"),
     ("512f7e755a8bd8ef", "b9eeb7c8e6270a02")),
]  # fmt: skip


def _hashes(cfg: dict, tmp_path) -> list[tuple]:
    r = Runner(load_config(cfg), tmp_path / "out")
    return [
        (
            g.seed,
            g.ratio,
            g.backbone,
            g.clean_hash,
            g.attacked_hash,
            tuple(cell_hash(g, m) for m in r.config.methods),
            tuple(prepare_hash(g, m) for m in r.config.methods),
        )
        for g in r.groups()
    ]


def test_adversarial_hashes_are_unchanged(tmp_path):
    assert _hashes(_golden(), tmp_path) == GOLDEN
    # naming the default explicitly changes nothing either
    assert _hashes({**_golden(), "request": "adversarial"}, tmp_path) == GOLDEN


def test_table2_cpu_cache_keys_are_unchanged(tmp_path):
    """The recipe of experiments/ml-1m-table2-cpu.toml (inlined: the file may evolve) keeps the keys
    its cached ML-1M models and results were stored under."""
    cfg = {
        "name": "ml-1m-table2-cpu",
        "datasets": ["ml-1m"],
        "backbones": ["lightgcn"],
        "ratios": [1.0],
        "item_ratio": 0.0,
        "seeds": [0],
        "val_ratio": 0.1,
        "split_seed": 0,
        "train": {"epochs": 30, "batch_size": 4096, "lr": 1e-2, "eval_every": 3, "patience": 2},
        "model": {"lightgcn": {"dim": 64, "layers": 3, "reg": 1e-4}},
        "methods": [
            {"name": "retrain", "label": "Retrain"},
            *(
                {
                    "name": "unlearnrec",
                    "label": f"UnlearnRec({k})",
                    "config": {"epochs": 10, "ratio": 0.2, "batch_size": 4096, "finetune_epochs": k},
                }
                for k in (0, 3)
            ),
        ],
    }
    [(seed, ratio, backbone, clean, attacked, cells, prepared)] = _hashes(cfg, tmp_path)
    assert (clean, attacked) == ("fad52c4c6e300a99", "8e88944dce3470af")
    assert cells == ("2a54c4c14ee40f13", "d1ddbfe1ad3b0985", "e4349166507e26f9")
    assert prepared == ("e87ffa01c44e72fe", "0316f17b7178e76e", "0316f17b7178e76e")


# ----------------------------------------------------------------------------- config validation
def _random(**over) -> dict:
    cfg = {
        "name": "ratio-tiny",
        "datasets": ["ds"],
        "request": "random",
        "request_ratios": [0.05, 0.2],
        "methods": ["retrain"],
    }
    cfg.update(over)
    return cfg


@pytest.mark.parametrize(
    ("over", "match"),
    [
        (
            {"request": "shuffled"},
            r"unknown value 'shuffled' for key 'request' \(valid: adversarial, random, users, items\)",
        ),
        ({"request": "adversarial"}, r"key 'request_ratios' needs request = \"random\""),
        ({"request_ratios": []}, r"needs key 'request_ratios'"),
        ({"request_ratios": [0.01, 1.0]}, r"key 'request_ratios\[1\]' must be in \(0, 1\), got 1.0"),
        ({"request_ratios": [0.0]}, r"key 'request_ratios\[0\]' must be in \(0, 1\)"),
        ({"ratios": [0.5]}, r"key 'ratios' belongs to the attack"),
        ({"item_ratio": 0.1}, r"key 'item_ratio' belongs to the attack"),
        ({"clean": {"train": {"epochs": 2}}}, r"key 'clean' configures the attack"),
        ({"request": 1}, r"request: expected a string"),
    ],
)
def test_request_config_errors(over, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(_random(**over))
    assert "\n" not in str(e.value)


def test_request_axis():
    assert load_config(_random()).request_axis("ds") == (0.05, 0.2)
    adversarial = load_config({"datasets": ["ds"], "methods": ["retrain"], "ratios": [0.3]})
    assert adversarial.request_axis("ds") == (0.3,)
    # no ratios: the authors' user share of each dataset (Yelp2018 60%, every user elsewhere)
    cfg = load_config({"datasets": ["ml-1m", "data/yelp2018"], "methods": ["retrain"]})
    assert (cfg.request_axis("ml-1m"), cfg.request_axis("data/yelp2018")) == ((1.0,), (0.6,))


@pytest.mark.parametrize("name", ["ratio-ml-1m.toml", "ratio-ml-1m-cpu.toml"])
def test_ratio_configs_are_random_requests(name, tmp_path):
    cfg = load_config(read_toml(EXPERIMENTS / name))
    assert cfg.request == "random" and cfg.request_axis("ml-1m") == (0.001, 0.005, 0.01, 0.02)
    assert cfg.datasets == ("ml-1m",) and [m.name for m in cfg.methods][0] == "retrain"
    groups = Runner(cfg, tmp_path / "out").groups()  # no data is read to list the groups
    assert len(groups) == 4 and len({g.attacked_hash for g in groups}) == 1
    assert all(g.request == "random" and g.request_key for g in groups)


# ----------------------------------------------------------------------------- end to end


def _tiny_grid(tiny_dir) -> dict:
    return {
        "name": "ratio-tiny",
        "datasets": [str(tiny_dir)],
        "backbones": ["lightgcn"],
        "request": "random",
        "request_ratios": [0.05, 0.2],
        "train": {"epochs": 3, "batch_size": 256, "lr": 0.01, "eval_every": 1, "patience": 0},
        "model": {"lightgcn": {"dim": 8, "layers": 2}},
        "methods": [
            {"name": "retrain", "label": "Retrain"},
            {
                "name": "unlearnrec",
                "label": "UnlearnRec(0)",
                "config": {"epochs": 1, "batch_size": 256, "finetune_epochs": 0},
            },
        ],
    }


def test_random_grid_end_to_end(tiny_dir, tmp_path, counted_fit, runner_cache):
    out = tmp_path / "out"
    cfg = _tiny_grid(tiny_dir)
    recs = run_experiment(cfg, out)
    assert [(r["ratio"], r["label"], r["status"]) for r in recs] == [
        (0.05, "Retrain", "ok"),
        (0.05, "UnlearnRec(0)", "ok"),
        (0.2, "Retrain", "ok"),
        (0.2, "UnlearnRec(0)", "ok"),
    ]
    assert len(counted_fit) == 1  # one model on the clean set, shared by both ratios; no clean LightGCN
    runner = Runner(load_config(cfg), out)
    train = runner.store.dataset(str(tiny_dir)).train
    groups = runner.groups()
    assert len({g.attacked_hash for g in groups}) == 1 and len({g.request_key for g in groups}) == 2

    for r in recs:
        req = r["request"]
        assert "attack" not in r and req["kind"] == "random" and req["ratio"] == r["ratio"]
        assert req["edges"] == max(1, round(r["ratio"] * len(train)))
        assert req["fraction_of_train"] == pytest.approx(req["edges"] / len(train))
        assert abs(req["fraction_of_train"] - r["ratio"]) <= 0.5 / len(train) + 1e-12
        assert set(r["hashes"]) == {"model", "request"}
    # the encoder is pre-trained once: the second ratio's UnlearnRec reuses the prepared state
    assert recs[1]["prepare_cached"] is False and recs[3]["prepare_cached"] is True
    assert not (runner_cache / "attacks").exists() and len(list((runner_cache / "requests").iterdir())) == 2

    original = TrainedModel.load(runner_cache / "models" / groups[0].attacked_hash)
    assert original.train.fingerprint() == train.fingerprint() and original.meta["role"] == "original"
    retrain = next(m for m in runner.config.methods if m.name == "retrain")
    sizes = []
    for g in groups:
        edges = runner.store.forget_set(g).edges
        sizes.append(len(edges))
        assert original.train.contains(edges.users, edges.items).all()
        retrained = TrainedModel.load(runner_cache / "models" / cell_hash(g, retrain))
        # Retrain trained on the residual: it never saw a forgotten edge
        assert not retrained.train.contains(edges.users, edges.items).any()
        assert retrained.train.fingerprint() == train.drop(edges).fingerprint()
    assert sizes[0] < sizes[1]

    # the stored request is what a fresh runner forgets, and drawing it again gives the same edges
    g = groups[1]
    stored = json.loads((runner_cache / "requests" / g.request_key / "meta.json").read_text())
    assert (
        stored["edges_fingerprint"] == Runner(load_config(cfg), out).store.forget_set(g).edges.fingerprint()
    )
    redrawn = (
        Runner(load_config(cfg), tmp_path / "elsewhere", cache_dir=tmp_path / "elsewhere-cache")
        .store.forget_set(g)
        .edges
    )
    assert redrawn.fingerprint() == stored["edges_fingerprint"]

    # resume: every cell is done, nothing is trained or written
    counted_fit.clear()
    assert run_experiment(cfg, out) == [] and counted_fit == []
    assert len(read_results(out)) == 4

    md = to_markdown(read_results(out))
    assert "| ratio | forgotten (% of train) |" in md
    pct = f"{100 * recs[2]['request']['fraction_of_train']:.2f}% ({recs[2]['request']['edges']})"
    assert pct in md and "fraction of the clean training edges drawn at random" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(read_results(out)))))
    assert [(r["ratio"], r["label"], r["request"]) for r in rows] == [
        ("0.05", "Retrain", "random"),
        ("0.05", "UnlearnRec(0)", "random"),
        ("0.2", "Retrain", "random"),
        ("0.2", "UnlearnRec(0)", "random"),
    ]
    for row in rows:
        assert float(row["forgotten_fraction"]) == pytest.approx(float(row["ratio"]), abs=0.5 / len(train))

    # the studies (Fig. 2-3, 6) find the cached models of a random grid and forget the same requests
    paths = study_runner.run_studies(cfg, out, k=3)
    assert sorted(p.name.rsplit("-r", 1)[1] for p in paths) == ["0.05.json"] * 3 + ["0.2.json"] * 3
    scores = json.loads(next(p for p in paths if p.name.startswith("scores-")).read_text())["data"]
    assert scores["reference"] == "Retrain" and scores["models"]["Retrain"]["forgotten"]["w1_to_ref"] == 0.0
    assert scores["models"]["original"]["forgotten"]["n"] == sizes[0]


def test_resume_after_a_partial_random_grid(tiny_dir, tmp_path, counted_fit):
    """A grid stopped after its first ratio resumes with the second, reusing the trained model."""
    out = tmp_path / "out"
    cfg = _tiny_grid(tiny_dir)
    cfg["methods"] = cfg["methods"][:1]
    first = run_experiment({**cfg, "request_ratios": [0.05]}, out)
    assert [r["ratio"] for r in first] == [0.05] and len(counted_fit) == 1
    counted_fit.clear()
    rest = run_experiment(cfg, out)
    assert [r["ratio"] for r in rest] == [0.2] and counted_fit == []  # the original model came from the cache


def test_report_shows_the_forgotten_share_for_adversarial_ratios():
    base = {"kind": "cell", "status": "ok", "dataset": "ml-1m", "backbone": "lightgcn", "seed": 0}
    recs = [
        {
            **base,
            "cell": f"c{k}",
            "ratio": ratio,
            "method": "retrain",
            "label": "Retrain",
            "metrics": {"recall@20": 0.2, "ndcg@20": 0.3, "mi_bf": 5.0, "mi_ng": 3.0},
            "attack": {"edges": edges, "fraction_of_train": edges / 726_000},
        }
        for k, (ratio, edges) in enumerate([(0.5, 3020), (1.0, 6040)])
    ]
    md = to_markdown(recs)
    assert "| ml-1m | lightgcn | 1.0 | 0.83% (6,040) |" in md
    assert "fraction of users given one adversarial edge" in md and "random" not in md
    rows = list(csv.DictReader(io.StringIO(to_csv(recs))))
    assert rows[1]["request"] == "adversarial" and float(rows[1]["forgotten_edges"]) == 6040
    assert float(rows[1]["paper_recall@20"]) == 0.2287

    # the same cell under a random request: the ratio column appears, Table 2's values do not
    rnd = [
        {**recs[1], "ratio": 0.01, "request": {"kind": "random", "edges": 6509, "fraction_of_train": 0.01}}
    ]
    md = to_markdown(rnd)
    assert "| ml-1m | lightgcn | 0.01 | 1.00% (6,509) |" in md and "(paper 0." not in md
    assert to_csv(rnd).splitlines()[1].split(",")[8] == ""  # paper_recall@20


def test_cli_counts_the_random_axis(tiny_dir, tmp_path, capsys):
    toml = tmp_path / "ratio.toml"
    toml.write_text(
        f'name = "ratio-cli"\ndatasets = ["{tiny_dir}"]\nrequest = "random"\nrequest_ratios = [0.05, 0.1]\n'
        'methods = ["retrain"]\n[train]\nepochs = 2\nbatch_size = 256\n[model.lightgcn]\ndim = 8\n'
    )
    out = tmp_path / "out"
    assert main(["experiment", str(toml), "--out", str(out), "-q", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cells"], summary["ran"], summary["failed"]) == (2, 2, 0)
    bad = tmp_path / "bad.toml"
    bad.write_text(toml.read_text().replace('request = "random"', 'request = "randm"'))
    assert main(["experiment", str(bad), "--out", str(tmp_path / "o2"), "-q"]) == 2
    assert "key 'request'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path", sorted([*EXPERIMENTS.glob("*.toml"), *EXPERIMENTS.glob("tuning/*.toml")]), ids=lambda p: p.name
)
def test_shipped_experiment_grids_are_valid(path, tmp_path):
    """Every grid in experiments/ loads, its methods build, and each group's models configure."""
    cfg = load_config(read_toml(path))
    for spec in cfg.methods:
        build_method(spec.name, spec.config)
    groups = Runner(cfg, tmp_path / "out").groups()  # no data is read to list the groups
    # every model's config was checked when the grid was read (a bad key is a load error)
    assert groups and all(g.train_cfg["seed"] == g.seed and g.backbone_cfg for g in groups)


def test_model_hashes_survive_later_config_fields(tmp_path):
    """A field added to the backbone configs later (``init``) leaves the hashes of existing grids, and
    so their cached models, as they were; setting it to a new value makes a new model."""
    cfg = load_config(read_toml(EXPERIMENTS / "ml-1m-table2-cpu-full.toml"))
    (group,) = Runner(cfg, tmp_path / "a").groups()
    # the hashes committed in experiments/results/ml-1m-table2-cpu-full/results.jsonl
    assert (group.clean_hash, group.attacked_hash) == ("c27c6ea0898a6337", "549c1e16e6a8df58")
    assert "init" not in group.backbone_cfg
    model = {**cfg.model, "lightgcn": {**cfg.model["lightgcn"], "init": "xavier"}}
    (other,) = Runner(dataclasses.replace(cfg, model=model), tmp_path / "b").groups()
    assert other.backbone_cfg["init"] == "xavier" and other.attacked_hash != group.attacked_hash
