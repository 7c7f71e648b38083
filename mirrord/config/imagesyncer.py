"""image-syncer configs (AliyunContainerService/image-syncer), converted into mirrord's.

An image-syncer config is an `images` mapping of source → destination(s), with an optional `auth`
mapping of `registry` or `registry/namespace` → `{username, password, insecure}`; both in one file
(`--config`) or in two (`--images`, `--auth`), YAML or JSON. Sources are `repo` (every tag),
`repo:t1,t2`, `repo@sha256:…` or `repo:/regex/`; a destination without a tag keeps the source's.

The conversion yields a daemon config mapping: one destination registry (mirrord mirrors into
one), each source repository as inline skopeo YAML with a per-repo `destination`, credentials in
`registries`. What mirrord cannot express is refused with the reason: destinations on several
registries, renamed tags, different credentials for two namespaces of one registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, PlainValidator, RootModel, SecretStr

from mirrord.config.daemon import MirrorConfig
from mirrord.config.fields import EmptyIfNull, Model, invalid
from mirrord.config.load import load_daemon_data, validate
from mirrord.config.problems import Invalid, Problems
from mirrord.config.yamlsafe import Document, KeyPath, read_yaml
from mirrord.errors import InvalidReference
from mirrord.refs import DOCKER_HUB, ImageReference, is_tag
from mirrord.tagregex import TagRegex, TagRegexError, quoted

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _targets(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise invalid("expected a destination reference or a list of them")
    return tuple(items)


Targets = Annotated[tuple[str, ...], PlainValidator(_targets)]


class SyncerAuth(Model):
    username: str = ""
    password: SecretStr = SecretStr("")
    insecure: bool = False


class SyncerConfig(Model):
    """image-syncer's `--config` file (auth and images together)."""

    auth: Annotated[dict[str, SyncerAuth], EmptyIfNull] = Field(default_factory=dict)
    images: dict[str, Targets]


class SyncerImages(RootModel[dict[str, Targets]]):
    model_config = {"frozen": True}


class SyncerAuthFile(RootModel[dict[str, SyncerAuth]]):
    model_config = {"frozen": True}


@dataclass(frozen=True, slots=True)
class Rule:
    """One source → one destination repository."""

    source: ImageReference
    target: ImageReference
    tags: tuple[str, ...] = ()
    digest: str | None = None
    regex: str | None = None

    @property
    def all_tags(self) -> bool:
        return not (self.tags or self.digest or self.regex)


def _name(ref: ImageReference) -> ImageReference:
    return ImageReference(ref.registry, ref.repository)


def _parse(text: str) -> ImageReference:
    try:
        return ImageReference.parse(text)
    except InvalidReference as exc:
        raise Invalid(str(exc)) from None


def parse_source(text: str) -> tuple[ImageReference, tuple[str, ...], str | None, str | None]:
    """(repository, tags, digest, regex) named by an image-syncer source."""
    if ":/" in text and text.endswith("/"):
        name, _, regex = text.partition(":/")
        try:
            TagRegex.compile(regex[:-1])
        except TagRegexError as exc:
            raise Invalid(f"invalid tag regex {quoted(regex[:-1])}: {exc}") from None
        return _name(_parse(name)), (), None, regex[:-1]
    first, *more = text.split(",")
    ref = _parse(first)
    for tag in more:
        if not is_tag(tag):
            raise Invalid(f"invalid tag {tag[:130]!r} in {text[:200]!r}")
    if ref.digest:
        return _name(ref), (), ref.digest, None
    tags = (ref.tag, *more) if ref.tag else ()
    return _name(ref), tuple(tags), None, None


def parse_target(text: str, tags: tuple[str, ...], digest: str | None) -> ImageReference:
    """The destination repository; tags or a digest on it must repeat the source's."""
    first, *more = text.split(",")
    ref = _parse(first)
    named = (ref.tag, *more) if ref.tag else ()
    if named and named != tags:
        raise Invalid(
            f"{text!r} renames tags {', '.join(tags) or '(all)'}: mirrord keeps tag names"
        )
    if ref.digest and ref.digest != digest:
        raise Invalid(f"{text!r}: the destination digest must be the source's")
    return _name(ref)


