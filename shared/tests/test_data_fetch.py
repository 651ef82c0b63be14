import pytest

from shared.data.__main__ import main as doctor
from shared.data.fetch import ChecksumError, DatasetUnavailableError, prepare, prepare_file


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


def test_a_file_matching_the_alternative_md5_is_accepted_and_others_are_refused(aifs_dirs):
    import hashlib

    from shared.data.fetch import inspect
    from shared.data.registry import DatasetSpec, FileSpec

    mirror_bytes, original_bytes = b"rebuilt version", b"original release"
    spec = DatasetSpec("two_versions", (FileSpec(
        "two/x.bin", hashlib.sha256(mirror_bytes).hexdigest(), len(mirror_bytes),
        alt_md5=hashlib.md5(original_bytes).hexdigest(),  # noqa: S324
    ),), license="-", description="-")
    cached = aifs_dirs["data"] / "two" / "x.bin"
    cached.parent.mkdir(parents=True)
    for blob in (mirror_bytes, original_bytes):
        cached.write_bytes(blob)
        prepare(spec)
        assert inspect(spec)[0].state == "verified"
    cached.write_bytes(b"something else")
    assert inspect(spec)[0].state == "corrupt"
    with pytest.raises(ChecksumError, match="or md5"):
        prepare(spec)


def test_a_dataset_missing_everywhere_is_fetched_from_its_source_archive(aifs_dirs, monkeypatch):
    import hashlib
    import tarfile

    import torchvision.datasets.utils as tv_utils

    from shared.data.registry import ArchiveSpec, DatasetSpec, FileSpec

    blob = b"payload"
    src = aifs_dirs["mirror"] / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "f.bin").write_bytes(blob)
    tgz = aifs_dirs["mirror"] / "pkg.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(src, arcname="pkg")
    calls = []

    def fake_download(url, download_root, md5=None, remove_finished=False):  # stands in for the network
        calls.append((url, md5))
        tv_utils.extract_archive(str(tgz), download_root)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    monkeypatch.delenv("AIFS_OFFLINE")
    spec = DatasetSpec("archived", (FileSpec("arc/pkg/f.bin", "0" * 64, len(blob),
                                             alt_md5=hashlib.md5(blob).hexdigest()),),  # noqa: S324
                       license="-", description="-", archive=ArchiveSpec("https://example.org/pkg.tar.gz", "abc", "arc"))
    root = prepare(spec)
    assert (root / "arc" / "pkg" / "f.bin").read_bytes() == blob
    assert calls == [("https://example.org/pkg.tar.gz", "abc")]


def _unpinned(aifs_dirs, monkeypatch, blob=b"a story<|endoftext|>another story"):
    """A dataset registered without a sha256 (as TinyStories is), served from the mirror."""
    from shared.data import registry
    from shared.data.registry import DatasetSpec, FileSpec

    (aifs_dirs["mirror"] / "unpinned").mkdir()
    (aifs_dirs["mirror"] / "unpinned" / "x.txt").write_bytes(blob)
    spec = DatasetSpec("unpinned", (FileSpec("unpinned/x.txt", "", len(blob)),), license="-", description="-",
                       on_demand=True)
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(aifs_dirs["mirror"]))
    return spec, aifs_dirs["data"] / "unpinned" / "x.txt"


def test_a_file_without_a_registered_sha256_is_accepted_by_size_then_pinned(aifs_dirs, monkeypatch, capsys):
    import hashlib

    from shared.data.fetch import inspect, pin_path

    spec, cached = _unpinned(aifs_dirs, monkeypatch)
    prepare(spec)
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    assert pin_path(cached).read_text().split()[0] == digest
    assert digest in capsys.readouterr().err  # printed, to be added to the registry
    cached.write_bytes(cached.read_bytes().replace(b"a story", b"A story"))  # same size, other bytes
    assert inspect(spec)[0].state == "corrupt"
    with pytest.raises(ChecksumError, match="pinned"):
        prepare(spec)


def test_a_file_without_a_registered_sha256_and_the_wrong_size_is_refused(aifs_dirs, monkeypatch):
    spec, cached = _unpinned(aifs_dirs, monkeypatch)
    (aifs_dirs["mirror"] / spec.files[0].relpath).write_bytes(b"truncated")
    with pytest.raises(ChecksumError, match="9 bytes, expected 33"):
        prepare(spec)
    assert not cached.exists()


