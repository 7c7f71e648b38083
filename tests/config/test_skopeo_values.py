"""skopeo sync files whose values skopeo's YAML reader (yaml.v3 into Go strings and bools)
takes in its own way: a null is an empty string, only the first document is read, and
`tls-verify` is a bool or one of YAML 1.1's yes/no/on/off words, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrord.config import skopeo_sync_config
from mirrord.errors import ConfigError
from mirrord.registry.options import TLSMode
from tests.config.support import FakeRegistries, copies, pairs

DEST = "mirror.example.com/m"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sync.yml"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def test_a_null_tag_regex_is_the_empty_regex_and_selects_every_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "registry.example.com:\n  images-by-tag-regex:\n    team/app:\n")
    config = skopeo_sync_config(DEST, file=path)
    contents = {"registry.example.com/team/app": ["v1", "latest"]}
    assert await copies(config, FakeRegistries(contents)) == pairs(
        ("registry.example.com/team/app:v1", f"{DEST}/app:v1"),
        ("registry.example.com/team/app:latest", f"{DEST}/app:latest"),
    )


@pytest.mark.parametrize(
    ("fields", "username"),
    [
        ("{username: robot, password: }", "robot"),
        ("{username: robot, password: secret, identitytoken: }", "robot"),
        ("{username: , identitytoken: a-refresh-token}", ""),
    ],
    ids=["password", "identitytoken", "username"],
)
def test_a_null_credentials_field_is_empty_as_in_skopeo(
    tmp_path: Path, fields: str, username: str
) -> None:
    path = write(
        tmp_path, f"registry.example.com:\n  images: {{team/app: [v1]}}\n  credentials: {fields}\n"
    )
    credentials = (
        skopeo_sync_config(DEST, file=path).registry_options("registry.example.com").credentials
    )
    assert credentials is not None
    assert credentials.username == username


@pytest.mark.parametrize("value", ['"false"', "0", "f", "fAlse", "'true'", "1"])
def test_a_tls_verify_skopeo_cannot_read_as_a_bool_is_refused(tmp_path: Path, value: str) -> None:
    """skopeo stops the whole sync (`cannot unmarshal !!str into bool`); mirrord read these
    as a bool, some of them as false: verification off."""
    path = write(
        tmp_path, f"registry.example.com:\n  tls-verify: {value}\n  images: {{a/b: [v1]}}\n"
    )
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config(DEST, file=path)
    (problem,) = err.value.problems
    assert problem.endswith(
        'sync.yml:2: "registry.example.com".tls-verify: expected true or false '
        "(skopeo cannot read this value as a bool)"
    )


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("false", TLSMode.SKOPEO_NO_VERIFY),
        ("off", TLSMode.SKOPEO_NO_VERIFY),
        ("'no'", TLSMode.SKOPEO_NO_VERIFY),
        ("True", TLSMode.VERIFY),
        ("yes", TLSMode.VERIFY),
    ],
)
def test_a_tls_verify_skopeo_reads_as_a_bool_is_read_the_same(
    tmp_path: Path, value: str, mode: TLSMode
) -> None:
    path = write(
        tmp_path, f"registry.example.com:\n  tls-verify: {value}\n  images: {{a/b: [v1]}}\n"
    )
    config = skopeo_sync_config(DEST, file=path)
    assert config.registry_options("registry.example.com").tls is mode


def test_only_the_first_yaml_document_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path, "registry.example.com:\n  images: {team/app: [v1]}\n---\nnot: [a, skopeo, file]\n"
    )
    (selection,) = skopeo_sync_config(DEST, file=path).selections
    assert selection.tags == ("v1",)
    assert "sync.yml:4: only the first YAML document is read (as skopeo reads it)" in caplog.text


@pytest.mark.parametrize(
    ("value", "shown", "reason"),
    [
        (
            r'">=\u00a01.0"',
            "'>=\\xa01.0'",
            "improper constraint '>=\\xa01.0' (U+00A0 is not a space to Masterminds/semver: "
            "only tab, newline, form feed, carriage return and space are)",
        ),
        (
            "'>= 18446744073709551616'",
            "'>= 18446744073709551616'",
            "improper version '18446744073709551616': 18446744073709551616 is over "
            "18446744073709551615 (Masterminds/semver's limit, a uint64)",
        ),
    ],
    ids=["no-break-space", "over-uint64"],
)
def test_a_semver_constraint_masterminds_refuses_is_refused(
    tmp_path: Path, value: str, shown: str, reason: str
) -> None:
    """Refused at load time, naming the file, the line and the key."""
    path = write(tmp_path, f"registry.example.com:\n  images-by-semver:\n    team/app: {value}\n")
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config(DEST, file=path)
    (problem,) = err.value.problems
    assert 'sync.yml:3: "registry.example.com".images-by-semver."team/app": ' in problem
    assert problem.endswith(f"invalid semver constraint {shown}: {reason}")
