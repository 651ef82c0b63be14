"""Data-version manifests: a round trip, hash verification naming a changed file, listing versions."""

import pytest

from shared.data.fetch import sha256sum
from shared.data.manifest import ManifestError, list_versions, read_manifest, verify_manifest, write_manifest


def _version(tmp_path):
    raw, folder = tmp_path / "raw", tmp_path / "versions" / "B"
    (raw / "src").mkdir(parents=True)
    folder.mkdir(parents=True)
    src = raw / "src" / "a.txt"
    src.write_text("source text")
    packed = folder / "train.bin"
    packed.write_bytes(b"\x01\x02\x03\x04")
    path = write_manifest(folder, name="B", sources=[{"dataset": "src", "path": "src/a.txt", "sha256": sha256sum(src),
                                                      "bytes": src.stat().st_size}],
                          filters=[{"name": "exact_dedup", "params": {}, "removed_docs": 3, "removed_bytes": 120}],
                          counts={"train": {"documents": 10, "tokens": 2}}, tokenizer_sha256="ab" * 32,
                          files=[packed])
    return raw, folder, path, src, packed


def test_round_trip_and_verification(tmp_path):
    raw, folder, path, _, _ = _version(tmp_path)
    m = read_manifest(folder)
    assert m["name"] == "B"
    assert m["files"] == [{"path": "train.bin", "sha256": sha256sum(folder / "train.bin"), "bytes": 4}]
    assert m["filters"][0]["removed_docs"] == 3
    assert verify_manifest(path, raw)["counts"]["train"]["tokens"] == 2


@pytest.mark.parametrize("which", ["source", "packed"])
def test_a_changed_file_is_named(tmp_path, which):
    raw, folder, path, src, packed = _version(tmp_path)
    target = src if which == "source" else packed
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=rf"{which} file {target} has sha256 .* records sha256"):
        verify_manifest(path, raw)
    target.write_bytes(b"")  # other size
    with pytest.raises(ManifestError, match="has 0 bytes, but .* records"):
        verify_manifest(path, raw)
    target.unlink()
    with pytest.raises(ManifestError, match="is missing"):
        verify_manifest(path, raw)


def test_bad_manifests_are_refused_and_versions_are_listed(tmp_path):
    _, folder, _, _, _ = _version(tmp_path)
    with pytest.raises(ManifestError, match="no data-version manifest"):
        read_manifest(tmp_path / "nowhere.json")
    bad = tmp_path / "versions" / "broken" / "manifest.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(bad)
    versions = list_versions(tmp_path / "versions")
    assert [(v["name"], v["documents"], v["tokens"]) for v in versions] == [("B", 10, 2)]  # the broken one is skipped
