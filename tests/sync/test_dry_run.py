"""What a skopeo-style sync would do, before it does it: `--dry-run` and `mirrord plan`, and
which settings each side of a sync gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mirrord.cli.sync import overlay
from mirrord.config.load import skopeo_sync_config
from mirrord.registry.options import Credentials, RegistryOptions, TLSMode
from mirrord.secret import Secret
from tests.harness.registry import MakeRegistry, RegistryServer


def mirrord(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrord", *args], capture_output=True, text=True, timeout=120
    )


def test_a_listing_that_fails_makes_dry_run_and_plan_exit_3_as_the_sync_would(
    shared_registry: MakeRegistry, tmp_path: Path
) -> None:
    source: RegistryServer = shared_registry("anonymous")
    config = tmp_path / "sync.yml"
    config.write_text(f"{source.host}:\n  tls-verify: false\n  images:\n    no/such-repo: []\n")
    dest = "registry.example.com/mirror"
    dry_run = mirrord("sync", "--src", "yaml", "--dest", "docker", "--dry-run", str(config), dest)
    planned = mirrord("plan", str(config), "--dest", dest)
    for done in (dry_run, planned):
        assert done.returncode == 3, done.stderr  # a CI check of the file must not pass
        assert "no/such-repo" in done.stderr


def test_a_destination_on_the_source_host_gets_the_dest_flags_not_the_files_login(
    tmp_path: Path,
) -> None:
    """Promoting within one registry: skopeo applies a sync file's credentials and tls-verify
    to the source only; the push uses --dest-creds and verifies TLS."""
    config = tmp_path / "sync.yml"
    config.write_text(
        "reg.example:5000:\n"
        "  tls-verify: false\n"
        "  credentials: {username: reader, password: read-only-pw}\n"
        "  images: {team/app: [v1]}\n"
    )
    writer = Credentials("writer", Secret("write-pw"))
    cli = {"source": RegistryOptions(), "destination": RegistryOptions(credentials=writer)}
    options_for = overlay(
        skopeo_sync_config("reg.example:5000/mirror", file=config), cli, sources_only=True
    )
    source, destination = (
        options_for("reg.example:5000", role) for role in ("source", "destination")
    )
    assert source.credentials is not None
    assert source.credentials.username == "reader"
    assert source.tls is TLSMode.SKOPEO_NO_VERIFY
    assert destination.credentials == writer
    assert destination.tls is TLSMode.VERIFY


def test_skopeo_sync_flags_that_change_nothing_are_accepted_and_format_is_refused(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sync.yml"
    config.write_text("registry.example.com:\n  images:\n    team/app: [v1]\n")
    args = ["sync", "--src", "yaml", "--dest", "docker", str(config), "mirror.example.com/m"]
    accepted = mirrord(*args, "--remove-signatures", "--keep-going", "--dry-run")
    assert accepted.returncode == 0, accepted.stderr
    assert "mirror.example.com/m/app:v1" in accepted.stdout
    converted = mirrord(*args, "--format", "v2s2")
    assert converted.returncode == 2
    assert "never converts manifests" in converted.stderr
