"""`mirrord copy` against real registries: every manifest kind, every auth and TLS variant,
registry to registry and between repositories of one registry (by cross-repository mount).

What a user would check: the destination serves the very bytes of every manifest (skopeo
`inspect --raw`), skopeo can pull the copy (it verifies every digest), and a copy inside one
registry moved no blob bytes (the registry's access log shows mounts, no upload PUT).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.registry import MakeRegistry, Variant
from tests.harness.tokenserver import TokenServer
from tests.integration.conftest import CORPUS_REPO, KINDS, SeedCorpus
from tests.integration.support import (
    Mirrord,
    access_log,
    assert_same_image,
    dest_flags,
    docker_ref,
    src_flags,
)

AUTH_TLS_VARIANTS: tuple[Variant, ...] = ("basic", "token", "tls", "tls-client")


def _uploads(log: str, repo: str) -> list[str]:
    return access_log(log, "PUT", rf"/v2/{repo}/blobs/uploads/")


def _mounts(log: str, repo: str) -> list[str]:
    return access_log(log, "POST", rf"/v2/{repo}/blobs/uploads/\?mount=")


@pytest.mark.parametrize("kind", KINDS)
def test_copy_between_registries_keeps_every_manifest_byte_identical(
    kind: str,
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus("anonymous", kind)
    dest = make_registry("anonymous")
    result = cli(
        "copy",
        "--all",
        *src_flags(source.registry),
        *dest_flags(dest),
        source.ref,
        docker_ref(dest, f"mirror/app:{kind}"),
    ).ok()
    assert f"Copied {source.ref} -> {docker_ref(dest, f'mirror/app:{kind}')}" in result.stdout
    assert_same_image(dest, "mirror/app", kind, source.image, tmp_path)
    assert all(dest.blob_path(digest).exists() for digest in source.image.blobs)


@pytest.mark.parametrize("kind", KINDS)
def test_copy_within_one_registry_mounts_every_blob(
    kind: str, seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str, tmp_path: Path
) -> None:
    source = seed_corpus("anonymous", kind)
    registry = source.registry
    cli(
        "copy",
        "--all",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, f"{unique_repo}:{kind}"),
    ).ok()
    assert_same_image(registry, unique_repo, kind, source.image, tmp_path)
    log = registry.log_path.read_text()
    assert _uploads(log, unique_repo) == []
    assert len(_mounts(log, unique_repo)) == len(source.image.blobs)


def test_copying_again_finds_the_destination_up_to_date(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "index")
    registry = source.registry
    args = ["copy", "--all", *src_flags(registry), *dest_flags(registry)]
    dest_ref = docker_ref(registry, f"{unique_repo}:v1")
    cli(*args, source.ref, dest_ref).ok()
    again = cli(*args, source.ref, dest_ref).ok()
    assert f"Skipping: {dest_ref} is already at {source.image.digest}" in again.stdout
    log = registry.log_path.read_text()
    assert len(access_log(log, "PUT", rf"/v2/{unique_repo}/manifests/")) == len(
        source.image.manifests
    )


@pytest.mark.parametrize("variant", AUTH_TLS_VARIANTS)
def test_multi_arch_copy_between_registries_in_each_auth_and_tls_variant(
    variant: Variant,
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus(variant, "index")
    dest = make_registry(variant)
    cli(
        "copy",
        "--all",
        *src_flags(source.registry),
        *dest_flags(dest),
        source.ref,
        docker_ref(dest, "mirror/app:v1"),
    ).ok()
    assert_same_image(dest, "mirror/app", "v1", source.image, tmp_path, creds=dest.creds)


@pytest.mark.parametrize("variant", AUTH_TLS_VARIANTS)
def test_multi_arch_copy_within_one_registry_mounts_in_each_auth_and_tls_variant(
    variant: Variant,
    seed_corpus: SeedCorpus,
    token_server: TokenServer,
    cli: Mirrord,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    source = seed_corpus(variant, "list")
    registry = source.registry
    cli(
        "copy",
        "--all",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, f"{unique_repo}:v1"),
    ).ok()
    assert_same_image(registry, unique_repo, "v1", source.image, tmp_path, creds=registry.creds)
    log = registry.log_path.read_text()
    assert _uploads(log, unique_repo) == []
    assert len(_mounts(log, unique_repo)) == len(source.image.blobs)
    if variant == "token":
        # One token carried push on the destination and pull on the mount source.
        tokens = token_server.requests(registry.service)
        assert any(
            t.granted_actions(unique_repo) >= {"pull", "push"}
            and t.granted_actions(CORPUS_REPO) == {"pull"}
            for t in tokens
        )
