"""`mirrord sync --src yaml FILE DEST` copies what `skopeo sync --src yaml FILE DEST` copies.

Both tools run on the same skopeo sync file against the same source registry, each into its
own empty destination; the destinations must end up with the same repositories, tags and
digests (images with all tags, named tags and a digest, a tag regex; with the host's platform
and with --all). Debian's skopeo 1.9 predates `images-by-semver` (skopeo 1.14) and ignores the
key, so semver selection is checked against Masterminds' rules in tests/config instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import run_skopeo, seed

TAGS = ["1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "2.0.0", "v2.1", "latest", "nightly-2026"]


def catalog(registry: RegistryServer) -> dict[str, dict[str, str]]:
    """repo -> tag -> digest, read over HTTP."""
    result: dict[str, dict[str, str]] = {}
    with urllib.request.urlopen(f"{registry.url}/v2/_catalog?n=1000") as resp:
        repos = json.loads(resp.read())["repositories"]
    for repo in repos:
        with urllib.request.urlopen(f"{registry.url}/v2/{repo}/tags/list") as resp:
            tags = json.loads(resp.read())["tags"] or []
        result[repo] = {tag: digest_of(registry, repo, tag) for tag in tags}
    return result


def digest_of(registry: RegistryServer, repo: str, tag: str) -> str:
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", method="HEAD")
    request.add_header(
        "Accept",
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
        "application/vnd.docker.distribution.manifest.list.v2+json, "
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    with urllib.request.urlopen(request) as resp:
        return str(resp.headers["Docker-Content-Digest"])


@pytest.fixture(scope="module")
def parity_source(
    shared_registry: MakeRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RegistryServer, str, str]:
    """A source with two repos of versioned tags (one multi-arch); returns (registry, app repo,
    a digest of an untagged-by-YAML image)."""
    registry = shared_registry("anonymous")
    work = tmp_path_factory.mktemp("parity")
    builder = ImageBuilder("parity", work / "store")
    pinned = ""
    for repo, multi in (("parity/app", False), ("parity/tools/cli", True)):
        for tag in TAGS:
            image = builder.index(f"{repo}:{tag}") if multi else builder.image(f"{repo}:{tag}")
            layout = builder.write_layout(work / f"{repo}-{tag}".replace("/", "_"), {tag: image})
            seed(layout, tag, registry, f"{repo}:{tag}")
            if repo == "parity/app" and tag == "nightly-2026":
                pinned = image.digest
    return registry, "parity/app", pinned


def sync_file(path: Path, source: str, digest: str) -> Path:
    path.write_text(
        f"{source}:\n"
        "  tls-verify: false\n"
        "  images:\n"
        "    parity/app:\n"
        "      - latest\n"
        f'      - "{digest}"\n'
        "    parity/tools/cli: []\n"
        "  images-by-tag-regex:\n"
        "    parity/app: ^1\\.2\n"
    )
    return path


def sync_both(
    config: Path, make_registry: MakeRegistry, platform_args: list[str]
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Run skopeo sync and mirrord sync on `config`; (skopeo's result, mirrord's)."""
    by_skopeo, by_mirrord = make_registry(), make_registry()
    common = ["--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", *platform_args]
    # --preserve-digests: without it skopeo may re-encode a copied index (mirrord never does).
    run_skopeo("sync", *common, "--preserve-digests", str(config), f"{by_skopeo.host}/mirror")
    scratch = config.parent / "tmpdir"
    scratch.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirrord",
            "sync",
            *common,
            "--state-db",
            "throwaway",
            str(config),
            f"{by_mirrord.host}/mirror",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    assert list(scratch.iterdir()) == []  # the throw-away database was thrown away
    return catalog(by_skopeo), catalog(by_mirrord)


@pytest.mark.parametrize("platform_args", [[], ["--all"]], ids=["host-platform", "all"])
def test_mirrord_sync_copies_what_skopeo_sync_copies(
    parity_source: tuple[RegistryServer, str, str],
    make_registry: MakeRegistry,
    tmp_path: Path,
    platform_args: list[str],
) -> None:
    source, _, digest = parity_source
    config = sync_file(tmp_path / "sync.yaml", source.host, digest)
    expected, copied = sync_both(config, make_registry, platform_args)
    assert expected  # skopeo copied something, or the comparison proves nothing
    assert copied == expected


def test_tag_regexes_are_read_as_go_reads_them(
    parity_source: tuple[RegistryServer, str, str], make_registry: MakeRegistry, tmp_path: Path
) -> None:
    """POSIX classes, a flag group after `^`, and \\Q…\\E: Python's `re` reads the first
    differently (silently) and refuses the others; skopeo (Go) accepts all three."""
    source, _, _ = parity_source
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"{source.host}:\n"
        "  tls-verify: false\n"
        "  images-by-tag-regex:\n"
        "    parity/app: '^[[:digit:]]\\.2\\.[[:digit:]]$'\n"
        "    parity/tools/cli: '^(?i)V2|\\Qnightly-\\E'\n"
    )
    expected, copied = sync_both(config, make_registry, ["--all"])
    assert sorted(expected["mirror/app"]) == ["1.2.0", "1.2.5"]
    assert sorted(expected["mirror/cli"]) == ["nightly-2026", "v2.1"]
    assert copied == expected


def test_a_registry_key_with_a_namespace_selects_what_skopeo_selects(
    parity_source: tuple[RegistryServer, str, str], make_registry: MakeRegistry, tmp_path: Path
) -> None:
    """`HOST/parity:` then `app:` is parity/app: skopeo joins key and repo with "/"."""
    source, _, _ = parity_source
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"{source.host}/parity:\n"
        "  tls-verify: false\n"
        "  images:\n"
        "    app: [latest, '2.0.0']\n"
        "  images-by-tag-regex:\n"
        "    tools/cli: '^v'\n"
    )
    expected, copied = sync_both(config, make_registry, ["--all"])
    assert sorted(expected["mirror/app"]) == ["2.0.0", "latest"]
    assert sorted(expected["mirror/cli"]) == ["v2.1"]
    assert copied == expected
