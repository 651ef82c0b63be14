"""The dataset registry: name -> files (relative paths, checksums, source URLs) and licence.

Every dataset the curriculum reads is declared here once. :mod:`shared.data.fetch` puts the files
into the cache (``datasets/raw/<relpath>``) from the cache itself, a mirror folder, or the source
URLs, always verifying the sha256 below. The relative paths are the same in the cache, in the
mirror (``$AIFS_DATA_MIRROR/<relpath>``) and, where possible, in the source layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    Attributes:
        relpath: path below the cache root and the mirror root, e.g. ``mnist/MNIST/raw/x.gz``.
        sha256: expected sha256 (hex) of the file's bytes; "" where the project could not record the
            published one (the file is then accepted by ``size`` and its sha256 pinned at first fetch, see
            :mod:`shared.data.fetch`).
        size: expected size in bytes.
        urls: source URLs tried in order when the file has to be downloaded.
        alt_md5: md5 of the same content as the source archive ships it, where that is another
            byte-version than the one ``sha256`` describes (e.g. a mirror rebuilt in another order);
            a file matching either checksum is accepted.
    """

    relpath: str
    sha256: str
    size: int
    urls: tuple[str, ...] = ()
    alt_md5: str = ""


@dataclass(frozen=True)
class ArchiveSpec:
    """A source archive that holds a dataset's files (downloaded once, unpacked into the cache).

    Attributes:
        url: where the archive is downloaded from.
        md5: its published md5 (what torchvision checks).
        extract_to: folder below the cache root that the archive is unpacked into.
    """

    url: str
    md5: str
    extract_to: str


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its files, licence, and a one-line description."""

    name: str
    files: tuple[FileSpec, ...]
    license: str
    description: str
    homepage: str = ""
    extra: dict = field(default_factory=dict)
    archive: ArchiveSpec | None = None  # fetched when a file is in neither the cache nor the mirror
    on_demand: bool = False  # large: fetched by the run that reads it, or by naming it to the data doctor

    @property
    def size(self) -> int:
        """Total size of the dataset's files in bytes."""
        return sum(f.size for f in self.files)


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist(filename: str, sha256: str, size: int) -> FileSpec:
    return FileSpec(f"mnist/MNIST/raw/{filename}", sha256, size, tuple(m + filename for m in _MNIST_MIRRORS))


_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _cifar(name: str, sha256: str, size: int, original_md5: str) -> FileSpec:
    """sha256/size: the mirror's rebuilt file (same images and labels in another order, see the mirror's
    README); ``original_md5``: the file as the official archive ships it (torchvision's ``CIFAR10`` lists)."""
    return FileSpec(f"cifar10/cifar-10-batches-py/{name}", sha256, size, alt_md5=original_md5)


