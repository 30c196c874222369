"""Forget -> ledger -> verify, end to end through the CLI on a tiny dataset."""

import json

import pytest

from .conftest import run_cli

run = run_cli


@pytest.fixture
def pipeline(tmp_path, cli_trained, capsys):
    model, enc = cli_trained[0], tmp_path / "enc"
    code, _, err = run(
        capsys, "pretrain", "--model", model, "--epochs", 2, "--batch-size", 64, "--out", enc, "-q"
    )
    assert code == 0, err
    return tmp_path, model, enc


def test_forget_user_ledger_verify(pipeline, capsys):
    d, model, enc = pipeline
    ledger = d / "ledger.jsonl"
    code, out, err = run(
        capsys,
        "forget",
        "--model",
        model,
        "--encoder",
        enc,
        "--user",
        3,
        "--out",
        d / "f",
        "--ledger",
        ledger,
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["ledger_entry"] == 1
    code, out, _ = run(
        capsys, "verify", "--model", d / "f", "--original", model, "--user", 3, "--ledger", ledger, "--json"
    )
    res = json.loads(out)
    assert code == 0 and res["passed"]
    names = {c["name"]: c["passed"] for c in res["checks"]}
    assert names["edges_absent"] and names["nodes_erased"] and names["ledger"]
    code, _, err = run(capsys, "recommend", "--model", d / "f", "--user", 3)
    assert code == 2 and "has been forgotten" in err
    code, out, _ = run(capsys, "ledger", ledger, "--json")
    assert code == 0 and json.loads(out)["entries"][0]["users"] == [3]


def test_verify_fails_on_a_model_that_did_not_forget(pipeline, capsys):
    d, model, _ = pipeline
    code, out, _ = run(capsys, "verify", "--model", model, "--original", model, "--user", 3, "--json")
    res = json.loads(out)
    assert code == 1 and not res["passed"]
    assert {c["name"]: c["passed"] for c in res["checks"]}["edges_absent"] is False


def test_forget_edges_file_and_bad_requests(pipeline, capsys):
    d, model, enc = pipeline
    req = d / "req.tsv"
    assert run(capsys, "sample-request", "--model", model, "--ratio", 0.05, "--out", req)[0] == 0
    code, _, err = run(
        capsys,
        "forget",
        "--model",
        model,
        "--encoder",
        enc,
        "--edges",
        req,
        "--finetune-epochs",
        1,
        "--out",
        d / "fe",
    )
    assert code == 0, err
    code, out, _ = run(capsys, "verify", "--model", d / "fe", "--original", model, "--edges", req, "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["edges_absent"]["passed"] and "mi_bf" in checks["membership"]
    # a request file naming an edge that is not a training edge: one clear line, nothing written
    bad = d / "bad.tsv"
    bad.write_text("user\titem\n0\t999\n")
    code, _, err = run(capsys, "forget", "--model", model, "--encoder", enc, "--edges", bad, "--out", d / "x")
    assert code == 2 and "unknown item id 999" in err and not (d / "x").exists()
    empty = d / "empty.tsv"
    empty.write_text("")
    code, _, err = run(
        capsys, "forget", "--model", model, "--encoder", enc, "--edges", empty, "--out", d / "x"
    )
    assert code == 2 and "empty request file" in err
