"""Week 10's two tasks: the week-5 LM (a corpus -> tokenizer -> packed stream, prepared once under this week's
namespace) and the week-7 SFT task (instruction records on SmolLM2's tokenizer, or a tiny Llama's in CI). Rank 0
prepares every file first; the other ranks then read the verified outputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from shared.data.instruct import load_records, records_hash, split_val
from shared.data.lm import LMData, prepare_lm_data
from shared.dist import DistInfo, barrier
from shared.paths import models_root
from shared.tasks.sft import SFTTask, sft_task_from_records
from week10_fsdp.config import SFTBase, Week10Config

T = TypeVar("T")
NAMESPACE = "week10"


def rank0_first(info: DistInfo, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks (which then find its files made and verified)."""
    if not info.is_main:
        barrier()
    out = fn()
    if info.is_main:
        barrier()
    return out


def lm_data(cfg: Week10Config, info: DistInfo) -> LMData:
    """The week-5 LM's data (:func:`shared.data.lm.prepare_lm_data`, this week's namespace)."""
    return rank0_first(info, lambda: prepare_lm_data(cfg.lm_data, NAMESPACE, cfg.lm.block_size))


@dataclass
class SFTData:
    """The SFT task, its tokenizer and the folder of the model it starts from."""

    task: SFTTask
    tokenizer: Any
    base_dir: Path
    hashes: dict[str, str]  # "train", "val" -> sha256 of the records; "base_weights" -> of the start model's weights
    dropped: int  # training examples longer than sft.task.max_length


LM_EXPORT = "lm-fsdp2"  # under models/week10/: the FSDP2 LM run's Hugging Face export


class StartingPointError(FileNotFoundError):
    """The SFT task's start model is missing (the message says which stage writes it)."""


def base_dir(base: SFTBase, texts: list[str]) -> Path:
    """The week's own LM export, SmolLM2's prepared registry folder, or a tiny random Llama written once under
    ``models/week10/``.

    Raises:
        StartingPointError: ``lm_export`` before the FSDP2 LM run was exported (the week's LM stage writes it).
        ModelError / ModelUnavailableError: the registry model cannot be fetched or converted (``make models``).
    """
    if base.source == "lm_export":
        folder = models_root() / NAMESPACE / LM_EXPORT
        if not (folder / "config.json").is_file():
            raise StartingPointError(f"{folder} is missing: the week's LM stage exports it before the SFT runs "
                                     "(sft.base.source=lm_export needs the parity runs, i.e. a torchrun launch)")
        return folder
    if base.source == "registry":
        from shared.models.fetch import prepare_model

        return prepare_model(base.name)
    key = hashlib.sha256(json.dumps({**asdict(base), "texts": len(texts)}, sort_keys=True).encode()).hexdigest()[:8]
    folder = models_root() / NAMESPACE / f"tiny-base-{key}"
    if not (folder / "config.json").is_file():
        from shared.models.tiny import write_tiny_llama

        write_tiny_llama(folder, texts, base.vocab_size, base.hidden_size, base.num_layers, base.num_heads)
    return folder


def sft_data(cfg: Week10Config, info: DistInfo) -> SFTData:
    """Records -> split -> the base model's folder -> its tokenizer -> the response-only SFT task."""
    from shared.data.sources import record_text
    from shared.data.tokenizer import load_tokenizer

    s = cfg.sft

    def prepare() -> SFTData:
        records = [r for src in s.sources for r in load_records(src)]
        records = records[:s.limit] if s.limit else records
        train, val = split_val(records, s.val_examples, s.split_seed)
        folder = base_dir(s.base, [record_text(r.to_json()) for r in train])
        tok = load_tokenizer(folder)
        task, enc = sft_task_from_records(train, val, tok, s.task, cfg.loop.seed)
        from shared.models.loading import weights_sha256

        hashes = {"train": records_hash(train), "val": records_hash(val), "base_weights": weights_sha256(folder)}
        return SFTData(task, tok, folder, hashes, len(enc.dropped))

    return rank0_first(info, prepare)


def build_sft_model(folder: Path, n_layer: int) -> Callable[[torch.device], nn.Module]:
    """``device -> model`` of the export in ``folder`` in fp32: the project's GPT for a :func:`shared.models.hf.save_hf`
    export, else an ``HFCausalLM`` (``n_layer`` > 0 keeps its first n blocks; ``from_pretrained`` skips the rest)."""

    def build(device: torch.device) -> nn.Module:
        if (Path(folder) / "aifs_export.json").is_file():  # the project's GPT, exported by save_hf
            from shared.models.hf import load_hf

            return load_hf(folder).train().to(device)
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        from shared.models.causal_lm import HFCausalLM

        kw = {"num_hidden_layers": n_layer} if n_layer else {}
        level = logging.get_verbosity()
        logging.set_verbosity_error()  # the skipped blocks would each be listed as an "unexpected" key
        try:
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw)
        finally:
            logging.set_verbosity(level)
        return HFCausalLM(hf).to(device)

    return build
