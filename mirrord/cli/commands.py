"""Imports every command module so that each registers its commands on `main`."""

from mirrord.cli import (
    auth,  # noqa: F401
    config_cmds,  # noqa: F401
    db,  # noqa: F401
    demo,  # noqa: F401
    images,  # noqa: F401
    ops,  # noqa: F401
    sync,  # noqa: F401
)
