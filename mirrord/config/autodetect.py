"""One entry point for every kind of file a command may be given."""

from __future__ import annotations

from pathlib import Path

from mirrord.config.daemon import MirrorConfig
from mirrord.config.imagesyncer import load_image_syncer
from mirrord.config.load import (
    PLACEHOLDER_DESTINATION,
    load_daemon_document,
    skopeo_sync_config,
    sniff,
)
from mirrord.config.yamlsafe import read_yaml
from mirrord.errors import ConfigError
from mirrord.model import PlatformPolicy


def load_any(
    path: Path,
    *,
    dest: str | None = None,
    scoped: bool = False,
    append_suffix: str = "",
    platforms: PlatformPolicy | None = None,
    auth: Path | None = None,
) -> MirrorConfig:
    """A daemon config, a plain skopeo sync file (with skopeo's flags: `dest` is sync's DEST,
    a placeholder when only checking), or an image-syncer config (with its `auth` file)."""
    doc = read_yaml(path)
    kind = sniff(doc.data)
    skopeo_flags = dest is not None or scoped or append_suffix or platforms is not None
    if kind == "image-syncer" and (dest is not None or scoped or append_suffix):
        kind = "skopeo"  # skopeo's DEST was given: read it as the skopeo file it was meant to be
    if kind == "daemon":
        if skopeo_flags:
            raise ConfigError(f"{path}: a daemon config names its destination; drop --dest and co.")
        return load_daemon_document(doc, path.parent)
    if kind == "image-syncer":
        return load_image_syncer(path, auth)
    return skopeo_sync_config(
        dest or PLACEHOLDER_DESTINATION,
        file=path,
        scoped=scoped,
        append_suffix=append_suffix,
        platforms=platforms,
    )