def _rules(
    doc: Document, images: dict[str, tuple[str, ...]], prefix: KeyPath, problems: Problems
) -> list[Rule]:
    rules: list[Rule] = []
    for key, targets in images.items():
        path = (*prefix, key)
        try:
            source, tags, digest, regex = parse_source(key)
            rules.extend(
                Rule(source, parse_target(t, tags, digest), tags, digest, regex) for t in targets
            )
        except Invalid as exc:
            problems.add(doc, path, str(exc))
    return rules


# -- into mirrord's shape ------------------------------------------------------------------------


@dataclass
class _Inline:
    """One inline skopeo source; a repository appears once, with one destination."""

    data: dict[str, Any] = field(default_factory=dict)
    targets: dict[ImageReference, ImageReference] = field(default_factory=dict)

    def accepts(self, rule: Rule) -> bool:
        if self.targets.get(rule.source, rule.target) != rule.target:
            return False
        # skopeo's `repo: []` (every tag) cannot also list a digest, nor the reverse.
        entries = (
            self.data.get(rule.source.registry, {}).get("images", {}).get(rule.source.repository)
        )
        if entries == []:
            return rule.digest is None
        has_digest = any(":" in e for e in entries or ())
        return not (rule.all_tags and has_digest)

    def add(self, rule: Rule) -> None:
        self.targets[rule.source] = rule.target
        block = self.data.setdefault(rule.source.registry, {})
        repo = rule.source.repository
        repos = block.setdefault("mirrord", {}).setdefault("repos", {})
        repos[repo] = {"destination": rule.target.repository}
        if rule.regex is not None:
            regexes = block.setdefault("images-by-tag-regex", {})
            old = regexes.get(repo)
            regexes[repo] = rule.regex if old is None else f"(?:{old})|(?:{rule.regex})"
            return
        images = block.setdefault("images", {})
        if rule.all_tags or images.get(repo) == []:
            images[repo] = []  # every tag already includes the named ones
            return
        named = [*rule.tags, *([rule.digest] if rule.digest else [])]
        images[repo] = list(dict.fromkeys([*images.get(repo, []), *named]))


def _inline_sources(rules: list[Rule]) -> list[dict[str, Any]]:
    inlines: list[_Inline] = []
    for rule in rules:
        home = next((i for i in inlines if i.accepts(rule)), None)
        if home is None:
            home = _Inline()
            inlines.append(home)
        home.add(rule)
    return [{"inline": i.data} for i in inlines]


def _auth_for(auth: dict[str, SyncerAuth], repository: str) -> str | None:
    """image-syncer's lookup: the longest key that is a path prefix of `registry/repo`."""
    keys = [k for k in auth if repository.startswith(k.rstrip("/") + "/")]
    return max(keys, key=len) if keys else None


def _password(value: str, from_auth_file: bool) -> dict[str, str]:
    m = _ENV_REF.fullmatch(value) if from_auth_file else None
    if m is not None:
        return {"password-env": m[1] or m[2]}
    return {"password": value} if value else {}


def _registry_auth(
    auth: dict[str, SyncerAuth], rules: list[Rule], from_auth_file: bool
) -> tuple[dict[str, Any], list[str]]:
    """Per-host settings, and the hosts whose namespaces need different credentials."""
    used: dict[str, set[str]] = {}
    for rule in rules:
        for ref in (rule.source, rule.target):
            key = _auth_for(auth, ref.name)
            if key is not None:
                used.setdefault(ref.registry, set()).add(key)
    settings, clashes = {}, []
    for host, keys in sorted(used.items()):
        entries = {_identity(auth[k]) for k in keys}
        if len(entries) > 1:
            clashes.append(
                f"auth: {', '.join(sorted(keys))} give {host} different credentials; "
                "mirrord keeps one set per registry"
            )
            continue
        settings[host] = _host_settings(auth[min(keys)], from_auth_file)
    return settings, clashes


