"""The experiment runner end to end on a tiny dataset folder: cells, caching, resume, report, CLI."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest
import torch

from unlearnrec.cli import main
from unlearnrec.data.graph import Graph
from unlearnrec.errors import ConfigError
from unlearnrec.experiments.report import table_cells, to_csv, to_markdown
from unlearnrec.experiments.runner import load_config, read_results, run_experiment
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Unlearner
from unlearnrec.unlearn.registry import build_method

from .conftest import run_cli


class Fake(Unlearner):
    """Keeps the embeddings, drops the edges from the graph: forgets nothing but the graph."""

    name = "fake"
    calls = 0

    def __init__(self, config=None, seed: int = 0):
        self.seed = seed

    def _forget(self, model, train, request):
        Fake.calls += 1
        residual = train.drop(request.edges)
        new = TrainedModel(
            copy.deepcopy(model.backbone),
            Graph.from_interactions(residual),
            model.backbone_name,
            model.dataset,
            dict(model.split),
        )
        return new, {"note": "fake", "obj": object()}


class Mutator(Fake):
    """Breaks the contract: zeroes the input model's layer-0 table."""

    name = "mutator"

    def _forget(self, model, train, request):
        with torch.no_grad():
            model.backbone.e0.zero_()
        return super()._forget(model, train, request)


def builder(interrupt: bool = False):
    def build(name, cfg, seed):
        if name == "mutator":
            return Mutator(cfg, seed)
        if name == "fake":
            if interrupt:
                raise KeyboardInterrupt
            return Fake(cfg, seed)
        if name == "broken":
            raise ModuleNotFoundError("No module named 'unlearnrec.unlearn.broken'")
        return build_method(name, cfg, seed)

    return build


def grid(tiny_dir, methods=None) -> dict:
    return {
        "name": "tiny",
        "datasets": [str(tiny_dir)],
        "backbones": ["lightgcn"],
        "ratios": [0.5],
        "item_ratio": 0.0,  # the per-user-only request (the default is the authors' per user and item)
        "methods": methods
        or ["retrain", {"name": "fake", "label": "Fake"}, {"name": "broken", "label": "Broken"}],
        "train": {"epochs": 3, "batch_size": 256, "lr": 0.01, "eval_every": 1, "patience": 0},
        "model": {"lightgcn": {"dim": 8, "layers": 2}},
        "clean": {"train": {"epochs": 2}},
    }


def test_run_resume_and_report(tiny_dir, tmp_path, counted_fit, runner_cache):
    out = tmp_path / "out"
    Fake.calls = 0
    recs = run_experiment(grid(tiny_dir), out, build=builder())
    by = {r["label"]: r for r in recs}
    assert [r["label"] for r in recs] == ["retrain", "Fake", "Broken"]
    assert by["retrain"]["status"] == "ok" and by["Fake"]["status"] == "ok"
    assert by["Broken"]["status"] == "error" and "ModuleNotFoundError" in by["Broken"]["error"]
    assert len(counted_fit) == 2  # the clean LightGCN and the attacked model (retrain calls loop.fit itself)
    m = by["Fake"]["metrics"]
    for k in ("recall@20", "ndcg@20", "mi_bf", "mi_ng", "auc", "w1_to_ref", "ks_to_ref", "before_recall@20"):
        assert k in m
    # the fake method keeps E⁰: only the graph changed, so the forgotten edges barely move
    assert m["mi_bf"] == pytest.approx(1.0, abs=0.1)
    assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["auc_before"] <= 1.0
    assert by["Fake"]["reference"]["mi_bf"] == by["retrain"]["metrics"]["mi_bf"]
    assert by["Fake"]["info"] == {"note": "fake"}
    assert by["Fake"]["attack"]["edges"] == 30  # half of 60 users
    assert set(by["retrain"]["versions"]) >= {"unlearnrec", "torch", "numpy", "python"}
    assert by["retrain"]["seconds"] > 0 and "peak_memory_mb" in by["retrain"]
    # the cache lives outside OUT (here: this test's $UNLEARNREC_CACHE)
    assert len(list((runner_cache / "models").iterdir())) == 3  # clean, attacked, retrained
    assert len(list((runner_cache / "attacks").iterdir())) == 1
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]
    assert len(read_results(out)) == 3

    # resume: finished cells are skipped, nothing is trained again, the failed cell is retried
    counted_fit.clear()
    Fake.calls = 0
    again = run_experiment(grid(tiny_dir), out, build=builder())
    assert [r["label"] for r in again] == ["Broken"]
    assert counted_fit == [] and Fake.calls == 0
    assert len(read_results(out)) == 4

    md = to_markdown(read_results(out))
    assert "retrain Recall" in md and "Fake MI-NG" in md and "Broken" in md and "Failed cells" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(read_results(out)))))
    assert [r["label"] for r in rows] == ["retrain", "Fake"]
    assert float(rows[0]["recall@20"]) == pytest.approx(by["retrain"]["metrics"]["recall@20"], rel=1e-5)


