"""Issue 21's pre-training-length study: the selection rules (pure, known answers) and one study
on a tiny grid (a grid cell reproduced exactly, resume, the validation role blind to the test split)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments.grid import load_config
from unlearnrec.experiments.pretrain_select import (
    authors_gap_selection,
    authors_selection,
    checkpoint_rows,
    markdown,
    residual_reference,
    rule_a,
    rule_b,
    selections,
)
from unlearnrec.experiments.pretrain_study import PretrainStudy, StudySpec
from unlearnrec.experiments.results import read_results
from unlearnrec.experiments.runner import run_experiment
from unlearnrec.experiments.store import Store


def row(epoch: int, recall: float, mi_ng: float, k: int = 0, status: str = "ok") -> dict:
    return {
        "kind": "checkpoint",
        "status": status,
        "epoch": epoch,
        "k": k,
        "metrics": {"recall@20": recall, "ndcg@20": recall, "mi_bf": 2 * mi_ng, "mi_ng": mi_ng, "auc": 0.5},
        "forget_seconds": 0.1,
        "pretrain_seconds": 10.0 * epoch,
    }


# V's rows: epoch 0 is the residual graph (recall 0.200); MI-NG grows, recall falls with epochs
V = [
    row(0, 0.200, 0.70),
    row(1, 0.199, 0.80),
    row(2, 0.197, 0.95),
    row(5, 0.193, 1.10),
    row(10, 0.189, 1.40),
    row(20, 0.185, 1.60),
    row(30, 0.186, 1.70),
    row(10, 0.300, 5.00, k=1),  # another k: never mixed in
    row(15, 0.999, 9.99, status="error"),  # a failed row: never a candidate
]


def test_rule_a_best_recall_among_checkpoints_that_forget():
    s = rule_a(V)
    assert s.epoch == 5 and not s.fallback  # MI-NG > 1 from epoch 5; 0.193 is the best recall there
    assert rule_a(V, k=1).epoch == 10


def test_rule_a_falls_back_to_the_highest_mi_ng():
    s = rule_a([row(1, 0.20, 0.6), row(2, 0.19, 0.9), row(5, 0.18, 0.8)])
    assert s.epoch == 2 and s.fallback


def test_rule_b_most_forgetting_within_95_percent_of_the_residual_graph():
    # 95% of 0.200 = 0.190: epochs 1..5 keep it, 10 (0.189) does not; the highest MI-NG kept is epoch 5
    s = rule_b(V, reference_recall=0.200)
    assert s.epoch == 5 and not s.fallback
    assert rule_b(V, reference_recall=0.190).epoch == 30  # 0.1805 bar: all kept, MI-NG 1.70 wins
    fb = rule_b(V, reference_recall=0.300)
    assert fb.epoch == 1 and fb.fallback  # none kept: the best recall


def test_ties_go_to_the_earlier_checkpoint_and_epoch_0_is_never_selected():
    rows = [row(0, 0.5, 9.0), row(1, 0.2, 1.5), row(2, 0.2, 1.5)]
    assert rule_a(rows).epoch == 1
    assert rule_b(rows, 0.2).epoch == 1
    assert authors_selection(rows).epoch == 1 and authors_gap_selection(rows).epoch == 1
    assert residual_reference(rows)["epoch"] == 0
    none = [rule_a([row(0, 0.5, 9.0)]), rule_b([], 0.2)]
    assert [(s.row, s.fallback) for s in none] == [(None, False), (None, False)]


def test_selections_apply_v_epochs_to_e_and_add_the_authors_reference():
    e = [row(0, 0.22, 0.7), row(5, 0.20, 1.2), row(10, 0.19, 1.5), row(30, 0.21, 1.9)]
    sel = selections(e, checkpoint_rows(V), 0)
    assert [(s.rule, s.epoch, r["epoch"] if r else None) for s, r in sel] == [
        ("A", 5, 5),
        ("B", 5, 5),
        ("authors", 30, 30),  # the best test Recall on E itself (reference only)
        ("authors-gap", 30, 30),  # the highest MI-NG on E itself (reference only)
    ]
    e2 = [*e[:3], row(30, 0.18, 1.9)]
    assert [s.epoch for s, _ in selections(e2, checkpoint_rows(V), 0)] == [5, 5, 5, 30]
    other = {**row(5, 0.9, 9.0), "encoder_key": "other"}
    assert checkpoint_rows([*e, other])[1]["metrics"]["recall@20"] == 0.9  # the latest (5, 0) row
    mine = [{**r, "encoder_key": "mine"} for r in e]
    assert checkpoint_rows([*mine, other], "mine") == mine
    md = markdown(e, V, {"metrics": {"recall@20": 0.25}})
    assert "REFERENCE" in md and "| 5 | 0 | 0.2000 | 80.0% |" in md


# ------------------------------------------------------------------ a study on a tiny grid
ENC = {"batch_size": 256, "lr": 0.01, "steps_per_epoch": 3}


def grid(tiny_dir) -> dict:
    return {
        "name": "tiny-study",
        "datasets": [str(tiny_dir)],
        "backbones": ["lightgcn"],
        "ratios": [0.5],
        "val_ratio": 0.25,
        "methods": [
            {
                "name": "unlearnrec",
                "label": "Ours(0) 3 epochs",
                "config": {**ENC, "epochs": 3, "finetune_epochs": 0},
            }
        ],
        "train": {"epochs": 3, "batch_size": 256, "lr": 0.01, "eval_every": 1, "patience": 0},
        "model": {"lightgcn": {"dim": 8, "layers": 2}},
        "clean": {"train": {"epochs": 2}},
    }


def spec(role: str) -> StudySpec:
    return StudySpec(ENC, (0, 1, 3, 4), {0: {}, 1: {"finetune_batch_size": 512}}, role)


def test_study_reproduces_the_grid_cell_resumes_and_validation_never_reads_test(tiny_dir, tmp_path):
    cache = tmp_path / "cache"
    cfg = load_config(grid(tiny_dir))
    with pytest.raises(UnlearnRecError, match="not in the cache"):
        PretrainStudy(Store(cfg, cache), spec("evaluated"), tmp_path / "nothing")
    cell = run_experiment(cfg, cache, cache_dir=cache)[0]

    out = tmp_path / "e"
    PretrainStudy(Store(cfg, cache), spec("evaluated"), out).run()
    rows = checkpoint_rows(read_results(out))
    assert [(r["epoch"], r["k"]) for r in rows] == [(0, 0), (1, 0), (1, 1), (3, 0), (3, 1), (4, 0), (4, 1)]
    assert [r["pretrain_seconds"] > 0 for r in rows] == [False] + [True] * 6
    mine = next(r for r in rows if (r["epoch"], r["k"]) == (3, 0))
    for m in ("recall@20", "ndcg@20", "mi_bf", "mi_ng", "auc"):  # bit for bit the grid's cell
        assert mine["metrics"][m] == cell["metrics"][m], m
    assert {r["split"] for r in rows} == {"test"}

    # resume: nothing to do; a lost row is measured again from the kept encoder, no pre-training
    n = len(read_results(out))
    PretrainStudy(Store(cfg, cache), spec("evaluated"), out).run()
    assert len(read_results(out)) == n
    lines = (out / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if '-e3-k1"' not in line]
    assert len(kept) == len(lines) - 1
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    PretrainStudy(Store(cfg, cache), spec("evaluated"), out).run()
    again = checkpoint_rows(read_results(out))
    redo = next(r for r in again if (r["epoch"], r["k"]) == (3, 1))
    old = next(r for r in rows if (r["epoch"], r["k"]) == (3, 1))
    assert redo["metrics"] == old["metrics"] and redo["pretrain_seconds"] == old["pretrain_seconds"]

    # validation: ranks on val; its numbers are the same whatever the test split holds
    def v_rows(test_override):
        store = Store(cfg, cache)
        name = store.config.datasets[0]
        data = store.dataset(name)
        if test_override is not None:
            store.use_dataset(name, dataclasses.replace(data, test=test_override(data)))
        folder = tmp_path / f"v-{test_override is not None}"
        PretrainStudy(store, spec("validation"), folder).run()
        return checkpoint_rows(read_results(folder))

    def other_test(data):
        t = data.train
        return Interactions(t.users[:3], t.items[:3], t.num_users, t.num_items)

    real, fake = v_rows(None), v_rows(other_test)
    assert {r["split"] for r in real} == {"val"}
    assert [r["metrics"] for r in real] == [r["metrics"] for r in fake]
    assert real[0]["metrics"]["recall@20"] != rows[0]["metrics"]["recall@20"]  # val, not test
    assert np.isfinite([r["metrics"]["mi_ng"] for r in real]).all()


def test_spec_errors():
    with pytest.raises(UnlearnRecError, match="role"):
        StudySpec(ENC, (1,), {0: {}}, "test")
    with pytest.raises(UnlearnRecError, match="k = 0"):
        StudySpec(ENC, (1,), {1: {}}, "evaluated")
    with pytest.raises(UnlearnRecError, match="epochs"):
        StudySpec({**ENC, "epochs": 3}, (1,), {0: {}}, "evaluated")
    with pytest.raises(UnlearnRecError):
        StudySpec({**ENC, "no_such_field": 1}, (1,), {0: {}}, "evaluated")
