"""The project's GPT as a Hugging Face model and back: same network, same weights, logits equal to fp32 rounding.

Two variants of :class:`shared.models.gpt.GPT` have an exact Hugging Face twin (everything pre-LN):

- ``norm=rmsnorm, pos=rope, mlp=swiglu`` -> ``LlamaForCausalLM``
  (https://huggingface.co/docs/transformers/model_doc/llama): the fused ``c_attn`` (3C, C) splits into
  ``q_proj``/``k_proj``/``v_proj`` (C, C) each; ``c_gate``/``c_fc``/``c_proj`` are ``gate_proj``/``up_proj``/``down_proj``.
- ``norm=layernorm, pos=learned, mlp=gelu`` -> ``GPT2LMHeadModel``
  (https://huggingface.co/docs/transformers/model_doc/gpt2): GPT-2's ``Conv1D`` stores its weight as (in, out), the
  transpose of ``nn.Linear``'s (out, in); its activation is ``"gelu"`` (the exact erf GELU ours uses, not
  ``"gelu_new"``, the tanh approximation of the original GPT-2 checkpoints).

:func:`to_hf` / :func:`from_hf` convert in memory; :func:`save_hf` / :func:`load_hf` go through a folder that
``AutoModelForCausalLM.from_pretrained`` reads (safetensors + config.json), plus ``aifs_export.json`` (the
GPTConfig, the tokenizer's sha256, the caller's meta). ``transformers`` is imported inside the functions only, so
importing this module costs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.models.gpt import GPT, GPTConfig
from shared.nn.layers import default_mlp_width

EXPORT_FILE = "aifs_export.json"  # written beside the weights by save_hf
META_FILE = "meta.json"  # written beside the weights by save_pretrained_hf (base model, data, config hash)
CHAR_TOKENIZER_FILE = "char_tokenizer.json"  # a CharTokenizer's file in an export ("tokenizer.json" means HF's)
BPE_TOKENIZER_FILE = "tokenizer.bpe.json"  # a byte-level BPETokenizer's file in an export
SPM_TOKENIZER_FILE = "tokenizer.model"  # a SentencePieceTokenizer's file in an export
# The exportable variants: the GPTConfig switches each Hugging Face class implements.
VARIANTS = {
    "LlamaForCausalLM": {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu", "norm_placement": "pre"},
    "GPT2LMHeadModel": {"norm": "layernorm", "pos": "learned", "mlp": "gelu", "norm_placement": "pre"},
}


def _variants_text() -> str:
    return " and ".join(f"{cls} ({', '.join(f'{k}={v}' for k, v in sw.items())})" for cls, sw in VARIANTS.items())


def hf_class_name(cfg: GPTConfig) -> str:
    """The Hugging Face class that implements ``cfg``'s network: ``"LlamaForCausalLM"`` or ``"GPT2LMHeadModel"``.

    Raises:
        ValueError: no class does; the message names the settings that differ from the nearest exportable
            variant and lists both variants.
    """
    mismatches = {cls: [k for k, v in sw.items() if getattr(cfg, k) != v] for cls, sw in VARIANTS.items()}
    nearest = min(mismatches, key=lambda cls: len(mismatches[cls]))  # ties: the first (Llama)
    if not mismatches[nearest]:
        return nearest
    bad = ", ".join(f"model.{k}='{getattr(cfg, k)}'" for k in mismatches[nearest])
    raise ValueError(f"cannot export this GPT to Hugging Face: {bad} is not supported (the nearest variant is "
                     f"{nearest}). The exportable variants are {_variants_text()}.")


def _mlp_width(cfg: GPTConfig) -> int:
    """The MLP's actual hidden width."""
    return cfg.d_ff or default_mlp_width(cfg.mlp, cfg.n_embd)


# ---- state-dict maps: ours (nn.Linear, (out, in)) <-> Hugging Face ----