def test_interrupted_run_resumes(tiny_dir, tmp_path):
    out = tmp_path / "out"
    methods = ["retrain", "fake"]
    with pytest.raises(KeyboardInterrupt):
        run_experiment(grid(tiny_dir, methods), out, build=builder(interrupt=True))
    assert [r["method"] for r in read_results(out)] == ["retrain"]
    Fake.calls = 0
    recs = run_experiment(grid(tiny_dir, methods), out, build=builder())
    assert [r["method"] for r in recs] == ["fake"] and Fake.calls == 1


def test_a_method_mutating_its_input_is_caught(tiny_dir, tmp_path):
    recs = run_experiment(grid(tiny_dir, ["mutator", "fake"]), tmp_path / "out", build=builder())
    assert [r["input_mutated"] for r in recs] == [True, False]
    # the next cell saw the model as trained (reloaded), not the zeroed one
    assert recs[1]["metrics"]["auc_before"] == recs[0]["metrics"]["auc_before"] != 0.5


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"backbones": ["lightgcn", "nosuchnet"]},
            "unknown backbone 'nosuchnet' .valid: lightgcn, mf, sgl, simgcl",
        ),
        ({"train": {"epochs": 3, "lr_typo": 0.1}}, "unknown config key 'train.lightgcn..lr_typo'"),
        ({"train": {"epochs": "3"}}, "expected an integer"),
        ({"train_overrides": {"lightgcn": {"batchsize": 8}}}, "unknown config key .*batchsize"),
        ({"train_overrides": {"lgcn": {"epochs": 1}}}, "unknown backbone 'train_overrides.lgcn'"),
        ({"model": {"lightgcn": {"dims": 8}}}, "unknown config key 'model.dims'"),
        ({"model": {"lightgcn": {"dim": 8}, "sgl": {"keep": 2.0}}}, "sgl|keep"),
        ({"clean": {"trian": {}}}, "unknown config key 'experiment.clean.trian'"),
        ({"clean": {"train": {"epoch": 1}}}, "unknown config key .*epoch"),
        (
            {"methods": [{"name": "retrain", "config": {"epoch": 2}}]},
            "unknown config key 'methods.retrain.config.epoch'",
        ),
    ],
)
def test_a_typo_anywhere_in_a_grid_is_a_load_error(tiny_dir, change, message):
    """The train / model / clean tables and the methods' configs are checked when the grid is read,
    never turned into rows of failed cells (issue 23)."""
    with pytest.raises(ConfigError, match=message):
        load_config({**grid(tiny_dir, ["retrain"]), **change})


