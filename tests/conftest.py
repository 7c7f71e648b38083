"""Fixtures shared by every test. One section per area; add new areas as new sections.

Real parts, not mocks (see TESTING.md): registries are `docker-registry serve` processes, the
peer is skopeo, faults come from a proxy on a real socket. Every process and thread a fixture
starts is stopped at teardown, whether the test passed or not.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests/` is not a package, so pytest puts `tests/` itself on sys.path. Put the repository
# root there too, so the harness imports as `tests.harness`, the name mypy resolves.
if (_root := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _root)

from tests.harness.faultproxy import FaultProxyPool, MakeFaultProxy
from tests.harness.images import ImageBuilder
from tests.harness.pki import Pki
from tests.harness.registry import MakeRegistry, RegistryPool, RegistryServer
from tests.harness.tokenserver import TokenServer

# ------------------------------------------------------------------------------------------
# Harness: certificates and the token server (one per session)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's test CA (server, client and token-signing certificates)."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def token_server(pki: Pki) -> Iterator[TokenServer]:
    """The Bearer token server behind every `token` registry; user `mirror` may do anything.

    Shared by the session: tell requests apart with `token_server.requests(registry.service)`.
    """
    with TokenServer(pki) as server:
        yield server


# ------------------------------------------------------------------------------------------
# Registries
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_registry(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, token_server: TokenServer
) -> Iterator[MakeRegistry]:
    """`shared_registry(variant)`: one registry per variant for the whole session.

    For sources that tests only add to; use a `unique_repo` so tests never collide.
    """
    pool = RegistryPool(tmp_path_factory.mktemp("shared-registries"), pki, token_server)
    try:
        yield pool.shared
    finally:
        pool.close()


@pytest.fixture(scope="session")
def source_registry(shared_registry: MakeRegistry) -> RegistryServer:
    """The session's anonymous registry, for seeding source images."""
    return shared_registry("anonymous")


@pytest.fixture
def make_registry(tmp_path: Path, pki: Pki, token_server: TokenServer) -> Iterator[MakeRegistry]:
    """`make_registry(variant="anonymous")`: a fresh, empty registry, stopped after the test."""
    pool = RegistryPool(tmp_path / "registries", pki, token_server)
    try:
        yield pool.start
    finally:
        pool.close()


@pytest.fixture
def unique_repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses, e.g. `t/test-foo-1a2b3c4d`."""
    nodeid = request.node.nodeid
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t/{name}-{hashlib.sha256(nodeid.encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------


@pytest.fixture
def image_builder(request: pytest.FixtureRequest, tmp_path: Path) -> ImageBuilder:
    """A deterministic image builder seeded by the test's id (stable across runs)."""
    return ImageBuilder(request.node.nodeid, tmp_path / "image-store")


# ------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------


@pytest.fixture
def fault_proxy() -> Iterator[MakeFaultProxy]:
    """`fault_proxy(registry_or_url, delay=0.0, bandwidth=None)`: a recording, fault-injecting
    proxy in front of a registry, stopped after the test."""
    pool = FaultProxyPool()
    try:
        yield pool.start
    finally:
        pool.close()
