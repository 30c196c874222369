"""``--device`` on every command that computes: resolution, clean errors, and the same results on a GPU.

The CUDA cases run where torch sees a GPU and are skipped otherwise; each is parametrised together
with its CPU case, so the code path they exercise is tested on the CPU everywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnrec.backbones import BACKBONES, build_backbone
from unlearnrec.data.graph import Graph
from unlearnrec.errors import ConfigError
from unlearnrec.runtime import resolve_device
from unlearnrec.train.loop import TrainConfig, fit

from .conftest import run_cli

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU"))]


# ----------------------------------------------------------------------------- resolve_device
@pytest.mark.parametrize("spec", [None, "cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_specs_resolve_to_cpu(spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec, message", [("gpu", "unknown device 'gpu'"), ("meta", "unsupported device")])
def test_bad_names_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_one_clear_error(spec, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=f"device '{spec}' asked for, but torch .* sees no CUDA GPU"):
        resolve_device(spec)


def test_cuda_index_comes_from_local_rank_and_is_checked(monkeypatch):
    # what resolve_device decides, with the GPU count faked (no tensor is put on a GPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)  # torchrun: one GPU per local rank
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    with pytest.raises(ConfigError, match="no GPU 2 .this machine has 2"):
        resolve_device("cuda:2")


# ----------------------------------------------------------------------------- the commands
COMMANDS = [
    ["train", "--dataset", "TINY", "--epochs", "1", "--out", "OUT"],
    ["evaluate", "--model", "MODEL"],
    ["recommend", "--model", "MODEL", "--user", "0"],
    ["pretrain", "--model", "MODEL", "--epochs", "1", "--out", "OUT"],
    ["forget", "--model", "MODEL", "--method", "retrain", "--user", "0", "--out", "OUT"],
    ["verify", "--model", "MODEL", "--original", "MODEL", "--user", "0"],
    ["experiment", "CONFIG", "--out", "OUT"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_rejects_cuda_without_a_gpu_in_one_line(
    argv, cli_trained, tiny_dir, tmp_path, capsys, monkeypatch
):
    model, _ = cli_trained
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "grid.toml"
    config.write_text(
        f'name = "g"\ndatasets = ["{tiny_dir}"]\nbackbones = ["mf"]\n'
        '[[methods]]\nname = "retrain"\nlabel = "Retrain"\n'
    )
    subst = {"TINY": tiny_dir, "MODEL": model, "OUT": tmp_path / "out", "CONFIG": config}
    code, _, err = run_cli(capsys, *[subst.get(a, a) for a in argv], "--device", "cuda")
    assert code == 2, err
    assert "sees no CUDA GPU" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written


# ----------------------------------------------------------------------------- same code, each device
def _tiny_graph(tiny_split, device):
    train, val, _ = tiny_split
    return Graph.from_interactions(train, device=device), val


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_trains_and_evaluates_on_the_device(name, device, tiny_split):
    dev = resolve_device(device)
    graph, val = _tiny_graph(tiny_split, dev)
    model = build_backbone(
        name, graph.num_users, graph.num_items, {"dim": 8}, generator=torch.Generator().manual_seed(0)
    ).to(dev)
    res = fit(model, graph, TrainConfig(epochs=4, batch_size=64, lr=0.05, eval_every=2, seed=0), val=val)
    assert model.e0.device.type == dev.type
    ue, ie = model.embed(graph)
    assert ue.device.type == dev.type and ie.device.type == dev.type
    assert res.history[-1]["total"] < res.history[0]["total"]
    assert 0 <= res.history[-1]["val_recall@20"] <= 1


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_cuda_training_matches_cpu(name, tiny_split):
    # the same generator streams (negatives and augmentations are drawn on the CPU): the same steps
    states = []
    for dev in ("cpu", "cuda"):
        graph, _ = _tiny_graph(tiny_split, torch.device(dev))
        model = build_backbone(
            name, graph.num_users, graph.num_items, {"dim": 8}, generator=torch.Generator().manual_seed(0)
        ).to(dev)
        fit(model, graph, TrainConfig(epochs=3, batch_size=64, lr=0.01, seed=0))
        states.append(model.e0.detach().cpu())
    torch.testing.assert_close(states[0], states[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_cli_pipeline_on_the_device(device, cli_trained, tmp_path, capsys):
    """evaluate, recommend, pretrain, forget (UnlearnRec and Retrain) and verify with --device."""
    model, trained = cli_trained

    def ok(*argv):
        code, out, err = run_cli(capsys, *argv, "--device", device)
        assert code == 0, err
        return out

    ev = json.loads(ok("evaluate", "--model", model, "--json"))
    assert ev["test"]["recall@20"] == pytest.approx(trained["test"]["recall@20"], abs=1e-5)
    rec = json.loads(ok("recommend", "--model", model, "--user", 0, "-k", 5, "--json"))
    assert len(rec["items"]) == 5
    ie = tmp_path / "ie"
    ok("pretrain", "--model", model, "--epochs", 1, "--batch-size", 64, "--out", ie, "-q", "--json")
    out = tmp_path / "forgot"
    res = json.loads(
        ok("forget", "--model", model, "--encoder", ie, "--user", 3, "--out", out, "-q", "--json")
    )
    assert res["users"] == [3] and 0 <= res["test"]["recall@20"] <= 1
    code, o, err = run_cli(
        capsys, "verify", "--model", out, "--original", model, "--user", 3, "--min-mi-ng", 0,
        "--json", "--device", device,
    )  # fmt: skip
    checks = {c["name"]: c["passed"] for c in json.loads(o)["checks"]}
    assert checks["edges_absent"] and checks["nodes_erased"], err
    retrained = tmp_path / "retrained"
    ok("forget", "--model", model, "--method", "retrain", "--user", 3, "--out", retrained, "-q")
    assert (retrained / "meta.json").is_file()


@pytest.mark.parametrize("device", DEVICES)
def test_ranking_helpers_keep_tensors_on_their_device(device, tiny_split):
    from unlearnrec.eval.ranking import recommend

    train, _, _ = tiny_split
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    ue = torch.randn(train.num_users, 4, generator=g).to(dev)
    ie = torch.randn(train.num_items, 4, generator=g).to(dev)
    items, scores = recommend(ue, ie, [0, 1], 5, exclude=train, banned_items=np.array([0, 1]))
    seen = set(train.items[train.users == 0].tolist())
    assert items.shape == (2, 5) and not (set(items[0].tolist()) & (seen | {0, 1}))
    assert np.all(np.diff(scores, axis=1) <= 0)
