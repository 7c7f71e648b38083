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
