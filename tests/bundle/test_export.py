"""`mirrord export` into a registry-storage bundle, served by a real `docker-registry serve`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bundle.corpus import LIST_V1, V2, Corpus, blob_files, mirrord, sha256
from tests.harness.faultproxy import MakeFaultProxy
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import SkopeoError, inspect_raw, run_skopeo


def served(tmp_path: Path, name: str = "airgap") -> RegistryServer:
    """A registry (not started) whose storage directory is where the bundle goes."""
    return RegistryServer(tmp_path / name)


def test_bundle_is_served_by_distribution_with_identical_manifests(
    corpus: Corpus, tmp_path: Path
) -> None:
    server = served(tmp_path)
    result = mirrord(
        "export", corpus.list_file(LIST_V1), server.storage_dir, "--from", corpus.storage_pool
    )
    assert result.exit_code == 0, result.output
    with server:
        for name in LIST_V1:
            assert inspect_raw(server, name) == corpus.raw(name), name
            # skopeo pulls every instance and blob through the air-gapped registry and
            # checks each digest on the way.
            run_skopeo(
                "copy",
                "--all",
                "--src-tls-verify=false",
                "--src-no-creds",
                f"docker://{server.host}/{name}",
                f"oci:{tmp_path / 'pulled'}:{name.replace('/', '-')}",
            )


def test_children_of_an_index_are_served_by_digest(corpus: Corpus, tmp_path: Path) -> None:
    server = served(tmp_path)
    mirrord(
        "export",
        corpus.list_file(("multi:latest",)),
        server.storage_dir,
        "--from",
        corpus.storage_pool,
    )
    index = json.loads(corpus.raw("multi:latest"))
    with server:
        for child in index["manifests"]:
            raw = inspect_raw(server, f"multi@{child['digest']}")
            assert sha256(raw) == child["digest"]


def test_blobs_are_hard_linked_from_a_pool_on_the_same_filesystem(
    corpus: Corpus, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    result = mirrord(
        "export", corpus.list_file(("app/web:v1",)), bundle, "--from", corpus.storage_pool
    )
    assert result.exit_code == 0, result.output
    image = corpus.images["app/web:v1"]
    for digest in image.blobs:
        hexdigest = digest.split(":", 1)[1]
        ours = bundle / f"docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
        assert Path(ours).stat().st_ino == Path(corpus.registry.blob_path(digest)).stat().st_ino
    assert "hard-linked" in result.output


def test_bundle_holds_exactly_what_the_list_needs(corpus: Corpus, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    mirrord(
        "export",
        corpus.list_file(("app/web:v1", "app/api:1.0")),
        bundle,
        "--from",
        corpus.storage_pool,
    )
    web, api = corpus.images["app/web:v1"], corpus.images["app/api:1.0"]
    expected = set(web.blobs) | set(api.blobs) | {web.digest, api.digest}
    assert blob_files(bundle) == expected  # the shared base layer once
    info = json.loads((bundle / "mirrord-bundle.json").read_bytes())
    assert {(i["repository"], i["tag"], i["digest"]) for i in info["images"]} == {
        ("app/web", "v1", web.digest),
        ("app/api", "1.0", api.digest),
    }
    assert set(info["blobs"]) == expected


def test_export_from_the_registry_itself_gives_the_same_bundle(
    corpus: Corpus, tmp_path: Path
) -> None:
    from_storage, from_registry = tmp_path / "a", tmp_path / "b"
    list_file = corpus.list_file(LIST_V1)
    mirrord("export", list_file, from_storage, "--from", corpus.storage_pool)
    result = mirrord(
        "export", list_file, from_registry, "--from", corpus.docker_pool, "--src-tls-verify=false"
    )
    assert result.exit_code == 0, result.output
    assert blob_files(from_registry) == blob_files(from_storage)
    names = sorted(p.relative_to(from_storage).as_posix() for p in from_storage.rglob("link"))
    assert names == sorted(
        p.relative_to(from_registry).as_posix() for p in from_registry.rglob("link")
    )


def test_running_an_export_again_changes_nothing(corpus: Corpus, tmp_path: Path) -> None:
    bundle, list_file = tmp_path / "bundle", corpus.list_file(LIST_V1)
    mirrord("export", list_file, bundle, "--from", corpus.storage_pool)
    before = {p: p.stat().st_mtime_ns for p in bundle.rglob("*") if p.is_file()}
    result = mirrord("export", list_file, bundle, "--from", corpus.storage_pool)
    assert result.exit_code == 0, result.output
    assert result.output.count("(unchanged)") == len(LIST_V1)
    after = {p: p.stat().st_mtime_ns for p in bundle.rglob("*") if p.is_file()}
    del before[bundle / "mirrord-bundle.json"], after[bundle / "mirrord-bundle.json"]
    assert after == before


def test_a_re_run_after_a_killed_export_leaves_a_bundle_that_verifies(
    corpus: Corpus, tmp_path: Path
) -> None:
    bundle, list_file = tmp_path / "bundle", corpus.list_file(("app/web:v1",))
    mirrord("export", list_file, bundle, "--from", corpus.storage_pool)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has any more: the killed export's
    blob_dir = next(p.parent for p in bundle.rglob("data"))
    half_written = blob_dir / f".data.tmp-{gone.pid}-1"
    half_written.write_bytes(b"x" * 1000)
    (bundle / "mirrord-bundle.json").unlink()  # the killed run never got there
    interrupted = mirrord("verify", bundle)
    assert interrupted.exit_code == 1
    assert f"{half_written.name}: left over from an interrupted write" in interrupted.stderr
    assert "no mirrord-bundle.json: an interrupted export" in interrupted.stderr

    result = mirrord("export", list_file, bundle, "--from", corpus.storage_pool)
    assert result.exit_code == 0, result.output
    assert not half_written.exists()
    verified = mirrord("verify", bundle)
    assert verified.exit_code == 0, verified.output


def wait_for_file(path: Path, text: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not (path.exists() and path.read_text().strip() == text):
        assert time.monotonic() < deadline, f"{path} never held {text}"
        time.sleep(0.05)


def test_a_re_export_killed_after_moving_a_tag_leaves_no_description_to_trust(
    corpus: Corpus,
    tmp_path: Path,
    fault_proxy: MakeFaultProxy,
    make_registry: MakeRegistry,
) -> None:
    corpus.add("moved/web:t", corpus.images["app/web:v1"])
    list_file = corpus.list_file(("moved/web:t", "tools:2.0"), "moved.txt")
    bundle = tmp_path / "bundle"
    assert mirrord("export", list_file, bundle, "--from", corpus.storage_pool).exit_code == 0
    corpus.add("moved/web:t", corpus.images["app/api:1.0"])  # the tag moves in the pool
    moved = corpus.images["app/api:1.0"].digest
    proxy = fault_proxy(corpus.registry)
    proxy.stall(path=r"/tools/manifests/")  # the second image never comes
    pool = f"docker://{proxy.host}/{corpus.prefix}"
    again = [sys.executable, "-m", "mirrord", "export", str(list_file), str(bundle)]
    export = subprocess.Popen([*again, "--from", pool, "--src-tls-verify=false"])
    try:
        link = bundle / V2 / "repositories/moved/web/_manifests/tags/t/current/link"
        wait_for_file(link, moved)  # the first image is exported again ...
    finally:
        export.kill()  # ... and the export killed (-9) before the second
        export.wait()
    assert not (bundle / "mirrord-bundle.json").exists()  # it said moved/web:t was web:v1
    verified = mirrord("verify", bundle)
    assert verified.exit_code == 1
    said = "no mirrord-bundle.json: an interrupted export (run it again), or not a mirrord bundle"
    assert said in verified.stderr
    target = make_registry()
    imported = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
    assert imported.exit_code == 1
    assert f"refusing to import: {said}" in imported.stderr
    with pytest.raises(SkopeoError):
        inspect_raw(target, "moved/web:t")

    proxy.clear_rules()
    result = mirrord("export", list_file, bundle, "--from", corpus.storage_pool)
    assert result.exit_code == 0, result.output
    assert not (bundle / "mirrord-bundle.incomplete").exists()
    assert mirrord("verify", bundle).exit_code == 0


def test_a_repository_named_by_tag_and_by_digest_exports_and_imports_both(
    corpus: Corpus, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    pinned = sha256(corpus.raw("app/web:v1"))  # pinned by digest, and by tag too
    names = ("app/web:v1", f"app/web@{pinned}")
    bundle = tmp_path / "bundle"
    result = mirrord("export", corpus.list_file(names), bundle, "--from", corpus.storage_pool)
    assert result.exit_code == 0, result.output
    target = make_registry()
    imported = mirrord("import", bundle, f"docker://{target.host}", "--dest-tls-verify=false")
    assert imported.exit_code == 0, imported.output
    assert inspect_raw(target, "app/web:v1") == corpus.raw("app/web:v1")
    assert inspect_raw(target, f"app/web@{pinned}") == corpus.raw("app/web:v1")


def test_a_skopeo_sync_file_selects_what_skopeo_sync_put_in_the_pool(
    corpus: Corpus, tmp_path: Path
) -> None:
    # skopeo sync --src yaml sync.yml --dest docker POOL/PREFIX names images by basename.
    sync_file = tmp_path / "sync.yml"
    sync_file.write_text(
        "quay.io:\n  images:\n    example/multi: [latest]\n    other/tools: ['2.0']\n"
    )
    bundle = tmp_path / "bundle"
    result = mirrord("export", sync_file, bundle, "--from", corpus.storage_pool)
    assert result.exit_code == 0, result.output
    info = json.loads((bundle / "mirrord-bundle.json").read_bytes())
    assert sorted(f"{i['repository']}:{i['tag']}" for i in info["images"]) == [
        "multi:latest",
        "tools:2.0",
    ]


def test_a_daemon_config_lists_tags_of_the_pool(corpus: Corpus, tmp_path: Path) -> None:
    (tmp_path / "src.yaml").write_text("quay.io:\n  images-by-tag-regex:\n    web: '^v'\n")
    config = tmp_path / "mirrord.yaml"
    config.write_text(
        f"destination: {{registry: mirror.example.com, prefix: {corpus.prefix}/app, tls-verify: false}}\n"
        "sources: [{file: src.yaml}]\n"
    )
    bundle = tmp_path / "bundle"
    result = mirrord(
        "export", config, bundle, "--from", f"registry-storage:{corpus.registry.storage_dir}"
    )
    assert result.exit_code == 0, result.output
    info = json.loads((bundle / "mirrord-bundle.json").read_bytes())
    tags = {i["tag"] for i in info["images"] if i["repository"] == f"{corpus.prefix}/app/web"}
    assert "v1" in tags


def test_an_image_missing_from_the_pool_fails_alone(corpus: Corpus, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    result = mirrord(
        "export",
        corpus.list_file(("app/web:v1", "app/web:nope")),
        bundle,
        "--from",
        corpus.storage_pool,
    )
    assert result.exit_code == 3
    assert "app/web:nope" in result.stderr
    info = json.loads((bundle / "mirrord-bundle.json").read_bytes())
    assert [i["tag"] for i in info["images"]] == ["v1"]


@pytest.mark.parametrize("suffix", [".tar", ".tar.zst"])
def test_a_packed_bundle_carries_checksums_sha256sum_accepts(
    corpus: Corpus, tmp_path: Path, suffix: str
) -> None:
    packed = tmp_path / f"bundle{suffix}"
    result = mirrord("export", corpus.list_file(LIST_V1), packed, "--from", corpus.storage_pool)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / f".bundle{suffix}.partial").exists()
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    decompress = ["--zstd"] if suffix == ".tar.zst" else []
    subprocess.run(["tar", "-x", *decompress, "-f", str(packed), "-C", str(unpacked)], check=True)
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=unpacked, check=False)
    assert check.returncode == 0
    server = served(tmp_path)
    server.storage_dir.rmdir()
    unpacked.rename(server.storage_dir)
    with server:
        assert inspect_raw(server, "tools:2.0") == corpus.raw("tools:2.0")


def test_a_pack_killed_before_does_not_stop_the_next_one(corpus: Corpus, tmp_path: Path) -> None:
    packed = tmp_path / "bundle.tar"
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = tmp_path / f".bundle.tar.tmp-{gone.pid}-0a1b2c3d"  # what the killed pack wrote
    left.write_bytes(b"half a tar")
    result = mirrord(
        "export", corpus.list_file(("tools:2.0",)), packed, "--from", corpus.storage_pool
    )
    assert result.exit_code == 0, result.output
    assert not left.exists()
    assert mirrord("verify", packed).exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.tar"]  # nothing else left beside
