"""The daemon config: the shipped example loads; defaults; secrets; sources and their options."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from mirrord.config import load_config
from mirrord.errors import ConfigError
from mirrord.model import Platform, PlatformMode, PlatformPolicy
from mirrord.plan import plan_listed
from mirrord.registry.options import TLSMode
from tests.config.support import FIXTURES, REPO_ROOT, FakeRegistries, copies, pairs

EXAMPLE = REPO_ROOT / "config.example.yaml"
MINIMAL_SOURCES = "sources: [{inline: {quay.io: {images: {a: [v1]}}}}]\n"


def write(directory: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config.example.yaml installed in a directory with the files it names."""
    monkeypatch.setenv("DOCKERHUB_TOKEN", "hub-token")
    (tmp_path / "certs.d" / "registry.airgap.local:5000").mkdir(parents=True)
    write(tmp_path, "dest.pass", "dest-password\n")
    write(tmp_path, "http.token", "api-token\n")
    shutil.copy(FIXTURES / "images-list.txt", tmp_path / "images-list.txt")
    write(tmp_path, "sync.d/quay.yaml", "quay.io:\n  images:\n    coreos/flannel: [v0.14.0]\n")
    write(
        tmp_path,
        "sync.d/ghcr.yaml",
        "ghcr.io:\n  images-by-tag-regex:\n    fluxcd/flux-cli: '^v2\\.'\n",
    )
    return Path(shutil.copy(EXAMPLE, tmp_path / "mirrord.yaml"))


def test_the_example_loads(example: Path) -> None:
    config = load_config(example)
    assert config.database == "sqlite:////var/lib/mirrord/mirrord.db"
    assert config.listen == ("127.0.0.1", 9464)
    assert (config.log.format, config.log.level) == ("json", "info")
    assert str(config.destination) == "registry.airgap.local:5000/mirror"
    assert config.schedule is not None
    assert config.schedule.interval == timedelta(hours=1)
    assert (config.limits.jobs, config.limits.blobs) == (16, 16)
    assert config.limits.job_timeout == timedelta(hours=1)
    assert (config.retry.attempts, config.retry.base, config.retry.max) == (
        5,
        timedelta(seconds=2),
        timedelta(minutes=10),
    )
    assert config.platforms == PlatformPolicy.all()
    assert not config.prune.enabled
    assert config.prune.protect.search("sha256-abc.sig")
    assert config.http_token is not None
    assert config.http_token.reveal() == "api-token"
    assert [s.name for s in config.sources] == ["ghcr", "quay", "installer-images", "etcd"]
    assert config.summary() == (
        "4 sources, 126 repositories (2 listed by tag) from 4 registries -> "
        "registry.airgap.local:5000/mirror"
    )


def test_the_example_registry_options(example: Path) -> None:
    config = load_config(example)
    dest = config.registry_options("registry.airgap.local:5000")
    assert dest.tls is TLSMode.VERIFY
    assert dest.cert_dir == example.parent / "certs.d" / "registry.airgap.local:5000"
    assert dest.credentials is not None
    assert dest.credentials.password is not None
    assert (dest.credentials.username, dest.credentials.password.reveal()) == (
        "mirror",
        "dest-password",
    )
    hub = config.registry_options("docker.io")
    assert hub.credentials is not None
    assert hub.credentials.password is not None
    assert hub.credentials.password.reveal() == "hub-token"
    assert (hub.ratelimit_floor, hub.requests_per_second, hub.connections) == (20, 5, 16)
    quay = config.registry_options("quay.io")
    assert (quay.connections, quay.requests_per_second) == (4, 20)
    assert config.registry_options("unknown.example.com").tls is TLSMode.VERIFY


async def test_the_example_plans(example: Path) -> None:
    config = load_config(example)
    registries = FakeRegistries(
        {
            "quay.io/coreos/etcd": [
                "v3.4.0",
                "v3.5.0",
                "v3.5.1",
                "v3.5.2-rc.0",
                "v3.5.2",
                "v3.5.3",
                "v3.5.4",
                "v3.5.5",
            ],
            "ghcr.io/fluxcd/flux-cli": ["v1.25.0", "v2.0.0", "v2.1.0"],
        }
    )
    planned = await copies(config, registries)
    dest = "registry.airgap.local:5000/mirror"
    etcd = [p for p in planned if "/infra/etcd:" in p[1]]
    assert etcd == pairs(
        *(
            (f"quay.io/coreos/etcd:{t}", f"{dest}/infra/etcd:{t}")
            for t in ("v3.5.0", "v3.5.1", "v3.5.3", "v3.5.4", "v3.5.5", "v3.5.2")
        ),
    )
    assert ("quay.io/coreos/flannel:v0.14.0", f"{dest}/flannel:v0.14.0") in planned
    assert ("docker.io/calico/cni:v3.16.3", f"{dest}/calico/cni:v3.16.3") in planned
    assert ("ghcr.io/fluxcd/flux-cli:v2.1.0", f"{dest}/flux-cli:v2.1.0") in planned
    selection = next(s for s in config.selections if s.source_name == "etcd")
    assert selection.platforms == PlatformPolicy.subset(
        (Platform("linux", "amd64"), Platform("linux", "arm64"))
    )
    listed = next(s for s in config.selections if s.source_name == "installer-images")
    assert listed.immutable is True


