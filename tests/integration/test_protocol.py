"""The registry client's protocol behaviour, against a real registry behind the fault proxy, and
against a fake registry (an aiohttp server on a real socket) for answers a real one never gives.

Real registry + fault proxy: a 429 with Retry-After on a manifest PUT is retried after the pause
and nothing is sent meanwhile; 503s and a connection reset mid-blob are retried; a refused mount
turns into an upload through the session the refusal opened (one POST, one PUT).
Fake registry: a `Link` to another host ends tag paging, a `Link` cycle ends it without repeats,
a redirect to another origin loses `Authorization`, an https->http redirect is refused, an
endless or oversized manifest is cut off at 4 MiB, and a username without a password is sent as
containers/image sends it (Basic `user:`; a token asked for anonymously).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from pathlib import Path

import pytest
from aiohttp import web

from mirrord.blobs import BlobService, MemoryBlobIndex
from mirrord.cli.common import parse_creds
from mirrord.config import skopeo_sync_config
from mirrord.errors import RedirectRefused, Unauthorized
from mirrord.manifests import Descriptor
from mirrord.registry.client import RegistryClient
from mirrord.registry.http import RegistryHttp
from mirrord.registry.options import RegistryOptions, TLSMode
from mirrord.retry import REQUEST_BACKOFF, BackoffPolicy
from mirrord.transports.base import BlobOutcome
from mirrord.transports.docker import RegistrySource
from tests.harness.faultproxy import FaultProxy, MakeFaultProxy
from tests.harness.pki import Pki
from tests.harness.registry import Credentials, MakeRegistry, RegistryServer
from tests.harness.tokenserver import TokenServer
from tests.integration.conftest import CORPUS_REPO, SeedCorpus
from tests.integration.support import (
    CliResult,
    FakeServer,
    Handler,
    Mirrord,
    assert_same_image,
    dest_flags,
    docker_ref,
    json_handler,
    redirect_handler,
    src_flags,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_CAP = 4 * 1024 * 1024


def _copy_to(
    cli: Mirrord,
    source_ref: str,
    source: RegistryServer | FaultProxy,
    dest: RegistryServer | FaultProxy,
    repo_ref: str,
) -> None:
    cli(
        "copy",
        "--all",
        *src_flags(source),
        *dest_flags(dest),
        source_ref,
        docker_ref(dest, repo_ref),
    ).ok()


# ------------------------------------------------------------------------------------------
# Retries against a real registry
# ------------------------------------------------------------------------------------------


def test_429_with_retry_after_on_a_manifest_put_is_retried_after_the_pause(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    pause = 2.0
    proxy.respond(429, method="PUT", path=r"/manifests/", times=1, retry_after=pause)

    _copy_to(cli, source.ref, source.registry, proxy, "mirror/app:v1")

    puts = proxy.records(method="PUT", path=r"/manifests/")
    assert [p.status for p in puts] == [429, 201]
    refused_at = puts[0].started
    assert puts[1].started - refused_at >= pause - 0.05
    during_pause = [
        r for r in proxy.records() if refused_at < r.started < refused_at + pause - 0.05
    ]
    assert during_pause == []
    assert_same_image(dest, "mirror/app", "v1", source.image, tmp_path)


def test_503_then_success_is_retried(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus("anonymous", "list")
    proxy = fault_proxy(source.registry)
    proxy.respond(503, method="GET", path=r"/manifests/sha256:", times=1)
    proxy.respond(503, method="GET", path=r"/blobs/sha256:", times=2)
    dest = make_registry("anonymous")
    dest_proxy = fault_proxy(dest)
    dest_proxy.respond(503, method="PUT", path=r"/manifests/", times=1)

    _copy_to(cli, docker_ref(proxy, f"{CORPUS_REPO}:list"), proxy, dest_proxy, "mirror/app:v1")

    assert proxy.count(status=503) == 3
    assert dest_proxy.count(status=503) == 1
    assert_same_image(dest, "mirror/app", "v1", source.image, tmp_path)


def test_an_upload_session_the_destination_forgot_is_started_again(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    """A 404 BLOB_UPLOAD_UNKNOWN on the PUT (the session expired while the blob waited for a
    stream) is the destination's, and passing: a new session, not "the source lacks the blob"."""
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    dest_proxy = fault_proxy(dest)
    forgot = {"errors": [{"code": "BLOB_UPLOAD_UNKNOWN", "message": "blob upload unknown"}]}
    dest_proxy.respond(
        404, method="PUT", path=r"/blobs/uploads/", times=1, body=json.dumps(forgot).encode()
    )

    _copy_to(
        cli,
        docker_ref(source.registry, f"{CORPUS_REPO}:oci"),
        source.registry,
        dest_proxy,
        "mirror/app:v1",
    )

    assert dest_proxy.count(status=404, method="PUT") == 1
    assert_same_image(dest, "mirror/app", "v1", source.image, tmp_path)


