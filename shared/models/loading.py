"""Loading a trained language model for evaluation or serving, refusing the wrong tokenizer.

A checkpoint folder written by :class:`shared.checkpoint.FileCheckpointer` records the model class and config and
the tokenizer's hash; :func:`load_lm_for_eval` rebuilds the GPT from that config, loads the weights, and checks the
tokenizer it is given (or the one the checkpoint names) is the one the model was trained with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.checkpoint import Checkpoint, CheckpointError, load_model, read_checkpoint
from shared.data.tokenizer import Tokenizer, load_tokenizer
from shared.models.gpt import GPT, GPTConfig


@dataclass
class LoadedLM:
    """A model ready to evaluate, its tokenizer, and the checkpoint it came from."""

    model: GPT  # eval mode, on the requested device
    tokenizer: Tokenizer
    checkpoint: Checkpoint


def load_lm_for_eval(ckpt: str | Path, tokenizer: Tokenizer | str | Path | None = None,
                     device: torch.device | str = "cpu") -> LoadedLM:
    """The GPT of a checkpoint folder (e.g. ``runs/week05/cpu/gpt-<hash>/checkpoints/best``), with its tokenizer.

    Args:
        tokenizer: a tokenizer, or a path for :func:`shared.data.tokenizer.load_tokenizer`; default: the path
            recorded in the checkpoint's ``meta.json`` (``tokenizer``).

    Raises:
        CheckpointError: missing/incomplete checkpoint, not a GPT, no tokenizer recorded or given, or a tokenizer
            whose vocabulary or hash differs from the one it was trained with (the message names both).
    """
    ck = read_checkpoint(ckpt)
    meta = ck.meta
    if meta.get("model_class") != "GPT":
        run = f" (run {meta['run_id']})" if meta.get("run_id") else ""
        raise CheckpointError(
            f"{ckpt} holds a {meta.get('model_class') or 'model of unknown class'}{run}, not a GPT language model: "
            "evaluate a GPT checkpoint folder instead (e.g. runs/week05/<profile>/gpt-<hash>/checkpoints/best)")
    if not meta.get("model_config"):
        raise CheckpointError(f"{ckpt} holds a GPT but its meta.json records no model_config to rebuild it from: "
                              "evaluate a checkpoint written by shared.checkpoint.FileCheckpointer")
    if tokenizer is None:
        if not meta.get("tokenizer"):
            found = sorted(Path(ck.path).resolve().parent.parent.glob("tokenizer*"))  # the run folder's own
            hint = f" (its run folder holds {found[0]})" if found else ""
            raise CheckpointError(f"{ckpt} records no tokenizer path: pass the tokenizer it was trained with{hint}")
        tokenizer = meta["tokenizer"]
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    cfg = GPTConfig(**meta["model_config"])
    trained_sha = meta.get("tokenizer_sha256")
    if cfg.vocab_size < tok.vocab_size or trained_sha not in (None, tok.sha256):
        raise CheckpointError(
            f"{ckpt} was trained with a {cfg.vocab_size}-id vocabulary (tokenizer {str(trained_sha)[:12]}), but the "
            f"tokenizer given has {tok.vocab_size} ids ({tok.sha256[:12]}): evaluate it with the tokenizer it was "
            "trained with (its meta.json names it)")
    model = GPT(cfg)
    load_model(model, ck.path)
    return LoadedLM(model.to(device).eval(), tok, ck)


@dataclass
class AnyLM:
    """A causal LM resolved from a name or a path, ready to evaluate.

    Attributes:
        model: eval mode; an :class:`shared.models.causal_lm.HFCausalLM` (registry entries and HF folders) or the
            project's :class:`GPT` (checkpoint folders).
        tokenizer: the project's tokenizer interface.
        kind: ``"registry"``, ``"hf_dir"`` or ``"checkpoint"``.
        name: a short label (the registry name, or the folder's name).
        path: where the weights were read.
    """

    model: Any
    tokenizer: Tokenizer
    kind: str
    name: str
    path: Path


def load_any_lm(spec: str | Path, device: torch.device | str = "cpu") -> AnyLM:
    """Resolve ``spec``: a registered model name (``python -m shared.models`` lists them), a Hugging Face model
    folder (``config.json``: a ``save_pretrained`` export such as ``models/week07/sft-v1``, or a
    :func:`shared.models.hf.save_hf` export with the project's tokenizer), or a project checkpoint folder
    (``meta.json`` + ``model.safetensors``, e.g. ``runs/week05/cpu/gpt-<hash>/checkpoints/best``).

    Raises:
        ValueError: ``spec`` is none of these (the message says what each looks like).
        ModelError / CheckpointError / TokenizerError: it is one of them but does not load.
    """
    from shared.models.registry import REGISTRY

    if isinstance(spec, str) and spec in REGISTRY:
        from shared.models.pretrained import load_pretrained

        lm = load_pretrained(spec, device)
        return AnyLM(lm.model, lm.tokenizer, "registry", spec, Path(str(lm.path)))
    path = Path(spec)
    if (path / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        from shared.models.causal_lm import HFCausalLM

        tok = load_tokenizer(path)
        hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        return AnyLM(HFCausalLM(hf).to(device).eval(), tok, "hf_dir", path.name, path)
    if (path / "meta.json").is_file():
        lm = load_lm_for_eval(path, device=device)
        return AnyLM(lm.model, lm.tokenizer, "checkpoint", path.name, path)
    raise ValueError(f"'{spec}' is not a model: give a registered name ({', '.join(sorted(REGISTRY))}), a Hugging "
                     "Face model folder (with config.json, e.g. models/week07/sft-v1) or a checkpoint folder (with "
                     "meta.json, e.g. runs/<week>/<profile>/<run>/checkpoints/best)")


def weights_sha256(folder: Path) -> str:
    """sha256 over a model folder's config.json and weight files (names and bytes), in name order."""
    h = hashlib.sha256()
    for p in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()
