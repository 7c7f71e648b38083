"""`mirrord verify`: every blob re-hashed, every reference checked, every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundle.corpus import LIST_V1, Corpus, mirrord, retag


@pytest.fixture
def bundle(corpus: Corpus, tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    assert (
        mirrord("export", corpus.list_file(LIST_V1), path, "--from", corpus.storage_pool).exit_code
        == 0
    )
    return path


def data_file(bundle: Path, digest: str) -> Path:
    hexdigest = digest.split(":", 1)[1]
    return bundle / f"docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"


def replace(path: Path, data: bytes) -> None:
    """Give `path` new bytes without touching the pool file it is hard-linked to."""
    path.unlink()
    path.write_bytes(data)


def layer_of(corpus: Corpus) -> str:
    image = corpus.images["app/web:v1"]
    return max(image.blobs, key=lambda d: image.blobs[d])


def test_a_good_bundle_verifies(corpus: Corpus, bundle: Path) -> None:
    result = mirrord("verify", bundle)
    assert result.exit_code == 0, result.output
    assert f"OK: {len(LIST_V1)} images" in result.output


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_blob_is_named(corpus: Corpus, bundle: Path, damage: str) -> None:
    digest = layer_of(corpus)
    path = data_file(bundle, digest)
    data = path.read_bytes()
    replace(
        path,
        data[:-100] if damage == "truncated" else data[:50] + bytes([data[50] ^ 1]) + data[51:],
    )
    result = mirrord("verify", bundle)
    assert result.exit_code == 1
    assert f"blob {digest}: its bytes hash to" in result.stderr
    if damage == "truncated":
        assert "app/web:v1: blob" in result.stderr
        assert "truncated" in result.stderr


def test_a_missing_repository_link_is_named(corpus: Corpus, bundle: Path) -> None:
    digest = layer_of(corpus)
    link = bundle / f"docker/registry/v2/repositories/app/web/_layers/sha256/{digest[7:]}/link"
    link.unlink()
    result = mirrord("verify", bundle)
    assert result.exit_code == 1
    assert f"app/web: no _layers link for {digest}" in result.stderr


def test_a_tag_that_names_another_digest_than_the_description_is_named(
    corpus: Corpus, bundle: Path
) -> None:
    # What a re-export killed after moving a tag left: the link names a manifest the bundle
    # holds (here a single-platform child of the index), the description the index.
    index = corpus.images["multi:latest"]
    child = index.children[0].digest
    retag(bundle, "multi", "latest", child)
    result = mirrord("verify", bundle)
    assert result.exit_code == 1
    assert (
        f"{bundle}: multi:latest: resolves to {child}, mirrord-bundle.json says {index.digest}"
        in result.stderr
    )
    assert result.stderr.count("resolves to") == 1  # the other images are fine


def test_a_planted_symlink_fails_verification_before_anything_is_read(
    corpus: Corpus, bundle: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    path = data_file(bundle, layer_of(corpus))
    path.unlink()
    path.symlink_to(secret)
    result = mirrord("verify", bundle)
    assert result.exit_code == 1
    assert "refusing symlink" in result.stderr


def test_a_tampered_packed_bundle_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    packed = tmp_path / "bundle.tar"
    mirrord("export", corpus.list_file(("app/api:1.0",)), packed, "--from", corpus.storage_pool)
    data = bytearray(packed.read_bytes())
    marker = data.find(b'"architecture"')  # inside the config blob
    data[marker + 2] ^= 1
    packed.write_bytes(bytes(data))
    result = mirrord("verify", packed, "--workdir", tmp_path)
    assert result.exit_code == 1
    assert f"{packed}: docker/registry/v2/blobs/sha256/" in result.stderr
    assert "(corrupt)" in result.stderr
    assert list(tmp_path.glob("mirrord-bundle-*")) == []
