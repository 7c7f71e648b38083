"""Store fixtures: every store test runs against SQLite and against a real PostgreSQL.

PostgreSQL is a throwaway cluster (`initdb` + `pg_ctl`) in a temporary directory on a free
loopback port, started once per session; each test gets a fresh database in it. When the
PostgreSQL server binaries are missing the tests fail (never skip): install Debian's
`postgresql` package (`apt-get install -y postgresql`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mirrord.store import Store
from tests.store.support import FIGURES, FakeClock, OpenStore

BACKENDS = ("sqlite", "postgresql")
PG_USER = "postgres"  # as root, the cluster runs as this unprivileged user


@dataclass(frozen=True)
class PostgresCluster:
    port: int
    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/{database}"


def _version(bin_dir: Path) -> tuple[int, ...]:
    """(15,) for /usr/lib/postgresql/15/bin: the newest installed server wins."""
    return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())


def _pg_bin() -> Path:
    candidates = [Path(os.environ["PG_BIN"])] if "PG_BIN" in os.environ else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
        "or on PATH: install them with `apt-get install -y postgresql` (or set PG_BIN)",
        pytrace=False,
    )


def _as_pg_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", PG_USER, "--", *command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session, deleted afterwards."""
    bin_dir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="mirrord-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam(PG_USER)
        except KeyError:
            pytest.fail(f"running as root, but there is no user {PG_USER!r} to run PostgreSQL")
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log, port = base / "data", base / "server.log", _free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=300 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    _run(
        _as_pg_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
    )
    _run(
        _as_pg_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
    )
    try:
        yield PostgresCluster(port, base)
    finally:
        subprocess.run(
            _as_pg_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


_database_numbers = count()


async def _create_database(cluster: PostgresCluster) -> str:
    name = f"mirrord_test_{next(_database_numbers)}"
    admin = create_async_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await admin.dispose()
    return cluster.url(name)


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: an SQLite file, or a new database in the session's cluster."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state' / 'mirrord.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return await _create_database(cluster)


@pytest.fixture
async def other_database_url(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> str:
    """A second fresh, empty database on the backend of `database_url`."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'other' / 'mirrord.db'}"
    return await _create_database(request.getfixturevalue("postgres"))


@pytest.fixture
async def postgres_url(postgres: PostgresCluster) -> str:
    """A fresh, empty PostgreSQL database, for behaviour only PostgreSQL has (its locking)."""
    return await _create_database(postgres)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def open_store(database_url: str, clock: FakeClock) -> AsyncIterator[OpenStore]:
    """`await open_store()`: another Store (own engines, own connections) on the test's
    database, closed after the test."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = await Store.open(database_url, clock=clock)
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    """The test's store, migrated, on a fake clock."""
    return await open_store()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("store figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