def test_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: m.example.com}\nsources: [{inline: {quay.io: {images: {a: [v1]}}}}]\n",
    )
    config = load_config(path)
    assert config.database == "sqlite:////var/lib/mirrord/mirrord.db"
    assert config.listen == ("127.0.0.1", 9464)
    assert config.schedule is None
    assert config.limits.per_registry.connections == 16
    assert config.limits.per_registry.requests_per_second is None
    assert config.platforms.mode is PlatformMode.ALL
    assert config.prune.enabled is False
    assert config.http_token is None
    assert config.sources[0].name == "inline-quay.io"
    assert config.sources[0].kind == "inline"
    assert str(config.selections[0].target) == "m.example.com/a"


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("schedule: {cron: '0 2 * * *'}", lambda c: c.schedule.cron == "0 2 * * *"),
        ("schedule: {interval: 1h30m}", lambda c: c.schedule.interval == timedelta(minutes=90)),
        ("retry: {base: 500ms, max: 2d}", lambda c: c.retry.base == timedelta(seconds=0.5)),
        ("listen: '[::1]:9000'", lambda c: c.listen == ("::1", 9000)),
        ("listen: ':9464'", lambda c: c.listen == ("", 9464)),
        ("platforms: host", lambda c: c.platforms.mode is PlatformMode.SYSTEM),
        ("platforms: linux/amd64,linux/arm64/v8", lambda c: len(c.platforms.platforms) == 2),
        ("prune: true", lambda c: c.prune.enabled),
        (
            "database: postgresql+asyncpg://mirrord@db/mirrord",
            lambda c: c.database.startswith("postgresql"),
        ),
        ("log: {format: text, level: debug}", lambda c: c.log.format == "text"),
    ],
)
def test_values(tmp_path: Path, text: str, check: object) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        f"{text}\ndestination: {{registry: m.example.com}}\n{MINIMAL_SOURCES}",
    )
    assert check(load_config(path))  # type: ignore[operator]


def test_tls_verify_false_is_skopeos_meaning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "a.yaml", "localhost:5000:\n  tls-verify: false\n  images: {a: [v1]}\n")
    write(
        tmp_path,
        "b.yaml",
        "ghcr.io:\n  tls-verify: false\n  mirrord: {tls: insecure}\n  images: {b: [v1]}\n",
    )
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: 'localhost:5001', tls-verify: false}\nsources: [{file: a.yaml}, {file: b.yaml}]\n",
    )
    config = load_config(path)
    assert config.registry_options("localhost:5000").tls is TLSMode.SKOPEO_NO_VERIFY
    assert config.registry_options("localhost:5001").tls is TLSMode.SKOPEO_NO_VERIFY
    assert config.registry_options("ghcr.io").tls is TLSMode.INSECURE  # mirrord's key wins
    assert "tls-verify: false for localhost:5000" in caplog.text


def test_secret_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GHCR_TOKEN", "env-secret")
    write(tmp_path, "world.pass", "file-secret\nsecond line ignored\n", mode=0o644)
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: m.example.com, credentials: {username: u, password-file: world.pass}}\n"
        "registries:\n"
        "  ghcr.io: {credentials: {username: g, password-env: GHCR_TOKEN}}\n"
        "  quay.io: {credentials: {username: q, password: inline-secret}}\n"
        "  gcr.io: {credentials: {identitytoken: a-token}}\n"
        "sources: [{inline: {quay.io: {images: {a: [v1]}}}}]\n",
        mode=0o640,
    )
    config = load_config(path)

    def password(host: str) -> str:
        credentials = config.registry_options(host).credentials
        assert credentials is not None
        assert credentials.password is not None
        return credentials.password.reveal()

    assert password("m.example.com") == "file-secret"
    assert password("ghcr.io") == "env-secret"
    assert password("quay.io") == "inline-secret"
    token = config.registry_options("gcr.io").credentials
    assert token is not None
    assert token.identity_token is not None
    assert token.password is None
    assert "world.pass is readable by group or others (mode 644)" in caplog.text
    assert "m.yaml is readable by group or others (mode 640)" in caplog.text


