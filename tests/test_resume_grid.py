"""A grid stopped half-way through a training resumes it: the store's models (``partial/``), a Retrain
cell's training and a partition baseline's shards (``scratch/<cell>/``), with the work reused counted in
the seconds reported and ``--status`` saying what will be resumed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.contracts import tiny_trained_model
from unlearnrec.experiments import store as store_mod
from unlearnrec.experiments.runner import load_config, read_results, run_experiment
from unlearnrec.experiments.status import status
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn import retrain as retrain_mod
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.registry import build_method
from unlearnrec.unlearn.sharded import pool

from .conftest import run_cli
from .test_runner import grid


def _stopping(module, monkeypatch, call: int, epoch: int):
    """Make ``module.fit``'s ``call``-th call (from 1) stop after ``epoch`` epochs, as a Ctrl-C would."""
    real, calls = module.fit, []

    def fit(*a, **k):
        calls.append(1)
        if len(calls) == call:

            def stop(row):
                if row["epoch"] == epoch + 1:
                    raise KeyboardInterrupt

            k = {**k, "on_epoch": stop}
        return real(*a, **k)

    monkeypatch.setattr(module, "fit", fit)


def _grid(tiny_dir, methods):
    g = grid(tiny_dir, methods)
    g["train"] = {**g["train"], "epochs": 6}
    return g


def test_a_model_stopped_half_way_is_resumed_to_the_same_model(tiny_dir, tmp_path, monkeypatch, capsys):
    whole = run_experiment(_grid(tiny_dir, ["ceu"]), tmp_path / "whole", cache_dir=tmp_path / "c1")

    cache = tmp_path / "c2"
    _stopping(store_mod, monkeypatch, call=2, epoch=4)  # the attacked model (after the clean one)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_grid(tiny_dir, ["ceu"]), tmp_path / "out", cache_dir=cache, checkpoint_every=0)
    partial = list((cache / "partial").iterdir())
    assert len(partial) == 1 and json.loads((partial[0] / "meta.json").read_text())["loop"]["epoch"] == 4

    toml = tmp_path / "grid.toml"
    toml.write_text(_toml(_grid(tiny_dir, ["ceu"])))
    args = ["experiment", str(toml), "--out", str(tmp_path / "out"), "--cache", str(cache), "--status"]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "(resumes: model after epoch 4)" in out

    monkeypatch.undo()
    again = run_experiment(_grid(tiny_dir, ["ceu"]), tmp_path / "out", cache_dir=cache)
    assert again[0]["status"] == "ok"
    assert not (cache / "partial" / partial[0].name).exists()  # removed once the model is stored
    a, b = (TrainedModel.load(c / "models" / partial[0].name) for c in (tmp_path / "c1", cache))
    assert b.meta["resumed_after_epoch"] == 4 and "resumed_after_epoch" not in a.meta
    for x, y in zip(a.embeddings(), b.embeddings(), strict=True):
        assert torch.equal(x, y)
    assert again[0]["metrics"]["recall@20"] == whole[0]["metrics"]["recall@20"]


def test_a_retrain_cell_stopped_half_way_resumes_and_counts_its_earlier_seconds(
    tiny_dir, tmp_path, monkeypatch
):
    whole = run_experiment(_grid(tiny_dir, ["retrain"]), tmp_path / "whole", cache_dir=tmp_path / "c1")
    cache = tmp_path / "c2"
    _stopping(retrain_mod, monkeypatch, call=1, epoch=3)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_grid(tiny_dir, ["retrain"]), tmp_path / "out", cache_dir=cache, checkpoint_every=0)
    [cell] = list((cache / "scratch").iterdir())
    saved = json.loads((cell / "retrain" / "meta.json").read_text())["loop"]
    assert saved["epoch"] == 3
    [pending] = status(load_config(_grid(tiny_dir, ["retrain"])), tmp_path / "out", cache)
    assert pending.resumes == "Retrain after epoch 3"
    monkeypatch.undo()
    [rec] = run_experiment(_grid(tiny_dir, ["retrain"]), tmp_path / "out", cache_dir=cache)
    assert rec["info"]["resumed_seconds"] == pytest.approx(saved["seconds"])
    assert rec["seconds"] >= saved["seconds"]
    assert rec["metrics"]["recall@20"] == whole[0]["metrics"]["recall@20"]
    assert rec["metrics"]["mi_ng"] == whole[0]["metrics"]["mi_ng"]
    assert not cell.exists()  # the record is written: nothing left to resume
    assert [r["status"] for r in read_results(tmp_path / "out")] == ["ok"]