def test_the_doctor_lists_an_on_demand_dataset_but_fetches_it_only_when_named(aifs_dirs, monkeypatch, capsys):
    spec, cached = _unpinned(aifs_dirs, monkeypatch)
    monkeypatch.setattr("shared.data.__main__.REGISTRY", {spec.name: spec})  # what `make data` walks
    assert doctor([]) == 0
    assert "on demand" in capsys.readouterr().out
    assert not cached.exists()
    assert doctor(["unpinned"]) == 0
    assert cached.is_file()


def _flip(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_wrong_file_in_the_mirror_is_named_with_what_to_do(fake_mnist, aifs_dirs):
    bad = aifs_dirs["mirror"] / fake_mnist.files[1].relpath
    _flip(bad)
    with pytest.raises(ChecksumError) as e:
        prepare(fake_mnist)
    msg = str(e.value)
    assert f"from the mirror ({bad})" in msg
    assert ".part" not in msg  # not the deleted temporary copy
    assert f"Fix: replace {bad} with a good copy" in msg
    assert "MANIFEST.tsv" in msg
    assert "unset AIFS_DATA_MIRROR" in msg
    assert not (aifs_dirs["data"] / fake_mnist.files[1].relpath).exists()


def test_a_corrupt_cache_file_names_the_repair_command(fake_mnist, aifs_dirs):
    prepare(fake_mnist)
    _flip(aifs_dirs["data"] / fake_mnist.files[2].relpath)
    with pytest.raises(ChecksumError, match=r"Fix: run `python -m shared.data fake_mnist` \(or `make data`\), which "
                                            "replaces it with a verified copy"):
        prepare(fake_mnist)


def test_the_doctor_replaces_a_corrupt_file_with_a_verified_copy_and_says_so(fake_mnist, aifs_dirs, capsys):
    from shared.data.fetch import inspect

    prepare(fake_mnist)
    victim = aifs_dirs["data"] / fake_mnist.files[0].relpath
    good = victim.read_bytes()
    _flip(victim)
    assert doctor(["fake_mnist", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"[corrupt ] {fake_mnist.files[0].relpath}" in out
    assert "`python -m shared.data fake_mnist` replaces it" in out
    assert victim.read_bytes() != good  # --check changes nothing
    assert doctor(["fake_mnist"]) == 0
    out = capsys.readouterr().out
    assert f"[repaired] {fake_mnist.files[0].relpath} (mirror " in out
    assert "the cached copy was corrupt (expected sha256" in out
    assert out.count("[verified]") == 3
    assert victim.read_bytes() == good
    assert [s.state for s in inspect(fake_mnist)] == ["verified"] * 4
    prepare(fake_mnist)


def test_the_doctor_keeps_a_corrupt_file_when_no_verified_copy_can_be_had(fake_mnist, aifs_dirs, capsys, monkeypatch):
    prepare(fake_mnist)
    victim = aifs_dirs["data"] / fake_mnist.files[0].relpath
    _flip(victim)
    corrupt = victim.read_bytes()
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(aifs_dirs["mirror"] / "elsewhere"))
    assert doctor(["fake_mnist"]) == 1
    out = capsys.readouterr().out
    assert f"[corrupt ] {fake_mnist.files[0].relpath}" in out
    assert "(corrupt: expected sha256" in out
    assert "kept until a verified copy replaces it" in out
    assert victim.read_bytes() == corrupt  # nothing deleted


def test_the_doctor_repairs_a_file_without_a_registered_sha256_against_its_pin(aifs_dirs, monkeypatch, capsys):
    from shared.data.fetch import pin_path

    spec, cached = _unpinned(aifs_dirs, monkeypatch)
    prepare(spec)
    pin = pin_path(cached).read_text()
    good = cached.read_bytes()
    cached.write_bytes(good.replace(b"a story", b"A story"))
    assert doctor(["unpinned"]) == 0
    assert "[repaired] unpinned/x.txt" in capsys.readouterr().out
    assert cached.read_bytes() == good
    assert pin_path(cached).read_text() == pin
    (aifs_dirs["mirror"] / spec.files[0].relpath).write_bytes(good.replace(b"another", b"Another"))  # same size
    cached.write_bytes(b"x" * len(good))
    with pytest.raises(ChecksumError, match=r"from the mirror .* pinned .* delete .*x.txt.sha256 to accept it"):
        prepare_file(spec.files[0], repair=True)
    assert cached.read_bytes() == b"x" * len(good)  # the mirror copy did not match the pin: nothing replaced
