"""A grid on Ray (issue 24): the task graph, the same records as the serial runner, a worker killed
mid-grid retried without a duplicate line, resume, and the command line's bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

import unlearnrec
from unlearnrec.experiments.grid import cell_hash, groups, load_config
from unlearnrec.experiments.ray_graph import build_graph
from unlearnrec.experiments.ray_runner import RAY_MISSING
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.registry import build_method

from .conftest import run_cli

CI_TINY = Path(__file__).resolve().parents[1] / "experiments" / "ci-tiny.toml"

try:
    import ray
except ImportError:  # the cluster extra is not installed
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'unlearnrec[cluster]')")


def tiny_grid(tiny_dir, request="adversarial") -> dict:
    grid = {
        "name": "tiny",
        "datasets": [str(tiny_dir)],
        "methods": [
            {"name": "unlearnrec", "label": "U0", "config": {"epochs": 1, "finetune_epochs": 0}},
            "retrain",
            {"name": "unlearnrec", "label": "U1", "config": {"epochs": 1, "finetune_epochs": 1}},
        ],
        "train": {"epochs": 2, "batch_size": 256},
        "model": {"lightgcn": {"dim": 8, "layers": 1}},
    }
    if request == "adversarial":
        grid["ratios"] = [0.5, 1.0]
    else:
        grid.update({"request": request, "request_ratios": [0.1, 0.2]})
    return grid


# ------------------------------------------------------------------------------ the graph (no ray)
def test_the_graph_follows_the_grids_dependencies(tiny_dir, tmp_path):
    cfg = load_config(tiny_grid(tiny_dir))
    nodes = build_graph(cfg, Store(cfg, tmp_path / "cache"), set(), None)
    kinds = [n.kind for n in nodes.values()]
    # one clean model (one dataset and seed), an attack and a model per ratio, one prepared encoder
    # per model (U0 and U1 differ only in a forget-time field), three cells per group
    assert sorted(kinds) == sorted(["clean"] + ["attack", "model", "prepare"] * 2 + ["cell"] * 6)
    g0, g1 = groups(cfg)
    clean = f"clean:{g0.clean_hash}"
    assert g0.clean_hash == g1.clean_hash
    for g in (g0, g1):
        model = f"model:{g.attacked_hash}"
        attack = next(k for k, n in nodes.items() if n.kind == "attack" and n.group == g)
        assert nodes[attack].deps == {clean}
        assert nodes[model].deps == {attack}
        prepare = next(k for k, n in nodes.items() if n.kind == "prepare" and n.group == g)
        assert nodes[prepare].deps == {model}
        u0, retrain, u1 = (cell_hash(g, m) for m in cfg.methods)
        assert nodes[retrain].deps == {model}
        assert nodes[u0].deps == nodes[u1].deps == {model, prepare, retrain}
        # the prepare time is reported on the first cell (the serial order) that uses the state
        assert nodes[prepare].first_cell == u0


def test_the_graph_without_attack_shares_the_model_and_prepared_state_across_ratios(tiny_dir, tmp_path):
    cfg = load_config(tiny_grid(tiny_dir, request="users"))
    nodes = build_graph(cfg, Store(cfg, tmp_path / "cache"), set(), None)
    kinds = sorted(n.kind for n in nodes.values())
    assert kinds == sorted(["model", "prepare"] + ["request"] * 2 + ["cell"] * 6)


def test_the_graph_leaves_out_what_is_done_or_cached(tiny_dir, tmp_path):
    cfg = load_config(tiny_grid(tiny_dir))
    g0, g1 = groups(cfg)
    done = {cell_hash(g0, m) for m in cfg.methods}  # the first group's cells are in results.jsonl
    cache = tmp_path / "cache"
    (cache / "models" / g1.attacked_hash).mkdir(parents=True)
    (cache / "models" / g1.attacked_hash / "meta.json").write_text("{}")
    nodes = build_graph(cfg, Store(cfg, cache), done, None)
    assert sorted(n.kind for n in nodes.values()) == ["cell", "cell", "cell", "prepare"]
    assert all(n.group == g1 for n in nodes.values())
    retrain = cell_hash(g1, cfg.methods[1])
    assert nodes[retrain].deps == set()


# ------------------------------------------------------------------------------ bad input
def test_ray_without_the_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, out, err = run_cli(capsys, "experiment", CI_TINY, "--out", tmp_path / "out", "--ray", "auto", "-q")
    assert code == 2
    assert err.strip().splitlines() == [f"unlearnrec: error: {RAY_MISSING}"]
    assert not (tmp_path / "out").exists()


@needs_ray
@pytest.mark.parametrize("address", ["unused", "127.0.0.1:nope", "ray://"])
def test_ray_with_a_malformed_address_is_one_line(tmp_path, capsys, address):
    code, _, err = run_cli(capsys, "experiment", CI_TINY, "--out", tmp_path / "out", "--ray", address, "-q")
    assert code == 2
    assert err.strip().splitlines() == [
        f"unlearnrec: error: --ray {address}: expected 'auto' or a cluster address HOST:PORT"
    ]


@needs_ray
def test_ray_with_an_unreachable_address_is_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    code, _, err = run_cli(capsys, "experiment", CI_TINY, "--out", tmp_path / "out", "--ray", address, "-q")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"unlearnrec: error: --ray {address}: no Ray cluster answers there"
    ), lines
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ------------------------------------------------------------------------------ ci-tiny on Ray
def killing_builder(marker: Path, driver: int):
    """The registry's builder, except that the first build of UnlearnRec(1) in a worker process
    SIGKILLs that worker (once: ``marker`` records it)."""

    def build(name, cfg, seed):
        if name == "unlearnrec" and cfg.get("finetune_epochs") == 1 and os.getpid() != driver:
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return build_method(name, cfg, seed)

    return build


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster of 2 CPUs for this module's tests, its workers importing this checkout."""
    if ray is None:
        pytest.skip("ray is not installed (pip install 'unlearnrec[cluster]')")
    src = str(Path(unlearnrec.__file__).resolve().parents[1])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, saved) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


