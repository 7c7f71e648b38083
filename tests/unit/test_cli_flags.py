"""The pure parts of skopeo-compatible flag parsing and of the default auth-file search."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from mirrord.cli.common import (
    BoolValueOption,
    bare_bools_as_true,
    parse_creds,
    parse_duration,
    run,
)
from mirrord.registry import credentials

PARAMS: list[click.Parameter] = [
    BoolValueOption(["--tls-verify"]),
    BoolValueOption(["--src-tls-verify"]),
    click.Option(["-p", "--password"]),
    click.Option(["--quiet"], is_flag=True),
    click.Argument(["image"]),
]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tls-verify", "docker://h/x"], ["--tls-verify=true", "docker://h/x"]),
        (["docker://h/x", "--tls-verify"], ["docker://h/x", "--tls-verify=true"]),
        (["--tls-verify=false", "docker://h/x"], ["--tls-verify=false", "docker://h/x"]),
        (["--src-tls-verify", "--quiet", "a"], ["--src-tls-verify=true", "--quiet", "a"]),
        # the value of another option is left alone, and so is everything after `--`
        (["--password", "--tls-verify", "a"], ["--password", "--tls-verify", "a"]),
        (["-p", "--tls-verify", "a"], ["-p", "--tls-verify", "a"]),
        (["--", "--tls-verify"], ["--", "--tls-verify"]),
    ],
)
def test_bare_bools_become_true_and_never_take_the_next_argument(
    args: list[str], expected: list[str]
) -> None:
    assert bare_bools_as_true(args, PARAMS) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("10m", 600.0), ("90", 90.0), ("0", 0.0)],
)
def test_command_timeout_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "1x", "inf", "nan"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter, match="invalid duration"):
        parse_duration(text)


def test_creds_user_alone_has_an_empty_password() -> None:
    creds = parse_creds("robot", "--creds")
    assert creds.username == "robot"
    assert creds.password is not None
    assert creds.password.reveal() == ""
    with_colon = parse_creds("robot:a:b", "--creds").password
    assert with_colon is not None
    assert with_colon.reveal() == "a:b"


def test_creds_need_a_username() -> None:
    with pytest.raises(click.BadParameter, match="USERNAME"):
        parse_creds(":secret", "--creds")


def test_default_auth_files_without_xdg_runtime_dir_start_with_the_per_uid_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    per_uid = Path(f"/run/containers/{os.getuid()}/auth.json")
    assert credentials.default_auth_files() == [
        per_uid,
        tmp_path / ".config/containers/auth.json",
        tmp_path / ".docker/config.json",
        tmp_path / ".dockercfg",
    ]
    assert credentials.write_target(None) == per_uid


def test_default_auth_files_with_xdg_runtime_dir_are_unchanged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials.default_auth_files() == [
        tmp_path / "run/containers/auth.json",
        tmp_path / "cfg/containers/auth.json",
        tmp_path / "docker/config.json",
        tmp_path / ".dockercfg",
    ]
    assert credentials.write_target(None) == tmp_path / "run/containers/auth.json"


def test_skopeo_global_flags_that_mean_nothing_here_are_accepted(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mirrord.cli import main

    manifest = tmp_path / "m.json"
    manifest.write_bytes(b"{}")
    ignored = ["--insecure-policy", "--policy", "p.json", "--tmpdir", str(tmp_path)]
    ignored += ["--registries.d", str(tmp_path), "--user-agent", "cron/1"]
    result = CliRunner().invoke(main, [*ignored, "manifest-digest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


def test_a_local_file_error_ends_a_command_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def export() -> None:
        raise FileExistsError(17, "File exists", "/srv/bundles/today")

    with click.Context(click.Command("export")), pytest.raises(SystemExit) as ended:
        run(export())
    assert ended.value.code == 1
    assert capsys.readouterr().err == "mirrord: error: /srv/bundles/today: File exists\n"
