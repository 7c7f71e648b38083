"""docker-archives from elsewhere as bundles: skopeo's classic one (`<hex>.tar` layers, no
registry manifest), Docker 25's (an OCI layout inside, names in containerd's annotation) and
mirrord's own, verified and imported under the same names."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bundle.corpus import mirrord, sha256, write_tar
from tests.harness.images import REF_NAME, ImageBuilder, Layout
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import SkopeoError, inspect_raw, run_skopeo

CONTAINERD_NAME = "io.containerd.image.name"

Writer = Callable[[Layout, Path, str], None]


@pytest.fixture
def web(image_builder: ImageBuilder, tmp_path: Path) -> Layout:
    """One OCI image, tagged `v1`."""
    image = image_builder.image(
        "web", layers=[image_builder.layer("base"), image_builder.layer("web")]
    )
    return image_builder.write_layout(tmp_path / "layout", {"v1": image})


def by_skopeo(layout: Layout, archive: Path, name: str) -> None:
    """skopeo 1.9: the classic format (manifest.json, `<hex>.tar`, `<id>/layer.tar` links)."""
    run_skopeo("copy", f"oci:{layout.path}:v1", f"docker-archive:{archive}:{name}")


def test_a_skopeo_archive_verifies(web: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "sk.tar"
    by_skopeo(web, archive, "app/web:v1")
    result = mirrord("verify", archive)
    assert result.exit_code == 0, result.output
    assert f"{archive}: OK: 1 images, 3 blobs" in result.stdout


def test_a_classic_archive_missing_a_layer_fails_verification(web: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "sk.tar"
    by_skopeo(web, archive, "app/web:v1")
    members = archive_members(archive)
    layer = json.loads(members["manifest.json"])[0]["Layers"][1]
    del members[layer]
    broken = tmp_path / "broken.tar"
    write_tar(broken, members)
    result = mirrord("verify", broken)
    assert result.exit_code == 1
    assert f"{broken}: member {layer!r} is missing" in result.stderr


def archive_members(archive: Path) -> dict[str, bytes]:
    """The regular files of a tar, by name."""
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isreg()
        }


def flipped(data: bytes) -> bytes:
    """The same bytes but one, as a bad disk or a careless edit leaves them."""
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def test_a_flipped_byte_in_a_skopeo_archive_fails_verify_and_import(
    web: Layout, tmp_path: Path, make_registry: MakeRegistry
) -> None:
    archive = tmp_path / "sk.tar"
    by_skopeo(web, archive, "app/web:v1")
    members = archive_members(archive)
    layer = json.loads(members["manifest.json"])[0]["Layers"][1]  # `<hex>.tar`: its hash
    members[layer] = flipped(members[layer])
    broken = tmp_path / "broken.tar"
    write_tar(broken, members)

    result = mirrord("verify", broken)
    assert result.exit_code == 1, result.output
    assert f"{broken}: {layer}: its bytes hash to sha256:" in result.stderr
    target = make_registry()
    imported = mirrord("import", broken, f"docker://{target.host}", "--dest-tls-verify=false")
    assert imported.exit_code == 1, imported.output  # its one image failed
    assert f"mirrord: error: app/web:v1: {broken}: {layer}: its bytes hash to" in imported.stderr
    with pytest.raises(SkopeoError):
        inspect_raw(target, "app/web:v1")


def docker_save_layout(members: dict[str, bytes]) -> dict[str, bytes]:
    """skopeo's archive as `docker save` before Docker 25 lays it out: each layer in
    `<id>/layer.tar`, so only the config's diff_ids say what its bytes should hash to."""
    manifest = json.loads(members["manifest.json"])
    saved = {name: data for name, data in members.items() if name.endswith(".json")}
    layers = []
    for n, layer in enumerate(manifest[0]["Layers"]):
        saved[f"{n:064x}/layer.tar"] = members[layer]
        layers.append(f"{n:064x}/layer.tar")
    manifest[0]["Layers"] = layers
    saved["manifest.json"] = json.dumps(manifest).encode()
    return saved


def test_a_docker_save_layer_that_no_longer_matches_its_diff_id_fails_verify(
    web: Layout, tmp_path: Path
) -> None:
    archive = tmp_path / "sk.tar"
    by_skopeo(web, archive, "app/web:v1")
    members = docker_save_layout(archive_members(archive))
    good, broken = tmp_path / "good.tar", tmp_path / "broken.tar"
    write_tar(good, members)
    members[f"{1:064x}/layer.tar"] = flipped(members[f"{1:064x}/layer.tar"])
    write_tar(broken, members)

    assert mirrord("verify", good).exit_code == 0
    result = mirrord("verify", broken)
    assert result.exit_code == 1, result.output
    assert f"{broken}: {1:064x}/layer.tar: its bytes hash to sha256:" in result.stderr
    assert "the image config's rootfs.diff_ids says sha256:" in result.stderr


def by_mirrord(layout: Layout, archive: Path, name: str) -> None:
    result = mirrord("copy", f"oci:{layout.path}:v1", f"docker-archive:{archive}:{name}")
    assert result.exit_code == 0, result.output


def by_docker25(layout: Layout, archive: Path, name: str) -> None:
    docker25(layout, archive, [name])


