import asyncio
import time

from multidict import CIMultiDict, CIMultiDictProxy

from mirrord.registry.http import Gate, RegistryHttp
from mirrord.registry.options import RegistryOptions


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
