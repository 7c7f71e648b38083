"""The registry API verbs: manifests, blobs, uploads and mounts, tags, catalog, delete.

Every digest and tag is validated before it is put into a URL. Blob bodies are streamed as raw
bytes; manifests are read whole but never more than 4 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from yarl import URL

from mirrord.errors import (
    BlobUnknown,
    IntegrityError,
    InvalidManifest,
    ManifestUnknown,
    MirrordError,
    RedirectRefused,
    RegistryError,
)
from mirrord.manifests import ACCEPT, MAX_MANIFEST_SIZE, compute_digest
from mirrord.redact import redact_url
from mirrord.refs import check_digest, check_repository, check_tag, is_digest, is_tag
from mirrord.registry.auth import Scopes, forbidden_redirect, scope_for
from mirrord.registry.http import RegistryHttp, mapped_errors, read_capped

log = logging.getLogger(__name__)

TAG_PAGE_SIZE = 1000
MAX_TAG_PAGES = 10_000
MAX_TAGS = 1_000_000
CATALOG_PAGE_SIZE = 100
CANCEL_UPLOAD_TIMEOUT = 5.0  # seconds a best-effort DELETE of an upload session may take
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadSession:
    """An open upload: the `Location` to PUT to (kept verbatim: it may carry signed state)."""

    location: URL
    repository: str


def _pull(repo: str) -> Scopes:
    return (scope_for(repo, "pull"),)


def _push(repo: str, mount_from: str | None = None) -> Scopes:
    scopes = (scope_for(repo, "pull,push"),)
    return (*scopes, scope_for(mount_from, "pull")) if mount_from else scopes


def _ref(reference: str) -> str:
    if is_digest(reference) or is_tag(reference):
        return reference
    check_tag(reference)
    return reference


def _q(digest: str) -> str:
    return quote(check_digest(digest), safe="")


class RegistryClient:
    """One registry, one role. Cheap to keep; close() releases its connections."""

    def __init__(self, http: RegistryHttp) -> None:
        self.http = http

    @property
    def host(self) -> str:
        return self.http.host

    def __repr__(self) -> str:
        return f"RegistryClient({self.http!r})"

    async def close(self) -> None:
        await self.http.close()

    async def ping(self) -> URL:
        return await self.http.base_url()

    # ---- manifests -------------------------------------------------------------------------

    async def head_manifest(self, repo: str, reference: str) -> ManifestHead | None:
        """Digest, type and size of a manifest by tag or digest; None when absent."""
        path = f"/v2/{check_repository(repo)}/manifests/{_ref(reference)}"
        async with self.http.open(
            "HEAD",
            path,
            scopes=_pull(repo),
            method_class="manifest_head",
            what=f"manifest {repo}:{reference}",
            headers={"Accept": ACCEPT},
            expect=(200, 404),
        ) as resp:
            if resp.status == 404:
                return None
            digest = resp.headers.get("Docker-Content-Digest", "")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            size = int(resp.headers.get("Content-Length") or -1)
        if not is_digest(digest):
            # No usable digest from HEAD (some registries): a GET tells us.
            raw, media_type = await self.get_manifest(repo, reference)
            return ManifestHead(compute_digest(raw), media_type, len(raw))
        return ManifestHead(digest, media_type, size)

    async def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """The exact manifest bytes and media type (verified against a digest reference)."""
        path = f"/v2/{check_repository(repo)}/manifests/{_ref(reference)}"
        what = f"manifest {repo}:{reference}"
        try:
            async with self.http.open(
                "GET",
                path,
                scopes=_pull(repo),
                method_class="manifest_get",
                what=what,
                headers={"Accept": ACCEPT},
            ) as resp:
                raw = await read_capped(resp, MAX_MANIFEST_SIZE, what, self.host)
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        except RegistryError as exc:
            if (
                exc.status == 404
                and not isinstance(exc, ManifestUnknown)
                and "NAME_UNKNOWN" not in exc.codes
            ):
                raise ManifestUnknown(
                    str(exc), registry=exc.registry, status=404, codes=exc.codes
                ) from None
            raise
        if is_digest(reference):
            actual = compute_digest(raw, reference.split(":", 1)[0])
            if actual != reference:
                self.http.observer.digest_mismatch(self.host)
                raise IntegrityError(f"{self.host}: {what}: content digest is {actual}")
        return raw, media_type

    async def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        """Push exact manifest bytes under a tag or digest; returns the registry's digest."""
        path = f"/v2/{check_repository(repo)}/manifests/{_ref(reference)}"
        async with self.http.open(
            "PUT",
            path,
            scopes=_push(repo),
            method_class="manifest_put",
            what=f"manifest {repo}:{reference}",
            headers={"Content-Type": media_type},
            body=raw,
            expect=(200, 201, 202, 204),
        ) as resp:
            return resp.headers.get("Docker-Content-Digest", "")

    async def delete_manifest(self, repo: str, digest: str) -> None:
        path = f"/v2/{check_repository(repo)}/manifests/{_q(digest)}"
        scopes = (scope_for(repo, "pull,push,delete"),)
        async with self.http.open(
            "DELETE",
            path,
            scopes=scopes,
            method_class="manifest_delete",
            what=f"delete {repo}@{digest}",
            expect=(200, 202, 204),
        ):
            pass

    # ---- blobs -----------------------------------------------------------------------------

    async def head_blob(self, repo: str, digest: str) -> int | None:
        """The blob's size if the repository has it, else None."""
        path = f"/v2/{check_repository(repo)}/blobs/{_q(digest)}"
        async with self.http.open(
            "HEAD",
            path,
            scopes=_pull(repo),
            method_class="blob_head",
            what=f"blob {repo}@{digest}",
            expect=(200, 404),
        ) as resp:
            if resp.status == 404:
                return None
            return int(resp.headers.get("Content-Length") or -1)

    @contextlib.asynccontextmanager
    async def open_blob(
        self, repo: str, digest: str
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """Stream a blob's raw bytes: yields (Content-Length or -1, chunk iterator)."""
        path = f"/v2/{check_repository(repo)}/blobs/{_q(digest)}"
        what = f"blob {repo}@{digest}"
        opened = False
        try:
            async with self.http.open(
                "GET",
                path,
                scopes=_pull(repo),
                method_class="blob_get",
                what=what,
                headers={"Accept-Encoding": "identity"},
            ) as resp:
                length = int(resp.headers.get("Content-Length") or -1)
                opened = True
                yield length, self._chunks(resp, what)
        except RegistryError as exc:
            # Only this GET's own 404 means the blob is unknown here: an error raised by the
            # caller while the blob streams (the destination's PUT, say) passes unchanged.
            if not opened and exc.status == 404 and not isinstance(exc, BlobUnknown):
                raise BlobUnknown(
                    str(exc), registry=exc.registry, status=404, codes=exc.codes
                ) from None
            raise

    async def _chunks(self, resp: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
        with mapped_errors(self.host, what):
            async for chunk in resp.content.iter_any():
                yield chunk

    async def start_upload(
        self, repo: str, digest: str, mount_from: str | None = None
    ) -> UploadSession | None:
        """POST an upload; with `mount_from` try a cross-repository mount first.

        Returns None when the blob was mounted (201), else the upload session to PUT to. A refused
        mount (202) still returns a usable session; a mount that errors is retried as a plain POST.
        """
        base = f"/v2/{check_repository(repo)}/blobs/uploads/"
        if mount_from is not None:
            try:
                return await self._post_upload(
                    f"{base}?mount={_q(digest)}&from={quote(check_repository(mount_from), safe='/')}",
                    repo,
                    _push(repo, mount_from),
                    "mount",
                )
            except MirrordError as exc:
                # Whatever went wrong with the mount (refused, 5xx after retries, a registry
                # that errors on `mount=`), a plain upload may still work: try it.
                log.info(
                    "%s: mount of %s from %s failed (%s); uploading",
                    self.host,
                    digest,
                    mount_from,
                    exc,
                )
        return await self._post_upload(base, repo, _push(repo), "upload")

    async def _post_upload(
        self, path: str, repo: str, scopes: Scopes, method_class: str
    ) -> UploadSession | None:
        async with self.http.open(
            "POST",
            path,
            scopes=scopes,
            method_class=method_class,
            what=f"upload to {repo}",
            headers={"Content-Length": "0"},
            body=b"",
            expect=(201, 202),
        ) as resp:
            if resp.status == 201:
                return None
            location = resp.headers.get("Location")
            if not location:
                raise RegistryError(
                    f"{self.host}: upload to {repo}: 202 without Location", registry=self.host
                )
            try:
                target = resp.url.join(URL(location, encoded=True))
            except ValueError:
                target = None
            if target is None or forbidden_redirect(target, resp.url):
                # The blob's bytes go wherever Location says: never in clear text from an
                # https registry, never to this machine or a link-local (metadata) address.
                raise RedirectRefused(
                    f"{self.host}: upload to {repo}: refused upload location {redact_url(location)}"
                )
            return UploadSession(target, repo)

    async def cancel_upload(self, session: UploadSession) -> None:
        """Best effort: DELETE an upload session that will not be finished, so its partial data
        does not sit in the registry's storage until a purge (one attempt; failures logged).

        Gives up after CANCEL_UPLOAD_TIMEOUT seconds and raises nothing but a cancellation: it
        also runs while a job is being cancelled (operator cancel, timeout, shutdown), which must
        not wait on a slow registry, nor end with any other error.
        """
        timeout = CANCEL_UPLOAD_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                async with self.http.open(
                    "DELETE",
                    session.location,
                    scopes=_push(session.repository),
                    method_class="upload",
                    what=f"cancel upload to {session.repository}",
                    expect=(200, 202, 204, 404),
                    retry=False,
                ):
                    pass
        except (MirrordError, TimeoutError) as exc:
            reason = exc if isinstance(exc, MirrordError) else f"no answer in {timeout:g} s"
            log.debug("%s: cancelling an upload to %s: %s", self.host, session.repository, reason)
        except Exception:  # a bug here must not replace the error (or cancellation) in flight
            log.warning("%s: cancelling an upload failed", self.host, exc_info=True)

    async def finish_upload(
        self, session: UploadSession, digest: str, size: int, body: bytes | AsyncIterable[bytes]
    ) -> None:
        """One streamed PUT of the whole blob, closing the session (`?digest=` appended raw)."""
        raw_query = session.location.raw_query_string
        query = f"{raw_query}&digest={_q(digest)}" if raw_query else f"digest={_q(digest)}"
        url = URL(f"{session.location.with_query(None)}?{query}", encoded=True)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self.http.open(
            "PUT",
            url,
            scopes=_push(session.repository),
            method_class="upload",
            what=f"blob {session.repository}@{digest}",
            headers=headers,
            body=body,
            expect=(201, 204),
        ) as resp:
            returned = resp.headers.get("Docker-Content-Digest")
        if returned and returned != digest:
            raise IntegrityError(f"{self.host}: registry stored {returned} for blob {digest}")

    # ---- discovery -------------------------------------------------------------------------

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag of a repository, following `Link` pagination on the same origin only."""
        path: str | URL = f"/v2/{check_repository(repo)}/tags/list?n={TAG_PAGE_SIZE}"
        tags: list[str] = []
        seen: set[URL] = set()  # pages already fetched, as resolved URLs: a Link cycle ends here
        for _ in range(MAX_TAG_PAGES):
            page, url, path_next = await self._tag_page(repo, path)
            seen.add(url)
            tags.extend(page)
            if path_next is None or path_next in seen or len(tags) > MAX_TAGS:
                break
            path = path_next
        return tags

    async def _tag_page(self, repo: str, path: str | URL) -> tuple[list[str], URL, URL | None]:
        what = f"tags of {repo}"
        try:
            async with self.http.open(
                "GET", path, scopes=_pull(repo), method_class="tags", what=what
            ) as resp:
                body = await read_capped(resp, 64 * 1024 * 1024, what, self.host)
                url = resp.url
                nxt = self._next_link(resp.url, resp.headers.get("Link", ""))
        except RegistryError as exc:
            if exc.status == 404 and not exc.codes:
                raise RegistryError(
                    f"{exc} (repository not found)", registry=exc.registry, status=404
                ) from None
            raise
        return _strings(body, "tags", what), url, nxt

    def _next_link(self, current: URL, header: str) -> URL | None:
        match = _LINK_NEXT.search(header)
        if not match:
            return None
        target = current.join(URL(match.group(1), encoded=True))
        return target if target.origin() == current.origin() else None

    async def catalog(self) -> list[str]:
        path: str | URL = f"/v2/_catalog?n={CATALOG_PAGE_SIZE}"
        repos: list[str] = []
        seen: set[URL] = set()
        for _ in range(MAX_TAG_PAGES):
            async with self.http.open(
                "GET", path, scopes=("registry:catalog:*",), method_class="catalog", what="catalog"
            ) as resp:
                body = await read_capped(resp, 64 * 1024 * 1024, "catalog", self.host)
                seen.add(resp.url)
                nxt = self._next_link(resp.url, resp.headers.get("Link", ""))
            repos.extend(_strings(body, "repositories", "catalog"))
            if nxt is None or nxt in seen:
                break
            path = nxt
        return repos


def _strings(body: bytes, key: str, what: str) -> list[str]:
    try:
        values = json.loads(body).get(key) or []
    except (ValueError, AttributeError, RecursionError):
        raise InvalidManifest(f"{what}: the registry sent malformed JSON") from None
    return [v for v in values if isinstance(v, str)]