def _identity(entry: SyncerAuth) -> tuple[str, str, bool]:
    return (entry.username, entry.password.get_secret_value(), entry.insecure)


def _host_settings(entry: SyncerAuth, from_auth_file: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if entry.username or entry.password.get_secret_value():
        password = _password(entry.password.get_secret_value(), from_auth_file)
        result["credentials"] = {"username": entry.username, **password}
    if entry.insecure:
        result["tls-verify"] = False  # image-syncer's insecure: skip verification, allow HTTP
    return result


def _daemon_data(
    rules: list[Rule], auth: dict[str, SyncerAuth], from_auth_file: bool
) -> tuple[dict[str, Any], list[str]]:
    registries = sorted({r.target.registry for r in rules})
    problems = [] if rules else ["no images to convert"]
    if len(registries) > 1:
        problems.append(
            f"destinations are on several registries ({', '.join(registries)}): "
            "mirrord mirrors into one; split the file"
        )
    settings, clashes = _registry_auth(auth, rules, from_auth_file)
    problems.extend(clashes)
    destination = registries[0] if registries else DOCKER_HUB
    data: dict[str, Any] = {
        "destination": {"registry": destination, **settings.pop(destination, {})},
        "platforms": "all",
        "sources": _inline_sources(rules),
    }
    if settings:
        data["registries"] = settings
    return data, problems


# -- entry points --------------------------------------------------------------------------------


def convert_documents(images: Document, auth: Document | None = None) -> dict[str, Any]:
    """A daemon config mapping equivalent to an image-syncer config (`images` may be a whole
    `--config` file holding `auth` too); ConfigError lists what cannot be converted."""
    problems = Problems()
    for doc in (images, auth):
        if doc is not None:
            problems.add_read_problems(doc)
    rules, auth_map = _read(images, auth, problems)
    problems.raise_if_any(images.name)
    data, refused = _daemon_data(rules, auth_map, auth is not None)
    for message in refused:
        problems.add(images, (), message)
    problems.raise_if_any(images.name)
    return data


def _read(
    images: Document, auth: Document | None, problems: Problems
) -> tuple[list[Rule], dict[str, SyncerAuth]]:
    combined = isinstance(images.data, dict) and isinstance(images.data.get("images"), dict)
    auth_map: dict[str, SyncerAuth] = {}
    prefix: KeyPath
    if combined:
        config = validate(images, images.data, SyncerConfig, problems)
        if not isinstance(config, SyncerConfig):
            return [], {}
        auth_map, image_map, prefix = dict(config.auth), config.images, ("images",)
    else:
        parsed = validate(images, images.data, SyncerImages, problems)
        image_map = parsed.root if isinstance(parsed, SyncerImages) else {}
        prefix = ()
    if auth is not None:
        parsed_auth = validate(auth, auth.data or {}, SyncerAuthFile, problems)
        auth_map.update(parsed_auth.root if isinstance(parsed_auth, SyncerAuthFile) else {})
    return _rules(images, image_map, prefix, problems), auth_map


def convert_files(images: Path, auth: Path | None = None) -> dict[str, Any]:
    """`convert_documents` for files on disk."""
    return convert_documents(read_yaml(images), read_yaml(auth) if auth else None)


def load_image_syncer(images: Path, auth: Path | None = None) -> MirrorConfig:
    """An image-syncer config, accepted as is (converted in memory)."""
    data = convert_files(images, auth)
    return load_daemon_data(data, f"{images} (converted)", images.parent)


def dump_config(data: dict[str, Any], origin: str) -> str:
    """The converted config as commented YAML."""
    header = (
        f"# mirrord config converted from image-syncer config {origin}.\n"
        "# Each source repository is inline skopeo sync YAML; `mirrord.repos.<repo>.destination`\n"
        "# keeps image-syncer's destination path. See the README, section Configuration.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def holds_secrets(data: dict[str, Any]) -> bool:
    """True when the converted config carries an inline password (write it 0600)."""
    hosts = [data.get("destination", {}), *data.get("registries", {}).values()]
    return any("password" in h.get("credentials", {}) for h in hosts)
