"""dir:, oci:, docker-archive: and registry-storage: through `mirrord copy`, checked by skopeo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.bundle.corpus import mirrord, sha256
from tests.harness.images import ImageBuilder, Layout
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import inspect_raw, run_skopeo, seed


def layout(builder: ImageBuilder, tmp_path: Path) -> Layout:
    base = builder.layer("base")
    return builder.write_layout(
        tmp_path / "layout",
        {
            "v1": builder.image("v1", layers=[base, builder.layer("one")]),
            "v2": builder.image("v2", layers=[base, builder.layer("two")]),
            "multi": builder.index("multi", attestations=True),
            "docker": builder.image("docker", layers=[base], kind="docker"),
        },
    )


def copy(*args: str) -> None:
    result = mirrord("copy", "--all", *args)
    assert result.exit_code == 0, result.output


def test_a_dir_image_is_read_by_skopeo_and_updated_in_place(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    target = tmp_path / "d"
    copy(f"oci:{lay.path}:v1", f"dir:{target}")
    assert (target / "version").read_text() == "Directory Transport Version: 1.1\n"
    assert sha256((target / "manifest.json").read_bytes()) == lay.tags["v1"].digest
    run_skopeo("copy", f"dir:{target}", f"oci:{tmp_path / 'check'}:x")
    base = next(d for d in lay.tags["v1"].blobs if d in lay.tags["v2"].blobs)
    inode = Path(target / base[7:]).stat().st_ino
    # skopeo refuses or wipes a dir destination; mirrord keeps what is still used.
    copy(f"oci:{lay.path}:v2", f"dir:{target}")
    assert Path(target / base[7:]).stat().st_ino == inode
    names = {p.name for p in target.iterdir()}
    assert names == {"version", "manifest.json", *(d[7:] for d in lay.tags["v2"].blobs)}
    run_skopeo("copy", f"dir:{target}", f"oci:{tmp_path / 'check'}:y")


def test_a_dir_destination_that_holds_something_else_is_refused(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    target = tmp_path / "home"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    result = mirrord("copy", f"oci:{lay.path}:v1", f"dir:{target}")
    assert result.exit_code == 1
    assert "refusing to overwrite" in result.stderr
    assert [p.name for p in target.iterdir()] == ["precious.txt"]


def test_an_index_in_a_dir_image_keeps_every_instance(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    copy(f"oci:{lay.path}:multi", f"dir:{tmp_path / 'd'}")
    out = tmp_path / "back"
    copy(f"dir:{tmp_path / 'd'}", f"oci:{out}:multi")
    assert run_skopeo("inspect", "--raw", f"oci:{out}:multi").stdout == lay.tags["multi"].manifest


def test_images_in_one_oci_layout_share_blobs(image_builder: ImageBuilder, tmp_path: Path) -> None:
    lay = layout(image_builder, tmp_path)
    out = tmp_path / "oci"
    copy(f"oci:{lay.path}:v1", f"oci:{out}:app:v1")
    copy(f"oci:{lay.path}:v2", f"oci:{out}:app:v2")
    for tag in ("v1", "v2"):
        assert (
            run_skopeo("inspect", "--raw", f"oci:{out}:app:{tag}").stdout == lay.tags[tag].manifest
        )
    expected = {
        *lay.tags["v1"].blobs,
        *lay.tags["v2"].blobs,
        lay.tags["v1"].digest,
        lay.tags["v2"].digest,
    }
    assert {f"sha256:{p.name}" for p in (out / "blobs/sha256").iterdir()} == expected


def test_a_registry_storage_written_by_distribution_is_read(
    image_builder: ImageBuilder, tmp_path: Path, source_registry: RegistryServer, unique_repo: str
) -> None:
    lay = layout(image_builder, tmp_path)
    seed(lay, "multi", source_registry, f"{unique_repo}:multi")
    storage = f"registry-storage:{source_registry.storage_dir}"
    raw = mirrord("inspect", "--raw", f"{storage}:{unique_repo}:multi")
    assert raw.stdout.encode() == lay.tags["multi"].manifest
    summary = json.loads(mirrord("inspect", f"{storage}:{unique_repo}:multi").stdout)
    assert summary["RepoTags"] == ["multi"]
    copy(f"{storage}:{unique_repo}:multi", f"oci:{tmp_path / 'out'}:m")
    assert (
        run_skopeo("inspect", "--raw", f"oci:{tmp_path / 'out'}:m").stdout
        == lay.tags["multi"].manifest
    )


def test_registry_storage_written_by_mirrord_is_served(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    server = RegistryServer(tmp_path / "srv")
    for tag in lay.tags:
        copy(f"oci:{lay.path}:{tag}", f"registry-storage:{server.storage_dir}:lib/app:{tag}")
    with server:
        for tag, image in lay.tags.items():
            assert inspect_raw(server, f"lib/app:{tag}") == image.manifest
        run_skopeo(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{server.host}/lib/app:multi",
            f"oci:{tmp_path / 'pulled'}:m",
        )


def test_a_docker_save_archive_is_read(
    image_builder: ImageBuilder, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    lay = layout(image_builder, tmp_path)
    archive = tmp_path / "saved.tar"
    # skopeo writes the classic format (uncompressed layer.tar files, no registry manifest).
    run_skopeo("copy", f"oci:{lay.path}:v1", f"docker-archive:{archive}:example.com/app:v1")
    target = make_registry()
    copy(
        f"docker-archive:{archive}:example.com/app:v1",
        f"docker://{target.host}/app:v1",
        "--dest-tls-verify=false",
    )
    config = inspect_raw(target, "app:v1", config=True)
    assert sha256(config) == json.loads(lay.tags["v1"].manifest)["config"]["digest"]
    run_skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{target.host}/app:v1",
        f"dir:{tmp_path / 'pulled'}",
    )


def test_a_docker_archive_written_by_mirrord_round_trips_digests(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    archive = tmp_path / "out.tar"
    copy(f"oci:{lay.path}:docker", f"docker-archive:{archive}:example.com/app:d")
    run_skopeo("copy", f"docker-archive:{archive}:example.com/app:d", f"dir:{tmp_path / 'skopeo'}")
    back = tmp_path / "back"
    copy(f"docker-archive:{archive}:example.com/app:d", f"oci:{back}:d")
    # (skopeo 1.9 cannot address a Docker-typed entry of an OCI layout by name)
    assert (
        mirrord("inspect", "--raw", f"oci:{back}:d").stdout.encode() == lay.tags["docker"].manifest
    )


def test_a_docker_archive_that_exists_is_not_replaced(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    archive = tmp_path / "out.tar"
    archive.touch()  # an empty file (mktemp) is fine
    copy(f"oci:{lay.path}:docker", f"docker-archive:{archive}:example.com/app:d")
    before = archive.read_bytes()
    result = mirrord("copy", f"oci:{lay.path}:v1", f"docker-archive:{archive}:example.com/app:v1")
    assert result.exit_code == 1
    assert f"{archive}: already exists" in result.stderr  # as skopeo, which refuses it too
    assert archive.read_bytes() == before


def test_sync_between_local_transports_and_a_registry(
    image_builder: ImageBuilder, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    lay = layout(image_builder, tmp_path)
    storage = tmp_path / "storage"
    for tag in ("v1", "multi"):
        copy(f"oci:{lay.path}:{tag}", f"registry-storage:{storage}:team/app:{tag}")
    dirs = tmp_path / "dirs"
    result = mirrord("sync", "--all", "--src", "registry-storage", "--dest", "dir", storage, dirs)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (dirs / "team").iterdir()) == ["app:multi", "app:v1"]
    again = mirrord("sync", "--all", "--src", "registry-storage", "--dest", "dir", storage, dirs)
    assert again.output.count("(unchanged)") == 2

    target = make_registry()
    pushed = mirrord(
        "sync",
        "--all",
        "--src",
        "dir",
        "--dest",
        "docker",
        dirs,
        f"{target.host}/mirror",
        "--dest-tls-verify=false",
    )
    assert pushed.exit_code == 0, pushed.output
    for tag in ("v1", "multi"):
        assert inspect_raw(target, f"mirror/team/app:{tag}") == lay.tags[tag].manifest

    layout_out = tmp_path / "oci-out"
    pulled = mirrord(
        "sync",
        "--all",
        "--src",
        "docker",
        "--dest",
        "oci",
        f"{target.host}/mirror/team/app",
        layout_out,
        "--src-tls-verify=false",
    )
    assert pulled.exit_code == 0, pulled.output
    assert (
        run_skopeo("inspect", "--raw", f"oci:{layout_out}:app:multi").stdout
        == lay.tags["multi"].manifest
    )


def test_a_docker_archive_write_removes_what_a_killed_one_left(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    lay = layout(image_builder, tmp_path)
    beside = tmp_path / "out"
    beside.mkdir()
    archive = beside / "out.tar"
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = beside / f".out.tar.tmp-{gone.pid}-abc"  # what a write killed halfway left
    left.write_bytes(b"half a tar")
    staged = beside / f".out.tar.staging-{gone.pid}-abc"  # and the images it had staged
    (staged / "blobs").mkdir(parents=True)
    (staged / "blobs" / "layer").write_bytes(b"a layer")
    with subprocess.Popen(["sleep", "60"]) as running:
        kept = beside / f".out.tar.tmp-{running.pid}-abc"  # another process still writing
        kept.write_bytes(b"being written")
        try:
            copy(f"oci:{lay.path}:docker", f"docker-archive:{archive}:example.com/app:d")
        finally:
            running.kill()
    assert not left.exists()
    assert not staged.exists()
    assert kept.read_bytes() == b"being written"
    assert sorted(p.name for p in beside.iterdir()) == [kept.name, "out.tar"]
