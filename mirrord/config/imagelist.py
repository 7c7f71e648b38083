"""Image list files: the `images-list.txt` of ks-installer's sync.sh pipeline.

One `repo:tag`, `repo@sha256:…` or `repo:tag@sha256:…` (fetched by digest, pushed under the tag)
per line, relative to the source registry given alongside; a line that names its own registry
(`quay.io/coreos/etcd:v3.5.0`) keeps it. `#` starts a comment (so `##k8s-images` section
headers are comments); blank lines are skipped; duplicates collapse.

sync.sh copies `SRC/<line>` to `DEST/<line>`: the path as written. A list source therefore
defaults to `path` naming (`calico/cni:v3.16.3` → `DEST/calico/cni:v3.16.3`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mirrord.config.context import SourceContext
from mirrord.config.invalid import Invalid
from mirrord.config.naming import target_repository
from mirrord.errors import InvalidReference
from mirrord.plan import RepoSelection
from mirrord.refs import ImageReference, is_tag, normalize_registry


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One image named by a list line."""

    line: int
    image: ImageReference


@dataclass(frozen=True, slots=True)
class ParsedList:
    """A list file's images, and its (line, message) problems."""

    entries: tuple[ListEntry, ...]
    problems: tuple[tuple[int, str], ...] = ()


def _has_registry(text: str) -> bool:
    first, sep, _ = text.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def parse_line(text: str, registry: str) -> ImageReference:
    """The image one (comment-free, stripped) line names, relative to `registry`."""
    if any(c.isspace() for c in text):
        raise Invalid(f"{text[:80]!r}: one image per line")
    full = text if _has_registry(text) else f"{registry}/{text}"
    try:
        image = ImageReference.parse(full)
    except InvalidReference as exc:
        raise Invalid(str(exc)) from None
    if image.tag is None and image.digest is None:
        raise Invalid(f"{text!r} needs a :tag or an @sha256:digest")
    if not _has_registry(text) and image.registry != registry:
        raise Invalid(f"registry {registry!r} is not a host name: {full!r} means {image}")
    return image


def parse_image_list(text: str, registry: str) -> ParsedList:
    """Every image of a list file, deduplicated, with per-line problems."""
    registry = normalize_registry(registry)
    entries: dict[ImageReference, ListEntry] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            image = parse_line(line, registry)
        except Invalid as exc:
            problems.append((number, str(exc)))
            continue
        entries.setdefault(image, ListEntry(number, image))
    return ParsedList(tuple(entries.values()), tuple(problems))


@dataclass
class _Group:
    first_line: int
    tags: dict[str, None] = field(default_factory=dict)
    digests: dict[str, None] = field(default_factory=dict)
    pinned: dict[tuple[str, str], None] = field(default_factory=dict)

    def add(self, image: ImageReference) -> None:
        if image.tag and image.digest:
            self.pinned[(image.tag, image.digest)] = None
        elif image.digest:
            self.digests[image.digest] = None
        elif image.tag:
            self.tags[image.tag] = None


def _grouped(entries: tuple[ListEntry, ...]) -> dict[ImageReference, _Group]:
    groups: dict[ImageReference, _Group] = {}
    for entry in entries:
        name = ImageReference(entry.image.registry, entry.image.repository)
        groups.setdefault(name, _Group(entry.line)).add(entry.image)
    return groups


def list_selections(
    parsed: ParsedList, ctx: SourceContext
) -> tuple[list[RepoSelection], list[tuple[int, str]]]:
    """One selection per repository of the list, plus per-line naming problems."""
    selections, problems = [], []
    for name, group in sorted(_grouped(parsed.entries).items(), key=lambda kv: str(kv[0])):
        try:
            _check_suffix(group, ctx.suffix)
            target = target_repository(name, ctx.destination, ctx.naming)
        except (Invalid, InvalidReference) as exc:
            problems.append((group.first_line, str(exc)))
            continue
        selections.append(_selection(name, target, group, ctx))
    return selections, problems


def _check_suffix(group: _Group, suffix: str) -> None:
    if suffix and group.digests:
        raise Invalid("append-suffix cannot apply to a digest (skopeo fails the whole sync here)")
    for tag in [*group.tags, *(t for t, _ in group.pinned)]:
        if not is_tag(tag + suffix):
            raise Invalid(f"tag {tag!r} with suffix {suffix!r} is not a valid tag")


def _selection(
    name: ImageReference, target: ImageReference, group: _Group, ctx: SourceContext
) -> RepoSelection:
    choices = ctx.choices
    return RepoSelection(
        source=name,
        target=target,
        tags=tuple(sorted(group.tags)),
        digests=tuple(sorted(group.digests)),
        pinned=tuple(sorted(group.pinned)),
        suffix=ctx.suffix,
        platforms=choices.platforms,
        immutable=choices.immutable,
        source_name=ctx.name,
    )
