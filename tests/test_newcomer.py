"""The first hour of a new user (issue 22): numbers out of range, outputs over inputs, audits of
nothing, closed pipes, forget/verify agreement and the pre-training bar, item titles."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnrec.backbones.fixed import FixedEmbeddingConfig
from unlearnrec.backbones.lightgcn import LightGCNConfig
from unlearnrec.backbones.mf import MFConfig
from unlearnrec.backbones.sgl import SGLConfig
from unlearnrec.backbones.simgcl import SimGCLConfig
from unlearnrec.cli import main
from unlearnrec.config import Interval, from_dict
from unlearnrec.errors import ConfigError
from unlearnrec.experiments.protocol import AttackConfig
from unlearnrec.train.loop import TrainConfig
from unlearnrec.unlearn.ceu import CEUConfig
from unlearnrec.unlearn.gif import GIFConfig
from unlearnrec.unlearn.ledger import Ledger
from unlearnrec.unlearn.retrain import RetrainConfig
from unlearnrec.unlearn.sharded.grapheraser import GraphEraserConfig
from unlearnrec.unlearn.sharded.receraser import RecEraserConfig
from unlearnrec.unlearn.unlearnrec import UnlearnRecConfig

from .conftest import build_cli_world

CONFIGS = [
    TrainConfig,
    LightGCNConfig,
    MFConfig,
    SGLConfig,
    SimGCLConfig,
    FixedEmbeddingConfig,
    UnlearnRecConfig,
    CEUConfig,
    GIFConfig,
    RetrainConfig,
    GraphEraserConfig,
    RecEraserConfig,
    AttackConfig,
]


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_cli_world(tmp_path_factory.mktemp("world"))


# ------------------------------------------------------------------ 1. numbers out of range
def _outside(interval: Interval, is_int: bool) -> list:
    vals = []
    if interval.lo != -math.inf:
        vals.append(interval.lo if interval.lo_open else interval.lo - (1 if is_int else 0.5))
    if interval.hi != math.inf:
        vals.append(interval.hi if interval.hi_open else interval.hi + (1 if is_int else 0.5))
    return [int(v) if is_int else float(v) for v in vals]


def _cases():
    for cls in CONFIGS:
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, text in cls.RANGES.items():
            is_int = "int" in str(types[key])
            for v in _outside(Interval.parse(text), is_int):
                yield pytest.param(cls, key, v, id=f"{cls.__name__}.{key}={v}")


@pytest.mark.parametrize("cls, key, value", list(_cases()))
def test_every_ranged_key_is_refused_outside_its_range(cls, key, value):
    with pytest.raises(ConfigError) as e:
        from_dict(cls, {key: [value] if key == "ks" else value}, "sec")
    msg = str(e.value)
    assert msg.startswith(f"sec.{key} must be") and str(Interval.parse(cls.RANGES[key])) in msg
    assert "\n" not in msg


@pytest.mark.parametrize("cls", CONFIGS)
def test_nan_and_inf_are_refused_for_every_float_key(cls):
    floats = [f.name for f in dataclasses.fields(cls) if "float" in str(f.type)]
    assert floats or cls in (FixedEmbeddingConfig,)
    for key in floats:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ConfigError, match=f"sec.{key} must be a finite number"):
                from_dict(cls, {key: bad}, "sec")
            with pytest.raises(ConfigError):  # built in Python, the same check
                cls(**{key: bad})


def test_defaults_are_inside_their_ranges():
    for cls in CONFIGS:
        cls()  # raises if a default is outside its declared range
        assert set(cls.RANGES) <= {f.name for f in dataclasses.fields(cls)}


def test_interval_text():
    assert str(Interval.parse("(0, 1]")) == "in (0, 1]"
    assert str(Interval.parse(">= 1")) == ">= 1"
    assert 0.5 in Interval.parse("(0, 1)") and 0 not in Interval.parse("(0, 1)")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--model", "MODEL", "--k", "0"], "argument --k: must be in [1, 100000], got 0"),
        (["evaluate", "--model", "MODEL", "--k", "5", "-3"], "argument --k: must be in [1, 100000], got -3"),
        (
            ["recommend", "--model", "MODEL", "--user", "0", "-k", "0"],
            "argument -k/--k: must be in [1, 100000]",
        ),
        (["recommend", "--model", "MODEL", "--user", "-1"], "argument --user: must be in [0, 2147483647]"),
        (["train", "--dataset", "DATA", "--lr", "nan", "--out", "OUT"], "train.lr must be a finite number"),
        (["train", "--dataset", "DATA", "--lr", "0", "--out", "OUT"], "train.lr must be in (0, 100]"),
        (
            ["train", "--dataset", "DATA", "--dim", "0", "--out", "OUT"],
            "model.dim must be in [1, 65536], got 0",
        ),
        (
            ["train", "--dataset", "DATA", "--epochs", "-1", "--out", "OUT"],
            "train.epochs must be in [0, 100000]",
        ),
        (
            ["train", "--dataset", "DATA", "--seed", "-5", "--out", "OUT"],
            "train.seed must be in [0, 4294967295]",
        ),
        (["train", "--dataset", "DATA", "--batch-size", "0", "--out", "OUT"], "train.batch_size must be in"),
        (
            ["sample-request", "--model", "MODEL", "--ratio", "1.5", "--out", "OUT"],
            "argument --ratio: must be in (0, 1)",
        ),
        (["sample-request", "--model", "MODEL", "--ratio", "inf", "--out", "OUT"], "must be a finite number"),
        (
            ["sample-request", "--model", "MODEL", "--seed", "x", "--out", "OUT"],
            "expected an integer, got 'x'",
        ),
        (
            ["pretrain", "--model", "MODEL", "--ratio", "0", "--out", "OUT"],
            "unlearnrec.ratio must be in (0, 1)",
        ),
        (["pretrain", "--model", "MODEL", "--epochs", "-2", "--out", "OUT"], "unlearnrec.epochs must be in"),
        (["forget", "--model", "MODEL", "--user", "1", "--seed", "-1", "--out", "OUT"], "argument --seed"),
        (
            ["forget", "--model", "MODEL", "--encoder", "ENC", "--user", "1", "--finetune-epochs", "-1"]
            + ["--out", "OUT"],
            "unlearnrec.finetune_epochs must be in [0, 100000]",
        ),
        (["verify", "--model", "MODEL", "--user", "1", "--min-mi-ng", "nan"], "argument --min-mi-ng"),
    ],
)
def test_cli_numbers_out_of_range_are_one_line(argv, message, world, tmp_path):
    sub = {"MODEL": world["model"], "DATA": world["data"], "OUT": tmp_path / "out", "ENC": world["encoder"]}
    code, _, err = cli(*[sub.get(a, a) for a in argv])
    line = one_line_error(code, err)
    assert message in line
    assert not (tmp_path / "out").exists()


def test_data_section_ranges(world, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nval_ratio = 1.0\n")
    code, _, err = cli("train", "--dataset", world["data"], "--config", cfg, "--out", tmp_path / "m")
    assert "data.val_ratio must be in [0, 1), got 1.0" in one_line_error(code, err)
    cfg.write_text("[train]\nlr = nan\n")
    code, _, err = cli("train", "--dataset", world["data"], "--config", cfg, "--out", tmp_path / "m")
    assert "train.lr must be a finite number" in one_line_error(code, err)


def test_usage_errors_are_one_line():
    code, _, err = cli("train")
    line = one_line_error(code, err)
    assert "the following arguments are required" in line


# ------------------------------------------------------------------ 2. outputs over inputs
def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "argv, option",
    [
        (["forget", "--model", "MODEL", "--encoder", "ENC", "--user", "3", "--out", "MODEL"], "--model"),
        (["forget", "--model", "MODEL", "--encoder", "ENC", "--user", "3", "--out", "ENC"], "--encoder"),
        (["forget", "--model", "MODEL", "--encoder", "ENC", "--user", "3", "--out", "MODEL/sub"], "--model"),
        (["forget", "--model", "MODEL", "--encoder", "ENC", "--user", "3", "--out", "ROOT"], "--model"),
        (["forget", "--model", "MODEL", "--encoder", "ENC", "--edges", "REQ", "--out", "REQ"], "--edges"),
        (
            ["forget", "--model", "MODEL", "--encoder", "ENC", "--user", "3", "--out", "ROOT/new"]
            + ["--ledger", "MODEL/meta.json"],
            "--model",
        ),
        (["pretrain", "--model", "MODEL", "--out", "MODEL"], "--model"),
        (["pretrain", "--model", "MODEL", "--out", "ROOT/enc2", "--curve", "MODEL/meta.json"], "--model"),
        (["sample-request", "--model", "MODEL", "--out", "MODEL/meta.json"], "--model"),
        (["train", "--dataset", "DATA", "--epochs", "1", "--out", "DATA/model"], "--dataset"),
        (["train", "--dataset", "DATA", "--config", "TOML", "--out", "TOML"], "--config"),
    ],
)
@pytest.mark.parametrize("force", [False, True])
def test_no_command_writes_over_or_inside_an_input(argv, option, force, world, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(world["root"], root)
    sub = {
        "MODEL": root / "model",
        "ENC": root / "encoder",
        "REQ": root / "request.tsv",
        "DATA": root / "tinyset",
        "TOML": root / "train.toml",
        "ROOT": root,
    }
    argv = [
        str(sub[a.split("/")[0]]) + a[len(a.split("/")[0]) :] if a.split("/")[0] in sub else a for a in argv
    ]
    before = _snapshot(root)
    code, _, err = cli(*argv, "-q", *(["--force"] if force else []))
    line = one_line_error(code, err)
    assert option in line and "choose another path" in line
    assert _snapshot(root) == before  # nothing written, nothing replaced


def test_existing_out_needs_force(world, tmp_path):
    out = tmp_path / "forgot"
    args = [
        "forget",
        "--model",
        world["model"],
        "--encoder",
        world["encoder"],
        "--user",
        5,
        "--out",
        out,
        "-q",
    ]
    assert cli(*args)[0] == 0
    first = _snapshot(out)
    code, _, err = cli(*args)
    assert "already exists and is not empty (add --force" in one_line_error(code, err)
    assert _snapshot(out) == first
    code, _, err = cli(*args, "--force")
    assert code == 0, err
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine without --force
    code, _, err = cli(*args[:-2], tmp_path / "empty", "-q")
    assert code == 0, err


def test_check_output_unit(tmp_path):
    from unlearnrec.io.paths import OutputError, check_output

    a = tmp_path / "a"
    a.mkdir()
    (a / "f").write_text("x")
    with pytest.raises(OutputError, match="is the input --model"):
        check_output(a, {"--model": a}, force=True)
    with pytest.raises(OutputError, match="is inside the input"):
        check_output(a / "b", {"--model": a})
    with pytest.raises(OutputError, match="contains the input"):
        check_output(tmp_path, {"--model": a}, force=True)
    with pytest.raises(OutputError, match="already exists"):
        check_output(a, {})
    assert check_output(tmp_path / "new", {"--model": a, "--config": None}) == (tmp_path / "new").resolve()


# ------------------------------------------------------------------ 3. audits of nothing
def test_missing_or_empty_ledger_is_an_error(world, tmp_path):
    code, out, err = cli("ledger", tmp_path / "nope.jsonl")
    assert "no ledger at" in one_line_error(code, err) and "intact" not in out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out, err = cli("ledger", empty, "--json")
    assert "has no entries" in one_line_error(code, err) and out == ""
    for led in (tmp_path / "nope.jsonl", empty):
        code, out, err = cli(
            "verify",
            "--model",
            world["forgot"],
            "--original",
            world["model"],
            "--edges",
            world["request"],
            "--ledger",
            led,
        )
        assert one_line_error(code, err) and "0 of 0" not in out
    code, out, _ = cli("ledger", world["ledger"])
    assert code == 0 and "1 entries, hash chain intact" in out


# ------------------------------------------------------------------ 4. closed pipes
class _ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_pipe_in_process_is_quiet(world):
    err = io.StringIO()
    with contextlib.redirect_stdout(_ClosedPipe()), contextlib.redirect_stderr(err):
        code = main(["ledger", str(world["ledger"]), "--json"])
    assert code == 141 and err.getvalue() == ""


def test_closed_pipe_subprocess_is_quiet(world, tmp_path):
    import hashlib

    from unlearnrec.unlearn.ledger import GENESIS

    # a long ledger (written directly, chain intact) so the output outlasts the pipe buffer
    prev, lines = GENESIS, []
    for n in range(1, 1501):
        e = {
            "seq": n,
            "time": "t",
            "method": "m",
            "edges": 1,
            "users": [],
            "items": [],
            "request_fingerprint": "f" * 64,
            "prev": prev,
        }
        e["hash"] = hashlib.sha256(json.dumps(e, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        prev = e["hash"]
        lines.append(json.dumps(e, sort_keys=True))
    led = tmp_path / "long.jsonl"
    led.write_text("\n".join(lines) + "\n")
    assert Ledger(led).check() == 1500
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = f"{sys.executable} -m unlearnrec ledger {led} | head -1"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
    assert p.stdout.startswith(f"{led}: 1500 entries")
    assert p.stderr == ""


# ------------------------------------------------------------------ 10. forget and verify agree
def test_forget_and_verify_report_the_same_mi(world, tmp_path):
    out = tmp_path / "f"
    code, o, err = cli(
        "forget",
        "--model",
        world["model"],
        "--encoder",
        world["encoder"],
        "--edges",
        world["request"],
        "--out",
        out,
        "--seed",
        7,
        "--json",
        "-q",
    )
    assert code == 0, err
    f = json.loads(o)
    code, o, err = cli(
        "verify",
        "--model",
        out,
        "--original",
        world["model"],
        "--edges",
        world["request"],
        "--seed",
        7,
        "--min-mi-ng",
        0,
        "--json",
    )
    assert code == 0, err
    v = json.loads(o)
    m = next(c for c in v["checks"] if c["name"] == "membership")
    assert m["mi_ng"] == pytest.approx(f["mi_ng"], rel=1e-6)
    assert m["mi_bf"] == pytest.approx(f["mi_bf"], rel=1e-6)
    assert "as 'forget' does" in v["negatives"]
    # another seed draws other negatives: the agreement above is not a coincidence of constants
    code, o, _ = cli(
        "verify",
        "--model",
        out,
        "--original",
        world["model"],
        "--edges",
        world["request"],
        "--seed",
        8,
        "--min-mi-ng",
        0,
        "--json",
    )
    m8 = next(c for c in json.loads(o)["checks"] if c["name"] == "membership")
    assert m8["mi_bf"] == pytest.approx(f["mi_bf"], rel=1e-6) and m8["mi_ng"] != f["mi_ng"]


def test_pretrain_bar_ends_on_the_summary_numbers(world):
    from unlearnrec.cli.forget import EpochMeans
    from unlearnrec.model import TrainedModel
    from unlearnrec.unlearn.unlearnrec import UnlearnRec

    model = TrainedModel.load(world["model"])
    method = UnlearnRec(UnlearnRecConfig(epochs=2, batch_size=64), seed=0)
    means = EpochMeans(("model", "unlearn", "preserve", "contrast", "total"))
    shown: list[dict] = []
    method.on_step = lambda epoch, step, steps, terms: shown.append(means.update(step, terms))
    method.prepare(model, model.train)
    last = method.history[-1]
    assert last["steps"] > 1
    assert shown[-1] == {k: last[k] for k in shown[-1]}
    assert set(shown[-1]) >= {"model", "total"}


# ------------------------------------------------------------------ 9. raw ids and titles
def test_item_titles_ml100k_layout(tmp_path):
    from unlearnrec.data.items import item_metadata

    (tmp_path / "u.item").write_bytes("1|Toy Story (1995)|x\n2|Caf\xe9 (1990)|y\n".encode("latin-1"))
    info = item_metadata(tmp_path, 2, [1, 2])
    assert info.label(0) == "item 0 (raw 1: Toy Story (1995))" and info.title(1) == "Caf\xe9 (1990)"
    assert info.label(5) == "item 5"


def test_item_titles_ml1m_layout_needs_the_rated_movies(tmp_path):
    from unlearnrec.data.items import item_metadata

    (tmp_path / "movies.dat").write_text("1::A (1990)::Drama\n5::B (1991)::Comedy\n9::C (1992)::War\n")
    info = item_metadata(tmp_path, 2)
    assert info.raw_ids is None and "ratings.dat" in info.note and info.label(0) == "item 0"
    (tmp_path / "ratings.dat").write_text("1::9::5::0\n2::1::3::0\n2::9::1::0\n")
    info = item_metadata(tmp_path, 2)  # rated movies 1 and 9, ascending: index 1 is MovieID 9
    assert info.label(1) == "item 1 (raw 9: C (1992))"


def test_recommend_shows_titles(world, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(world["data"], data)
    (data / "item_list.txt").write_text("org_id remap_id\n" + "".join(f"m{i} {i}\n" for i in range(40)))
    (data / "u.item").write_text("".join(f"m{i}|Film {i}|\n" for i in range(40)))
    model = tmp_path / "m"
    assert cli("train", "--dataset", data, "--epochs", 1, "--dim", 4, "--out", model, "-q")[0] == 0
    code, o, err = cli("recommend", "--model", model, "--user", 0, "-k", 3, "--json")
    assert code == 0, err
    rec = json.loads(o)
    assert rec["raw_ids"] == [f"m{i}" for i in rec["items"]]
    assert rec["titles"] == [f"Film {i}" for i in rec["items"]]
    code, o, _ = cli("recommend", "--model", model, "--user", 0, "-k", 3)
    assert f"item {rec['items'][0]} (raw m{rec['items'][0]}: Film {rec['items'][0]})" in o


@pytest.mark.realdata
def test_real_titles_ml100k(realdata):
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.items import item_metadata

    d = load_dataset("ml-100k", realdata)
    info = item_metadata(d.meta["folder"], d.num_items, d.meta.get("item_ids"))
    assert info.label(0) == "item 0 (raw 1: Toy Story (1995))"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"seeds": [-1]}, "experiment.seeds must be in [0, 4294967295], got -1"),
        ({"ratios": [math.nan]}, "experiment.ratios[0] must be a finite number"),
        ({"ratios": [1.5]}, "experiment.ratios must be in [0, 1], got 1.5"),
        ({"attack_batch": 0}, "experiment.attack_batch must be in [1, 16777216], got 0"),
        ({"val_ratio": 1.0}, "experiment.val_ratio must be in [0, 1), got 1.0"),
        ({"max_retained": 0}, "experiment.max_retained must be >= 1, got 0"),
    ],
)
def test_experiment_grid_ranges(extra, message):
    from unlearnrec.experiments.runner import load_config

    with pytest.raises(ConfigError) as e:
        load_config({"datasets": ["x"], "methods": ["retrain"], **extra})
    assert str(e.value).startswith(message)


def test_experiment_and_report_never_write_over_inputs(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('datasets = ["x"]\nmethods = ["retrain"]\n')
    code, _, err = cli("experiment", grid, "--out", grid, "-q")
    assert "is the input CONFIG" in one_line_error(code, err)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "results.jsonl").write_text("{}\n")
    code, _, err = cli("report", exp, "--html", exp / "results.jsonl")
    assert "--html" in one_line_error(code, err)
    assert (exp / "results.jsonl").read_text() == "{}\n"


def test_diverged_training_is_one_line_and_saves_nothing(world, tmp_path, monkeypatch):
    from unlearnrec.errors import TrainingError
    from unlearnrec.train import loop

    def diverge(*a, **k):
        raise TrainingError("loss became nan at epoch 1; lower lr (1.0)")

    monkeypatch.setattr(loop, "fit", diverge)
    code, _, err = cli("train", "--dataset", world["data"], "--epochs", 1, "--out", tmp_path / "m", "-q")
    assert "loss became nan at epoch 1" in one_line_error(code, err)
    assert not (tmp_path / "m").exists()


def test_malformed_titles_never_break_recommend(tmp_path):
    from unlearnrec.data.items import item_metadata

    (tmp_path / "u.item").write_bytes(b"no separator here\n")
    info = item_metadata(tmp_path, 3, [1, 2, 3])
    assert info.label(0) == "item 0" and "malformed line" in info.note


def test_verify_without_the_dataset_says_how_it_drew_negatives(world, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(world["forgot"], model)
    meta = json.loads((model / "meta.json").read_text())
    meta["dataset"] = str(tmp_path / "gone")  # the dataset folder moved away
    (model / "meta.json").write_text(json.dumps(meta))
    code, o, err = cli("verify", "--model", model, "--edges", world["request"], "--min-mi-ng", 0, "--json")
    assert code == 0, err
    assert "MI-NG can differ slightly" in json.loads(o)["negatives"]
