"""Backup and restore of the SQLite database as the README ("Backup and restore") tells operators to do it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry
from tests.ops.conftest import StartDaemon
from tests.ops.support import daemon_config, mirrord_cli, seed_images, skopeo_source


def _sqlite3() -> str:
    binary = shutil.which("sqlite3")
    if binary is None:
        pytest.fail("sqlite3 is not installed: apt-get install -y sqlite3", pytrace=False)
    return binary


def restore(backup: Path, database: Path) -> None:
    """With the daemon stopped: the old WAL and shared-memory files go, the backup comes in."""
    for leftover in database.parent.glob(f"{database.name}*"):
        leftover.unlink()
    shutil.copy2(backup, database)


async def test_online_backup_restores_runs_and_history(
    tmp_path: Path,
    make_registry: MakeRegistry,
    image_builder: ImageBuilder,
    start_daemon: StartDaemon,
) -> None:
    source, mirror = make_registry(), make_registry()
    seed_images(image_builder, source, tmp_path, {"app/one:v1": image_builder.image("one")})
    sources = [skopeo_source(tmp_path, "apps", source.host, {"app/one": ["v1"]})]
    config = daemon_config(tmp_path, destination=mirror.host, sources=sources)
    database, backup = tmp_path / "mirrord.db", tmp_path / "backup.db"

    daemon = start_daemon(config)
    await daemon.wait_healthy()
    before = await daemon.wait_for_api(
        "/api/status", lambda facts: [r["status"] for r in facts["runs"]] == ["succeeded"]
    )
    # While the daemon runs and holds the WAL: SQLite's online backup, as the docs say.
    await asyncio.to_thread(
        subprocess.run, [_sqlite3(), str(database), f".backup {backup}"], check=True
    )
    copy = await mirrord_cli("status", "--database", f"sqlite:///{backup}", "--json")
    assert '"status": "succeeded"' in copy.stdout
    assert daemon.stop() == 0

    restore(backup, database)
    restarted = start_daemon(config)
    await restarted.wait_healthy()
    status, ready = await restarted.get("/readyz")
    assert (status, ready["ready"]) == (200, True)
    after = await restarted.wait_for_api(
        "/api/status", lambda facts: [r["status"] for r in facts["runs"]] == ["succeeded"] * 2
    )
    assert after["runs"][1] == before["runs"][0]
    assert after["sources"][0]["last_run_status"] == "succeeded"
    assert restarted.stop() == 0