def _to_llama_state(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": sd["wte.weight"], "model.norm.weight": sd["norm_f.weight"],
           "lm_head.weight": sd["lm_head.weight"]}
    names = {"attn.c_proj": "self_attn.o_proj", "mlp.c_gate": "mlp.gate_proj", "mlp.c_fc": "mlp.up_proj",
             "mlp.c_proj": "mlp.down_proj"}
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = sd[ours + "norm1.weight"]
        out[hf + "post_attention_layernorm.weight"] = sd[ours + "norm2.weight"]
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            q, k, v = sd[f"{ours}attn.c_attn.{kind}"].chunk(3, dim=0)  # (3C, C) -> 3 x (C, C); bias (3C,) -> 3 x (C,)
            for name, t in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{hf}self_attn.{name}.{kind}"] = t.contiguous()
            for a, b in names.items():
                out[f"{hf}{b}.{kind}"] = sd[f"{ours}{a}.{kind}"]
    return out


def _from_llama_state(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    out = {"wte.weight": sd["model.embed_tokens.weight"], "norm_f.weight": sd["model.norm.weight"],
           "lm_head.weight": sd["model.embed_tokens.weight"] if cfg.tie_weights else sd["lm_head.weight"]}
    names = {"attn.c_proj": "self_attn.o_proj", "mlp.c_gate": "mlp.gate_proj", "mlp.c_fc": "mlp.up_proj",
             "mlp.c_proj": "mlp.down_proj"}
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[ours + "norm1.weight"] = sd[hf + "input_layernorm.weight"]
        out[ours + "norm2.weight"] = sd[hf + "post_attention_layernorm.weight"]
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            out[f"{ours}attn.c_attn.{kind}"] = torch.cat([sd[f"{hf}self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")])
            for a, b in names.items():
                out[f"{ours}{a}.{kind}"] = sd[f"{hf}{b}.{kind}"]
    return out


_GPT2_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # same names on both sides
_GPT2_NORMS = {"norm1": "ln_1", "norm2": "ln_2"}


def _to_gpt2_state(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    def bias_of(key: str, n: int) -> torch.Tensor:  # a bias-free GPT exports zero biases (GPT-2 always has them)
        return sd[key] if key in sd else sd["wte.weight"].new_zeros(n)

    c = cfg.n_embd
    out = {"transformer.wte.weight": sd["wte.weight"], "transformer.wpe.weight": sd["wpe.weight.weight"],
           "transformer.ln_f.weight": sd["norm_f.weight"], "transformer.ln_f.bias": bias_of("norm_f.bias", c),
           "lm_head.weight": sd["lm_head.weight"]}
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in _GPT2_NORMS.items():
            out[f"{hf}{b}.weight"] = sd[f"{ours}{a}.weight"]
            out[f"{hf}{b}.bias"] = bias_of(f"{ours}{a}.bias", c)
        for name in _GPT2_LINEARS:
            w = sd[f"{ours}{name}.weight"]  # (out, in)
            out[f"{hf}{name}.weight"] = w.t().contiguous()  # Conv1D: (in, out)
            out[f"{hf}{name}.bias"] = bias_of(f"{ours}{name}.bias", w.shape[0])
    return out


def _from_gpt2_state(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    out = {"wte.weight": sd["transformer.wte.weight"], "wpe.weight.weight": sd["transformer.wpe.weight"],
           "norm_f.weight": sd["transformer.ln_f.weight"],
           "lm_head.weight": sd["transformer.wte.weight"] if cfg.tie_weights else sd["lm_head.weight"]}
    if cfg.bias:
        out["norm_f.bias"] = sd["transformer.ln_f.bias"]
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in _GPT2_NORMS.items():
            out[f"{ours}{a}.weight"] = sd[f"{hf}{b}.weight"]
            if cfg.bias:
                out[f"{ours}{a}.bias"] = sd[f"{hf}{b}.bias"]
        for name in _GPT2_LINEARS:
            out[f"{ours}{name}.weight"] = sd[f"{hf}{name}.weight"].t().contiguous()  # (in, out) -> (out, in)
            if cfg.bias:
                out[f"{ours}{name}.bias"] = sd[f"{hf}{name}.bias"]
    return out


def _gpt2_biases(sd: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [t for k, t in sd.items() if k.endswith(".bias")]


# ---- in memory ----

def to_hf(model: GPT) -> nn.Module:
    """The same network as a Hugging Face ``PreTrainedModel``, with copies of ``model``'s weights.

    ``LlamaForCausalLM`` for the RMSNorm/RoPE/SwiGLU variant, ``GPT2LMHeadModel`` for the LayerNorm/learned/GELU one
    (see the module docstring). ``to_hf(model)(ids).logits`` (B, T, V) equals ``model(ids)`` (B, T, V) up to fp32
    summation order (~1e-6); the result has ``model``'s dtype, device and train/eval mode. Dropout: GPT-2 gets
    ``embd_pdrop = resid_pdrop = model.cfg.dropout`` and ``attn_pdrop = 0`` (ours has no attention-probability
    dropout); Llama has no embedding or residual dropout, so a Llama export drops ``dropout`` (equal in eval mode;
    :func:`save_hf` records it). The special-token ids are left unset (None); :func:`save_hf` sets them from a tokenizer.

    Sources: https://huggingface.co/docs/transformers/model_doc/llama#transformers.LlamaConfig,
    https://huggingface.co/docs/transformers/model_doc/gpt2#transformers.GPT2Config.

    Raises:
        TypeError: ``model`` is not a :class:`GPT` (a ``torch.compile``'d one is unwrapped).
        ValueError: the config is neither exportable variant (see :func:`hf_class_name`).
    """
    import transformers

    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: export the module it compiled
    if not isinstance(model, GPT):
        raise TypeError(f"to_hf exports a shared.models.gpt.GPT, got a {type(model).__name__}")
    cfg = model.cfg
    cls_name = hf_class_name(cfg)
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_weights, "bos_token_id": None,
              "eos_token_id": None, "pad_token_id": None}
    if cls_name == "LlamaForCausalLM":
        hf_cfg = transformers.LlamaConfig(
            hidden_size=cfg.n_embd, intermediate_size=_mlp_width(cfg), num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head, hidden_act="silu",
            max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_base)},
            attention_bias=cfg.bias, mlp_bias=cfg.bias, attention_dropout=0.0, **common)
        state = _to_llama_state(model.state_dict(), cfg)
    else:
        hf_cfg = transformers.GPT2Config(
            n_embd=cfg.n_embd, n_inner=_mlp_width(cfg), n_layer=cfg.n_layer, n_head=cfg.n_head,
            n_positions=cfg.block_size, activation_function="gelu", layer_norm_epsilon=cfg.norm_eps,
            resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=0.0, **common)
        state = _to_gpt2_state(model.state_dict(), cfg)
    hf = getattr(transformers, cls_name)(hf_cfg)
    ref = model.wte.weight
    hf.to(dtype=ref.dtype)
    hf.load_state_dict(state, strict=True)
    return hf.to(device=ref.device).train(model.training)


def _check(ok: bool, field: str, value: Any, why: str) -> None:
    if not ok:
        raise ValueError(f"cannot import this Hugging Face model as a GPT: config.{field}={value!r} is not supported "
                         f"({why})")


def from_hf(hf_model: nn.Module, *, bias: bool | None = None, dropout: float | None = None,
            attn_backend: str = "manual") -> GPT:
    """The inverse of :func:`to_hf`: a :class:`GPT` with copies of the weights of a ``LlamaForCausalLM`` (with
    ``num_key_value_heads == num_attention_heads``, default RoPE, ``hidden_act="silu"``) or a ``GPT2LMHeadModel``
    (with ``activation_function="gelu"``). ``from_hf(to_hf(m))`` has a bit-identical state dict and the same config,
    except what a Hugging Face config cannot hold (pass it, or use :func:`load_hf`, which reads it from
    ``aifs_export.json``): a Llama GPT's ``dropout``, ``attn_backend``, and ``bias=True`` with all-zero GPT-2 biases.

    Args:
        hf_model: the Hugging Face model (or a :class:`shared.models.causal_lm.HFCausalLM` around one).
        bias: GPT-2 only (Llama's config says it): None infers it (bias-free only if every GPT-2 bias, LayerNorms
            included, is exactly zero: how :func:`to_hf` exports a bias-free GPT); True keeps the biases; False
            drops them and requires them all zero.
        dropout: the GPT's dropout; None takes GPT-2's ``resid_pdrop`` (Llama: 0, it has none).
        attn_backend: the GPT's attention backend (``manual`` or ``torch``).

    Returns:
        the GPT, with the weights' dtype and device and ``hf_model``'s train/eval mode; logits (B, T, V) equal to
        ``hf_model(ids).logits`` up to fp32 rounding.

    Raises:
        ValueError: another class, or a config field this GPT cannot express (named in the message): grouped-query
            attention, another activation, RoPE scaling or a partial rotary factor, ``attention_bias != mlp_bias``,
            cross-attention or other attention scalings in GPT-2, nonzero GPT-2 biases with ``bias=False``.
    """
    hf_model = getattr(hf_model, "hf", hf_model)  # unwrap HFCausalLM
    name, c = type(hf_model).__name__, hf_model.config
    sd = hf_model.state_dict()
    common = {"vocab_size": c.vocab_size, "tie_weights": bool(c.tie_word_embeddings), "attn_backend": attn_backend}
    if name == "LlamaForCausalLM":
        heads = c.num_attention_heads
        _check(c.num_key_value_heads == heads, "num_key_value_heads", c.num_key_value_heads,
               f"grouped-query attention; this GPT needs num_key_value_heads == num_attention_heads == {heads}")
        _check(c.hidden_act == "silu", "hidden_act", c.hidden_act, "this GPT's SwiGLU uses silu")
        _check(c.head_dim == c.hidden_size // heads, "head_dim", c.head_dim, "this GPT needs hidden_size / heads")
        rope = dict(c.rope_parameters or {})
        _check(rope.get("rope_type", "default") == "default", "rope_parameters", rope,
               "RoPE scaling; this GPT has the default RoPE only")
        _check(rope.get("partial_rotary_factor", 1.0) == 1.0, "rope_parameters", rope, "partial rotary embedding")
        _check(c.attention_bias == c.mlp_bias, "mlp_bias", c.mlp_bias,
               f"this GPT has one bias switch; attention_bias={c.attention_bias}")
        cfg = GPTConfig(n_embd=c.hidden_size, n_layer=c.num_hidden_layers, n_head=heads, block_size=c.max_position_embeddings,
                        norm="rmsnorm", pos="rope", mlp="swiglu", norm_eps=c.rms_norm_eps, rope_base=float(rope["rope_theta"]),
                        bias=bool(c.attention_bias), dropout=dropout or 0.0, d_ff=c.intermediate_size, **common)
        convert = _from_llama_state
    elif name == "GPT2LMHeadModel":
        _check(c.activation_function == "gelu", "activation_function", c.activation_function,
               "this GPT's MLP uses the exact erf GELU, 'gelu'")
        _check(c.scale_attn_weights, "scale_attn_weights", c.scale_attn_weights, "this GPT scales scores by 1/sqrt(D)")
        _check(not c.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx",
               c.scale_attn_by_inverse_layer_idx, "this GPT scales scores by 1/sqrt(D) only")
        _check(not c.add_cross_attention, "add_cross_attention", c.add_cross_attention, "a decoder-only GPT")
        all_zero = all(not t.any() for t in _gpt2_biases(sd))
        if bias is False and not all_zero:
            raise ValueError("cannot import this GPT2LMHeadModel with bias=False: some of its biases are nonzero "
                             "(pass bias=None or True to keep them)")
        cfg = GPTConfig(n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, block_size=c.n_positions, norm="layernorm",
                        pos="learned", mlp="gelu", norm_eps=c.layer_norm_epsilon, d_ff=c.n_inner or 4 * c.n_embd,
                        bias=(not all_zero) if bias is None else bias,
                        dropout=float(c.resid_pdrop) if dropout is None else dropout, **common)
        convert = _from_gpt2_state
    else:
        raise ValueError(f"cannot import a {name} as a GPT: the importable classes are {_variants_text()}")
    if cfg.d_ff == default_mlp_width(cfg.mlp, cfg.n_embd):
        cfg.d_ff = 0  # the default width: keep the config as to_hf's source had it
    ref = hf_model.get_input_embeddings().weight
    gpt = GPT(cfg).to(dtype=ref.dtype)
    gpt.load_state_dict(convert(sd, cfg), strict=True)
    return gpt.to(device=ref.device).train(hf_model.training)


# ---- on disk ----

def _tokenizer_kind(tokenizer: Any) -> str:
    """``"hf"``, ``"bpe"``, ``"spm"`` or ``"char"``. Raises ValueError for anything else."""
    from shared.data.bpe import BPETokenizer
    from shared.data.spm_tokenizer import SentencePieceTokenizer
    from shared.data.text import CharTokenizer

    if hasattr(getattr(tokenizer, "hf", None), "save_pretrained"):  # HFTokenizer
        return "hf"
    for cls, kind in ((BPETokenizer, "bpe"), (SentencePieceTokenizer, "spm"), (CharTokenizer, "char")):
        if isinstance(tokenizer, cls):
            return kind
    raise ValueError(f"cannot save a {type(tokenizer).__name__} with the model: save_hf knows BPETokenizer, "
                     "SentencePieceTokenizer, CharTokenizer and HFTokenizer")


def _save_tokenizer(tokenizer: Any, folder: Path) -> tuple[str, Path]:
    """Write ``tokenizer`` into ``folder``; returns (the name recorded, the path load_tokenizer reads it from)."""
    kind = _tokenizer_kind(tokenizer)
    if kind == "hf":
        tokenizer.save(folder)  # save_pretrained: tokenizer.json, tokenizer_config.json, ...
        return "tokenizer.json", folder
    if kind in ("bpe", "spm"):
        name = BPE_TOKENIZER_FILE if kind == "bpe" else SPM_TOKENIZER_FILE
        tokenizer.save(folder / name)
        return name, folder
    tokenizer.save(folder / CHAR_TOKENIZER_FILE)
    return CHAR_TOKENIZER_FILE, folder / CHAR_TOKENIZER_FILE


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def save_hf(model: GPT, out_dir: str | Path, tokenizer: Any = None, meta: dict[str, Any] | None = None) -> Path:
    """Export ``model`` as a Hugging Face folder that ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads.

    Writes ``config.json``, ``generation_config.json`` and ``model.safetensors`` (``save_pretrained``,
    https://huggingface.co/docs/transformers/main_classes/model#transformers.PreTrainedModel.save_pretrained), the
    tokenizer when given (HFTokenizer: its ``save_pretrained`` files; BPETokenizer: ``tokenizer.bpe.json``;
    SentencePieceTokenizer: ``tokenizer.model``; CharTokenizer: ``char_tokenizer.json``; reloaded and its sha256
    checked), and ``aifs_export.json``:
    ``{"gpt_config", "hf_class", "tokenizer_sha256", "tokenizer_file", "meta", "transformers_version"}``.
    A tokenizer's BOS/EOS/PAD ids go into the HF config and generation config.

    Atomic (:func:`write_folder_atomic`): a half-written export never replaces a complete one.

    Args:
        meta: JSON-serialisable facts to keep with the export (step, run name, data, ...).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: the model is not exportable (:func:`hf_class_name`), the tokenizer has more ids than the model's
            vocab_size, is of an unknown type, or does not reload with the same sha256.
        TypeError: ``meta`` is not JSON-serialisable.
        NotADirectoryError: ``out_dir`` exists and is not a folder.
    """
    import transformers

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder: pick another export folder")
    if tokenizer is not None and _tokenizer_kind(tokenizer) and tokenizer.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {model.cfg.vocab_size}: "
                         "export the model with the tokenizer it was trained with")
    hf = to_hf(model)
    record = {"gpt_config": asdict(model.cfg), "hf_class": type(hf).__name__, "tokenizer_sha256": None,
              "tokenizer_file": None, "meta": meta or {}, "transformers_version": transformers.__version__}
    text = json.dumps(record, indent=2, sort_keys=True)  # TypeError before anything is written

    def write(tmp: Path) -> None:
        if tokenizer is not None:
            for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
                value = getattr(tokenizer, field.replace("_token", ""))
                setattr(hf.config, field, value)
                if getattr(hf, "generation_config", None) is not None:
                    setattr(hf.generation_config, field, value)
        hf.save_pretrained(tmp)
        out = text
        if tokenizer is not None:
            from shared.data.tokenizer import load_tokenizer

            record["tokenizer_file"], where = _save_tokenizer(tokenizer, tmp)
            reloaded = load_tokenizer(where).sha256
            if reloaded != tokenizer.sha256:
                raise ValueError(f"the saved tokenizer reloads with sha256 {reloaded[:12]}, not {tokenizer.sha256[:12]}")
            record["tokenizer_sha256"] = tokenizer.sha256
            out = json.dumps(record, indent=2, sort_keys=True)
        (tmp / EXPORT_FILE).write_text(out + "\n")

    return write_folder_atomic(out_dir, write)


def write_folder_atomic(out_dir: str | Path, write: Any) -> Path:
    """Fill a folder all at once: ``write(tmp)`` fills a temporary folder beside ``out_dir``, which is fsynced and
    renamed onto ``out_dir``; an existing ``out_dir`` is moved aside only once the new one is complete, then deleted.
    On any error the temporary folder is removed and an existing ``out_dir`` is left as it was.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder: pick another export folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    old = None
    try:
        write(tmp)
        _fsync_tree(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)  # old/<name>: moved aside, deleted below
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / out_dir.name).exists() and not out_dir.exists():
            os.replace(old / out_dir.name, out_dir)  # put the previous export back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir


def save_pretrained_hf(model: nn.Module, out_dir: str | Path, tokenizer: Any = None,
                       meta: dict[str, Any] | None = None) -> Path:
    """Save a Hugging Face model (or an :class:`~shared.models.causal_lm.HFCausalLM`) with ``save_pretrained``,
    its tokenizer (an :class:`~shared.data.hf_tokenizer.HFTokenizer` or a ``transformers`` tokenizer) and
    ``meta.json`` (``meta``: base model, data version, config hash, ...), atomically (:func:`write_folder_atomic`),
    so ``AutoModelForCausalLM.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained(out_dir)`` load it.

    Raises:
        TypeError: ``meta`` is not JSON-serialisable (raised before anything is written).
        NotADirectoryError: ``out_dir`` exists and is not a folder.
    """
    hf = getattr(model, "hf", model)
    text = json.dumps(meta or {}, indent=2, sort_keys=True)

    def write(tmp: Path) -> None:
        hf.save_pretrained(tmp)
        if tokenizer is not None:
            getattr(tokenizer, "hf", tokenizer).save_pretrained(str(tmp))
        (tmp / META_FILE).write_text(text + "\n")

    return write_folder_atomic(out_dir, write)


def load_hf(path: str | Path) -> GPT:
    """Load an exported folder as a :class:`GPT`: ``AutoModelForCausalLM.from_pretrained(path,
    local_files_only=True)`` (never downloads; https://huggingface.co/docs/transformers/model_doc/auto) then
    :func:`from_hf`. When ``aifs_export.json`` is there (a :func:`save_hf` export), its GPTConfig supplies what a
    Hugging Face config does not hold (``bias`` of a GPT-2 export, ``dropout``, ``attn_backend``), so
    ``load_hf(save_hf(m, d))`` has a state dict bit-identical to ``m``'s. The model comes back in eval mode.

    Raises:
        FileNotFoundError: ``path`` holds no ``config.json``.
        ValueError: the model is not importable (see :func:`from_hf`).
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json): export one with save_hf")
    hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    kwargs: dict[str, Any] = {}
    if (path / EXPORT_FILE).is_file():
        recorded = json.loads((path / EXPORT_FILE).read_text())["gpt_config"]
        kwargs = {"bias": recorded["bias"], "dropout": recorded["dropout"], "attn_backend": recorded["attn_backend"]}
    return from_hf(hf, **kwargs)
