"""A Docker-style Bearer token server for tests (the flow Docker Hub, GHCR, Quay and Harbor use).

`GET /token?service=S&scope=repository:a/b:pull,push&scope=registry:catalog:*` with optional
Basic credentials answers `{"token", "access_token", "expires_in", "issued_at"}`. Tokens are
ES256 JWTs whose header carries an `x5c` chain issued by the test CA, the CA a registry's
`auth.token.rootcertbundle` points at. Each registry uses its own `service` (the token's `aud`),
so tests sharing this server can still tell their requests apart.

Granting follows the spec: the token holds the intersection of what was asked and what the user
may do, and asking for more than allowed is not an error. Wrong credentials are a 401.
It runs on `http.server` in a daemon thread, independent of any test's event loop.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt

from .pki import Pki, SigningIdentity

ALL_ACTIONS = frozenset({"pull", "push", "delete", "*"})
CATALOG = ("registry", "catalog")


@dataclass(frozen=True)
class Access:
    """One scope: `type:name:actions`, as asked for in a request or granted in a token."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, scope: str) -> Access:
        """Parse `repository:a/b:pull,push` (the name is everything between the outer colons)."""
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            raise ValueError(f"malformed scope {scope!r}")
        return cls(kind, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, Any]:
        """The JWT `access` entry for this scope."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class User:
    """A token-server account: `grants` maps repository-name globs to allowed actions."""

    password: str
    grants: Mapping[str, frozenset[str]]
    catalog: bool = True

    def __repr__(self) -> str:
        return f"User(password='***', grants={dict(self.grants)!r}, catalog={self.catalog})"


@dataclass(frozen=True)
class TokenRequest:
    """What one call to the token endpoint asked for and what it got."""

    user: str | None
    service: str | None
    requested: tuple[Access, ...]
    granted: tuple[Access, ...]
    status: int
    at: float = field(default_factory=time.time)

    def granted_actions(self, repository: str) -> frozenset[str]:
        """The actions this request's token carried on `repository`."""
        return frozenset(
            action
            for access in self.granted
            if access.type == "repository" and access.name == repository
            for action in access.actions
        )


def grant(requested: Access, grants: Mapping[str, frozenset[str]], catalog: bool) -> Access | None:
    """The part of `requested` that `grants` allow, or None when nothing is allowed."""
    if (requested.type, requested.name) == CATALOG:
        return requested if catalog else None
    if requested.type != "repository":
        return None
    allowed: set[str] = set()
    for pattern, actions in grants.items():
        if fnmatch.fnmatchcase(requested.name, pattern):
            allowed |= actions
    if "*" in allowed:
        allowed |= ALL_ACTIONS
    granted = tuple(a for a in requested.actions if a in allowed)
    return Access(requested.type, requested.name, granted) if granted else None


class TokenServer:
    """A token server on a free loopback port; `realm` goes into a registry's config."""

    def __init__(
        self,
        pki: Pki,
        *,
        lifetime: int = 300,
        issuer: str = "mirrord-test-token-server",
        username: str = "mirror",
    ) -> None:
        self.issuer = issuer
        self.lifetime = lifetime
        self.username = username
        self.password = secrets.token_urlsafe(12)
        self._identity: SigningIdentity = pki.signing_identity()
        self._lock = threading.Lock()
        self._users: dict[str, User] = {}
        self._anonymous: dict[str, frozenset[str]] = {}
        self._requests: list[TokenRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_user(username, self.password)

    def __repr__(self) -> str:
        return f"TokenServer(realm={self.realm!r}, issuer={self.issuer!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on 127.0.0.1 (free port) and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="token-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:PORT`."""
        if self._httpd is None:
            raise RuntimeError("token server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def realm(self) -> str:
        """The token endpoint, for `auth.token.realm`."""
        return f"{self.url}/token"

    # -- configuration ---------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str,
        grants: Mapping[str, Iterable[str]] | None = None,
        *,
        catalog: bool = True,
    ) -> None:
        """Add or replace an account; by default it may do anything on any repository."""
        allowed = {"*": ["*"]} if grants is None else grants
        user = User(password, {p: frozenset(a) for p, a in allowed.items()}, catalog)
        with self._lock:
            self._users[name] = user

    @contextmanager
    def anonymous_pull(self, *patterns: str) -> Iterator[None]:
        """Inside the block, requests without credentials may pull repositories matching
        these globs (the server is shared, so the permission never outlives the test)."""
        with self._lock:
            self._anonymous.update({p: frozenset({"pull"}) for p in patterns})
        try:
            yield
        finally:
            with self._lock:
                for pattern in patterns:
                    self._anonymous.pop(pattern, None)

    # -- issuing ---------------------------------------------------------------------------

    def issue(self, service: str, access: Iterable[Access], *, subject: str = "") -> str:
        """Sign a token for `service` carrying exactly `access` (also usable directly by tests)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service,
            "exp": now + self.lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [a.claim() for a in access],
        }
        return jwt.encode(
            claims, self._identity.key, algorithm="ES256", headers={"x5c": self._identity.x5c()}
        )

    def handle(self, authorization: str | None, query: str) -> tuple[int, dict[str, Any]]:
        """Answer one token request: (HTTP status, JSON body). Records it."""
        params = parse_qs(query)
        service = params.get("service", [None])[0]
        try:
            requested = tuple(Access.parse(s) for v in params.get("scope", []) for s in v.split())
        except ValueError as exc:
            return self._record(None, service, (), (), 400, {"details": str(exc)})
        user, grants, catalog = self._authenticate(authorization)
        if grants is None:
            return self._record(user, service, requested, (), 401, _error("UNAUTHORIZED"))
        if service is None:
            return self._record(user, service, requested, (), 400, {"details": "no service"})
        granted = tuple(g for r in requested if (g := grant(r, grants, catalog)) is not None)
        token = self.issue(service, granted, subject=user or "")
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime,
            "issued_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        return self._record(user, service, requested, granted, 200, body)

    def _authenticate(
        self, authorization: str | None
    ) -> tuple[str | None, Mapping[str, frozenset[str]] | None, bool]:
        with self._lock:
            if authorization is None:
                return None, dict(self._anonymous), False
            name, password = _basic_credentials(authorization)
            user = self._users.get(name or "")
        if user is None or not secrets.compare_digest(user.password, password):
            return name, None, False
        return name, user.grants, user.catalog

    def _record(
        self,
        user: str | None,
        service: str | None,
        requested: tuple[Access, ...],
        granted: tuple[Access, ...],
        status: int,
        body: dict[str, Any],
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._requests.append(TokenRequest(user, service, requested, granted, status))
        return status, body

    # -- inspection ------------------------------------------------------------------------

    def requests(self, service: str | None = None) -> list[TokenRequest]:
        """Token requests so far, oldest first, optionally only those for `service`."""
        with self._lock:
            return [r for r in self._requests if service is None or r.service == service]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()


def _basic_credentials(authorization: str) -> tuple[str | None, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None, ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    name, _, password = decoded.partition(":")
    return name, password


def _error(code: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": "authentication required", "detail": None}]}


class _Handler(BaseHTTPRequestHandler):
    server_state: TokenServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            self._reply(404, {"details": "not found"})
            return
        status, body = self.server_state.handle(self.headers.get("Authorization"), url.query)
        self._reply(status, body)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="mirrord-test-token-server"')
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; requests are recorded on the server instead."""
