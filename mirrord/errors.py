"""The one exception tree of mirrord.

    MirrordError                      reason            transient
    ├── ConfigError                   config            no   (file, line, key in the message)
    ├── InvalidReference              invalid_reference no
    ├── InvalidManifest               invalid_manifest  no   (too large, ambiguous, malformed)
    ├── IntegrityError                digest_mismatch   no   (bytes differ from their descriptor)
    ├── UnsupportedOperation          unsupported       no
    ├── LocalStorageError             local_io          no   (dir:, oci:, archives, bundles)
    ├── StoreError                    store             yes  (the job database)
    ├── TransportError                                       (no usable HTTP answer)
    │   ├── ConnectionFailed          connection        yes  (refused, reset, DNS, short read)
    │   ├── RequestTimeout            timeout           yes
    │   ├── TLSFailure                tls               no   (certificate or handshake)
    │   └── RedirectRefused           redirect_refused  no   (downgrade, loop, private target)
    └── RegistryError                 registry_error    no   (an error status from a registry)
        ├── Unauthorized              auth_failed       no   401 / UNAUTHORIZED
        │   └── UploadUnauthorized    auth_failed       no   401 on a streamed upload body
        ├── Denied                    denied            no   403 / DENIED
        ├── NotFound                  not_found         no   404
        │   ├── ManifestUnknown       manifest_unknown  no
        │   ├── BlobUnknown           blob_unknown      no
        │   └── NameUnknown           name_unknown      no
        ├── RateLimited               rate_limited      yes  429 / TOOMANYREQUESTS (retry_after)
        │   └── RegistryPaused        rate_limited      yes  a pause too long to wait in a job slot
        ├── ServerError               server_error      yes  5xx, 408
        └── UploadInvalid             upload_invalid    yes  BLOB_UPLOAD_UNKNOWN / _INVALID,
                                                               DIGEST_INVALID

Foreign exceptions (aiohttp, ssl, OSError, SQLAlchemy) are mapped into this tree at one boundary
each (`raise ... from exc`), so a 429 on a manifest PUT is still a `RateLimited` when the retry
logic sees it. `reason` is a short, bounded string used in metrics labels and job rows; messages
never contain secrets (URLs are redacted before they reach an error).
"""

from __future__ import annotations

from typing import ClassVar


class MirrordError(Exception):
    """Base of every error mirrord raises on purpose."""

    reason: ClassVar[str] = "error"
    transient: ClassVar[bool] = False


class ConfigError(MirrordError):
    """Invalid configuration. `problems` holds every problem found, one line each."""

    reason = "config"

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class InvalidReference(MirrordError):
    reason = "invalid_reference"


class InvalidManifest(MirrordError):
    reason = "invalid_manifest"


class IntegrityError(MirrordError):
    reason = "digest_mismatch"


class UnsupportedOperation(MirrordError):
    reason = "unsupported"


class LocalStorageError(MirrordError):
    reason = "local_io"


class StoreError(MirrordError):
    reason = "store"
    transient = True


class SchemaTooNew(StoreError):
    """The database was migrated by a newer mirrord: retrying or restarting cannot help."""

    transient = False


class TransportError(MirrordError):
    reason = "transport"
    transient = True


class ConnectionFailed(TransportError):
    reason = "connection"


class RequestTimeout(TransportError):
    reason = "timeout"


class TLSFailure(TransportError):
    reason = "tls"
    transient = False


class RedirectRefused(TransportError):
    reason = "redirect_refused"
    transient = False


class RegistryError(MirrordError):
    """The registry answered with an error status (after any auth retry)."""

    reason = "registry_error"

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        status: int = 0,
        codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.registry = registry
        self.status = status
        self.codes = codes


class Unauthorized(RegistryError):
    reason = "auth_failed"


class UploadUnauthorized(Unauthorized):
    """A 401 from the registry on a streamed blob upload (its bearer token most likely expired
    while a long body streamed). The refused token is forgotten, but the stream cannot be sent
    again: the blob's upload starts over (a new session, the source read again), a bounded
    number of times, and without counting as an attempt."""


class Denied(RegistryError):
    reason = "denied"


class NotFound(RegistryError):
    reason = "not_found"


class ManifestUnknown(NotFound):
    reason = "manifest_unknown"


class BlobUnknown(NotFound):
    reason = "blob_unknown"


class NameUnknown(NotFound):
    reason = "name_unknown"


class RateLimited(RegistryError):
    reason = "rate_limited"
    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RegistryPaused(RateLimited):
    """The registry asked for a pause (Retry-After, or its pull quota) longer than a queued job
    waits in its slot: the job goes back to the queue until the pause ends, the attempt not
    counted (the registry's pacing is not the job's failure)."""


class ServerError(RegistryError):
    reason = "server_error"
    transient = True


class UploadInvalid(RegistryError):
    reason = "upload_invalid"
    transient = True


_BY_CODE: dict[str, type[RegistryError]] = {
    "UNAUTHORIZED": Unauthorized,
    "DENIED": Denied,
    "MANIFEST_UNKNOWN": ManifestUnknown,
    "BLOB_UNKNOWN": BlobUnknown,
    "NAME_UNKNOWN": NameUnknown,
    "TOOMANYREQUESTS": RateLimited,
    "BLOB_UPLOAD_UNKNOWN": UploadInvalid,
    "BLOB_UPLOAD_INVALID": UploadInvalid,
    # The registry hashed other bytes than the ones we verified while streaming them: damaged
    # on the way. A new session sends the blob again (within the blob's attempts).
    "DIGEST_INVALID": UploadInvalid,
    "UNAVAILABLE": ServerError,
}

_BY_STATUS: dict[int, type[RegistryError]] = {
    401: Unauthorized,
    403: Denied,
    404: NotFound,
    408: ServerError,
    429: RateLimited,
}


def registry_error_class(status: int, codes: tuple[str, ...]) -> type[RegistryError]:
    """The most specific error class for an error status and its registry error codes."""
    if status == 429:
        return RateLimited
    for code in codes:
        if code in _BY_CODE:
            return _BY_CODE[code]
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, RegistryError)
