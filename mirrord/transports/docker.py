"""The `docker://` transport: a repository in a registry, as a source or a destination."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from mirrord.blobs import BlobService
from mirrord.errors import IntegrityError
from mirrord.manifests import Descriptor, Manifest
from mirrord.registry.client import RegistryClient
from mirrord.registry.events import NULL_OBSERVER, Observer
from mirrord.registry.http import RegistryHttp
from mirrord.registry.options import RegistryOptions
from mirrord.transports.base import BlobOrigin, BlobOutcome, ByteCounter, ImageSource, ManifestInfo

OptionsFor = Callable[[str, str], RegistryOptions]  # (host, role) -> options


class ClientPool:
    """One RegistryClient per (registry host, role), created on first use, closed together.

    A caller working on one repository may name it: it then gets a client of its own whose
    credentials may come from an auth-file entry for the repository's namespace (`host/ns`),
    as skopeo looks them up.
    """

    def __init__(self, options_for: OptionsFor, observer: Observer = NULL_OBSERVER) -> None:
        self._options_for = options_for
        self._observer = observer
        self._clients: dict[tuple[str, str, str | None], RegistryClient] = {}

    def get(self, host: str, role: str, repository: str | None = None) -> RegistryClient:
        key = (host, role, repository)
        if key not in self._clients:
            options = self._options_for(host, role)
            http = RegistryHttp(
                host, options, role=role, observer=self._observer, repository=repository
            )
            self._clients[key] = RegistryClient(http)
        return self._clients[key]

    def source(self, host: str, repository: str | None = None) -> RegistryClient:
        return self.get(host, "source", repository)

    def destination(self, host: str, repository: str | None = None) -> RegistryClient:
        return self.get(host, "destination", repository)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RegistrySource:
    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client = client
        self.repo = repo
        self.description = f"docker://{client.host}/{repo}"

    def __repr__(self) -> str:
        return f"RegistrySource({self.description!r})"

    async def head(self, reference: str) -> ManifestInfo | None:
        head = await self.client.head_manifest(self.repo, reference)
        return None if head is None else ManifestInfo(head.digest, head.media_type, head.size)

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        return await self.client.get_manifest(self.repo, reference)

    @contextlib.asynccontextmanager
    async def blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.client.open_blob(self.repo, desc.digest) as (length, chunks):
            if length not in (-1, desc.size):
                raise IntegrityError(
                    f"{self.description}: blob {desc.digest} is {length} bytes, "
                    f"the manifest says {desc.size}"
                )
            yield chunks

    @property
    def origin(self) -> BlobOrigin:
        return BlobOrigin(self.client.host, self.repo)


class RegistryDestination:
    def __init__(self, client: RegistryClient, repo: str, blobs: BlobService) -> None:
        self.client = client
        self.repo = repo
        self.blobs = blobs
        self.description = f"docker://{client.host}/{repo}"

    def __repr__(self) -> str:
        return f"RegistryDestination({self.description!r})"

    async def head(self, reference: str) -> ManifestInfo | None:
        head = await self.client.head_manifest(self.repo, reference)
        return None if head is None else ManifestInfo(head.digest, head.media_type, head.size)

    async def has_manifest(self, digest: str) -> bool:
        return await self.client.head_manifest(self.repo, digest) is not None

    async def ensure_blob(
        self, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        return await self.blobs.ensure(self.client, self.repo, desc, source, counter)

    async def put_manifest(self, reference: str, manifest: Manifest) -> None:
        returned = await self.client.put_manifest(
            self.repo, reference, manifest.raw, manifest.media_type
        )
        if returned and returned != manifest.digest:
            raise IntegrityError(
                f"{self.description}: registry stored manifest as {returned}, "
                f"expected {manifest.digest}"
            )
        await self.blobs.referenced(self.client.host, self.repo, manifest)

    async def forget_blobs(self, digests: tuple[str, ...]) -> None:
        for digest in digests:
            await self.blobs.index.invalidate(self.client.host, self.repo, digest)
