import json

import pytest

from unlearnrec.errors import UnlearnRecError
from unlearnrec.unlearn.ledger import Ledger


def test_append_chain_and_find(tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl")
    assert led.check() == 0
    a = led.append({"request_fingerprint": "aa", "method": "unlearnrec"})
    b = led.append({"request_fingerprint": "bb", "method": "retrain"})
    assert (a["seq"], b["seq"]) == (1, 2) and b["prev"] == a["hash"]
    assert led.check() == 2
    assert [e["method"] for e in led.find("bb")] == ["retrain"]
    assert led.find("cc") == []


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_tampering_is_detected(tmp_path, tamper):
    led = Ledger(tmp_path / "ledger.jsonl")
    for fp in ("a", "b", "c"):
        led.append({"request_fingerprint": fp})
    lines = led.path.read_text().splitlines()
    if tamper == "edit":
        e = json.loads(lines[1])
        e["request_fingerprint"] = "zzz"
        lines[1] = json.dumps(e, sort_keys=True)
    else:
        del lines[0]
    led.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnlearnRecError, match="hash chain broken"):
        led.check()
    with pytest.raises(UnlearnRecError):
        led.append({"request_fingerprint": "d"})


def test_corrupt_line_is_clear(tmp_path):
    p = tmp_path / "ledger.jsonl"
    p.write_text("{not json\n")
    with pytest.raises(UnlearnRecError, match="ledger.jsonl:1: corrupt ledger entry"):
        Ledger(p).entries()
