"""Configuration: the daemon config and the source files it names, validated at the edge into
frozen objects (`MirrorConfig`, `RepoSelection`s) that nothing inward re-reads.

Source formats: skopeo sync YAML (verbatim, plus the `mirrord:` extension key), image list
files, and image-syncer configs (converted). See docs/config.md.
"""

from mirrord.config.daemon import MirrorConfig, Source
from mirrord.config.load import load_config, load_daemon_data, skopeo_sync_config, sniff

__all__ = [
    "MirrorConfig",
    "Source",
    "load_config",
    "load_daemon_data",
    "skopeo_sync_config",
    "sniff",
]
