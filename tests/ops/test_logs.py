"""Logs: JSON lines from the daemon, text for people, secrets scrubbed in one place."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrord.logs import held_records, replay, resolve_format, setup_logging
from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry
from tests.ops.conftest import StartDaemon
from tests.ops.support import daemon_config, seed_images, skopeo_source, write_json

SIGNED = (
    "https://bucket.s3.example.com/blob?X-Amz-Credential=AKIDCANARY"
    "&X-Amz-Signature=sigcanary0123&digest=sha256:abc"
)
CANARIES = ("AKIDCANARY", "sigcanary0123", "tokencanary0123456789")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_everything(log: logging.Logger) -> None:
    log.warning("redirected to %s", SIGNED, extra={"url": SIGNED, "job": 7})
    try:
        raise RuntimeError("token request with Authorization: Bearer tokencanary0123456789")
    except RuntimeError:
        log.exception("failed")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_messages_fields_and_tracebacks_are_redacted(
    fmt: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    setup_logging("info", fmt)
    _log_everything(logging.getLogger("mirrord.test"))
    err = capsys.readouterr().err
    for canary in CANARIES:
        assert canary not in err
    assert "X-Amz-Signature=REDACTED" in err
    assert "digest=sha256:abc" in err  # protocol parameters stay readable
    assert "Bearer REDACTED" in err
    if fmt == "json":
        first = json.loads(err.splitlines()[0])
        assert first["level"] == "warning"
        assert first["job"] == 7
        assert first["url"].endswith("X-Amz-Signature=REDACTED&digest=sha256:abc")
    else:
        assert err.startswith("WARNING redirected to https://bucket")
        assert "job=7" in err.splitlines()[0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_text_at_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format("auto", _Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Terminal()) == "json"


def test_records_held_during_setup_are_written_once_in_the_final_format(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    setup_logging("warning", "text")
    with held_records() as held:
        logging.getLogger("mirrord.config").warning("tls-verify: false for %s", "reg:5000")
    assert capsys.readouterr().err == ""
    setup_logging("info", "json")
    replay(held)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"] == "tls-verify: false for reg:5000"


def test_records_held_by_a_failed_setup_are_not_lost(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    def load() -> None:
        with held_records():
            logging.getLogger("mirrord.config").warning("first problem")
            raise ValueError("bad config")

    setup_logging("warning", "text")
    with pytest.raises(ValueError, match="bad config"):
        load()
    assert capsys.readouterr().err == "WARNING first problem\n"


async def test_daemon_writes_json_lines_and_no_secret_anywhere(
    tmp_path: Path,
    make_registry: MakeRegistry,
    image_builder: ImageBuilder,
    start_daemon: StartDaemon,
) -> None:
    source, mirror = make_registry(), make_registry("basic")
    assert mirror.creds is not None
    password = mirror.creds.password
    seed_images(image_builder, source, tmp_path, {"app/one:v1": image_builder.image("one")})
    secret_file = tmp_path / "mirror.pass"
    secret_file.write_text(password + "\n")
    secret_file.chmod(0o600)
    sources = [
        skopeo_source(tmp_path, "apps", source.host, {"app/one": ["v1"]}),
        skopeo_source(tmp_path, "gone", source.host, {"app/gone": ["v1"]}),
    ]
    config = daemon_config(tmp_path, destination=mirror.host, sources=sources)
    spec = json.loads(config.read_text())
    spec["destination"]["credentials"] = {
        "username": mirror.creds.username,
        "password-file": str(secret_file),
    }
    write_json(config, spec)

    daemon = start_daemon(config)
    await daemon.wait_healthy()
    await daemon.wait_for_metrics(
        lambda s: (
            s.value("mirrord_source_last_run_status", status="running") == 0
            and s.value("mirrord_source_last_run_status") == 2
        )
    )
    _, metrics = await daemon.get("/metrics")
    _, status = await daemon.get("/api/status")
    _, jobs = await daemon.get("/api/jobs")
    assert daemon.stop() == 0

    lines = daemon.log_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    tls_warnings = [r for r in records if "tls-verify: false" in r["msg"]]
    assert len(tls_warnings) == 2  # one per source file, logged once though loaded early
    outcomes = {r["source"]: r for r in records if r["logger"] == "mirrord.worker"}
    assert outcomes["apps"]["outcome"] == "copied"
    assert outcomes["apps"]["bytes"] > 0
    assert outcomes["gone"]["reason"] in ("name_unknown", "manifest_unknown")
    basic = base64.b64encode(mirror.creds.joined().encode()).decode()
    database = (tmp_path / "mirrord.db").read_bytes()
    for place, text in (
        ("log", daemon.log_text()),
        ("metrics", metrics),
        ("status", json.dumps(status)),
        ("jobs", json.dumps(jobs)),
        ("database", database.decode("latin-1")),
    ):
        assert password not in text, place
        assert basic not in text, place
