"""HTTP to one registry in one role: the session, redirects by hand, auth, pacing, errors.

Each (registry, role) pair gets its own aiohttp session and connection pool, so a copy between
two repositories of one registry never has its GETs and PUTs wait on each other's connections.
Sessions send and keep raw bytes (`auto_decompress=False`, `Accept-Encoding: identity`) and have
no total timeout (long blob streams are normal), only connect and idle-read timeouts.

Redirects are followed here, never by aiohttp: `Authorization` is attached only to requests for
the registry's own origin (scheme, host and port), https->http and redirects to link-local (or
from a remote registry to loopback) are refused.

Foreign exceptions become mirrord errors in `mapped_errors`, the single boundary for aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from typing import NoReturn

import aiohttp
from asyncio_throttle import Throttler  # type: ignore[attr-defined]
from yarl import URL

from mirrord import __version__
from mirrord.errors import (
    ConnectionFailed,
    MirrordError,
    RateLimited,
    RedirectRefused,
    RegistryError,
    RegistryPaused,
    RequestTimeout,
    TLSFailure,
    Unauthorized,
    UploadUnauthorized,
    registry_error_class,
)
from mirrord.redact import redact_url
from mirrord.registry import tls
from mirrord.registry.auth import (
    Authenticator,
    Challenge,
    Scopes,
    forbidden_redirect,
    parse_challenges,
    pick_challenge,
    token_request_header,
)
from mirrord.registry.credentials import lookup
from mirrord.registry.events import NULL_OBSERVER, Observer
from mirrord.registry.options import Credentials, RegistryOptions, TLSMode
from mirrord.retry import (
    REQUEST_BACKOFF,
    BackoffPolicy,
    parse_ratelimit,
    parse_retry_after,
    retry_delay,
)

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
ERROR_BODY_CAP = 64 * 1024
TOKEN_BODY_CAP = 1024 * 1024
TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=60)  # a token answer is small: a stalled server fails
DEFAULT_CONNECTIONS = 32
QUOTA_PAUSE = 300.0  # seconds between looks at an exhausted pull quota (regsync's minimum)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
LONG_WAIT = 30.0  # seconds: a retry waiting this long is logged as a warning
MAX_PAUSE = 900.0  # the longest Retry-After obeyed: a bogus "1 day" must not stall a registry

# A request body: nothing, bytes (replayable), or a one-shot stream (never retried).
Body = bytes | AsyncIterable[bytes] | None


def api_host(host: str) -> str:
    """The host serving the API: Docker Hub's canonical name is not its API endpoint."""
    return "registry-1.docker.io" if host == "docker.io" else host


class Gate:
    """Pacing shared by every request to one registry: Retry-After pauses and an RPS limit.

    With `defer_after`, a pause longer than that is not waited out: `wait` raises
    `RegistryPaused`, and a queued job goes back to the queue until the pause ends.
    """

    def __init__(
        self, requests_per_second: float | None, host: str = "", defer_after: float | None = None
    ) -> None:
        self._host = host
        self._defer_after = defer_after
        self._paused_until = 0.0
        self._manifests_paused_until = 0.0
        self.quota_unconfirmed = False  # manifest GETs wait for a HEAD to show the quota moved
        self._throttler = (
            Throttler(rate_limit=max(1, round(requests_per_second)), period=1.0)
            if requests_per_second
            else None
        )

    async def wait(self, method_class: str) -> None:
        while (delay := self._delay(method_class)) > 0:
            if (paused := self.deferral(delay)) is not None:
                raise paused
            await asyncio.sleep(delay)
        if self._throttler is not None:
            async with self._throttler:
                pass

    def _delay(self, method_class: str) -> float:
        until = self._paused_until
        if method_class == "manifest_get":
            until = max(until, self._manifests_paused_until)
        return until - time.monotonic()

    def deferral(self, delay: float) -> RegistryPaused | None:
        """The error that defers a wait of `delay` seconds, if it is too long to wait out."""
        if self._defer_after is None or delay <= self._defer_after:
            return None
        return RegistryPaused(
            f"{self._host}: the registry asked for a pause of {delay:.0f} s more "
            "(Retry-After or its pull quota); the job waits in the queue, not in a slot",
            retry_after=delay,
            registry=self._host,
        )

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def pause_manifest_gets(self, seconds: float) -> bool:
        """Pause manifest GETs until a look at the quota says it moved; True if they were not
        paused already."""
        was_running = not self.quota_unconfirmed
        self.quota_unconfirmed = True
        self._manifests_paused_until = max(self._manifests_paused_until, time.monotonic() + seconds)
        return was_running

    def resume_manifest_gets(self) -> None:
        self.quota_unconfirmed = False
        self._manifests_paused_until = 0.0

    @property
    def backoff_remaining(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())