def test_a_cell_that_fails_after_its_training_keeps_it_for_the_next_run(tiny_dir, tmp_path, monkeypatch):
    real, steps = retrain_mod.fit, []

    def trains_then_fails(*a, **k):
        real(*a, **{**k, "on_step": lambda s, t: steps.append(s)})
        raise RuntimeError("disk full")

    monkeypatch.setattr(retrain_mod, "fit", trains_then_fails)
    [rec] = run_experiment(_grid(tiny_dir, ["retrain"]), tmp_path / "out", cache_dir=tmp_path / "c")
    assert rec["status"] == "error" and "disk full" in rec["error"]
    [cell] = list((tmp_path / "c" / "scratch").iterdir())
    assert json.loads((cell / "retrain" / "meta.json").read_text())["loop"]["done"] is True
    monkeypatch.setattr(
        retrain_mod, "fit", lambda *a, **k: real(*a, **{**k, "on_step": lambda s, t: steps.append(s)})
    )
    trained = len(steps)
    [rec] = run_experiment(_grid(tiny_dir, ["retrain"]), tmp_path / "out", cache_dir=tmp_path / "c")
    assert rec["status"] == "ok" and len(steps) == trained  # the finished training was not run again
    assert not cell.exists()


class Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["grapheraser", "receraser"])
def test_shards_trained_before_a_stop_are_not_trained_again(tmp_path, monkeypatch, method):
    model = tiny_trained_model()
    config = {"num_shards": 4, "shard_epochs": 3, "agg_epochs": 2, "batch_size": 128}
    ref = build_method(method, config, seed=0)
    ref.prepare(model, model.train)

    real, trained = pool.train_one_shard, []

    def counted(job):
        if len(trained) == 2 and stop:
            raise Stop
        trained.append(job.shard)
        return real(job)

    monkeypatch.setattr(pool, "train_one_shard", counted)
    stop = True
    first = build_method(method, config, seed=0).set_scratch(tmp_path / "cell")
    with pytest.raises(Stop):
        first.prepare(model, model.train)
    assert len(list((tmp_path / "cell" / "shards").glob("shard-*.npz"))) == 2

    stop, trained[:] = False, []
    again = build_method(method, config, seed=0).set_scratch(tmp_path / "cell")
    again.prepare(model, model.train)
    assert len(trained) == 2  # only the shards the stopped call had not finished
    assert again.take_carried() > 0  # the reused shards' training seconds
    for a, b in zip(ref._shard_emb, again._shard_emb, strict=True):
        assert np.array_equal(a, b)

    # forgetting retrains the affected shards: on other edges, so under other keys
    users, items = model.train.users[:5], model.train.items[:5]
    request = Request.of_edges(model.train, users, items)
    res = again.forget(model, model.train, request)
    assert "resumed_seconds" not in res.info
    trained[:] = []
    repeat = build_method(method, config, seed=0).set_scratch(tmp_path / "cell")
    repeat.prepare(model, model.train)
    res2 = repeat.forget(model, model.train, request)  # every shard it needs is kept: none trained
    assert trained == [] and res2.info["resumed_seconds"] > 0
    for x, y in zip(res.model.embeddings(), res2.model.embeddings(), strict=True):
        assert torch.equal(x, y)


def test_a_damaged_shard_is_trained_again(tmp_path, caplog):
    model = tiny_trained_model()
    config = {"num_shards": 2, "shard_epochs": 2, "agg_epochs": 1, "batch_size": 128}
    first = build_method("grapheraser", config, seed=0).set_scratch(tmp_path / "cell")
    first.prepare(model, model.train)
    files = sorted((tmp_path / "cell" / "shards").glob("shard-*.npz"))
    files[0].write_bytes(b"torn")
    again = build_method("grapheraser", config, seed=0).set_scratch(tmp_path / "cell")
    again.prepare(model, model.train)
    assert "training it again" in caplog.text
    for a, b in zip(first._shard_emb, again._shard_emb, strict=True):
        assert np.array_equal(a, b)


