"""The pipeline's train stage; the stages before it (corpus -> tokenizer -> pack) are the library's
(:mod:`shared.data.lm`), run with this week's namespace so their outputs land in week 5's folders:

``models/week05/tokenizers/<corpus>-v<vocab>-<key>.bpe.json`` (``.model`` for sentencepiece), ``runs/week05/data/<corpus>-<tokenizer>-<key>/{train,val}.{bin,json}``,
``runs/week05/<profile>/gpt-<hash>/`` (checkpoints, metrics, result.json). Each stage is skipped when a verified
output already exists, so ``make week05`` resumes instead of redoing work.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shared.data.lm import PackStage, TokenizerStage, open_streams, padded_vocab_size
from shared.data.pack import TokenFileError, open_token_file, split_documents
from shared.train.pretrain import LMRun, pretrain
from week05_lm_pipeline.config import Week05Config, train_run_config

WEEK = "week05"


def set_vocab(cfg: Week05Config, tokenizer: TokenizerStage) -> None:
    """Give ``cfg.model`` the tokenizer's vocabulary, rounded up to a multiple of ``data.pad_vocab_to``: every
    model of the week (the main run, the grid, the short runs) is built with it."""
    cfg.model = replace(cfg.model, vocab_size=padded_vocab_size(tokenizer.tokenizer.vocab_size, cfg.data.pad_vocab_to))


def train_stage(cfg: Week05Config, profile: str, tokenizer: TokenizerStage, packed: PackStage, t_start: float) -> LMRun:
    """Train the GPT on the packed stream (or resume / reuse the run of the same config). Checkpoints record the
    tokenizer (path and hash) and the val file, so the eval CLI needs only the checkpoint."""
    tok = tokenizer.tokenizer
    train, val = open_streams(packed, tok.sha256)
    setup = cfg.setup()
    return pretrain(WEEK, "gpt", profile, train_run_config(cfg.data, setup), setup, train, val,
                    tokenizer_sha256=tok.sha256, t_start=t_start,
                    checkpoint_meta={"tokenizer": str(tokenizer.path), "val_data": str(packed.dir / "val.bin")})


def read_back_packing(packed: PackStage, tokenizer, corpus) -> tuple[dict, dict[str, float]]:
    """Read each packed ``.bin`` back from disk, cut it at BOS/EOS, decode every document and compare it with its
    source document; also the share of PAD tokens in each stream (what packing spends on padding).

    Returns:
        ``({split: PackReadback}, {split: padding share})``.
    """
    from week05_lm_pipeline.checks import PackReadback

    out, padding = {}, {}
    for split, docs in (("train", corpus.train), ("val", corpus.val)):
        stream = open_token_file(packed.dir / f"{split}.bin", tokenizer.sha256)[0]
        try:
            back = [tokenizer.decode(ids.tolist()) for ids in split_documents(stream, tokenizer.bos_id, tokenizer.eos_id)]
        except TokenFileError:
            back = []
        bad = [i for i, (a, b) in enumerate(zip(back, docs, strict=False)) if a != b]
        out[split] = PackReadback(len(docs), len(back), len(bad) + abs(len(back) - len(docs)), bad[0] if bad else None)
        padding[split] = float(np.mean(np.asarray(stream) == tokenizer.pad_id)) if len(stream) else 0.0
    return out, padding


def export_stage(profile: str, checkpoint, tokenizer, val: np.ndarray, block_size: int, meta: dict) -> dict:
    """The best checkpoint as a Hugging Face folder, ``models/week05/gpt-<profile>/`` (:func:`shared.models.hf.save_hf`:
    safetensors, config.json, the tokenizer, ``aifs_export.json``): the model week 7 fine-tunes as its from-scratch
    row. The export is loaded back both ways and its logits compared with the checkpoint's on a val batch.

    Returns:
        ``{"path", "max_abs_diff_gpt", "max_abs_diff_hf"}`` (load_hf vs the checkpoint; transformers'
        ``from_pretrained`` vs the checkpoint), in logits.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from shared.models.hf import load_hf, save_hf
    from shared.models.loading import load_lm_for_eval
    from shared.paths import models_root

    lm = load_lm_for_eval(checkpoint, tokenizer)
    out = save_hf(lm.model, models_root() / WEEK / f"gpt-{profile}", lm.tokenizer, meta)
    x = torch.as_tensor(np.asarray(val[: 4 * block_size], dtype=np.int64)).view(4, block_size)
    with torch.no_grad():
        ref = lm.model(x)
        gpt = load_hf(out)(x)
        hf = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True).eval()(input_ids=x).logits
    from shared.paths import REPO_ROOT

    shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
    return {"path": str(shown), "max_abs_diff_gpt": float((gpt - ref).abs().max()),
            "max_abs_diff_hf": float((hf - ref).abs().max())}