def test_an_unknown_method_is_refused_before_any_cell_with_the_default_builder(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'retrian' .valid: retrain, unlearnrec"):
        run_experiment(grid(tiny_dir, ["retrain", "retrian"]), tmp_path / "out")
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config({"datasets": ["x"], "methods": ["retrain"], "epochs": 3})
    with pytest.raises(ConfigError, match="share the label"):
        load_config({"datasets": ["x"], "methods": ["retrain", "retrain"]})


def test_report_against_paper():
    base = {
        "kind": "cell",
        "status": "ok",
        "dataset": "ml-1m",
        "backbone": "lightgcn",
        "ratio": 1.0,
        "seed": 0,
    }
    recs = [
        {
            **base,
            "cell": "a",
            "method": "retrain",
            "label": "Retrain",
            "metrics": {"recall@20": 0.2287 * 1.01, "ndcg@20": 0.3209, "mi_bf": 9.79, "mi_ng": 6.23},
        },
        {
            **base,
            "cell": "b",
            "method": "unlearnrec",
            "label": "UnlearnRec(3)",
            "metrics": {"recall@20": 0.2282, "ndcg@20": 0.3206, "mi_bf": 6.51 / 2, "mi_ng": 4.28},
        },
    ]
    md = to_markdown(recs)
    assert "(paper 0.2287, +1.0%)" in md
    assert "3.25 (paper 6.51, -50.0%)" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(recs))))
    assert float(rows[1]["paper_mi_bf"]) == 6.51 and float(rows[1]["diff_pct_mi_bf"]) == pytest.approx(-50.0)


def test_report_keeps_the_latest_cell_of_a_label_and_seed():
    # a method's config changed and the grid re-ran into the same folder: the two cells share a label
    # and a seed; the report shows the latest, it does not average them as if they were two seeds
    base = {"kind": "cell", "status": "ok", "dataset": "ml-1m", "backbone": "lightgcn", "ratio": 1.0}
    m = {"ndcg@20": 0.3, "mi_bf": 1.0, "mi_ng": 1.0}
    recs = [
        {
            **base,
            "seed": 0,
            "cell": "old",
            "method": "unlearnrec",
            "label": "UnlearnRec(0)",
            "metrics": {**m, "recall@20": 0.10},
        },
        {
            **base,
            "seed": 0,
            "cell": "new",
            "method": "unlearnrec",
            "label": "UnlearnRec(0)",
            "metrics": {**m, "recall@20": 0.20},
        },
        {
            **base,
            "seed": 1,
            "cell": "s1",
            "method": "unlearnrec",
            "label": "UnlearnRec(0)",
            "metrics": {**m, "recall@20": 0.30},
        },
    ]
    (cell,) = table_cells(recs)
    assert cell.seeds == 2 and cell.values["recall@20"] == [0.20, 0.30]
    # re-recording the old cell (a later run of the old config) makes it the latest again
    (cell,) = table_cells([*recs, recs[0]])
    assert sorted(cell.values["recall@20"]) == [0.10, 0.30]


