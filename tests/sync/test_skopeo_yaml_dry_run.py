"""`mirrord sync --dry-run` plans the copies `skopeo sync --dry-run` announces, for skopeo sync
files whose values skopeo's YAML reader takes in its own way (tests/config/test_skopeo_values.py).

Both tools run on the same file. With named tags only, neither contacts a registry, so the
sources may be any host; the one case that needs a tag listing uses the session's registry.
The skopeo here is Debian's 1.9.3 (yaml.v2); skopeo HEAD (yaml.v3) reads these cases the same.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord.refs import ImageReference
from mirrord.tagregex import TagRegex, TagRegexError
from tests.config.test_tagregex import GO_ACCEPTS, GO_REFUSES
from tests.harness.images import ImageBuilder
from tests.harness.registry import RegistryServer
from tests.harness.skopeo import run_skopeo, seed

DEST = "mirror.example.com/m"
_SKOPEO_LINE = re.compile(r'from="docker://([^"]+)" to="docker://([^"]+)"')

Pairs = set[tuple[str, str]]


def _normal(source: str, destination: str) -> tuple[str, str]:
    return str(ImageReference.parse(source)), str(ImageReference.parse(destination))


def skopeo_plan(config: Path, *flags: str) -> Pairs:
    done = run_skopeo(
        "sync", "--dry-run", "--src", "yaml", "--dest", "docker", *flags, str(config), DEST
    )
    return {_normal(*m.groups()) for m in _SKOPEO_LINE.finditer(done.stderr.decode())}


def mirrord_plan(config: Path, *flags: str) -> Pairs:
    args = ["sync", "--src", "yaml", "--dest", "docker", "--dry-run", *flags, str(config), DEST]
    done = subprocess.run(
        [sys.executable, "-m", "mirrord", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = (line.split("  ->  ") for line in done.stdout.splitlines() if "  ->  " in line)
    return {_normal(source.strip(), target.split()[0]) for source, target in lines}


CASES: dict[str, tuple[str, list[str]]] = {
    # yaml.Unmarshal decodes the first document of the stream and ignores the rest
    "second-yaml-document": (
        "registry.example.com:\n  images: {team/app: [v1]}\n---\nnot: [a, skopeo, file]\n",
        [],
    ),
    # credentials' fields are Go strings: left empty, they are ""
    "null-password": (
        "registry.example.com:\n  images: {team/app: [v1]}\n"
        "  credentials: {username: robot, password: }\n",
        [],
    ),
}


@pytest.mark.parametrize(("text", "flags"), list(CASES.values()), ids=list(CASES))
def test_dry_run_plans_what_skopeo_dry_run_announces(
    tmp_path: Path, text: str, flags: list[str]
) -> None:
    config = tmp_path / "sync.yml"
    config.write_text(text)
    config.chmod(0o600)
    expected = skopeo_plan(config, *flags)
    assert expected  # skopeo announced something, or the comparison proves nothing
    assert mirrord_plan(config, *flags) == expected


def test_a_null_tag_regex_selects_every_tag_as_in_skopeo(
    source_registry: RegistryServer, unique_repo: str, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    """`repo:` with no regex is "" to skopeo, and "" matches every tag."""
    layout = image_builder.write_layout(
        tmp_path / "layout", {"v1": image_builder.image("v1"), "latest": image_builder.image("l")}
    )
    for tag in ("v1", "latest"):
        seed(layout, tag, source_registry, f"{unique_repo}:{tag}")
    config = tmp_path / "sync.yml"
    config.write_text(
        f"{source_registry.host}:\n  tls-verify: false\n  images-by-tag-regex:\n    {unique_repo}:\n"
    )
    expected = skopeo_plan(config)
    assert len(expected) == 2
    assert mirrord_plan(config) == expected


_REGEX_REFUSED = re.compile(
    r'msg="Error parsing regex, skipping" regex="[^"]*" registry="[^"]*" repo=(\S+)'
)


def test_skopeo_refuses_the_tag_regexes_mirrord_refuses(tmp_path: Path) -> None:
    """skopeo compiles each regex before it lists tags: it says which it refuses without a
    registry (the others fail fast against a closed loopback port)."""
    patterns = {**GO_REFUSES, **dict.fromkeys(GO_ACCEPTS, "")}
    repos = {f"r{i}": pattern for i, pattern in enumerate(patterns)}
    lines = "".join(f"    {repo}: {json.dumps(pattern)}\n" for repo, pattern in repos.items())
    config = tmp_path / "sync.yml"
    config.write_text(f"127.0.0.1:9:\n  tls-verify: false\n  images-by-tag-regex:\n{lines}")
    done = run_skopeo(
        "sync", "--dry-run", "--src", "yaml", "--dest", "dir", str(config), str(tmp_path / "out")
    )
    refused_by_skopeo = {repos[m[1]] for m in _REGEX_REFUSED.finditer(done.stderr.decode())}
    assert refused_by_skopeo == set(GO_REFUSES)
    refused_by_mirrord = set()
    for pattern in patterns:
        try:
            TagRegex.compile(pattern)
        except TagRegexError:
            refused_by_mirrord.add(pattern)
    assert refused_by_mirrord == refused_by_skopeo


@pytest.mark.parametrize("key", ["quay.io/", "quay.io/team/", "quay.io//team"])
def test_skopeo_skips_every_repo_of_a_key_with_an_empty_path_segment(
    tmp_path: Path, key: str
) -> None:
    """What mirrord refuses (tests/config/test_skopeo_sync.py), skopeo reads without contacting
    the registry: each repo's name is invalid, and nothing is synced."""
    config = tmp_path / "sync.yml"
    config.write_text(f"{key}:\n  images: {{coreos/etcd: [v1]}}\n")
    done = run_skopeo(
        "sync", "--dry-run", "--src", "yaml", "--dest", "dir", str(config), str(tmp_path / "out")
    )
    stderr = done.stderr.decode()
    assert 'msg="Error parsing repository name, skipping"' in stderr
    assert "Would have synced 0 images from 0 sources" in stderr
