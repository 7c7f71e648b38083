"""`--since`: an incremental bundle carries no blob of the previous one, and still works."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.bundle.corpus import LIST_V1, Corpus, blob_files, mirrord
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import inspect_raw

NEW = "app/web:v2-incremental"


def overlay(bundles: list[Path], into: Path) -> None:
    """What the air-gapped side does, as README.md says: lay each bundle over the previous."""
    into.mkdir(parents=True, exist_ok=True)
    for bundle in bundles:
        subprocess.run(["cp", "-al", "--remove-destination", f"{bundle}/.", f"{into}/"], check=True)


def add_new_image(corpus: Corpus) -> None:
    if NEW not in corpus.images:
        base = corpus.builder.layer("base", size=200_000)  # the same bytes: the same digest
        image = corpus.builder.image("web-v2", layers=[base, corpus.builder.layer("web-v2")])
        corpus.add(NEW, image)


def test_an_incremental_bundle_holds_no_layer_or_config_the_previous_one_had(
    corpus: Corpus, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert (
        mirrord("export", corpus.list_file(LIST_V1), first, "--from", corpus.storage_pool).exit_code
        == 0
    )
    add_new_image(corpus)
    list_v2 = corpus.list_file((*LIST_V1, NEW), "images-v2.txt")
    result = mirrord("export", list_v2, second, "--from", corpus.storage_pool, "--since", first)
    assert result.exit_code == 0, result.output
    new = corpus.images[NEW]
    manifests = {d for name in (*LIST_V1, NEW) for d in corpus.images[name].manifests}
    assert (blob_files(second) - manifests) & blob_files(first) == set()
    # every manifest (small) is carried, so that any tag of the list imports; layers are not
    assert blob_files(second) == manifests | (set(new.blobs) - blob_files(first))
    info = json.loads((second / "mirrord-bundle.json").read_bytes())
    assert len(info["images"]) == len(LIST_V1) + 1  # the metadata of every image
    assert set(info["base"]) == blob_files(first)

    server = RegistryServer(tmp_path / "airgap")
    overlay([first, second], server.storage_dir)
    with server:
        for name in (*LIST_V1, NEW):
            assert inspect_raw(server, name) == corpus.raw(name), name


def test_an_incremental_bundle_verifies_and_imports_on_top_of_its_base(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    first, second = tmp_path / "first.tar", tmp_path / "second.tar.zst"
    mirrord("export", corpus.list_file(LIST_V1), first, "--from", corpus.storage_pool)
    add_new_image(corpus)
    list_v2 = corpus.list_file((*LIST_V1, NEW), "images-v2.txt")
    assert (
        mirrord(
            "export", list_v2, second, "--from", corpus.storage_pool, "--since", first
        ).exit_code
        == 0
    )

    verified = mirrord("verify", second, "--base", first)
    assert verified.exit_code == 0, verified.output
    assert "references left to its base" in verified.output

    target = make_registry()
    for bundle in (first, second):
        result = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
        assert result.exit_code == 0, result.output
    for name in (*LIST_V1, NEW):
        assert inspect_raw(target, name) == corpus.raw(name), name


def test_a_tag_moved_onto_an_image_of_the_base_imports_from_the_incremental_bundle(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    """ "Promote v1 to stable": the new tag names a manifest the base bundle already carries."""
    first, second = tmp_path / "first", tmp_path / "second"
    mirrord("export", corpus.list_file(("app/web:v1",)), first, "--from", corpus.storage_pool)
    corpus.add("app/web:stable", corpus.images["app/web:v1"])
    corpus.add("promoted/web:stable", corpus.images["app/web:v1"])  # a new repository too
    names = ("app/web:v1", "app/web:stable", "promoted/web:stable")
    result = mirrord(
        "export", corpus.list_file(names), second, "--from", corpus.storage_pool, "--since", first
    )
    assert result.exit_code == 0, result.output
    assert blob_files(second) == set(corpus.images["app/web:v1"].manifests)  # no layer again

    target = make_registry()
    for bundle in (first, second):
        result = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
        assert result.exit_code == 0, result.output
    for name in names:
        assert inspect_raw(target, name) == corpus.raw("app/web:v1"), name


def test_since_a_bundle_without_a_description_uses_its_blob_store(
    corpus: Corpus, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    mirrord("export", corpus.list_file(("app/web:v1",)), first, "--from", corpus.storage_pool)
    (first / "mirrord-bundle.json").unlink()  # a registry's storage copied by hand
    mirrord(
        "export",
        corpus.list_file(("app/api:1.0",)),
        second,
        "--from",
        corpus.storage_pool,
        "--since",
        first,
    )
    assert blob_files(second) & blob_files(first) == set()
    assert blob_files(second)


def test_since_an_interrupted_export_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    mirrord("export", corpus.list_file(("app/web:v1",)), first, "--from", corpus.storage_pool)
    (first / "mirrord-bundle.json").unlink()  # as an export killed part-way leaves it
    (first / "mirrord-bundle.incomplete").write_text("an export is writing this bundle\n")
    result = mirrord(
        "export",
        corpus.list_file(("app/api:1.0",)),
        second,
        "--from",
        corpus.storage_pool,
        "--since",
        first,
    )
    assert result.exit_code != 0, result.output
    assert f"{first}: cannot be the base of --since: " in result.stderr
    assert "interrupted" in result.stderr
    assert not (second / "mirrord-bundle.json").exists()
