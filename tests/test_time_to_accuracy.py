"""The time-to-accuracy comparison of benchmarks/time_to_accuracy.py on hand-made curves."""

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def tta():
    return load_benchmark("time_to_accuracy")


def _curve(points):
    return [{"wall_s": w, "epoch": i + 1, "test_recall@20": r} for i, (w, r) in enumerate(points)]


def test_ratios_at_each_new_best_of_the_reference(tta):
    ours = _curve([(10.0, 0.10), (20.0, 0.15), (30.0, 0.20)])
    ref = _curve([(60.0, 0.11), (120.0, 0.105), (600.0, 0.14)])
    lines = tta.compare_curves(ours, ref, target=0.2)
    # levels: 0.11 (ref 60 s, ours 20 s), 0.14 (ref 600 s, ours 20 s), target 0.2 (ref never)
    assert lines[0] == "recall@20 0.11: ours 20.0 s (epoch 2), reference 60.0 s: ratio 3.0x"
    assert lines[1] == "recall@20 0.14: ours 20.0 s (epoch 2), reference 600.0 s: ratio 30.0x"
    assert lines[2].startswith("recall@20 0.2: ours 30.0 s (epoch 3); reference never (> 600.0 s)")
    assert len(lines) == 3


def test_first_evaluation_gives_a_lower_bound_and_misses_are_named(tta):
    ours = _curve([(50.0, 0.13)])
    ref = _curve([(60.0, 0.11), (300.0, 0.16)])
    lines = tta.compare_curves(ours, ref, target=0.16)
    assert lines[0] == "recall@20 0.11: ours 50.0 s (epoch 1), reference 60.0 s: ratio >= 1.2x"
    assert lines[1] == "recall@20 0.16: reference 300.0 s; ours never reached it"
    assert tta.first_reach(ours, 0.2) is None
