"""Per-registry settings gathered from every file, checked for conflicts, made RegistryOptions.

Secrets are read here, once, at load time: `password-file` and `password-env` become `Secret`s.
A file that holds a secret and is readable by group or others gets a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator

from mirrord.config.fields import Model, TLSChoice
from mirrord.config.problems import Invalid
from mirrord.registry.options import Credentials, RegistryOptions, TLSMode
from mirrord.secret import Secret

log = logging.getLogger(__name__)

_KEY_NAMES = {
    "tls": "tls/tls-verify",
    "cert_dir": "cert-dir",
    "credentials": "credentials",
    "ratelimit_floor": "ratelimit-floor",
    "requests_per_second": "requests-per-second",
    "connections": "connections",
}


class CredentialsSpec(Model):
    """mirrord's credentials: the password inline, from a file, or from an environment variable."""

    username: str = ""
    password: SecretStr | None = None
    password_file: str | None = Field(None, alias="password-file")
    password_env: str | None = Field(None, alias="password-env")
    identitytoken: SecretStr | None = None

    @model_validator(mode="after")
    def _one_password(self) -> CredentialsSpec:
        given = [self.password, self.password_file, self.password_env]
        if sum(v is not None for v in given) > 1:
            raise ValueError("give one of password, password-file and password-env")
        return self


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """What the configuration says about one registry host; None = not said here."""

    tls: TLSMode | None = None
    cert_dir: Path | None = None
    credentials: Credentials | None = None
    ratelimit_floor: int | None = None
    requests_per_second: float | None = None
    connections: int | None = None


def tls_mode(tls: TLSChoice | None, tls_verify: bool | None) -> TLSMode | None:
    """mirrord's `tls` wins over skopeo's `tls-verify` (so a file can stay valid for skopeo)."""
    if tls is not None:
        return TLSMode(tls.value)
    if tls_verify is None:
        return None
    return TLSMode.VERIFY if tls_verify else TLSMode.SKOPEO_NO_VERIFY


def _comparable(value: Any) -> Any:
    if isinstance(value, Credentials):
        return (value.username, value.password, value.identity_token)
    return value


class RegistryTable:
    """Settings per host, merged across files; a setting given twice must agree."""

    def __init__(self) -> None:
        self._settings: dict[str, dict[str, Any]] = {}
        self._origins: dict[tuple[str, str], str] = {}

    def add(self, host: str, settings: RegistrySettings, origin: str) -> list[str]:
        """Merge `settings` for `host`; return a message per conflicting setting."""
        known = self._settings.setdefault(host, {})
        conflicts = []
        for f in fields(settings):
            value = getattr(settings, f.name)
            if value is None:
                continue
            if f.name in known and _comparable(known[f.name]) != _comparable(value):
                first = self._origins[(host, f.name)]
                key = _KEY_NAMES[f.name]
                conflicts.append(f"{host} is configured twice with different {key} (see {first})")
                continue
            known.setdefault(f.name, value)
            self._origins.setdefault((host, f.name), origin)
        return conflicts

    def get(self, host: str) -> RegistrySettings:
        return RegistrySettings(**self._settings.get(host, {}))

    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted(self._settings))


def registry_options(
    settings: RegistrySettings, requests_per_second: float | None, connections: int | None
) -> RegistryOptions:
    """RegistryOptions for one host; limits not set for the host come from the defaults."""
    rps = settings.requests_per_second
    return RegistryOptions(
        tls=settings.tls or TLSMode.VERIFY,
        cert_dir=settings.cert_dir,
        credentials=settings.credentials,
        requests_per_second=rps if rps is not None else requests_per_second,
        connections=settings.connections if settings.connections is not None else connections,
        ratelimit_floor=settings.ratelimit_floor,
    )


def warn_if_exposed(path: Path, what: str) -> None:
    """Log a warning when a file holding secrets can be read by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s %s is readable by group or others (mode %03o): chmod 600 it",
            what,
            path,
            stat.S_IMODE(mode),
        )


def read_secret_file(path: Path) -> Secret:
    """The first line of `path` (what skopeo's --*-passphrase-file reads) as a Secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(f"cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text") from None
    warn_if_exposed(path, "secret file")
    lines = text.splitlines()
    return Secret(lines[0] if lines else "")


def _env_secret(name: str) -> Secret:
    value = os.environ.get(name)
    if value is None:
        raise Invalid(f"environment variable {name} is not set")
    return Secret(value)


def _password(spec: CredentialsSpec, base: Path) -> Secret | None:
    if spec.password is not None:
        return Secret(spec.password.get_secret_value())
    if spec.password_file is not None:
        return read_secret_file(base / spec.password_file)
    if spec.password_env is not None:
        return _env_secret(spec.password_env)
    return None


def resolve_credentials(spec: CredentialsSpec, base: Path, origin: str) -> Credentials | None:
    """Credentials from a spec (None when every field is empty, as skopeo does)."""
    password = _password(spec, base)
    token = spec.identitytoken.get_secret_value() if spec.identitytoken else ""
    if not (spec.username or password or token):
        return None
    return Credentials(spec.username, password or None, Secret(token) if token else None, origin)


def check_cert_dir(path: Path) -> Path:
    """A certs.d directory must exist, and each client `.cert` needs its `.key` (and back)."""
    try:
        names = [p.name for p in path.iterdir()]
    except OSError as exc:
        raise Invalid(f"cert-dir {path}: {exc.strerror or 'cannot read it'}") from None
    certs = {n.removesuffix(".cert") for n in names if n.endswith(".cert")}
    keys = {n.removesuffix(".key") for n in names if n.endswith(".key")}
    for stem in sorted(certs ^ keys):
        missing = f"{stem}.key" if stem in certs else f"{stem}.cert"
        raise Invalid(f"cert-dir {path}: {missing} is missing (a client pair needs both files)")
    return path
