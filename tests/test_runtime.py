"""The allocator setting of the command line (unlearnrec.runtime).

The setting is per process and cannot be undone, so whatever applies it runs in a child process.
"""

import json
import os
import subprocess
import sys

import pytest

from unlearnrec import runtime
from unlearnrec.cli import main

glibc = pytest.mark.skipif(runtime._libc() is None, reason="needs glibc's mallopt")


def _child(code: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != runtime.ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


FAULTS = """
import json, resource, torch
from unlearnrec.runtime import tune_allocator
mode = tune_allocator()
def step():  # a training step's pattern: big blocks allocated, used and freed, every step alike
    a = torch.ones(4_000_000)  # 16 MB
    b = torch.ones(16_000_000)  # 64 MB, above glibc's largest mmap threshold
    c = float(a.sum() + b.sum())
    del a, b
    return c
for _ in range(20):  # warm up: the heap settles
    step()
before = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(20):
    step()
after = resource.getrusage(resource.RUSAGE_SELF)
faults = after.ru_minflt - before.ru_minflt
print(json.dumps({"mode": mode, "faults": faults, "peak_mb": after.ru_maxrss / 1024}))
"""


@glibc
def test_keep_reuses_freed_blocks_instead_of_faulting_in_new_pages():
    system = _child(FAULTS, UNLEARNREC_ALLOCATOR="system")
    keep = _child(FAULTS)
    assert system["mode"] == "system" and keep["mode"] == "keep"
    if system["faults"] < 10_000:  # transparent huge pages for everything: little to save
        pytest.skip(f"the system allocator faulted only {system['faults']} pages")
    # 20 steps of fresh 64 MB blocks are ~300,000 page faults; reused blocks, next to none
    assert keep["faults"] * 20 < system["faults"]
    assert keep["peak_mb"] < 1.5 * system["peak_mb"]  # and the heap does not keep growing


@glibc
def test_glibcs_own_variables_win():
    row = _child(
        "import json; from unlearnrec.runtime import tune_allocator; "
        "print(json.dumps({'m': tune_allocator()}))",
        MALLOC_MMAP_THRESHOLD_="131072",
    )
    assert row["m"] == "system"


PEAK = """
import json, torch
from unlearnrec.runtime import tune_allocator
from unlearnrec.unlearn.base import MemoryMeter
mode = tune_allocator()
big = torch.ones(75_000_000); del big  # 300 MB freed: kept by the allocator under "keep"
with MemoryMeter() as m:
    x = torch.ones(25_000_000)  # 100 MB
    x += 1
print(json.dumps({"mode": mode, "peak": m.peak_mb}))
"""


@glibc
def test_memory_meter_sees_a_blocks_peak_even_when_freed_memory_is_kept():
    row = _child(PEAK)
    assert row["mode"] == "keep"
    assert 60 < row["peak"] < 250  # not ~0 from reusing the 300 MB freed before


def test_unknown_mode_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="UNLEARNREC_ALLOCATOR must be one of keep, system"):
        runtime.tune_allocator("fast")
    monkeypatch.setenv(runtime.ENV, "fast")
    monkeypatch.setattr(runtime, "_applied", None)
    with pytest.raises(ValueError, match="got 'fast'"):
        runtime.tune_allocator()
    assert runtime.tune_allocator("system") == "system"  # an explicit mode wins over the variable


def test_cli_rejects_an_unknown_allocator_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv(runtime.ENV, "fast")
    monkeypatch.setattr(runtime, "_applied", None)
    assert main(["data", "info", "ml-100k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "UNLEARNREC_ALLOCATOR" in err and "'fast'" in err


def test_child_env_passes_the_setting_on(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", "keep")
    env = runtime.child_env({"PATH": "/bin"})
    assert env["MALLOC_MMAP_MAX_"] == "0" and int(env["MALLOC_TRIM_THRESHOLD_"]) > 2**30
    monkeypatch.setattr(runtime, "_applied", None)
    assert runtime.child_env({"PATH": "/bin"}) == {"PATH": "/bin"}


@glibc
@pytest.mark.realdata
def test_bench_allocator_runs_both_modes_in_fresh_processes(realdata, capsys, tmp_path):
    from .conftest import load_benchmark

    bench = load_benchmark("bench_allocator")
    out = tmp_path / "rows.json"
    argv = ["--dataset", "ml-100k", "--data-dir", str(realdata), "--backbones", "mf", "--batches", "2"]
    assert bench.main([*argv, "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["applied"]) for r in rows] == [("system", "system"), ("keep", "keep")]
    assert all(r["step_s"] > 0 and r["peak_mb"] > 0 for r in rows)
    assert "step system/keep" in capsys.readouterr().out
