"""Data-parallel training (``unlearnrec.train.distributed``): two gloo processes on 127.0.0.1 take the
same steps as one process with the same global batch, for every backbone and for the encoder's
pre-training; and the parts of a batch's loss add up to the whole batch's loss and gradient."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unlearnrec.backbones import BACKBONES, build_backbone
from unlearnrec.data.graph import Graph
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.data.synthetic import planted_clusters
from unlearnrec.train import distributed
from unlearnrec.train.loop import TrainConfig, fit
from unlearnrec.train.losses import info_nce, preserving_loss, unlearning_loss

STEPS = 5
TRAIN_BATCH = 67  # 320 edges: 5 steps, the last one short (52), parts of 33/34 and 26/26
PRETRAIN_BATCH = 53  # 256 residual edges: 5 steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny():
    inter = planted_clusters(60, 40, clusters=4, seed=0)
    return inter, Graph.from_interactions(inter)


def _cases(trained) -> dict:
    """Per case: the first STEPS steps' loss terms and the trained parameters after them."""
    from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

    torch.set_num_threads(1)
    out: dict = {}
    _, graph = _tiny()
    for name in sorted(BACKBONES):
        model = build_backbone(name, 60, 40, {"dim": 8}, generator=torch.Generator().manual_seed(0))
        steps: list[dict] = []
        cfg = TrainConfig(epochs=1, batch_size=TRAIN_BATCH, lr=0.05, seed=0, patience=0)
        fit(model, graph, cfg, on_step=lambda s, t, steps=steps: steps.append(t))
        out[name] = (steps, {k: v.detach().clone() for k, v in model.state_dict().items()})
    # validation on rank 0, broadcast: the same early stop and best state on every rank
    inter, graph = _tiny()
    rng = np.random.default_rng(1)
    held = rng.random(len(inter)) < 0.15
    from unlearnrec.data.interactions import Interactions

    fit_edges = Interactions(inter.users[~held], inter.items[~held], 60, 40)
    val = Interactions(inter.users[held], inter.items[held], 60, 40)
    model = build_backbone("lightgcn", 60, 40, {"dim": 8}, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=6, batch_size=TRAIN_BATCH, lr=0.2, seed=0, eval_every=1, patience=2)
    res = fit(model, Graph.from_interactions(fit_edges), cfg, val=val)
    curve = [h["val_recall@20"] for h in res.history]
    out["early_stop"] = ((res.best_epoch, res.epochs_run, curve), {"e0": model.e0.detach().clone()})
    # the partition baselines' shards: dealt out to the ranks (3 shards on 2 ranks), all gathered
    from unlearnrec.unlearn.sharded.pool import ShardJob, train_shards

    jobs = [
        ShardJob(k, inter.users[k::3], inter.items[k::3], 60, 40, "lightgcn", {"dim": 8}, 2, 0.05, 64, k)
        for k in range(3)
    ]
    shards = train_shards(jobs)
    out["shards"] = ((), {f"shard{k}": torch.from_numpy(e) for k, e in enumerate(shards)})
    # the encoder's pre-training, every term on (L_model with SGL's InfoNCE, L_u, L_p, L_c)
    cfg = UnlearnRecConfig(epochs=1, batch_size=PRETRAIN_BATCH, steps_per_epoch=STEPS, lr=1e-2)
    method = UnlearnRec(cfg, seed=0)
    steps = []
    method.on_step = lambda e, s, n, t: steps.append(t)
    method.prepare(trained, trained.train)
    out["pretrain"] = (steps, {"h0": method.encoder.h0.detach().clone(), "eta": method.encoder.eta.detach()})
    return out


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    from tests.contracts import tiny_trained_model

    torch.set_num_threads(1)
    trained = tiny_trained_model("sgl", epochs=2, dim=8)  # before joining the group: trained alone
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(_cases(trained), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_take_the_same_steps_as_one(tmp_path):
    from tests.contracts import tiny_trained_model

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _cases(tiny_trained_model("sgl", epochs=2, dim=8))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert set(single) == set(BACKBONES) | {"pretrain", "early_stop", "shards"}
    _, shards = single.pop("shards")
    for r in ranks:
        for k, v in shards.items():  # a shard trained on another rank equals the one trained here
            torch.testing.assert_close(r["shards"][1][k], v, rtol=0, atol=1e-6)
    assert not torch.equal(shards["shard0"], shards["shard1"])
    (best, ran, curve), want = single.pop("early_stop")
    for r in ranks:
        (got_best, got_ran, got_curve), got = r["early_stop"]
        assert (got_best, got_ran) == (best, ran)
        assert got_curve == pytest.approx(curve, abs=1e-6)
        torch.testing.assert_close(got["e0"], want["e0"], rtol=0, atol=1e-5)
    for case, (steps, params) in single.items():
        assert len(steps) == STEPS, case
        for got_steps, got_params in (r[case] for r in ranks):
            assert len(got_steps) == STEPS, case
            for want, got in zip(steps, got_steps, strict=True):
                assert set(got) == set(want), case
                for k in want:  # every term of every step: the loss of the whole global batch
                    assert got[k] == pytest.approx(want[k], abs=1e-5), (case, k)
            for k, v in params.items():
                torch.testing.assert_close(got_params[k], v, rtol=0, atol=1e-5, msg=f"{case} {k}")
        # and the parameters moved (the comparison is not between two untouched copies)
        if case == "pretrain":
            moved = params["h0"]  # H⁰ starts at zero
        else:
            start = build_backbone(case, 60, 40, {"dim": 8}, generator=torch.Generator().manual_seed(0))
            moved = params["e0"] - start.e0.detach()
        assert moved.abs().max() > 1e-3, case
    # the two ranks hold bit-identical models (one all-reduce result, the same Adam step)
    for case in [*single, "early_stop"]:
        for k, v in ranks[0][case][1].items():
            assert torch.equal(v, ranks[1][case][1][k]), (case, k)


# --------------------------------------------------------------------- parts add up (one process)
@pytest.mark.parametrize("world", [2, 3, 7])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_parts_of_a_batch_add_up_to_the_whole(name, world):
    inter, graph = _tiny()
    model = build_backbone(name, 60, 40, {"dim": 8}, generator=torch.Generator().manual_seed(0))
    batch = next(bpr_batches(inter, 100, np.random.default_rng(0)))
    model.on_epoch_start(graph, torch.Generator().manual_seed(1))

    def loss_and_grad(b):
        terms = model.loss(graph, b, generator=torch.Generator().manual_seed(2))
        terms["total"].backward()
        g, model.e0.grad = model.e0.grad, None
        return {k: float(v.detach()) for k, v in terms.items()}, g

    whole, g_whole = loss_and_grad(batch)
    parts = [loss_and_grad(batch.parted(r, world)) for r in range(world)]
    for k in whole:
        assert sum(p[0][k] for p in parts) == pytest.approx(whole[k], rel=1e-6, abs=1e-8), k
    torch.testing.assert_close(sum(p[1] for p in parts), g_whole, rtol=1e-5, atol=1e-8)
    assert all(p[0]["total"] < whole["total"] for p in parts)  # each part is a share, not the whole


def test_partial_losses_add_up():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(11, 4, generator=g), torch.randn(11, 4, generator=g)
    cuts = [slice(0, 4), slice(4, 4), slice(4, 11)]  # an empty part included
    assert sum(float(info_nce(a, b, 0.2, anchors=s)) for s in cuts) == pytest.approx(
        float(info_nce(a, b, 0.2))
    )
    t, s = torch.randn(11, generator=g), torch.randn(11, generator=g)
    assert sum(float(preserving_loss(t, s, 0.5, rows=c)) for c in cuts) == pytest.approx(
        float(preserving_loss(t, s, 0.5))
    )
    assert sum(float(unlearning_loss(s[c], total=11)) for c in cuts) == pytest.approx(
        float(unlearning_loss(s))
    )


def test_batch_parts_cover_the_batch_once():
    inter, _ = _tiny()
    batch = next(bpr_batches(inter, 10, np.random.default_rng(0)))
    rows = [batch.parted(r, 4).rows() for r in range(4)]
    assert [(s.start, s.stop) for s in rows] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    local = torch.cat([batch.parted(r, 4).local().users for r in range(4)])
    assert torch.equal(local, batch.users)
    assert batch.local() is batch and batch.whole
    with pytest.raises(ValueError, match="part index"):
        batch.parted(4, 4)


def test_without_a_group_everything_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env("cpu") == distributed.Part(0, 1)
    assert distributed.current().is_main
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda:1") == "nccl"
    assert [distributed.share(5, r, 2) for r in range(2)] == [slice(0, 2), slice(2, 5)]
    distributed.finish()  # a no-op without a group


@pytest.mark.parametrize("argv", [["evaluate", "--model", "M"], ["experiment", "G.toml", "--out", "O"]])
def test_commands_that_are_not_parallel_refuse_torchrun(argv, monkeypatch, capsys, tmp_path):
    from .conftest import run_cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli(capsys, *[str(tmp_path / a) if a in ("M", "O") else a for a in argv])
    assert code == 2 and f"'{argv[0]}' does not run under torchrun (WORLD_SIZE=2)" in err
    assert not (tmp_path / "O").exists()


# --------------------------------------------------------------------- torchrun, end to end
GLOO_EXIT_ABORT = "terminate called without an active exception"


def test_torchrun_train_writes_one_checkpoint_from_rank_zero(tiny_dir, tmp_path):
    """``torchrun --nproc-per-node 2 -m unlearnrec train``: the saved model equals a single-process
    training's (the same global batches), written once, atomically, by rank 0."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(OMP_NUM_THREADS="1", UNLEARNREC_ALLOCATOR="system")
    args = ["train", "--dataset", str(tiny_dir), "--epochs", "3", "--dim", "8", "--lr", "0.05",
            "--batch-size", "67", "--backbone", "sgl", "--json", "-q"]  # fmt: skip
    port = _free_port()
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--nnodes", "1",
           "-m", "unlearnrec", *args, "--out", str(tmp_path / "dp")]  # fmt: skip
    p = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    for _ in range(2):
        if not (p.returncode and (GLOO_EXIT_ABORT in p.stderr or "(SIGABRT)" in p.stderr)):
            break
        # a rare abort in gloo's teardown after the work is done (about 3 runs in 45 here; cf. PyTorch
        # issue #179291; once, beside two long jobs, twice in a row): run again from a clean output rather
        # than fail on the library's exit. A real crash aborts every time and still fails.
        shutil.rmtree(tmp_path / "dp", ignore_errors=True)
        p = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count('"out"') == 1  # rank 0 reports, once
    one = subprocess.run(
        [sys.executable, "-m", "unlearnrec", *args, "--out", str(tmp_path / "single")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    from safetensors.torch import load_file

    dp = load_file(tmp_path / "dp" / "tensors.safetensors")["e0"]
    single = load_file(tmp_path / "single" / "tensors.safetensors")["e0"]
    torch.testing.assert_close(dp, single, rtol=0, atol=1e-5)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["dp", "single", "tinyset"]


@pytest.mark.realdata
def test_bench_distributed_reports_one_and_two_processes(realdata, capsys, tmp_path):
    from .conftest import load_benchmark

    bench = load_benchmark("bench_distributed")
    out = tmp_path / "rows.json"
    argv = ["--datasets", "ml-100k", "--data-dir", str(realdata), "--steps", "2", "--warmup", "1"]
    assert bench.main([*argv, "--ab-steps", "2", "--dim", "16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert sorted((r["world"], r["rank"]) for r in rows) == [(1, 0), (2, 0), (2, 1)]
    for r in rows:
        assert r["bytes"] == r["nodes"] * 16 * 4  # the N x d float32 gradient of E⁰
        assert (r["comm_s"] > 0) == (r["world"] == 2) and r["step_s"] > 0
    single = next(r for r in rows if r["world"] == 1)
    assert single["half_step_cpu_s"] > 0 and single["whole_step_cpu_s"] > 0
    table = capsys.readouterr().out
    assert table.count("| ml-100k | lightgcn |") == 2