def _toml(d: dict, prefix: str = "") -> str:
    """The grid dict as TOML (scalars, lists of scalars and tables: all the grids above use)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{prefix}{k}]")
            lines.append(_toml(v, f"{prefix}{k}."))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("pretrain_request", ["random", "mixed"])
def test_pre_training_stopped_half_way_resumes_to_the_same_encoder(tmp_path, pretrain_request):
    from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

    model = tiny_trained_model(epochs=4)
    config = UnlearnRecConfig(
        epochs=5, batch_size=256, steps_per_epoch=3, lr=1e-2, pretrain_request=pretrain_request
    )
    ref = UnlearnRec(config, seed=0)
    ref.prepare(model, model.train)

    def stop(epoch, step, steps, terms):
        if epoch == 4:
            raise Stop

    first = UnlearnRec(config, seed=0).set_scratch(tmp_path / "cell", every=0)
    first.on_step = stop
    with pytest.raises(Stop):
        first.prepare(model, model.train)
    again = UnlearnRec(config, seed=0).set_scratch(tmp_path / "cell", every=0)
    again.prepare(model, model.train)
    for k, v in ref.encoder.state_dict().items():
        assert torch.equal(v, again.encoder.state_dict()[k]), k
    assert [row.get("resumed") for row in again.history] == [1, 1, 1, None, None]
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "resumed")} for row in again.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in ref.history]
    assert again.take_carried() == pytest.approx(again.history[2]["seconds"])

    # finished: a third call trains nothing and carries the whole run's seconds
    third = UnlearnRec(config, seed=0).set_scratch(tmp_path / "cell", every=0)
    third.on_step = stop  # would raise if any epoch ran
    third.prepare(model, model.train)
    assert all(row["resumed"] == 1 for row in third.history)
    assert third.take_carried() == pytest.approx(third.history[-1]["seconds"])


def test_pre_training_with_an_epoch_callback_is_not_resumed(tmp_path):
    from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

    model = tiny_trained_model(epochs=4)
    m = UnlearnRec(UnlearnRecConfig(epochs=2, batch_size=256, steps_per_epoch=2), seed=0)
    m.set_scratch(tmp_path / "cell", every=0)
    seen = []
    m.on_epoch = lambda epoch, state, row: seen.append(epoch)
    m.prepare(model, model.train)
    assert seen == [1, 2] and not (tmp_path / "cell").exists()  # its callbacks could not be replayed


def _interrupting(monkeypatch, epoch: int):
    """``loop.fit`` stopped by a Ctrl-C at the end of ``epoch`` (after the command's own epoch callback)."""
    from unlearnrec.train import loop

    real = loop.fit

    def fit(*a, **k):
        shown = k.get("on_epoch")

        def on_epoch(row):
            if shown is not None:
                shown(row)
            if row["epoch"] == epoch:
                raise KeyboardInterrupt

        return real(*a, **{**k, "on_epoch": on_epoch})

    monkeypatch.setattr(loop, "fit", fit)


def test_the_train_command_stopped_half_way_resumes_when_run_again(tiny_dir, tmp_path, capsys, monkeypatch):
    from unlearnrec.cli.common import training_state

    args = [
        "train",
        "--dataset",
        tiny_dir,
        "--epochs",
        8,
        "--dim",
        8,
        "--lr",
        0.05,
        "--checkpoint-every",
        0,
        "-q",
    ]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "whole")
    assert code == 0, err
    assert not training_state(tmp_path / "whole").exists()  # removed once the model is saved

    _interrupting(monkeypatch, epoch=5)
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "model")
    assert code == 130 and f"kept in {training_state(tmp_path / 'model')}" in err
    assert not (tmp_path / "model").exists()  # nothing half-written
    monkeypatch.undo()
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "model", "--json")
    assert code == 0, err
    assert json.loads(out)["resumed_after_epoch"] == 4
    assert not training_state(tmp_path / "model").exists()
    a, b = TrainedModel.load(tmp_path / "whole"), TrainedModel.load(tmp_path / "model")
    for x, y in zip(a.embeddings(), b.embeddings(), strict=True):
        assert torch.equal(x, y)


def test_the_pretrain_command_stopped_half_way_resumes_when_run_again(
    cli_trained, tmp_path, capsys, monkeypatch
):
    from safetensors.torch import load_file

    from unlearnrec.cli.common import training_state
    from unlearnrec.unlearn.unlearnrec import pretrain as pretrain_mod

    model, _ = cli_trained
    args = ["pretrain", "--model", model, "--epochs", 4, "--batch-size", 128, "--checkpoint-every", 0, "-q"]
    assert run_cli(capsys, *args, "--out", tmp_path / "whole")[0] == 0
    real = pretrain_mod.pretrain

    def stopping(*a, **k):
        shown = k["on_step"]

        def on_step(epoch, step, steps, terms):
            shown(epoch, step, steps, terms)
            if epoch == 3:
                raise KeyboardInterrupt

        return real(*a, **{**k, "on_step": on_step})

    monkeypatch.setattr("unlearnrec.unlearn.unlearnrec.method.pretrain", stopping)
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "ie")
    assert code == 130 and "run the same command to resume" in err
    monkeypatch.undo()
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "ie", "--json")
    assert code == 0, err
    assert [row.get("resumed") for row in json.loads(out)["history"]] == [1, 1, None, None]
    assert not training_state(tmp_path / "ie").exists()
    a, b = (load_file(str(d / "tensors.safetensors")) for d in (tmp_path / "whole", tmp_path / "ie"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_status_says_what_each_pending_cell_resumes(tiny_dir, tmp_path):
    from unlearnrec.experiments.grid import cell_hash, groups

    cfg = load_config(_grid(tiny_dir, ["grapheraser", "unlearnrec"]))
    [group] = groups(cfg)
    ge, ours = cfg.methods
    cache = tmp_path / "cache"
    for n in range(3):
        (cache / "scratch" / cell_hash(group, ge) / "shards").mkdir(parents=True, exist_ok=True)
        (cache / "scratch" / cell_hash(group, ge) / "shards" / f"shard-{n}.npz").write_bytes(b"")
    state = cache / "scratch" / cell_hash(group, ours) / "pretrain"
    state.mkdir(parents=True)
    (state / "meta.json").write_text(json.dumps({"loop": {"epoch": 6, "seconds": 60.0, "done": False}}))
    (cache / "partial" / group.clean_hash).mkdir(parents=True)
    (cache / "partial" / group.clean_hash / "meta.json").write_text(json.dumps({"loop": {"epoch": 2}}))
    said = {c.method: c.resumes for c in status(cfg, tmp_path / "out", cache)}
    assert said == {
        "grapheraser": "clean model after epoch 2; 3 shards trained",
        "unlearnrec": "pre-training after epoch 6",
    }
