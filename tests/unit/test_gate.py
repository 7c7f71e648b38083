import asyncio
import time

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

import mirrord.registry.http as http_module
from mirrord.errors import RegistryPaused
from mirrord.manifests import OCI_MANIFEST, compute_digest
from mirrord.registry.client import RegistryClient
from mirrord.registry.http import Gate, RegistryHttp
from mirrord.registry.options import RegistryOptions, TLSMode

MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
    b'"digest":"sha256:' + b"0" * 64 + b'","size":2},"layers":[]}'
)


class FakeResponse:
    def __init__(self, **headers: str) -> None:
        self.headers = CIMultiDictProxy(CIMultiDict(headers))


def test_a_retry_after_pause_holds_every_request_class() -> None:
    gate = Gate(None)
    gate.pause(0.3)
    started = time.monotonic()
    asyncio.run(gate.wait("blob_get"))
    assert time.monotonic() - started >= 0.29
    assert gate.backoff_remaining == 0


def test_a_pause_longer_than_a_job_waits_defers_it_and_a_short_one_is_waited_out() -> None:
    gate = Gate(None, "reg.example", defer_after=30.0)
    gate.pause(600.0)
    with pytest.raises(RegistryPaused) as paused:
        asyncio.run(gate.wait("blob_get"))
    assert 599 < (paused.value.retry_after or 0) <= 600  # the job is due when the pause ends
    assert "reg.example" in str(paused.value)
    short = Gate(None, "reg.example", defer_after=30.0)
    short.pause(0.1)
    asyncio.run(short.wait("blob_get"))  # no error: waited in the slot


def test_the_docker_hub_quota_floor_pauses_manifest_pulls_only() -> None:
    http = RegistryHttp("docker.io", RegistryOptions(ratelimit_floor=10))
    http._observe_ratelimit(FakeResponse(**{"ratelimit-remaining": "50;w=21600"}))  # type: ignore[arg-type]
    assert http.gate._delay("manifest_get") <= 0
    http._observe_ratelimit(FakeResponse(**{"ratelimit-remaining": "9;w=21600"}))  # type: ignore[arg-type]
    assert http.gate._delay("manifest_get") > 60  # paused until the quota window moves on
    assert http.gate._delay("manifest_head") <= 0  # HEADs are free: they refresh the figure
    assert http.gate._delay("blob_get") <= 0
    http._observe_ratelimit(FakeResponse(**{"ratelimit-remaining": "80;w=21600"}))  # type: ignore[arg-type]
    assert http.gate._delay("manifest_get") <= 0  # a later HEAD saw the quota refilled


def test_without_a_floor_the_header_is_only_observed() -> None:
    http = RegistryHttp("docker.io", RegistryOptions())
    http._observe_ratelimit(FakeResponse(**{"ratelimit-remaining": "0;w=21600"}))  # type: ignore[arg-type]
    assert http.gate._delay("manifest_get") <= 0


class FakeHub:
    """Docker Hub's quota: a manifest GET spends a pull, a HEAD is free; both report what is
    left. `refill()` is the 6-hour window moving on."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.lowest = remaining

    def refill(self) -> None:
        self.remaining = 100

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response()

    async def manifest(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            if self.remaining <= 0:
                return web.Response(status=429)
            self.remaining -= 1
            self.lowest = min(self.lowest, self.remaining)
        headers = {
            "Content-Type": OCI_MANIFEST,
            "Docker-Content-Digest": compute_digest(MANIFEST),
            "ratelimit-remaining": f"{self.remaining};w=21600",
        }
        return web.Response(body=MANIFEST if request.method == "GET" else None, headers=headers)


async def test_after_a_quota_pause_waiting_pulls_look_with_a_head_before_spending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the pause ended, every waiting job's GET went out at once and emptied the quota
    the floor was there to keep (12 left, floor 10, 8 jobs: 4 left)."""
    monkeypatch.setattr(http_module, "QUOTA_PAUSE", 0.3)
    hub = FakeHub(remaining=12)
    app = web.Application()
    app.router.add_get("/v2/", hub.ping)
    app.router.add_route("*", "/v2/{name:.*}/manifests/{ref}", hub.manifest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    options = RegistryOptions(tls=TLSMode.PLAIN_HTTP, ratelimit_floor=10)
    client = RegistryClient(RegistryHttp(f"127.0.0.1:{port}", options))
    try:
        jobs = []
        for i in range(8):  # jobs start one after another, as the pool claims them
            jobs.append(asyncio.create_task(client.get_manifest(f"lib/app{i}", "v1")))
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # three pauses come and go; the window has not moved
        assert hub.remaining == 10  # nothing was spent below the floor
        hub.refill()
        await asyncio.wait_for(asyncio.gather(*jobs), 10)
    finally:
        await client.close()
        await runner.cleanup()
    assert hub.lowest == 10
