import pytest

from shared.data.__main__ import main as doctor
from shared.data.fetch import ChecksumError, DatasetUnavailableError, prepare


def test_copies_from_mirror_and_verifies(fake_mnist, aifs_dirs):
    root = prepare(fake_mnist)
    for f in fake_mnist.files:
        assert (root / f.relpath).is_file()
    leftovers = [p for p in aifs_dirs["data"].rglob("*") if p.name.endswith((".part", ".tmp"))]
    assert leftovers == []
    prepare(fake_mnist)  # second call: served from the verified cache


def test_corrupted_cache_file_raises_checksum_error_naming_it(fake_mnist, aifs_dirs):
    prepare(fake_mnist)
    victim = aifs_dirs["data"] / fake_mnist.files[0].relpath
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as e:
        prepare(fake_mnist)
    assert fake_mnist.files[0].relpath in str(e.value)
    assert str(victim) in str(e.value)
    assert "delete" in str(e.value)


def test_corrupted_mirror_file_is_not_copied(fake_mnist, aifs_dirs):
    bad = aifs_dirs["mirror"] / fake_mnist.files[1].relpath
    bad.write_bytes(b"truncated")
    with pytest.raises(ChecksumError, match="mirror"):
        prepare(fake_mnist)
    assert not (aifs_dirs["data"] / fake_mnist.files[1].relpath).exists()


def test_missing_and_offline_lists_every_place_and_the_fix(fake_mnist, aifs_dirs, monkeypatch):
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(aifs_dirs["mirror"] / "elsewhere"))
    with pytest.raises(DatasetUnavailableError) as e:
        prepare(fake_mnist)
    msg = str(e.value)
    rel = fake_mnist.files[0].relpath
    assert rel in msg
    assert "cache:" in msg
    assert "mirror:" in msg
    assert "AIFS_OFFLINE=1" in msg
    assert "Fix:" in msg


def test_missing_without_mirror_variable_says_so(fake_mnist, monkeypatch):
    monkeypatch.delenv("AIFS_DATA_MIRROR")
    with pytest.raises(DatasetUnavailableError, match=r"\$AIFS_DATA_MIRROR is not set"):
        prepare(fake_mnist)


def test_unknown_dataset_name_lists_registered():
    with pytest.raises(KeyError, match="mnist"):
        prepare("no_such_dataset")


def test_doctor_reports_state_and_fetches(fake_mnist, capsys):
    assert doctor(["fake_mnist", "--check"]) == 1
    assert "[missing " in capsys.readouterr().out
    assert doctor(["fake_mnist"]) == 0
    out = capsys.readouterr().out
    assert out.count("[verified]") == 4
    assert "licence: generated" in out
