"""Real CNCF Distribution registries (`docker-registry serve`) on loopback, one per need.

Variants:

    anonymous    plain HTTP, no auth
    basic        plain HTTP, htpasswd Basic auth (user `mirror`)
    token        plain HTTP, Bearer tokens from a `TokenServer`
    tls          HTTPS with a certificate from the test CA
    tls-client   HTTPS that also requires a client certificate from the test CA

A missing binary is an error, never a skip: a green run without the registry proves nothing.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, get_args

from .images import Image, ImageBuilder
from .pki import CertFiles, Pki
from .tokenserver import TokenServer

Variant = Literal["anonymous", "basic", "token", "tls", "tls-client"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
BINARY = "docker-registry"
USERNAME = "mirror"

_live: set[RegistryServer] = set()


class RegistryUnavailable(RuntimeError):
    """The registry binary (or a tool it needs) is missing, or the registry did not start."""


@dataclass(frozen=True)
class Credentials:
    """A username and password; the password never shows in a repr."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials({self.username!r}, '***')"

    def joined(self) -> str:
        """`user:password`, the form skopeo's `--creds` takes."""
        return f"{self.username}:{self.password}"

    def basic_auth(self) -> str:
        """An `Authorization` header value (aiohttp 3.14 deprecates `aiohttp.BasicAuth`)."""
        return "Basic " + base64.b64encode(self.joined().encode()).decode("ascii")


