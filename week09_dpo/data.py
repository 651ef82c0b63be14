"""Week 9's data and starting point: the preference pairs of both sources split by prompt (train / held-out), their
encoding (pairs over ``dpo.max_length`` dropped and counted), week 7's frozen eval set (read by path, its hash
checked) and the model DPO starts from (week 8's export)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.data.preference import PreferencePair, load_pairs, split_by_prompt
from shared.evals.instruct import EvalItem, read_pinned_items
from shared.models.registry import ModelError
from shared.paths import REPO_ROOT, models_root
from shared.tasks.dpo import EncodedPairs, PairExample, encode_pairs
from week09_dpo.config import Week09Config


class StartingPointError(ModelError):
    """A model or file week 9 starts from is missing (the message names the command that writes it)."""


@dataclass
class WeekData:
    """Pairs (text and encoded), the eval items, the generation prompts and the hashes that name runs."""

    train: list[PreferencePair]
    heldout: list[PreferencePair]
    load_drops: dict[str, Counter]  # source -> reason -> pairs dropped while reading the files
    enc_train: EncodedPairs
    enc_heldout: EncodedPairs
    eval_items: list[EvalItem]
    hashes: dict[str, str] = field(default_factory=dict)
    periodic: list[PairExample] = field(default_factory=list)  # the first eval_per_source held-out pairs per source
    gen_prompts: list[list[int]] = field(default_factory=list)  # held-out prompts generated at every eval
    deflect: list[PreferencePair] = field(default_factory=list)  # held-out HH pairs whose prompts are answered


def pairs_hash(pairs: list[Any]) -> str:
    """sha256 of the pairs' ids and texts (names the data a run trained on)."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.id, p.prompt, p.chosen, p.rejected]).encode())
    return h.hexdigest()


def load_eval_set(cfg: Week09Config) -> tuple[list[EvalItem], str]:
    """Week 7's frozen eval set (read by path, its sha256 pinned in ``week09_dpo/configs/week09.yaml``) and its sha256.

    Raises:
        EvalSetError: the file is missing or changed.
    """
    return read_pinned_items(REPO_ROOT / cfg.eval_set.path, cfg.eval_set.sha256, cfg.eval_set.limit,
                             "week09_dpo/configs/week09.yaml")


def start_dir(cfg: Week09Config) -> Path:
    """The model DPO starts from (``models/<models.start>``).

    Raises:
        StartingPointError: it is not there (run week 8 first, with the same profile).
    """
    folder = models_root() / cfg.models.start
    if not (folder / "config.json").is_file():
        raise StartingPointError(f"the starting model {folder} is missing: week 9 aligns week 8's export. Run "
                                 "`make week08 PROFILE=<the same profile>` first (or set models.start)")
    return folder


def _first_per_source(examples: list[PairExample], k: int) -> list[PairExample]:
    seen: Counter = Counter()
    out = []
    for e in examples:
        if seen[e.source] < k:
            out.append(e)
            seen[e.source] += 1
    return out


def load_week_data(cfg: Week09Config, tokenizer: Any) -> WeekData:
    """Both sources' pairs, split by prompt (a fixed split: see :func:`shared.data.preference.split_by_prompt`),
    encoded with ``tokenizer``; the held-out side gives the periodic-eval subset, the generation prompts and the HH
    prompts of the deflection test.

    Raises:
        CorpusError / DatasetError: a source is unknown, malformed or cannot be fetched.
        PreferenceDataError: the tokenizer has no EOS id.
    """
    pairs, drops = load_pairs(cfg.data.sources, cfg.data.template, tokenizer)
    train, heldout = split_by_prompt(pairs, cfg.data.heldout_per_source)
    if cfg.data.train_limit:
        train = train[:cfg.data.train_limit]
    enc_train = encode_pairs(train, tokenizer, cfg.dpo.max_length)
    enc_heldout = encode_pairs(heldout, tokenizer, cfg.dpo.max_length)
    items, eval_sha = load_eval_set(cfg)
    data = WeekData(train, heldout, drops, enc_train, enc_heldout, items,
                    {"train": pairs_hash(train), "heldout": pairs_hash(heldout), "eval_set": eval_sha})
    data.periodic = _first_per_source(enc_heldout.examples, cfg.data.eval_per_source)
    gen = _first_per_source(enc_heldout.examples, cfg.data.gen_per_source) if cfg.data.gen_per_source else []
    data.gen_prompts = [list(e.prompt_ids) for e in gen]
    kept = {e.id for e in enc_heldout.examples}
    data.deflect = [p for p in heldout if p.source == "hh_rlhf" and p.id in kept][:cfg.data.deflect_prompts]
    return data
