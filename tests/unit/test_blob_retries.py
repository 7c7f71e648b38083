"""How one blob's placement is retried: transient errors back off, a corrupt read is re-fetched
once, a token refused mid-upload starts the upload over (a bounded number of times, no attempt
spent), and whatever ends the last attempt is the error the job fails with."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

import mirrord.blobs as blobs
from mirrord.errors import ConnectionFailed, IntegrityError, MirrordError, UploadUnauthorized
from mirrord.manifests import Descriptor
from mirrord.registry.client import RegistryClient
from mirrord.retry import BackoffPolicy
from mirrord.transports.base import BlobOutcome, ImageSource

DESC = Descriptor("application/vnd.oci.image.layer.v1.tar", "sha256:" + "0" * 64, 3)


async def place(errors: list[MirrordError], monkeypatch: pytest.MonkeyPatch) -> BlobOutcome:
    monkeypatch.setattr(blobs, "BLOB_RETRY", BackoffPolicy(base=0.0, cap=0.0, attempts=3))
    service = blobs.BlobService(blobs.MemoryBlobIndex(), asyncio.Semaphore(1))

    async def attempt(*_: Any) -> BlobOutcome:
        if errors:
            raise errors.pop(0)
        return BlobOutcome.UPLOADED

    monkeypatch.setattr(service, "_place", attempt)
    client = cast(RegistryClient, SimpleNamespace(host="dst.example"))
    source = cast(ImageSource, SimpleNamespace(origin=None))
    return await service._place_with_retries(client, "r", DESC, source, lambda n: None)


async def test_a_corrupt_read_on_the_last_attempt_fails_with_the_integrity_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[MirrordError] = [ConnectionFailed("reset"), ConnectionFailed("reset")]
    errors.append(IntegrityError("blob: content digest differs (source is corrupt)"))
    with pytest.raises(IntegrityError, match="source is corrupt"):
        await place(errors, monkeypatch)


async def test_transient_errors_then_success_place_the_blob(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[MirrordError] = [ConnectionFailed("reset"), IntegrityError("short read")]
    assert await place(errors, monkeypatch) is BlobOutcome.UPLOADED


def _expired() -> UploadUnauthorized:
    return UploadUnauthorized("dst.example: blob r@sha256:...: 401 UNAUTHORIZED", status=401)


async def test_a_token_refused_mid_upload_starts_the_upload_over_without_spending_an_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[MirrordError] = [ConnectionFailed("reset"), _expired(), ConnectionFailed("reset")]
    errors.append(_expired())  # two renewals and two failed attempts: the third attempt is made
    assert await place(errors, monkeypatch) is BlobOutcome.UPLOADED


async def test_a_token_refused_mid_upload_again_and_again_fails_the_blob(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[MirrordError] = [_expired() for _ in range(blobs.UPLOAD_TOKEN_RENEWALS + 1)]
    with pytest.raises(UploadUnauthorized):
        await place(errors, monkeypatch)
    assert errors == []  # no attempt beyond the renewals
