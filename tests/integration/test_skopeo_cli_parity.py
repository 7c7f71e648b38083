"""Where mirrord's single-image commands must answer as skopeo 1.9 does, against real registries.

A copy by digest to a destination without a tag ends up tagged `latest`; a destination with
both a tag and a digest is refused; `--tls-verify` alone never swallows the image after it;
Go durations, `--creds USER`, `--retry-times` and `--remove-signatures` are accepted; Ctrl-C at
the password prompt is an interrupt (130), not click's `Aborted!`.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from pathlib import Path

import pytest

from tests.harness.faultproxy import MakeFaultProxy
from tests.harness.images import Layout
from tests.harness.skopeo import SkopeoError, inspect_raw, list_tags, run_skopeo, seed
from tests.integration.conftest import CORPUS_REPO, SeedCorpus
from tests.integration.support import (
    Mirrord,
    dest_flags,
    docker_ref,
    flags,
    mirrord_command,
    src_flags,
)

# ------------------------------------------------------------------------------------------
# copy: the destination's tag
# ------------------------------------------------------------------------------------------


def test_copy_by_digest_to_a_destination_without_tag_tags_it_latest(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "docker")
    registry = source.registry
    by_digest = docker_ref(registry, f"{CORPUS_REPO}@{source.image.digest}")

    result = cli(
        "copy",
        *src_flags(registry),
        *dest_flags(registry),
        by_digest,
        docker_ref(registry, unique_repo),
    ).ok()

    assert f"-> {docker_ref(registry, unique_repo)}:latest " in result.stdout
    assert list_tags(registry, unique_repo) == ["latest"]
    assert inspect_raw(registry, f"{unique_repo}:latest") == source.image.manifest


def test_copy_to_a_destination_without_tag_keeps_the_source_tag(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "docker")
    registry = source.registry
    cli(
        "copy",
        "-q",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        docker_ref(registry, unique_repo),
    ).ok()
    assert list_tags(registry, unique_repo) == ["docker"]


def test_copy_to_a_destination_with_tag_and_digest_is_a_usage_error(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "docker")
    registry = source.registry
    both = docker_ref(registry, f"{unique_repo}:v1@{source.image.digest}")

    result = cli("copy", *src_flags(registry), *dest_flags(registry), source.ref, both)

    assert result.returncode == 2, result.describe()
    assert result.error_line() == (
        f"mirrord: error: {both}: a copy destination names a tag or a digest, not both"
    )
    with pytest.raises(SkopeoError, match=r"(?i)name unknown|not found"):
        list_tags(registry, unique_repo)


# ------------------------------------------------------------------------------------------
# Boolean flags: a value only as --flag=BOOL
# ------------------------------------------------------------------------------------------


def test_bare_tls_verify_before_the_image_means_true(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    source = seed_corpus("tls", "docker")
    cert_dir = str(source.registry.cert_dir)
    result = cli("inspect", "--raw", "--cert-dir", cert_dir, "--tls-verify", source.ref).ok()
    assert result.stdout_bytes == source.image.manifest


def test_tls_verify_false_still_skips_verification(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    source = seed_corpus("tls", "docker")  # its CA is not given: only false can reach it
    result = cli("inspect", "--raw", "--tls-verify=false", source.ref).ok()
    assert result.stdout_bytes == source.image.manifest
    refused = cli("inspect", "--raw", "--tls-verify", source.ref)
    assert refused.returncode == 1, refused.describe()


def test_bare_src_and_dest_tls_verify_before_the_references(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("tls", "docker")
    registry = source.registry
    dest = docker_ref(registry, f"{unique_repo}:v1")
    cert_dir = str(registry.cert_dir)
    cli(
        "copy",
        "-q",
        "--src-cert-dir",
        cert_dir,
        "--dest-cert-dir",
        cert_dir,
        "--src-tls-verify",
        source.ref,
        "--dest-tls-verify",
        dest,
    ).ok()
    assert inspect_raw(registry, f"{unique_repo}:v1") == source.image.manifest


def test_bare_tls_verify_on_login_before_the_registry(
    seed_corpus: SeedCorpus, cli: Mirrord, tmp_path: Path
) -> None:
    registry = seed_corpus("tls", "docker").registry
    authfile = tmp_path / "auth.json"
    result = cli(
        "login",
        "--cert-dir",
        str(registry.cert_dir),
        "-u",
        "someone",
        "--password-stdin",
        "--authfile",
        str(authfile),
        "--tls-verify",
        registry.host,
        stdin="pw\n",
    ).ok()
    assert "Login Succeeded" in result.stdout
    assert registry.host in authfile.read_text()
    logout = cli("logout", "--authfile", str(authfile), "--tls-verify", registry.host).ok()
    assert f"Removed login credentials for {registry.host}" in logout.stdout


def test_a_value_after_a_bare_tls_verify_is_an_argument_not_its_value(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", "docker")
    result = cli("inspect", "--raw", "--tls-verify", "false", source.ref)
    assert result.returncode == 2, result.describe()  # skopeo: "exactly one argument expected"
    assert "unexpected extra argument" in result.stderr


# ------------------------------------------------------------------------------------------
# skopeo's flag values: durations, --creds USER, --retry-times, --remove-signatures
# ------------------------------------------------------------------------------------------


def test_command_timeout_takes_go_durations(seed_corpus: SeedCorpus, cli: Mirrord) -> None:
    source = seed_corpus("anonymous", "docker")
    result = cli(
        "--command-timeout", "1m30s", "inspect", "--raw", *flags(source.registry), source.ref
    )
    assert result.ok().stdout_bytes == source.image.manifest


def test_command_timeout_in_milliseconds_gives_up_after_them(
    seed_corpus: SeedCorpus, fault_proxy: MakeFaultProxy, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", "docker")
    proxy = fault_proxy(source.registry)
    proxy.latency(20.0, path=r"/manifests/")
    started = time.monotonic()
    result = cli(
        "--command-timeout",
        "500ms",
        "inspect",
        "--raw",
        *flags(proxy),
        docker_ref(proxy, f"{CORPUS_REPO}:docker"),
    )
    assert result.returncode == 1, result.describe()
    assert result.error_line() == "mirrord: error: command timed out after 0.5s"
    assert time.monotonic() - started < 15


def test_a_bad_duration_is_a_usage_error(cli: Mirrord) -> None:
    result = cli("--command-timeout", "5 minutes", "inspect", "docker://127.0.0.1:9/x")
    assert result.returncode == 2, result.describe()
    assert "invalid duration '5 minutes'" in result.stderr


def test_creds_without_a_password_sends_the_user_with_an_empty_password(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("basic", "docker")
    assert source.creds is not None
    result = cli(
        "inspect",
        "--raw",
        *flags(source.registry, creds=False),
        "--creds",
        source.creds.username,
        source.ref,
    )
    assert result.returncode == 1, result.describe()  # reached the registry, which refused it
    assert f"credentials of user '{source.creds.username}' from --creds were refused" in (
        result.error_line()
    )


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("inspect", r"/manifests/"),
        ("list-tags", r"/tags/list"),
        ("copy", r"/manifests/"),
        ("copy-to-dir", r"/manifests/"),
    ],
)
def test_retry_times_bounds_the_retries_of_a_failing_request(
    command: str,
    path: str,
    seed_corpus: SeedCorpus,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    source = seed_corpus("anonymous", "docker")
    proxy = fault_proxy(source.registry)
    proxy.respond(503, method="GET", path=path, times=3)

    def run(retries: int) -> int:
        ref = docker_ref(proxy, f"{CORPUS_REPO}:docker")
        if command == "inspect":
            args = ["inspect", "--raw", *flags(proxy), ref]
        elif command == "list-tags":
            args = ["list-tags", *flags(proxy), docker_ref(proxy, CORPUS_REPO)]
        elif command == "copy":
            dest = docker_ref(source.registry, f"{unique_repo}:v1")
            args = ["copy", "-q", *src_flags(proxy), *dest_flags(source.registry), ref, dest]
        else:  # a local destination: the same registry client, the same retries
            args = ["copy", "-q", *src_flags(proxy), ref, f"dir:{tmp_path / str(retries)}"]
        return cli(args[0], "--retry-times", str(retries), *args[1:]).returncode

    assert run(0) == 1  # one 503, no retry
    assert proxy.count(method="GET", path=path) == 1
    assert run(2) == 0  # two more 503s, then the answer
    assert proxy.count(method="GET", path=path) >= 4


def test_retry_times_on_delete(
    seed_corpus: SeedCorpus,
    corpus_layout: Layout,
    fault_proxy: MakeFaultProxy,
    cli: Mirrord,
    unique_repo: str,
) -> None:
    registry = seed_corpus("anonymous", "docker").registry
    seed(corpus_layout, "docker", registry, f"{unique_repo}:v1")
    proxy = fault_proxy(registry)
    proxy.respond(503, method="DELETE", path=r"/manifests/", times=1)
    target = docker_ref(proxy, f"{unique_repo}:v1")
    failed = cli("delete", "--retry-times", "0", *flags(proxy), target)
    assert failed.returncode == 1, failed.describe()
    cli("delete", "--retry-times", "1", *flags(proxy), target).ok()
    with pytest.raises(SkopeoError, match=r"(?i)manifest unknown"):
        inspect_raw(registry, f"{unique_repo}:v1")


def test_copy_accepts_remove_signatures(
    seed_corpus: SeedCorpus, cli: Mirrord, unique_repo: str
) -> None:
    source = seed_corpus("anonymous", "docker")
    registry = source.registry
    dest = docker_ref(registry, f"{unique_repo}:v1")
    cli(
        "copy",
        "-q",
        "--remove-signatures",
        *src_flags(registry),
        *dest_flags(registry),
        source.ref,
        dest,
    ).ok()
    assert inspect_raw(registry, f"{unique_repo}:v1") == source.image.manifest


# ------------------------------------------------------------------------------------------
# Ctrl-C at the password prompt
# ------------------------------------------------------------------------------------------


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while wanted not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return out


def test_ctrl_c_at_the_password_prompt_is_an_interrupt(cli: Mirrord, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    args = ["login", "-u", "someone", "--authfile", str(authfile), "127.0.0.1:9"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: mirrord on a terminal, as a user runs it
        try:
            # Ctrl-C's signal as a shell leaves it, whatever the test process inherited
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execvpe(mirrord_command()[0], [*mirrord_command(), *args], cli.env())
        finally:
            os._exit(127)
    try:
        shown = _read_until(fd, b"Password", 60)
        assert b"Password" in shown, shown
        os.write(fd, b"\x03")
        shown += _read_until(fd, b"\x00never", 30)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130, shown
    assert b"mirrord: error: interrupted" in shown
    assert b"Aborted!" not in shown
    assert not authfile.exists()


# ------------------------------------------------------------------------------------------
# inspect --format: the Go templates scripts use
# ------------------------------------------------------------------------------------------

TEMPLATES = [
    "{{.Digest}}",
    "{{.Name}} {{.Architecture}}/{{.Os}}",
    "{{.RepoTags}}",
    "{{.Layers}} {{len .Layers}}",
    '{{index .Labels "nope"}}|{{.Labels.nope}}',
    "{{.Labels}}",
    "{{.Created}}",
    "{{ .Digest -}}  x",
]


@pytest.mark.parametrize("kind", ["docker", "list"])
def test_inspect_format_prints_what_skopeo_prints(
    kind: str, seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", kind)
    template = "|".join(TEMPLATES)  # one run of each tool for all of them
    args = ["inspect", "--format", template, *flags(source.registry), source.ref]
    expected = run_skopeo(*args).stdout.decode()
    assert cli(*args).ok().stdout.split("|") == expected.split("|")


def test_an_unsupported_template_is_a_usage_error_naming_it(
    seed_corpus: SeedCorpus, cli: Mirrord
) -> None:
    source = seed_corpus("anonymous", "docker")
    result = cli(
        "inspect", "--format", "{{range .Layers}}{{.}}{{end}}", *flags(source.registry), source.ref
    )
    assert result.returncode == 2, result.describe()
    assert "{{range .Layers}} is not supported" in result.error_line()
