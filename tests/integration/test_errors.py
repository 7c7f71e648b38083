"""What a user sees when a copy or an inspect cannot work: one line naming what was wrong,
never a traceback, never the password, and an exit code a script can branch on
(1 failure, 2 usage, 4 not found). The password is a canary grepped for in all output.

A corrupt source blob fails the copy with the digest named and the destination tag untouched.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.harness.faultproxy import MakeFaultProxy
from tests.harness.images import Layout
from tests.harness.registry import Credentials, MakeRegistry, RegistryServer
from tests.harness.skopeo import SkopeoError, inspect_raw, seed
from tests.harness.tokenserver import TokenServer
from tests.integration.conftest import CORPUS_REPO, SeedCorpus
from tests.integration.support import CliResult, Mirrord, dest_flags, docker_ref, flags, src_flags

CANARY = Credentials("mirror", f"canary-{secrets.token_hex(8)}")


@dataclass(frozen=True)
class Target:
    """Where an image is (`host`, `repo_ref`), and the flags to reach it for one side of a
    command; `raw` replaces the whole reference when it is the thing under test."""

    host: str
    repo_ref: str
    flags: Callable[[str], list[str]]  # side ("", "src", "dest") -> flags
    raw: str | None = None

    @property
    def ref(self) -> str:
        return self.raw or f"docker://{self.host}/{self.repo_ref}"

    def elsewhere(self, repo_ref: str) -> str:
        """Another repository at the same place (for a destination)."""
        return self.raw or f"docker://{self.host}/{repo_ref}"


@dataclass(frozen=True)
class Case:
    code: int
    words: tuple[str, ...]  # what the error line must name (case-insensitive)
    target: Callable[[SeedCorpus], Target]


def _on(registry: RegistryServer, repo_ref: str, creds: Credentials | None = CANARY) -> Target:
    return Target(registry.host, repo_ref, lambda side: flags(registry, side, creds))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unreachable(seed_corpus: SeedCorpus) -> Target:
    anonymous = seed_corpus("anonymous", "oci").registry
    return Target(
        f"127.0.0.1:{_free_port()}",
        f"{CORPUS_REPO}:oci",
        lambda side: flags(anonymous, side, CANARY),
    )


def _no_ca(seed_corpus: SeedCorpus) -> Target:
    registry = seed_corpus("tls", "list").registry
    return Target(registry.host, f"{CORPUS_REPO}:list", lambda side: _creds_flag(side))


def _no_client_cert(seed_corpus: SeedCorpus) -> Target:
    registry = seed_corpus("tls-client", "list").registry
    ca_only = seed_corpus("tls", "list").registry.cert_dir
    return Target(
        registry.host,
        f"{CORPUS_REPO}:list",
        lambda side: [_flag(side, "cert-dir"), str(ca_only), *_creds_flag(side)],
    )


def _flag(side: str, name: str) -> str:
    return f"--{side}-{name}" if side else f"--{name}"


def _creds_flag(side: str) -> list[str]:
    return [_flag(side, "creds"), CANARY.joined()]


def _literal(ref: str) -> Target:
    return Target("", "", _creds_flag, raw=ref)


CASES: dict[str, Case] = {
    "wrong-password-basic": Case(
        1,
        ("refused", "mirror"),
        lambda s: _on(s("basic", "list").registry, f"{CORPUS_REPO}:list"),
    ),
    "wrong-password-token": Case(
        1,
        ("refused", "mirror"),
        lambda s: _on(s("token", "list").registry, f"{CORPUS_REPO}:list"),
    ),
    "no-credentials-basic": Case(
        1,
        ("credentials",),
        lambda s: _on(s("basic", "list").registry, f"{CORPUS_REPO}:list", creds=None),
    ),
    "unknown-repo": Case(
        4,
        ("it/no-such-repo",),
        lambda s: _on(s("anonymous", "oci").registry, "it/no-such-repo:oci"),
    ),
    "unknown-tag": Case(
        4,
        ("no-such-tag",),
        lambda s: _on(s("anonymous", "oci").registry, f"{CORPUS_REPO}:no-such-tag"),
    ),
    "unreachable-host": Case(1, ("cannot connect",), _unreachable),
    "tls-without-ca": Case(1, ("certificate", "cert-dir"), _no_ca),
    "tls-without-client-cert": Case(1, ("TLS", "client certificate"), _no_client_cert),
    "https-to-a-plain-http-registry": Case(
        1,
        ("TLS", "plain HTTP"),
        lambda s: Target(s("anonymous", "oci").registry.host, f"{CORPUS_REPO}:oci", _creds_flag),
    ),
    "malformed-reference": Case(
        2,
        ("invalid", "Bad_Repo"),
        lambda s: _literal("docker://127.0.0.1:5000/Bad_Repo::x"),
    ),
    "unknown-transport": Case(
        2, ("invalid image location", "ftp://"), lambda s: _literal("ftp://127.0.0.1:5000/r:v1")
    ),
}


def _check(result: CliResult, case: Case, target: Target) -> None:
    line = result.error_line()
    if target.host:  # the registry is named
        assert target.host in line, result.describe()
    assert result.returncode == case.code, result.describe()
    for word in case.words:
        assert word.lower() in line.lower(), result.describe()
    assert "Traceback" not in result.output
    assert CANARY.password not in result.output


@pytest.mark.parametrize("case_id", CASES)
def test_inspect_failure_is_one_line_without_secrets(
    case_id: str, seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    case = CASES[case_id]
    target = case.target(seed_corpus)
    result = cli("inspect", *target.flags(""), target.ref)
    _check(result, case, target)


# The same client code as inspect: a few representative cases (unreachable costs 8 s of retries).
COPY_SOURCE_CASES = [
    "wrong-password-token",
    "unknown-repo",
    "unknown-tag",
    "tls-without-client-cert",
    "malformed-reference",
]


@pytest.mark.parametrize("case_id", COPY_SOURCE_CASES)
def test_copy_failure_on_the_source_is_one_line_without_secrets(
    case_id: str, seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    case = CASES[case_id]
    target = case.target(seed_corpus)
    dest = seed_corpus("anonymous", "oci").registry
    dest_ref = docker_ref(dest, f"{unique_repo}:v1")
    result = cli("copy", *target.flags("src"), *dest_flags(dest), target.ref, dest_ref)
    _check(result, case, target)
    with pytest.raises(SkopeoError, match=r"(?i)manifest unknown|name unknown"):
        inspect_raw(dest, f"{unique_repo}:v1")


@pytest.mark.parametrize(
    "case_id", ["wrong-password-basic", "tls-without-ca", "malformed-reference"]
)
def test_copy_failure_on_the_destination_is_one_line_without_secrets(
    case_id: str, seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    case = CASES[case_id]
    target = case.target(seed_corpus)
    source = seed_corpus("anonymous", "oci")
    dest_ref = target.elsewhere(f"{unique_repo}:v1")
    result = cli("copy", *src_flags(source.registry), *target.flags("dest"), source.ref, dest_ref)
    _check(result, case, target)


# ------------------------------------------------------------------------------------------
# A source whose blob does not match its digest
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag_before", ["absent", "old-image"])
def test_corrupt_source_blob_fails_the_copy_and_leaves_the_tag_alone(
    tag_before: str,
    seed_corpus: SeedCorpus,
    corpus_layout: Layout,
    fault_proxy: MakeFaultProxy,
    make_registry: MakeRegistry,
    cli: Mirrord,
) -> None:
    source = seed_corpus("anonymous", "oci")
    proxy = fault_proxy(source.registry)
    old = corpus_layout.tags["docker"]
    # A layer the old image does not share (a destination that has a blob never fetches it).
    layer = max(set(source.image.blobs) - set(old.blobs), key=lambda d: source.image.blobs[d])
    proxy.corrupt(method="GET", path=rf"/blobs/{layer}$")
    dest = make_registry("anonymous")
    if tag_before == "old-image":
        seed(corpus_layout, "docker", dest, "mirror/app:v1")

    result = cli(
        "copy",
        *src_flags(proxy),
        *dest_flags(dest),
        docker_ref(proxy, f"{CORPUS_REPO}:oci"),
        docker_ref(dest, "mirror/app:v1"),
    )
    assert result.returncode == 1, result.describe()
    line = result.error_line()
    assert layer in line
    assert "digest" in line
    assert proxy.count(method="GET", path=rf"/blobs/{layer}$") >= 1
    assert not dest.blob_path(layer).exists()
    if tag_before == "old-image":
        assert inspect_raw(dest, "mirror/app:v1") == old.manifest
    else:
        with pytest.raises(SkopeoError, match=r"(?i)manifest unknown"):
            inspect_raw(dest, "mirror/app:v1")


def test_a_user_without_push_is_told_so_not_that_the_password_is_wrong(
    seed_corpus: SeedCorpus, token_server: TokenServer, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "oci")
    dest = seed_corpus("token", "list").registry
    reader = Credentials(f"reader-{secrets.token_hex(4)}", f"canary-{secrets.token_hex(8)}")
    token_server.add_user(reader.username, reader.password, {"*": ["pull"]})
    result = cli(
        "copy",
        *src_flags(source.registry),
        *dest_flags(dest, creds=reader),
        source.ref,
        docker_ref(dest, f"{unique_repo}:v1"),
    )
    assert result.returncode == 1, result.describe()
    line = result.error_line()
    assert f"user {reader.username!r} from --dest-creds is not granted" in line
    # Distribution writes the scope's actions in map order: pull,push or push,pull.
    granted = re.search(rf"repository:{re.escape(unique_repo)}:([a-z,]+)\)", line)
    assert granted is not None, line
    assert sorted(granted.group(1).split(",")) == ["pull", "push"]
    assert "refused" not in line
    assert reader.password not in result.output


def test_corrupt_source_manifest_fails_the_copy_naming_the_digest(
    seed_corpus: SeedCorpus, fault_proxy: MakeFaultProxy, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "index")
    child = source.image.children[0]
    proxy = fault_proxy(source.registry)
    proxy.corrupt(method="GET", path=rf"/manifests/{child.digest}$")
    dest = source.registry
    result = cli(
        "copy",
        "--all",
        *src_flags(proxy),
        *dest_flags(dest),
        docker_ref(proxy, f"{CORPUS_REPO}:index"),
        docker_ref(dest, f"{unique_repo}:v1"),
    )
    assert result.returncode == 1, result.describe()
    assert child.digest in result.error_line()
    with pytest.raises(SkopeoError, match=r"(?i)manifest unknown|name unknown"):
        inspect_raw(dest, f"{unique_repo}:v1")
