"""Real skopeo sync files plan the copies skopeo would make, for given registry contents.

Expected copies are written out by hand from skopeo's rules (docs/skopeo-sync.1.md and
cmd/skopeo/sync.go): `images` entries digest-first then tag, `[]`/null = every tag, regexes
searched unanchored, Masterminds semver with prereleases excluded, basename naming by default,
`--scoped`, `--append-suffix`, docker.io normalisation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mirrord.config import skopeo_sync_config
from mirrord.errors import ConfigError
from mirrord.model import Platform, PlatformMode, PlatformPolicy
from mirrord.plan import plan
from mirrord.registry.options import TLSMode
from tests.config.support import FIXTURES, FakeRegistries, copies, pairs

DIGEST = "sha256:0000000000000000000000000000000011111111111111111111111111111111"

CONTENTS = {
    "registry.example.com/busybox": ["1-glibc", "1-musl", "1-ubuntu", "latest"],
    "registry.example.com/redis": ["1.0", "2.0", "6.2.0", "6.2.14", "6.2.14-alpine", "7.0.0"],
    "registry.example.com/postgres": ["15", "16"],
    "registry.example.com/nginx": [
        "1.13.0-alpine-perl",
        "1.13.1-alpine-perl",
        "1.13.2-alpine-perl",
        "1.13.2-alpine",
        "1.13.12-alpine-perl",
        "x1.13.1-alpine-perl",
    ],
    "registry.example.com/haproxy": ["2.0", "2.0-alpine", "alpine", "2.0-alpine3.12", "latest"],
    "registry.example.com/alpine": [
        "3.11",
        "3.11.6",
        "3.12",
        "3.12.0",
        "3.12.1",
        "3.13.0-rc1",
        "3.14",
        "edge",
        "latest",
        "4.0.0",
        "v3.15.0",
        "20210101",
    ],
    "registry.example.com/repo/busybox": ["1-glibc", "latest"],
    "quay.io/coreos/etcd": ["latest", "v3.5.0"],
}

ALPINE_SEMVER = ["3.12", "3.12.0", "3.12.1", "3.14", "4.0.0", "v3.15.0", "20210101"]


@pytest.fixture
def doc_example(tmp_path: Path) -> Path:
    """skopeo's documented example, its cert-dir pointed at a directory that exists."""
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_text("not read at load time\n")
    text = (FIXTURES / "skopeo-sync.1.yml").read_text()
    path = tmp_path / "sync.yml"
    path.write_text(text.replace("/home/john/certs", str(certs)))
    path.chmod(0o600)
    return path


@pytest.fixture
def every_key(tmp_path: Path) -> Path:
    (tmp_path / "certs").mkdir()
    path = tmp_path / "every-key.yml"
    shutil.copy(FIXTURES / "every-key.yml", path)
    path.chmod(0o600)
    return path


def doc_example_copies(dest: str) -> list[tuple[str, str]]:
    src = "registry.example.com"
    return pairs(
        *((f"{src}/busybox:{t}", f"{dest}/busybox:{t}") for t in CONTENTS[f"{src}/busybox"]),
        (f"{src}/redis:1.0", f"{dest}/redis:1.0"),
        (f"{src}/redis:2.0", f"{dest}/redis:2.0"),
        (f"{src}/redis@{DIGEST}", f"{dest}/redis@{DIGEST}"),
        (f"{src}/nginx:1.13.1-alpine-perl", f"{dest}/nginx:1.13.1-alpine-perl"),
        (f"{src}/nginx:1.13.2-alpine-perl", f"{dest}/nginx:1.13.2-alpine-perl"),
        *((f"{src}/alpine:{t}", f"{dest}/alpine:{t}") for t in ALPINE_SEMVER),
        ("quay.io/coreos/etcd:latest", f"{dest}/etcd:latest"),
    )


async def test_documented_example(doc_example: Path) -> None:
    config = skopeo_sync_config("my-registry.local.lan/repo/", file=doc_example)
    registries = FakeRegistries(CONTENTS)
    assert await copies(config, registries) == doc_example_copies("my-registry.local.lan/repo")
    listed = sorted(name for name, _ in registries.calls)
    assert listed == [f"registry.example.com/{r}" for r in ("alpine", "busybox", "nginx")]


async def test_documented_example_credentials_and_tls(doc_example: Path) -> None:
    config = skopeo_sync_config("my-registry.local.lan/repo/", file=doc_example)
    example = config.registry_options("registry.example.com")
    assert example.tls is TLSMode.VERIFY
    assert example.cert_dir == doc_example.parent / "certs"
    assert example.credentials is not None
    assert example.credentials.username == "john"
    assert example.credentials.password is not None
    assert example.credentials.password.reveal() == "this is a secret"
    assert config.registry_options("quay.io").tls is TLSMode.SKOPEO_NO_VERIFY
    registries = FakeRegistries(CONTENTS)
    await plan(config, registries)
    assert all(o.credentials == example.credentials for _, o in registries.calls)


