"""login / logout and every place credentials come from, against real Basic and token registries.

The auth file is written 0600 and holds exactly what `docker login` would; a refused login
writes nothing; `--get-login` answers from the file; and an image the registry only serves to
the right user is readable with credentials from `--creds`, `--authfile`, `REGISTRY_AUTH_FILE`,
the default auth.json, a Docker `config.json` with `credHelpers`, and one with `credsStore`.
"""

from __future__ import annotations

import base64
import json
import secrets
import stat
from pathlib import Path

import pytest

from tests.harness.registry import Credentials, RegistryServer, Variant
from tests.harness.tokenserver import Access, TokenServer
from tests.integration.conftest import CORPUS_REPO, SeedCorpus, Seeded
from tests.integration.support import Mirrord, flags

CANARY = Credentials("mirror", f"canary-{secrets.token_hex(8)}")


def _entry(creds: Credentials) -> dict[str, str]:
    return {"auth": base64.b64encode(creds.joined().encode()).decode()}


def _auth_json(path: Path, entries: dict[str, Credentials]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {host: _entry(c) for host, c in entries.items()}}))
    path.chmod(0o600)
    return path


def _login(cli: Mirrord, registry: RegistryServer, creds: Credentials, *extra: str) -> list[str]:
    return [
        "login",
        *flags(registry, creds=False),
        "--username",
        creds.username,
        "--password-stdin",
        *extra,
        registry.host,
    ]


def _inspect_raw(cli: Mirrord, source: Seeded, *extra: str, **kw: object) -> bytes:
    args = ["inspect", "--raw", *flags(source.registry, creds=False), *extra, source.ref]
    result = cli(*args, **kw)  # type: ignore[arg-type]
    return result.ok().stdout_bytes


