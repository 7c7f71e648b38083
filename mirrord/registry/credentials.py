"""Where credentials for a registry come from, in skopeo's order.

1. inline credentials (skopeo-sync `credentials`, `--creds`), or a bearer `--registry-token`;
2. one explicit auth file (`--authfile`, else `REGISTRY_AUTH_FILE`) - then only that file;
3. otherwise `$XDG_RUNTIME_DIR/containers/auth.json` (without XDG_RUNTIME_DIR, as under cron or
   `su`: `/run/containers/$UID/auth.json`), `$XDG_CONFIG_HOME/containers/auth.json`,
   `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`), `~/.dockercfg`.

In each file a `credHelpers` entry for the registry wins, then `auths` (most specific key first:
`host/ns/repo`, `host/ns`, `host`), then `credsStore`. Registries are matched by exact host and
path prefixes on `/` boundaries only, so `registry.com` credentials never go to
`registry.com.evil`. Logs name the source of a credential, never the credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mirrord.errors import ConfigError, LocalStorageError
from mirrord.refs import DOCKER_HUB, normalize_registry
from mirrord.registry.options import Credentials, RegistryOptions
from mirrord.secret import Secret

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 15.0
HELPER_OUTPUT_CAP = 64 * 1024
AUTH_FILE_CAP = 4 * 1024 * 1024
_DOCKER_HUB_HELPER_URL = "https://index.docker.io/v1/"
PER_UID_AUTH_DIR = Path("/run/containers")  # containers/image's default without XDG_RUNTIME_DIR
_warned_paths: set[Path] = set()


def default_auth_files() -> list[Path]:
    """Where credentials are searched for, in containers/image's order; `login` writes the
    first."""
    home = Path.home()
    files = [_primary_auth_file()]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(config_home / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    files.append(
        Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json"
    )
    files.append(home / ".dockercfg")
    return files


def _primary_auth_file() -> Path:
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "containers" / "auth.json"
    return PER_UID_AUTH_DIR / str(os.getuid()) / "auth.json"


def auth_files(options: RegistryOptions) -> list[Path]:
    if options.authfile is not None:
        return [options.authfile]
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        return [Path(env)]
    return default_auth_files()


def write_target(authfile: Path | None) -> Path:
    """The file `login` writes to and `logout` edits (skopeo's default location)."""
    if authfile is not None:
        return authfile
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(env)
    return default_auth_files()[0]


def lookup(host: str, repository: str | None, options: RegistryOptions) -> Credentials | None:
    """Credentials for `host` (and optionally a repository on it), or None for anonymous."""
    if options.no_creds:
        return None
    if options.credentials is not None:
        return options.credentials
    keys = _lookup_keys(host, repository)
    for path in auth_files(options):
        found = _from_file(path, host, keys)
        if found is not None:
            log.debug("registry %s: using credentials from %s", host, found.origin)
            return found
    return None


def _lookup_keys(host: str, repository: str | None) -> list[str]:
    host = normalize_registry(host)
    keys = []
    if repository:
        parts = repository.split("/")
        keys = [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    return [*keys, host]


def _normalize_key(key: str) -> str:
    for prefix in ("https://", "http://"):
        key = key.removeprefix(prefix)
    key = key.rstrip("/")
    for suffix in ("/v1", "/v2"):
        key = key.removesuffix(suffix)
    host, sep, rest = key.partition("/")
    return normalize_registry(host) + sep + rest


def _read_auth_file(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            info = os.fstat(fh.fileno())
            data = fh.read(AUTH_FILE_CAP + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"auth file {path}: cannot read it ({exc.strerror})") from None
    _warn_if_exposed(path, info)
    if len(data) > AUTH_FILE_CAP:
        raise ConfigError(f"auth file {path}: larger than {AUTH_FILE_CAP} bytes")
    try:
        parsed = json.loads(data or b"{}")
    except (ValueError, RecursionError):
        raise ConfigError(f"auth file {path}: not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"auth file {path}: expected a JSON object")
    _check_shape(path, parsed)
    return parsed


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    """Refuse wrongly typed values (as Go's json.Unmarshal does), naming the key, never the
    value: it may be a credential."""
    problem = _shape_problem(data)
    if problem is not None:
        raise ConfigError(f"auth file {path}: {problem}")


def _shape_problem(data: dict[str, Any]) -> str | None:
    if not _is(data.get("credsStore"), str):
        return "'credsStore' must be a string (a helper name)"
    helpers = data.get("credHelpers")
    if not _is(helpers, dict):
        return "'credHelpers' must be an object of registry: helper name"
    for key, helper in (helpers or {}).items():
        if not isinstance(helper, str):
            return f"credHelpers[{key[:100]!r}] must be a string (a helper name)"
    auths = data.get("auths")
    if not _is(auths, dict):
        return "'auths' must be an object of registry: entry"
    problems = (_entry_problem(key, entry) for key, entry in (auths or {}).items())
    return next(filter(None, problems), None)


def _entry_problem(key: str, entry: Any) -> str | None:
    where = f"auths[{key[:100]!r}]"
    if not isinstance(entry, dict):
        return f"{where} must be an object (with 'auth' or 'identitytoken')"
    for field in ("auth", "identitytoken"):
        if not _is(entry.get(field), str):
            return f"{where}.{field} must be a string"
    return None


def _is(value: Any, kind: type) -> bool:
    """JSON null counts as absent, as for Go's json.Unmarshal."""
    return value is None or isinstance(value, kind)


def _warn_if_exposed(path: Path, info: os.stat_result) -> None:
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and path not in _warned_paths:
        _warned_paths.add(path)
        log.warning("auth file %s is readable by group or others; chmod 600 it", path)


def _from_file(path: Path, host: str, keys: list[str]) -> Credentials | None:
    data = _read_auth_file(path)
    if data is None:
        return None
    helpers = {_normalize_key(k): v for k, v in (data.get("credHelpers") or {}).items()}
    if helper := helpers.get(normalize_registry(host)):
        return _from_helper(helper, host)
    auths = {_normalize_key(k): v for k, v in (data.get("auths") or {}).items()}
    for key in keys:
        if isinstance(entry := auths.get(key), dict):
            creds = _from_entry(entry, f"{path} ({key})")
            if creds is not None:
                return creds
    if store := data.get("credsStore"):
        return _from_helper(store, host)
    return None


def _from_entry(entry: dict[str, Any], origin: str) -> Credentials | None:
    token = entry.get("identitytoken") or ""
    username, password = "", ""
    if auth := entry.get("auth"):
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"{origin}: 'auth' is not base64 of user:password") from None
        username, _, password = decoded.partition(":")
    if not (username or password or token):
        return None
    return Credentials(
        username=username,
        password=Secret(password) if password else None,
        identity_token=Secret(token) if token else None,
        origin=origin,
    )


def _from_helper(name: str, host: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    if "/" in name or shutil.which(program) is None:
        raise ConfigError(f"credential helper {program!r} for {host} is not on PATH")
    server = _DOCKER_HUB_HELPER_URL if normalize_registry(host) == DOCKER_HUB else host
    try:
        proc = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"credential helper {program} timed out for {host}") from None
    out = proc.stdout[:HELPER_OUTPUT_CAP]
    if proc.returncode != 0:
        if (
            b"credentials not found" in out.lower()
            or b"credentials not found" in proc.stderr.lower()
        ):
            return None
        raise ConfigError(f"credential helper {program} failed for {host} (exit {proc.returncode})")
    return _parse_helper_output(out, program, host)


def _parse_helper_output(out: bytes, program: str, host: str) -> Credentials:
    try:
        data = json.loads(out)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"credential helper {program}: unexpected output for {host}") from None
    origin = f"credential helper {program}"
    if username == "<token>":
        return Credentials(identity_token=Secret(secret), origin=origin)
    return Credentials(username=username, password=Secret(secret), origin=origin)


def store_credentials(path: Path, host: str, username: str, password: Secret) -> None:
    """Add or replace the `auths` entry for `host` in `path` (atomic write, mode 0600)."""
    data = _read_auth_file(path) or {}
    auths = data.setdefault("auths", {})
    if auths is None:
        auths = data["auths"] = {}
    token = base64.b64encode(f"{username}:{password.reveal()}".encode()).decode()
    for key in _keys_for_host(auths, host):
        del auths[key]
    auths[host] = {"auth": token}
    _atomic_write_json(path, data)


def remove_credentials(path: Path, host: str | None) -> int:
    """Remove the entries for `host` (or every entry when None); return how many were removed."""
    data = _read_auth_file(path)
    if not data:
        return 0
    auths = data.get("auths") or {}
    keys = list(auths) if host is None else _keys_for_host(auths, host)
    for key in keys:
        del auths[key]
    if keys:
        _atomic_write_json(path, data)
    return len(keys)


def _keys_for_host(auths: dict[str, Any], host: str) -> list[str]:
    wanted = normalize_registry(host)
    return [k for k in auths if _normalize_key(k) == wanted]


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        _write_json(path, data)
    except OSError as exc:
        raise LocalStorageError(f"auth file {path}: cannot write it ({exc.strerror})") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(data, fh, indent="\t")
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iter_registries(path: Path) -> Iterator[str]:
    data = _read_auth_file(path) or {}
    yield from sorted(_normalize_key(k) for k in data.get("auths") or {})
