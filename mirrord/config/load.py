"""Loading: a daemon config with its source files, or a plain skopeo sync file plus skopeo's
flags. Every problem of every file is collected and raised as one ConfigError. Loading reads
files and the environment, and never writes anything.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from mirrord.config.daemon import (
    DaemonSpec,
    DestinationSpec,
    MirrorConfig,
    RegistrySpec,
    Source,
    SourceSpec,
)
from mirrord.config.extensions import Choices
from mirrord.config.fields import Naming
from mirrord.config.imagelist import list_selections, parse_image_list
from mirrord.config.naming import Destination
from mirrord.config.problems import Invalid, Problems
from mirrord.config.registries import (
    RegistrySettings,
    RegistryTable,
    check_cert_dir,
    read_secret_file,
    resolve_credentials,
    tls_mode,
    warn_if_exposed,
)
from mirrord.config.skopeo import SkopeoFile, SourceContext, read_skopeo, top_level_hint
from mirrord.config.yamlsafe import (
    SECOND_DOCUMENT,
    Document,
    KeyPath,
    UnreadableDocument,
    read_text,
    read_yaml,
)
from mirrord.errors import ConfigError, InvalidReference
from mirrord.model import PlatformPolicy
from mirrord.plan import RepoSelection
from mirrord.refs import ImageReference, check_registry, normalize_registry
from mirrord.secret import Secret

log = logging.getLogger(__name__)

Kind = Literal["daemon", "skopeo", "image-syncer"]
DAEMON_KEYS = frozenset({"sources", "destination"})
PLACEHOLDER_DESTINATION = "mirror.invalid"


def sniff(data: Any) -> Kind:
    """What kind of file parsed to `data`: a daemon config has `sources`/`destination`; an
    image-syncer file has `images` (and `auth`) holding image references; else skopeo."""
    if not isinstance(data, dict):
        return "skopeo"
    if DAEMON_KEYS & data.keys():
        return "daemon"
    if set(data) <= {"auth", "images"} and isinstance(data.get("images"), dict):
        values = data["images"].values()
        if all(isinstance(v, str | list) for v in values):
            return "image-syncer"
    # image-syncer's keys are images (`quay.io/coreos/etcd:v1`); bare hosts are a skopeo file
    # with a mistake in it (`quay.io: [coreos/etcd]`), reported as such
    lists = data and all(isinstance(v, str | list) for v in data.values())
    if lists and not all(isinstance(k, str) and _is_host(k) for k in data):
        return "image-syncer"
    return "skopeo"


def _is_host(key: str) -> bool:
    try:
        check_registry(key)
    except InvalidReference:
        return False
    return "/" not in key and ("." in key or ":" in key or key == "localhost")


def validate(
    doc: Document, data: Any, model: type[BaseModel], problems: Problems, prefix: KeyPath = ()
) -> Any:
    """`model` validated from `data` (the part of `doc` at `prefix`); None after problems."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.add_validation(doc, exc, model, prefix)
        return None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One source entry of the daemon config, with everything it inherits."""

    index: int
    spec: SourceSpec
    ctx: SourceContext

    @property
    def path(self) -> KeyPath:
        return ("sources", self.index)


class Loader:
    """Loads one daemon config document (and the files it names) into a MirrorConfig."""

    def __init__(self, doc: Document, base_dir: Path) -> None:
        self.doc, self.base_dir = doc, base_dir
        self.problems = Problems()
        self.registries = RegistryTable()
        self.names: dict[str, KeyPath] = {}

    def load(self) -> MirrorConfig:
        self.problems.add_read_problems(self.doc)
        spec = self._spec()
        if spec is None:
            self.problems.raise_if_any(self.doc.name)
            raise ConfigError(f"{self.doc.name}: invalid configuration")
        destination = self._destination(spec.destination)
        self._registries(spec)
        sources = [
            s
            for i, entry in enumerate(spec.sources)
            for s in self._source(spec, destination, i, entry)
        ]
        token = self._token(spec)
        self.problems.raise_if_any(self.doc.name)
        assert destination is not None
        registries = {h: self.registries.get(h) for h in self.registries.hosts()}
        return MirrorConfig(spec, destination, tuple(sources), registries, self.doc.path, token)

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.add(self.doc, path, message)

    def _spec(self) -> DaemonSpec | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem((), "expected a mapping with destination and sources")
            return None
        try:
            return DaemonSpec.model_validate(data)
        except ValidationError as exc:
            self.problems.add_validation(self.doc, exc, DaemonSpec)
            return self._partial_spec(data, exc)

    def _partial_spec(self, data: dict[str, Any], error: ValidationError) -> DaemonSpec | None:
        """The spec without its invalid parts, so the source files get checked too."""
        cleaned = dict(data)
        for loc in (e["loc"] for e in error.errors()):
            _drop(cleaned, loc)
        if "destination" not in cleaned:
            return None
        try:
            return DaemonSpec.model_validate(cleaned)
        except ValidationError:
            return None

    # -- destination and registries ------------------------------------------------------------

    def _destination(self, spec: DestinationSpec) -> Destination | None:
        if spec.naming is not None and spec.scoped and spec.naming is not Naming.SCOPED:
            self.problem(("destination", "naming"), "scoped: true contradicts this naming")
        try:
            destination = Destination.make(normalize_registry(spec.registry), spec.prefix)
        except InvalidReference as exc:
            self.problem(("destination",), str(exc))
            return None
        self._add_registry(destination.registry, ("destination",), spec)
        return destination

    def _registries(self, spec: DaemonSpec) -> None:
        for host, registry in sorted(spec.registries.items()):
            try:
                check_registry(host)
            except InvalidReference:
                self.problem(("registries", host), f"{host[:100]!r} is not a registry host")
                continue
            self._add_registry(
                normalize_registry(host), ("registries", host), registry or RegistrySpec()
            )

    def _add_registry(self, host: str, path: KeyPath, spec: DestinationSpec | RegistrySpec) -> None:
        origin = f"{self.doc.name}:{self.doc.line(path)}"
        settings = RegistrySettings(
            tls=tls_mode(spec.tls, spec.tls_verify),
            cert_dir=self._cert_dir((*path, "cert-dir"), spec.cert_dir),
            credentials=self._credentials((*path, "credentials"), spec, origin),
            ratelimit_floor=getattr(spec, "ratelimit_floor", None),
            requests_per_second=getattr(spec, "requests_per_second", None),
            connections=getattr(spec, "connections", None),
        )
        for conflict in self.registries.add(host, settings, origin):
            self.problem(path, conflict)

    def _cert_dir(self, path: KeyPath, value: str | None) -> Path | None:
        if not value:
            return None
        try:
            return check_cert_dir(self.base_dir / value)
        except Invalid as exc:
            self.problem(path, str(exc))
            return None

    def _credentials(self, path: KeyPath, spec: DestinationSpec | RegistrySpec, origin: str) -> Any:
        if spec.credentials is None:
            return None
        if spec.credentials.password is not None and self.doc.path is not None:
            warn_if_exposed(self.doc.path, "config file with an inline password")
        try:
            return resolve_credentials(spec.credentials, self.base_dir, origin)
        except Invalid as exc:
            self.problem(path, str(exc))
            return None

    def _token(self, spec: DaemonSpec) -> Secret | None:
        if spec.http.token_file is None:
            return None
        try:
            return read_secret_file(self.base_dir / spec.http.token_file)
        except Invalid as exc:
            self.problem(("http", "token-file"), str(exc))
            return None

    # -- sources --------------------------------------------------------------------------------

    def _source(
        self, spec: DaemonSpec, destination: Destination | None, index: int, entry: SourceSpec
    ) -> list[Source]:
        ctx = self._context(spec, destination, index, entry)
        if ctx is None:
            return []
        item = _Entry(index, entry, ctx)
        if entry.inline is not None:
            return [self._inline(item, entry.inline)]
        if entry.list_ is not None:
            return [self._list(item, entry.list_)]
        return self._files(item, entry.file or "")

    def _context(
        self, spec: DaemonSpec, destination: Destination | None, index: int, entry: SourceSpec
    ) -> SourceContext | None:
        if destination is None:
            return None
        if entry.prefix is not None:
            try:
                destination = Destination.make(destination.registry, entry.prefix)
            except InvalidReference as exc:
                self.problem(("sources", index, "prefix"), str(exc))
                return None
        suffix = (
            entry.append_suffix
            if entry.append_suffix is not None
            else spec.destination.append_suffix
        )
        choices = Choices(platforms=spec.platforms).over(entry)
        naming = _naming(spec.destination, entry)
        return SourceContext("", destination, naming, suffix, choices, self.base_dir)

    def _named(self, item: _Entry, derived: str, exact: bool = True) -> SourceContext:
        """The context with the source's name: the given one (`exact`), the given one plus
        `derived` (one file of a glob), or `derived` made unique."""
        given = item.spec.name
        if given and exact:
            if given in self.names:
                self.problem((*item.path, "name"), f"source name {given!r} is used twice")
            name = given
        else:
            name = f"{given}/{derived}" if given else derived
        unique, n = name, 2
        while unique in self.names:
            unique, n = f"{name}-{n}", n + 1
        self.names[unique] = item.path
        return SourceContext(unique, *_rest(item.ctx))

    def _inline(self, item: _Entry, data: SkopeoFile) -> Source:
        hosts = sorted(data.root)
        ctx = self._named(item, f"inline-{hosts[0]}" if hosts else "inline")
        prefix = (*item.path, "inline")
        selections = read_skopeo(self.doc, prefix, data, ctx, self.registries, self.problems)
        origin = f"{self.doc.name}:{self.doc.line(prefix)}"
        return Source(ctx.name, "inline", origin, tuple(selections))

    def _files(self, item: _Entry, pattern: str) -> list[Source]:
        paths = self._expand(item, pattern)
        single = len(paths) == 1 and not glob.has_magic(pattern)
        sources = []
        for path in paths:
            ctx = replace(self._named(item, path.stem, exact=single), base_dir=path.parent)
            try:
                doc = read_yaml(path, _display(path, self.base_dir))
            except UnreadableDocument as exc:
                self.problems.add_unreadable(exc)
                continue
            selections = load_skopeo_document(doc, ctx, self.registries, self.problems)
            sources.append(Source(ctx.name, "file", str(path), tuple(selections)))
        return sources

    def _expand(self, item: _Entry, pattern: str) -> list[Path]:
        full = self.base_dir / pattern
        if not glob.has_magic(pattern):
            if full.is_file():
                return [full]
            self.problem((*item.path, "file"), f"{full}: no such file")
            return []
        anchor = Path(full.anchor)
        paths = sorted(p for p in anchor.glob(str(full.relative_to(anchor))) if p.is_file())
        if not paths:
            self.problem((*item.path, "file"), f"{pattern!r} matches no file")
        return paths

    def _list(self, item: _Entry, name: str) -> Source:
        path = self.base_dir / name
        registry = normalize_registry(item.spec.registry or "docker.io")
        ctx = self._named(item, path.stem)
        selections = load_list_file(path, registry, ctx, self.problems, self.base_dir)
        return Source(ctx.name, "list", str(path), tuple(selections))


def _drop(data: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    """Drop what an error points at: one source or registry entry, else the whole key."""
    if not loc or loc[0] not in data:
        return
    key, container = loc[0], data[loc[0]]
    if len(loc) > 1 and key == "sources" and isinstance(container, list):
        # A placeholder keeps the indices, and so the lines, of the other entries.
        data[key] = [s if i != loc[1] else {"inline": {}} for i, s in enumerate(container)]
    elif len(loc) > 1 and key == "registries" and isinstance(container, dict):
        data[key] = {h: r for h, r in container.items() if h != loc[1]}
    else:
        del data[key]


def _rest(ctx: SourceContext) -> tuple[Any, ...]:
    return (ctx.destination, ctx.naming, ctx.suffix, ctx.choices, ctx.base_dir)


def _naming(destination: DestinationSpec, entry: SourceSpec) -> Naming:
    if entry.naming is not None:
        return entry.naming
    if destination.naming is not None:
        return destination.naming
    if destination.scoped:
        return Naming.SCOPED
    # sync.sh copies SRC/<line> to DEST/<line>: a list keeps the path as written.
    return Naming.PATH if entry.list_ is not None else Naming.BASENAME


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def load_skopeo_document(
    doc: Document, ctx: SourceContext, registries: RegistryTable, problems: Problems
) -> list[RepoSelection]:
    """The selections of a skopeo sync file; problems are recorded in `problems`."""
    for problem in doc.problems:
        if problem.message == SECOND_DOCUMENT:
            log.warning(
                "%s:%d: only the first YAML document is read (as skopeo reads it)",
                doc.name,
                problem.line,
            )
    doc = replace(doc, problems=tuple(p for p in doc.problems if p.message != SECOND_DOCUMENT))
    problems.add_read_problems(doc)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        problems.add(doc, (), "expected a mapping of registry hosts")
        return []
    for key in sorted(data):
        hint = top_level_hint(key)
        if hint is not None:
            problems.add(doc, (key,), hint)
    clean = {k: v for k, v in data.items() if top_level_hint(k) is None}
    parsed = validate(doc, clean, SkopeoFile, problems)
    if not isinstance(parsed, SkopeoFile):
        return []
    return read_skopeo(doc, (), parsed, ctx, registries, problems)


def load_list_file(
    path: Path, registry: str, ctx: SourceContext, problems: Problems, base: Path
) -> list[RepoSelection]:
    """The selections of an image list file; problems (with line numbers) are recorded."""
    doc = Document(_display(path, base), None, {}, (), path)
    try:
        check_registry(registry)
        text = read_text(path, doc.name)
    except InvalidReference:
        problems.add(doc, (), f"{registry!r} is not a registry host", 1)
        return []
    except UnreadableDocument as exc:
        problems.add_unreadable(exc)
        return []
    parsed = parse_image_list(text, registry)
    selections, naming = list_selections(parsed, ctx)
    for line, message in (*parsed.problems, *naming):
        problems.add(doc, (), message, line)
    return selections


# -- entry points ---------------------------------------------------------------------------------


def load_daemon_document(doc: Document, base_dir: Path) -> MirrorConfig:
    """A daemon config from a parsed document; relative paths are relative to `base_dir`."""
    return Loader(doc, base_dir.absolute()).load()


def load_daemon_data(data: dict[str, Any], name: str, base_dir: Path) -> MirrorConfig:
    """A daemon config from a mapping built in code (skopeo flags, a converted file)."""
    return load_daemon_document(Document(name, data, {}), base_dir)


def load_config(path: Path) -> MirrorConfig:
    """Load the daemon config at `path` (and every source file it names)."""
    doc = read_yaml(path)
    if sniff(doc.data) != "daemon":
        raise ConfigError(
            f"{path}: not a daemon config (it has no sources/destination); "
            "for a skopeo sync file give a destination (--dest)"
        )
    return load_daemon_document(doc, path.parent)


def skopeo_sync_config(
    dest: str,
    *,
    file: Path | None = None,
    reference: str | None = None,
    scoped: bool = False,
    append_suffix: str = "",
    platforms: PlatformPolicy | None = None,
    destination: dict[str, Any] | None = None,
) -> MirrorConfig:
    """What `skopeo sync --src yaml FILE DEST` (or `--src docker REFERENCE DEST`) would do, as a
    daemon config: `dest` is `REGISTRY[/PREFIX]`; `destination` adds destination keys (e.g.
    `tls-verify`, `cert-dir`, `credentials`); `platforms` defaults to the host's, as skopeo's."""
    try:
        target = Destination.parse(dest)
    except InvalidReference as exc:
        raise ConfigError(f"destination {dest!r}: {exc}") from None
    source: dict[str, Any] = (
        {"file": str(file)} if file is not None else {"inline": reference_source(reference or "")}
    )
    data = {
        "destination": {
            "registry": target.registry,
            "prefix": target.prefix,
            "scoped": scoped,
            "append-suffix": append_suffix,
            **(destination or {}),
        },
        "platforms": platforms or PlatformPolicy.system(),
        "sources": [source],
    }
    return load_daemon_data(data, "command line", Path.cwd())


def reference_source(text: str) -> dict[str, Any]:
    """`skopeo sync --src docker` source as skopeo YAML: a repository (every tag) or one image."""
    try:
        ref = ImageReference.parse(text)
    except InvalidReference as exc:
        raise ConfigError(f"source {text!r}: {exc}") from None
    entries = [ref.digest or ref.tag] if (ref.digest or ref.tag) else []
    return {ref.registry: {"images": {ref.repository: entries}}}
