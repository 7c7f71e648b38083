"""skopeo sync YAML, accepted verbatim, turned into RepoSelections and registry settings.

The schema is skopeo's (`cmd/skopeo/sync.go`): registry host → `images`, `images-by-tag-regex`,
`images-by-semver`, `credentials`, `tls-verify`, `cert-dir`; plus mirrord's `mirrord:` key
(`extensions.py`). Where skopeo logs and skips (a bad repo name, a bad entry, a regex that does
not compile) mirrord refuses the file and says where.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, RootModel, SecretStr, model_validator

from mirrord.config.context import SourceContext as SourceContext  # re-exported
from mirrord.config.extensions import Choices, RegistryExtension
from mirrord.config.fields import EmptyIfNull, GoBool, Model, Regex, Semver, SkopeoRegex
from mirrord.config.naming import target_repository
from mirrord.config.problems import Invalid, Problems
from mirrord.config.registries import (
    RegistrySettings,
    RegistryTable,
    check_cert_dir,
    tls_mode,
    warn_if_exposed,
)
from mirrord.config.yamlsafe import Document, KeyPath
from mirrord.errors import InvalidReference
from mirrord.plan import RepoSelection
from mirrord.refs import ImageReference, check_registry, is_digest, is_tag, normalize_registry
from mirrord.registry.options import Credentials, TLSMode
from mirrord.secret import Secret

log = logging.getLogger(__name__)

SECTIONS = ("images", "images-by-tag-regex", "images-by-semver")
REGISTRY_KEYS = frozenset(
    {*SECTIONS, "credentials", "tls-verify", "cert-dir", "mirrord"},
)


class SkopeoCredentials(Model):
    """skopeo's `credentials`: used only when a field is non-empty (a field left empty, null
    in YAML, is an empty Go string)."""

    username: str = ""
    password: SecretStr = SecretStr("")
    identitytoken: SecretStr = SecretStr("")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_empty(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: "" if value is None else value for key, value in data.items()}
        return data


class RegistryBlock(Model):
    """Everything under one registry host."""

    images: Annotated[dict[str, list[str] | None], EmptyIfNull] = Field(default_factory=dict)
    images_by_tag_regex: Annotated[dict[str, SkopeoRegex], EmptyIfNull] = Field(
        default_factory=dict, alias="images-by-tag-regex"
    )
    images_by_semver: Annotated[dict[str, Semver], EmptyIfNull] = Field(
        default_factory=dict, alias="images-by-semver"
    )
    credentials: SkopeoCredentials | None = None
    tls_verify: GoBool | None = Field(None, alias="tls-verify")
    cert_dir: str | None = Field(None, alias="cert-dir")
    mirrord: RegistryExtension | None = None


class SkopeoFile(RootModel[dict[str, RegistryBlock | None]]):
    """A whole skopeo sync YAML file: registry host → RegistryBlock."""

    model_config = {"frozen": True, "defer_build": True}


@dataclass
class _Repo:
    """One repository's entries, gathered across the three sections."""

    source: ImageReference
    path: KeyPath
    tags: dict[str, None] = field(default_factory=dict)
    digests: dict[str, None] = field(default_factory=dict)
    all_tags: bool = False
    regexes: list[Regex] = field(default_factory=list)
    constraints: list[Semver] = field(default_factory=list)


