"""`mirrord check-config` and `mirrord convert`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrord.cli import main
from mirrord.config import load_config
from tests.config.support import FIXTURES

SYNCER = FIXTURES / "image-syncer"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def quay_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAY_PASSWORD", "from-the-environment")


def test_check_a_valid_daemon_config(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("quay.io: {images: {coreos/etcd: [v3.5.0]}}\n")
    path = tmp_path / "m.yaml"
    path.write_text("destination: {registry: m.example.com}\nsources: [{file: a.yaml}]\n")
    result = runner.invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{path}: OK: 1 source, 1 repository (0 listed by tag) from 1 registry -> m.example.com\n"
    )


def test_check_lists_every_problem(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("quay.io:\n  imagse: {x: []}\n  images-by-semver: {y: '>'}\n")
    path = tmp_path / "m.yaml"
    path.write_text(
        "destination: {registry: m.example.com}\nlimits: {jobz: 1}\nsources: [{file: a.yaml}]\n"
    )
    result = runner.invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"mirrord: error: {path}: 3 problems",
        f"{path}:2: limits.jobz: unknown key 'jobz' (did you mean 'jobs'?)",
        "a.yaml:2: \"quay.io\".imagse: unknown key 'imagse' (did you mean 'images'?)",
        "a.yaml:3: \"quay.io\".images-by-semver.y: invalid semver constraint '>': improper "
        "constraint '>'",
    ]


def test_check_a_plain_skopeo_file(runner: CliRunner) -> None:
    every_key = str(FIXTURES / "every-key.yml")
    result = runner.invoke(main, ["check-config", every_key, "--dest", "m.example.com/x", "--all"])
    assert result.exit_code == 2  # its cert-dir (certs/) does not exist next to the fixture
    assert "cert-dir" in result.stderr
    listed = runner.invoke(main, ["check-config", str(FIXTURES / "image-syncer" / "images.yaml")])
    assert listed.exit_code == 0, listed.output


def test_check_a_skopeo_file_with_skopeo_flags(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "sync.yml"
    path.write_text("localhost:5000: {images: {busybox: [latest]}}\n")
    assert runner.invoke(main, ["check-config", str(path)]).exit_code == 0
    scoped = runner.invoke(main, ["check-config", str(path), "--dest", "m.example.com", "--scoped"])
    assert scoped.exit_code == 2
    assert "a registry with a port cannot be scoped" in scoped.stderr
    bad_dest = runner.invoke(main, ["check-config", str(path), "--dest", "nohost"])
    assert bad_dest.exit_code == 2
    assert "is not a host name" in bad_dest.stderr


def test_daemon_configs_take_no_skopeo_flags(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "destination: {registry: m.example.com}\nsources: [{inline: {quay.io: {images: {a: [v1]}}}}]\n"
    )
    result = runner.invoke(main, ["check-config", str(path), "--dest", "x.example.com"])
    assert result.exit_code == 2
    assert "a daemon config names its destination" in result.stderr


def test_convert_to_stdout(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["convert", str(SYNCER / "images.yaml"), "--auth", str(SYNCER / "auth.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# mirrord config converted from image-syncer config")
    assert "password-env: QUAY_PASSWORD" in result.stdout
    assert "the output holds passwords" in result.stderr


def test_convert_to_a_private_file(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "mirrord.yaml"
    result = runner.invoke(
        main,
        [
            "convert",
            str(SYNCER / "images.yaml"),
            "--auth",
            str(SYNCER / "auth.yaml"),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(load_config(out).sources) == 4


def test_convert_refuses_what_it_cannot_express(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    path.write_text("a.io/x:1: a.io/y:2\nb.io/x: c.io/y\n")
    result = runner.invoke(main, ["convert", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"mirrord: error: {path}: 1 problem",
        f"{path}:1: \"a.io/x:1\": 'a.io/y:2' renames tags 1: mirrord keeps tag names",
    ]


@pytest.mark.parametrize("flags", [[], ["--dest", "mirror.example.com/p"]], ids=["alone", "dest"])
def test_a_skopeo_file_with_a_list_under_a_registry_is_an_error_not_an_image_syncer_file(
    runner: CliRunner, tmp_path: Path, flags: list[str]
) -> None:
    path = tmp_path / "sync.yml"
    path.write_text("quay.io:\n  - coreos/etcd\n")  # `images:` forgotten
    result = runner.invoke(main, ["check-config", *flags, str(path)])
    assert result.exit_code == 2, result.output
    assert f'{path}:1: "quay.io": ' in result.stderr
    assert "docker.io" not in result.output