def containerd_name(name: str) -> str:
    """Docker's full spelling of a name, as containerd's annotation holds it."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first):
        return name
    return f"docker.io/{name}" if rest else f"docker.io/library/{name}"


def docker25(layout: Layout, archive: Path, names: list[str]) -> None:
    """What `docker save NAME...` writes since Docker 25: an OCI layout whose index entries
    carry containerd's full name and the bare tag, and a manifest.json for older loaders."""
    image = layout.tags["v1"]
    manifest = json.loads(image.manifest)
    entries, repo_tags = [], []
    for name in names:
        annotations = {CONTAINERD_NAME: containerd_name(name), REF_NAME: name.rsplit(":", 1)[1]}
        entries.append(image.descriptor() | {"annotations": annotations})
        repo_tags.append(name)
    members = {
        "oci-layout": (layout.path / "oci-layout").read_bytes(),
        "index.json": json.dumps({"schemaVersion": 2, "manifests": entries}).encode(),
        "manifest.json": json.dumps(
            [
                {
                    "Config": blob_member(manifest["config"]["digest"]),
                    "RepoTags": repo_tags,
                    "Layers": [blob_member(layer["digest"]) for layer in manifest["layers"]],
                }
            ]
        ).encode(),
    }
    for path in sorted((layout.path / "blobs" / "sha256").iterdir()):
        members[f"blobs/sha256/{path.name}"] = path.read_bytes()
    write_tar(archive, members)


def blob_member(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/")


def repositories(registry: RegistryServer) -> set[str]:
    """Every repository a registry holds, read from its storage directory."""
    root = registry.storage_dir / "docker/registry/v2/repositories"
    return {p.parent.relative_to(root).as_posix() for p in root.rglob("_manifests")}


def config_digest(layout: Layout) -> str:
    digest: str = json.loads(layout.tags["v1"].manifest)["config"]["digest"]
    return digest


@pytest.mark.parametrize("writer", [by_skopeo, by_docker25, by_mirrord])
@pytest.mark.parametrize(
    ("name", "repository"),
    [
        ("app/web:v1", "app/web"),
        ("web:v1", "web"),
        ("registry.example.com:5000/app/web:v1", "app/web"),
    ],
)
def test_an_archive_imports_under_its_repository_path(
    web: Layout,
    tmp_path: Path,
    make_registry: MakeRegistry,
    writer: Writer,
    name: str,
    repository: str,
) -> None:
    """Whoever wrote the archive and however it spells the name, the image lands where
    `docker load` users and image lists expect it: PREFIX/REPO, without the registry."""
    archive = tmp_path / "images.tar"
    writer(web, archive, name)
    target = make_registry()
    result = mirrord("import", archive, f"docker://{target.host}/airgap", "--dest-tls-verify=false")
    assert result.exit_code == 0, result.output
    assert repositories(target) == {f"airgap/{repository}"}
    config = inspect_raw(target, f"airgap/{repository}:v1", config=True)
    assert sha256(config) == config_digest(web)
    assert mirrord("verify", archive).exit_code == 0


@pytest.mark.parametrize(
    ("name", "repository"),
    [("docker.io/library/web:v1", "web"), ("registry.example.com:5000/app/web:v1", "app/web")],
)
def test_an_oci_layout_imports_under_its_repository_path(
    web: Layout, tmp_path: Path, make_registry: MakeRegistry, name: str, repository: str
) -> None:
    """An OCI layout without a description names its images as an archive does."""
    layout = tmp_path / "named"
    run_skopeo("copy", f"oci:{web.path}:v1", f"oci:{layout}:{name}")
    target = make_registry()
    result = mirrord("import", layout, f"docker://{target.host}/airgap", "--dest-tls-verify=false")
    assert result.exit_code == 0, result.output
    assert repositories(target) == {f"airgap/{repository}"}
    assert sha256(inspect_raw(target, f"airgap/{repository}:v1", config=True)) == config_digest(web)


def test_two_names_that_would_import_as_one_are_refused(web: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "images.tar"
    docker25(web, archive, ["a.example.com/app:v1", "b.example.com/app:v1"])
    result = mirrord("verify", archive)
    assert result.exit_code == 1
    assert (
        f"{archive}: 'a.example.com/app:v1' and 'b.example.com/app:v1' would both import as "
        "'app:v1'" in result.stderr
    )


def test_an_unsafe_member_name_names_its_archive(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    write_tar(archive, {"manifest.json": b"[]", "x/../../PWNED": b"gotcha"})
    result = mirrord("copy", f"docker-archive:{archive}:evil:1", f"dir:{tmp_path / 'out'}")
    assert result.exit_code == 1
    assert f"{archive}: member 'x/../../PWNED': refusing an unsafe name" in result.stderr
    manifest = [{"Config": "../../etc/passwd", "RepoTags": ["evil:1"], "Layers": []}]
    write_tar(archive, {"manifest.json": json.dumps(manifest).encode()})
    result = mirrord("copy", f"docker-archive:{archive}:evil:1", f"dir:{tmp_path / 'out'}")
    assert result.exit_code == 1
    assert f"{archive}: manifest.json[0]: member '../../etc/passwd'" in result.stderr
    packed = tmp_path / "evil-bundle.tar"
    info = b'{"mirrord-bundle":1,"format":"registry-storage","images":[],"blobs":[],"base":[]}'
    write_tar(packed, {"mirrord-bundle.json": info, "../escaped": b"gotcha", "SHA256SUMS": b""})
    result = mirrord("verify", packed, "--workdir", tmp_path)
    assert result.exit_code == 1
    assert f"{packed}: member '../escaped': refusing an unsafe name" in result.stderr
