"""Auth files as containers/image (skopeo 1.9) finds, reads and writes them, against real
registries: the default file without XDG_RUNTIME_DIR, wrongly typed files, `--get-login`
searching every default file, and `login REGISTRY/NAMESPACE`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrord.cli import main
from mirrord.registry import credentials
from tests.harness.registry import Credentials
from tests.integration.conftest import CORPUS_REPO, SeedCorpus
from tests.integration.support import Mirrord, flags

CANARY = f"canary-{secrets.token_hex(8)}"


def _entry(creds: Credentials) -> dict[str, str]:
    return {"auth": base64.b64encode(creds.joined().encode()).decode()}


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------------------------------
# The default auth file without XDG_RUNTIME_DIR (cron, systemd, su)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def no_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An environment without XDG_RUNTIME_DIR, `/run/containers` moved under tmp_path; yields
    where `/run/containers/$UID/auth.json` is then. Runs the command in this process (the
    per-UID directory cannot be moved for a subprocess), restoring the logging it sets up."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setattr(credentials, "PER_UID_AUTH_DIR", tmp_path / "run-containers")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield tmp_path / "run-containers" / str(os.getuid()) / "auth.json"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_without_xdg_runtime_dir_login_writes_and_commands_read_the_per_uid_file(
    no_runtime_dir: Path, seed_corpus: SeedCorpus
) -> None:
    source = seed_corpus("basic", "list")
    registry, creds = source.registry, source.creds
    assert creds is not None
    runner = CliRunner()
    login = runner.invoke(
        main,
        [
            "login",
            *flags(registry, creds=False),
            "-u",
            creds.username,
            "--password-stdin",
            registry.host,
        ],
        input=creds.password + "\n",
    )
    assert login.exit_code == 0, login.output
    assert "Login Succeeded" in login.stdout
    assert json.loads(no_runtime_dir.read_text())["auths"] == {registry.host: _entry(creds)}
    assert stat.S_IMODE(no_runtime_dir.stat().st_mode) == 0o600

    who = runner.invoke(main, ["login", "--get-login", registry.host])
    assert (who.exit_code, who.stdout) == (0, f"{creds.username}\n"), who.output
    inspect = runner.invoke(main, ["inspect", "-n", *flags(registry, creds=False), source.ref])
    assert inspect.exit_code == 0, inspect.output
    assert json.loads(inspect.stdout)["Digest"] == source.image.digest
    logout = runner.invoke(main, ["logout", registry.host])
    assert logout.exit_code == 0, logout.output
    assert json.loads(no_runtime_dir.read_text())["auths"] == {}


def test_with_xdg_runtime_dir_login_writes_there_as_before(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    registry = seed_corpus("basic", "list").registry
    assert registry.creds is not None
    cli(
        "login",
        *flags(registry, creds=False),
        "-u",
        registry.creds.username,
        "--password-stdin",
        registry.host,
        stdin=registry.creds.password + "\n",
    ).ok()
    assert json.loads(cli.default_authfile.read_text())["auths"] == {
        registry.host: _entry(registry.creds)
    }


# ------------------------------------------------------------------------------------------
# Wrongly typed auth files: one line naming the file and the key, exit 2, no secret
# ------------------------------------------------------------------------------------------

BAD_FILES = [
    ({"auths": ["x"]}, "'auths' must be an object of registry: entry"),
    ({"auths": "s"}, "'auths' must be an object of registry: entry"),
    ({"credHelpers": "s"}, "'credHelpers' must be an object of registry: helper name"),
    ({"credHelpers": {"h.test": 1}}, "credHelpers['h.test'] must be a string (a helper name)"),
    ({"credsStore": ["x"]}, "'credsStore' must be a string (a helper name)"),
    ({"auths": {"h.test": CANARY}}, "auths['h.test'] must be an object"),
    ({"auths": {"h.test": {"auth": [CANARY]}}}, "auths['h.test'].auth must be a string"),
    ({"auths": {"h.test": {"auth": 7}}}, "auths['h.test'].auth must be a string"),
    ({"auths": {"h.test": {"identitytoken": {"t": CANARY}}}}, "identitytoken must be a string"),
]


@pytest.mark.parametrize("command", ["inspect", "login", "get-login"])
@pytest.mark.parametrize(
    ("content", "problem"), BAD_FILES, ids=[str(i) for i in range(len(BAD_FILES))]
)
def test_a_wrongly_typed_auth_file_is_one_line_naming_file_and_key(
    command: str,
    content: object,
    problem: str,
    seed_corpus: SeedCorpus,
    cli: Mirrord,
    tmp_path: Path,
) -> None:
    source = seed_corpus("basic", "list")
    registry = source.registry
    assert registry.creds is not None
    authfile = _write(tmp_path / "auth.json", content)
    before = authfile.read_bytes()
    base = ["--authfile", str(authfile)]
    if command == "inspect":
        result = cli("inspect", "--raw", *flags(registry, creds=False), *base, source.ref)
    elif command == "login":
        result = cli(
            "login",
            *flags(registry, creds=False),
            *base,
            "-u",
            registry.creds.username,
            "--password-stdin",
            registry.host,
            stdin=registry.creds.password + "\n",
        )
    else:
        result = cli("login", "--get-login", *base, registry.host)
    assert result.returncode == 2, result.describe()
    line = result.error_line()
    assert line.startswith(f"mirrord: error: auth file {authfile}: "), line
    assert problem in line
    assert CANARY not in result.output
    assert "Traceback" not in result.output
    assert authfile.read_bytes() == before


def test_null_values_count_as_absent_and_login_fills_them(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    registry = seed_corpus("basic", "list").registry
    assert registry.creds is not None
    authfile = _write(tmp_path / "auth.json", {"auths": None, "credHelpers": None})
    cli(
        "login",
        *flags(registry, creds=False),
        "--authfile",
        str(authfile),
        "-u",
        registry.creds.username,
        "--password-stdin",
        registry.host,
        stdin=registry.creds.password + "\n",
    ).ok()
    assert json.loads(authfile.read_text())["auths"] == {registry.host: _entry(registry.creds)}


# ------------------------------------------------------------------------------------------
# login --get-login searches every default file
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["docker/config.json", "config/containers/auth.json"], ids=["docker", "xdg-config"]
)
def test_get_login_finds_credentials_in_any_default_file(
    where: str, seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    registry = seed_corpus("basic", "list").registry
    assert registry.creds is not None
    _write(cli.home / where, {"auths": {registry.host: _entry(registry.creds)}})
    result = cli("login", "--get-login", registry.host).ok()
    assert result.stdout == f"{registry.creds.username}\n"
    assert not cli.default_authfile.exists()


def test_get_login_with_an_authfile_reads_only_that_file(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    registry = seed_corpus("basic", "list").registry
    assert registry.creds is not None
    _write(cli.home / "docker/config.json", {"auths": {registry.host: _entry(registry.creds)}})
    result = cli("login", "--get-login", "--authfile", str(tmp_path / "none.json"), registry.host)
    assert result.returncode == 1, result.describe()
    assert result.error_line() == f"mirrord: error: not logged into {registry.host}"


# ------------------------------------------------------------------------------------------
# login REGISTRY/NAMESPACE
# ------------------------------------------------------------------------------------------


def test_login_to_a_namespace_stores_the_namespace_key(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("basic", "list")
    registry = source.registry
    assert registry.creds is not None
    namespace = CORPUS_REPO.partition("/")[0]
    key = f"{registry.host}/{namespace}"
    login = cli(
        "login",
        *flags(registry, creds=False),
        "-u",
        registry.creds.username,
        "--password-stdin",
        key,
        stdin=registry.creds.password + "\n",
    ).ok()
    assert "Login Succeeded" in login.stdout
    assert json.loads(cli.default_authfile.read_text())["auths"] == {key: _entry(registry.creds)}

    raw = cli("inspect", "--raw", *flags(registry, creds=False), source.ref).ok().stdout_bytes
    assert raw == source.image.manifest  # the namespace entry is used for its repositories
    who = cli("login", "--get-login", key).ok()
    assert who.stdout == f"{registry.creds.username}\n"
    cli("logout", key).ok()
    assert json.loads(cli.default_authfile.read_text())["auths"] == {}


def test_login_to_a_namespace_checks_the_credentials_against_the_registry(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    registry = seed_corpus("basic", "list").registry
    result = cli(
        "login",
        *flags(registry, creds=False),
        "-u",
        "mirror",
        "--password-stdin",
        f"{registry.host}/team",
        stdin=CANARY + "\n",
    )
    assert result.returncode == 1, result.describe()
    assert registry.host in result.error_line()
    assert CANARY not in result.output
    assert not cli.default_authfile.exists()


@pytest.mark.parametrize("suffix", ["/team:v1", "/team@sha256:" + "a" * 64, "/", "/Team"])
def test_login_to_a_namespace_with_a_tag_or_a_bad_name_is_a_usage_error(
    suffix: str, cli: Mirrord
) -> None:
    result = cli("login", "-u", "u", "--password-stdin", f"127.0.0.1:9{suffix}", stdin="pw\n")
    assert result.returncode == 2, result.describe()
    assert "expected REGISTRY or REGISTRY/NAMESPACE" in result.error_line()
