from dataclasses import dataclass, field

import pytest

from shared.config import ConfigError, at_least, config_hash, in_range, load_config, positive, to_yaml
from shared.data.mnist import MNISTConfig
from shared.models import ModelConfig
from shared.models.gpt import MAX_BLOCK_SIZE, GPTConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig, TrainConfig


@dataclass
class Inner:
    lr: float = 0.1
    epochs: int = 3
    name: str = "sgd"


@dataclass
class Outer:
    train: Inner = field(default_factory=Inner)
    seeds: list[int] = field(default_factory=lambda: [0, 1])


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  lr: 0.5\n  epochs: 7\n")
    cfg = load_config(Outer, [y], ["train.lr=0.05", "seeds=[4,5,6]"])
    assert isinstance(cfg, Outer)
    assert cfg.train.lr == 0.05
    assert cfg.train.epochs == 7
    assert cfg.train.name == "sgd"
    assert cfg.seeds == [4, 5, 6]


def test_unknown_key_on_command_line_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(Outer, [], ["train.lrr=0.1"])
    msg = str(e.value)
    assert "train.lrr" in msg
    assert "epochs, lr, name" in msg


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("trian:\n  lr: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, [y])
    assert "trian" in str(e.value)
    assert "bad.yaml" in str(e.value)
    assert "seeds, train" in str(e.value)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError) as e:
        load_config(Outer, [], ["train.epochs=three"])
    assert "train.epochs" in str(e.value)
    assert "int" in str(e.value)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, [], ["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, [tmp_path / "nope.yaml"])


def test_hash_changes_with_any_value():
    a, b = Outer(), Outer()
    assert config_hash(a) == config_hash(b)
    b.train.lr = 0.2
    assert config_hash(a) != config_hash(b)
    assert "lr: 0.2" in to_yaml(b)


# -- ranges, malformed values, cross-field checks ---------------------------------------------------------------------

@dataclass
class Ranged:
    lr: float = positive(0.1)
    batch: int = at_least(1, 4)
    dropout: float = in_range(0, 1, 0.0, hi_open=True)


@dataclass
class RangedOuter:
    train: Ranged = field(default_factory=Ranged)
    points: list[Ranged] = field(default_factory=lambda: [Ranged()])


def test_a_value_out_of_range_names_its_dotted_key_where_it_was_set_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(RangedOuter, [], ["train.lr=-1"])
    assert str(e.value) == ("train.lr=-1: must be > 0 (from command line). Fix: set train.lr to a value > 0 (in the "
                            "config file, or on the command line as key=value).")
    y = tmp_path / "run.yaml"
    y.write_text("train:\n  batch: 0\n  dropout: 1.0\n")
    with pytest.raises(ConfigError) as e:
        load_config(RangedOuter, [y])
    msg = str(e.value)
    assert f"train.batch=0: must be >= 1 (from {y})" in msg
    assert f"train.dropout=1: must be in [0, 1) (from {y})" in msg
    assert "set each of train.batch, train.dropout" in msg


def test_nan_infinity_and_values_inside_lists_are_checked_too():
    for bad in ("nan", "inf"):
        with pytest.raises(ConfigError, match=rf"train.lr={bad}: must be > 0"):
            load_config(RangedOuter, [], [f"train.lr={bad}"])
    with pytest.raises(ConfigError, match=r"points\[0\].batch=0: must be >= 1"):
        load_config(RangedOuter, [], ["points=[{batch: 0}]"])
    ok = load_config(RangedOuter, [], ["train.lr=0.5", "train.batch=1", "train.dropout=0.5"])
    assert (ok.train.lr, ok.train.batch, ok.train.dropout) == (0.5, 1, 0.5)


@dataclass
class Shared:
    """The shared sections, nested as the weeks nest them."""

    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: MNISTConfig = field(default_factory=MNISTConfig)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=-1", "optim.lr=-1: must be > 0"),
    ("optim.beta2=1.0", "optim.beta2=1: must be in [0, 1)"),
    ("schedule.warmup_steps=-5", "schedule.warmup_steps=-5: must be >= 0"),
    ("loop.micro_batch=0", "loop.micro_batch=0: must be >= 1"),
    ("loop.grad_accum_steps=0", "loop.grad_accum_steps=0: must be >= 1"),
    ("loop.max_steps=-1", "loop.max_steps=-1: must be >= 1"),
    ("loop.keep_last_k=0", "loop.keep_last_k=0: must be >= 1"),
    ("train.epochs=0", "train.epochs=0: must be >= 1"),
    ("train.lr=-1", "train.lr=-1: must be > 0"),
    ("data.batch_size=0", "data.batch_size=0: must be >= 1"),
    (f"model.block_size={MAX_BLOCK_SIZE + 1}", f"model.block_size={MAX_BLOCK_SIZE + 1}: must be in [1, {MAX_BLOCK_SIZE}]"),
    ("model.dropout=1.5", "model.dropout=1.5: must be in [0, 1)"),
])
def test_the_shared_sections_refuse_values_torch_would_choke_on(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(Shared, [], [override])
    assert str(e.value).startswith(message)
    assert "Fix:" in str(e.value)


def test_the_shared_defaults_and_edge_values_are_accepted():
    cfg = load_config(Shared, [], ["loop.grad_clip=0", "loop.stop_at=0", f"model.block_size={MAX_BLOCK_SIZE}",
                                   "optim.beta1=0", "train.momentum=0"])
    assert cfg.model.block_size == MAX_BLOCK_SIZE


def test_a_sections_own_validate_becomes_a_config_error():
    with pytest.raises(ConfigError, match=r"model.n_embd=384 is not divisible by model.n_head=5"):
        load_config(Shared, [], ["model.n_head=5"])


@pytest.mark.parametrize("value", ["[1", "{a", "'open"])
def test_a_malformed_override_value_is_named(value):
    with pytest.raises(ConfigError) as e:
        load_config(Outer, [], [f"train.lr={value}"])
    assert str(e.value).startswith(f"override train.lr={value}: not a valid value (")
    assert "Fix:" in str(e.value)


def test_a_yaml_file_that_does_not_parse_names_the_file_and_line(tmp_path):
    y = tmp_path / "broken.yaml"
    y.write_text("train:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML \(.*line \d+"):
        load_config(Outer, [y])
    y.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(Outer, [y])


@dataclass
class TwoModels:
    softmax: ModelConfig = field(default_factory=ModelConfig)
    cnn: ModelConfig = field(default_factory=lambda: ModelConfig(name="small_cnn"))
    loop: LoopConfig = field(default_factory=LoopConfig)


@pytest.mark.parametrize(("override", "message"), [
    ("cnn.name=mlp", "unknown cnn.name 'mlp'. Choose one of: cnn_small, resnet9, small_cnn, softmax_regression"),
    ("softmax.init=orthogonal", "unknown softmax.init 'orthogonal'. Choose one of: default, kaiming, xavier"),
    ("loop.precision=fp8", "unknown loop.precision 'fp8'. Choose one of: fp32, bf16, fp16"),
])
def test_an_unknown_name_is_refused_at_its_own_dotted_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TwoModels, [], [override])
    assert str(e.value) == message