def test_documented_example_verbatim_names_the_missing_cert_dir() -> None:
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config("my-registry.local.lan/repo/", file=FIXTURES / "skopeo-sync.1.yml")
    (problem,) = err.value.problems
    where, _, rest = problem.partition(": ")
    assert where.endswith("fixtures/skopeo-sync.1.yml:17")
    assert rest.startswith('"registry.example.com".cert-dir: cert-dir /home/john/certs')


async def test_every_key(every_key: Path) -> None:
    config = skopeo_sync_config("mirror.example.com/m", file=every_key)
    src, dst = "registry.example.com", "mirror.example.com/m"
    expected = pairs(
        *((f"{src}/busybox:{t}", f"{dst}/busybox:{t}") for t in CONTENTS[f"{src}/busybox"]),
        *((f"{src}/redis:{t}", f"{dst}/redis:{t}") for t in ("1.0", "2.0", "6.2.0", "6.2.14")),
        (f"{src}/redis@{DIGEST}", f"{dst}/redis@{DIGEST}"),
        (f"{src}/postgres:15", f"{dst}/postgres:15"),
        (f"{src}/postgres:16", f"{dst}/postgres:16"),
        (f"{src}/nginx:1.13.1-alpine-perl", f"{dst}/nginx:1.13.1-alpine-perl"),
        (f"{src}/nginx:1.13.2-alpine-perl", f"{dst}/nginx:1.13.2-alpine-perl"),
        *(
            (f"{src}/haproxy:{t}", f"{dst}/haproxy:{t}")
            for t in ("2.0-alpine", "2.0-alpine3.12", "alpine")
        ),
        *((f"{src}/alpine:{t}", f"{dst}/alpine:{t}") for t in ALPINE_SEMVER),
        ("quay.io/coreos/etcd:latest", f"{dst}/etcd:latest"),
        ("docker.io/library/busybox:1.36", f"{dst}/busybox:1.36"),
        ("docker.io/bitnami/redis:7.0", f"{dst}/redis:7.0"),
    )
    assert await copies(config, FakeRegistries(CONTENTS)) == expected


def test_every_key_registry_options(every_key: Path) -> None:
    config = skopeo_sync_config("mirror.example.com/m", file=every_key)
    quay = config.registry_options("quay.io")
    assert quay.tls is TLSMode.SKOPEO_NO_VERIFY
    assert quay.credentials is not None
    assert quay.credentials.identity_token is not None
    assert quay.credentials.identity_token.reveal() == "an oauth2 refresh token"
    assert quay.credentials.password is None
    hub = config.registry_options("docker.io")
    assert hub.credentials is None  # every field empty: the auth files decide
    assert hub.ratelimit_floor == 10
    assert hub.tls is TLSMode.VERIFY  # tls-verify absent: the default
    assert config.registry_options("registry.example.com").cert_dir == every_key.parent / "certs"


async def test_scoped(every_key: Path) -> None:
    config = skopeo_sync_config("mirror.example.com/m", file=every_key, scoped=True)
    planned = dict(await copies(config, FakeRegistries(CONTENTS)))
    assert (
        planned["docker.io/library/busybox:1.36"]
        == "mirror.example.com/m/docker.io/library/busybox:1.36"
    )
    assert (
        planned["quay.io/coreos/etcd:latest"] == "mirror.example.com/m/quay.io/coreos/etcd:latest"
    )
    assert planned[f"registry.example.com/redis@{DIGEST}"] == (
        f"mirror.example.com/m/registry.example.com/redis@{DIGEST}"
    )


@pytest.fixture
def doc_example_without_digest(doc_example: Path) -> Path:
    path = doc_example.with_name("no-digest.yml")
    path.write_text(doc_example.read_text().replace(f'- "{DIGEST}"', ""))
    return path


async def test_append_suffix(doc_example_without_digest: Path) -> None:
    no_digest = doc_example_without_digest
    config = skopeo_sync_config("my-registry.local.lan", file=no_digest, append_suffix="-mirror")
    planned = await copies(config, FakeRegistries(CONTENTS))
    assert ("registry.example.com/redis:1.0", "my-registry.local.lan/redis:1.0-mirror") in planned
    assert all(d.endswith("-mirror") for _, d in planned)
    assert len(planned) == len(doc_example_copies("x")) - 1


def test_append_suffix_on_a_digest_is_refused(doc_example: Path) -> None:
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config("my-registry.local.lan", file=doc_example, append_suffix="-mirror")
    (problem,) = err.value.problems
    assert problem == (
        f'{doc_example}:8: "registry.example.com".images.redis[2]: '
        "append-suffix cannot apply to a digest (skopeo fails the whole sync here)"
    )


async def test_platforms_follow_skopeo_flags(doc_example: Path) -> None:
    host = skopeo_sync_config("my-registry.local.lan", file=doc_example)
    assert {s.platforms.mode for s in host.selections} == {PlatformMode.SYSTEM}
    every = skopeo_sync_config(
        "my-registry.local.lan", file=doc_example, platforms=PlatformPolicy.all()
    )
    result = await plan(every, FakeRegistries(CONTENTS))
    assert {r.platforms for r in result.requests} == {PlatformPolicy.all()}
    arm = PlatformPolicy.system(Platform("linux", "arm64", "v8"))
    pinned = skopeo_sync_config("my-registry.local.lan", file=doc_example, platforms=arm)
    assert {s.platforms for s in pinned.selections} == {arm}


