"""Config loading: unknown keys and wrong types are named with the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from pipeline.config import StrictModel, load_config, save_config
from pipeline.config.cluster import ClusterConfig
from pipeline.errors import ConfigError


class Inner(StrictModel):
    gamma: float = Field(1.0, gt=0)
    """Gamma."""


class Demo(StrictModel):
    name: str = "x"
    """A name."""
    inner: Inner = Field(default_factory=Inner)
    """Nested."""


def test_defaults_without_file():
    assert load_config(Demo).inner.gamma == 1.0


def test_unknown_key_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  gama: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(Demo, path)
    msg = str(info.value)
    assert str(path) in msg and "inner.gama" in msg and "unknown key" in msg
    assert "\n" not in msg


def test_wrong_type_and_range_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  gamma: -1\n")
    with pytest.raises(ConfigError, match=r"inner\.gamma.*greater than 0.*got -1"):
        load_config(Demo, path)


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Demo, tmp_path / "missing.yaml")
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Demo, path)


def test_save_roundtrip(tmp_path):
    cfg = Demo(name="y", inner=Inner(gamma=0.5))
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Demo, tmp_path / "out.yaml") == cfg


def test_cluster_address_needs_address():
    with pytest.raises(Exception, match="address"):
        ClusterConfig(kind="address")


def test_shipped_configs_load():
    """Every YAML in configs/ validates against the model named in its first line."""
    import importlib

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(configs.glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# model: "), f"{path.name} must start with '# model: module:Class'"
        module, cls = first[len("# model: ") :].strip().split(":")
        model = getattr(importlib.import_module(module), cls)
        load_config(model, path)
