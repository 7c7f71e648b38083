"""The harness itself works: each registry variant with real skopeo, the token flow, the test
images (digests, media types, determinism), and every fault the proxy injects."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import re
import tarfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography import x509

from tests.harness import registry as registry_module
from tests.harness.faultproxy import FaultProxy, MakeFaultProxy
from tests.harness.images import MANIFEST_MEDIA_TYPES, Image, ImageBuilder, Layout
from tests.harness.pki import Pki
from tests.harness.registry import (
    Credentials,
    MakeRegistry,
    RegistryPool,
    RegistryServer,
    RegistryUnavailable,
)
from tests.harness.skopeo import (
    SkopeoError,
    copy_to_oci,
    inspect_raw,
    list_tags,
    run_skopeo,
    seed,
)
from tests.harness.tokenserver import Access, TokenServer, grant

MiB = 1 << 20
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
WRONG = Credentials("mirror", "not-the-password")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_of(builder: ImageBuilder, tmp_path: Path, tags: dict[str, Image]) -> Layout:
    return builder.write_layout(tmp_path / "layout", tags)


def seeded(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryServer, repo: str, image: Image
) -> None:
    seed(layout_of(builder, tmp_path, {"v1": image}), "v1", registry, f"{repo}:v1")


async def _read_into(buffer: bytearray, http: aiohttp.ClientSession, url: str) -> None:
    async with http.get(url) as response:
        async for chunk in response.content.iter_any():
            buffer += chunk


async def get_manifest(
    http: aiohttp.ClientSession, registry: RegistryServer, repo: str, ref: str
) -> tuple[int, str, bytes]:
    url = f"{registry.url}/v2/{repo}/manifests/{ref}"
    async with http.get(url, headers={"Accept": ACCEPT}) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


# ------------------------------------------------------------------------------------------
# Registry variants, with skopeo as the client
# ------------------------------------------------------------------------------------------


def test_anonymous_registry_round_trips_an_image(
    make_registry: MakeRegistry, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    registry = make_registry("anonymous")
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, registry, "app", image)
    assert inspect_raw(registry, "app:v1") == image.manifest
    assert list_tags(registry, "app") == ["v1"]
    assert all(registry.blob_path(digest).exists() for digest in image.blobs)


def test_basic_registry_accepts_only_the_right_password(
    make_registry: MakeRegistry, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    registry = make_registry("basic")
    image = image_builder.image("app")
    layout = layout_of(image_builder, tmp_path, {"v1": image})
    seed(layout, "v1", registry, "app:v1", creds=registry.creds)
    assert inspect_raw(registry, "app:v1", creds=registry.creds) == image.manifest
    with pytest.raises(SkopeoError, match=r"(?i)unauthorized") as refused:
        inspect_raw(registry, "app:v1", creds=WRONG)
    assert WRONG.password not in str(refused.value)
    with pytest.raises(SkopeoError, match=r"(?i)unauthorized"):
        seed(layout, "v1", registry, "app:anonymous")


def test_token_registry_accepts_only_tokens_won_with_the_right_password(
    make_registry: MakeRegistry,
    token_server: TokenServer,
    image_builder: ImageBuilder,
    tmp_path: Path,
) -> None:
    registry = make_registry("token")
    image = image_builder.image("app")
    layout = layout_of(image_builder, tmp_path, {"v1": image})
    seed(layout, "v1", registry, "app:v1", creds=registry.creds)
    assert inspect_raw(registry, "app:v1", creds=registry.creds) == image.manifest
    pushes = [r for r in token_server.requests(registry.service) if r.status == 200]
    assert any(r.user == "mirror" and r.granted_actions("app") == {"pull", "push"} for r in pushes)

    with pytest.raises(SkopeoError, match=r"(?i)unauthorized"):
        seed(layout, "v1", registry, "app:v2", creds=WRONG)
    assert token_server.requests(registry.service)[-1].status == 401
    assert list_tags(registry, "app", creds=registry.creds) == ["v1"]


def test_token_server_lets_anonymous_clients_pull_only_where_allowed(
    shared_registry: MakeRegistry,
    token_server: TokenServer,
    image_builder: ImageBuilder,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    registry = shared_registry("token")
    image = image_builder.image("app")
    layout = layout_of(image_builder, tmp_path, {"v1": image})
    seed(layout, "v1", registry, f"{unique_repo}:v1", creds=registry.creds)
    with pytest.raises(SkopeoError, match=r"(?i)unauthorized|denied"):
        inspect_raw(registry, f"{unique_repo}:v1")
    with token_server.anonymous_pull(unique_repo):
        assert inspect_raw(registry, f"{unique_repo}:v1") == image.manifest
        with pytest.raises(SkopeoError, match=r"(?i)unauthorized|denied"):
            seed(layout, "v1", registry, f"{unique_repo}:pushed-anonymously")
    anonymous = [r for r in token_server.requests(registry.service) if r.user is None]
    assert any(r.granted_actions(unique_repo) == {"pull"} for r in anonymous)


async def test_one_token_carries_push_on_one_repo_and_pull_on_another(
    shared_registry: MakeRegistry,
    token_server: TokenServer,
    image_builder: ImageBuilder,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    registry = shared_registry("token")
    assert registry.creds is not None
    source, dest = f"{unique_repo}/source", f"{unique_repo}/dest"
    image = image_builder.image("app")
    seed(layout_of(image_builder, tmp_path, {"v1": image}), "v1", registry, f"{source}:v1",
         creds=registry.creds)  # fmt: skip
    layer = next(iter(image.blobs))
    scopes = [f"repository:{dest}:pull,push", f"repository:{source}:pull", "registry:catalog:*"]
    auth = {"Authorization": registry.creds.basic_auth()}
    async with aiohttp.ClientSession() as http:
        query = [("service", registry.service)] + [("scope", s) for s in scopes]
        async with http.get(token_server.realm, params=query, headers=auth) as response:
            token = (await response.json())["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        mount = f"{registry.url}/v2/{dest}/blobs/uploads/?mount={layer}&from={source}"
        async with http.post(mount, headers=bearer) as response:
            assert response.status == 201  # cross-repository mount: pull on source, push on dest
        async with http.post(f"{registry.url}/v2/{source}/blobs/uploads/", headers=bearer) as resp:
            assert resp.status == 401  # no push on the source
        async with http.get(f"{registry.url}/v2/_catalog?n=1000", headers=bearer) as response:
            assert source in (await response.json())["repositories"]
    last = token_server.requests(registry.service)[-1]
    assert last.granted_actions(dest) == {"pull", "push"}
    assert last.granted_actions(source) == {"pull"}


@pytest.mark.parametrize(
    ("scope", "granted"),
    [
        ("repository:team/app:pull,push,delete", "repository:team/app:pull,push"),
        ("repository:team/app:push", "repository:team/app:push"),
        ("repository:other/app:pull", "repository:other/app:pull"),
        ("repository:other/app:push", None),
        ("registry:catalog:*", None),
    ],
)
def test_grant_is_the_intersection_of_asked_and_allowed(scope: str, granted: str | None) -> None:
    allowed = {"team/*": frozenset({"pull", "push"}), "*": frozenset({"pull"})}
    result = grant(Access.parse(scope), allowed, catalog=False)
    assert (None if result is None else str(result)) == granted


def test_tokens_are_es256_jwts_signed_by_a_certificate_of_the_test_ca(
    token_server: TokenServer, pki: Pki
) -> None:
    status, body = token_server.handle(
        Credentials("mirror", token_server.password).basic_auth(),
        "service=svc&scope=repository:a/b:pull,push,delete&scope=repository:c:pull",
    )
    assert status == 200
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == token_server.lifetime
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256"
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()))
    claims = jwt.decode(
        body["token"],
        leaf.public_key(),  # type: ignore[arg-type]
        algorithms=["ES256"],
        audience="svc",
        issuer=token_server.issuer,
    )
    assert set(claims) == {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"}
    assert claims["exp"] - claims["iat"] == token_server.lifetime
    assert claims["access"] == [
        {"type": "repository", "name": "a/b", "actions": ["pull", "push", "delete"]},
        {"type": "repository", "name": "c", "actions": ["pull"]},
    ]


def test_tls_registry_is_trusted_only_with_the_test_ca(
    make_registry: MakeRegistry, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    registry = make_registry("tls")
    assert registry.cert_dir is not None
    assert sorted(p.name for p in registry.cert_dir.iterdir()) == ["ca.crt"]
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, registry, "app", image)
    assert inspect_raw(registry, "app:v1") == image.manifest
    no_ca = tmp_path / "no-ca"
    no_ca.mkdir()
    with pytest.raises(SkopeoError, match="unknown authority"):
        run_skopeo("inspect", "--raw", "--cert-dir", str(no_ca), f"docker://{registry.host}/app:v1")


def test_tls_client_registry_requires_a_client_certificate(
    make_registry: MakeRegistry, pki: Pki, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    registry = make_registry("tls-client")
    assert registry.cert_dir is not None
    expected = ["ca.crt", "client.cert", "client.key"]
    assert sorted(p.name for p in registry.cert_dir.iterdir()) == expected
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, registry, "app", image)
    assert inspect_raw(registry, "app:v1") == image.manifest
    ca_only = pki.certs_d("ca-only")
    with pytest.raises(SkopeoError, match="bad certificate"):
        run_skopeo(
            "inspect", "--raw", "--cert-dir", str(ca_only), f"docker://{registry.host}/app:v1"
        )


def test_registry_start_failure_reports_the_registry_log(pki: Pki, tmp_path: Path) -> None:
    server = RegistryServer(tmp_path / "broken", "tls", pki=pki)
    assert server.server_cert is not None
    server.server_cert.key.unlink()
    key_name = re.escape(server.server_cert.key.name)
    with pytest.raises(RegistryUnavailable, match=rf"(?s)did not start.*{key_name}"):
        server.start()
    assert not server.running


def test_missing_registry_binary_is_an_error_not_a_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(registry_module, "BINARY", "docker-registry-that-is-not-installed")
    with pytest.raises(RegistryUnavailable, match="not on PATH"):
        RegistryServer(tmp_path / "r").start()


def test_registry_pool_stops_every_registry_and_restarts_keep_content(
    pki: Pki, token_server: TokenServer, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    pool = RegistryPool(tmp_path / "pool", pki, token_server)
    first, second = pool.start(), pool.shared("anonymous")
    assert pool.shared("anonymous") is second
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, first, "app", image)
    first.restart()
    assert inspect_raw(first, "app:v1") == image.manifest
    pool.close()
    assert not first.running
    assert not second.running


async def test_tags_written_on_disk_are_served_in_full(
    make_registry: MakeRegistry, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    registry = make_registry()
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, registry, "app", image)
    for n in range(600):
        registry.tag_on_disk("app", f"t{n:03}", image.digest)
    assert len(list_tags(registry, "app")) == 601
    assert inspect_raw(registry, "app:t599") == image.manifest
    url = f"{registry.url}/v2/app/tags/list?n=100"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        page = (await response.json())["tags"]
        link = response.headers.get("Link", "")
    # Distribution 2.8 ignores `n` on tags/list (paging came with v3): tag-paging tests need
    # another server; this one always answers with every tag and no Link header.
    assert len(page) == 601
    assert link == ""


# ------------------------------------------------------------------------------------------
# Test images: digests and media types survive seeding; builds are deterministic
# ------------------------------------------------------------------------------------------

IMAGE_KINDS: dict[str, Callable[[ImageBuilder], Image]] = {
    "docker-schema2": lambda b: b.image("app", kind="docker"),
    "oci-manifest": lambda b: b.image("app", kind="oci"),
    "docker-manifest-list": lambda b: b.index("multi", kind="docker"),
    "oci-index-with-attestations": lambda b: b.index("multi", kind="oci", attestations=True),
}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
async def test_seeded_images_keep_their_digests_and_media_types(
    kind: str,
    source_registry: RegistryServer,
    image_builder: ImageBuilder,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = IMAGE_KINDS[kind](image_builder)
    seeded(image_builder, tmp_path, source_registry, unique_repo, image)
    raw = inspect_raw(source_registry, f"{unique_repo}:v1")
    assert sha256(raw) == image.digest
    async with aiohttp.ClientSession() as http:
        for manifest in image.walk():
            status, content_type, body = await get_manifest(
                http, source_registry, unique_repo, manifest.digest
            )
            assert (status, content_type, body) == (200, manifest.media_type, manifest.manifest)
    copy_to_oci(source_registry, f"{unique_repo}:v1", tmp_path / "pulled")  # verifies digests


def test_artifacts_signatures_and_empty_layers_keep_their_digests(
    source_registry: RegistryServer, image_builder: ImageBuilder, unique_repo: str, tmp_path: Path
) -> None:
    app = image_builder.image("app", layers=[image_builder.empty_layer()])
    sig_tag, signature = image_builder.signature(app)
    tags = {"app": app, sig_tag: signature, "artifact": image_builder.artifact("sbom")}
    layout = layout_of(image_builder, tmp_path, tags)
    for tag in tags:
        seed(layout, tag, source_registry, f"{unique_repo}:{tag}")
    assert sorted(list_tags(source_registry, unique_repo)) == sorted(tags)
    for tag, image in tags.items():
        assert inspect_raw(source_registry, f"{unique_repo}:{tag}") == image.manifest


def build_everything(seed: str, where: Path) -> dict[str, bytes]:
    builder = ImageBuilder(seed, where / "store")
    base = builder.layer("base")
    tags = {
        "docker": builder.image("a", layers=[base, builder.layer("a")], kind="docker"),
        "oci": builder.image("b", layers=[base, builder.empty_layer()]),
        "list": builder.index("l", kind="docker"),
        "index": builder.index("i", attestations=True),
        "artifact": builder.artifact("x"),
        "sized": builder.image("s", layers=[builder.layer("s", size=3 * MiB)]),
    }
    layout = builder.write_layout(where / "layout", tags)
    return {
        str(path.relative_to(layout.path)): path.read_bytes()
        for path in sorted(layout.path.rglob("*"))
        if path.is_file()
    }


def test_layouts_are_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    first = build_everything("seed-a", tmp_path / "one")
    assert build_everything("seed-a", tmp_path / "two") == first
    other = build_everything("seed-b", tmp_path / "three")
    empty_layer = ImageBuilder("any", tmp_path / "empty").empty_layer().digest
    assert first["index.json"] != other["index.json"]
    seed_independent = {_blob_path(sha256(b"{}")), _blob_path(empty_layer)}
    assert {
        name for name in set(first) & set(other) if name.startswith("blobs/")
    } == seed_independent


def _blob_path(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


def test_images_sharing_a_base_layer_share_its_bytes(
    image_builder: ImageBuilder, tmp_path: Path
) -> None:
    base = image_builder.layer("base")
    first = image_builder.image("a", layers=[base, image_builder.layer("a")])
    second = image_builder.image("b", layers=[base, image_builder.layer("b")], kind="docker")
    layout = layout_of(image_builder, tmp_path, {"a": first, "b": second})
    assert base.digest in first.blobs
    assert base.digest in second.blobs
    assert layout.total_bytes == first.total_bytes + second.total_bytes - base.size
    assert (layout.path / "blobs/sha256" / base.digest[7:]).stat().st_nlink >= 2  # hard-linked


def test_empty_layer_is_a_valid_tar_with_no_entries(image_builder: ImageBuilder) -> None:
    layer = image_builder.empty_layer()
    path = image_builder.store / "sha256" / layer.digest[7:]
    with tarfile.open(path, "r:gz") as tar:
        assert tar.getmembers() == []
    assert sha256(gzip.decompress(path.read_bytes())) == layer.diff_id


def test_sized_layer_is_streamed_to_disk_not_held_in_memory(image_builder: ImageBuilder) -> None:
    size = 64 * MiB  # four times the memory bound below
    tracemalloc.start()
    try:
        layer = image_builder.layer("big", size=size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB
    path = image_builder.store / "sha256" / layer.digest[7:]
    assert path.stat().st_size == layer.size > size
    with path.open("rb") as blob:
        assert "sha256:" + hashlib.file_digest(blob, "sha256").hexdigest() == layer.digest
    with gzip.open(path, "rb") as tar_stream:
        assert "sha256:" + hashlib.file_digest(tar_stream, "sha256").hexdigest() == layer.diff_id


# ------------------------------------------------------------------------------------------
# Fault proxy
# ------------------------------------------------------------------------------------------


@pytest.fixture
def blob_source(
    source_registry: RegistryServer, image_builder: ImageBuilder, unique_repo: str, tmp_path: Path
) -> tuple[str, int]:
    """A 256 KiB-ish layer in the shared source registry: (blob path under /v2, size)."""
    layer = image_builder.layer("payload", size=256 * 1024)
    image = image_builder.image("app", layers=[layer])
    seeded(image_builder, tmp_path, source_registry, unique_repo, image)
    return f"/v2/{unique_repo}/blobs/{layer.digest}", layer.size


def test_fault_proxy_relays_push_and_pull_verbatim_and_records_them(
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    image_builder: ImageBuilder,
    tmp_path: Path,
) -> None:
    registry = make_registry()
    proxy = fault_proxy(registry)
    image = image_builder.index("multi", kind="docker")
    seed(layout_of(image_builder, tmp_path, {"v1": image}), "v1", proxy, "app:v1")
    assert inspect_raw(proxy, "app:v1") == image.manifest
    assert proxy.count(method="PUT", path=r"/blobs/uploads/") == len(image.blobs)
    assert proxy.bytes_uploaded(path=r"/blobs/uploads/") == image.total_bytes
    assert proxy.count(method="PUT", path=r"/manifests/") == len(image.manifests)
    assert all(record.forwarded for record in proxy.records())
    copy_to_oci(proxy, "app:v1", tmp_path / "pulled")
    blob_gets = proxy.records(method="GET", path=r"/blobs/sha256:")
    assert sum(r.response_bytes for r in blob_gets) == image.total_bytes


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, 2), (429, "date"), (429, None), (500, None), (502, None), (503, 30)],
)
async def test_injected_status_is_answered_without_reaching_the_registry(
    source_registry: RegistryServer,
    fault_proxy: MakeFaultProxy,
    status: int,
    retry_after: int | str | None,
) -> None:
    proxy = fault_proxy(source_registry)
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    value = when if isinstance(retry_after, str) else retry_after
    proxy.respond(status, method="GET", path=r"^/v2/$", times=1, retry_after=value)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{proxy.url}/v2/") as response:
            assert response.status == status
            header = response.headers.get("Retry-After")
            body = await response.json()
        async with http.get(f"{proxy.url}/v2/") as again:
            assert again.status == 200
    if retry_after == "date":
        assert header is not None
        assert parsedate_to_datetime(header) == when
    else:
        assert header == (None if retry_after is None else str(retry_after))
    assert body["errors"][0]["code"] == ("TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE")
    first, second = proxy.records()
    assert (first.status, first.fault, first.forwarded) == (status, "respond", False)
    assert (second.status, second.fault, second.forwarded) == (200, None, True)


def test_skopeo_waits_out_a_retry_after_the_proxy_sends(
    source_registry: RegistryServer,
    fault_proxy: MakeFaultProxy,
    image_builder: ImageBuilder,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, source_registry, unique_repo, image)
    proxy = fault_proxy(source_registry)
    proxy.respond(429, method="GET", path=r"/manifests/", times=1, retry_after=1)
    assert inspect_raw(proxy, f"{unique_repo}:v1") == image.manifest
    first, second = proxy.times(method="GET", path=r"/manifests/")
    assert second - first >= 1.0
    assert [r.status for r in proxy.records(path=r"/manifests/")] == [429, 200]


@pytest.mark.parametrize(("after_bytes", "hard"), [(1000, True), (1000, False), (0, True)])
async def test_reset_cuts_the_response_after_the_requested_bytes(
    source_registry: RegistryServer,
    fault_proxy: MakeFaultProxy,
    blob_source: tuple[str, int],
    after_bytes: int,
    hard: bool,
) -> None:
    path, size = blob_source
    proxy = fault_proxy(source_registry)
    proxy.reset(after_bytes=after_bytes, hard=hard, path=r"/blobs/sha256:", times=1)
    received = bytearray()
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        with pytest.raises(aiohttp.ClientError):
            await _read_into(received, http, proxy.url + path)
        async with http.get(proxy.url + path) as response:
            assert len(await response.read()) == size  # only the first match was cut
    assert len(received) == after_bytes
    assert proxy.records()[0].error == "connection cut"


async def test_reset_before_the_response_sends_no_byte(
    source_registry: RegistryServer, fault_proxy: MakeFaultProxy
) -> None:
    # A raw socket: aiohttp would quietly retry an idempotent request cut this way.
    proxy = fault_proxy(source_registry)
    proxy.reset(after_bytes=None, path=r"^/v2/$")
    host, port = proxy.host.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET /v2/ HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode())
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await reader.read()
    finally:
        writer.close()
    assert proxy.records()[0].error == "connection cut"


async def test_stall_holds_the_response_until_the_client_gives_up(
    source_registry: RegistryServer, fault_proxy: MakeFaultProxy, blob_source: tuple[str, int]
) -> None:
    path, size = blob_source
    proxy = fault_proxy(source_registry)
    proxy.stall(path=r"/blobs/sha256:", times=1)  # before the headers, indefinitely
    proxy.stall(after_bytes=100, seconds=0.3, path=r"/blobs/sha256:", times=1)
    impatient = aiohttp.ClientTimeout(total=None, sock_read=0.3)
    async with aiohttp.ClientSession(auto_decompress=False, timeout=impatient) as http:
        with pytest.raises(asyncio.TimeoutError):
            await _read_into(bytearray(), http, proxy.url + path)
        started = time.monotonic()
        async with http.get(proxy.url + path, timeout=aiohttp.ClientTimeout(total=10)) as response:
            assert len(await response.read()) == size
        assert time.monotonic() - started >= 0.3
    async with asyncio.timeout(5):
        while proxy.records()[0].error is None:
            await asyncio.sleep(0.01)
    assert proxy.records()[0].error == "client went away"


async def test_corrupt_serves_the_same_length_with_a_different_digest(
    source_registry: RegistryServer,
    fault_proxy: MakeFaultProxy,
    image_builder: ImageBuilder,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    image = image_builder.image("app")
    seeded(image_builder, tmp_path, source_registry, unique_repo, image)
    proxy = fault_proxy(source_registry)
    config_digest = next(iter(image.blobs))
    proxy.corrupt(path=config_digest, times=1)
    url = f"{proxy.url}/v2/{unique_repo}/blobs/{config_digest}"
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(url) as response:
            corrupted = await response.read()
        async with http.get(url) as response:
            intact = await response.read()
    assert len(corrupted) == len(intact) == image.blobs[config_digest]
    assert sha256(intact) == config_digest != sha256(corrupted)
    proxy.corrupt(path=r"/blobs/sha256:")
    with pytest.raises(SkopeoError, match=r"(?i)digest"):
        copy_to_oci(proxy, f"{unique_repo}:v1", tmp_path / "pulled")


async def test_latency_and_bandwidth_slow_requests_down(
    source_registry: RegistryServer, fault_proxy: MakeFaultProxy, blob_source: tuple[str, int]
) -> None:
    path, size = blob_source
    proxy = fault_proxy(source_registry, bandwidth=size / 0.5)  # the blob takes >= 0.5 s
    proxy.latency(0.3, path=r"^/v2/$")
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        started = time.monotonic()
        async with http.get(f"{proxy.url}/v2/") as response:
            assert response.status == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        async with http.get(proxy.url + path) as response:
            assert len(await response.read()) == size
        assert time.monotonic() - started >= 0.45
    assert proxy.records()[0].fault == "latency"


async def test_rules_apply_to_the_first_matches_and_can_be_cleared(
    source_registry: RegistryServer, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(source_registry)
    limited = proxy.respond(503, method="GET", path=r"^/v2/$", times=2)
    proxy.respond(500, method="HEAD")
    async with aiohttp.ClientSession() as http:
        statuses = [await _status(http, "GET", proxy) for _ in range(3)]
        assert statuses == [503, 503, 200]
        assert await _status(http, "HEAD", proxy) == 500
        proxy.clear_rules()
        assert await _status(http, "HEAD", proxy) == 200
    assert limited.hits == 2
    assert proxy.count(method="GET", status=503) == 2
    assert proxy.count(method="HEAD") == 2
    times = proxy.times(method="GET", path=r"^/v2/$")
    assert times == sorted(times)
    assert len(times) == 3
    proxy.clear_records()
    assert proxy.count() == 0


async def _status(http: aiohttp.ClientSession, method: str, proxy: FaultProxy) -> int:
    async with http.request(method, f"{proxy.url}/v2/") as response:
        return response.status
