"""CEU: the Unlearner contract, certification noise, its config, and the registry entry."""

from __future__ import annotations

import pytest
import torch

from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.ceu import CEU, CEUConfig
from unlearnrec.unlearn.registry import build_method

from .contracts import UnlearnerContract
from .test_influence import UnlearnerChecks, some_request, tiny_trained


class TestCEUContract(UnlearnerChecks):
    def make(self, seed: int = 0):
        return CEU(
            CEUConfig(iterations=30, hessian_edges=200, batch_size=128, lanczos_iterations=10), seed=seed
        )


class TestCEUSharedContract(UnlearnerContract):
    def make_method(self, seed: int = 0):
        return CEU(
            CEUConfig(iterations=30, hessian_edges=500, batch_size=256, lanczos_iterations=10), seed=seed
        )


def test_registry_builds_ceu_and_rejects_bad_config():
    m = build_method("ceu", {"iterations": 7, "noise_std": 0.01}, seed=2)
    assert isinstance(m, CEU) and m.config.noise_std == 0.01 and m.seed == 2
    with pytest.raises(ConfigError):
        build_method("ceu", {"noise": 0.1})
    with pytest.raises(ConfigError):
        CEUConfig(noise_std=-1.0)


def test_ceu_cg_converges_and_reports():
    train, model = tiny_trained()
    res = CEU(CEUConfig(iterations=100, tol=1e-4, lanczos_iterations=10)).forget(
        model, train, some_request(train)
    )
    info = res.info
    assert info["solver"] == "cg" and info["converged"] and info["final_residual"] <= 1e-4
    assert 0 < info["iterations"] < 100 and info["forgotten_edges"] == 4
    assert info["restarts"] <= 3
    assert info["lambda_min"] <= info["lambda_max"]


def test_certification_noise():
    train, model = tiny_trained()
    req = some_request(train)
    plain = CEU(CEUConfig(lanczos_iterations=10)).forget(model, train, req).model.backbone.e0
    noisy = [
        CEU(CEUConfig(lanczos_iterations=10, noise_std=0.05), seed=4)
        .forget(model, train, req)
        .model.backbone.e0
        for _ in range(2)
    ]
    assert torch.equal(noisy[0], noisy[1])  # the noise is seeded
    diff = noisy[0] - plain
    assert diff.std().item() == pytest.approx(0.05, rel=0.15)
    assert abs(diff.mean().item()) < 0.02
