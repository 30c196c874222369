"""The studies' pure functions: score distributions, the similar-item case study, efficiency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments import studies, study_runner


def _emb(n_users=30, n_items=20, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_users, d, generator=g), torch.randn(n_items, d, generator=g)


@pytest.fixture
def graph(tiny):
    forgotten = tiny.subset(np.arange(0, len(tiny), 9))
    return tiny, forgotten, tiny.drop(forgotten)


# ----------------------------------------------------------------------------- score distributions
def test_study_edges_sets(graph):
    train, forgotten, residual = graph
    sets = studies.study_edges(forgotten, residual, train, seed=0, max_retained=25)
    fu, fi = sets["forgotten"]
    assert np.array_equal(fu, forgotten.users) and np.array_equal(fi, forgotten.items)
    ru, ri = sets["retained"]
    assert len(ru) == 25 and residual.contains(ru, ri).all()
    nu, ni = sets["negative"]
    assert np.array_equal(nu, forgotten.users)  # one negative per forgotten edge, same user
    assert not train.contains(nu, ni).any()


def test_edge_set_scores_are_dot_products():
    ue, ie = _emb()
    edges = {"a": (np.array([0, 3]), np.array([1, 2]))}
    out = studies.edge_set_scores({"m": (ue, ie)}, edges)
    want = [float(ue[0] @ ie[1]), float(ue[3] @ ie[2])]
    np.testing.assert_allclose(out["m"]["a"], want, rtol=1e-6)


def test_summary_density_shared_bins_and_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    scores = {
        "retrain": {"forgotten": x, "negative": x - 1},
        "same": {"forgotten": x.copy(), "negative": x - 1},
        "shifted": {"forgotten": x + 0.5, "negative": x - 1},
    }
    s = studies.summarize_distributions(scores, bins=30)
    assert s["reference"] == "retrain"
    edges = np.asarray(s["bins"]["forgotten"])
    assert len(edges) == 31
    for name in scores:
        h = np.asarray(s["models"][name]["forgotten"]["hist"])
        assert np.sum(h * np.diff(edges)) == pytest.approx(1.0, abs=1e-9)  # a density on shared bins
    assert s["models"]["same"]["forgotten"]["w1_to_ref"] == pytest.approx(0.0, abs=1e-12)
    assert s["models"]["same"]["forgotten"]["ks_to_ref"] == pytest.approx(0.0, abs=1e-12)
    assert s["models"]["shifted"]["forgotten"]["w1_to_ref"] == pytest.approx(0.5, abs=1e-9)
    assert s["models"]["shifted"]["forgotten"]["mean"] == pytest.approx(x.mean() + 0.5)
    # without a reference no distances are reported
    s2 = studies.summarize_distributions({"a": {"forgotten": x}}, bins=5, reference="retrain")
    assert s2["reference"] is None and "w1_to_ref" not in s2["models"]["a"]["forgotten"]


def test_summary_handles_empty_and_constant_sets():
    s = studies.summarize_distributions({"a": {"forgotten": np.zeros(0), "negative": np.ones(4)}}, bins=4)
    assert s["models"]["a"]["forgotten"]["n"] == 0 and s["models"]["a"]["forgotten"]["mean"] is None
    lo, hi = s["bins"]["negative"][0], s["bins"]["negative"][-1]
    assert lo < 1.0 < hi
    with pytest.raises(UnlearnRecError):
        studies.summarize_distributions({"a": {"forgotten": np.ones(3)}}, bins=0)


def test_score_distribution_study(graph):
    train, forgotten, residual = graph
    orig, ret, ul = _emb(60, 40, seed=1), _emb(60, 40, seed=2), _emb(60, 40, seed=3)
    out = studies.score_distribution_study(
        orig, {"retrain": ret, "ours": ul}, forgotten, residual, train, bins=10
    )
    assert set(out["models"]) == {"original", "retrain", "ours"}
    assert set(out["models"]["ours"]) == {"forgotten", "retained", "negative"}
    assert out["models"]["ours"]["forgotten"]["n"] == len(forgotten)
    with pytest.raises(UnlearnRecError, match="reserved"):
        studies.score_distribution_study(orig, {"original": ul}, forgotten, residual, train)


# ----------------------------------------------------------------------------- case study (Fig. 6)
def test_similar_items_known_neighbours():
    # items on a circle: the neighbours of item 0 by cosine are 1 and 7 (tie: lower id first), then 2, 6
    angles = np.arange(8) * (2 * np.pi / 8)
    ie = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1) * np.arange(1, 9)[:, None])
    idx, sims = studies.similar_items(ie, [0, 3], k=4)
    assert idx[0].tolist() == [1, 7, 2, 6]
    assert idx[1].tolist() == [2, 4, 1, 5]
    np.testing.assert_allclose(sims[0, :2], np.cos(np.pi / 4))
    assert 0 not in idx[0] and 3 not in idx[1]  # the item itself is excluded
    idx1, _ = studies.similar_items(ie, [0, 3], k=4, chunk=1)
    assert np.array_equal(idx, idx1)
    with pytest.raises(UnlearnRecError):
        studies.similar_items(ie, [0], k=8)


def test_case_study_scores_and_delta():
    ue, ie = _emb()
    ue2 = ue.clone()
    ue2[4] = ue2[4] - 1.0  # the unlearned model changes user 4 only
    case = studies.case_study((ue, ie), {"same": (ue, ie), "moved": (ue2, ie)}, user=4, item=7, k=5)
    assert case["k"] == 5 and len(case["similar"]) == 5 and 7 not in case["similar"]
    assert case["scores"]["original"]["forgotten"] == pytest.approx(float(ue[4] @ ie[7]))
    j = case["similar"][0]
    assert case["scores"]["moved"]["similar"][0] == pytest.approx(float(ue2[4] @ ie[j]), rel=1e-6)
    assert case["delta"]["original"] == 0.0 and case["delta"]["same"] == 0.0
    want = np.mean([float((ue2[4] - ue[4]) @ ie[j]) for j in case["similar"]])
    assert case["delta"]["moved"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(UnlearnRecError):
        studies.case_study((ue, ie), {}, user=99, item=0)


def test_pick_case_rules():
    ue, ie = _emb()
    edges = Interactions(np.array([0, 1, 2]), np.array([3, 4, 5]), 30, 20)
    s = [float(ue[u] @ ie[i]) for u, i in zip(edges.users, edges.items, strict=True)]
    u, i = studies.pick_case((ue, ie), edges, "highest")
    k = int(np.argmax(s))
    assert (u, i) == (int(edges.users[k]), int(edges.items[k]))
    assert studies.pick_case((ue, ie), edges, "first") == (0, 3)
    with pytest.raises(UnlearnRecError):
        studies.pick_case((ue, ie), edges, "nope")
    with pytest.raises(UnlearnRecError):
        studies.pick_case((ue, ie), Interactions.empty(30, 20))


def test_similar_item_shift_matches_case_studies():
    ue, ie = _emb(seed=4)
    ue2 = ue * 0.5
    edges = Interactions(np.array([0, 2, 5]), np.array([1, 1, 9]), 30, 20)
    shift = studies.similar_item_shift((ue, ie), {"half": (ue2, ie)}, edges, k=3)
    cases = [
        studies.case_study((ue, ie), {"half": (ue2, ie)}, int(u), int(i), k=3)
        for u, i in zip(edges.users, edges.items, strict=True)
    ]
    sim_mean = np.mean([np.mean(c["scores"]["half"]["similar"]) for c in cases])
    assert shift["half"]["similar_mean"] == pytest.approx(sim_mean, rel=1e-9)
    assert shift["half"]["similar_delta"] == pytest.approx(
        np.mean([c["delta"]["half"] for c in cases]), rel=1e-9
    )
    assert shift["original"]["forgotten_delta"] == 0.0
    assert shift["half"]["forgotten_mean"] == pytest.approx(
        0.5 * shift["original"]["forgotten_mean"], rel=1e-9
    )


# ----------------------------------------------------------------------------- efficiency
def _records():
    recs = []
    for ds, n in (("small", 1_000), ("big", 100_000)):
        for seed in (0, 1):
            recs.append(
                dict(
                    dataset=ds,
                    backbone="lightgcn",
                    method="retrain",
                    seconds=n / 100 + seed,
                    peak_memory_mb=n / 1000,
                    train_edges=n,
                )
            )
            recs.append(
                dict(
                    dataset=ds,
                    backbone="lightgcn",
                    method="unlearnrec",
                    seconds=0.5,
                    peak_memory_mb=1.0,
                    train_edges=n,
                    prepare_seconds=3.0,
                )
            )
    recs.append(dict(dataset="big", backbone="lightgcn", method="broken", seconds=None))
    return recs


def test_efficiency_rows():
    rows = studies.efficiency_rows(_records())
    assert [(r["dataset"], r["method"]) for r in rows] == [
        ("small", "retrain"),
        ("small", "unlearnrec"),
        ("big", "retrain"),
        ("big", "unlearnrec"),
    ]
    small_rt = rows[0]
    assert small_rt["n"] == 2 and small_rt["seconds"] == pytest.approx(10.5)
    assert small_rt["seconds_std"] == pytest.approx(0.5) and small_rt["speedup"] == pytest.approx(1.0)
    assert rows[3]["speedup"] == pytest.approx(1000.5 / 0.5)
    assert rows[3]["prepare_seconds"] == 3.0 and rows[2]["prepare_seconds"] is None
    assert rows[2]["peak_memory_mb"] == pytest.approx(100.0)
    # grouping by a label key, with the reference found through the registered method name
    recs = [{**r, "label": r["method"].title()} for r in _records()]
    rows = studies.efficiency_rows(recs, keys=("dataset", "label"), method_key="label")
    assert {r["label"]: r["speedup"] for r in rows if r["dataset"] == "small"}["Unlearnrec"] == pytest.approx(
        21.0
    )
    with pytest.raises(UnlearnRecError):
        studies.efficiency_rows(recs, keys=("dataset",))


def test_growth_exponent():
    sizes = [1e3, 1e4, 1e5]
    assert studies.growth_exponent(sizes, [3 * s**1.5 for s in sizes]) == pytest.approx(1.5)
    assert studies.growth_exponent([10, 10], [1, 2]) is None


# ----------------------------------------------------------------------------- the driver, end to end
@pytest.mark.slow
def test_run_studies_on_a_finished_grid(tiny_dir, tmp_path):
    """Runner grid on the tiny graph, then the studies from its caches, then the HTML page."""
    from unlearnrec.experiments.report.html import render_html
    from unlearnrec.experiments.results import load_studies
    from unlearnrec.experiments.runner import run_experiment

    cfg = {
        "name": "tiny",
        "datasets": [str(tiny_dir)],
        "backbones": ["lightgcn"],
        "ratios": [0.5],
        "train": {"epochs": 4, "batch_size": 256, "lr": 0.01, "eval_every": 2},
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
    out = tmp_path / "out"
    recs = run_experiment(cfg, out)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    paths = study_runner.run_studies(cfg, out, k=3)
    assert sorted(p.name.split("-")[0] for p in paths) == ["case", "scores", "shift"]
    items = {s["kind"]: s["data"] for s in load_studies(out)}
    assert set(items["scores"]["models"]) == {"original", "Retrain", "UnlearnRec(0)"}
    assert items["scores"]["reference"] == "Retrain"
    assert items["scores"]["models"]["Retrain"]["forgotten"]["w1_to_ref"] == 0.0
    assert len(items["case"]["similar"]) == 3 and set(items["shift"]) == {
        "original",
        "Retrain",
        "UnlearnRec(0)",
    }
    page = render_html(out)
    assert "Score distributions" in page and "Pre-training curve" in page and "UnlearnRec(0)" in page
