"""Progress for people and CI: `mirrord sync` and `mirrord copy` in a terminal and in a log,
plus the machine-readable `--report` and `--digestfile`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

from mirrord.cli.live import CopyPrinter
from mirrord.manifests import Descriptor
from mirrord.transports.base import BlobOutcome
from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import inspect_raw
from tests.ops.support import (
    MIRRORD,
    Samples,
    daemon_config,
    mirrord_cli,
    seed_images,
    skopeo_source,
)

ESCAPE = re.compile(r"\x1b\[")
PLAIN = ("--src-tls-verify=false", "--dest-tls-verify=false")


def run_in_terminal(*args: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run `mirrord ARGS` with stdout and stderr on a pseudo-terminal; (status, output)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(MIRRORD), *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=os.environ | {"TERM": "xterm-256color", "COLUMNS": "120"},
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout), b"".join(chunks).decode(errors="replace")


def _sources(tmp_path: Path, source: RegistryServer) -> list[dict[str, object]]:
    return [skopeo_source(tmp_path, "apps", source.host, {"app/one": [], "app/two": ["v1"]})]


def _seed(builder: ImageBuilder, source: RegistryServer, tmp_path: Path) -> None:
    base = builder.layer("base")
    seed_images(
        builder,
        source,
        tmp_path,
        {
            f"app/{name}": builder.image(name, layers=[base, builder.layer(name)])
            for name in ("one:v1", "one:v2", "two:v1")
        },
    )


async def test_sync_report_and_digestfile_name_every_tag(
    tmp_path: Path, make_registry: MakeRegistry, image_builder: ImageBuilder
) -> None:
    source, mirror = make_registry(), make_registry()
    _seed(image_builder, source, tmp_path)
    sources = [
        *_sources(tmp_path, source),
        skopeo_source(tmp_path, "missing", source.host, {"app/one": ["nope"]}),
    ]
    config = daemon_config(tmp_path, destination=mirror.host, sources=sources)
    report, digests = tmp_path / "report.json", tmp_path / "digests.txt"
    textfile = tmp_path / "mirrord.prom"

    done = await mirrord_cli(
        "sync", "--config", str(config), "--report", str(report), "--digestfile", str(digests),
        "--metrics-file", str(textfile), check=False,
    )  # fmt: skip

    assert done.returncode == 3, done.stderr  # one tag failed, the others were copied
    assert not ESCAPE.search(done.stderr), "no terminal codes in a log"
    assert "copied 127.0.0.1" in done.stderr
    assert re.search(r"Run \d+ failed: 3 copied, 0 unchanged, 1 failed", done.stderr)
    entries = {e["destination"]: e for e in json.loads(report.read_text())["jobs"]}
    for tag in ("one:v1", "one:v2", "two:v1"):
        entry = entries[f"{mirror.host}/mirror/{tag}"]
        assert entry["source"] == f"{source.host}/app/{tag}"
        assert entry["outcome"] == "copied"
        assert entry["state"] == "succeeded"
        assert entry["digest"].startswith("sha256:")
        assert entry["bytes"] >= 0
        assert entry["duration"] > 0
    failed = entries[f"{mirror.host}/mirror/one:nope"]
    assert (failed["state"], failed["reason"]) == ("failed", "manifest_unknown")
    lines = digests.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        digest, ref = line.split(" ")
        registry_ref = ref.removeprefix(f"docker://{mirror.host}/")
        assert entries[ref.removeprefix("docker://")]["digest"] == digest
        raw = await asyncio.to_thread(inspect_raw, mirror, registry_ref)
        assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()

    # The timer's way to alert: node_exporter's textfile collector reads what the run wrote.
    metrics = Samples.parse(textfile.read_text())
    assert metrics.value("mirrord_tags_total", result="copied") == 3
    assert metrics.value("mirrord_jobs_finished_total", outcome="failed") == 1
    assert metrics.value("mirrord_source_last_run_status", source="apps", status="succeeded") == 1
    assert metrics.value("mirrord_source_last_run_status", source="missing", status="failed") == 1
    assert metrics.value("mirrord_source_last_success_timestamp_seconds", source="apps") > 0
    assert metrics.value("mirrord_destination_written_bytes_total", registry=mirror.host) > 0

    again = await mirrord_cli("sync", "--config", str(config), "--report", str(report), check=False)
    assert re.search(r"0 copied, 3 unchanged, 1 failed", again.stderr), again.stderr
    outcomes = [e["outcome"] for e in json.loads(report.read_text())["jobs"] if e["outcome"]]
    assert sorted(outcomes) == ["listed", "skipped", "skipped", "skipped"]


async def test_sync_in_a_terminal_shows_a_live_line(
    tmp_path: Path, make_registry: MakeRegistry, image_builder: ImageBuilder
) -> None:
    source, mirror = make_registry(), make_registry()
    _seed(image_builder, source, tmp_path)
    config = daemon_config(tmp_path, destination=mirror.host, sources=_sources(tmp_path, source))
    status, output = await asyncio.to_thread(run_in_terminal, "sync", "--config", str(config))
    assert status == 0, output
    assert "syncing:" in output
    assert "\x1b[?25l" in output  # the live display hid the cursor ...
    assert output.rfind("\x1b[?25h") > output.rfind("\x1b[?25l")  # ... and showed it again
    assert "3 copied, 0 unchanged, 0 failed" in output


async def test_copy_prints_blob_lines_in_a_log_and_a_live_line_in_a_terminal(
    tmp_path: Path, make_registry: MakeRegistry, image_builder: ImageBuilder
) -> None:
    source, mirror = make_registry(), make_registry()
    _seed(image_builder, source, tmp_path)
    src, dst = f"docker://{source.host}/app/one:v1", f"docker://{mirror.host}/copy/one:v1"

    done = await mirrord_cli("copy", *PLAIN, src, dst)
    assert not ESCAPE.search(done.stdout + done.stderr)
    assert len(re.findall(r"^Copying blob sha256:\w+ \(.+\): uploaded$", done.stdout, re.M)) == 3
    assert re.search(rf"^Copied {src} -> {dst} \(sha256:\w+, ", done.stdout, re.M)

    status, output = await asyncio.to_thread(
        run_in_terminal, "copy", *PLAIN, src, f"docker://{mirror.host}/copy/again:v1"
    )
    assert status == 0, output
    assert "copying:" in output
    assert "Copying blob" in output
    assert output.rfind("\x1b[?25h") > output.rfind("\x1b[?25l")
    assert "Copied " in output


def test_plain_progress_lines_come_periodically(capsys: pytest.CaptureFixture[str]) -> None:
    printer = CopyPrinter(quiet=False, tty=False, every=0.0)
    printer.blob(
        Descriptor("application/octet-stream", "sha256:" + "a" * 64, 2048), BlobOutcome.UPLOADED
    )
    printer.moved(2048)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Copying blob sha256:aaaaaaaaaaaa (2.0 KiB): uploaded"
    assert lines[-1].startswith("progress: 1 blobs done (1 uploaded); 2.0 KiB written (")
    quiet = CopyPrinter(quiet=True, tty=True)
    quiet.moved(10)
    assert capsys.readouterr().out == ""
