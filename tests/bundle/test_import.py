"""`mirrord import`: resumable, nothing sent twice, and nothing tagged before it is whole."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from mirrord.bundle import importer
from mirrord.bundle.layouts import Bundle, Entry, open_bundle
from mirrord.config.naming import Destination
from mirrord.registry.options import RegistryOptions, TLSMode
from mirrord.transports.base import ImageSource
from tests.bundle.corpus import LIST_V1, Corpus, mirrord, retag
from tests.harness.faultproxy import FaultProxy, MakeFaultProxy
from tests.harness.registry import MakeRegistry
from tests.harness.skopeo import SkopeoError, inspect_raw


def uploaded(proxy: FaultProxy) -> list[str]:
    """Digests of the blobs whose bytes went through the proxy (completed uploads)."""
    records = proxy.records(method="PUT", path=r"/blobs/uploads/", status=201)
    return [parse_qs(r.query)["digest"][0] for r in records]


@pytest.fixture
def bundle(corpus: Corpus, tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    assert (
        mirrord("export", corpus.list_file(LIST_V1), path, "--from", corpus.storage_pool).exit_code
        == 0
    )
    return path


def test_an_interrupted_import_resumes_without_sending_a_blob_twice(
    corpus: Corpus, bundle: Path, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> None:
    target = make_registry()
    proxy = fault_proxy(target)
    # First run: app/api is unreachable (it shares its base layer with app/web), and multi's
    # manifests are refused after its blobs went up.
    proxy.respond(403, path=r"^/v2/airgap/app/api/")
    proxy.respond(403, method="PUT", path=r"^/v2/airgap/multi/manifests/")
    first = mirrord("import", bundle, f"docker://{proxy.host}/airgap", "--dest-tls-verify=false")
    assert first.exit_code == 3, first.output
    with pytest.raises(SkopeoError):
        inspect_raw(target, "airgap/multi:latest")  # no tag points at a partial image
    sent_first = uploaded(proxy)
    assert len(sent_first) == len(set(sent_first))

    proxy.clear_rules()
    proxy.clear_records()
    second = mirrord("import", bundle, f"docker://{proxy.host}/airgap", "--dest-tls-verify=false")
    assert second.exit_code == 0, second.output
    sent_second = uploaded(proxy)
    assert set(sent_first) & set(sent_second) == set()
    base = corpus.images["app/web:v1"].blobs.keys() & corpus.images["app/api:1.0"].blobs.keys()
    assert base
    assert not base & set(sent_second)
    for name in LIST_V1:
        assert inspect_raw(target, f"airgap/{name}") == corpus.raw(name)

    proxy.clear_records()
    third = mirrord("import", bundle, f"docker://{proxy.host}/airgap", "--dest-tls-verify=false")
    assert third.exit_code == 0
    assert third.output.count("(unchanged)") == len(LIST_V1)
    assert proxy.count(method="PUT") == 0
    assert proxy.count(method="POST") == 0


def test_import_needs_a_registry_destination(bundle: Path, tmp_path: Path) -> None:
    result = mirrord("import", bundle, f"dir:{tmp_path / 'x'}")
    assert result.exit_code == 2
    assert "docker://REGISTRY" in result.stderr


def test_an_image_whose_tag_left_the_recorded_digest_is_refused_and_the_others_imported(
    corpus: Corpus, bundle: Path, make_registry: MakeRegistry
) -> None:
    index = corpus.images["multi:latest"]
    child = index.children[0].digest  # pushed as multi:latest, a single-platform image
    retag(bundle, "multi", "latest", child)
    target = make_registry()
    result = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
    assert result.exit_code == 3, result.output  # one image failed, as any failure
    assert (
        f"mirrord: error: multi:latest: resolves to {child}, mirrord-bundle.json says "
        f"{index.digest}" in result.stderr
    )
    with pytest.raises(SkopeoError):
        inspect_raw(target, "multi:latest")
    for name in LIST_V1:
        if name != "multi:latest":
            assert inspect_raw(target, name) == corpus.raw(name), name


async def test_a_tag_moved_after_its_check_does_not_change_what_is_imported(
    corpus: Corpus, bundle: Path, make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = corpus.images["multi:latest"]
    check = importer.checked_source

    async def then_moved(opened: Bundle, entry: Entry) -> tuple[ImageSource, str]:
        checked = await check(opened, entry)
        if entry.name == "multi:latest":  # someone edits the bundle between check and copy
            retag(bundle, "multi", "latest", index.children[0].digest)
        return checked

    monkeypatch.setattr(importer, "checked_source", then_moved)
    target = make_registry()
    with open_bundle(bundle) as opened:
        outcomes = await importer.import_bundle(
            opened,
            Destination.parse(target.host),
            lambda host, role: RegistryOptions(tls=TLSMode.PLAIN_HTTP),
        )
    assert [o.error for o in outcomes] == [None] * len(LIST_V1)
    assert inspect_raw(target, "multi:latest") == corpus.raw("multi:latest")


def test_a_bundle_an_export_left_a_temp_file_in_is_not_imported(
    bundle: Path, make_registry: MakeRegistry
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has any more: the killed export's
    half_written = next(bundle.rglob("data")).parent / f".data.tmp-{gone.pid}-1"
    half_written.write_bytes(b"x" * 1000)
    target = make_registry()
    result = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
    assert result.exit_code == 1
    assert "refusing to import: " in result.stderr
    assert f"{half_written.name}: left over from an interrupted write" in result.stderr
    assert "run it again" in result.stderr
    for name in LIST_V1:
        with pytest.raises(SkopeoError):
            inspect_raw(target, name)


def test_a_registry_storage_without_a_description_still_verifies_and_imports(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    """A registry's own storage directory copied by hand has no mirrord-bundle.json and no
    trace of an export: it is imported as it is (every tag it holds)."""
    storage = tmp_path / "storage"
    names = ("app/web:v1", "tools:2.0")
    exported = mirrord("export", corpus.list_file(names), storage, "--from", corpus.storage_pool)
    assert exported.exit_code == 0, exported.output
    (storage / "mirrord-bundle.json").unlink()
    assert [p.name for p in storage.iterdir()] == ["docker"]  # nothing but the registry's
    verified = mirrord("verify", storage)
    assert verified.exit_code == 0, verified.output
    target = make_registry()
    result = mirrord("import", storage, f"docker://{target.host}", "--dest-tls-verify=false")
    assert result.exit_code == 0, result.output
    for name in names:
        assert inspect_raw(target, name) == corpus.raw(name), name
