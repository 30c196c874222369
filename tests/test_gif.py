"""GIF: the Unlearner contract, its config, and the registry entry."""

from __future__ import annotations

import pytest

from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.gif import GIF, GIFConfig
from unlearnrec.unlearn.registry import build_method

from .contracts import UnlearnerContract
from .test_influence import UnlearnerChecks, some_request, tiny_trained


class TestGIFContract(UnlearnerChecks):
    def make(self, seed: int = 0):
        return GIF(
            GIFConfig(iterations=30, hessian_edges=200, batch_size=128, lanczos_iterations=10), seed=seed
        )


class TestGIFSharedContract(UnlearnerContract):
    def make_method(self, seed: int = 0):
        return GIF(
            GIFConfig(iterations=30, hessian_edges=500, batch_size=256, lanczos_iterations=10), seed=seed
        )


def test_registry_builds_gif_and_rejects_bad_config():
    m = build_method("gif", {"iterations": 5, "damping": 0.1}, seed=3)
    assert isinstance(m, GIF) and m.config.iterations == 5 and m.seed == 3
    with pytest.raises(ConfigError):
        build_method("gif", {"iterationz": 5})
    with pytest.raises(ConfigError):
        GIFConfig(scale=0.9)
    with pytest.raises(ConfigError):
        GIFConfig(hessian="dense")


def test_gif_info_reports_the_solve():
    train, model = tiny_trained()
    res = GIF(GIFConfig(iterations=20, lanczos_iterations=10)).forget(model, train, some_request(train))
    info = res.info
    assert info["solver"] == "neumann" and info["iterations"] == 20
    assert len(info["residual_norms"]) == 21 and info["final_residual"] < 1.0  # the series made progress
    assert info["affected_edges"] >= len(some_request(train)) and info["hops"] == 2
    assert info["lambda_max"] > 0 and info["update_norm"] > 0
    assert info["damping_abs"] >= 0.01 * info["lambda_max"]


def test_gif_more_iterations_lower_residual():
    train, model = tiny_trained()
    req = some_request(train, seed=2)
    short = GIF(GIFConfig(iterations=3, lanczos_iterations=10)).forget(model, train, req).info
    long = GIF(GIFConfig(iterations=60, lanczos_iterations=10)).forget(model, train, req).info
    assert long["final_residual"] < short["final_residual"]