TINY_TOML = """
name = "tiny"
datasets = ["{data}"]
ratios = [0.5]
[train]
epochs = 2
batch_size = 256
[model.lightgcn]
dim = 8
layers = 1
[[methods]]
name = "retrain"
[[methods]]
name = "unlearnrec"
label = "U1"
config = {{ epochs = 1, finetune_epochs = 1 }}
"""


def test_the_command_line_runs_a_grid_on_ray_with_the_serial_records(local_ray, tiny_dir, tmp_path, capsys):
    from unlearnrec.experiments.runner import run_experiment

    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY_TOML.format(data=tiny_dir))
    serial = run_experiment(grid, tmp_path / "serial", cache_dir=tmp_path / "cache-serial")
    args = ("experiment", grid, "--out", tmp_path / "ray", "--cache", tmp_path / "cache-ray", "--ray", "auto")
    code, out, _ = run_cli(capsys, *args, "-q")
    assert code == 0
    assert out.splitlines()[0] == "tiny: 2 cells, 2 ran, 0 failed, 0 already done"
    on_ray = {r["cell"]: r for r in lines(tmp_path / "ray")}
    assert sorted(on_ray) == sorted(r["cell"] for r in serial)
    for rec in serial:
        assert on_ray[rec["cell"]]["metrics"] == rec["metrics"], rec["label"]
    assert (tmp_path / "ray" / "experiment-tiny.toml").is_file()
    # resumed: nothing to run, nothing written
    code, out, _ = run_cli(capsys, *args, "-q", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 2
    assert len(lines(tmp_path / "ray")) == 2


@pytest.fixture(scope="module")
def ray_runs(local_ray, tmp_path_factory, realdata):
    """ci-tiny run serially and on the local Ray cluster (own caches), one worker killed."""
    from unlearnrec.experiments.ray_runner import run_experiment_ray
    from unlearnrec.experiments.runner import run_experiment

    tmp = tmp_path_factory.mktemp("ray")
    serial = run_experiment(CI_TINY, tmp / "serial", data_dir=realdata, cache_dir=tmp / "cache-serial")
    marker = tmp / "killed"
    records = run_experiment_ray(
        CI_TINY,
        tmp / "ray",
        data_dir=realdata,
        cache_dir=tmp / "cache-ray",
        build=killing_builder(marker, os.getpid()),
        max_retries=2,
    )
    return {"tmp": tmp, "serial": serial, "ray": records, "marker": marker, "data": realdata}


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


SAME = ("experiment", "dataset", "backbone", "ratio", "seed", "method", "label", "method_config", "hashes",
        "attack", "status", "prepare_cached", "input_mutated", "reference")  # fmt: skip


@pytest.mark.realdata
@pytest.mark.slow
def test_ci_tiny_on_ray_writes_the_serial_metrics_once_per_cell_after_a_killed_worker(ray_runs):
    tmp = ray_runs["tmp"]
    # a worker was killed (SIGKILL, in the UnlearnRec(1) cell) and its task retried
    killed = int(ray_runs["marker"].read_text())
    assert killed != os.getpid()
    serial = {r["cell"]: r for r in lines(tmp / "serial")}
    on_ray = lines(tmp / "ray")
    assert len(on_ray) == len(serial) == 3  # one line per cell: none lost, none twice
    assert {r["cell"] for r in on_ray} == set(serial)
    assert [r["status"] for r in on_ray] == ["ok"] * 3
    assert sorted(r["cell"] for r in ray_runs["ray"]) == sorted(serial)
    for rec in on_ray:
        ref = serial[rec["cell"]]
        assert rec["metrics"] == ref["metrics"], rec["label"]  # every metric field, exactly
        assert {k: rec.get(k) for k in SAME} == {k: ref.get(k) for k in SAME}, rec["label"]
    # the shared encoder was pre-trained once (by its own task), reported on UnlearnRec(0) as serially
    by_label = {r["label"]: r for r in on_ray}
    assert by_label["UnlearnRec(0)"]["prepare_cached"] is False
    assert by_label["UnlearnRec(0)"]["prepare_seconds"] > 0
    assert by_label["UnlearnRec(1)"]["prepare_cached"] is True
    assert len(list((tmp / "cache-ray" / "prepared").iterdir())) == 1


@pytest.mark.realdata
@pytest.mark.slow
def test_a_second_ray_run_resumes_with_nothing_to_do(ray_runs):
    from unlearnrec.experiments.ray_runner import run_experiment_ray

    tmp = ray_runs["tmp"]
    before = (tmp / "ray" / "results.jsonl").read_text()
    again = run_experiment_ray(CI_TINY, tmp / "ray", data_dir=ray_runs["data"], cache_dir=tmp / "cache-ray")
    assert again == []
    assert (tmp / "ray" / "results.jsonl").read_text() == before
    # a new OUT over the filled cache: the cells only (models, attack, encoder are found)
    cfg = load_config(CI_TINY)
    nodes = build_graph(cfg, Store(cfg, tmp / "cache-ray"), set(), None)
    assert sorted(n.kind for n in nodes.values()) == ["cell"] * 3


def test_a_group_that_cannot_be_set_up_fails_its_cells_as_serially(local_ray, tmp_path):
    from unlearnrec.experiments.ray_runner import run_experiment_ray
    from unlearnrec.experiments.runner import run_experiment

    grid = TINY_TOML.format(data=tmp_path / "no-such-dataset")
    (tmp_path / "grid.toml").write_text(grid)
    serial = run_experiment(tmp_path / "grid.toml", tmp_path / "serial", cache_dir=tmp_path / "cache")
    on_ray = run_experiment_ray(tmp_path / "grid.toml", tmp_path / "ray", cache_dir=tmp_path / "cache")
    assert [r["status"] for r in on_ray] == ["error", "error"]
    assert sorted((r["cell"], r["error"]) for r in on_ray) == sorted((r["cell"], r["error"]) for r in serial)
    assert "no-such-dataset" in on_ray[0]["error"]
    assert len(lines(tmp_path / "ray")) == 2
