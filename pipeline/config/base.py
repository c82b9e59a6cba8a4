"""Strict pydantic base model and YAML loading with one-line errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import ConfigError

LOG = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are rejected, values are re-validated on
    assignment, and the docstring under each field becomes its description."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Turn a pydantic ``ValidationError`` into one line naming the source and the keys.

    Parameters
    ----------
    exc : pydantic.ValidationError
        The error raised by ``model_validate``.
    source : str
        The file (or ``"<defaults>"``) the values came from.

    Returns
    -------
    str
        For example ``"configs/x.yaml: key 'channels.Hoechst.gamma': Input should be
        greater than 0 (got -1)"``; several problems are joined by ``"; "``.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"key '{loc}': {msg}")
    return f"{source}: " + "; ".join(parts)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping gives the same key twice (YAML would silently keep the last value)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"line {line}: key '{key}' is given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; an empty file gives ``{}``.

    Raises
    ------
    ConfigError
        If the file is missing, not valid YAML, or not a mapping.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(model: type[M], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> M:
    """Build a validated config from embedded defaults, a YAML file and overrides.

    Parameters
    ----------
    model : type
        The stage's pydantic model, e.g. ``PreprocessConfig``.
    path : str or Path, optional
        YAML file with (a subset of) the model's keys. Without it the embedded
        defaults are used.
    overrides : dict, optional
        Values from command-line options; ``None`` values are ignored. Nested
        keys are merged into the file's values.

    Returns
    -------
    model instance

    Raises
    ------
    ConfigError
        Naming the file and every offending key.
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    if overrides:
        data = deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    source = str(path) if path is not None else "<defaults>"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def with_overrides(config: M, overrides: dict[str, Any], source: str = "command line") -> M:
    """``config`` with the command line's values applied (``None``: not given) and validated again.

    Raises
    ------
    ConfigError
        In one line naming ``source`` and the offending keys, where the combination is invalid
        (e.g. an option that another option or the config file rules out).
    """
    data = config.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return type(config).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``update`` (neither is modified)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """The config as plain JSON-compatible data (for attributes and YAML)."""
    return config.model_dump(mode="json")


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write a config as YAML that :func:`load_config` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
