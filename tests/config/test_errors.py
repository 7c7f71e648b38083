"""Strict validation: every problem of every file at once, as `FILE:LINE: key.path: message`.

Where skopeo silently ignores or skips (unknown keys, bad regexes and constraints, bad names),
mirrord refuses to load and says where. Secrets never appear in the messages.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mirrord.config import load_config, skopeo_sync_config
from mirrord.errors import ConfigError

CANARY = "canary-Pa55word-7f3a"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def skopeo_problems(tmp_path: Path, text: str, **flags: object) -> list[str]:
    path = write(tmp_path, "sync.yml", text)
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config("mirror.example.com", file=path, **flags)  # type: ignore[arg-type]
    prefix = f"{path}:"
    return [p.removeprefix(prefix) for p in err.value.problems]


def daemon_problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, "mirrord.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return [p.removeprefix(f"{path}:") for p in err.value.problems]


@pytest.mark.parametrize("port", ["5432x", "99999", "0"])
def test_a_database_port_that_is_not_a_port(tmp_path: Path, port: str) -> None:
    problems = daemon_problems(
        tmp_path,
        f"database: postgresql://u:{CANARY}@db:{port}/mirrord\n"
        "destination: {registry: m.example.com}\n"
        "sources: [{inline: {quay.io: {images: {app: []}}}}]\n",
    )
    assert problems == ["1: database: the port is not a number from 1 to 65535"]


# -- unknown keys -------------------------------------------------------------------------------


def test_misspelt_keys_get_a_suggestion(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path,
        "quay.io:\n"
        "  imagse: {coreos/etcd: [latest]}\n"
        "  tls-verfy: false\n"
        "  credentials: {username: me, pasword: x}\n"
        "  mirrord: {keep_latest: 3, flavour: x}\n",
    ) == [
        "2: \"quay.io\".imagse: unknown key 'imagse' (did you mean 'images'?)",
        "3: \"quay.io\".tls-verfy: unknown key 'tls-verfy' (did you mean 'tls-verify'?)",
        "4: \"quay.io\".credentials.pasword: unknown key 'pasword' (did you mean 'password'?)",
        "5: \"quay.io\".mirrord.keep_latest: unknown key 'keep_latest' (did you mean 'keep-latest'?)",
        "5: \"quay.io\".mirrord.flavour: unknown key 'flavour' (expected one of: exclude, "
        "immutable-tags, keep-latest, platforms, ratelimit-floor, repos, tls)",
    ]


def test_registry_keys_at_the_top_level(tmp_path: Path) -> None:
    assert skopeo_problems(tmp_path, "images:\n  busybox: []\n") == [
        "1: images: 'images' belongs under a registry host (e.g. docker.io:)"
    ]


def test_misspelt_daemon_keys(tmp_path: Path) -> None:
    problems = daemon_problems(
        tmp_path,
        "destination: {registry: mirror.example.com, prefx: m}\n"
        "limits: {jobs: 4, per_registry: {connections: 2}}\n"
        "sources:\n"
        "  - inline: {quay.io: {images: {coreos/etcd: [latest]}}}\n"
        "    keep-lastest: 2\n",
    )
    assert problems == [
        "1: destination.prefx: unknown key 'prefx' (did you mean 'prefix'?)",
        "2: limits.per_registry: unknown key 'per_registry' (did you mean 'per-registry'?)",
        "5: sources[0].keep-lastest: unknown key 'keep-lastest' (did you mean 'keep-latest'?)",
    ]


# -- types, regexes, constraints, references ------------------------------------------------------


def test_wrong_types(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path,
        "quay.io:\n"
        "  tls-verify: maybe\n"
        "  images:\n"
        "    coreos/etcd: latest\n"
        "  mirrord:\n"
        "    keep-latest: 0\n"
        "    platforms: [linux]\n",
    ) == [
        '2: "quay.io".tls-verify: expected true or false (skopeo cannot read this value as a bool)',
        '4: "quay.io".images."coreos/etcd": Input should be a valid list',
        '6: "quay.io".mirrord.keep-latest: Input should be greater than 0',
        "7: \"quay.io\".mirrord.platforms: invalid platform 'linux': expected os/arch[/variant]",
    ]


def test_bad_regex_and_constraint_name_registry_repo_and_key(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path,
        "registry.example.com:\n"
        "  images-by-tag-regex:\n"
        "    nginx: '^1\\.13\\.[12'\n"
        "  images-by-semver:\n"
        "    alpine: '>= three'\n"
        "  mirrord: {exclude: '(rc'}\n",
    ) == [
        '3: "registry.example.com".images-by-tag-regex.nginx: invalid regular expression '
        "'^1\\.13\\.[12': missing ] in '[12'",  # as written, not repr()'s doubled backslashes
        '5: "registry.example.com".images-by-semver.alpine: invalid semver constraint '
        "'>= three': improper constraint '>= three'",
        "6: \"registry.example.com\".mirrord.exclude: invalid regular expression '(rc': "
        "missing ) in '(rc'",
    ]


def test_repository_keys_are_names(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path,
        "docker.io:\n"
        "  images:\n"
        "    busybox:1.0: []\n"
        "    Busybox: []\n"
        "    redis: ['sha256:111111', 'with space', '1.0']\n",
    ) == [
        '3: "docker.io".images."busybox:1.0": \'busybox:1.0\' names a reference, not a '
        "repository (put tags in the list)",
        "4: \"docker.io\".images.Busybox: invalid repository name 'library/Busybox' in "
        "'docker.io/Busybox' (lowercase letters, digits and . _ - separators only)",
        "5: \"docker.io\".images.redis[0]: 'sha256:111111' is neither a digest (sha256:<64 hex>) "
        "nor a valid tag",
        "5: \"docker.io\".images.redis[1]: 'with space' is neither a digest (sha256:<64 hex>) "
        "nor a valid tag",
    ]


def test_registry_hosts(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path,
        "myregistry: {images: {busybox: []}}\nhttps://quay.io: {images: {x: []}}\n",
    ) == [
        "1: myregistry.images.busybox: registry 'myregistry' is not a host name (it needs a '.', "
        "a ':port' or to be 'localhost'): skopeo would read docker.io/myregistry/busybox",
        "2: \"https://quay.io\": 'https://quay.io' is not a registry host (e.g. quay.io, "
        "localhost:5000)",
    ]


def test_scoped_names_must_be_valid(tmp_path: Path) -> None:
    assert skopeo_problems(tmp_path, "localhost:5000: {images: {x: [v1]}}\n", scoped=True) == [
        '1: "localhost:5000".images.x: destination mirror.example.com/localhost:5000/x is not a '
        "valid repository name (a registry with a port cannot be scoped)"
    ]


def test_cert_dir_checks(tmp_path: Path) -> None:
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "client.cert").write_text("x")
    assert skopeo_problems(
        tmp_path,
        "quay.io: {images: {a: [v1]}, cert-dir: missing}\nghcr.io: {images: {a: [v1]}, cert-dir: pair}\n",
    ) == [
        f'1: "quay.io".cert-dir: cert-dir {tmp_path}/missing: No such file or directory',
        f'2: "ghcr.io".cert-dir: cert-dir {tmp_path}/pair: client.key is missing (a client '
        "pair needs both files)",
    ]


# -- across files ---------------------------------------------------------------------------------


def test_a_registry_configured_twice_differently(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "quay.io:\n  tls-verify: true\n  images: {coreos/etcd: [v1]}\n")
    write(tmp_path, "b.yaml", "quay.io:\n  tls-verify: false\n  images: {coreos/flannel: [v1]}\n")
    write(tmp_path, "c.yaml", "quay.io:\n  images: {coreos/dex: [v1]}\n")  # silent: agrees
    path = write(
        tmp_path,
        "mirrord.yaml",
        "destination: {registry: m.example.com}\nsources: [{file: '*.yaml'}]\n",
    )
    path.rename(tmp_path / "mirrord.conf")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "mirrord.conf")
    assert err.value.problems == (
        'b.yaml:1: "quay.io": quay.io is configured twice with different tls/tls-verify '
        "(see a.yaml:1)",
    )


def test_every_problem_of_every_file_at_once(tmp_path: Path) -> None:
    write(tmp_path, "sync.d/a.yaml", "quay.io: {images: {Bad: []}}\n")
    write(tmp_path, "sync.d/b.yaml", "ghcr.io: {images-by-semver: {x: '~>'}}\n")
    write(tmp_path, "sync.d/c.yaml", "quay.io:\n  images: {x: [v1, v2\n")  # not even YAML
    write(tmp_path, "list.txt", "ok:1\nno-tag\n")
    path = write(
        tmp_path,
        "mirrord.yaml",
        "destination: {registry: m.example.com}\n"
        "schedule: {interval: 1h, cron: '0 2 * * *'}\n"
        "sources:\n"
        "  - file: sync.d/*.yaml\n"
        "  - list: list.txt\n"
        "  - file: nowhere.yaml\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: 6 problems"
    assert [p.replace(str(tmp_path) + "/", "") for p in err.value.problems] == [
        "mirrord.yaml:2: schedule: give exactly one of interval and cron",
        "mirrord.yaml:6: sources[2].file: nowhere.yaml: no such file",
        "sync.d/a.yaml:1: \"quay.io\".images.Bad: invalid repository name 'Bad' in 'quay.io/Bad' "
        "(lowercase letters, digits and . _ - separators only)",
        "sync.d/b.yaml:1: \"ghcr.io\".images-by-semver.x: invalid semver constraint '~>': "
        "improper constraint '~>'",
        "sync.d/c.yaml:3: invalid YAML: did not find expected ',' or ']'",
        "list.txt:2: 'no-tag' needs a :tag or an @sha256:digest",
    ]


def test_daemon_values(tmp_path: Path) -> None:
    problems = daemon_problems(
        tmp_path,
        f"database: mysql://root:{CANARY}@db/mirrord\n"
        "listen: localhost\n"
        "log: {format: xml, level: chatty}\n"
        "destination: {registry: mirror, naming: path, scoped: true}\n"
        "schedule: {cron: '0 2 * *'}\n"
        "limits: {jobs: 0, job-timeout: 10}\n"
        "retry: {base: 1h, max: 10m}\n"
        "platforms: everything\n"
        "prune: {enabled: yes, protect: '('}\n"
        "sources:\n"
        "  - {file: a.yaml, list: b.txt}\n"
        "  - {file: a.yaml, registry: quay.io}\n",
    )
    assert problems == [
        "1: database: expected a URL starting with one of sqlite, sqlite+aiosqlite, postgresql, "
        "postgresql+asyncpg",
        "2: listen: expected HOST:PORT (e.g. 127.0.0.1:9464), got 'localhost'",
        "3: log.format: Input should be 'auto', 'json' or 'text'",
        "3: log.level: Input should be 'debug', 'info', 'warning' or 'error'",
        "4: destination.naming: scoped: true contradicts this naming",
        "4: destination: destination registry 'mirror' is not a host name: it needs a '.', "
        "a ':port', or to be 'localhost'",
        "5: schedule.cron: invalid cron expression '0 2 * *' (e.g. '0 2 * * *')",
        "6: limits.jobs: Input should be greater than 0",
        "6: limits.job-timeout: invalid duration '10': expected e.g. 30s, 10m, 1h30m, 2d",
        "7: retry: retry.base must not exceed retry.max",
        "8: platforms: invalid platform 'everything': expected os/arch[/variant]",
        "9: prune.protect: invalid regular expression '(': missing ) in '('",
        "11: sources[0]: give exactly one of file, list and inline",
        "12: sources[1]: registry only applies to a list source",
    ]
    assert not any(CANARY in p for p in problems)


def test_destination_problems(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "quay.io: {images: {a: [v1]}}\n")
    problems = daemon_problems(
        tmp_path,
        "destination: {registry: mirror, naming: path, scoped: true}\nsources: [{file: a.yaml}]\n",
    )
    assert problems == [
        "1: destination.naming: scoped: true contradicts this naming",
        "1: destination: destination registry 'mirror' is not a host name: it needs a '.', "
        "a ':port', or to be 'localhost'",
    ]


def test_source_names_must_be_unique_and_files_must_exist(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "quay.io: {images: {a: [v1]}}\n")
    problems = daemon_problems(
        tmp_path,
        "destination: {registry: m.example.com}\n"
        "sources:\n"
        "  - {name: one, file: a.yaml}\n"
        "  - {name: one, file: a.yaml}\n"
        "  - {file: 'none/*.yaml'}\n"
        "  - {file: missing.yaml}\n",
    )
    assert problems == [
        "4: sources[1].name: source name 'one' is used twice",
        "5: sources[2].file: 'none/*.yaml' matches no file",
        f"6: sources[3].file: {tmp_path}/missing.yaml: no such file",
    ]


def test_repos_extension_must_name_selected_repos(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path,
        "quay.io:\n"
        "  images: {coreos/etcd: [v1]}\n"
        "  mirrord:\n"
        "    repos:\n"
        "      coreos/etdc: {destination: etcd}\n",
    ) == [
        '5: "quay.io".mirrord.repos."coreos/etdc": repo \'coreos/etdc\' is not selected in any '
        "images section"
    ]


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_never_reach_messages_logs_or_reprs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CANARY_ENV", CANARY)
    secret_file = write(tmp_path, "dest.pass", CANARY + "\n")
    secret_file.chmod(0o644)
    write(
        tmp_path,
        "sync.yml",
        "quay.io:\n"
        f"  credentials: {{username: me, password: '{CANARY}', identitytoken: '{CANARY}'}}\n"
        "  tls-verify: false\n"
        "  images: {coreos/etcd: [v1]}\n",
    )
    bad = (
        "destination:\n"
        "  registry: m.example.com\n"
        "  credentials: {username: me, password-file: dest.pass}\n"
        "registries:\n"
        f"  ghcr.io: {{credentials: {{username: u, password: '{CANARY}', password-env: CANARY_ENV}}}}\n"
        f"  gcr.io: {{credentials: {{username: u, pasword: '{CANARY}', password: [{CANARY!r}]}}}}\n"
        "sources: [{file: sync.yml}]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "mirrord.yaml", bad))
    assert len(err.value.problems) == 3
    good = (
        bad.replace("pasword", "username2").split("registries:")[0]
        + "sources: [{file: sync.yml}]\n"
    )
    config = load_config(write(tmp_path, "good.yaml", good))
    options = config.registry_options("m.example.com")
    assert options.credentials is not None
    assert options.credentials.password is not None
    assert options.credentials.password.reveal() == CANARY
    seen = [str(err.value), *err.value.problems, caplog.text, repr(config), repr(options)]
    seen += [repr(config.registry_options("quay.io")), repr(config.spec)]
    assert not any(CANARY in text for text in seen)
    assert "is readable by group or others (mode 644)" in caplog.text


def test_two_spellings_of_one_registry(tmp_path: Path) -> None:
    assert skopeo_problems(
        tmp_path, "docker.io: {images: {a: [v1]}}\nindex.docker.io: {images: {a: [v2]}}\n"
    ) == [
        "2: \"index.docker.io\": 'index.docker.io' and 'docker.io' name the same registry; merge them"
    ]
