"""Week 11's config: the models measured, each measurement's sizes (cache, attention backends, engine, the weeks-7–9
models, quantisation, export, serving, chat page) and the checks' thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cli import config_files
from shared.config import ConfigError, at_least, load_config, positive
from week11_inference.bench_attention import AttentionBenchConfig
from week11_inference.bench_cache import CacheBenchConfig
from week11_inference.bench_engine import EngineBenchConfig
from week11_inference.export import ExportConfig
from week11_inference.quantize import QuantConfig
from week11_inference.serving import ServingConfig
from week11_inference.stage_models import StageModelsConfig

WEEK_DIR = Path(__file__).resolve().parent

STAGES = ("cache_check", "cache_bench", "attention", "engine", "stage_models", "quantize", "export", "serving", "chat")


@dataclass
class ModelsConfig:
    """Which models the week measures (folders under ``models/``, or registry names)."""

    gpt: str = "week10/lm-fsdp2"  # the project's GPT: the week-5 recipe's export (HF format + its tokenizer); "" = a
    #                               random debug GPT (smoke: CI has no trained export)
    gpt_corpus: str = "tiny_shakespeare"  # the corpus the GPT was trained on: its val split is scored and prompted
    hf: str = "smollm2-135m-instruct"  # the real pretrained model (registry), through transformers; "" = none (smoke)


@dataclass
class DebugGPT:
    """The random GPT that stands in for the project's when ``models.gpt`` is empty (smoke), and the tokens its
    engine benchmark prompts are cut from."""

    vocab_size: int = at_least(16, 512)
    block_size: int = at_least(16, 128)
    n_layer: int = at_least(1, 2)
    n_head: int = at_least(1, 2)
    n_embd: int = at_least(8, 64)


@dataclass
class CacheCheckConfig:
    """Cache = no-cache on the real models (the debug-model version is a unit test)."""

    prompt_lengths: list[int] = field(default_factory=lambda: [5, 17, 11])  # a left-padded batch of 3 prompts
    gpt_new_tokens: int = at_least(1, 96)  # cut to the GPT's block_size minus the longest prompt
    hf_new_tokens: int = at_least(1, 64)  # SmolLM2 with and without transformers' use_cache
    hf: bool = True  # run the HF path (SmolLM2) too


@dataclass
class GreedyRerunConfig:
    """A rerun gives the same greedy tokens: fixed prompts decoded again, compared with the recorded run's tokens."""

    prompts: int = at_least(1, 4)
    new_tokens: int = at_least(1, 32)


@dataclass
class QuantHFConfig:
    """int8 quantisation of a Hugging Face export, scored by the week-7 instruction harness."""

    model: str = "week07/sft-v1"  # folder under models/ (week 7's SFT of SmolLM2)
    items: int = at_least(0, 4)  # harness items (0 = skip this part)
    template: str = "alpaca"  # the prompt format week 7 trained with
    max_new_tokens: int = at_least(1, 64)  # per harness answer


@dataclass
class ChatConfig:
    """The chat page's headless-browser check: the project's GPT behind the page."""

    browser: bool = True  # open the page in /usr/bin/chromium (SKIP with the reason when it is missing)
    prompt: str = "ROMEO:"  # what the browser types (the GPT continues Shakespeare)
    max_tokens: int = at_least(1, 32)


@dataclass
class RunsConfig:
    fresh: bool = False  # measure again in new run folders instead of reusing finished runs of the same config


@dataclass
class CheckConfig:
    """Thresholds of the week's checks."""

    time_budget_s: float = positive(1800.0)
    logits_atol: float = positive(1e-5)  # cache vs no-cache, fp32, every step
    cache_speedup_min: float = positive(5.0)  # the plan's CPU target: cache / no-cache tokens/s at 512 new tokens
    cache_speedup_tokens: int = at_least(1, 512)  # ... for this many new tokens, batch 1, on the bench's GPT shape
    memory_rtol: float = at_least(0.0, 0.0)  # |cache bytes / (2 · n_layer · B · T · n_embd · bytes) − 1| (exact: 0)
    onnx_atol: float = positive(1e-4)  # onnxruntime vs eager logits, fp32
    int8_ppl_ratio_max: float = positive(1.10)  # int8 / fp32 val perplexity of the project's GPT


@dataclass
class Week11Config:
    """Top level of ``configs/week11.yaml``."""

    stages: list[str] = field(default_factory=lambda: list(STAGES))
    models: ModelsConfig = field(default_factory=ModelsConfig)
    debug_gpt: DebugGPT = field(default_factory=DebugGPT)
    cache_check: CacheCheckConfig = field(default_factory=CacheCheckConfig)
    cache_bench: CacheBenchConfig = field(default_factory=CacheBenchConfig)
    hf_cache_bench: CacheBenchConfig = field(default_factory=lambda: CacheBenchConfig(
        name="smollm2-135m", new_tokens=(128, 512), batches=(1, 8), budget_s=300.0))
    attention: AttentionBenchConfig = field(default_factory=AttentionBenchConfig)
    engine: EngineBenchConfig = field(default_factory=EngineBenchConfig)
    stage_models: StageModelsConfig = field(default_factory=StageModelsConfig)
    quantize: QuantConfig = field(default_factory=QuantConfig)
    quantize_hf: QuantHFConfig = field(default_factory=QuantHFConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    greedy: GreedyRerunConfig = field(default_factory=GreedyRerunConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    runs: RunsConfig = field(default_factory=RunsConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


def load(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> Week11Config:
    """Defaults <- ``week11.yaml`` <- ``profiles/<profile>.yaml`` <- ``key=value`` overrides.

    Raises:
        ConfigError: an unknown stage (listing the stages) or any bad value.
    """
    cfg = load_config(Week11Config, config_files(WEEK_DIR, "week11.yaml", profile), overrides)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages has {unknown}: choose from {', '.join(STAGES)}")
    return cfg
