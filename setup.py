"""Packages: mirrord's own, found, plus the top-level migrations/ directory installed as the
package `mirrord_migrations`, so an installed (non-editable) mirrord can migrate its database.
Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["mirrord", "mirrord.*"]),
        "mirrord_migrations",
        "mirrord_migrations.versions",
    ],
    package_dir={"mirrord_migrations": "migrations"},
)
