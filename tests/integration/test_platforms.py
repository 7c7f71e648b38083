"""Which instances of a multi-arch image `mirrord copy` pushes, as skopeo would choose them.

Without `--all` only the host platform's image goes under the tag (its manifest bytes
unchanged); `--override-arch` picks another; `--platform` makes a subset index, says so, and
keeps each kept child byte for byte.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from tests.harness.images import Image
from tests.harness.skopeo import SkopeoError, copy_to_oci, inspect_raw
from tests.integration.conftest import SeedCorpus
from tests.integration.support import Mirrord, assert_same_image, dest_flags, docker_ref, src_flags

HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[
    platform.machine().lower()
]


def _child(index: Image, arch: str) -> Image:
    (child,) = [
        c for c in index.children if c.platform is not None and c.platform.architecture == arch
    ]
    return child


@pytest.mark.parametrize("kind", ["list", "index"])
def test_copy_without_all_pushes_only_the_host_platform_under_the_tag(
    kind: str, seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str, tmp_path: Path
) -> None:
    source = seed_corpus("anonymous", kind)
    registry = source.registry
    cli(
        "copy",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, f"{unique_repo}:v1"),
    ).ok()
    chosen = _child(source.image, HOST_ARCH)
    assert_same_image(registry, unique_repo, "v1", chosen, tmp_path)
    for other in source.image.children:
        if other is not chosen:
            with pytest.raises(SkopeoError, match=r"(?i)manifest unknown"):
                inspect_raw(registry, f"{unique_repo}@{other.digest}")


def test_override_arch_picks_that_platform(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str, tmp_path: Path
) -> None:
    source = seed_corpus("anonymous", "index")
    registry = source.registry
    cli(
        "--override-arch",
        "arm64",
        "copy",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, f"{unique_repo}:v1"),
    ).ok()
    assert_same_image(registry, unique_repo, "v1", _child(source.image, "arm64"), tmp_path)


def test_override_arch_missing_from_the_index_names_the_platforms_there(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "list")
    registry = source.registry
    result = cli(
        "--override-arch",
        "riscv64",
        "copy",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, f"{unique_repo}:v1"),
    )
    # The image exists, only not for that platform: a failure (1), not "not found" (4).
    assert result.returncode == 1, result.describe()
    line = result.error_line()
    assert "linux/riscv64" in line
    assert "linux/amd64" in line
    assert "linux/arm64" in line


def test_platform_list_makes_a_subset_index_and_says_so(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str, tmp_path: Path
) -> None:
    source = seed_corpus("anonymous", "index")
    registry = source.registry
    result = cli(
        "copy",
        "--platform",
        "linux/amd64,linux/arm64",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, f"{unique_repo}:v1"),
    ).ok()
    raw = inspect_raw(registry, f"{unique_repo}:v1")
    index = json.loads(raw)
    kept = {entry["digest"] for entry in index["manifests"]}
    amd64, arm64 = _child(source.image, "amd64"), _child(source.image, "arm64")
    attestations = {
        c.digest
        for c in source.image.children
        if c.annotations.get("vnd.docker.reference.digest") in (amd64.digest, arm64.digest)
    }
    assert kept == {amd64.digest, arm64.digest} | attestations
    assert len(kept) == 4
    assert raw != source.image.manifest
    assert "subset" in result.stdout
    assert source.image.digest in result.stdout
    for child in source.image.children:
        if child.digest in kept:
            assert inspect_raw(registry, f"{unique_repo}@{child.digest}") == child.manifest
    copy_to_oci(registry, f"{unique_repo}:v1", tmp_path / "verify")
