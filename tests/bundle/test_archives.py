"""docker-archives from elsewhere as bundles: skopeo's classic one (`<hex>.tar` layers, no
registry manifest) is verified as it is read."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.bundle.corpus import mirrord
from tests.harness.images import ImageBuilder, Layout
from tests.harness.skopeo import run_skopeo


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


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_skopeo_archive_verifies(web: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "sk.tar"
    by_skopeo(web, archive, "app/web:v1")
    result = mirrord("verify", archive)
    assert result.exit_code == 0, result.output
    assert f"{archive}: OK: 1 images, 3 blobs" in result.stdout


def test_a_classic_archive_missing_a_layer_fails_verification(web: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "sk.tar"
    by_skopeo(web, archive, "app/web:v1")
    with tarfile.open(archive) as tar:
        members = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isreg()
        }
    layer = json.loads(members["manifest.json"])[0]["Layers"][1]
    del members[layer]
    broken = tmp_path / "broken.tar"
    write_tar(broken, members)
    result = mirrord("verify", broken)
    assert result.exit_code == 1
    assert f"{broken}: member {layer!r} is missing" in result.stderr
