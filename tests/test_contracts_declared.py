"""The Unlearner contract declares its optional capabilities; the registry is a literal dict;
TrainedModel.derive makes a new model from an old one (issue 23)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.contracts import tiny_trained_model
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.base import Request, Unlearner
from unlearnrec.unlearn.registry import METHOD_NAMES, METHODS, build_method, method_class


def test_registry_is_a_dict_and_an_unknown_name_lists_the_valid_ones():
    assert (
        METHOD_NAMES == tuple(METHODS) == ("retrain", "unlearnrec", "receraser", "grapheraser", "gif", "ceu")
    )
    for name in METHOD_NAMES:
        cls, cfg = method_class(name)
        assert issubclass(cls, Unlearner) and cls.name == name
    with pytest.raises(ConfigError, match=r"unknown method 'gfi' \(valid: retrain, unlearnrec, receraser"):
        build_method("gfi")


def test_capabilities_are_declared_on_the_contract():
    kinds = {name: build_method(name) for name in METHOD_NAMES}
    assert {n for n, m in kinds.items() if m.supports_cumulative} == {"unlearnrec"}
    assert {n for n, m in kinds.items() if m.uses_validation} == {"retrain"}
    # every method accepts the validation split (a no-op where unused): callers never probe with hasattr
    assert all(m.set_validation(None) is m for m in kinds.values())
    with pytest.raises(ConfigError, match="cumulative forgetting is not supported by method 'gif'"):
        kinds["gif"].forget_cumulative(None, None, None)


def test_derive_keeps_provenance_and_shares_no_mutable_array():
    model = tiny_trained_model(epochs=1)
    model.forgotten_users = np.array([3], np.int64)
    model.meta["lineage"] = [{"method": "x"}]
    residual = model.graph.residual(Request.of_users(model.train, [3]).edges)
    new = model.derive(model.backbone, residual, meta={"note": 1})
    assert (
        new.graph is residual and new.backbone is model.backbone and new.backbone_name == model.backbone_name
    )
    assert (new.dataset, new.split) == (model.dataset, model.split) and new.split is not model.split
    assert new.forgotten_users.tolist() == [3] and new.forgotten_users is not model.forgotten_users
    new.forgotten_users[0] = 7
    assert model.forgotten_users.tolist() == [3]
    assert new.meta == {"note": 1}  # nothing inherited unless given
    assert model.derive(model.backbone).graph is model.graph
    assert model.derive(model.backbone, backbone_name="fixed").backbone_name == "fixed"


def test_moved_names_keep_their_old_import_paths():
    import unlearnrec.backbones.base as bb
    import unlearnrec.data.sampling as sampling
    import unlearnrec.losses as losses
    import unlearnrec.train.losses as train_losses

    assert bb.Batch is sampling.Batch
    assert all(getattr(train_losses, n) is getattr(losses, n) for n in train_losses.__all__)