class _Reader:
    """Reads one skopeo document (or the `inline:` part of a daemon config)."""

    def __init__(
        self,
        doc: Document,
        prefix: KeyPath,
        ctx: SourceContext,
        registries: RegistryTable,
        problems: Problems,
    ) -> None:
        self.doc, self.prefix, self.ctx = doc, prefix, ctx
        self.registries, self.problems = registries, problems

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.add(self.doc, (*self.prefix, *path), message)

    def read(self, data: SkopeoFile) -> list[RepoSelection]:
        selections: list[RepoSelection] = []
        seen: dict[str, str] = {}
        for host, block in sorted(data.root.items()):
            registry, slash, namespace = host.partition("/")
            first = seen.setdefault(normalize_registry(registry) + slash + namespace, host)
            if first != host:
                self.problem((host,), f"{host!r} and {first!r} name the same registry; merge them")
                continue
            if block is None or not (
                block.images or block.images_by_tag_regex or block.images_by_semver
            ):
                log.warning("%s: %s: no images specified for registry", self.doc.name, host)
            if block is not None:
                selections.extend(self._registry(host, block))
        return selections

    def _registry(self, host: str, block: RegistryBlock) -> list[RepoSelection]:
        # skopeo joins the key and each repo with "/": a key may carry a namespace
        # (`registry.example.com/team:` then `app:` is team/app); settings stay per host.
        name, slash, namespace = host.partition("/")
        registry = normalize_registry(name)
        try:
            check_registry(registry)
        except InvalidReference:
            self.problem(
                (host,), f"{host[:100]!r} is not a registry host (e.g. quay.io, localhost:5000)"
            )
            return []
        if slash and "" in namespace.split("/") and (first := _first_repo(block)) is not None:
            # skopeo joins "quay.io/" and "app" into "quay.io//app", an invalid name, and
            # skips every repo of the key ("Error parsing repository name, skipping").
            joined = f"{host[:100]}/{first[:60]}"
            self.problem(
                (host,),
                f"{host[:100]!r} has an empty path segment: skopeo joins it and each repo with "
                f"'/' into an invalid name ({joined!r}) and skips every repo under it; drop the "
                "extra '/'",
            )
            return []
        self._settings(registry, (host,), block)
        repos: dict[str, _Repo] = {}

        def full(repo: str) -> str:
            return f"{namespace}/{repo}" if namespace else repo

        for repo, entries in block.images.items():
            self._images(registry, (host, "images", repo), repos, full(repo), entries)
        for repo, regex in block.images_by_tag_regex.items():
            path = (host, "images-by-tag-regex", repo)
            self._listed(registry, path, repos, full(repo), regex=regex)
        for repo, constraint in block.images_by_semver.items():
            path = (host, "images-by-semver", repo)
            self._listed(registry, path, repos, full(repo), constraint=constraint)
        return self._selections(host, block.mirrord, repos)

    # -- registry settings ----------------------------------------------------------------------

    def _settings(self, registry: str, path: KeyPath, block: RegistryBlock) -> None:
        origin = f"{self.doc.name}:{self.doc.line((*self.prefix, *path))}"
        settings = RegistrySettings(
            tls=self._tls(registry, block),
            cert_dir=self._cert_dir((*path, "cert-dir"), block.cert_dir),
            credentials=self._credentials(block.credentials, origin),
            ratelimit_floor=block.mirrord.ratelimit_floor if block.mirrord else None,
        )
        for conflict in self.registries.add(registry, settings, origin):
            self.problem(path, conflict)

    def _tls(self, registry: str, block: RegistryBlock) -> TLSMode | None:
        mode = tls_mode(block.mirrord.tls if block.mirrord else None, block.tls_verify)
        if mode is TLSMode.SKOPEO_NO_VERIFY:
            log.warning(
                "%s: tls-verify: false for %s: certificates are not verified and plain HTTP "
                "is allowed (as in skopeo); `mirrord: {tls: insecure}` keeps HTTPS",
                self.doc.name,
                registry,
            )
        return mode

    def _cert_dir(self, path: KeyPath, value: str | None) -> Path | None:
        if not value:  # skopeo treats "" as absent
            return None
        try:
            return check_cert_dir(self.ctx.base_dir / value)
        except Invalid as exc:
            self.problem(path, str(exc))
            return None

    def _credentials(self, spec: SkopeoCredentials | None, origin: str) -> Credentials | None:
        if spec is None:
            return None
        password = spec.password.get_secret_value()
        token = spec.identitytoken.get_secret_value()
        if not (spec.username or password or token):
            return None
        if self.doc.path is not None:
            warn_if_exposed(self.doc.path, "file with credentials")
        return Credentials(
            spec.username,
            Secret(password) if password else None,
            Secret(token) if token else None,
            origin,
        )

    # -- repositories ---------------------------------------------------------------------------

    def _repo(
        self, registry: str, path: KeyPath, repos: dict[str, _Repo], repo: str
    ) -> _Repo | None:
        if repo in repos:
            return repos[repo]
        try:
            source = repository_name(registry, repo)
        except Invalid as exc:
            self.problem(path, str(exc))
            return None
        return repos.setdefault(repo, _Repo(source, path))

    def _images(
        self,
        registry: str,
        path: KeyPath,
        repos: dict[str, _Repo],
        repo: str,
        entries: list[str] | None,
    ) -> None:
        found = self._repo(registry, path, repos, repo)
        if found is None:
            return
        if not entries:  # [] or null: every tag
            found.all_tags = True
        for index, entry in enumerate(entries or ()):
            self._entry(found, (*path, index), entry)

    def _entry(self, repo: _Repo, path: KeyPath, entry: str) -> None:
        # skopeo tries an entry as a digest first, then as a tag.
        if is_digest(entry):
            if self.ctx.suffix:
                self.problem(
                    path,
                    "append-suffix cannot apply to a digest (skopeo fails the whole sync here)",
                )
            repo.digests[entry] = None
        elif is_tag(entry):
            if not is_tag(entry + self.ctx.suffix):
                self.problem(
                    path, f"tag {entry!r} with suffix {self.ctx.suffix!r} is not a valid tag"
                )
            repo.tags[entry] = None
        else:
            self.problem(
                path, f"{entry[:80]!r} is neither a digest (sha256:<64 hex>) nor a valid tag"
            )

    def _listed(
        self,
        registry: str,
        path: KeyPath,
        repos: dict[str, _Repo],
        repo: str,
        regex: Regex | None = None,
        constraint: Semver | None = None,
    ) -> None:
        found = self._repo(registry, path, repos, repo)
        if found is not None and regex is not None:
            found.regexes.append(regex)
        if found is not None and constraint is not None:
            found.constraints.append(constraint)

    # -- selections -----------------------------------------------------------------------------

    def _selections(
        self, host: str, ext: RegistryExtension | None, repos: dict[str, _Repo]
    ) -> list[RepoSelection]:
        registry_choices = self.ctx.choices.over(ext)
        per_repo = ext.repos if ext else {}
        for name in sorted(set(per_repo) - set(repos)):
            self.problem(
                (host, "mirrord", "repos", name),
                f"repo {name!r} is not selected in any images section",
            )
        result = []
        for name, repo in sorted(repos.items()):
            repo_ext = per_repo.get(name)
            override = repo_ext.destination if repo_ext else None
            selection = self._selection(repo, registry_choices.over(repo_ext), override)
            if selection is not None:
                result.append(selection)
        return result

    def _selection(
        self, repo: _Repo, choices: Choices, override: str | None
    ) -> RepoSelection | None:
        try:
            target = target_repository(repo.source, self.ctx.destination, self.ctx.naming, override)
        except InvalidReference as exc:
            self.problem(repo.path, str(exc))
            return None
        return RepoSelection(
            source=repo.source,
            target=target,
            tags=tuple(repo.tags),
            digests=tuple(repo.digests),
            all_tags=repo.all_tags,
            tag_regexes=tuple(repo.regexes),
            constraints=tuple(repo.constraints),
            exclude=choices.exclude,
            keep_latest=choices.keep_latest,
            suffix=self.ctx.suffix,
            platforms=choices.platforms,
            immutable=choices.immutable,
            source_name=self.ctx.name,
        )


