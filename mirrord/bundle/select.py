"""Which pool images a LIST names, and what they are called in the bundle.

The pool is the DEST the LIST was synced to (by `mirrord sync`, `skopeo sync` or sync.sh):
`--from docker://REGISTRY[/PREFIX]` or `--from registry-storage:PATH[:PREFIX]`. Each image the
LIST selects is looked up in the pool under the name sync gave it there, and keeps that name in
the bundle without PREFIX; `mirrord import BUNDLE docker://AIRGAP[/PREFIX2]` then puts it where
a sync to AIRGAP/PREFIX2 would have. LIST is an image list file (`images-list.txt`), a skopeo
sync YAML file, an image-syncer file or a daemon config (its destination is replaced by the
pool; a daemon config keeps its own prefix when the pool names none).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mirrord.config.context import Choices, SourceContext
from mirrord.config.imagelist import list_selections, parse_image_list
from mirrord.config.naming import Destination, Naming
from mirrord.config.yamlsafe import read_text, read_yaml
from mirrord.errors import ConfigError
from mirrord.model import PlatformPolicy
from mirrord.plan import RepoSelection, copies_for

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".list")
# Destination keys that describe how to reach the daemon's own destination, not the pool.
_CONNECTION_KEYS = ("tls", "tls-verify", "cert-dir", "credentials")


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One image to export: its name in the bundle and where it is in the pool."""

    repository: str
    tag: str | None  # None: carried by digest only
    pool_repository: str
    pool_reference: str  # tag or digest

    @property
    def order(self) -> tuple[str, str, str]:
        """Sort key: by repository, then tag (digest-only images first)."""
        return (self.repository, self.tag or "", self.pool_reference)

    @property
    def name(self) -> str:
        return (
            f"{self.repository}:{self.tag}"
            if self.tag
            else f"{self.repository}@{self.pool_reference}"
        )


def is_list_file(path: Path) -> bool:
    """An image list (one image per line) rather than YAML: by suffix, else by content."""
    if path.suffix in LIST_SUFFIXES:
        return True
    try:
        data = read_yaml(path).data
    except ConfigError:
        return True
    return not isinstance(data, dict)


def list_file_selections(path: Path, pool: Destination) -> tuple[RepoSelection, ...]:
    """An image list read as a daemon config's `list:` source would read it (lines relative to
    docker.io, `path` naming), without loading the daemon config's models."""
    parsed = parse_image_list(read_text(path), "docker.io")
    ctx = SourceContext(path.stem, pool, Naming.PATH, "", Choices(platforms=PlatformPolicy.all()))
    selections, naming = list_selections(parsed, ctx)
    problems = [f"{path}:{line}: {message}" for line, message in (*parsed.problems, *naming)]
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", tuple(problems))
    return tuple(selections)


def load_selections(path: Path, pool: Destination) -> tuple[RepoSelection, ...]:
    """The selections of LIST, with the pool as their destination."""
    if is_list_file(path):
        return list_file_selections(path, pool)
    from mirrord.config.autodetect import load_any  # the YAML kinds need the full models
    from mirrord.config.load import load_daemon_document, sniff

    doc = read_yaml(path)
    if sniff(doc.data) == "daemon":
        data = dict(doc.data)
        destination = {
            k: v for k, v in dict(data["destination"]).items() if k not in _CONNECTION_KEYS
        }
        destination["registry"] = pool.registry
        if pool.prefix:
            destination["prefix"] = pool.prefix
        data["destination"] = destination
        return load_daemon_document(dataclasses.replace(doc, data=data), path.parent).selections
    return load_any(path, dest=str(pool), platforms=PlatformPolicy.all()).selections


def bundle_repository(pool_repository: str, prefix: str) -> str:
    """The name in the bundle: the pool name without the pool's prefix."""
    if prefix and pool_repository.startswith(prefix + "/"):
        return pool_repository[len(prefix) + 1 :]
    return pool_repository


def unsuffixed(tags: Iterable[str], suffix: str) -> list[str]:
    """Pool tags as the source named them (sync appended `suffix`; others are not ours)."""
    if not suffix:
        return list(tags)
    return [t.removesuffix(suffix) for t in tags if t.endswith(suffix) and t != suffix]


def plan_export(
    selections: Sequence[RepoSelection], listed: Mapping[str, Sequence[str]], prefix: str
) -> tuple[tuple[ExportItem, ...], tuple[str, ...]]:
    """The images to export (one per bundle name) and the conflicts resolved on the way.

    `listed` holds the pool's tags of each pool repository that a selection lists."""
    items: dict[tuple[str, str], ExportItem] = {}
    conflicts = []
    for selection in selections:
        pool_repo = selection.target.repository
        tags = unsuffixed(listed.get(pool_repo, ()), selection.suffix)
        for request in copies_for(selection, tags):
            item = _item(
                request.destination.repository,
                request.destination.tag,
                request.destination.digest,
                prefix,
            )
            key = (item.repository, item.tag or item.pool_reference)
            first = items.setdefault(key, item)
            if first != item:
                conflicts.append(f"{item.name}: selected twice; exporting {first.pool_reference}")
    for conflict in conflicts:
        log.warning("%s", conflict)
    return tuple(sorted(items.values(), key=lambda item: item.order)), tuple(conflicts)


def _item(pool_repo: str, tag: str | None, digest: str | None, prefix: str) -> ExportItem:
    reference = digest if digest and not tag else tag or ""
    return ExportItem(bundle_repository(pool_repo, prefix), tag, pool_repo, reference)
