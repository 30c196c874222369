"""``fit(checkpoint=DIR)``: a training stopped at any epoch and called again ends bit for bit where an
uninterrupted one does; a state of another training, or a damaged one, is never resumed."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.graph import Graph
from unlearnrec.train import resume
from unlearnrec.train.loop import TrainConfig, fit

CFG = TrainConfig(epochs=8, batch_size=64, lr=0.02, eval_every=2, patience=0, lr_decay=0.9)


class Stop(Exception):
    pass


def _model(name: str, train, seed: int = 0):
    config = {"dim": 16} if name == "mf" else {"dim": 16, "layers": 2}
    return build_backbone(
        name, train.num_users, train.num_items, config, generator=torch.Generator().manual_seed(seed)
    )


def _stop_after(epoch: int):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Stop

    return on_epoch


def _stopped(train, val, graph, state, epoch: int, cfg=CFG, every: float = 0) -> None:
    """A LightGCN training with its state in ``state``, stopped at the end of ``epoch`` (before saving it)."""
    with pytest.raises(Stop):
        fit(_model("lightgcn", train), graph, cfg, val=val, checkpoint=state, checkpoint_every=every,
            on_epoch=_stop_after(epoch))  # fmt: skip


def _same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _metrics(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


@pytest.mark.parametrize("backbone", ["lightgcn", "sgl", "simgcl", "mf"])
@pytest.mark.parametrize("stop", [1, 3, 4, 7])
def test_a_stopped_training_resumes_to_the_uninterrupted_model(tiny_split, tmp_path, backbone, stop):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    whole = _model(backbone, train)
    ref = fit(whole, graph, CFG, val=val)

    state = tmp_path / "state"
    with pytest.raises(Stop):
        fit(
            _model(backbone, train),
            graph,
            CFG,
            val=val,
            checkpoint=state,
            checkpoint_every=0,
            on_epoch=_stop_after(stop),
        )
    if stop > 1:  # saved after every epoch before the one that stopped
        assert json.loads((state / "meta.json").read_text())["loop"]["epoch"] == stop - 1
    else:
        assert not state.exists()

    again = _model(backbone, train)
    res = fit(again, graph, CFG, val=val, checkpoint=state, checkpoint_every=0)
    assert res.resumed_epoch == stop - 1
    _same_state(whole, again)
    assert _metrics(res.history) == _metrics(ref.history)
    assert (res.best_epoch, res.best_metric, res.epochs_run) == (
        ref.best_epoch,
        ref.best_metric,
        ref.epochs_run,
    )
    assert json.loads((state / "meta.json").read_text())["loop"]["done"] is True


def test_a_finished_training_is_returned_without_training_again(tiny_split, tmp_path):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    first = _model("lightgcn", train)
    ref = fit(first, graph, CFG, val=val, checkpoint=tmp_path / "s")
    steps = []
    second = _model("lightgcn", train)
    res = fit(second, graph, CFG, val=val, checkpoint=tmp_path / "s", on_step=lambda s, t: steps.append(s))
    assert steps == []  # nothing trained
    _same_state(first, second)
    assert (res.best_epoch, res.epochs_run, res.resumed_epoch) == (
        ref.best_epoch,
        ref.epochs_run,
        ref.epochs_run,
    )
    assert res.seconds == pytest.approx(ref.seconds) and res.resumed_seconds == pytest.approx(ref.seconds)
    resume.discard(tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_early_stopping_stops_at_the_same_epoch_after_a_resume(tiny_split, tmp_path):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    cfg = TrainConfig(epochs=40, batch_size=64, lr=0.2, eval_every=1, patience=2)
    whole = _model("lightgcn", train)
    ref = fit(whole, graph, cfg, val=val)
    assert ref.epochs_run < cfg.epochs  # the recipe does stop early
    stop = ref.best_epoch + 1  # between the best epoch and the stop: the best state must be carried
    _stopped(train, val, graph, tmp_path / "s", stop + 1, cfg=cfg)
    again = _model("lightgcn", train)
    res = fit(again, graph, cfg, val=val, checkpoint=tmp_path / "s", checkpoint_every=0)
    assert res.resumed_epoch == stop
    assert (res.best_epoch, res.epochs_run) == (ref.best_epoch, ref.epochs_run)
    _same_state(whole, again)


def test_the_state_is_saved_no_more_often_than_asked(tiny_split, tmp_path):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    _stopped(train, val, graph, tmp_path / "s", 6, every=3600)
    assert not (tmp_path / "s").exists()  # an hour between saves: none yet
    res = fit(
        _model("lightgcn", train), graph, CFG, val=val, checkpoint=tmp_path / "s", checkpoint_every=3600
    )
    assert res.resumed_epoch == 0 and res.epochs_run == CFG.epochs


@pytest.mark.parametrize(
    "change",
    ["seed", "recipe", "edges", "validation"],
)
def test_another_trainings_state_is_not_resumed(tiny_split, tmp_path, caplog, change):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    _stopped(train, val, graph, tmp_path / "s", 5)
    seed, cfg, g, v = 0, CFG, graph, val
    if change == "seed":
        seed = 1
    elif change == "recipe":
        cfg = TrainConfig(**{**CFG.__dict__, "lr": 0.01})
    elif change == "edges":
        g = Graph.from_interactions(train.drop(train.subset([0])))
    else:
        v = val.drop(val.subset([0]))
    whole = _model("lightgcn", train, seed)
    ref = fit(whole, g, cfg, val=v)
    again = _model("lightgcn", train, seed)
    with caplog.at_level(logging.WARNING):
        res = fit(again, g, cfg, val=v, checkpoint=tmp_path / "s", checkpoint_every=0)
    assert res.resumed_epoch == 0
    assert "another training's" in caplog.text
    _same_state(whole, again)
    assert _metrics(res.history) == _metrics(ref.history)


def test_the_thread_count_is_not_part_of_the_training(tiny_split, tmp_path):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    _stopped(train, val, graph, tmp_path / "s", 5)
    cfg = TrainConfig(**{**CFG.__dict__, "threads": 1})
    res = fit(_model("lightgcn", train), graph, cfg, val=val, checkpoint=tmp_path / "s", checkpoint_every=0)
    assert res.resumed_epoch == 4


@pytest.mark.parametrize("damage", ["tensors", "meta", "missing tensor"])
def test_a_damaged_state_trains_from_the_start(tiny_split, tmp_path, caplog, damage):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    state = tmp_path / "s"
    _stopped(train, val, graph, state, 5)
    if damage == "tensors":
        (state / "tensors.safetensors").write_bytes(b"not safetensors")
    elif damage == "meta":
        (state / "meta.json").write_text("{")
    else:  # a valid file without the generator's state: fails half-way through restoring
        from safetensors.torch import load_file, save_file

        t = load_file(str(state / "tensors.safetensors"))
        del t["generator"]
        save_file(t, str(state / "tensors.safetensors"))
    whole = _model("lightgcn", train)
    ref = fit(whole, graph, CFG, val=val)
    again = _model("lightgcn", train)
    with caplog.at_level(logging.WARNING):
        res = fit(again, graph, CFG, val=val, checkpoint=state, checkpoint_every=0)
    assert res.resumed_epoch == 0
    assert "training from the start" in caplog.text
    _same_state(whole, again)  # what was restored before the failure was put back
    assert _metrics(res.history) == _metrics(ref.history)


def test_seconds_count_the_interrupted_run(tiny_split, tmp_path):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    _stopped(train, val, graph, tmp_path / "s", 5)
    before = json.loads((tmp_path / "s" / "meta.json").read_text())["loop"]["seconds"]
    res = fit(_model("lightgcn", train), graph, CFG, val=val, checkpoint=tmp_path / "s", checkpoint_every=0)
    assert res.resumed_seconds == pytest.approx(before)
    assert res.seconds > before
    assert [r["seconds"] for r in res.history] == sorted(r["seconds"] for r in res.history)