@pytest.mark.parametrize("variant", ["basic", "token"])
def test_login_stores_credentials_0600_that_later_commands_use(
    variant: Variant, seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus(variant, "list")
    registry = source.registry
    assert registry.creds is not None
    authfile = tmp_path / "auth.json"

    login = cli(
        *_login(cli, registry, registry.creds, "--authfile", str(authfile)),
        stdin=registry.creds.password + "\n",
    ).ok()
    assert "Login Succeeded" in login.stdout
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    assert json.loads(authfile.read_text())["auths"] == {registry.host: _entry(registry.creds)}
    assert registry.creds.password not in login.output
    assert _inspect_raw(cli, source, "--authfile", str(authfile)) == source.image.manifest


def test_get_login_answers_from_the_file_and_logout_removes_the_entry(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("basic", "list")
    registry = source.registry
    assert registry.creds is not None
    other = Credentials("someone", "else")
    authfile = _auth_json(tmp_path / "auth.json", {registry.host: registry.creds, "x.test": other})

    who = cli("login", "--get-login", "--authfile", str(authfile), registry.host).ok()
    assert who.stdout.strip() == registry.creds.username
    cli("logout", "--authfile", str(authfile), registry.host).ok()
    assert json.loads(authfile.read_text())["auths"] == {"x.test": _entry(other)}
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    refused = cli(
        "inspect", "--raw", *flags(registry, creds=False), "--authfile", str(authfile), source.ref
    )
    assert refused.returncode == 1, refused.describe()
    assert "credentials" in refused.error_line()
    again = cli("logout", "--authfile", str(authfile), registry.host)
    assert again.returncode == 1, again.describe()
    assert "not logged in" in again.error_line()


@pytest.mark.parametrize("variant", ["basic", "token"])
def test_login_with_a_wrong_password_is_refused_and_writes_nothing(
    variant: Variant, seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    registry = seed_corpus(variant, "list").registry
    authfile = tmp_path / "auth.json"
    result = cli(
        *_login(cli, registry, CANARY, "--authfile", str(authfile)), stdin=CANARY.password + "\n"
    )
    assert result.returncode == 1, result.describe()
    assert registry.host in result.error_line()
    assert CANARY.password not in result.output
    assert "Traceback" not in result.output
    assert not authfile.exists()


def test_login_without_authfile_writes_the_default_auth_json(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("basic", "list")
    creds = source.registry.creds
    assert creds is not None
    cli(*_login(cli, source.registry, creds), stdin=creds.password + "\n").ok()
    assert stat.S_IMODE(cli.default_authfile.stat().st_mode) == 0o600
    assert _inspect_raw(cli, source) == source.image.manifest  # found without any flag
    cli("logout", "--all").ok()
    assert json.loads(cli.default_authfile.read_text())["auths"] == {}


def test_get_login_without_an_entry_says_so(cli: Mirrord, tmp_path: Path) -> None:
    result = cli("login", "--get-login", "--authfile", str(tmp_path / "none.json"), "127.0.0.1:9")
    assert result.returncode == 1, result.describe()
    assert "not logged into 127.0.0.1:9" in result.error_line()


# ------------------------------------------------------------------------------------------
# Where credentials come from
# ------------------------------------------------------------------------------------------


def test_creds_flag(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    source = seed_corpus("basic", "list")
    assert source.creds is not None
    assert _inspect_raw(cli, source, "--creds", source.creds.joined()) == source.image.manifest


def test_registry_auth_file_environment_variable(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("token", "list")
    assert source.creds is not None
    authfile = _auth_json(tmp_path / "env-auth.json", {source.registry.host: source.creds})
    raw = _inspect_raw(cli, source, env={"REGISTRY_AUTH_FILE": str(authfile)})
    assert raw == source.image.manifest


def test_authfile_flag_wins_over_the_default_auth_json(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("basic", "list")
    assert source.creds is not None
    _auth_json(cli.default_authfile, {source.registry.host: CANARY})
    authfile = _auth_json(tmp_path / "auth.json", {source.registry.host: source.creds})
    assert _inspect_raw(cli, source, "--authfile", str(authfile)) == source.image.manifest


def test_copy_reads_each_registrys_credentials_from_one_authfile(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("basic", "list")
    dest = seed_corpus("token", "list").registry
    assert source.creds is not None
    assert dest.creds is not None
    authfile = _auth_json(
        tmp_path / "auth.json", {source.registry.host: source.creds, dest.host: dest.creds}
    )
    cli(
        "copy",
        "--authfile",
        str(authfile),
        *flags(source.registry, "src", creds=False),
        *flags(dest, "dest", creds=False),
        source.ref,
        f"docker://{dest.host}/{CORPUS_REPO}-copy:v1",
    ).ok()


def _helper(bin_dir: Path, name: str, host: str, creds: Credentials, calls: Path) -> None:
    """A `docker-credential-NAME` that knows `host` and records each call."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    answer = json.dumps({"ServerURL": host, "Username": creds.username, "Secret": creds.password})
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        "read -r server\n"
        f'echo "$1 $server" >> {calls}\n'
        f'if [ "$1" = get ] && [ "$server" = \'{host}\' ]; then\n'
        f"  echo '{answer}'\n"
        "  exit 0\n"
        "fi\n"
        "echo 'credentials not found in native keychain'\n"
        "exit 1\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_docker_config_credential_helpers(
    key: str, seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("basic", "list")
    host = source.registry.host
    assert source.creds is not None
    calls = tmp_path / "helper-calls.log"
    _helper(tmp_path / "bin", "test", host, source.creds, calls)
    cli.path_prepend.append(tmp_path / "bin")
    config = {"credHelpers": {host: "test"}} if key == "credHelpers" else {"credsStore": "test"}
    docker_config = cli.home / "docker" / "config.json"
    docker_config.parent.mkdir(parents=True, exist_ok=True)
    docker_config.write_text(json.dumps(config))

    assert _inspect_raw(cli, source) == source.image.manifest
    assert calls.read_text().splitlines()[0] == f"get {host}"


def test_an_auth_file_entry_for_the_namespace_applies_to_its_repositories_only(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("basic", "list")
    host = source.registry.host
    assert source.creds is not None
    namespace, _, _ = CORPUS_REPO.partition("/")
    # The most specific key wins: the namespace entry, not the wrong host-wide one.
    authfile = _auth_json(
        tmp_path / "auth.json",
        {f"{host}/{namespace}": source.creds, f"{host}/elsewhere": CANARY, host: CANARY},
    )
    assert _inspect_raw(cli, source, "--authfile", str(authfile)) == source.image.manifest
    other = cli(
        "inspect",
        *flags(source.registry, creds=False),
        "--authfile",
        str(authfile),
        f"docker://{host}/elsewhere/app:v1",
    )
    assert other.returncode == 1, other.describe()
    assert "refused" in other.error_line()
    assert CANARY.password not in other.output


def test_registry_token_is_sent_as_is(
    seed_corpus: SeedCorpus, token_server: TokenServer, cli: Mirrord
) -> None:
    source = seed_corpus("token", "list")
    token = token_server.issue(
        source.registry.service, [Access("repository", CORPUS_REPO, ("pull",))]
    )
    before = len(token_server.requests(source.registry.service))
    assert _inspect_raw(cli, source, "--registry-token", token) == source.image.manifest
    assert len(token_server.requests(source.registry.service)) == before  # no token fetched
    other = token_server.issue(source.registry.service, [])  # grants nothing
    refused = cli(
        "inspect", *flags(source.registry, creds=False), "--registry-token", other, source.ref
    )
    assert refused.returncode == 1, refused.describe()
    assert "the bearer token given with --registry-token was refused" in refused.error_line()
    assert other not in refused.output


def test_no_creds_ignores_the_auth_files(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    source = seed_corpus("basic", "list")
    assert source.creds is not None
    _auth_json(cli.default_authfile, {source.registry.host: source.creds})
    result = cli("inspect", "--raw", "--no-creds", *flags(source.registry, creds=False), source.ref)
    assert result.returncode == 1, result.describe()
    assert "no credentials" in result.error_line() or "none were found" in result.error_line()