_RAW = "https://raw.githubusercontent.com/"  # GitHub files at a pinned commit
_TINYSTORIES_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-"

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            files=(
                _mnist("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
                _mnist("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
                _mnist("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
                _mnist("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
            ),
            license="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            description="MNIST handwritten digits: 60k train + 10k test, 28x28 grey, gzip'd IDX",
            homepage="http://yann.lecun.com/exdb/mnist/",
        ),
        DatasetSpec(
            name="cifar10",
            files=(
                _cifar("data_batch_1", "351e9a179274047064b69609c11a2b85cb3fc209fc4d49cd1e7607ab789d355a", 30986306,
                       "c99cafc152244af753f735de768cd75f"),
                _cifar("data_batch_2", "6a06c6bc6baa1fbfe231c35406c9712f50a18b50dde47e09d56726fe90318f30", 30986240,
                       "d4bba439e000b95fd0a9bffe97cbabec"),
                _cifar("data_batch_3", "aad742ed3a869f95ed906795e9a66bcdeeb703cda69007d9fd0b65c298d00d89", 30986681,
                       "54ebc095f3ab1f0389bbae665268c751"),
                _cifar("data_batch_4", "0fa55a5b271625198412fbc677644620f4c6f4297a21ee24a5696dd39005d63c", 30986312,
                       "634d18415352ddfa80567beed471001a"),
                _cifar("data_batch_5", "9e0caa54e30108aa0d3d4a5323888fc34b349849a0cd64d3a33aa54eb99da96d", 30986303,
                       "482c414d41f54cd18b22e5b47cb7c3cb"),
                _cifar("test_batch", "1ffc12369cd33bd39d930baef6534df8bed6c4957b50f64796d0c8dc29a06aa6", 30986226,
                       "40351d587109b95175f43aff81a1287e"),
                _cifar("batches.meta", "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb", 158,
                       "5ff9c542aee3614f3951f8cda6e48888"),
            ),
            license="no licence stated; cite Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images",
            description="CIFAR-10: 50k train + 10k test 32x32 RGB images in 10 classes, python pickles",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            archive=ArchiveSpec(_CIFAR_URL, "c58f30108f718f92721af3b95e74349a", "cifar10"),
        ),
        DatasetSpec(
            name="tiny_shakespeare",
            files=(
                FileSpec(
                    "tiny_shakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                    1115394,
                    ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
                ),
            ),
            license="public domain text (char-rnn code: MIT)",
            description="Tiny Shakespeare: 1.1 MB of plays, 65 distinct characters (char-rnn, nanoGPT)",
            homepage="https://github.com/karpathy/char-rnn",
        ),
        DatasetSpec(
            name="hh_rlhf",
            files=(FileSpec("hh_rlhf/harmless-base/test.jsonl.gz",
                            "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03", 742_801,
                            (_RAW + "anthropics/hh-rlhf/354e5c3cb8960630860dd5774a6ac2a58313bf4d/harmless-base/"
                                    "test.jsonl.gz",)),),
            license="MIT (Anthropic); red-teaming dialogues, some offensive by design",
            description="HH-RLHF harmless-base test split (Bai et al. 2022, https://arxiv.org/abs/2204.05862): 2,312 "
                        "chosen/rejected dialogue pairs that differ only in the last Assistant turn",
            homepage="https://github.com/anthropics/hh-rlhf",
        ),
        DatasetSpec(
            name="alpaca",
            files=(FileSpec("alpaca/alpaca_5000.json",
                            "fc1add24c93c9fbbe585a64a6c9bf6165eb110225f4470efbff382a913558ec0", 2_044_701,
                            (_RAW + "tatsu-lab/stanford_alpaca/5e69c50054c48cd3b919c46d13bb2d92a62f4498/data/"
                                    "alpaca_5000.json",)),
                   FileSpec("alpaca/seed_tasks.jsonl",
                            "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48", 110_934,
                            (_RAW + "tatsu-lab/stanford_alpaca/761dc5bfbdeeffa89b8bff5d038781a4055f796a/"
                                    "seed_tasks.jsonl",))),
            license="CC BY-NC 4.0 (data; research and non-commercial use); code Apache-2.0",
            description="Stanford Alpaca: a 5,000-record random sample of the 52K instruction/input/output records "
                        "(stanford_alpaca PR #152), and the 175 seed tasks",
            homepage="https://github.com/tatsu-lab/stanford_alpaca",
        ),
        DatasetSpec(
            name="alpaca_eval",
            files=(FileSpec("alpaca_eval/alpaca_eval.jsonl",
                            "9f3cf318fe67b3a7eec7c26260d7654ea17917cc5d1d00eeecc2d70709ba5193", 602_261,
                            (_RAW + "stanford-cs336/assignment5-alignment/eb2c562e05802d3c9ee4c4ec2eec43b104d77e9e/data/"
                                    "alpaca_eval/alpaca_eval.jsonl",)),),
            license="CC BY-NC 4.0",
            description="AlpacaEval: 805 instructions with text-davinci-003 reference outputs (JSONL, CS336 a5)",
            homepage="https://github.com/tatsu-lab/alpaca_eval",
        ),
        DatasetSpec(
            name="self_instruct",
            files=(FileSpec("self_instruct/user_oriented_instructions.jsonl",
                            "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e", 170_193,
                            (_RAW + "yizhongw/self-instruct/0b26ccaa415992100fa32df62d41b994cf928e23/human_eval/"
                                    "user_oriented_instructions.jsonl",)),),
            license="Apache-2.0",
            description="Self-Instruct's 252 expert-written user-oriented tasks with reference outputs (evaluation)",
            homepage="https://github.com/yizhongw/self-instruct",
        ),
        DatasetSpec(
            name="llms_from_scratch_ch07",
            files=(FileSpec("llms_from_scratch_ch07/instruction-data.json",
                            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944", 203_524,
                            (_RAW + "rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57/ch07/"
                                    "01_main-chapter-code/instruction-data.json",)),
                   FileSpec("llms_from_scratch_ch07/instruction-data-with-preference.json",
                            "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e", 386_968,
                            (_RAW + "rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57/ch07/"
                                    "04_preference-tuning-with-dpo/instruction-data-with-preference.json",))),
            license="Apache-2.0",
            description="LLMs-from-scratch chapter 7: 1,100 instruction records, and the same with polite (chosen) / "
                        "impolite (rejected) answers for DPO",
            homepage="https://github.com/rasbt/LLMs-from-scratch",
        ),
        DatasetSpec(
            name="tinystories",
            files=(  # sha256 "": sizes are the published ones; the sha256 is pinned at the first download
                FileSpec("tinystories/TinyStoriesV2-GPT4-valid.txt", "", 22_502_601, (_TINYSTORIES_URL + "valid.txt",)),
                FileSpec("tinystories/TinyStoriesV2-GPT4-train.txt", "", 2_227_753_162, (_TINYSTORIES_URL + "train.txt",)),
            ),
            license="CDLA-Sharing-1.0 (Eldan & Li 2023, https://arxiv.org/abs/2305.07759)",
            description="TinyStories V2 (GPT-4 generated): ~2.7M short children's stories, 2.2 GB of text, "
                        "stories separated by <|endoftext|>",
            homepage="https://huggingface.co/datasets/roneneldan/TinyStories",
            on_demand=True,
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name.

    Raises:
        KeyError: unknown name; the message lists the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'. Registered datasets: {', '.join(sorted(REGISTRY))}") from None
