"""Week 8's data and starting points: week 7's v1 records and val split (drawn the same way), week 7's frozen eval
set (read by path, its hash checked) and the two models every run starts from (week 7's base and its SFT export)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.data.instruct import InstructionRecord, load_records, records_hash, split_val
from shared.evals.instruct import EvalItem, read_pinned_items
from shared.paths import REPO_ROOT, models_root
from week08_lora.config import Week08Config


class StartingPointError(FileNotFoundError):
    """A model or file week 8 starts from is missing (the message names the command that writes it)."""


@dataclass
class WeekData:
    """The training and val records, the eval items, and their hashes."""

    train: list[InstructionRecord]
    val: list[InstructionRecord]
    eval_items: list[EvalItem]
    hashes: dict[str, str]  # "train", "val", "eval_set" -> sha256


def load_eval_set(cfg: Week08Config) -> tuple[list[EvalItem], str]:
    """Week 7's frozen eval set (read by path, its sha256 pinned in ``week08_lora/configs/week08.yaml``) and its sha256.

    Raises:
        EvalSetError: the file is missing or changed.
    """
    return read_pinned_items(REPO_ROOT / cfg.eval_set.path, cfg.eval_set.sha256, cfg.eval_set.limit,
                             "week08_lora/configs/week08.yaml")


def load_week_data(cfg: Week08Config) -> WeekData:
    """Week 7's v1 records split into train and val exactly as week 7 splits them, and the eval set.

    Raises:
        CorpusError / DatasetError: a source is unknown, malformed or cannot be fetched.
    """
    records = [r for s in cfg.data.sources for r in load_records(s)]
    if cfg.data.limit:
        records = records[:cfg.data.limit]
    train, val = split_val(records, cfg.data.val_examples, cfg.data.split_seed)
    items, eval_sha = load_eval_set(cfg)
    return WeekData(train, val, items, {"train": records_hash(train), "val": records_hash(val), "eval_set": eval_sha})


def sft_model_dir(cfg: Week08Config) -> Path:
    """Week 7's SFT export (``models/<models.sft>``).

    Raises:
        StartingPointError: it is not there (run week 7 first, with the same profile).
    """
    folder = models_root() / cfg.models.sft
    if not (folder / "config.json").is_file():
        raise StartingPointError(f"week 7's SFT export {folder} is missing: week 8 starts from it. Run "
                                 "`make week07 PROFILE=<the same profile>` first")
    return folder


def base_model_dir(cfg: Week08Config, sft_dir: Path) -> Path:
    """The base model: ``models.base`` from the model registry, or (``""``) the base named in the SFT export's
    ``meta.json`` (a registry model, or a folder beside the export such as week 7's tiny CI base).

    Raises:
        StartingPointError: the named base is neither a registry model nor a folder beside the export.
        ModelError / ModelUnavailableError: the registry model cannot be fetched or converted (``make models``).
    """
    name = cfg.models.base
    if not name:
        meta = json.loads((sft_dir / "meta.json").read_text())
        name = meta["base_model"]
        beside = sft_dir.parent / name
        if (beside / "config.json").is_file():
            return beside
    from shared.models.fetch import prepare_model
    from shared.models.registry import REGISTRY

    if name not in REGISTRY:
        raise StartingPointError(f"base model {name!r} is neither in the model registry ({', '.join(REGISTRY)}) "
                                 f"nor a folder beside {sft_dir}: set models.base to a registry name")
    return prepare_model(name)