def test_secret_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: m.example.com, credentials: {username: u, password-file: nope}}\n"
        "registries:\n"
        "  ghcr.io: {credentials: {username: g, password-env: MIRRORD_TEST_UNSET}}\n"
        "  quay.io: {credentials: {username: q, password: x, password-file: y}}\n"
        "http: {token-file: missing.token}\n"
        "sources: [{inline: {quay.io: {images: {a: [v1]}}}}]\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.removeprefix(f"{path}:") for p in err.value.problems] == [
        f"1: destination.credentials: cannot read {tmp_path}/nope (No such file or directory)",
        '3: registries."ghcr.io".credentials: environment variable MIRRORD_TEST_UNSET is not set',
        '4: registries."quay.io".credentials: give one of password, password-file and password-env',
        f"5: http.token-file: cannot read {tmp_path}/missing.token (No such file or directory)",
    ]


def test_registry_settings_must_agree_across_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        "quay.io:\n  credentials: {username: a, password: one}\n  images: {x: [v1]}\n",
    )
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: m.example.com}\n"
        "registries:\n"
        "  quay.io: {credentials: {username: a, password: two}, connections: 2}\n"
        "sources: [{file: a.yaml}]\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == (
        f'a.yaml:1: "quay.io": quay.io is configured twice with different credentials (see {path}:3)',
    )


def test_option_precedence(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        "quay.io:\n"
        "  images: {one: [], two: [], three: []}\n"
        "  mirrord:\n"
        "    keep-latest: 2\n"
        "    repos:\n"
        "      two: {keep-latest: 1, platforms: host}\n"
        "      three: {exclude: '^1', immutable-tags: '^v'}\n",
    )
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: m.example.com, prefix: base}\n"
        "platforms: [linux/amd64]\n"
        "sources:\n"
        "  - {file: a.yaml, exclude: 'rc', prefix: team, naming: path, append-suffix: -q}\n",
    )
    config = load_config(path)
    by_repo = {s.source.repository: s for s in config.selections}
    one, two, three = by_repo["one"], by_repo["two"], by_repo["three"]
    assert (one.keep_latest, two.keep_latest, three.keep_latest) == (2, 1, 2)
    assert one.exclude is not None
    assert one.exclude.pattern == "rc"
    assert three.exclude is not None
    assert three.exclude.pattern == "^1"
    assert one.platforms == PlatformPolicy.subset((Platform("linux", "amd64"),))
    assert two.platforms.mode is PlatformMode.SYSTEM
    assert three.immutable is not True
    assert three.immutable is not False
    assert str(one.target) == "m.example.com/team/one"
    assert one.suffix == "-q"
    listings = {s.source: ["1.0", "2.0", "2.1-rc1", "v3"] for s in config.selections}
    planned = [str(r.destination) for r in plan_listed(config.selections, listings).requests]
    assert planned == [
        "m.example.com/team/one:2.0-q",
        "m.example.com/team/one:v3-q",
        "m.example.com/team/three:2.1-rc1-q",  # its own exclude replaces the source's
        "m.example.com/team/three:v3-q",
        "m.example.com/team/two:v3-q",
    ]


def test_source_names_are_derived_stable_and_unique(tmp_path: Path) -> None:
    write(tmp_path, "x/a.yaml", "quay.io: {images: {a: [v1]}}\n")
    write(tmp_path, "y/a.yaml", "quay.io: {images: {b: [v1]}}\n")
    write(tmp_path, "l.txt", "c:1\n")
    path = write(
        tmp_path,
        "m.yaml",
        "destination: {registry: m.example.com}\n"
        "sources:\n"
        "  - {file: x/a.yaml}\n"
        "  - {file: y/a.yaml}\n"
        "  - {name: team, file: '*/a.yaml'}\n"
        "  - {list: l.txt}\n"
        "  - {inline: {quay.io: {images: {d: [v1]}}}}\n"
        "  - {inline: {quay.io: {images: {e: [v1]}}}}\n",
    )
    names = [s.name for s in load_config(path).sources]
    assert names == ["a", "a-2", "team/a", "team/a-2", "l", "inline-quay.io", "inline-quay.io-2"]


def test_reading_the_config_creates_nothing(example: Path) -> None:
    before = sorted(example.parent.rglob("*"))
    load_config(example)
    assert sorted(example.parent.rglob("*")) == before


def test_a_skopeo_file_is_not_a_daemon_config() -> None:
    with pytest.raises(ConfigError, match="not a daemon config"):
        load_config(FIXTURES / "every-key.yml")


def test_quiet_when_all_is_well(example: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    load_config(example)
    assert caplog.records == []
