"""inspect, list-tags, delete and manifest-digest against a real registry, with skopeo's own
answers to the same questions as the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.images import Layout
from tests.harness.skopeo import SkopeoError, inspect_raw, list_tags, run_skopeo, seed
from tests.integration.conftest import CORPUS_REPO, KINDS, SeedCorpus
from tests.integration.support import Mirrord, docker_ref, flags


def _skopeo_json(*args: str) -> dict[str, object]:
    parsed = json.loads(run_skopeo(*args).stdout)
    assert isinstance(parsed, dict)
    return parsed


# ------------------------------------------------------------------------------------------
# inspect
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["docker", "index"])  # schema2 with an empty layer; an index
def test_inspect_summary_agrees_with_skopeo(
    kind: str, seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", kind)
    ours = json.loads(cli("inspect", *flags(source.registry), source.ref).ok().stdout)
    theirs = _skopeo_json("inspect", "--tls-verify=false", source.ref)
    assert {k: ours.get(k) for k in theirs} == theirs
    assert ours["Digest"] == source.image.digest
    assert ours.get("Variant", "set") is not None  # skopeo omits an empty variant


@pytest.mark.parametrize("kind", ["docker", "index"])
def test_inspect_raw_prints_the_manifest_bytes_exactly(
    kind: str, seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", kind)
    result = cli("inspect", "--raw", *flags(source.registry), source.ref).ok()
    assert result.stdout_bytes == source.image.manifest


def test_inspect_config_agrees_with_skopeo_and_raw_config_is_the_blob(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", "docker")
    config = json.loads(cli("inspect", "--config", *flags(source.registry), source.ref).ok().stdout)
    assert config == _skopeo_json("inspect", "--config", "--tls-verify=false", source.ref)
    raw = cli("inspect", "--raw", "--config", *flags(source.registry), source.ref).ok()
    assert raw.stdout_bytes == inspect_raw(source.registry, f"{CORPUS_REPO}:docker", config=True)


def test_inspect_by_digest_and_without_tags(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    source = seed_corpus("anonymous", "oci")
    ref = docker_ref(source.registry, f"{CORPUS_REPO}@{source.image.digest}")
    ours = json.loads(cli("inspect", "--no-tags", *flags(source.registry), ref).ok().stdout)
    assert ours["Digest"] == source.image.digest
    assert ours["RepoTags"] == []


# ------------------------------------------------------------------------------------------
# list-tags
# ------------------------------------------------------------------------------------------


def test_list_tags_agrees_with_skopeo(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    for kind in KINDS:
        source = seed_corpus("anonymous", kind)
    repo = docker_ref(source.registry, CORPUS_REPO)
    ours = json.loads(cli("list-tags", *flags(source.registry), repo).ok().stdout)
    assert ours == _skopeo_json("list-tags", "--tls-verify=false", repo)
    assert set(ours["Tags"]) >= set(KINDS)


def test_list_tags_refuses_a_tagged_reference(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    source = seed_corpus("anonymous", "oci")
    result = cli("list-tags", *flags(source.registry), source.ref)
    assert result.returncode == 2, result.describe()
    assert "without a tag" in result.error_line()


def test_list_tags_of_an_unknown_repository_is_not_found(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    registry = seed_corpus("anonymous", "oci").registry
    result = cli("list-tags", *flags(registry), docker_ref(registry, "it/no-such-repo"))
    assert result.returncode == 4, result.describe()
    assert "it/no-such-repo" in result.error_line()


# ------------------------------------------------------------------------------------------
# delete
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_delete_removes_the_image(
    by: str, seed_corpus: SeedCorpus, corpus_layout: Layout, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "oci")
    registry = source.registry
    seed(corpus_layout, "oci", registry, f"{unique_repo}:v1")
    seed(corpus_layout, "docker", registry, f"{unique_repo}:other")
    target = f"{unique_repo}:v1" if by == "tag" else f"{unique_repo}@{source.image.digest}"
    result = cli("delete", *flags(registry), docker_ref(registry, target)).ok()
    assert source.image.digest in result.stdout
    with pytest.raises(SkopeoError, match=r"(?i)manifest unknown"):
        inspect_raw(registry, f"{unique_repo}:v1")
    assert list_tags(registry, unique_repo) == ["other"]


def test_delete_of_an_unknown_tag_is_not_found(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    registry = seed_corpus("anonymous", "oci").registry
    result = cli("delete", *flags(registry), docker_ref(registry, f"{CORPUS_REPO}:no-such-tag"))
    assert result.returncode == 4, result.describe()
    assert "no-such-tag" in result.error_line()
    assert inspect_raw(registry, f"{CORPUS_REPO}:oci")  # the rest of the repository is intact


# ------------------------------------------------------------------------------------------
# manifest-digest
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["docker", "index"])
def test_manifest_digest_equals_skopeos(
    kind: str, corpus_layout: Layout, cli: Mirrord, tmp_path: Path
) -> None:
    image = corpus_layout.tags[kind]
    path = tmp_path / "manifest.json"
    path.write_bytes(image.manifest)
    ours = cli("manifest-digest", str(path)).ok().stdout.strip()
    assert ours == run_skopeo("manifest-digest", str(path)).stdout.decode().strip()
    assert ours == image.digest


def test_manifest_digest_of_a_missing_file_is_a_usage_error(cli: Mirrord, tmp_path: Path) -> None:
    result = cli("manifest-digest", str(tmp_path / "nope.json"))
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.output
