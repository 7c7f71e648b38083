"""Configuration: the daemon config and the source files it names, validated at the edge into
frozen objects (`MirrorConfig`, `RepoSelection`s) that nothing inward re-reads.

Source formats: skopeo sync YAML (verbatim, plus the `mirrord:` extension key), image list
files, and image-syncer configs (converted). See README.md, "Configuration".

The names below are imported on first use: a command that needs one submodule (reading an
image list, say) does not pay for the daemon config's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mirrord.config.daemon import MirrorConfig, Source
    from mirrord.config.load import load_config, load_daemon_data, skopeo_sync_config, sniff

_HOMES = {
    "MirrorConfig": "mirrord.config.daemon",
    "Source": "mirrord.config.daemon",
    "load_config": "mirrord.config.load",
    "load_daemon_data": "mirrord.config.load",
    "skopeo_sync_config": "mirrord.config.load",
    "sniff": "mirrord.config.load",
}

__all__ = [
    "MirrorConfig",
    "Source",
    "load_config",
    "load_daemon_data",
    "skopeo_sync_config",
    "sniff",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
