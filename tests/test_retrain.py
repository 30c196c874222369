"""Retrain: the contract, the recipe it reuses, and validation early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from tests.contracts import UnlearnerContract, tiny_trained_model
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.registry import build_method
from unlearnrec.unlearn.retrain import Retrain, RetrainConfig


class TestRetrainContract(UnlearnerContract):
    def make_method(self, seed: int = 0):
        return Retrain(RetrainConfig(epochs=3), seed=seed)


@pytest.fixture(scope="module")
def model():
    return tiny_trained_model(epochs=4)


def test_recipe_is_the_original_with_overrides(model):
    r = Retrain(RetrainConfig(lr=5e-3), seed=7).recipe(model)
    orig = model.meta["train_config"]
    assert r.lr == 5e-3 and r.seed == 7
    assert r.batch_size == orig["batch_size"] and r.patience == orig["patience"]
    # no validation split given: train as long as the original kept (its best epoch)
    assert r.epochs == model.meta["best_epoch"] == 4


def test_recipe_keeps_max_epochs_with_validation(model):
    m = Retrain(RetrainConfig(), seed=0).set_validation(model.train.subset(np.arange(5)))
    assert m.recipe(model).epochs == model.meta["train_config"]["epochs"]


def test_registry_builds_retrain_and_rejects_unknown_keys():
    m = build_method("retrain", {"epochs": 2}, seed=3)
    assert isinstance(m, Retrain) and m.config.epochs == 2 and m.seed == 3
    with pytest.raises(ConfigError, match="unknown config key"):
        build_method("retrain", {"epoch": 2})


def test_retrain_uses_validation_for_early_stopping(model):
    from unlearnrec.data.synthetic import planted_clusters

    train = model.train
    req = Request.of_edges(train, train.users[:5], train.items[:5])
    other = planted_clusters(60, 40, clusters=4, seed=5)
    val = other.subset(~train.contains(other.users, other.items))
    assert len(val) > 0
    m = Retrain(RetrainConfig(epochs=6, eval_every=1, patience=1), seed=0).set_validation(val)
    res = m.forget(model, train, req)
    assert res.info["early_stopping"] is True
    assert 1 <= res.info["best_epoch"] <= res.info["epochs_run"] <= 6
    assert res.model.meta["train_config"]["epochs"] == 6
    assert res.model.meta["lineage"][-1]["method"] == "retrain"


def test_retrain_forgets_whole_user(model):
    req = Request.of_users(model.train, [3])
    res = Retrain(RetrainConfig(epochs=1), seed=0).forget(model, model.train, req)
    assert 3 in res.model.forgotten_users
    assert len(res.model.train.of_users([3])) == 0
    assert float(res.model.backbone.e0[3].detach().abs().sum()) == 0.0


def test_bad_validation_space_is_an_error(model):
    from unlearnrec.data.interactions import Interactions

    m = Retrain(RetrainConfig(epochs=1)).set_validation(Interactions.from_pairs([0], [0], 5, 5))
    req = Request.of_edges(model.train, model.train.users[:1], model.train.items[:1])
    with pytest.raises(ConfigError, match="id space"):
        m.forget(model, model.train, req)


def test_a_forgotten_model_does_not_claim_its_inputs_measurements(model):
    """The input's test metrics and training time describe the input: a retrained model records its
    own, and a model forgotten by a method that trains nothing records none."""
    from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

    m = model.derive(model.backbone, meta={**model.meta, "metrics": {"test": {"recall@20": 0.5}}})
    m.meta["train_seconds"], m.meta["epochs_run"] = 123.0, 99
    req = Request.of_edges(m.train, m.train.users[:3], m.train.items[:3])
    res = Retrain(RetrainConfig(epochs=2), seed=0).forget(m, m.train, req)
    assert "metrics" not in res.model.meta and res.model.meta["epochs_run"] == 2
    assert res.model.meta["train_seconds"] != 123.0 and res.model.meta["train_config"]["epochs"] == 2
    ours = UnlearnRec(UnlearnRecConfig(epochs=0), seed=0)
    ours.prepare(m, m.train)
    out = ours.forget(m, m.train, req).model
    assert not {"metrics", "train_seconds", "epochs_run"} & set(out.meta)
    assert out.meta["train_config"] == m.meta["train_config"]  # the recipe carries over
