"""Hostile pools and bundles: refused with a clear error, and nothing written outside the target."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.bundle.corpus import V2, Corpus, mirrord, plant, write_tar
from tests.harness.registry import MakeRegistry
from tests.harness.skopeo import SkopeoError, inspect_raw

EVIL = "sha256:../../../../x"


def listing(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "list.txt"
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


def private_pool(corpus: Corpus, tmp_path: Path, *names: str) -> Path:
    """A pool of our own: copies, not links, of corpus images (safe to damage)."""
    pool = tmp_path / "pool"
    result = mirrord(
        "export",
        listing(tmp_path, *names),
        pool,
        "--from",
        corpus.docker_pool,
        "--src-tls-verify=false",
    )
    assert result.exit_code == 0, result.output
    return pool


def test_a_manifest_naming_a_path_as_a_digest_is_refused(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": EVIL, "size": 3}
    config = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:" + "a" * 64,
        "size": 2,
    }
    raw = json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}).encode()
    plant(pool, "evil", "1", raw)
    list_file = listing(tmp_path, "evil:1")
    before = files_under(tmp_path)
    result = mirrord("export", list_file, tmp_path / "bundle", "--from", f"registry-storage:{pool}")
    assert result.exit_code == 1
    assert "invalid digest 'sha256:../../../../x'" in result.stderr
    written = files_under(tmp_path) - before
    assert all((tmp_path / "bundle") in p.parents for p in written)
    assert list(tmp_path.rglob("x")) == []


def test_a_link_holding_a_path_is_refused(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    plant(pool, "evil", "1", b"{}")
    (pool / V2 / "repositories/evil/_manifests/tags/1/current/link").write_text(EVIL)
    result = mirrord(
        "export",
        listing(tmp_path, "evil:1"),
        tmp_path / "bundle",
        "--from",
        f"registry-storage:{pool}",
    )
    assert result.exit_code == 1
    assert "not a digest" in result.stderr


def test_a_stray_directory_among_the_repositories_is_named(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    plant(pool, "good", "1", b"{}")
    stray = pool / V2 / "repositories/Bad"
    (stray / "_manifests").mkdir(parents=True)
    result = mirrord("verify", pool)
    assert result.exit_code == 1
    assert f"{stray}: not a repository of images (invalid repository name 'Bad')" in result.stderr


def test_an_oci_index_naming_a_path_is_refused(tmp_path: Path, make_registry: MakeRegistry) -> None:
    bundle = tmp_path / "oci"
    bundle.mkdir()
    (bundle / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": EVIL,
        "size": 10,
        "annotations": {"org.opencontainers.image.ref.name": "evil:1"},
    }
    (bundle / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    result = mirrord(
        "import", bundle, f"docker://{make_registry().host}", "--dest-tls-verify=false"
    )
    assert result.exit_code == 1
    assert "invalid digest" in result.stderr


@pytest.mark.parametrize("planted", ["blobs", "repositories"])
def test_a_symlink_planted_in_the_bundle_is_never_followed(
    corpus: Corpus, tmp_path: Path, planted: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = tmp_path / "bundle"
    (bundle / V2).mkdir(parents=True)
    (bundle / V2 / planted).symlink_to(outside)
    result = mirrord(
        "export", listing(tmp_path, "app/web:v1"), bundle, "--from", corpus.storage_pool
    )
    assert result.exit_code == 1
    assert "refusing to follow a symlink" in result.stderr
    assert list(outside.iterdir()) == []


def test_a_symlinked_blob_in_a_bundle_is_refused_by_import(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    bundle = private_pool(corpus, tmp_path, "app/web:v1")
    image = corpus.images["app/web:v1"]
    layer = max(image.blobs, key=lambda d: image.blobs[d])
    data = bundle / V2 / f"blobs/sha256/{layer[7:9]}/{layer[7:]}/data"
    secret = tmp_path / "secret"
    secret.write_bytes(data.read_bytes())  # even the right bytes: a link is never followed
    data.unlink()
    data.symlink_to(secret)
    target = make_registry()
    result = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
    assert result.exit_code == 1
    assert "refusing symlink" in result.stderr
    with pytest.raises(SkopeoError):
        inspect_raw(target, "app/web:v1")


def test_a_truncated_blob_in_the_pool_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    pool = private_pool(corpus, tmp_path, "app/api:1.0")
    image = corpus.images["app/api:1.0"]
    layer = max(image.blobs, key=lambda d: image.blobs[d])
    data = pool / V2 / f"blobs/sha256/{layer[7:9]}/{layer[7:]}/data"
    data.write_bytes(data.read_bytes()[:1000])
    bundle = tmp_path / "bundle"
    result = mirrord(
        "export", listing(tmp_path, "app/api:1.0"), bundle, "--from", f"registry-storage:{pool}"
    )
    assert result.exit_code == 1
    assert (
        f"blob {layer} is 1000 bytes, the manifest says {image.blobs[layer]} (truncated"
        in result.stderr
    )
    assert not (bundle / V2 / "repositories/app/api/_manifests/tags").exists()  # never tagged


def test_a_truncated_blob_in_a_bundle_is_refused_by_import(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    bundle = private_pool(corpus, tmp_path, "app/api:1.0")
    image = corpus.images["app/api:1.0"]
    layer = max(image.blobs, key=lambda d: image.blobs[d])
    data = bundle / V2 / f"blobs/sha256/{layer[7:9]}/{layer[7:]}/data"
    data.write_bytes(data.read_bytes()[:-1])
    target = make_registry()
    result = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
    assert result.exit_code == 1
    assert "truncated" in result.stderr
    with pytest.raises(SkopeoError):
        inspect_raw(target, "app/api:1.0")


def test_a_packed_bundle_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    info = b'{"mirrord-bundle":1,"format":"registry-storage","images":[],"blobs":[],"base":[]}'
    packed = tmp_path / "evil.tar"
    write_tar(packed, {"mirrord-bundle.json": info, "../escaped": b"gotcha", "SHA256SUMS": b""})
    work = tmp_path / "work"
    work.mkdir()
    result = mirrord("verify", packed, "--workdir", work)
    assert result.exit_code == 1
    assert "unsafe name" in result.stderr
    assert not (tmp_path / "escaped").exists()
    assert not (work / "escaped").exists()
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("odd", "said"),
    [
        # each part of the name fits the file system, the whole path does not (PATH_MAX)
        (("/".join(["a" * 250] * 20), b"x"), "File name too long"),
        (("SHA256SUMS", b"forged"), "'SHA256SUMS' appears twice"),
    ],
    ids=["name-too-long", "two-sums"],
)
def test_a_packed_bundle_this_machine_cannot_unpack_gets_one_line(
    tmp_path: Path, odd: tuple[str, bytes], said: str
) -> None:
    info = b'{"mirrord-bundle":1,"format":"registry-storage","images":[],"blobs":[],"base":[]}'
    members = [("mirrord-bundle.json", info), ("SHA256SUMS", b""), odd]
    packed = tmp_path / "odd.tar"
    write_tar(packed, members)
    work = tmp_path / "work"
    work.mkdir()
    result = mirrord("verify", packed, "--workdir", work)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"mirrord: error: {packed}: member " in result.stderr
    assert said in result.stderr
    assert list(work.iterdir()) == []


def test_a_packed_bundle_that_lost_its_tail_says_so(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    packed = tmp_path / "bundle.tar"
    exported = mirrord(
        "export", listing(tmp_path, "tools:2.0"), packed, "--from", corpus.storage_pool
    )
    assert exported.exit_code == 0, exported.output
    with tarfile.open(packed) as tar:
        last = tar.getmembers()[-1]
    assert last.name == "SHA256SUMS"
    packed.write_bytes(packed.read_bytes()[: last.offset])  # the USB stick was full
    target = make_registry()
    result = mirrord("import", packed, f"docker://{target.host}", "--dest-tls-verify=false")
    assert result.exit_code == 1
    assert "no SHA256SUMS" in result.stderr
    assert "truncated?" in result.stderr
    with pytest.raises(SkopeoError):
        inspect_raw(target, "tools:2.0")


def test_a_docker_archive_naming_a_path_is_refused(tmp_path: Path) -> None:
    manifest = [{"Config": "../../etc/passwd", "RepoTags": ["evil:1"], "Layers": []}]
    archive = tmp_path / "evil.tar"
    write_tar(archive, {"manifest.json": json.dumps(manifest).encode()})
    result = mirrord("copy", f"docker-archive:{archive}:evil:1", f"dir:{tmp_path / 'out'}")
    assert result.exit_code == 1
    assert "unsafe name" in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
