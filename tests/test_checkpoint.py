import json

import pytest
import torch

from unlearnrec.errors import UnlearnRecError
from unlearnrec.io.checkpoint import load_checkpoint, save_checkpoint


def test_roundtrip(tmp_path):
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2])}
    save_checkpoint(tmp_path / "ck", t, {"x": 1, "name": "n"})
    got, meta = load_checkpoint(tmp_path / "ck")
    torch.testing.assert_close(got["a"], t["a"])
    assert meta["x"] == 1 and meta["format"].startswith("unlearnrec-checkpoint")
    assert "version" in meta


def test_nan_refused_and_previous_checkpoint_kept(tmp_path):
    save_checkpoint(tmp_path / "ck", {"a": torch.ones(2)}, {"v": "old"})
    with pytest.raises(UnlearnRecError, match="NaN"):
        save_checkpoint(tmp_path / "ck", {"a": torch.tensor([1.0, float("nan")])}, {"v": "new"})
    got, meta = load_checkpoint(tmp_path / "ck")
    assert meta["v"] == "old"
    # no temporary directories left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_failed_write_leaves_old_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ck", {"a": torch.ones(2)}, {"v": "old"})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("unlearnrec.io.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", {"a": torch.zeros(2)}, {"v": "new"})
    assert load_checkpoint(tmp_path / "ck")[1]["v"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(UnlearnRecError, match="not an unlearnrec checkpoint"):
        save_checkpoint(d, {"a": torch.ones(1)}, {})
    assert (d / "precious.txt").read_text() == "keep me"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(UnlearnRecError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "ck", {"a": torch.ones(1)}, {})
    (tmp_path / "ck" / "meta.json").write_text("{broken")
    with pytest.raises(UnlearnRecError, match="corrupt JSON"):
        load_checkpoint(tmp_path / "ck")


def test_loading_runs_no_code(tmp_path):
    # the sidecar is JSON and the tensors safetensors: a pickle payload is simply not read
    save_checkpoint(tmp_path / "ck", {"a": torch.ones(1)}, {})
    (tmp_path / "ck" / "evil.pkl").write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    load_checkpoint(tmp_path / "ck")
    assert not (tmp_path / "pwned").exists()
    assert json.loads((tmp_path / "ck" / "meta.json").read_text())["format"]