def test_cli_experiment_and_report(tiny_dir, tmp_path, capsys):
    toml = tmp_path / "grid.toml"
    toml.write_text(
        f'name = "cli"\ndatasets = ["{tiny_dir}"]\nratios = [0.25]\nmethods = ["retrain"]\n'
        "[train]\nepochs = 2\nbatch_size = 256\n[model.lightgcn]\ndim = 8\n"
    )
    out = tmp_path / "out"
    assert main(["experiment", str(toml), "--out", str(out), "-q"]) == 0
    assert "1 ran" in capsys.readouterr().out
    assert (out / "experiment-cli.toml").is_file()
    assert main(["report", str(out), "--csv", "--markdown", "--save"]) == 0
    printed = capsys.readouterr().out
    assert "| dataset | backbone |" in printed and "dataset,backbone,ratio,method" in printed
    assert (out / "table2.md").is_file() and (out / "table2.csv").is_file()
    assert main(["report", str(out), "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert cells[0]["method"] == "retrain" and 0 <= cells[0]["recall@20"] <= 1
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_report_long_layout_gives_a_row_per_method_with_its_share_of_retrain():
    base = {"kind": "cell", "status": "ok", "dataset": "ml-1m", "ratio": 1.0, "seed": 0}
    m = {"ndcg@20": 0.3, "mi_bf": 2.0, "mi_ng": 1.5}
    recs = []
    for bb, retrain in (("lightgcn", 0.20), ("sgl", 0.25)):
        recs.append({**base, "backbone": bb, "cell": f"{bb}-r", "method": "retrain", "label": "Retrain",
                     "metrics": {**m, "recall@20": retrain}})  # fmt: skip
        for j, lab in enumerate(["A", "B", "C", "D"]):
            recs.append({**base, "backbone": bb, "cell": f"{bb}-{lab}", "method": "gif", "label": lab,
                         "metrics": {**m, "recall@20": retrain * (0.9 + 0.05 * j)}})  # fmt: skip
    long = to_markdown(recs)  # five methods: auto picks the long layout
    assert long == to_markdown(recs, "long")
    table = long.split("\n\n")[0].splitlines()[2:]
    assert len(table) == 10  # 2 backbones x 5 methods
    assert table[0].startswith("| ml-1m | lightgcn | Retrain | 0.2000 (paper 0.2287, -12.5%) |")
    assert table[0].endswith("| 100.0% |")
    assert table[7].startswith("| ml-1m | sgl | B | 0.2375 |") and table[7].endswith("| 95.0% |")
    wide = to_markdown(recs, "wide")
    assert len(wide.split("\n\n")[0].splitlines()) == 2 + 2 and "D MI-NG" in wide
    assert to_markdown(recs[:4]) == to_markdown(recs[:4], "wide")  # four methods: still the paper's layout
    with pytest.raises(ValueError, match="unknown layout"):
        to_markdown(recs, "tall")


# ----------------------------------------------------------------------------- cache, resume, status
def test_a_fresh_checkout_resumes_from_the_cache(tiny_dir, tmp_path, counted_fit, runner_cache):
    """The cache lives outside OUT: a run into a new OUT (a fresh checkout, results lost) trains no
    model again and takes the prepared state from the cache."""
    methods = [
        "retrain",
        {"name": "unlearnrec", "config": {"epochs": 1, "batch_size": 64, "steps_per_epoch": 2}},
    ]
    first = run_experiment(grid(tiny_dir, methods), tmp_path / "a")
    assert [r["status"] for r in first] == ["ok", "ok"] and len(counted_fit) == 2
    counted_fit.clear()
    again = run_experiment(grid(tiny_dir, methods), tmp_path / "b")
    assert [r["status"] for r in again] == ["ok", "ok"]
    assert counted_fit == []  # neither the clean nor the attacked model was trained again
    assert first[1]["prepare_cached"] is False and again[1]["prepare_cached"] is True
    assert [r["cell"] for r in again] == [r["cell"] for r in first]
    # the encoder's sidecar (its pre-training curve, for the report) is kept beside the results
    assert len(list((tmp_path / "b" / "prepared").glob("*/meta.json"))) == 1


def test_status_lists_done_and_pending_cells_with_estimates(tiny_dir, tmp_path, capsys):
    from unlearnrec.experiments.status import status

    out = tmp_path / "out"
    cfg = load_config(grid(tiny_dir, ["retrain", "fake"]))
    before = status(cfg, out)
    assert [(c.label, c.done, c.seconds) for c in before] == [("retrain", False, None), ("fake", False, None)]
    recs = run_experiment(cfg, out, build=builder())
    wider = load_config({**grid(tiny_dir, ["retrain", "fake"]), "ratios": [0.5, 1.0]})
    cells = status(wider, out)
    assert [(c.group.ratio, c.label, c.done) for c in cells] == [
        (0.5, "retrain", True),
        (0.5, "fake", True),
        (1.0, "retrain", False),
        (1.0, "fake", False),
    ]
    by = {r["label"]: r for r in recs}
    took = {k: r["seconds"] + r["prepare_seconds"] for k, r in by.items()}
    assert cells[0].seconds == pytest.approx(took["retrain"]) and cells[1].seconds == pytest.approx(
        took["fake"]
    )
    # the first pending cell of the group also trains its (attacked) model: the recorded training time
    train = by["retrain"]["model"]["train_seconds"]
    assert cells[2].seconds == pytest.approx(took["retrain"] + train)
    assert cells[3].seconds == pytest.approx(took["fake"])

    toml = tmp_path / "wider.toml"
    toml.write_text(
        "\n".join(
            [
                'name = "tiny"',
                f'datasets = ["{tiny_dir}"]',
                "ratios = [0.5, 1.0]",
                "item_ratio = 0.0",
                'methods = ["retrain", "fake"]',
                "[train]\nepochs = 3\nbatch_size = 256\nlr = 0.01\neval_every = 1\npatience = 0",
                "[model.lightgcn]\ndim = 8\nlayers = 2",
                "[clean.train]\nepochs = 2",
            ]
        )
    )
    capsys.readouterr()
    assert main(["experiment", str(toml), "--out", str(out), "--status", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["cells"], got["done"], got["pending"], got["unknown_estimates"]) == (4, 2, 2, 0)
    assert got["estimated_seconds"] == pytest.approx(cells[2].seconds + cells[3].seconds)
    assert main(["experiment", str(toml), "--out", str(out), "--status"]) == 0
    text = capsys.readouterr().out
    assert "2 of 4 cells done; 2 pending" in text and text.count("pending ") == 2
    assert len(read_results(out)) == 2  # --status ran nothing


# ----------------------------------------------------------------------------- the [attack] table
def _hashes(cfg) -> list[tuple]:
    from unlearnrec.experiments.grid import cell_hash, groups

    return [(g.clean_hash, g.attacked_hash, tuple(cell_hash(g, m) for m in cfg.methods)) for g in groups(cfg)]


def test_attack_table_defaults_to_the_authors_protocol(tiny_dir):
    from unlearnrec.experiments.grid import groups

    legacy = {k: v for k, v in grid(tiny_dir, ["retrain"]).items() if k not in ("ratios", "item_ratio")}
    authors = load_config({**legacy, "attack": {}})
    assert (authors.ratios, authors.item_ratio, authors.attack.protocol) == (None, None, "authors")
    # the tiny folder is no dataset of the authors': every user and every item, as on ML-1M
    assert [(g.ratio, g.item_ratio) for g in groups(authors)] == [(1.0, 1.0)]
    # no table at all is the same protocol and the same shares
    assert load_config(legacy).protocol == "authors" and _hashes(load_config(legacy)) == _hashes(authors)
    per_user = load_config({**legacy, "attack": {"protocol": "per-user"}})
    assert (per_user.ratios, per_user.item_ratio, per_user.protocol) == ((1.0,), 0.0, "per-user")
    # the table and the old top-level keys name the same attack: the same hashes (cached models)
    assert _hashes(per_user) == _hashes(load_config({**legacy, "ratios": [1.0], "item_ratio": 0.0}))
    swept = load_config({**legacy, "attack": {"user_ratio": [0.5, 1.0], "item_ratio": 0.6}})
    assert _hashes(swept) == _hashes(load_config({**legacy, "ratios": [0.5, 1.0], "item_ratio": 0.6}))
    assert _hashes(authors) != _hashes(per_user)


@pytest.mark.parametrize(
    "attack,extra,message",
    [
        ({"protocol": "per-user", "item_ratio": 0.5}, {}, "per-user.* drop 'attack.item_ratio'"),
        ({"protocol": "both"}, {}, "attack.protocol' .valid: authors, per-user"),
        ({"user_ratio": 1.5}, {}, "attack.user_ratio.0.' must be in"),
        ({"item_ratio": -0.1}, {}, "attack.item_ratio' must be in"),
        ({"users": 1.0}, {}, "unknown config key 'attack.users'"),
        ({}, {"ratios": [1.0]}, "key 'ratios' and the .attack. table both set the attack"),
        (
            {},
            {"request": "random", "request_ratios": [0.1]},
            "key 'attack' configures the adversarial request",
        ),
    ],
)
def test_attack_table_errors(tiny_dir, attack, extra, message):
    legacy = {
        k: v for k, v in grid(tiny_dir, ["retrain"]).items() if k not in ("ratios", "item_ratio", "clean")
    }
    with pytest.raises(ConfigError, match=message):
        load_config({**legacy, "attack": attack, **extra})


def test_authors_attack_forgets_an_edge_per_user_and_per_item(tiny_dir, tmp_path):
    legacy = {k: v for k, v in grid(tiny_dir, ["fake"]).items() if k not in ("ratios", "item_ratio")}
    per_user = run_experiment(
        {**legacy, "attack": {"protocol": "per-user", "user_ratio": 0.5}}, tmp_path / "a", build=builder()
    )
    both = run_experiment(
        {**legacy, "attack": {"user_ratio": 0.5, "item_ratio": 0.5}}, tmp_path / "b", build=builder()
    )
    assert per_user[0]["attack"]["edges"] == 30  # half of 60 users
    # and half of the 40 items get their lowest-scored user (a pair may coincide with a user's)
    assert 30 < both[0]["attack"]["edges"] <= 50


def test_a_column_with_a_function_is_a_metric_of_every_new_cell(tiny_dir, tmp_path, monkeypatch):
    """docs/extending.md: a metric is one function and one column; the runner computes it for each cell."""
    from unlearnrec.experiments import columns

    seen = []

    def forgotten_count(x: columns.MetricInputs) -> float:
        seen.append((x.original.train.num_users, x.reference is None))
        return float(len(x.forgotten))

    extra = columns.Column("forgotten_count", "forgotten", compute=forgotten_count)
    monkeypatch.setattr(columns, "COLUMNS", (*columns.COLUMNS, extra))
    recs = run_experiment(grid(tiny_dir, ["retrain", "fake"]), tmp_path / "out", build=builder())
    assert [r["metrics"]["forgotten_count"] for r in recs] == [30.0, 30.0]
    assert seen == [(60, True), (60, False)]  # Retrain has no reference; Fake is compared with Retrain
    assert extra.value(recs[1]) == 30.0 and extra.fmt(30.0) == "30.0000"


def test_an_out_from_before_the_cache_moved_resumes_without_training(
    tiny_dir, tmp_path, counted_fit, runner_cache
):
    """A grid whose OUT holds models/, attacks/ and prepared/ (the layout before the cache moved out of OUT)
    resumes from them: nothing is trained again and the encoder is reused; new entries go to the cache."""
    methods = [
        "retrain",
        {"name": "unlearnrec", "config": {"epochs": 1, "batch_size": 64, "steps_per_epoch": 2}},
    ]
    out = tmp_path / "old-out"
    run_experiment(grid(tiny_dir, methods[:1]), out, cache_dir=out)  # the old layout: the cache inside OUT
    assert (out / "models").is_dir() and (out / "attacks").is_dir() and len(counted_fit) == 2
    counted_fit.clear()
    recs = run_experiment(grid(tiny_dir, methods), out)  # today's default cache, same OUT
    assert [r["label"] for r in recs] == ["unlearnrec"] and recs[0]["status"] == "ok"
    assert counted_fit == []  # the clean and attacked models came from OUT/models
    assert recs[0]["reference"]["recall@20"] is not None  # Retrain's model found in OUT/models too
    assert (runner_cache / "prepared").is_dir() and not (runner_cache / "models").exists()


def test_status_estimates_a_cells_preparation_from_the_nearest_pre_training(tiny_dir, tmp_path):
    """A pending cell whose prepared state is not cached is estimated with the preparation recorded for
    the finished cell whose pre-training settings are nearest (forget-time fields ignored); one whose state
    is cached, or prepared by an earlier pending cell, adds none."""
    from unlearnrec.experiments.status import status

    fast = {"batch_size": 256, "steps_per_epoch": 2, "lr": 1e-2}
    none = {"name": "unlearnrec", "label": "none", "config": {**fast, "epochs": 0}}
    two = {"name": "unlearnrec", "label": "two", "config": {**fast, "epochs": 2}}
    out = tmp_path / "out"
    recs = {r["label"]: r for r in run_experiment(load_config(grid(tiny_dir, [none, two])), out)}
    assert not recs["two"]["prepare_cached"] and not recs["none"]["prepare_cached"]
    assert recs["two"]["prepare_seconds"] > recs["none"]["prepare_seconds"]
    # the forget part: the finished cell nearest in the whole method config
    s_two, s_none = recs["two"]["seconds"], recs["none"]["seconds"]
    pending = [
        {"name": "unlearnrec", "label": "items", "config": {**fast, "epochs": 2, "influence_on": "items"}},
        {
            "name": "unlearnrec",
            "label": "items, k=1",
            "config": {**fast, "epochs": 2, "influence_on": "items", "finetune_epochs": 1},
        },
        {"name": "unlearnrec", "label": "eta 0", "config": {**fast, "epochs": 0, "eta_init": 0.0}},
        {"name": "unlearnrec", "label": "two, k=1", "config": {**fast, "epochs": 2, "finetune_epochs": 1}},
        {"name": "unlearnrec", "label": "far", "config": {**fast, "epochs": 3, "ratio": 0.1}},
    ]
    cells = {c.label: c for c in status(load_config(grid(tiny_dir, [none, two, *pending])), out)}
    assert cells["items"].seconds == pytest.approx(s_two + recs["two"]["prepare_seconds"])
    assert cells["items, k=1"].seconds == pytest.approx(s_two)  # the "items" cell prepares it
    assert cells["eta 0"].seconds == pytest.approx(s_none + recs["none"]["prepare_seconds"])
    assert cells["two, k=1"].seconds == pytest.approx(s_two)  # forget-time field only: cached
    assert cells["far"].seconds is None  # two pre-training fields from anything finished: unknown


def test_status_estimates_a_fresh_checkout_from_earlier_runs(tiny_dir, tmp_path, capsys):
    """A fresh checkout (empty OUT, empty cache) gets no estimate from itself; with the results of an
    earlier run of the same grid (``--estimate-from``) each pending cell is estimated from its own
    record: its forget time, its preparation, and the first cell of the group its model's training."""
    from unlearnrec.experiments.results import read_history
    from unlearnrec.experiments.status import status

    ours = {
        "name": "unlearnrec",
        "label": "ours",
        "config": {"epochs": 1, "batch_size": 64, "steps_per_epoch": 2},
    }
    earlier = tmp_path / "committed" / "tiny"
    recs = {r["label"]: r for r in run_experiment(load_config(grid(tiny_dir, ["retrain", ours])), earlier)}
    fresh_out, fresh_cache = tmp_path / "out", tmp_path / "fresh-cache"
    cfg = load_config(grid(tiny_dir, ["retrain", ours, "fake"]))
    assert [c.seconds for c in status(cfg, fresh_out, fresh_cache)] == [None, None, None]

    history = read_history([tmp_path / "committed"])  # a folder: its results.jsonl at any depth
    assert sorted(r["label"] for r in history) == ["ours", "retrain"]
    cells = {c.label: c for c in status(cfg, fresh_out, fresh_cache, history=history)}
    train = recs["retrain"]["model"]["train_seconds"]
    retrain, mine = recs["retrain"], recs["ours"]
    assert cells["retrain"].seconds == pytest.approx(retrain["seconds"] + retrain["prepare_seconds"] + train)
    assert cells["ours"].seconds == pytest.approx(mine["seconds"] + mine["prepare_seconds"])
    assert cells["fake"].seconds is None  # a method no run has timed: unknown, not a guess
    assert not fresh_out.exists() and not fresh_cache.exists()  # nothing run, nothing written

    # a results.jsonl file works as well as a folder; each file's records are kept
    (tmp_path / "other").mkdir()
    faster = {**retrain, "seconds": retrain["seconds"] / 2}
    (tmp_path / "other" / "results.jsonl").write_text(json.dumps(faster) + "\n")
    both = read_history([tmp_path / "other" / "results.jsonl", earlier])
    assert len(both) == 3

    toml = tmp_path / "grid.toml"
    toml.write_text(
        "\n".join(
            [
                'name = "tiny"',
                f'datasets = ["{tiny_dir}"]',
                "ratios = [0.5]",
                "item_ratio = 0.0",
                'methods = ["retrain"]',
                "[train]\nepochs = 3\nbatch_size = 256\nlr = 0.01\neval_every = 1\npatience = 0",
                "[model.lightgcn]\ndim = 8\nlayers = 2",
                "[clean.train]\nepochs = 2",
            ]
        )
    )
    base = ["experiment", toml, "--out", fresh_out, "--cache", fresh_cache, "--status"]
    code, text, _ = run_cli(capsys, *base)
    assert code == 0 and "no estimate" in text and "--estimate-from experiments/results" in text
    code, text, _ = run_cli(capsys, *base, "--estimate-from", tmp_path / "committed")
    assert code == 0 and "est. ?" not in text and "1 pending, about" in text
    code, _, err = run_cli(capsys, *base, "--estimate-from", tmp_path / "nowhere")
    assert code == 2 and "nowhere: no such file or folder" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, *base, "--estimate-from", tmp_path / "empty")
    assert code == 2 and "no results.jsonl in this folder" in err
    code, _, err = run_cli(capsys, "experiment", toml, "--out", fresh_out, "--estimate-from", earlier)
    assert code == 2 and "only applies with --status" in err and not fresh_out.exists()


def test_status_rescales_fine_tuning_time_to_the_pending_cells_steps(tiny_dir, tmp_path):
    """A pending UnlearnRec cell is estimated from the nearest finished one with that cell's fine-tuning
    time per step times its own (maximum) step count: 3 epochs of 2 steps after 1 epoch of 2 steps is
    about three times the fine-tuning, and a whole pass is sized from the recorded request."""
    from unlearnrec.experiments.grid import MethodSpec
    from unlearnrec.experiments.status import forget_seconds, status

    fast = {"batch_size": 256, "steps_per_epoch": 2, "lr": 1e-2, "epochs": 1}
    k1 = {"name": "unlearnrec", "label": "k1", "config": {**fast, "finetune_epochs": 1, "finetune_steps": 2}}
    out = tmp_path / "out"
    (rec,) = run_experiment(load_config(grid(tiny_dir, [k1])), out)
    ran, tuned = rec["info"]["finetune_steps_run"], rec["info"]["finetune_seconds"]
    assert ran == 2 and tuned > 0
    k3 = {"name": "unlearnrec", "label": "k3", "config": {**fast, "finetune_epochs": 3, "finetune_steps": 2}}
    cells = {c.label: c for c in status(load_config(grid(tiny_dir, [k1, k3])), out)}
    assert cells["k3"].seconds == pytest.approx(rec["seconds"] - tuned + 3 * tuned)

    record = {
        "seconds": 10.0,
        "info": {"finetune_steps_run": 80, "finetune_seconds": 8.0},
        "attack": {"edges": 100, "fraction_of_train": 0.1},
    }
    one_pass = MethodSpec("unlearnrec", config={"finetune_epochs": 1, "finetune_batch_size": 300})
    assert forget_seconds(record, one_pass) == pytest.approx(2.0 + 0.1 * 3)  # ceil(900 / 300) steps
    assert forget_seconds({**record, "attack": None}, one_pass) == 10.0  # the pass's size unknown
    assert forget_seconds(record, MethodSpec("gif")) == 10.0
    assert forget_seconds(record, MethodSpec("unlearnrec", config={"finetune_epochs": 0})) == 2.0
    # a recovery phase's steps count too (issue 25), whether the epoch's size is known or fixed
    recover = {"finetune_epochs": 1, "finetune_batch_size": 300, "finetune_recover_steps": 7}
    assert forget_seconds(record, MethodSpec("unlearnrec", config=recover)) == pytest.approx(2.0 + 0.1 * 10)
    fixed = {"finetune_epochs": 2, "finetune_steps": 40, "finetune_recover_steps": 80}
    fixed_spec = MethodSpec("unlearnrec", config=fixed)
    assert forget_seconds({**record, "attack": None}, fixed_spec) == pytest.approx(2.0 + 0.1 * 160)
