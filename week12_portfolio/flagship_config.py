"""The flagship pipeline's config: one GPT through pre-training, SFT, LoRA, DPO and serving, each stage's sizes.

Defaults <- ``configs/flagship.yaml`` <- ``configs/profiles/flagship-<profile>.yaml`` <- ``key=value`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import ConfigError, at_least, in_range, load_config, positive

WEEK_DIR = Path(__file__).resolve().parent
STAGES = ("pretrain", "sft", "lora", "dpo", "serve")


@dataclass
class PretrainStage:
    """The project's GPT (week 5's recipe: pre-LN, GELU, learned positions, tied head) on a mixed English corpus."""

    corpus: list[str] = field(default_factory=lambda: ["tiny_shakespeare", "alpaca"])  # registered text sources; an
    #   instruction source contributes only the records outside the SFT stage's val split
    tokenizer: str = "sentencepiece"  # "bpe" (hand-written) or "sentencepiece" (the library reference)
    vocab_size: int = at_least(260, 2048)
    n_layer: int = at_least(1, 4)
    n_head: int = at_least(1, 4)
    n_embd: int = at_least(8, 128)
    block_size: int = at_least(16, 256)
    steps: int = at_least(1, 600)
    micro_batch: int = at_least(1, 16)
    lr: float = positive(1e-3)
    eval_every: int = at_least(1, 100)
    eval_iters: int = at_least(1, 8)


@dataclass
class SFTStage:
    """Full fine-tuning on instruction records with the response-only loss (week 7's task)."""

    sources: list[str] = field(default_factory=lambda: ["alpaca"])
    limit: int = at_least(0, 0)  # records read (0: all)
    val_examples: int = at_least(1, 32)
    template: str = "alpaca"
    steps: int = at_least(1, 200)
    micro_batch: int = at_least(1, 8)
    lr: float = positive(5e-4)
    eval_every: int = at_least(1, 50)


@dataclass
class LoRAStage:
    """LoRA (week 8) on a second instruction set, merged into the weights at the end."""

    sources: list[str] = field(default_factory=lambda: ["llms_from_scratch_ch07"])
    val_examples: int = at_least(1, 32)
    r: int = at_least(1, 8)
    alpha: float = positive(16.0)
    target_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    steps: int = at_least(1, 100)
    micro_batch: int = at_least(1, 8)
    lr: float = positive(1e-3)
    eval_every: int = at_least(1, 50)


@dataclass
class DPOStage:
    """DPO (week 9) with LoRA adapters; the reference is the same model with the adapters off; merged at the end."""

    sources: list[str] = field(default_factory=lambda: ["llms_from_scratch_ch07"])
    val_pairs: int = at_least(1, 32)  # held-out pairs (by prompt) for the preference accuracy
    beta: float = positive(0.1)
    r: int = at_least(1, 8)
    alpha: float = positive(16.0)
    target_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    steps: int = at_least(1, 100)
    micro_batch: int = at_least(1, 4)
    lr: float = positive(5e-4)
    eval_every: int = at_least(1, 50)


@dataclass
class EvalStage:
    """The eval harness row after every stage: week 7's frozen eval set, greedy answers, the same scorer."""

    path: str = "week07_sft/data/eval_set.jsonl"  # week 7's committed eval set, read by path (an output, not code)
    sha256: str = "19c7a0726842071f9c1a1acc36c2ed96e6f6ee323099a0884ea8e246d62133e2"  # pinned as in week 7
    items: int = at_least(0, 40)  # the first n items (0: all)
    max_new_tokens: int = at_least(1, 64)
    batch_size: int = at_least(1, 8)


@dataclass
class ServeStage:
    """The last model behind the continuous-batching engine (week 11): answers equal to plain greedy decoding, and
    its throughput."""

    prompts: int = at_least(1, 16)  # eval prompts sent at once (cut to block_size - max_new_tokens tokens)
    max_new_tokens: int = at_least(1, 48)
    max_batch: int = at_least(1, 8)
    kv_block_size: int = at_least(1, 16)


@dataclass
class FlagshipConfig:
    """The whole pipeline (``make flagship``)."""

    seed: int = at_least(0, 0)
    budget_s: float = positive(3600.0)  # the profile's time budget for the pipeline (seconds), checked in the log
    pretrain: PretrainStage = field(default_factory=PretrainStage)
    sft: SFTStage = field(default_factory=SFTStage)
    lora: LoRAStage = field(default_factory=LoRAStage)
    dpo: DPOStage = field(default_factory=DPOStage)
    eval: EvalStage = field(default_factory=EvalStage)
    serve: ServeStage = field(default_factory=ServeStage)
    val_frac: float = in_range(0, 1, 0.05, lo_open=True, hi_open=True)  # the pre-training corpus's held-out share


def flagship_files(profile: str) -> list[Path]:
    """``configs/flagship.yaml`` then the profile's ``configs/profiles/flagship-<profile>.yaml`` (when present)."""
    files = [WEEK_DIR / "configs" / "flagship.yaml"]
    prof = WEEK_DIR / "configs" / "profiles" / f"flagship-{profile}.yaml"
    return files + ([prof] if prof.is_file() else [])


def load_flagship(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> FlagshipConfig:
    """The flagship config of ``profile`` with ``key=value`` overrides.

    Raises:
        ConfigError: an unknown key, a bad value, or stage sizes that cannot fit the GPT's window.
    """
    cfg = load_config(FlagshipConfig, flagship_files(profile), overrides)
    block = cfg.pretrain.block_size
    if cfg.serve.max_new_tokens >= block:
        raise ConfigError(f"serve.max_new_tokens={cfg.serve.max_new_tokens} leaves no room for a prompt in the GPT's "
                          f"window (pretrain.block_size={block}): lower it below {block}")
    if cfg.pretrain.n_embd % cfg.pretrain.n_head:
        raise ConfigError(f"pretrain.n_embd={cfg.pretrain.n_embd} is not a multiple of pretrain.n_head="
                          f"{cfg.pretrain.n_head}")
    return cfg
