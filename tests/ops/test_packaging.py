"""An installed mirrord (a wheel, not the source tree) has its migrations and runs its commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "mirrord", "migrations")


def _run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (so no build output lands in the checkout)."""
    tree = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, tree / name)
    dist = tree / "dist"
    # As a user's `pip wheel .` does: build requirements (setuptools) come from the index.
    pip = (sys.executable, "-m", "pip", "wheel", "--no-deps", "-q")
    _run(*pip, "-w", dist, tree, cwd=tree)
    (built,) = dist.glob("mirrord-*.whl")
    return built


@pytest.mark.slow
def test_an_installed_wheel_migrates_a_database(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    # Dependencies come from the development venv's site-packages, added as a plain path (its
    # .pth files, the editable mirrord among them, are not processed from there).
    purelib = Path(sysconfig.get_paths(vars={"base": str(target)})["purelib"])
    purelib.joinpath("deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = target / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    where = _run(python, "-c", "import mirrord, sys; print(mirrord.__file__)", cwd=tmp_path)
    assert where.startswith(str(target)), f"mirrord was imported from {where}"
    database = f"sqlite:///{tmp_path / 'mirrord.db'}"
    mirrord = target / "bin" / "mirrord"
    upgraded = _run(mirrord, "db", "upgrade", "--database", database, cwd=tmp_path)
    assert "(head)" in upgraded
    assert "(head)" in _run(mirrord, "db", "current", "--database", database, cwd=tmp_path)
    assert "Usage" in _run(mirrord, "run", "--help", cwd=tmp_path)


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, by stage: [(INSTRUCTION, arguments), ...]."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def test_dockerfile_builds_in_stages_and_runs_the_daemon_unprivileged() -> None:
    """Docker is not available here: check what can be checked without it. The build stage's
    commands (pip install, then `mirrord db upgrade` outside the source tree) are the ones
    test_an_installed_wheel_migrates_a_database runs."""
    build, runtime = _dockerfile_stages()
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for instruction, arguments in build:
        if instruction == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert f"!{source.rstrip('/')}" in {i.rstrip("/") for i in ignored}, source
    assert any("db upgrade" in a for i, a in build if i == "RUN")
    final = dict(runtime)
    assert final["USER"] not in ("root", "0")
    assert final["ENTRYPOINT"] == '["mirrord", "run"]'
    assert "/healthz" in final["HEALTHCHECK"]
    assert final["COPY"].startswith("--from=build ")
    assert "/var/lib/mirrord" in final["VOLUME"]
