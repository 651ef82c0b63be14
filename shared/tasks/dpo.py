"""Direct Preference Optimization written by hand: a policy trained beside a frozen reference on (prompt, chosen,
rejected) pairs.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
https://arxiv.org/abs/2305.18290, eq. 7::

    L = -log σ(β [(log πθ(y_w|x) - log π_ref(y_w|x)) - (log πθ(y_l|x) - log π_ref(y_l|x))])

with each ``log π(y|x)`` the sum of the response tokens' log-probs (the prompt and padding carry none). The
*implicit reward* of a response is ``β (log πθ(y|x) - log π_ref(y|x))``; the loss is a logistic loss on the reward
margin, so it equals ``log 2`` while the policy is the reference. TRL's ``DPOTrainer`` (``loss_type="sigmoid"``) is
the library reference: the tests compare the loss on one batch and the week compares training curves.

Beyond DPO, the same batch gives IPO (Azar et al. 2023, https://arxiv.org/abs/2310.12036, eq. 17, with TRL's
per-token averaging of the log-ratios: ``(Δ/|y| ... - 1/(2β))²``), and an SFT term on the chosen responses
(``sft_weight`` x their mean token NLL: the RPO-style regulariser of Pang et al. 2024,
https://arxiv.org/abs/2404.19733) that counters the chosen log-probs falling while the margin grows.

The reference is either a separate frozen model (:class:`FrozenReference`: no gradients, its parameters never change)
or the policy itself with its LoRA adapters switched off (:class:`AdapterOffReference`: no second copy of the
weights in memory). Pairs are encoded like SFT examples: prompt and response tokenised apart, EOS appended to each
response; a pair longer than ``max_length`` is dropped and counted, never truncated.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from shared.config import at_least, choose, in_range, positive
from shared.tasks.order import EpochOrder
from shared.tasks.sft import encode_texts

LOSSES = ("sigmoid", "ipo")  # sigmoid = DPO (TRL's name)
DROP_REASONS = ("too_long", "prompt_too_long", "empty_chosen", "empty_rejected", "identical")


class PreferenceDataError(ValueError):
    """Pairs that cannot be trained on (none left, a tokenizer without EOS, another vocabulary)."""


@dataclass
class DPOTaskConfig:
    """The preference objective and how pairs become sequences."""

    loss: str = "sigmoid"  # sigmoid (DPO) | ipo
    beta: float = positive(0.1)  # DPO: the KL strength (reward scale); IPO: its tau
    sft_weight: float = in_range(0, 100, 0.0)  # x the chosen responses' mean token NLL, added to the loss (0: off)
    max_length: int = at_least(4, 256)  # tokens of prompt + the longer response + EOS; longer pairs are dropped
    eval_batch: int = at_least(1, 8)  # pairs per eval forward pass

    def validate(self) -> None:
        """Raises ChoiceError for an unknown loss."""
        choose("dpo.loss", self.loss, LOSSES)


@dataclass(frozen=True)
class PairExample:
    """One encoded pair: the prompt's ids and each response's ids (EOS included)."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    id: str = ""
    source: str = ""

    @property
    def length(self) -> int:
        """Tokens of the longer of the two sequences."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class EncodedPairs:
    """The pairs that fit, and the ids of those dropped, by reason (see :data:`DROP_REASONS`)."""

    examples: list[PairExample]
    dropped: dict[str, list[str]] = field(default_factory=dict)
    max_length: int = 0

    @property
    def drop_counts(self) -> Counter:
        return Counter({k: len(v) for k, v in self.dropped.items()})


def encode_pairs(pairs: Sequence[Any], tokenizer: Any, max_length: int) -> EncodedPairs:
    """Tokenise pairs: ``prompt`` as is, each response with EOS appended as an id.

    Args:
        pairs: objects with ``prompt``, ``chosen``, ``rejected``, ``id`` and ``source``
            (:class:`shared.data.preference.PreferencePair`); the prompt is the exact text the model reads.
        tokenizer: the project's tokenizer interface (``encode`` without special tokens, ``eos_id``).
        max_length: the longer sequence (prompt + response + EOS) may hold at most this many tokens.

    Returns:
        The pairs that fit; the others are listed by reason: ``prompt_too_long`` (the prompt alone leaves no room),
        ``too_long``, ``empty_chosen`` / ``empty_rejected`` (a response encodes to no token), ``identical`` (both
        responses encode to the same ids: no preference to learn).

    Raises:
        PreferenceDataError: the tokenizer has no EOS id.
    """
    if tokenizer.eos_id is None:
        raise PreferenceDataError("DPO appends EOS to every response, and this tokenizer has no eos_id")
    prompts = encode_texts(tokenizer, [p.prompt for p in pairs])
    chosen = encode_texts(tokenizer, [p.chosen for p in pairs])
    rejected = encode_texts(tokenizer, [p.rejected for p in pairs])
    out = EncodedPairs([], {r: [] for r in DROP_REASONS}, max_length)
    for p, x, yw, yl in zip(pairs, prompts, chosen, rejected, strict=True):
        reason = None
        if not yw:
            reason = "empty_chosen"
        elif not yl:
            reason = "empty_rejected"
        elif yw == yl:
            reason = "identical"
        elif len(x) + 2 > max_length:
            reason = "prompt_too_long"
        elif len(x) + max(len(yw), len(yl)) + 1 > max_length:
            reason = "too_long"
        if reason:
            out.dropped[reason].append(p.id)
            continue
        eos = (tokenizer.eos_id,)
        out.examples.append(PairExample(tuple(x), (*yw, *eos), (*yl, *eos), p.id, getattr(p, "source", "")))
    return out


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack a micro-batch of B pairs as 2B right-padded rows: the B chosen sequences, then the B rejected ones
    (TRL's ``DataCollatorForPreference`` layout).

    Returns:
        ``input_ids`` (2B, T) int64, ``attention_mask`` (2B, T) int64 (1 on real tokens), ``completion_mask``
        (2B, T) int64 (1 on the response tokens and their EOS).
    """
    rows = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids) for e in examples]
    t = max(len(x) + len(y) for x, y in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    completion = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        n = len(x) + len(y)
        ids[i, :n] = torch.tensor((*x, *y))
        mask[i, :n] = 1
        completion[i, len(x):n] = 1
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": completion}


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(N, T-1) log-probability of each next token: position t's logits score ``input_ids[:, t + 1]`` (fp32)."""
    n, t, v = logits.shape
    flat = logits[:, :-1].float().reshape(n * (t - 1), v)  # a (N, V, T) transpose is 2x slower on CPU
    return -F.cross_entropy(flat, input_ids[:, 1:].reshape(-1), reduction="none").view(n, t - 1)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """(N,) summed log-probability (nats) of each row's response tokens given everything before them.

    Args:
        logits: (N, T, V) from ``model(input_ids, attention_mask)``.
        input_ids, completion_mask: (N, T); the prompt and the padding have mask 0 and contribute nothing.
    """
    return (token_logps(logits, input_ids) * completion_mask[:, 1:]).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """(B,) per-pair DPO loss ``-log σ(β (Δ_w - Δ_l))`` with ``Δ = log πθ(y|x) - log π_ref(y|x)`` (all (B,), nats);
    Rafailov et al. 2023, eq. 7. ``log 2`` when the policy equals the reference."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, chosen_tokens: torch.Tensor,
             rejected_tokens: torch.Tensor) -> torch.Tensor:
    """(B,) per-pair IPO loss ``(Δ_w/|y_w| - Δ_l/|y_l| - 1/(2β))²`` (Azar et al. 2023, eq. 17; the per-token
    averaging of the log-ratios is TRL's, confirmed with the authors). ``*_tokens``: (B,) response lengths."""
    d = (policy_chosen - ref_chosen) / chosen_tokens.clamp(min=1) - (policy_rejected - ref_rejected) / \
        rejected_tokens.clamp(min=1)
    return (d - 1 / (2 * beta)) ** 2


def preference_loss(kind: str, policy: torch.Tensor, ref: torch.Tensor, beta: float,
                    completion_mask: torch.Tensor) -> torch.Tensor:
    """(B,) per-pair loss of ``kind`` from the 2B rows' summed log-probs (chosen rows first), (2B,) each."""
    pw, pl = policy.chunk(2)
    rw, rl = ref.chunk(2)
    if kind == "sigmoid":
        return dpo_loss(pw, pl, rw, rl, beta)
    if kind == "ipo":
        nw, nl = completion_mask.sum(-1).to(policy.dtype).chunk(2)
        return ipo_loss(pw, pl, rw, rl, beta, nw, nl)
    raise ValueError(f"unknown preference loss {kind!r}: use one of {', '.join(LOSSES)}")


class Reference(Protocol):
    """The frozen model DPO measures the policy against: ``logits(policy, batch)`` -> (2B, T, V), no gradient."""

    def logits(self, policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


class FrozenReference:
    """A separate reference model (usually a copy of the starting policy), frozen: ``requires_grad`` off, eval mode.

    Raises:
        PreferenceDataError: its vocabulary (output width) differs from the policy's (checked on the first batch).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def logits(self, policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["input_ids"], attention_mask=batch["attention_mask"])


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its adapters switched off: hand LoRA / QLoRA layers (:func:`shared.nn.lora.adapters_disabled`)
    or peft's ``disable_adapter()``; unwraps DDP (``.module``) and :class:`~shared.models.causal_lm.HFCausalLM`
    (``.hf``) to find them.

    Raises:
        PreferenceDataError: the model has neither kind of adapter (use a :class:`FrozenReference`).
    """
    from shared.nn.lora import adapters_disabled, lora_layers

    inner = getattr(model, "module", model)
    if lora_layers(inner):
        with adapters_disabled(inner):
            yield model
        return
    hf = getattr(inner, "hf", inner)
    if hasattr(hf, "disable_adapter"):
        with hf.disable_adapter():
            yield model
        return
    raise PreferenceDataError("the reference is 'the policy with its adapters off', but this model has no LoRA "
                              "adapter: inject one, or pass a FrozenReference copy of the starting model")


class AdapterOffReference:
    """The reference is the policy with its LoRA adapters switched off (peft's ``ref_model=None``): the weights the
    adapters were injected into, with no second copy in memory."""

    @torch.no_grad()
    def logits(self, policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with adapters_off(policy):
            return policy(batch["input_ids"], attention_mask=batch["attention_mask"])


def _check_vocab(policy_logits: torch.Tensor, ref_logits: torch.Tensor) -> None:
    if policy_logits.shape != ref_logits.shape:
        raise PreferenceDataError(f"the reference's logits {tuple(ref_logits.shape)} do not match the policy's "
                                  f"{tuple(policy_logits.shape)}: the reference must share the policy's tokenizer "
                                  "and vocabulary (start both from the same model)")


@dataclass
class PairScores:
    """Per-pair eval results of one model (all lists in the val order): summed response log-probs of the policy
    and the reference, response lengths (tokens, EOS included) and the per-token KL summed over each response."""

    ids: list[str]
    sources: list[str]
    policy_chosen: list[float]
    policy_rejected: list[float]
    ref_chosen: list[float]
    ref_rejected: list[float]
    chosen_tokens: list[int]
    rejected_tokens: list[int]
    kl_sum: list[float]  # Σ over both responses' tokens of KL(πθ(·|ctx) || π_ref(·|ctx)), nats

    def margins(self, beta: float) -> list[float]:
        """Implicit reward margins ``β (Δ_w - Δ_l)`` per pair."""
        return [beta * ((pw - rw) - (pl - rl)) for pw, pl, rw, rl in
                zip(self.policy_chosen, self.policy_rejected, self.ref_chosen, self.ref_rejected, strict=True)]


class Probe(Protocol):
    """Extra eval metrics from the model itself (e.g. :class:`shared.evals.generate.GenerationProbe`: the length and
    repetition of what the policy writes): ``measure(model) -> {name: float}``."""

    def measure(self, model: nn.Module) -> dict[str, float]: ...


class DPOTask:
    """The preference objective on encoded pairs (a :class:`shared.tasks.base.Task`).

    Micro-batch ``index`` holds pairs of :class:`shared.tasks.order.EpochOrder` (a pure function of index, rank and
    world size: resumes see the same batches). A micro-batch of ``size`` pairs is ``2 x size`` sequences.

    Args:
        train, val: encoded pairs (non-empty).
        pad_id: the padding id.
        reference: :class:`FrozenReference` or :class:`AdapterOffReference`.
        cfg: loss, beta, SFT weight, eval batch.
        probe: optional prompts generated at every eval (``gen_*`` metrics).

    Raises:
        PreferenceDataError: an empty training or validation set.
    """

    def __init__(self, train: Sequence[PairExample], val: Sequence[PairExample], pad_id: int, seed: int,
                 reference: Reference, cfg: DPOTaskConfig, probe: Probe | None = None) -> None:
        if not train or not val:
            raise PreferenceDataError(f"DPO needs training and validation pairs; got {len(train)} and {len(val)} "
                                      "(were all dropped for max_length, or filtered out?)")
        cfg.validate()
        self.train, self.val, self.pad_id, self.cfg = list(train), list(val), pad_id, cfg
        self.reference, self.probe = reference, probe
        self.stream = EpochOrder(len(self.train), seed)

    def example_indices(self, index: int, rank: int, world_size: int, size: int) -> list[int]:
        return self.stream.indices(index, rank, world_size, size)

    def batch(self, index: int, rank: int, world_size: int, size: int) -> dict[str, torch.Tensor]:
        return collate_pairs([self.train[i] for i in self.example_indices(index, rank, world_size, size)], self.pad_id)

    def num_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real tokens of the 2B sequences (a sum of the mask)."""
        return int(batch["attention_mask"].sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The micro-batch's mean preference loss (+ ``sft_weight`` x the chosen responses' mean token NLL) and the
        metrics TRL logs: implicit rewards of chosen and rejected (β x log-ratio), their margin, the reward accuracy
        (margin > 0), the policy's summed log-probs of chosen and rejected."""
        ids, cmask = batch["input_ids"], batch["completion_mask"]
        logits = model(ids, attention_mask=batch["attention_mask"])
        ref_logits = self.reference.logits(model, batch)
        _check_vocab(logits, ref_logits)
        per_token = token_logps(logits, ids)  # (2B, T-1)
        policy = (per_token * cmask[:, 1:]).sum(-1)
        ref = sequence_logps(ref_logits, ids, cmask)
        del ref_logits
        loss = preference_loss(self.cfg.loss, policy, ref, self.cfg.beta, cmask).mean()
        if self.cfg.sft_weight:
            w = cmask[:, 1:].chunk(2)[0]
            loss = loss + self.cfg.sft_weight * -(per_token.chunk(2)[0] * w).sum() / w.sum().clamp(min=1)
        pw, pl = policy.detach().chunk(2)
        rw, rl = ref.chunk(2)
        cw, cl = self.cfg.beta * (pw - rw), self.cfg.beta * (pl - rl)
        return loss, {"rewards_chosen": cw.mean(), "rewards_rejected": cl.mean(), "margin": (cw - cl).mean(),
                      "reward_accuracy": (cw > cl).float().mean(), "logps_chosen": pw.mean(),
                      "logps_rejected": pl.mean()}

    @torch.no_grad()
    def scores(self, model: nn.Module, pairs: Sequence[PairExample] | None = None) -> PairScores:
        """Per-pair log-probs of the policy and the reference and the per-token KL on ``pairs`` (default: val), in
        batches of ``eval_batch`` pairs; the model should be in eval mode."""
        pairs = self.val if pairs is None else list(pairs)
        device = next(model.parameters()).device
        s = PairScores([], [], [], [], [], [], [], [], [])
        for i in range(0, len(pairs), self.cfg.eval_batch):
            chunk = pairs[i:i + self.cfg.eval_batch]
            b = {k: v.to(device) for k, v in collate_pairs(chunk, self.pad_id).items()}
            logits = model(b["input_ids"], attention_mask=b["attention_mask"])
            ref_logits = self.reference.logits(model, b)
            _check_vocab(logits, ref_logits)
            m = b["completion_mask"][:, 1:]
            lp, lr = logits[:, :-1].float().log_softmax(-1), ref_logits[:, :-1].float().log_softmax(-1)
            kl = ((lp.exp() * (lp - lr)).sum(-1) * m).sum(-1)  # (2B,) Σ_t KL(πθ || π_ref) at response positions
            pol = lp.gather(-1, b["input_ids"][:, 1:, None])[..., 0].mul(m).sum(-1)
            ref = lr.gather(-1, b["input_ids"][:, 1:, None])[..., 0].mul(m).sum(-1)
            del lp, lr, logits, ref_logits
            n = len(chunk)
            s.ids += [e.id for e in chunk]
            s.sources += [e.source for e in chunk]
            s.policy_chosen += pol[:n].tolist()
            s.policy_rejected += pol[n:].tolist()
            s.ref_chosen += ref[:n].tolist()
            s.ref_rejected += ref[n:].tolist()
            s.chosen_tokens += m[:n].sum(-1).tolist()
            s.rejected_tokens += m[n:].sum(-1).tolist()
            s.kl_sum += (kl[:n] + kl[n:]).tolist()
        return s

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Val metrics: ``val_loss`` (the preference loss, no SFT term), ``reward_accuracy`` (implicit margin > 0;
        a tie, as at step 0 where policy = reference, counts as not preferred), ``logprob_accuracy`` (the policy's
        own log-prob ranks chosen above rejected), ``margin``, ``rewards_chosen`` / ``rewards_rejected``,
        ``logps_chosen`` / ``logps_rejected`` (summed, nats), ``kl`` (mean per-token KL(πθ || π_ref) over the val
        responses, nats/token); with a probe, its metrics (``gen_length``, ``gen_repetition``, ``gen_ended``)."""
        out = summarise_scores(self.scores(model), self.cfg)
        if self.probe is not None:
            out.update(self.probe.measure(model))
        return out


def summarise_scores(s: PairScores, cfg: DPOTaskConfig) -> dict[str, float]:
    """The eval metrics of :meth:`DPOTask.evaluate` from per-pair scores."""
    t = {k: torch.tensor(getattr(s, k), dtype=torch.float64) for k in
         ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected", "chosen_tokens", "rejected_tokens",
          "kl_sum")}
    mask_len = torch.cat([t["chosen_tokens"], t["rejected_tokens"]])
    if cfg.loss == "sigmoid":
        losses = dpo_loss(t["policy_chosen"], t["policy_rejected"], t["ref_chosen"], t["ref_rejected"], cfg.beta)
    else:
        losses = ipo_loss(t["policy_chosen"], t["policy_rejected"], t["ref_chosen"], t["ref_rejected"], cfg.beta,
                          t["chosen_tokens"], t["rejected_tokens"])
    cw = cfg.beta * (t["policy_chosen"] - t["ref_chosen"])
    cl = cfg.beta * (t["policy_rejected"] - t["ref_rejected"])
    return {"val_loss": float(losses.mean()), "reward_accuracy": float((cw > cl).double().mean()),
            "logprob_accuracy": float((t["policy_chosen"] > t["policy_rejected"]).double().mean()),
            "margin": float((cw - cl).mean()), "rewards_chosen": float(cw.mean()), "rewards_rejected": float(cl.mean()),
            "logps_chosen": float(t["policy_chosen"].mean()), "logps_rejected": float(t["policy_rejected"].mean()),
            "kl": float(t["kl_sum"].sum() / mask_len.sum().clamp(min=1))}


def initial_loss(kind: str, beta: float) -> float:
    """The loss while policy = reference: ``log 2`` for DPO, ``(1/(2β))²`` for IPO."""
    return math.log(2) if kind == "sigmoid" else (1 / (2 * beta)) ** 2
