"""Image list files plan what the seed's sync.sh copies, plus mirrord's additions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mirrord.config import load_config
from mirrord.config.imagelist import parse_image_list
from mirrord.errors import ConfigError
from mirrord.plan import plan_listed
from mirrord.refs import ImageReference
from tests.config.support import FIXTURES, pairs

LIST = FIXTURES / "images-list.txt"


def sync_sh(text: str, source: str, target: str) -> list[tuple[str, str]]:
    """What sync.sh does: `sed -n '/#/d;s/:/:/p' | sort -u`, then SRC/<image> -> DEST/<image>."""
    images = sorted({line for line in text.splitlines() if "#" not in line and ":" in line})
    return [(f"{source}/{image}", f"{target}/{image}") for image in images]


def config_for(tmp_path: Path, source: str = "") -> Path:
    shutil.copy(LIST, tmp_path / "images-list.txt")
    path = tmp_path / "mirrord.yaml"
    path.write_text(
        f"destination: {{registry: 'localhost:5000'}}\nsources:\n  - {{list: images-list.txt{source}}}\n"
    )
    return path


def test_the_fixture_is_a_realistic_list() -> None:
    lines = LIST.read_text().splitlines()
    assert len(lines) >= 140
    assert sum(line.startswith("##") for line in lines) >= 10


def test_plans_what_sync_sh_copies_plus_the_additions(tmp_path: Path) -> None:
    config = load_config(config_for(tmp_path))
    planned = [
        (str(r.source), str(r.destination)) for r in plan_listed(config.selections, {}).requests
    ]
    expected = sync_sh(LIST.read_text(), "docker.io", "localhost:5000")
    assert len(expected) == 143  # "Progress: 143/143" in the seed's run
    additions = [
        ("quay.io/coreos/etcd:v3.4.13", "localhost:5000/coreos/etcd:v3.4.13"),
        ("k8s.gcr.io/pause:3.2", "localhost:5000/pause:3.2"),
        (
            "docker.io/busybox@sha256:e1488cb900233d035575f0a7787448cb1fa93bed0ccc0d4efc1963d7d72a8f17",
            "localhost:5000/busybox@sha256:e1488cb900233d035575f0a7787448cb1fa93bed0ccc0d4efc1963d7d72a8f17",
        ),
        (
            "docker.io/nginx:1.19.0@sha256:8f335768880da6baf72b70c701002b45f4932acae8d574dedfddaf967fc3ac90",
            "localhost:5000/nginx:1.19.0",
        ),
    ]
    assert planned == pairs(*expected, *additions)
    assert all(s.source_name == "images-list" for s in config.selections)
    assert not any(s.needs_listing for s in config.selections)


def test_kubesphere_and_library_images(tmp_path: Path) -> None:
    config = load_config(config_for(tmp_path))
    targets = {str(s.source): str(s.target) for s in config.selections}
    assert targets["docker.io/library/alpine"] == "localhost:5000/alpine"
    assert (
        targets["docker.io/kubesphere/kube-apiserver"] == "localhost:5000/kubesphere/kube-apiserver"
    )
    apiserver = next(
        s for s in config.selections if s.source.repository == "kubesphere/kube-apiserver"
    )
    assert apiserver.tags == ("v1.17.9", "v1.18.8", "v1.19.8", "v1.19.9", "v1.20.6")


def test_another_source_registry_and_naming(tmp_path: Path) -> None:
    config = load_config(
        config_for(tmp_path, ", registry: registry.cn-beijing.aliyuncs.com, naming: basename")
    )
    by_source = {str(s.source): str(s.target) for s in config.selections}
    assert (
        by_source["registry.cn-beijing.aliyuncs.com/kubesphere/ks-console"]
        == "localhost:5000/ks-console"
    )
    assert by_source["quay.io/coreos/etcd"] == "localhost:5000/etcd"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("busybox", "'busybox' needs a :tag or an @sha256:digest"),
        ("busybox:1 nginx:1", "'busybox:1 nginx:1': one image per line"),
        (
            "Busybox:1",
            "invalid repository name 'library/Busybox' in 'docker.io/Busybox:1' "
            "(lowercase letters, digits and . _ - separators only)",
        ),
        (
            "busybox@sha256:123",
            "invalid digest in 'docker.io/busybox@sha256:123': expected "
            "sha256:<64 hex> or sha512:<128 hex>",
        ),
    ],
)
def test_line_problems(line: str, problem: str) -> None:
    parsed = parse_image_list(
        f"# header\n\nalpine:3.14\n{line}   # trailing comment\n", "docker.io"
    )
    assert parsed.problems == ((4, problem),)
    assert [str(e.image) for e in parsed.entries] == ["docker.io/library/alpine:3.14"]


def test_problems_carry_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("alpine:3.14\n\n##section\nnot a line\nx:1\nnginx\n")
    path = tmp_path / "mirrord.yaml"
    path.write_text("destination: {registry: m.example.com}\nsources: [{list: list.txt}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == (
        "list.txt:4: 'not a line': one image per line",
        "list.txt:6: 'nginx' needs a :tag or an @sha256:digest",
    )


def test_duplicates_collapse_and_registry_lines_keep_their_registry() -> None:
    parsed = parse_image_list("a/b:1\na/b:1\ndocker.io/a/b:1\nlocalhost:5000/c:2\n", "quay.io")
    assert [str(e.image) for e in parsed.entries] == [
        "quay.io/a/b:1",
        "docker.io/a/b:1",
        "localhost:5000/c:2",
    ]
    assert parsed.entries[0].image == ImageReference("quay.io", "a/b", "1")
