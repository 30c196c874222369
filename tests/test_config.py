from dataclasses import dataclass

import pytest

from unlearnrec.config import from_dict, override, read_toml
from unlearnrec.errors import ConfigError
from unlearnrec.train.loop import TrainConfig


@dataclass(frozen=True)
class C:
    a: int = 1
    b: float = 0.5
    c: tuple[int, ...] = (1, 2)
    d: str | None = None


def test_types_and_unknown_keys():
    assert from_dict(C, {"a": 3, "b": 2, "c": [5]}) == C(3, 2.0, (5,))
    with pytest.raises(ConfigError, match="unknown config key 'x'"):
        from_dict(C, {"x": 1})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(C, {"a": 1.5})
    with pytest.raises(ConfigError, match="expected a number"):
        from_dict(C, {"b": "fast"})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(C, {"a": True})


def test_invalid_values_are_config_errors():
    with pytest.raises(ConfigError):
        from_dict(TrainConfig, {"lr": -1.0})


def test_override_and_toml(tmp_path):
    assert override(C(), a=7, b=None).a == 7
    p = tmp_path / "c.toml"
    p.write_text("[train]\nepochs = 3\n")
    assert read_toml(p) == {"train": {"epochs": 3}}
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(p)
    with pytest.raises(ConfigError, match="not found"):
        read_toml(tmp_path / "nope.toml")
