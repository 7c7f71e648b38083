"""TLS per registry: certs.d semantics, and the verify / insecure / plain-http modes.

A certs.d directory holds `*.crt` files (extra CAs) and `*.cert` + `*.key` client pairs. A
configured directory that cannot be read fails closed; a `.cert` without its `.key` (or the
reverse) is a configuration error, as in containers/image.
"""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path

from mirrord.errors import ConfigError
from mirrord.registry.options import RegistryOptions, TLSMode

log = logging.getLogger(__name__)

DEFAULT_CERTS_D = (
    Path("/etc/containers/certs.d"),
    Path("/etc/docker/certs.d"),
)


def cert_dir_for(host: str, options: RegistryOptions) -> Path | None:
    """The certs.d directory for `host`: the configured one, else the system default if any."""
    if options.cert_dir is not None:
        return options.cert_dir
    for base in DEFAULT_CERTS_D:
        candidate = base / host
        if candidate.is_dir():
            return candidate
    return None


def check_cert_dir(path: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """Validate a certs.d directory; return (CA files, client (cert, key) pairs)."""
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        raise ConfigError(f"cert-dir {path}: cannot read it ({exc.strerror})") from None
    cas = [p for p in entries if p.suffix == ".crt"]
    certs = {p.stem: p for p in entries if p.suffix == ".cert"}
    keys = {p.stem: p for p in entries if p.suffix == ".key"}
    for stem in sorted(set(certs) ^ set(keys)):
        missing = f"{stem}.key" if stem in certs else f"{stem}.cert"
        raise ConfigError(f"cert-dir {path}: {missing} is missing (client pairs need both files)")
    return cas, [(certs[s], keys[s]) for s in sorted(certs)]


@functools.lru_cache(maxsize=64)
def _context(cert_dir: Path | None, verify: bool) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context()
    else:
        # Nothing is verified, so the system CA store (~0.1 s of CPU to load) is not needed.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_dir is None:
        return ctx
    cas, pairs = check_cert_dir(cert_dir)
    try:
        for ca in cas:
            ctx.load_verify_locations(cafile=str(ca))
        for cert, key in pairs:
            ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cert-dir {cert_dir}: {exc}") from None
    return ctx


def ssl_context(host: str, options: RegistryOptions) -> ssl.SSLContext | None:
    """The SSL context for https requests to `host`; None for plain-http registries."""
    if options.tls is TLSMode.PLAIN_HTTP:
        return None
    verify = options.tls is TLSMode.VERIFY
    return _context(cert_dir_for(host, options), verify)


_warned: set[tuple[str, TLSMode]] = set()


def warn_if_insecure(host: str, options: RegistryOptions) -> None:
    """Warn once per process and registry about a TLS mode weaker than `verify`."""
    if options.tls is TLSMode.VERIFY or (host, options.tls) in _warned:
        return
    _warned.add((host, options.tls))
    if options.tls is TLSMode.SKOPEO_NO_VERIFY:
        log.warning(
            "registry %s: tls-verify=false: certificates are not verified and plain HTTP is "
            "allowed (skopeo's meaning); prefer `tls: insecure` or `tls: plain-http`",
            host,
        )
    else:
        log.warning("registry %s: TLS mode %s", host, options.tls.value)
