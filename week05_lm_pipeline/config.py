"""Week 5's config: corpus and tokenizer, model, training, eval, and the checks' thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from shared.cli import config_files
from shared.config import load_config
from shared.data.corpus import CorpusConfig
from shared.models.gpt import GPTConfig
from shared.train.lm import LMTrainConfig

WEEK_DIR = Path(__file__).resolve().parent


@dataclass
class DataConfig(CorpusConfig):
    """The corpus (see :class:`CorpusConfig`), the tokenizer trained on its training documents, and packing."""

    vocab_size: int = 4096  # BPE vocabulary, including 4 specials and 256 byte-fallback pieces
    tokenizer_max_lines: int = 2_000_000  # training lines sampled for the tokenizer (seeded)
    pad_vocab_to: int = 64  # the model's vocab_size is rounded up to a multiple of this (GPU-friendly matmuls)


@dataclass
class EvalConfig:
    """The fixed validation set of the perplexity stage."""

    max_tokens: int = 0  # evaluate the first N tokens of val.bin (0 = all)
    batch_size: int = 16  # windows per forward pass (the result does not depend on it)


@dataclass
class SampleConfig:
    """The story sample written into the log from the final checkpoint."""

    prompt: str = ""  # generation starts from BOS + this text
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 50
    seed: int = 0


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    roundtrip_docs: int = 1000  # val documents that must survive decode(encode(x)) exactly
    sample_known_words: float = 0.6  # share of the sample's words that must occur in the training text
    time_budget_s: float = 1200.0  # the whole pipeline, seconds


@dataclass
class Week05Config:
    """Top level of ``configs/pipeline.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


@dataclass
class TrainRunConfig:
    """What identifies a training run (and so what a re-run resumes): the data, the model and the training
    settings except those that only say when to stop or how to show progress."""

    data: DataConfig
    model: GPTConfig
    train: LMTrainConfig


def train_run_config(cfg: Week05Config) -> TrainRunConfig:
    return TrainRunConfig(cfg.data, cfg.model, replace(cfg.train, stop_at=0, resume=True, progress=True))


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week05Config:
    """Defaults <- ``pipeline.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides."""
    return load_config(Week05Config, config_files(WEEK_DIR, "pipeline.yaml", profile), overrides)
