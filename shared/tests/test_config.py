from dataclasses import dataclass, field

import pytest

from shared.config import ConfigError, config_hash, load_config, to_yaml


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