class RegistryServer:
    """One `docker-registry serve` process with its own config and storage under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        variant: Variant = "anonymous",
        *,
        pki: Pki | None = None,
        token_server: TokenServer | None = None,
        startup_timeout: float = 15.0,
        poll_interval: float = 0.02,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown registry variant {variant!r}; expected one of {VARIANTS}")
        if variant in ("tls", "tls-client") and pki is None:
            raise ValueError(f"variant {variant!r} needs a Pki")
        if variant == "token" and token_server is None:
            raise ValueError("variant 'token' needs a TokenServer")
        self.variant: Variant = variant
        self.workdir = workdir
        self.storage_dir = workdir / "storage"
        self.log_path = workdir / "registry.log"
        self.config_path = workdir / "config.yml"
        self.service = f"mirrord-test-{secrets.token_hex(4)}"
        self.startup_timeout = startup_timeout
        self.poll_interval = poll_interval
        self._pki = pki
        self._token_server = token_server
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self.creds: Credentials | None = None
        self.cert_dir: Path | None = None
        self.client_cert: CertFiles | None = None
        self.server_cert: CertFiles | None = None
        self._secret = secrets.token_hex(16)  # stable across restarts: upload URLs stay valid
        self._htpasswd: Path | None = None
        self._prepare()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RegistryServer({self.variant}, {self.url}, {state})"

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of an image reference."""
        return f"127.0.0.1:{self._port}"

    @property
    def tls(self) -> bool:
        """Whether the registry speaks HTTPS."""
        return self.variant in ("tls", "tls-client")

    @property
    def url(self) -> str:
        """`http(s)://127.0.0.1:PORT`."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def bytes_received(self) -> int:
        """Bytes the registry process has read so far (sockets and files: Linux `rchar`)."""
        assert self._process is not None, "the registry is not running"
        io = Path(f"/proc/{self._process.pid}/io").read_text()
        return int(next(line.split()[1] for line in io.splitlines() if line.startswith("rchar:")))

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client SSL context for this registry (with the client certificate if required)."""
        if self._pki is None or not self.tls:
            return None
        return self._pki.ssl_context(client=self.client_cert)

    def blob_path(self, digest: str) -> Path:
        """Where Distribution's filesystem driver keeps a blob's bytes."""
        algorithm, hexdigest = digest.split(":", 1)
        return (
            self.storage_dir
            / f"docker/registry/v2/blobs/{algorithm}/{hexdigest[:2]}/{hexdigest}/data"
        )

    def push_on_disk(self, repository: str, tag: str, image: Image, builder: ImageBuilder) -> None:
        """Store `image` as `repository:tag` the way a push leaves it on disk, hard-linking its
        blobs from the builder's store: for big layers, where a real push (skopeo) would write
        every byte again for a test that is about something else."""
        for digest in [*image.blobs, *image.manifests]:
            target = self.blob_path(digest)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(builder.blob_file(digest), target)
                except OSError:
                    shutil.copyfile(builder.blob_file(digest), target)
        repo_dir = self.storage_dir / "docker/registry/v2/repositories" / repository
        links = [("_layers", digest) for digest in image.blobs]
        links += [("_manifests/revisions", digest) for digest in image.manifests]
        for kind, digest in links:
            link = repo_dir / kind / digest.replace(":", "/") / "link"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_text(digest)
        self.tag_on_disk(repository, tag, image.digest)

    def tag_on_disk(self, repository: str, tag: str, digest: str) -> None:
        """Point `repository:tag` at an already-pushed manifest by writing storage links.

        Much faster than a push per tag when a test needs hundreds of tags; Distribution reads
        these links on every request (no cache is configured), so the tag is visible at once.
        """
        algorithm, hexdigest = digest.split(":", 1)
        manifests = self.storage_dir / "docker/registry/v2/repositories" / repository / "_manifests"
        if not (manifests / f"revisions/{algorithm}/{hexdigest}/link").exists():
            raise FileNotFoundError(f"{repository}@{digest} was never pushed to {self}")
        tag_dir = manifests / "tags" / tag
        for link in (tag_dir / "current/link", tag_dir / f"index/{algorithm}/{hexdigest}/link"):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_text(digest)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process on a free port (kept across restarts) and wait for `GET /v2/`."""
        if self.running:
            return
        binary = shutil.which(BINARY)
        if binary is None:
            raise RegistryUnavailable(
                f"{BINARY!r} is not on PATH: install the Debian package `docker-registry` "
                "(CNCF Distribution); the real-registry tests cannot run without it"
            )
        attempts = 1 if self._port else 3
        for attempt in range(attempts):
            if not self._port or attempt:
                self._port = _free_port()
            self._write_config()
            if self._launch(binary):
                _live.add(self)
                return
        raise RegistryUnavailable(f"{self} did not start; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the process (kill it if it lingers); storage stays for a restart."""
        process, self._process = self._process, None
        if process is None:
            return
        _live.discard(self)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port with the same storage."""
        self.stop()
        self.start()

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

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the registry's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- internals -------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        if self.variant == "basic":
            self.creds = Credentials(USERNAME, secrets.token_urlsafe(12))
            self._htpasswd = self.workdir / "htpasswd"
            self._htpasswd.write_text(_htpasswd_line(self.creds))
        elif self.variant == "token":
            assert self._token_server is not None
            server = self._token_server
            self.creds = Credentials(server.username, server.password)
        if self.tls:
            assert self._pki is not None
            name = self.service  # unique, unlike workdir names across pools
            self.server_cert = self._pki.server_cert(f"server-{name}")
            if self.variant == "tls-client":
                self.client_cert = self._pki.client_cert(f"client-{name}")
            self.cert_dir = self._pki.certs_d(name, client=self.client_cert)

    def _write_config(self) -> None:
        config = registry_config(
            addr=self.host,
            storage_dir=self.storage_dir,
            htpasswd=self._htpasswd,
            token=self._token_config(),
            secret=self._secret,
            server_cert=self.server_cert,
            client_ca=self._pki.ca_cert if self.variant == "tls-client" and self._pki else None,
        )
        # JSON is YAML, so no YAML writer is needed.
        self.config_path.write_text(json.dumps(config, indent=2))

    def _token_config(self) -> dict[str, str] | None:
        if self._token_server is None or self.variant != "token" or self._pki is None:
            return None
        return {
            "realm": self._token_server.realm,
            "service": self.service,
            "issuer": self._token_server.issuer,
            "rootcertbundle": str(self._pki.ca_cert),
        }

    def _launch(self, binary: str) -> bool:
        with self.log_path.open("ab") as log:
            log_start = log.tell()
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_registry_env(),
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self._listening(log_start) and self._answers():
                return True
            time.sleep(self.poll_interval)
        self.stop()
        raise RegistryUnavailable(
            f"{self} did not answer GET /v2/ within {self.startup_timeout}s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _listening(self, log_start: int) -> bool:
        # Other test runs share this machine: a free port can be taken between our probe and
        # the registry's bind, and then someone else would answer GET /v2/. Only trust the
        # port once this process has logged that it bound it.
        with self.log_path.open("rb") as log:
            log.seek(log_start)
            return f"listening on {self.host}".encode() in log.read()

    def _answers(self) -> bool:
        connection: http.client.HTTPConnection
        if self.tls:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self._port, timeout=1, context=self.ssl_context()
            )
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=1)
        try:
            connection.request("GET", "/v2/")
            with connection.getresponse() as response:
                response.read()
                return response.status in (200, 401)
        except OSError:
            return False
        finally:
            connection.close()


def registry_config(
    *,
    addr: str,
    storage_dir: Path,
    secret: str,
    htpasswd: Path | None = None,
    token: dict[str, str] | None = None,
    server_cert: CertFiles | None = None,
    client_ca: Path | None = None,
) -> dict[str, Any]:
    """The Distribution 2.8 configuration for one test registry."""
    http_section: dict[str, Any] = {"addr": addr, "secret": secret}
    if server_cert is not None:
        tls: dict[str, Any] = {"certificate": str(server_cert.cert), "key": str(server_cert.key)}
        if client_ca is not None:
            tls["clientcas"] = [str(client_ca)]
        http_section["tls"] = tls
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http_section,
        "health": {"storagedriver": {"enabled": False}},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "mirrord-test", "path": str(htpasswd)}}
    elif token is not None:
        config["auth"] = {"token": token}
    return config


def _htpasswd_line(creds: Credentials) -> str:
    binary = shutil.which("htpasswd")
    if binary is None:
        raise RegistryUnavailable("`htpasswd` is not on PATH: install Debian `apache2-utils`")
    result = subprocess.run(
        [binary, "-Bbn", creds.username, creds.password],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout.decode().strip() + "\n"


def _registry_env() -> dict[str, str]:
    """The environment of a registry process: Go's collector less eager than its default.

    Distribution 2.8 compiles its route regexps on every request (fixed in 3.0); with Go's
    default GOGC=100 the garbage that leaves costs ~3.5 ms of CPU per request, taken from the
    2 CPUs the client under test shares with both registries. GOGC=400 halves that, for
    ~20 MiB more memory per registry.
    """
    return {**os.environ, "GOGC": os.environ.get("GOGC", "400")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@atexit.register
def _stop_leftovers() -> None:
    # A last resort for interrupted sessions; fixtures normally stop every registry.
    for server in list(_live):
        server.stop()


class MakeRegistry(Protocol):
    """What the `make_registry` / `shared_registry` fixtures hand a test."""

    def __call__(self, variant: Variant = "anonymous") -> RegistryServer: ...


class RegistryPool:
    """Starts registries under `root` (fresh or shared per variant) and stops them all."""

    def __init__(self, root: Path, pki: Pki, token_server: TokenServer | None = None) -> None:
        self.root = root
        self._pki = pki
        self._token_server = token_server
        self._started: list[RegistryServer] = []
        self._shared: dict[Variant, RegistryServer] = {}

    def start(self, variant: Variant = "anonymous") -> RegistryServer:
        """A new, empty, running registry of `variant`."""
        workdir = self.root / f"{variant}-{len(self._started)}"
        server = RegistryServer(workdir, variant, pki=self._pki, token_server=self._token_server)
        self._started.append(server)
        server.start()
        return server

    def shared(self, variant: Variant = "anonymous") -> RegistryServer:
        """One registry per variant for the pool's lifetime (restarted if it died)."""
        server = self._shared.get(variant)
        if server is None:
            server = self._shared[variant] = self.start(variant)
        elif not server.running:
            server.start()
        return server

    def close(self) -> None:
        """Stop every registry this pool started, even if stopping one fails."""
        errors: list[BaseException] = []
        for server in self._started:
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        self._started.clear()
        self._shared.clear()
        if errors:
            raise errors[0]