def test_connection_reset_mid_blob_is_retried_from_a_fresh_get(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus("anonymous", "oci")
    layer = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    proxy = fault_proxy(source.registry)
    # Two cuts in a row: whether or not aiohttp silently re-sends the GET on its own,
    # mirrord's blob retry must start a fresh GET after each cut.
    proxy.reset(after_bytes=1000, method="GET", path=rf"/blobs/{layer}$", times=2)
    dest = make_registry("anonymous")

    _copy_to(cli, docker_ref(proxy, f"{CORPUS_REPO}:oci"), proxy, dest, "mirror/app:v1")

    gets = proxy.records(method="GET", path=rf"/blobs/{layer}$")
    assert len(gets) >= 3
    assert [g.fault for g in gets[:2]] == ["reset", "reset"]
    assert_same_image(dest, "mirror/app", "v1", source.image, tmp_path)


async def _ensure_blob(
    source: RegistryServer | FaultProxy,
    dest: FaultProxy,
    digest: str,
    size: int,
    index: MemoryBlobIndex,
    backoff: BackoffPolicy = REQUEST_BACKOFF,
    dest_creds: Credentials | None = None,
) -> BlobOutcome:
    """Place one blob of `source`'s corpus image into `mirror/app` at `dest`, as a job would."""
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, size)
    plain = RegistryOptions(tls=TLSMode.PLAIN_HTTP, no_creds=True)
    dst_options = plain
    if dest_creds is not None:
        creds = parse_creds(dest_creds.joined(), "--dest-creds")
        dst_options = RegistryOptions(tls=TLSMode.PLAIN_HTTP, credentials=creds)
    src_client = RegistryClient(RegistryHttp(source.host, plain))
    dst_client = RegistryClient(
        RegistryHttp(dest.host, dst_options, role="destination", backoff=backoff)
    )
    service = BlobService(index, asyncio.Semaphore(1))
    try:
        return await service.ensure(
            dst_client, "mirror/app", desc, RegistrySource(src_client, CORPUS_REPO), lambda n: None
        )
    finally:
        await src_client.close()
        await dst_client.close()