@contextlib.contextmanager
def mapped_errors(host: str, what: str) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientConnectorCertificateError as exc:
        raise TLSFailure(
            f"{host}: TLS certificate verification failed ({exc.certificate_error}); "
            "configure cert-dir with the registry's CA, or tls-verify=false"
        ) from None
    except (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError, ssl.SSLError) as exc:
        reason = _ssl_reason(exc)
        raise TLSFailure(
            f"{host}: TLS handshake failed ({reason}){_cert_hint(reason)}{_plain_hint(reason)}"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        raise ConnectionFailed(f"{host}: cannot connect ({reason})") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise RequestTimeout(f"{host}: {what}: timed out") from None
    except aiohttp.ServerDisconnectedError:
        raise ConnectionFailed(f"{host}: {what}: server closed the connection") from None
    except aiohttp.ClientPayloadError:
        raise ConnectionFailed(f"{host}: {what}: response body was cut short") from None
    except aiohttp.ClientOSError as exc:
        # A TLS alert after the handshake (TLS 1.3 servers reject a missing or unknown client
        # certificate only then) reaches us as a plain OSError carrying the SSL message.
        if (alert := _tls_alert(exc)) is not None:
            raise TLSFailure(f"{host}: TLS handshake failed ({alert}){_cert_hint(alert)}") from None
        reason = exc.strerror or type(exc).__name__
        raise ConnectionFailed(f"{host}: {what}: connection failed ({reason})") from None
    except aiohttp.ClientError as exc:
        raise ConnectionFailed(f"{host}: {what}: {type(exc).__name__}") from None


def _ssl_reason(exc: BaseException) -> str:
    inner = getattr(exc, "os_error", None) or exc
    reason = getattr(inner, "reason", None) or type(inner).__name__
    return str(reason).lower().replace("_", " ")


def _plain_hint(reason: str) -> str:
    # What an HTTPS client reads when the server answers in plain HTTP.
    if "wrong version number" not in reason and "record layer failure" not in reason:
        return ""
    return "; the registry may speak plain HTTP (tls-verify=false, or tls: plain-http)"


_SSL_MESSAGE = re.compile(r"\[SSL: [A-Z0-9_]+\] (?P<reason>.*?)(?: \(_ssl\.c:\d+\))?$")


def _tls_alert(exc: OSError) -> str | None:
    """The reason of an SSL error wrapped in an OSError, or None when it is not one."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError):
        return str(cause.reason or cause).lower().replace("_", " ")
    match = _SSL_MESSAGE.search(str(exc.strerror or exc))
    return match.group("reason").lower() if match else None


def _cert_hint(alert: str) -> str:
    if "certificate" not in alert:
        return ""
    return (
        "; the registry refused the client certificate or wants one: "
        "put client.cert and client.key in cert-dir"
    )


async def read_capped(
    resp: aiohttp.ClientResponse, cap: int, what: str, host: str | None = None
) -> bytes:
    """Read a whole body but never more than `cap` bytes (hostile registries send endless ones)."""
    where = f"{host or resp.url.host}: {what}"
    if resp.content_length is not None and resp.content_length > cap:
        raise RegistryError(
            f"{where}: response of {resp.content_length} bytes is larger than the {cap} allowed",
            registry=host or "",
            status=resp.status,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > cap:
            raise RegistryError(
                f"{where}: response larger than the {cap} bytes allowed",
                registry=host or "",
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_error_body(body: bytes) -> tuple[tuple[str, ...], str]:
    """Registry error codes and the first message from a `{"errors": [...]}` body."""
    try:
        errors = json.loads(body).get("errors") or []
        codes = tuple(str(e.get("code", "")).upper() for e in errors if isinstance(e, dict))
        message = next((str(e.get("message", "")) for e in errors if isinstance(e, dict)), "")
    except (ValueError, AttributeError, RecursionError):
        return (), ""
    return tuple(c for c in codes if c), message[:300]


class RegistryHttp:
    """HTTP access to one registry host in one role ("source" or "destination")."""

    def __init__(
        self,
        host: str,
        options: RegistryOptions,
        *,
        role: str = "source",
        observer: Observer = NULL_OBSERVER,
        backoff: BackoffPolicy = REQUEST_BACKOFF,
        repository: str | None = None,
    ) -> None:
        self.host = host
        self.options = options
        self.role = role
        self.observer = observer
        self.backoff = (
            backoff
            if options.request_attempts is None
            else dataclasses.replace(backoff, attempts=options.request_attempts)
        )
        self.gate = Gate(options.requests_per_second, host, options.defer_after)
        # With a repository, an auth-file entry for its namespace (`host/ns`) applies too.
        self.auth = Authenticator(
            host, lookup(host, repository, options), self._fetch_token, options.registry_token
        )
        self._session: aiohttp.ClientSession | None = None
        self._base: URL | None = None
        self._ready = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RegistryHttp({self.host!r}, role={self.role!r}, tls={self.options.tls.value})"

    @property
    def credentials(self) -> Credentials | None:
        return self.auth.credentials

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.options.connections or DEFAULT_CONNECTIONS,
            ttl_dns_cache=300,
            keepalive_timeout=60,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            requote_redirect_url=False,
            read_bufsize=1 << 20,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
            headers={"User-Agent": f"mirrord/{__version__}", "Accept-Encoding": "identity"},
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._new_session()
        return self._session

    async def base_url(self) -> URL:
        """The registry's base URL, pinging it once to learn the scheme and auth challenge."""
        if self._base is not None:
            return self._base
        async with self._ready:
            if self._base is None:
                self._base = await self._ping()
        return self._base

    async def _ping(self) -> URL:
        tls.warn_if_insecure(self.host, self.options)
        schemes = {
            TLSMode.PLAIN_HTTP: ("http",),
            TLSMode.SKOPEO_NO_VERIFY: ("https", "http"),
        }.get(self.options.tls, ("https",))
        for i, scheme in enumerate(schemes):
            base = URL(f"{scheme}://{api_host(self.host)}/")
            try:
                await self._ping_once(base)
            except (ConnectionFailed, TLSFailure, RequestTimeout):
                if i + 1 == len(schemes):
                    raise
                continue
            # skopeo's no-verify ends up as one of the plain modes: report the one in effect.
            reached = TLSMode.PLAIN_HTTP if scheme == "http" else self.options.tls
            if reached is TLSMode.SKOPEO_NO_VERIFY:
                reached = TLSMode.INSECURE
            self.observer.tls_mode(self.host, reached.value)
            return base
        raise AssertionError("unreachable")

    async def _ping_once(self, base: URL) -> None:
        url = base / "v2/"
        with mapped_errors(self.host, "ping"):
            async with self.session.get(url, allow_redirects=False, ssl=self._ssl_for(url)) as resp:
                self.observer.request(self.host, "ping", resp.status)
                if resp.status == 401:
                    self.auth.challenge = pick_challenge(
                        parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                    )
                    return
                if resp.status == 200:
                    return
                body = await read_capped(resp, ERROR_BODY_CAP, "ping", self.host)
        codes, message = parse_error_body(body)
        raise registry_error_class(resp.status, codes)(
            f"{self.host}: not a registry (GET /v2/ answered {resp.status} {message})".strip(),
            registry=self.host,
            status=resp.status,
        )

    def _ssl_for(self, url: URL) -> ssl.SSLContext | bool:
        """The registry's TLS settings, also for the hosts it sends us to (its token server,
        blob storage, an upload Location), as containers/image applies them: a private
        registry's storage or token server is usually behind the same private CA."""
        if url.scheme != "https":
            return False
        ctx = tls.ssl_context(self.host, self.options)
        return ctx if ctx is not None else True

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        path: str | URL,
        *,
        scopes: Scopes,
        method_class: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        expect: tuple[int, ...] = (200,),
        retry: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request (retrying transient failures when the body can be replayed).

        Yields the response once its status is in `expect`; any other status raises the
        matching RegistryError. The caller reads the body inside the `async with`. With
        `retry=False` one attempt is made (a best-effort request must not wait out backoffs).
        """
        streamed = not (body is None or isinstance(body, bytes))
        replayable = retry and not streamed
        attempt = 0
        while True:
            try:
                resp = await self._send(method, path, scopes, method_class, what, headers, body)
                if resp.status not in expect:
                    await self._raise_for_status(resp, method, what, streamed)
                break
            except MirrordError as exc:
                attempt += 1
                if not (exc.transient and replayable and attempt < self.backoff.attempts):
                    raise
                delay = retry_delay(exc, attempt, self.backoff)
                if isinstance(exc, RateLimited) and (paused := self.gate.deferral(delay)):
                    log.warning("%s: %s: %s; its jobs wait in the queue", self.host, what, exc)
                    raise paused from exc
                level = logging.WARNING if delay >= LONG_WAIT else logging.INFO  # seen, not silent
                log.log(
                    level, "%s: %s: %s; retry %d in %.1fs", self.host, what, exc, attempt, delay
                )
                await asyncio.sleep(delay)
        try:
            yield resp
        finally:
            resp.release()

    async def _send(
        self,
        method: str,
        path: str | URL,
        scopes: Scopes,
        method_class: str,
        what: str,
        headers: Mapping[str, str] | None,
        body: Body,
    ) -> aiohttp.ClientResponse:
        base = await self.base_url()
        url = path if isinstance(path, URL) else base.join(URL(path, encoded=True))
        for retry_auth in (True, False):
            await self.gate.wait(method_class)
            if method_class == "manifest_get" and self.gate.quota_unconfirmed:
                await self._confirm_quota(url, scopes, what, headers)
            resp = await self._follow(
                method, url, scopes, method_class, what, dict(headers or {}), body
            )
            if resp.status != 401 or resp.url.origin() != base.origin():
                # A 401 from where a redirect led (a CDN, storage): its challenge is not the
                # registry's, and answering it would hand the registry's credentials to that host.
                return resp
            if not (body is None or isinstance(body, bytes)):
                # A stream cannot be sent again: the refused token is forgotten (it expired while
                # the body streamed, most likely), so the caller's restart gets a new one.
                self._learn_challenge(resp, scopes)
                return resp
            if not retry_auth:
                return resp
            scopes = self._learn_challenge(resp, scopes)
            resp.release()
        return resp

    async def _confirm_quota(
        self, url: URL, scopes: Scopes, what: str, headers: Mapping[str, str] | None
    ) -> None:
        """After a quota pause, read the figure with a HEAD (free) before a GET spends a pull:
        still at the floor, the pause starts over (the waiting GETs would otherwise all go at
        once and empty the quota); no figure in the answer, the GETs go on."""
        while self.gate.quota_unconfirmed:
            resp = await self._follow(
                "HEAD", url, scopes, "manifest_head", what, dict(headers or {}), None
            )
            resp.release()
            if "ratelimit-remaining" not in resp.headers:
                self.gate.resume_manifest_gets()
            await self.gate.wait("manifest_get")

    def _learn_challenge(self, resp: aiohttp.ClientResponse, scopes: Scopes) -> Scopes:
        """After a 401: adopt the registry's (new) challenge and forget the rejected token,
        unless the registry only wants a scope it lacks (`insufficient_scope`: cancelling an
        upload needs `delete`): that token stays good for the requests it was made for."""
        challenge = pick_challenge(parse_challenges(resp.headers.get("WWW-Authenticate", "")))
        if challenge is None:
            self.auth.forget(scopes)
            return scopes
        self.auth.challenge = challenge
        if not challenge.insufficient_scope:
            self.auth.forget(scopes)
        extra = challenge.params.get("scope")
        if extra and extra not in scopes:
            return (*scopes, extra)
        return scopes

    async def _follow(
        self,
        method: str,
        url: URL,
        scopes: Scopes,
        method_class: str,
        what: str,
        headers: dict[str, str],
        body: Body,
    ) -> aiohttp.ClientResponse:
        origin = (await self.base_url()).origin()
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if url.origin() == origin and (auth := await self.auth.header(scopes, origin)):
                sent["Authorization"] = auth
            with mapped_errors(self._where(url, origin), what):
                resp = await self.session.request(
                    method,
                    url,
                    headers=sent,
                    data=body,
                    allow_redirects=False,
                    ssl=self._ssl_for(url),
                )
            self.observer.request(self.host, method_class, resp.status)
            self._observe_ratelimit(resp)
            if resp.status not in REDIRECT_STATUSES or "Location" not in resp.headers:
                return resp
            resp.release()
            try:
                target = url.join(URL(resp.headers["Location"], encoded=True))
            except ValueError:
                raise RedirectRefused(f"{self.host}: {what}: redirect to an invalid URL") from None
            if forbidden_redirect(target, url):
                raise RedirectRefused(
                    f"{self.host}: {what}: refused redirect to {redact_url(target)}"
                )
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            elif body is not None and not isinstance(body, bytes):
                raise RedirectRefused(
                    f"{self.host}: {what}: cannot replay a streamed body on redirect"
                )
            url = target
        raise RedirectRefused(f"{self.host}: {what}: more than {MAX_REDIRECTS} redirects")

    def _where(self, url: URL, origin: URL) -> str:
        """Who an error happened at: the registry, or the host it redirected us to (never the
        rest of that URL: a signed storage address carries its signature in the query)."""
        if url.origin() == origin:
            return self.host
        return f"{self.host} (redirected to {url.host_port_subcomponent})"

    def _observe_ratelimit(self, resp: aiohttp.ClientResponse) -> None:
        """Docker Hub's pull quota: below the floor, manifest GETs (which spend it) pause;
        HEADs (free) keep reading the figure and lift the pause once the window has moved."""
        remaining = parse_ratelimit(resp.headers.get("ratelimit-remaining"))
        if remaining is None:
            return
        self.observer.ratelimit_remaining(self.host, remaining)
        floor = self.options.ratelimit_floor
        if floor is None:
            return
        if remaining > floor:
            self.gate.resume_manifest_gets()
        elif self.gate.pause_manifest_gets(QUOTA_PAUSE):
            log.warning(
                "%s: ratelimit-remaining %d <= floor %d: pausing manifest pulls",
                self.host,
                remaining,
                floor,
            )

    async def _raise_for_status(
        self, resp: aiohttp.ClientResponse, method: str, what: str, streamed: bool = False
    ) -> NoReturn:
        try:
            body = await read_capped(resp, ERROR_BODY_CAP, what, self.host)
        except (MirrordError, aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            resp.release()
        codes, message = parse_error_body(body)
        cls = registry_error_class(resp.status, codes)
        detail = f"{', '.join(codes) or resp.reason or 'error'}"
        if message:
            detail += f": {message}"
        text = f"{self.host}: {what}: {resp.status} {detail}"
        if cls is RateLimited:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            self._pause_for(retry_after)
            raise RateLimited(
                text, retry_after=retry_after, registry=self.host, status=resp.status, codes=codes
            )
        if cls is Unauthorized:
            challenge = pick_challenge(parse_challenges(resp.headers.get("WWW-Authenticate", "")))
            text += self._auth_hint(challenge)
            if streamed and self._renewable_refusal(resp, challenge):
                # The registry refused the token of a streamed upload (_send forgot it): the
                # upload can start over, with a new token.
                cls = UploadUnauthorized
        raise cls(text, registry=self.host, status=resp.status, codes=codes)

    def _renewable_refusal(self, resp: aiohttp.ClientResponse, challenge: Challenge | None) -> bool:
        """A 401 from the registry itself to a token that a new one could replace: not one
        that lacks a permission (a new token would lack it too)."""
        if not self.auth.renewable or not self._from_registry(resp):
            return False
        return challenge is None or not challenge.insufficient_scope

    def _from_registry(self, resp: aiohttp.ClientResponse) -> bool:
        return self._base is not None and resp.url.origin() == self._base.origin()

    def _pause_for(self, retry_after: float | None) -> None:
        pause = None if retry_after is None else min(retry_after, MAX_PAUSE)
        self.observer.rate_limited(self.host, pause)
        if pause is not None:
            self.gate.pause(pause)

    def _auth_hint(self, challenge: Challenge | None = None) -> str:
        creds = self.auth.credentials
        if creds is None and self.auth.registry_token:
            return " (the bearer token given with --registry-token was refused)"
        if creds is None:
            return " (no credentials were found for this registry)"
        who = f"user {creds.username!r}" if creds.username else "the identity token"
        if challenge is not None and challenge.insufficient_scope:
            # The token server took the credentials but granted less than the request needs.
            wanted = challenge.params.get("scope") or "this request"
            return f" ({who} from {creds.origin} is not granted {wanted})"
        return f" (credentials of {who} from {creds.origin} were refused)"

    async def _fetch_token(
        self, realm: URL, service: str, scopes: Scopes, creds: Credentials | None
    ) -> tuple[str, float]:
        if creds is not None and creds.identity_token is not None:
            return await self._oauth_token(realm, service, scopes, creds)
        query = [("service", service)] if service else []
        query += [("scope", s) for s in scopes]
        headers = {}
        if authorization := token_request_header(creds):
            headers["Authorization"] = authorization
        with mapped_errors(realm.host or self.host, "token request"):
            async with self.session.get(
                realm.extend_query(query),  # a realm may carry a query of its own
                headers=headers,
                allow_redirects=False,
                ssl=self._ssl_for(realm),
                timeout=TOKEN_TIMEOUT,
            ) as resp:
                self.observer.request(self.host, "token", resp.status)
                body = await read_capped(resp, TOKEN_BODY_CAP, "token request", self.host)
        return self._token_from(resp, body)

    async def _oauth_token(
        self, realm: URL, service: str, scopes: Scopes, creds: Credentials
    ) -> tuple[str, float]:
        assert creds.identity_token is not None
        form = {
            "grant_type": "refresh_token",
            "refresh_token": creds.identity_token.reveal(),
            "service": service,
            "client_id": "mirrord",
            "scope": " ".join(scopes),
        }
        with mapped_errors(realm.host or self.host, "token request"):
            async with self.session.post(
                realm,
                data=form,
                allow_redirects=False,
                ssl=self._ssl_for(realm),
                timeout=TOKEN_TIMEOUT,
            ) as resp:
                self.observer.request(self.host, "token", resp.status)
                body = await read_capped(resp, TOKEN_BODY_CAP, "token request", self.host)
        return self._token_from(resp, body)

    def _token_from(self, resp: aiohttp.ClientResponse, body: bytes) -> tuple[str, float]:
        status = resp.status
        if status in (401, 403):
            raise Unauthorized(
                f"{self.host}: authentication failed: the token server answered {status}{self._auth_hint()}",
                registry=self.host,
                status=status,
            )
        if status != 200:
            text = f"{self.host}: token server answered {status}"
            cls = registry_error_class(status, ())
            if cls is RateLimited:  # the registry's own answer: the same shared pause
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                self._pause_for(retry_after)
                raise RateLimited(text, retry_after=retry_after, registry=self.host, status=status)
            raise cls(text, registry=self.host, status=status)
        try:
            data = json.loads(body)
            token = str(data.get("token") or data.get("access_token") or "")
            lifetime = float(data.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = "", 0.0
        if not token:
            raise Unauthorized(
                f"{self.host}: token server sent no token", registry=self.host, status=status
            )
        return token, lifetime


StreamFactory = Callable[[], AsyncIterable[bytes]]
