"""Typed, layered configuration: dataclass defaults <- YAML files <- ``key=value`` overrides.

Each component owns a small dataclass (``TrainConfig``, ``MNISTConfig``, ...); a week composes them
into one top-level dataclass. OmegaConf structured configs do the merging and type checking
(https://omegaconf.readthedocs.io/en/latest/structured_config.html); this module turns their
exceptions into one :class:`ConfigError` that names the bad key and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from shared.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


def _valid_keys(schema_cfg: DictConfig, full_key: str) -> list[str]:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema_cfg, parent) if parent else schema_cfg
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _merge(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = str(e.full_key or e.key)
        valid = ", ".join(_valid_keys(base, key))
        raise ConfigError(
            f"unknown config key '{key}' (from {source}). Valid keys here: {valid}. "
            "Fix the spelling or remove the key."
        ) from None
    except ValidationError as e:
        key = str(e.full_key or e.key)
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        expected = OmegaConf.get_type(node, leaf) if isinstance(node, DictConfig) and leaf in node else None
        raise ConfigError(
            f"wrong type for config key '{key}' (from {source}): {e.msg}. "
            f"Expected {getattr(expected, '__name__', expected)}."
        ) from None
    except OmegaConfBaseException as e:  # any other OmegaConf complaint, still named
        raise ConfigError(f"invalid config (from {source}): {e}") from None


def load_config(
    schema: type[T],
    yaml_files: Iterable[str | Path] = (),
    overrides: Sequence[str] = (),
) -> T:
    """Build a ``schema`` dataclass instance from defaults, YAML files (in order) and overrides.

    Args:
        schema: a dataclass type whose fields (possibly nested dataclasses) define the valid keys.
        yaml_files: YAML files merged left to right; later files win.
        overrides: ``"a.b=value"`` strings (command line), merged last.

    Returns:
        An instance of ``schema`` with every value type-checked.

    Raises:
        ConfigError: an unknown key, a wrong type, a missing file or a malformed override,
            naming the key (and the valid keys) or the file.
    """
    cfg = OmegaConf.structured(schema)
    for path in yaml_files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        cfg = _merge(cfg, OmegaConf.load(path), str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=0.05)")
    if overrides:
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:  # e.g. a required field (MISSING) never set
        raise ConfigError(f"incomplete config: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for JSON and tables)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_hash(cfg: Any, n: int = 8) -> str:
    """Short, stable hash of the resolved config (hex, ``n`` characters)."""
    return hashlib.sha256(to_yaml(cfg).encode()).hexdigest()[:n]


def save_config(cfg: Any, path: str | Path) -> Path:
    """Atomically write the resolved config as YAML to ``path``."""
    return atomic_write_text(path, to_yaml(cfg))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for config tables)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