# The `--src docker` examples of docs/skopeo-sync.1.md (and one from the seed's field guide).
@pytest.mark.parametrize(
    ("reference", "dest", "flags", "expected"),
    [
        (
            "registry.example.com/busybox",
            "my-registry.local.lan",
            {},
            [("registry.example.com/busybox:{t}", "my-registry.local.lan/busybox:{t}")],
        ),
        (
            "registry.example.com/repo/busybox",
            "my-registry.local.lan/repo",
            {},
            [("registry.example.com/repo/busybox:{t}", "my-registry.local.lan/repo/busybox:{t}")],
        ),
        (
            "registry.example.com/busybox",
            "my-registry.local.lan",
            {"append_suffix": "-mirror"},
            [("registry.example.com/busybox:{t}", "my-registry.local.lan/busybox:{t}-mirror")],
        ),
        (
            "registry.example.com/busybox",
            "my-registry.local.lan",
            {"scoped": True},
            [
                (
                    "registry.example.com/busybox:{t}",
                    "my-registry.local.lan/registry.example.com/busybox:{t}",
                )
            ],
        ),
    ],
)
async def test_documented_docker_source_examples(
    reference: str, dest: str, flags: dict[str, object], expected: list[tuple[str, str]]
) -> None:
    config = skopeo_sync_config(dest, reference=reference, **flags)  # type: ignore[arg-type]
    registries = FakeRegistries(CONTENTS)
    tags = CONTENTS[reference]
    want = pairs(*((s.format(t=t), d.format(t=t)) for s, d in expected for t in tags))
    assert await copies(config, registries) == want


async def test_docker_source_with_a_tag() -> None:
    config = skopeo_sync_config("hub.k8s.li", reference="k8s.gcr.io/pause:3.3")
    registries = FakeRegistries({})
    assert await copies(config, registries) == pairs(
        ("k8s.gcr.io/pause:3.3", "hub.k8s.li/pause:3.3")
    )
    assert registries.calls == []


async def test_docker_hub_destination_is_normalised() -> None:
    config = skopeo_sync_config("docker.io", reference="quay.io/coreos/etcd:latest")
    assert await copies(config, FakeRegistries({})) == [
        ("quay.io/coreos/etcd:latest", "docker.io/library/etcd:latest")
    ]


async def test_the_same_tag_from_two_sections_is_copied_once(tmp_path: Path) -> None:
    path = tmp_path / "overlap.yml"
    path.write_text(
        "registry.example.com:\n"
        "  images: {redis: ['6.2.0']}\n"
        "  images-by-tag-regex: {redis: '^6\\.2'}\n"
        "  images-by-semver: {redis: '~6.2'}\n"
    )
    config = skopeo_sync_config("mirror.example.com", file=path)
    planned = await copies(config, FakeRegistries(CONTENTS))
    src = "registry.example.com/redis"
    assert planned == pairs(
        (f"{src}:6.2.0", "mirror.example.com/redis:6.2.0"),
        (f"{src}:6.2.14", "mirror.example.com/redis:6.2.14"),
        (f"{src}:6.2.14-alpine", "mirror.example.com/redis:6.2.14-alpine"),
    )


@pytest.mark.parametrize(
    ("key", "joined"),
    [
        ("quay.io/", "quay.io//coreos/etcd"),
        ("quay.io/team/", "quay.io/team//coreos/etcd"),
        ("quay.io//team", "quay.io//team/coreos/etcd"),
    ],
)
def test_a_registry_key_with_an_empty_path_segment_is_refused(
    tmp_path: Path, key: str, joined: str
) -> None:
    """skopeo 1.9.3 joins the key and each repo with "/": `quay.io//coreos/etcd` is an invalid
    reference, and skopeo logs "Error parsing repository name, skipping" for every repo (its
    sync then does nothing); mirrord read `quay.io/:` as `quay.io:`."""
    path = tmp_path / "sync.yml"
    path.write_text(
        f"{key}:\n  images: {{coreos/etcd: [v1]}}\n  images-by-tag-regex: {{coreos/dns: '^v'}}\n"
    )
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config("mirror.example.com", file=path)
    (problem,) = err.value.problems
    assert problem == (
        f'{path}:1: "{key}": {key!r} has an empty path segment: skopeo joins it and each repo '
        f"with '/' into an invalid name ({joined!r}) and skips every repo under it; drop the "
        "extra '/'"
    )


async def test_a_registry_key_with_a_namespace_is_joined_to_each_repo(tmp_path: Path) -> None:
    path = tmp_path / "sync.yml"
    path.write_text("quay.io/coreos:\n  images: {etcd: [v1]}\n")
    config = skopeo_sync_config("mirror.example.com", file=path)
    assert await copies(config, FakeRegistries({})) == [
        ("quay.io/coreos/etcd:v1", "mirror.example.com/etcd:v1")
    ]
