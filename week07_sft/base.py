"""The model every SFT run starts from, as a Hugging Face folder that the project, TRL and the harness all load.

``base.source=registry``: the registry's prepared folder (SmolLM2-135M-Instruct, dequantised once from its GGUF).
``base.source=tiny_llama`` (CI): :func:`shared.models.tiny.write_tiny_llama` (a random Llama and a byte-level BPE
trained on the training records), written once to ``models/week07/tiny-base-<hash>/`` from the seed, so no file is
downloaded and every stage runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from shared.data.instruct import InstructionRecord
from shared.data.sources import record_text
from shared.paths import models_root
from week07_sft.config import BaseModelConfig


def base_model_dir(cfg: BaseModelConfig, records: Sequence[InstructionRecord], data_hash: str = "") -> Path:
    """The base model's folder, prepared on first use (``tiny_llama``: keyed by ``cfg`` and ``data_hash``, the
    sha256 of the records its tokenizer is trained on).

    Raises:
        ModelError / ModelUnavailableError: the registry model cannot be fetched or converted (``make models``).
    """
    if cfg.source == "registry":
        from shared.models.fetch import prepare_model

        return prepare_model(cfg.name)
    key = hashlib.sha256(json.dumps({**asdict(cfg), "data": data_hash}, sort_keys=True).encode()).hexdigest()[:8]
    folder = models_root() / "week07" / f"tiny-base-{key}"
    if (folder / "config.json").is_file():
        return folder
    from shared.models.tiny import write_tiny_llama

    return write_tiny_llama(folder, [record_text(r.to_json()) for r in records], cfg.vocab_size, cfg.hidden_size,
                            cfg.num_layers, cfg.num_heads, cfg.seed)
