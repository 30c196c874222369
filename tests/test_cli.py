"""End-to-end CLI on a tiny dataset folder: train, evaluate, recommend, and clean errors."""

import json

import pytest

from .conftest import run_cli

run = run_cli


@pytest.fixture
def trained(cli_trained):
    return cli_trained


def test_train_evaluate_recommend(trained, capsys):
    out, res = trained
    assert (out / "tensors.safetensors").is_file() and (out / "meta.json").is_file()
    assert 0 < res["test"]["recall@20"] <= 1
    code, o, _ = run(capsys, "evaluate", "--model", out, "--k", 5, 20, "--json")
    assert code == 0
    ev = json.loads(o)["test"]
    assert ev["recall@20"] == pytest.approx(res["test"]["recall@20"])
    assert ev["recall@5"] <= ev["recall@20"]
    code, o, _ = run(capsys, "recommend", "--model", out, "--user", 0, "-k", 5, "--json")
    assert code == 0
    rec = json.loads(o)
    assert len(rec["items"]) == 5 and rec["scores"] == sorted(rec["scores"], reverse=True)


def test_learns_planted_structure(trained):
    # 4 planted clusters: a trained model must beat random ranking (recall@20 of 40 items ~ 0.5)
    _, res = trained
    assert res["test"]["recall@20"] > 0.7


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "nope", "--out", "X"], "unknown dataset 'nope' (valid:"),
        (["train", "--dataset", "TINY", "--backbone", "gnn9", "--out", "X"], "unknown backbone 'gnn9'"),
        (["recommend", "--model", "MODEL", "--user", 10**6], "unknown user id 1000000"),
        (["evaluate", "--model", "/nonexistent"], "not a checkpoint"),
    ],
)
def test_bad_input_one_line_no_traceback(argv, message, trained, tiny_dir, capsys, tmp_path):
    out, _ = trained
    argv = [str(tiny_dir) if a == "TINY" else str(out) if a == "MODEL" else a for a in argv]
    argv = [str(tmp_path / "x") if a == "X" else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_unknown_config_key(tmp_path, tiny_dir, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 1\nwarp_speed = 9\n")
    code, _, err = run(capsys, "train", "--dataset", tiny_dir, "--config", cfg, "--out", tmp_path / "m")
    assert code == 2 and "unknown config key 'train.warp_speed'" in err
    assert not (tmp_path / "m").exists()


def test_malformed_file_names_line(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "train.txt").write_text("0 1 2\n1 x 3\n")
    (d / "test.txt").write_text("0 3\n")
    code, _, err = run(capsys, "train", "--dataset", d, "--out", tmp_path / "m")
    assert code == 2 and "train.txt:2: malformed line" in err


def test_train_on_the_whole_split_reports_no_validation(tmp_path, tiny_dir, capsys):
    # val_ratio = 0 (the paper's protocol): no validation metrics are invented, in text or JSON
    cfg = tmp_path / "full.toml"
    cfg.write_text("[train]\nepochs = 2\n\n[data]\nval_ratio = 0.0\n")
    out = tmp_path / "m"
    args = ("train", "--dataset", tiny_dir, "--config", cfg, "--dim", 8, "--out", out, "-q")
    code, o, e = run(capsys, *args, "--json")
    assert code == 0, e
    res = json.loads(o)
    assert res["val"] is None and 0 < res["test"]["recall@20"] <= 1
    code, o, _ = run(capsys, *args, "--force")
    assert code == 0
    assert "val   none (no validation split: val_ratio = 0)" in o
