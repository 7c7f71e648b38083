"""How to reach one registry: TLS mode, certificates, credentials, limits.  [pure]"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mirrord.secret import Secret


class TLSMode(StrEnum):
    VERIFY = "verify"  # https, certificate verified (the default)
    INSECURE = "insecure"  # https, certificate not verified
    PLAIN_HTTP = "plain-http"  # http only
    # skopeo's `tls-verify: false`: https without verification, and plain http allowed when the
    # https ping fails. Kept so existing skopeo scripts work unchanged; mirrord warns when used.
    SKOPEO_NO_VERIFY = "skopeo-no-verify"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Inline credentials. `repr` never shows the password or token."""

    username: str = ""
    password: Secret | None = None
    identity_token: Secret | None = None
    origin: str = "inline"  # where they came from, for logs ("--src-creds", "auth.json", ...)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, origin={self.origin!r})"


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """Everything needed to talk to one registry host."""

    tls: TLSMode = TLSMode.VERIFY
    cert_dir: Path | None = None
    credentials: Credentials | None = None  # overrides the auth-file lookup when set
    authfile: Path | None = None  # explicit auth file (--authfile); None = default search
    no_creds: bool = False  # access anonymously even if an auth file has an entry
    registry_token: Secret | None = None  # a bearer token used as is
    requests_per_second: float | None = None
    connections: int | None = None
    ratelimit_floor: int | None = None  # pause manifest GETs when ratelimit-remaining <= floor
    request_attempts: int | None = None  # tries per request (--retry-times N: N+1); None: default
    # A pause longer than this ends the request with RegistryPaused instead of being waited out
    # (queued jobs: the slot goes to other work); None: wait (commands without a queue).
    defer_after: float | None = None
