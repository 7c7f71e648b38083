"""OCI-layout and docker-archive bundles, read by skopeo; every format imported back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bundle.corpus import LIST_V1, V2, Corpus, mirrord, plant, sha256
from tests.harness.registry import MakeRegistry
from tests.harness.skopeo import inspect_raw, run_skopeo


def skopeo_config(location: str) -> bytes:
    return run_skopeo("inspect", "--config", "--raw", location).stdout


def test_an_oci_bundle_is_read_by_skopeo(corpus: Corpus, tmp_path: Path) -> None:
    bundle = tmp_path / "oci-bundle"
    result = mirrord(
        "export",
        corpus.list_file(LIST_V1),
        bundle,
        "--from",
        corpus.storage_pool,
        "--format",
        "oci",
    )
    assert result.exit_code == 0, result.output
    # skopeo 1.9 addresses OCI-typed entries by name (Docker-typed ones only by mirrord).
    for name in ("app/web:v1", "multi:latest"):
        raw = run_skopeo("inspect", "--raw", f"oci:{bundle}:{name}").stdout
        assert raw == corpus.raw(name)
        run_skopeo(
            "copy", "--all", f"oci:{bundle}:{name}", f"dir:{tmp_path / name.replace('/', '-')}"
        )
    index = json.loads((bundle / "index.json").read_bytes())
    names = {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}
    assert names == set(LIST_V1)


def test_a_docker_archive_bundle_is_read_by_skopeo(corpus: Corpus, tmp_path: Path) -> None:
    archive = tmp_path / "images.tar"
    result = mirrord(
        "--override-arch",
        "arm64",
        "export",
        corpus.list_file(LIST_V1),
        archive,
        "--from",
        corpus.storage_pool,
        "--format",
        "docker-archive",
    )
    assert result.exit_code == 0, result.output
    for name in ("app/web:v1", "app/api:1.0"):
        pool_config = inspect_raw(corpus.registry, f"{corpus.prefix}/{name}", config=True)
        assert skopeo_config(f"docker-archive:{archive}:{name}") == pool_config
        run_skopeo(
            "copy", f"docker-archive:{archive}:{name}", f"dir:{tmp_path / name.replace('/', '-')}"
        )
    # docker load takes one image per name: an index contributes its instance for the
    # platform asked for (here arm64).
    arm64 = next(
        c
        for c in corpus.images["multi:latest"].children
        if c.platform is not None and c.platform.architecture == "arm64"
    )
    loaded = skopeo_config(f"docker-archive:{archive}:multi:latest")
    assert loaded == inspect_raw(
        corpus.registry, f"{corpus.prefix}/multi@{arm64.digest}", config=True
    )
    assert json.loads(loaded)["architecture"] == "arm64"


def test_a_docker_archive_holds_the_original_manifests_too(corpus: Corpus, tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "images.tar"
    mirrord(
        "export",
        corpus.list_file(LIST_V1),
        archive,
        "--from",
        corpus.storage_pool,
        "--format",
        "docker-archive",
    )
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    for image in corpus.images.values():
        assert f"blobs/sha256/{image.digest[7:]}" in names
    assert {"oci-layout", "index.json", "mirrord-bundle.json"} <= names
    assert sorted(t for e in manifest for t in e["RepoTags"]) == sorted(LIST_V1)


@pytest.mark.parametrize("fmt", ["registry-storage", "oci", "docker-archive"])
def test_import_into_an_empty_registry_yields_the_same_digests(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry, fmt: str
) -> None:
    bundle = tmp_path / ("bundle.tar" if fmt == "docker-archive" else "bundle")
    exported = mirrord(
        "export", corpus.list_file(LIST_V1), bundle, "--from", corpus.storage_pool, "--format", fmt
    )
    assert exported.exit_code == 0, exported.output
    target = make_registry()
    result = mirrord("import", bundle, f"docker://{target.host}/airgap", "--dest-tls-verify=false")
    assert result.exit_code == 0, result.output
    for name in LIST_V1:
        assert inspect_raw(target, f"airgap/{name}") == corpus.raw(name), name
    run_skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{target.host}/airgap/multi:latest",
        f"oci:{tmp_path / 'check'}:m",
    )


def test_a_packed_bundle_imports_too(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    packed = tmp_path / "bundle.tar.zst"
    mirrord("export", corpus.list_file(("tools:2.0",)), packed, "--from", corpus.storage_pool)
    target = make_registry()
    result = mirrord(
        "import",
        packed,
        f"docker://{target.host}",
        "--dest-tls-verify=false",
        "--workdir",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert inspect_raw(target, "tools:2.0") == corpus.raw("tools:2.0")
    assert list(tmp_path.glob("mirrord-bundle-*")) == []  # the unpacked copy is gone


def _windows_image(pool: Path) -> str:
    """Plant `win:1` in a registry storage: a layer from Microsoft's CDN (foreign) and one of
    its own."""
    config = json.dumps({"architecture": "amd64", "os": "windows", "rootfs": {}}).encode()
    layer = b"\x1f\x8b" + b"x" * 100
    for blob in (config, layer):
        path = pool / V2 / f"blobs/sha256/{sha256(blob)[7:9]}/{sha256(blob)[7:]}/data"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        link = pool / V2 / f"repositories/win/_layers/sha256/{sha256(blob)[7:]}/link"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(sha256(blob))
    docker = "application/vnd.docker"
    foreign = {
        "mediaType": f"{docker}.image.rootfs.foreign.diff.tar.gzip",
        "digest": "sha256:" + "f" * 64,
        "size": 12345,
        "urls": ["https://mcr.microsoft.com/blob/x"],
    }
    own = {
        "mediaType": f"{docker}.image.rootfs.diff.tar.gzip",
        "digest": sha256(layer),
        "size": len(layer),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": f"{docker}.distribution.manifest.v2+json",
        "config": {
            "mediaType": f"{docker}.container.image.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [foreign, own],
    }
    return plant(pool, "win", "1", json.dumps(manifest).encode())


def test_a_docker_archive_refuses_an_image_with_a_foreign_layer_and_keeps_the_others(
    corpus: Corpus, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    exported = mirrord(
        "export", corpus.list_file(("tools:2.0",)), pool, "--from", corpus.storage_pool
    )
    assert exported.exit_code == 0, exported.output
    _windows_image(pool)
    archive = tmp_path / "images.tar"
    result = mirrord(
        "export",
        corpus.list_file(("tools:2.0", "win:1"), "mixed.txt"),
        archive,
        "--from",
        f"registry-storage:{pool}",
        "--format",
        "docker-archive",
    )
    assert result.exit_code == 3, result.output  # one image failed, named
    assert "win:1: layer sha256:ffff" in result.output
    assert "non-distributable" in result.output
    run_skopeo("copy", f"docker-archive:{archive}:tools:2.0", f"dir:{tmp_path / 'tools'}")
    assert mirrord("verify", archive).exit_code == 0
