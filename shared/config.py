"""Typed, layered configuration: dataclass defaults <- YAML files <- ``key=value`` overrides.

Each component owns a small dataclass (``TrainConfig``, ``MNISTConfig``, ...); a week composes them
into one top-level dataclass. OmegaConf structured configs do the merging and type checking
(https://omegaconf.readthedocs.io/en/latest/structured_config.html); this module turns their
exceptions into one :class:`ConfigError` that names the bad key and lists the valid ones.

Ranges live on the fields themselves: ``lr: float = positive(1e-3)``, ``micro_batch: int = at_least(1, 64)``,
``dropout: float = in_range(0, 1, 0.0, hi_open=True)``. After merging, :func:`load_config` checks every such field
of the resolved config (:func:`check_ranges`), so a value that torch would only reject with a traceback (a
negative lr, a batch of 0, a context of a billion tokens) stops here, named by its dotted key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from shared.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key, gives a value of the wrong type, or one out of range."""


RANGE = "range"  # the dataclass field metadata key that :func:`check_ranges` reads


@dataclass(frozen=True)
class Range:
    """The values a numeric config field accepts: ``lo``/``hi`` bounds (``None`` = unbounded), each inclusive unless
    ``lo_open``/``hi_open``; ``why`` is added to the error (what the bound protects)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def describe(self) -> str:
        """``"> 0"``, ``">= 1"``, ``"in [0, 1)"``, ``"<= 1048576"``."""
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}"

    def accepts(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def _fmt(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else str(v)


def in_range(lo: float | None, hi: float | None, default: Any, *, lo_open: bool = False, hi_open: bool = False,
             why: str = "") -> Any:
    """A dataclass field with ``default`` whose value must lie between ``lo`` and ``hi`` (see :class:`Range`)."""
    return dataclasses.field(default=default, metadata={RANGE: Range(lo, hi, lo_open, hi_open, why)})


def at_least(lo: float, default: Any, why: str = "") -> Any:
    """A field whose value must be ``>= lo`` (``at_least(1, 64)`` for a batch size, ``at_least(0, 0)`` for
    "0 = off")."""
    return in_range(lo, None, default, why=why)


def positive(default: Any, why: str = "") -> Any:
    """A field whose value must be ``> 0`` (a learning rate, an epsilon)."""
    return in_range(0, None, default, lo_open=True, why=why)


class ChoiceError(ValueError):
    """A config value that is not one of the allowed names (raised by :func:`choose`)."""

    def __init__(self, key: str, value: str, allowed: list[str]) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(self.message(key))

    def message(self, key: str) -> str:
        return f"unknown {key} '{self.value}'. Choose one of: {', '.join(self.allowed)}"


def choose(key: str, value: str, allowed: Iterable[str]) -> None:
    """For a section's ``validate()``: raises :class:`ChoiceError` naming ``key`` (the section's usual dotted key,
    e.g. ``optim.name``; :func:`load_config` puts the actual one in) and the allowed values unless ``value`` is one of
    them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ChoiceError(key, value, allowed)


def _sections(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted prefix, section)`` for every dataclass instance in ``obj``: itself, nested fields, list and dict
    items (``ablation[0].``), outermost first."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield prefix, obj
        for f in dataclasses.fields(obj):
            yield from _sections(getattr(obj, f.name), f"{prefix}{f.name}.")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _sections(item, f"{prefix[:-1]}[{i}].")
    elif isinstance(obj, dict):
        for k, item in obj.items():
            yield from _sections(item, f"{prefix}{k}.")


def check_ranges(cfg: Any, sources: dict[str, str] | None = None) -> None:
    """Check every field declared with :func:`in_range`, :func:`at_least` or :func:`positive`, in nested
    dataclasses, lists and dicts too (NaN and infinity are never in range).

    Args:
        cfg: a config dataclass instance.
        sources: dotted key -> where its value was set (a file, "command line"), for the message.

    Raises:
        ConfigError: one line per value out of range, ``optim.lr=-1: must be > 0 (from command line)``, and the fix.
    """
    bad = [(f"{prefix}{f.name}", getattr(section, f.name), f.metadata[RANGE])
           for prefix, section in _sections(cfg) for f in dataclasses.fields(section) if RANGE in f.metadata]
    bad = [(key, v, rule) for key, v, rule in bad
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not rule.accepts(v)]
    if not bad:
        return
    sources = sources or {}
    lines = []
    for key, value, rule in bad:
        origin = f" (from {sources[key]})" if key in sources else ""
        lines.append(f"{key}={_fmt(value)}: must be {rule.describe()}{origin}" + (f"; {rule.why}" if rule.why else ""))
    fix = (f"set {bad[0][0]} to a value {bad[0][2].describe()}" if len(bad) == 1 else
           f"set each of {', '.join(key for key, _, _ in bad)} to a value in its range")
    raise ConfigError("; ".join(lines) + f". Fix: {fix} (in the config file, or on the command line as key=value).")


def run_validators(cfg: Any) -> None:
    """Call ``validate()`` on every section that has one (the checks across fields, e.g. ``model.n_head`` must
    divide ``model.n_embd``).

    Raises:
        ConfigError: a section's ``validate`` raised ValueError (its message names the keys and the fix).
    """
    for prefix, section in _sections(cfg):
        check = getattr(section, "validate", None)
        if callable(check):
            try:
                check()
            except ChoiceError as e:  # named where this section sits (week 2's cnn.name, not model.name)
                raise ConfigError(e.message(prefix + e.key.rpartition(".")[2])) from None
            except ValueError as e:
                raise ConfigError(str(e)) from None


def _set_keys(node: Any, prefix: str = "") -> Iterable[str]:
    """The dotted keys a YAML layer or override sets (leaves only)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _set_keys(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


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
        ConfigError: an unknown key, a wrong type, a value out of its field's range (:func:`check_ranges`), a
            missing or unreadable file or a malformed override, naming the key (and the valid keys) or the file.
    """
    cfg = OmegaConf.structured(schema)
    sources: dict[str, str] = {}
    for path in yaml_files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        layer = _load_yaml(path)
        cfg = _merge(cfg, layer, str(path))
        sources.update(dict.fromkeys(_set_keys(OmegaConf.to_container(layer)), str(path)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=0.05)")
        sources[item.split("=", 1)[0].strip()] = "command line"
    if overrides:
        cfg = _merge(cfg, OmegaConf.merge(*(_parse_override(item) for item in overrides)), "command line")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:  # e.g. a required field (MISSING) never set
        raise ConfigError(f"incomplete config: {e}") from None
    check_ranges(obj, sources)
    run_validators(obj)
    return obj


def _yaml_problem(e: Exception) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        return e.problem or e.context or str(e).splitlines()[0]
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _load_yaml(path: Path) -> DictConfig:
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML ({_yaml_problem(e)}{where}). Fix the file.") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config file {path} holds a {type(layer).__name__}, not a mapping of sections (such as "
                          "'train:' with 'lr: 0.05' below it). Fix the file.")
    return layer


def _parse_override(item: str) -> DictConfig:
    try:
        return OmegaConf.from_dotlist([item])
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"override {item}: not a valid value ({_yaml_problem(e)}). Fix: write a number, a word, a "
                          "closed list such as [1,2] or a quoted string such as \"'a:b'\".") from None


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
