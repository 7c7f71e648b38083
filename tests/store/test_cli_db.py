"""`mirrord db upgrade` and `mirrord db current`; operator commands on a missing database."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrord.cli import main
from mirrord.store import migrate

HEAD = migrate.head_revision()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'state' / 'mirrord.db'}"


def test_upgrade_then_current_show_the_head_revision(sqlite_url: str) -> None:
    runner = CliRunner()
    upgraded = runner.invoke(main, ["db", "upgrade", "--database", sqlite_url])
    assert (upgraded.exit_code, upgraded.output) == (0, f"database at revision {HEAD} (head)\n")
    current = runner.invoke(main, ["db", "current"], env={"MIRRORD_DATABASE": sqlite_url})
    assert (current.exit_code, current.output) == (0, f"{HEAD} (head)\n")


def test_current_on_a_missing_database_fails_without_creating_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["db", "current", "--database", sqlite_url])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"mirrord: error: no database at {tmp_path}/state/mirrord.db"
    ]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "argv", [["status"], ["jobs"], ["cancel", "5"], ["retry", "--failed"], ["retry", "5"]]
)
def test_operator_commands_on_a_missing_database_fail_without_creating_it(
    sqlite_url: str, tmp_path: Path, argv: list[str]
) -> None:
    """A mistyped --database used to become a new, empty database reporting nothing to do."""
    result = CliRunner().invoke(main, [*argv, "--database", sqlite_url])
    assert result.exit_code != 0
    [line] = result.output.strip().splitlines()
    assert line.endswith(f"error: no database at {tmp_path}/state/mirrord.db")
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "url", ["mysql://db/mirrord", "postgresql+asyncpg://nobody@127.0.0.1:1/mirrord"]
)
def test_bad_databases_fail_with_one_line(url: str) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade", "--database", url])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("mirrord: error: ")
