"""The HTTP endpoints: the bearer token, /healthz, /readyz and the /api answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mirrord.metrics import Metrics
from mirrord.secret import Secret
from mirrord.store import Store, migrate
from mirrord.web import WebState, make_app, serve
from tests.harness.registry import MakeRegistry
from tests.ops.conftest import StartDaemon
from tests.ops.support import daemon_config, free_port, skopeo_source

TOKEN = "canary-token-6f1d0c"


async def test_token_guards_metrics_and_api_but_not_the_probes(
    tmp_path: Path, make_registry: MakeRegistry, start_daemon: StartDaemon
) -> None:
    source, mirror = make_registry(), make_registry()
    token_file = tmp_path / "http.token"
    token_file.write_text(f"{TOKEN}\n")
    token_file.chmod(0o600)
    sources = [skopeo_source(tmp_path, "none", source.host, {"app/none": ["v1"]})]
    config = daemon_config(
        tmp_path,
        destination=mirror.host,
        sources=sources,
        http={"token-file": "http.token"},
    )
    daemon = start_daemon(config)
    await daemon.wait_healthy()
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/api/status", "/api/jobs"):
            for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                async with session.get(daemon.url(path), headers=header) as resp:
                    assert resp.status == 401, (path, header)
                    assert TOKEN not in await resp.text()
            good = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(daemon.url(path), headers=good) as resp:
                assert resp.status == 200, path
        for path in ("/healthz", "/readyz"):
            async with session.get(daemon.url(path)) as resp:
                assert resp.status == 200, path
    assert daemon.stop() == 0
    assert TOKEN not in daemon.log_text()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path / 'web.db'}") as opened:
        yield opened


async def _serve(state: WebState) -> tuple[web.AppRunner, str]:
    port = free_port()
    runner = await serve(make_app(state), "127.0.0.1", port)
    return runner, f"http://127.0.0.1:{port}"


async def _get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_readyz_names_the_check_that_fails(store: Store) -> None:
    scheduler = {"running": True}
    runner, base = await _serve(WebState(store, Metrics(), lambda: scheduler["running"]))
    try:
        assert await _get(f"{base}/readyz") == (
            200,
            {"ready": True, "checks": {"database": True, "migrations": True, "scheduler": True}},
        )
        scheduler["running"] = False
        status, body = await _get(f"{base}/readyz")
        assert (status, body["checks"]) == (
            503,
            {"database": True, "migrations": True, "scheduler": False},
        )
        scheduler["running"] = True
        await migrate.downgrade(store.db, "base")
        status, body = await _get(f"{base}/readyz")
        assert (status, body["checks"]) == (
            503,
            {"database": True, "migrations": False, "scheduler": True},
        )
        assert await _get(f"{base}/healthz") == (200, {"status": "ok"})
    finally:
        await runner.cleanup()


async def test_api_jobs_refuses_unknown_states(store: Store) -> None:
    runner, base = await _serve(WebState(store, Metrics(), lambda: True, Secret(TOKEN)))
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{base}/api/jobs?state=bogus") as resp:
                assert resp.status == 400
            async with session.get(f"{base}/api/jobs?state=failed&limit=5") as resp:
                assert (resp.status, await resp.json()) == (200, {"jobs": []})
    finally:
        await runner.cleanup()


async def test_api_jobs_refuses_limits_below_one_and_beyond_any_integer(store: Store) -> None:
    runner, base = await _serve(WebState(store, Metrics(), lambda: True, Secret(TOKEN)))
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            for limit in ("-1", "0", "-9223372036854775809", "99999999999999999999999"):
                async with session.get(f"{base}/api/jobs?limit={limit}") as resp:
                    expected = 200 if limit.startswith("9") else 400  # huge: capped at 1000
                    assert resp.status == expected, limit
    finally:
        await runner.cleanup()


async def test_a_token_header_with_a_stray_byte_is_refused_not_an_error(store: Store) -> None:
    runner, base = await _serve(WebState(store, Metrics(), lambda: True, Secret(TOKEN)))
    try:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /api/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"401"
    finally:
        await runner.cleanup()
