"""Which pool images a LIST names, and their names in the bundle (no registry needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrord.bundle.select import (
    ExportItem,
    bundle_repository,
    is_list_file,
    load_selections,
    plan_export,
    unsuffixed,
)
from mirrord.config.naming import Destination
from mirrord.errors import ConfigError
from tests.bundle.corpus import mirrord

POOL = Destination.make("pool.example.com:5000", "mirror")
DIGEST = "sha256:" + "ab" * 32


def plan_of(path: Path, listed: dict[str, list[str]] | None = None) -> tuple[ExportItem, ...]:
    items, _ = plan_export(load_selections(path, POOL), listed or {}, POOL.prefix)
    return items


def test_list_lines_are_found_where_sync_put_them_and_lose_the_prefix(tmp_path: Path) -> None:
    path = tmp_path / "images-list.txt"
    path.write_text(
        "##k8s-images\n"
        "library/nginx:1.25\n"
        "calico/cni:v3.16.3   # a comment\n"
        "quay.io/coreos/etcd:v3.5.0\n"
        f"busybox@{DIGEST}\n"
        f"alpine:3.19@{DIGEST}\n"
    )
    assert plan_of(path) == (
        ExportItem("alpine", "3.19", "mirror/alpine", "3.19"),
        ExportItem("busybox", None, "mirror/busybox", DIGEST),
        ExportItem("calico/cni", "v3.16.3", "mirror/calico/cni", "v3.16.3"),
        ExportItem("coreos/etcd", "v3.5.0", "mirror/coreos/etcd", "v3.5.0"),
        ExportItem("nginx", "1.25", "mirror/nginx", "1.25"),
    )


def test_list_problems_name_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "images.list"
    path.write_text("nginx:1.25\nnginx\nBAD NAME:1\n")
    with pytest.raises(ConfigError) as raised:
        load_selections(path, POOL)
    assert [p.split(": ", 1)[0] for p in raised.value.problems] == [f"{path}:2", f"{path}:3"]


def test_a_skopeo_file_uses_skopeo_naming_and_the_pools_tags(tmp_path: Path) -> None:
    path = tmp_path / "sync.yml"
    path.write_text(
        "quay.io:\n"
        "  images: {coreos/etcd: [v3.5.0]}\n"
        "  images-by-tag-regex: {prometheus/node-exporter: '^v1\\.'}\n"
    )
    listed = {"mirror/node-exporter": ["v1.7.0", "v1.8.0", "v2.0.0", "latest"]}
    assert [i.name for i in plan_of(path, listed)] == [
        "etcd:v3.5.0",
        "node-exporter:v1.7.0",
        "node-exporter:v1.8.0",
    ]


def test_pool_tags_carry_the_suffix_sync_appended() -> None:
    assert unsuffixed(["1.0-m", "2.0-m", "3.0", "-m"], "-m") == ["1.0", "2.0"]
    assert unsuffixed(["1.0"], "") == ["1.0"]


def test_bundle_names_drop_only_the_pool_prefix() -> None:
    assert bundle_repository("mirror/app/web", "mirror") == "app/web"
    assert bundle_repository("mirrored/app", "mirror") == "mirrored/app"
    assert bundle_repository("app", "") == "app"


def test_list_files_are_told_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("quay.io: {}\n")
    (tmp_path / "b").write_text("nginx:1.25\nbusybox:1\n")
    (tmp_path / "c.yaml").write_text("quay.io:\n  images: {x: [y]}\n")
    assert is_list_file(tmp_path / "a.txt")
    assert is_list_file(tmp_path / "b")
    assert not is_list_file(tmp_path / "c.yaml")


@pytest.mark.parametrize("source", ["dir:/tmp/x", "oci:/tmp/x", "pool.example.com", "docker://"])
def test_export_needs_a_registry_or_a_registry_storage_pool(tmp_path: Path, source: str) -> None:
    path = tmp_path / "images-list.txt"
    path.write_text("nginx:1.25\n")
    result = mirrord("export", path, tmp_path / "bundle", "--from", source)
    assert result.exit_code == 2
    assert result.stderr.startswith("mirrord: error:")
    assert not (tmp_path / "bundle").exists()