async def test_refused_mount_becomes_an_upload_through_the_same_session(
    seed_corpus: SeedCorpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> None:
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    index = MemoryBlobIndex()
    # The index believes another repository of the destination has the blob; it does not.
    await index.record(proxy.host, "elsewhere/stale", digest, source.image.blobs[digest], "upload")

    outcome = await _ensure_blob(source.registry, proxy, digest, source.image.blobs[digest], index)

    assert outcome is BlobOutcome.UPLOADED
    posts = proxy.records(method="POST", path=r"/blobs/uploads/")
    assert [(p.query.startswith("mount="), p.status) for p in posts] == [(True, 202)]
    puts = proxy.records(method="PUT", path=r"/blobs/uploads/")
    assert [p.status for p in puts] == [201]
    assert proxy.count(method="PATCH") == 0
    assert dest.blob_path(digest).exists()
    assert await index.mount_candidates(proxy.host, digest, "mirror/app", 3) == []


def _open_uploads(registry: RegistryServer, repo: str) -> list[str]:
    """Upload sessions whose data the registry keeps for `repo` (started, never finished or
    cancelled; Distribution 2.8 leaves a cancelled session's empty hash-state directory)."""
    uploads = registry.storage_dir / "docker/registry/v2/repositories" / repo / "_uploads"
    return sorted(p.parent.name for p in uploads.glob("*/data"))


async def test_sessions_of_refused_mounts_left_unused_are_cancelled(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two stale candidates: the first refused mount's session is cancelled when the second is
    tried, the second's carries the upload; no partial upload is left in the registry."""
    # Blobs from 100 kB are worth two mount candidates; the corpus's layers are smaller.
    monkeypatch.setattr("mirrord.blobs.mount_budget", lambda size: 2)
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    size = source.image.blobs[digest]
    index = MemoryBlobIndex()
    await index.record(proxy.host, "elsewhere/one", digest, size, "upload")
    await index.record(proxy.host, "elsewhere/two", digest, size, "upload")

    outcome = await _ensure_blob(source.registry, proxy, digest, size, index)

    assert outcome is BlobOutcome.UPLOADED
    posts = proxy.records(method="POST", path=r"/blobs/uploads/")
    assert [(p.query.startswith("mount="), p.status) for p in posts] == [(True, 202), (True, 202)]
    assert [d.status for d in proxy.records(method="DELETE")] == [204]
    assert dest.blob_path(digest).exists()
    assert _open_uploads(dest, "mirror/app") == []


async def test_a_failed_upload_cancels_its_session_before_the_retry(
    seed_corpus: SeedCorpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> None:
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    proxy.respond(500, method="PUT", path=r"/blobs/uploads/", times=1)

    outcome = await _ensure_blob(
        source.registry, proxy, digest, source.image.blobs[digest], MemoryBlobIndex()
    )

    assert outcome is BlobOutcome.UPLOADED
    assert [p.status for p in proxy.records(method="PUT")] == [500, 201]
    assert [d.status for d in proxy.records(method="DELETE")] == [204]
    assert dest.blob_path(digest).exists()
    assert _open_uploads(dest, "mirror/app") == []


async def test_a_blob_the_destination_hashed_differently_is_sent_again(
    seed_corpus: SeedCorpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> None:
    """`400 DIGEST_INVALID` on the PUT: the registry received other bytes than the ones
    mirrord verified while sending them (damaged on the way). The blob is sent again with a
    new session, as for a failed upload; it used to fail the job at once."""
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    invalid = {"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match"}]}
    proxy.respond(
        400, method="PUT", path=r"/blobs/uploads/", times=1, body=json.dumps(invalid).encode()
    )

    outcome = await _ensure_blob(
        source.registry, proxy, digest, source.image.blobs[digest], MemoryBlobIndex()
    )

    assert outcome is BlobOutcome.UPLOADED
    assert [p.status for p in proxy.records(method="PUT")] == [400, 201]
    assert dest.blob_path(digest).exists()


async def test_a_mount_that_keeps_failing_becomes_a_plain_upload(
    seed_corpus: SeedCorpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> None:
    """Some registries answer `?mount=` with 5xx: after the request's retries the blob is
    uploaded with a plain POST, not given up on (nor mounted again and again)."""
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    index = MemoryBlobIndex()
    await index.record(proxy.host, "elsewhere/app", digest, source.image.blobs[digest], "upload")
    proxy.respond(500, method="POST", path=r"/blobs/uploads/", times=3)  # every mount attempt
    fast = BackoffPolicy(base=0.01, cap=0.01, attempts=3)

    outcome = await _ensure_blob(
        source.registry, proxy, digest, source.image.blobs[digest], index, fast
    )

    assert outcome is BlobOutcome.UPLOADED
    posts = proxy.records(method="POST", path=r"/blobs/uploads/")
    assert [(p.query.startswith("mount="), p.status) for p in posts] == [
        (True, 500),
        (True, 500),
        (True, 500),
        (False, 202),
    ]
    assert dest.blob_path(digest).exists()


def _refuse_blob_puts(
    proxy: FaultProxy, token_server: TokenServer, dest: RegistryServer, error: str, times: int
) -> None:
    """Answer the next `times` blob PUTs with a 401 and the Bearer challenge Distribution sends
    with `error` (`invalid_token`: expired; `insufficient_scope`: a permission missing)."""
    challenge = (
        f'Bearer realm="{token_server.realm}",service="{dest.service}",'
        f'scope="repository:mirror/app:pull,push",error="{error}"'
    )
    body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
    proxy.respond(
        401,
        method="PUT",
        path=r"/blobs/uploads/",
        times=times,
        headers={"WWW-Authenticate": challenge},
        body=json.dumps(body).encode(),
    )


async def test_a_401_on_a_streamed_blob_put_renews_the_token_and_uploads_again(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    token_server: TokenServer,
) -> None:
    """The bearer token expired while the blob streamed: the registry answers the PUT with 401
    and a challenge. The body cannot be sent again, so the blob's upload starts over (a new
    token, a new session, the source read again); it used to fail the job with that 401."""
    source = seed_corpus("anonymous", "oci")
    src_proxy = fault_proxy(source.registry)
    dest = make_registry("token")
    assert dest.creds is not None
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    _refuse_blob_puts(proxy, token_server, dest, error="invalid_token", times=1)

    outcome = await _ensure_blob(
        src_proxy,
        proxy,
        digest,
        source.image.blobs[digest],
        MemoryBlobIndex(),
        dest_creds=dest.creds,
    )

    assert outcome is BlobOutcome.UPLOADED
    puts = proxy.records(method="PUT", path=r"/blobs/uploads/")
    assert [p.status for p in puts] == [401, 201]
    posts = proxy.records(method="POST", path=r"/blobs/uploads/")
    assert [p.status for p in posts] == [202, 202]  # a new session for the second PUT
    assert puts[1].path != puts[0].path
    assert src_proxy.count(method="GET", path=rf"/blobs/{digest}$") == 2  # read again
    # The refused token was forgotten: the push token was fetched again after the 401.
    refused_at = puts[0].started + (time.time() - time.monotonic())
    push = ["repository:mirror/app:pull,push"]
    fetched = [
        r.at for r in token_server.requests(dest.service) if list(map(str, r.requested)) == push
    ]
    assert len([at for at in fetched if at < refused_at]) == 1
    assert [at for at in fetched if at > refused_at]
    assert dest.blob_path(digest).exists()
    assert _open_uploads(dest, "mirror/app") == []


async def test_a_401_on_a_streamed_put_for_a_missing_permission_is_not_retried(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    token_server: TokenServer,
) -> None:
    """`insufficient_scope` on the PUT: the token was good but lacks a permission, and a new
    one would lack it too. The job fails at once, naming what was not granted, instead of
    reading the source again for two renewals that cannot help."""
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("token")
    assert dest.creds is not None
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    _refuse_blob_puts(proxy, token_server, dest, error="insufficient_scope", times=3)

    with pytest.raises(Unauthorized, match="is not granted repository:mirror/app:pull,push"):
        await _ensure_blob(
            source.registry,
            proxy,
            digest,
            source.image.blobs[digest],
            MemoryBlobIndex(),
            dest_creds=dest.creds,
        )

    assert [p.status for p in proxy.records(method="PUT", path=r"/blobs/uploads/")] == [401]
    # The session is cancelled (the DELETE's own 401 asks for `delete`: a token with it).
    assert [d.status for d in proxy.records(method="DELETE")] == [401, 204]


async def test_cancelling_upload_sessions_keeps_the_push_token(
    make_registry: MakeRegistry, token_server: TokenServer
) -> None:
    """Distribution wants `delete` to cancel an upload session and says so with a 401
    `insufficient_scope`. The push token stays cached for the next upload (it was thrown away
    at every cancel, one more token request per cancelled session)."""
    dest = make_registry("token")
    assert dest.creds is not None
    options = RegistryOptions(
        tls=TLSMode.PLAIN_HTTP, credentials=parse_creds(dest.creds.joined(), "--dest-creds")
    )
    client = RegistryClient(RegistryHttp(dest.host, options, role="destination"))
    digest = "sha256:" + "ab" * 32
    try:
        for _ in range(2):
            session = await client.start_upload("mirror/app", digest)
            assert session is not None
            await client.cancel_upload(session)
    finally:
        await client.close()

    requested = [tuple(map(str, r.requested)) for r in token_server.requests(dest.service)]
    push, delete = "repository:mirror/app:pull,push", "repository:mirror/app:delete"
    assert requested == [(push,), (push, delete)]
    assert _open_uploads(dest, "mirror/app") == []


async def test_a_refused_mount_s_session_is_cancelled_when_the_head_after_it_fails(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The HEAD between a refused mount and the upload fails (a 503): the mount's session is
    cancelled before the blob's next attempt opens another, not left in the registry."""
    monkeypatch.setattr("mirrord.blobs.BLOB_RETRY", BackoffPolicy(base=0.01, cap=0.01, attempts=3))
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    index = MemoryBlobIndex()
    await index.record(proxy.host, "elsewhere/stale", digest, source.image.blobs[digest], "upload")
    proxy.respond(503, method="HEAD", path=rf"/blobs/{digest}$", times=1)
    once = BackoffPolicy(base=0.01, cap=0.01, attempts=1)

    outcome = await _ensure_blob(
        source.registry, proxy, digest, source.image.blobs[digest], index, once
    )

    assert outcome is BlobOutcome.UPLOADED
    assert [h.status for h in proxy.records(method="HEAD")] == [503, 404]
    assert [d.status for d in proxy.records(method="DELETE")] == [204]
    assert dest.blob_path(digest).exists()
    assert _open_uploads(dest, "mirror/app") == []


async def test_cancelling_a_job_mid_upload_cancels_the_upload_session_at_once(
    seed_corpus: SeedCorpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> None:
    """An operator's cancel (or a shutdown) stops the job while its blob streams: the open
    session is DELETEd on the way out, and the cancellation is not held up by it."""
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    proxy.stall(method="PUT", path=r"/blobs/uploads/", times=1)  # never answered
    job = asyncio.create_task(
        _ensure_blob(source.registry, proxy, digest, source.image.blobs[digest], MemoryBlobIndex())
    )
    async with asyncio.timeout(10):
        (put,) = await proxy.wait_for(method="PUT", path=r"/blobs/uploads/")

    cancelled_at = time.monotonic()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    took = time.monotonic() - cancelled_at

    assert took < 2.0
    deletes = proxy.records(method="DELETE")
    assert [(d.path, d.status) for d in deletes] == [(put.path, 204)]
    assert _open_uploads(dest, "mirror/app") == []


async def test_a_job_timeout_mid_upload_cancels_the_session_without_waiting_on_a_stalled_delete(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's timeout ends it mid-upload and the registry does not answer the DELETE either:
    the DELETE is sent, given up on after CANCEL_UPLOAD_TIMEOUT, and the job ends with its
    timeout, not with an error of the cleanup (nor a swallowed cancellation)."""
    monkeypatch.setattr("mirrord.registry.client.CANCEL_UPLOAD_TIMEOUT", 0.5)
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    digest = max(source.image.blobs, key=lambda d: source.image.blobs[d])
    proxy.stall(method="PUT", path=r"/blobs/uploads/", times=1)
    proxy.stall(method="DELETE", path=r"/blobs/uploads/")

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):  # as the worker bounds a job
            await _ensure_blob(
                source.registry, proxy, digest, source.image.blobs[digest], MemoryBlobIndex()
            )
    took = time.monotonic() - started

    assert 1.0 <= took < 1.0 + 0.5 + 1.0
    (put,) = proxy.records(method="PUT", path=r"/blobs/uploads/")
    assert [d.path for d in proxy.records(method="DELETE")] == [put.path]


def test_a_copy_that_times_out_mid_upload_cancels_its_upload_session(
    seed_corpus: SeedCorpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy, cli: Mirrord
) -> None:
    """`--command-timeout` ends `mirrord copy` while a blob's PUT hangs: the session is DELETEd
    before the process exits, and the exit is not held up."""
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    proxy.stall(method="PUT", path=r"/blobs/uploads/", times=1)

    started = time.monotonic()
    result = cli(
        "--command-timeout",
        "3",
        "copy",
        *src_flags(source.registry),
        *dest_flags(proxy),
        source.ref,
        docker_ref(proxy, "mirror/app:v1"),
    )
    took = time.monotonic() - started

    assert result.returncode != 0
    assert "timed out" in result.error_line(), result.describe()
    assert took < 3 + 4.0, result.describe()
    stalled = next(p for p in proxy.records(method="PUT") if p.fault == "stall")
    assert [(d.path, d.status) for d in proxy.records(method="DELETE")] == [(stalled.path, 204)]
    assert _open_uploads(dest, "mirror/app") == []


# ------------------------------------------------------------------------------------------
# A fake registry for hostile answers
# ------------------------------------------------------------------------------------------


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


def _tags(tags: list[str], link: str | None = None) -> Handler:
    headers = {"Link": f'<{link}>; rel="next"'} if link else {}
    return json_handler(json.dumps({"name": "r", "tags": tags}).encode(), headers=headers)


def test_tag_paging_never_follows_a_link_to_another_host(cli: Mirrord) -> None:
    with FakeServer() as elsewhere, FakeServer() as fake:
        elsewhere.route("GET", "/v2/r/tags/list", _tags(["stolen"]))
        fake.route("GET", "/v2/", _ok)
        fake.route(
            "GET", "/v2/r/tags/list", _tags(["a", "b"], f"{elsewhere.url}/v2/r/tags/list?last=b")
        )
        result = cli("list-tags", "--tls-verify=false", f"docker://{fake.host}/r").ok()
        assert json.loads(result.stdout)["Tags"] == ["a", "b"]
        assert elsewhere.seen == []


def test_tag_paging_stops_at_a_link_cycle_without_repeating_tags(cli: Mirrord) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        if request.query.get("last") == "b":
            return await _tags(["c"], "/v2/r/tags/list?n=1000")(request)
        return await _tags(["a", "b"], "/v2/r/tags/list?last=b")(request)

    with FakeServer() as fake:
        fake.route("GET", "/v2/", _ok)
        fake.route("GET", "/v2/r/tags/list", page)
        result = cli("list-tags", "--tls-verify=false", f"docker://{fake.host}/r").ok()
        assert json.loads(result.stdout)["Tags"] == ["a", "b", "c"]
        assert len(fake.requests(r"/tags/list")) <= 3


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 2,
        },
        "layers": [],
    },
    indent=3,
).encode()


def _basic_only(creds: Credentials, then: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != creds.basic_auth():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        return await then(request)

    return handle


def _inspect_redirected(
    cli: Mirrord, creds: Credentials, fake: FakeServer, target: str
) -> CliResult:
    """`mirrord inspect` of `r:v1` at `fake`, a Basic-auth registry redirecting it to `target`."""
    fake.route("GET", "/v2/", _basic_only(creds, _ok))
    fake.route("GET", "/v2/r/manifests/v1", _basic_only(creds, redirect_handler(target)))
    return cli(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        creds.joined(),
        f"docker://{fake.host}/r:v1",
    )


def test_redirect_to_another_origin_drops_authorization(cli: Mirrord) -> None:
    creds = Credentials("mirror", f"canary-{secrets.token_hex(8)}")
    with FakeServer() as storage, FakeServer() as fake:
        storage.route("GET", "/store/m", json_handler(MANIFEST, content_type=OCI_MANIFEST))
        result = _inspect_redirected(cli, creds, fake, f"{storage.url}/store/m").ok()
        assert result.stdout_bytes == MANIFEST
        assert [s.headers.get("Authorization") for s in fake.requests(r"/manifests/")] == [
            creds.basic_auth()
        ]
        (fetched,) = storage.requests()
        assert "Authorization" not in fetched.headers
        assert creds.password not in result.output


def test_a_401_where_a_redirect_led_never_gets_the_registry_s_credentials(cli: Mirrord) -> None:
    """The redirect target answers 401 with a Bearer challenge whose realm it controls: mirrord
    must not ask that realm for a token with the registry's password, nor adopt its challenge."""
    creds = Credentials("mirror", f"canary-{secrets.token_hex(8)}")
    with FakeServer() as storage, FakeServer() as fake:
        challenge = f'Bearer realm="{storage.url}/token",service="cdn"'
        storage.route(
            "GET",
            "/store/m",
            json_handler(b"{}", status=401, headers={"WWW-Authenticate": challenge}),
        )
        storage.route("GET", "/token", json_handler(b'{"token": "minted-by-the-cdn"}'))
        result = _inspect_redirected(cli, creds, fake, f"{storage.url}/store/m")
        assert result.returncode != 0, result.describe()
        assert storage.requests(r"/token") == []
        assert all("Authorization" not in seen.headers for seen in storage.requests())
        assert creds.password not in result.output


def _server_context(pki: Pki, name: str) -> ssl.SSLContext:
    """A test server's TLS context, its certificate issued by `pki` for the loopback names."""
    cert = pki.server_cert(name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def _inspect_over_tls(cli: Mirrord, pki: Pki, fake: FakeServer) -> CliResult:
    """`mirrord inspect --raw` of `r:v1` at the https `fake`, trusting the test CA."""
    return cli(
        "inspect",
        "--raw",
        "--cert-dir",
        str(pki.certs_d("fake-https")),
        f"docker://{fake.host}/r:v1",
    )


def test_https_to_http_redirect_is_refused(cli: Mirrord, pki: Pki) -> None:
    context = _server_context(pki, "fake-https")
    with FakeServer() as plain, FakeServer(ssl_context=context) as fake:
        plain.route("GET", "/store/m", json_handler(MANIFEST, content_type=OCI_MANIFEST))
        fake.route("GET", "/v2/", _ok)
        fake.route("GET", "/v2/r/manifests/v1", redirect_handler(f"{plain.url}/store/m"))
        result = _inspect_over_tls(cli, pki, fake)
        assert result.returncode == 1, result.describe()
        line = result.error_line()
        assert "redirect" in line
        assert fake.host in line
        assert plain.seen == []


def test_a_redirect_to_another_host_is_verified_with_the_registry_s_cert_dir(
    cli: Mirrord, pki: Pki
) -> None:
    """A private registry's blob storage or token server on another host name (MinIO behind the
    same private CA, GitLab's token endpoint) is verified with the registry's cert-dir, as skopeo
    does; it was checked against the system CAs only and failed."""
    context = _server_context(pki, "fake-https")
    with FakeServer(ssl_context=context) as storage, FakeServer(ssl_context=context) as fake:
        storage.route("GET", "/store/m", json_handler(MANIFEST, content_type=OCI_MANIFEST))
        elsewhere = storage.url.replace("127.0.0.1", "localhost")
        fake.route("GET", "/v2/", _ok)
        fake.route("GET", "/v2/r/manifests/v1", redirect_handler(f"{elsewhere}/store/m"))
        result = _inspect_over_tls(cli, pki, fake).ok()
        assert result.stdout_bytes == MANIFEST
        assert [s.path_qs for s in storage.requests()] == ["/store/m"]


def test_a_redirect_target_s_certificate_error_names_that_host(
    cli: Mirrord, pki: Pki, tmp_path: Path
) -> None:
    """The registry is trusted, the storage it redirects to is not (another CA): the error
    names the storage host, not only the registry the operator would otherwise go and check."""
    context = _server_context(pki, "fake-https")
    storage_context = _server_context(Pki(tmp_path / "other-ca"), "storage")
    with (
        FakeServer(ssl_context=storage_context) as storage,
        FakeServer(ssl_context=context) as fake,
    ):
        elsewhere = storage.url.replace("127.0.0.1", "localhost")
        fake.route("GET", "/v2/", _ok)
        fake.route(
            "GET", "/v2/r/manifests/v1", redirect_handler(f"{elsewhere}/m?X-Amz-Signature=s3cret")
        )
        result = _inspect_over_tls(cli, pki, fake)
        assert result.returncode == 1, result.describe()
        line = result.error_line()
        assert f"redirected to {elsewhere.removeprefix('https://')}" in line
        assert "certificate verif" in line
        assert "s3cret" not in result.output


async def test_an_upload_location_in_clear_text_from_an_https_registry_is_refused(
    pki: Pki,
) -> None:
    context = _server_context(pki, "fake-https")
    with FakeServer() as plain, FakeServer(ssl_context=context) as fake:
        fake.route("GET", "/v2/", _ok)
        fake.route(
            "POST",
            "/v2/r/blobs/uploads/",
            json_handler(b"", status=202, headers={"Location": f"{plain.url}/up?_state=s3cret"}),
        )
        options = RegistryOptions(cert_dir=pki.certs_d("fake-https"))
        client = RegistryClient(RegistryHttp(fake.host, options, role="destination"))
        try:
            with pytest.raises(RedirectRefused, match="refused upload location") as refused:
                await client.start_upload("r", "sha256:" + "0" * 64)
        finally:
            await client.close()
        assert "s3cret" not in str(refused.value)
        assert plain.seen == []


@pytest.mark.parametrize("length", ["endless", "declared-100MiB"])
def test_an_oversized_manifest_is_refused_after_4_MiB(length: str, cli: Mirrord) -> None:
    sent = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": OCI_MANIFEST})
        if length != "endless":
            response.content_length = 100 * 1024 * 1024
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            while sent[0] < 256 * 1024 * 1024:
                await response.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, asyncio.CancelledError):  # the client hung up, as it should
            pass
        return response

    with FakeServer() as fake:
        fake.route("GET", "/v2/", _ok)
        fake.route("GET", "/v2/r/manifests/v1", endless)
        result = cli("inspect", "--raw", "--tls-verify=false", f"docker://{fake.host}/r:v1")
    assert result.returncode == 1, result.describe()
    assert str(MANIFEST_CAP) in result.error_line() or "4 MiB" in result.error_line()
    assert sent[0] < 64 * 1024 * 1024
    assert result.max_rss < 200 * 1024 * 1024


def test_429_on_a_streamed_blob_upload_is_retried_with_a_fresh_session(
    seed_corpus: SeedCorpus,
    make_registry: MakeRegistry,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus("anonymous", "oci")
    dest = make_registry("anonymous")
    proxy = fault_proxy(dest)
    proxy.respond(429, method="PUT", path=r"/blobs/uploads/", times=1, retry_after=1)

    _copy_to(cli, source.ref, source.registry, proxy, "mirror/app:v1")

    puts = proxy.records(method="PUT", path=r"/blobs/uploads/")
    assert [p.status for p in puts].count(429) == 1
    assert [p.status for p in puts].count(201) == len(source.image.blobs)
    # The refused PUT's session is not reused: one more POST than blobs.
    assert proxy.count(method="POST", path=r"/blobs/uploads/") == len(source.image.blobs) + 1
    assert_same_image(dest, "mirror/app", "v1", source.image, tmp_path)


def _behind_token(fake: FakeServer, realm: str, granted: str, token: Handler) -> None:
    """Serve `r:v1` to requests bearing `granted`; others get a Bearer challenge whose realm is
    `realm` on the same server, answered by `token`."""
    challenge = f'Bearer realm="{fake.url}{realm}",service="fake"'

    async def registry(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {granted}":
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if request.path == "/v2/":
            return web.Response(status=200)
        return web.Response(body=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    fake.route("GET", "/v2/", registry)
    fake.route("GET", "/v2/r/manifests/v1", registry)
    fake.route("GET", "/token", token)


def test_a_token_server_429_with_retry_after_is_waited_out(cli: Mirrord) -> None:
    """The token endpoint is the registry's too: its Retry-After holds every request back (it
    was ignored: retries after 0.6 s and 1.7 s, the job failed while the server said wait)."""
    asked_at: list[float] = []
    with FakeServer() as fake:

        async def token(request: web.Request) -> web.StreamResponse:
            asked_at.append(time.monotonic())
            if len(asked_at) == 1:
                return web.Response(status=429, headers={"Retry-After": "2"})
            return web.json_response({"token": "granted"})

        _behind_token(fake, "/token", "granted", token)
        result = cli("inspect", "--raw", "--tls-verify=false", f"docker://{fake.host}/r:v1").ok()
    assert result.stdout_bytes == MANIFEST
    assert len(asked_at) >= 2
    assert asked_at[1] - asked_at[0] >= 1.9


def test_a_token_realm_keeps_its_own_query(cli: Mirrord) -> None:
    with FakeServer() as fake:

        async def token(request: web.Request) -> web.StreamResponse:
            if request.query.get("tenant") != "7":
                return web.Response(status=400)
            return web.json_response({"token": "t0ken-of-tenant-7"})

        _behind_token(fake, "/token?tenant=7", "t0ken-of-tenant-7", token)
        result = cli("inspect", "--raw", "--tls-verify=false", f"docker://{fake.host}/r:v1").ok()
        assert result.stdout_bytes == MANIFEST
        asked = [seen.path_qs for seen in fake.requests(r"^/token")]
        assert asked
        assert all("tenant=7" in query for query in asked)
        assert all("service=fake" in query for query in asked)


# ------------------------------------------------------------------------------------------
# A username without a password, as containers/image (skopeo 1.9.3's v5.22.1) sends it
# ------------------------------------------------------------------------------------------


def _skopeo_file_options(tmp_path: Path, host: str, credentials: str) -> RegistryOptions:
    path = tmp_path / "sync.yml"
    path.write_text(
        f"{host}:\n  tls-verify: false\n  images: {{r: []}}\n  credentials: {credentials}\n"
    )
    path.chmod(0o600)
    return skopeo_sync_config("mirror.example.com/m", file=path).registry_options(host)


async def _list_tags(host: str, options: RegistryOptions) -> list[str]:
    client = RegistryClient(RegistryHttp(host, options))
    try:
        return await client.list_tags("r")
    finally:
        await client.close()


@pytest.mark.parametrize("credentials", ["{username: robot}", "{username: robot, password: }"])
async def test_a_username_without_a_password_is_sent_as_basic_user_colon(
    tmp_path: Path, credentials: str
) -> None:
    """setupRequestAuth sends SetBasicAuth(Username, Password) whatever they hold: `robot:`.
    mirrord sent nothing and failed with "requires credentials (Basic auth) and none were
    found"."""
    robot = Credentials("robot", "")
    with FakeServer() as fake:
        fake.route("GET", "/v2/", _basic_only(robot, _ok))
        fake.route("GET", "/v2/r/tags/list", _basic_only(robot, _tags(["v1"])))
        options = _skopeo_file_options(tmp_path, fake.host, credentials)
        assert await _list_tags(fake.host, options) == ["v1"]
        assert fake.requests(r"/tags/list")[-1].headers["Authorization"] == "Basic cm9ib3Q6"


@pytest.mark.parametrize("where", ["sync-file", "--creds"])
async def test_a_token_is_asked_for_anonymously_for_a_username_without_a_password(
    tmp_path: Path, where: str
) -> None:
    """getBearerToken adds Basic auth only when both the username and the password are set;
    mirrord sent `robot:` for `--creds robot` (a token server refuses that with a 401 where an
    anonymous request gets a pull token)."""
    with FakeServer() as fake:
        challenge = f'Bearer realm="{fake.url}/token",service="fake"'
        fake.route(
            "GET", "/v2/", json_handler(b"{}", status=401, headers={"WWW-Authenticate": challenge})
        )
        fake.route("GET", "/token", json_handler(b'{"token": "anonymous-pull"}'))
        fake.route("GET", "/v2/r/tags/list", _tags(["v1"]))
        if where == "sync-file":
            options = _skopeo_file_options(tmp_path, fake.host, "{username: robot}")
        else:
            options = RegistryOptions(
                tls=TLSMode.SKOPEO_NO_VERIFY, credentials=parse_creds("robot", "--creds")
            )
        assert await _list_tags(fake.host, options) == ["v1"]
        (token_request,) = fake.requests(r"^/token")
        assert "Authorization" not in token_request.headers
        assert fake.requests(r"/tags/list")[-1].headers["Authorization"] == "Bearer anonymous-pull"
