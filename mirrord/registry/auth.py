"""Registry authentication: challenge parsing, Basic, and the Bearer token flow.

A registry's `GET /v2/` answers 401 with `WWW-Authenticate`. For `Basic` we send credentials on
every request; for `Bearer` we fetch a token from the challenge's realm for the scopes a request
needs and cache it per scope set until shortly before it expires. One token can carry several
scopes: a cross-repository mount asks for `repository:<dst>:pull,push` and
`repository:<src>:pull` in one request (push scope first: some registries read only the first).

The realm is server-controlled input: it must be https when the registry is, and must not point
at link-local/metadata addresses; it may be loopback only for a loopback registry.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from yarl import URL

from mirrord.errors import RedirectRefused, Unauthorized
from mirrord.registry.options import Credentials
from mirrord.secret import Secret

MIN_TOKEN_LIFETIME = 60.0
REFRESH_MARGIN = 20.0
Scopes = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lowercase: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def insufficient_scope(self) -> bool:
        """The token was accepted but lacks a permission the request needs (RFC 6750)."""
        return self.params.get("error") == "insufficient_scope"


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value (RFC 7235) into challenges; tolerant of odd spacing."""
    challenges: list[Challenge] = []
    pos, n = 0, len(header)
    while pos < n:
        pos = _skip(header, pos, " \t,")
        start = pos
        while pos < n and header[pos] not in " \t,=":
            pos += 1
        token = header[start:pos]
        if not token:
            break
        pos = _skip(header, pos, " \t")
        if pos < n and header[pos] == "=" and challenges:
            pos, value = _read_value(header, pos + 1)
            challenges[-1].params[token.lower()] = value
        else:
            challenges.append(Challenge(token.lower()))
    return challenges


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_value(text: str, pos: int) -> tuple[int, str]:
    pos = _skip(text, pos, " \t")
    if pos < len(text) and text[pos] == '"':
        out, pos = [], pos + 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            out.append(text[pos])
            pos += 1
        return pos + 1, "".join(out)
    start = pos
    while pos < len(text) and text[pos] not in ",":
        pos += 1
    return pos, text[start:pos].strip()


def pick_challenge(challenges: list[Challenge]) -> Challenge | None:
    """Prefer Bearer over Basic; ignore schemes we do not speak."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def token_request_header(creds: Credentials | None) -> str | None:
    """The Authorization of a token request (not an OAuth2 one): Basic only with both a
    username and a password, as containers/image asks for a token; otherwise anonymous."""
    if creds is None or not creds.username or not creds.password:
        return None
    return basic_header(creds.username, creds.password.reveal())


def scope_for(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def check_realm(realm: str, registry_url: URL) -> URL:
    """Validate a token realm against the registry that named it."""
    url = URL(realm)
    if url.scheme not in ("https", "http") or not url.host:
        raise RedirectRefused(f"token realm {_safe(url)} is not an http(s) URL")
    if url.scheme == "http" and registry_url.scheme == "https":
        raise RedirectRefused(f"token realm {_safe(url)} downgrades an https registry to http")
    if _forbidden_target(url.host, registry_url.host or ""):
        raise RedirectRefused(f"token realm {_safe(url)} points at a forbidden address")
    return url


def _safe(url: URL) -> str:
    return str(url.with_query(None).with_user(None))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a literal host names, in every spelling the resolver accepts: `127.1`,
    `2130706433` and `0x7f000001` are 127.0.0.1 to getaddrinfo, `::ffff:169.254.169.254` is
    169.254.169.254."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:  # inet_aton takes the short, decimal, octal and hex forms of IPv4
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_local_host(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def _forbidden_target(target: str, origin: str) -> bool:
    """Link-local/unspecified targets are never allowed; loopback only from a loopback origin."""
    ip = _ip(target)
    if ip is not None and (ip.is_link_local or ip.is_unspecified or ip.is_multicast):
        return True
    return is_local_host(target) and not is_local_host(origin)


def forbidden_redirect(target: URL, origin: URL) -> bool:
    if origin.scheme == "https" and target.scheme != "https":
        return True
    return _forbidden_target(target.host or "", origin.host or "")


@dataclass(slots=True)
class _Token:
    value: Secret
    expires_at: float


# fetch(realm, service, scopes, credentials) -> (token, lifetime seconds)
TokenFetcher = Callable[[URL, str, Scopes, Credentials | None], Awaitable[tuple[str, float]]]


class Authenticator:
    """Per-registry auth state: the challenge from the ping and a token cache per scope set."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        fetch: TokenFetcher,
        registry_token: Secret | None = None,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.registry_token = registry_token
        self._fetch = fetch
        self.challenge: Challenge | None = None
        self._tokens: dict[Scopes, _Token] = {}
        self._locks: dict[Scopes, asyncio.Lock] = {}
        self.token_fetches = 0

    def __repr__(self) -> str:
        return f"Authenticator({self.registry!r}, {self.credentials!r})"

    async def header(self, scopes: Scopes, registry_url: URL) -> str | None:
        """The Authorization header value for a request needing `scopes` (None = anonymous)."""
        if self.registry_token:
            return f"Bearer {self.registry_token.reveal()}"
        if self.challenge is None:
            return None
        if self.challenge.scheme == "basic":
            return self._basic()
        return f"Bearer {(await self._token(scopes, registry_url)).reveal()}"

    def _basic(self) -> str:
        # containers/image sends its DockerAuthConfig as it is: a username without a password
        # (skopeo sync's `credentials: {username: robot}`, `--creds robot`) is `robot:`.
        creds = self.credentials
        if creds is None:
            raise Unauthorized(
                f"{self.registry} requires credentials (Basic auth) and none were found",
                registry=self.registry,
                status=401,
            )
        return basic_header(creds.username, creds.password.reveal() if creds.password else "")

    async def _token(self, scopes: Scopes, registry_url: URL) -> Secret:
        cached = self._tokens.get(scopes)
        if cached and cached.expires_at > time.monotonic():
            return cached.value
        lock = self._locks.setdefault(scopes, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(scopes)
            if cached and cached.expires_at > time.monotonic():
                return cached.value
            assert self.challenge is not None
            realm = check_realm(self.challenge.realm, registry_url)
            service = self.challenge.params.get("service", "")
            value, lifetime = await self._fetch(realm, service, scopes, self.credentials)
            self.token_fetches += 1
            lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
            token = _Token(Secret(value), time.monotonic() + lifetime - REFRESH_MARGIN)
            self._tokens[scopes] = token
            return token.value

    def forget(self, scopes: Scopes) -> None:
        self._tokens.pop(scopes, None)

    @property
    def renewable(self) -> bool:
        """Whether a refused token can be replaced by another (Bearer from the token server;
        not Basic, not a fixed `--registry-token`)."""
        challenge = self.challenge
        return not self.registry_token and challenge is not None and challenge.scheme == "bearer"