def _first_repo(block: RegistryBlock) -> str | None:
    sections = (block.images, block.images_by_tag_regex, block.images_by_semver)
    return next((repo for section in sections for repo in section), None)


def repository_name(registry: str, repo: str) -> ImageReference:
    """`registry` + `repo` as skopeo's ParseNormalizedNamed reads it; a name, never a reference."""
    try:
        ref = ImageReference.parse(f"{registry}/{repo}")
    except InvalidReference as exc:
        raise Invalid(str(exc)) from None
    if ref.tag is not None or ref.digest is not None:
        raise Invalid(f"{repo!r} names a reference, not a repository (put tags in the list)")
    if ref.registry != registry:
        raise Invalid(
            f"registry {registry!r} is not a host name (it needs a '.', a ':port' or to be "
            f"'localhost'): skopeo would read {ref.name}"
        )
    return ref


def read_skopeo(
    doc: Document,
    prefix: KeyPath,
    data: SkopeoFile,
    ctx: SourceContext,
    registries: RegistryTable,
    problems: Problems,
) -> list[RepoSelection]:
    """The selections of one validated skopeo sync mapping; problems are recorded, not raised."""
    return _Reader(doc, prefix, ctx, registries, problems).read(data)


def top_level_hint(key: str) -> str | None:
    """A hint for a registry-level key written at the top level of a skopeo file."""
    if key in REGISTRY_KEYS:
        return f"{key!r} belongs under a registry host (e.g. docker.io:)"
    return None
