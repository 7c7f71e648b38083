"""The strict pydantic base model and the value types configuration files share."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator
from pydantic_core import PydanticCustomError

from mirrord.config.naming import Naming as Naming  # defined without pydantic, re-exported
from mirrord.errors import InvalidReference
from mirrord.model import Platform, PlatformPolicy
from mirrord.semver import Constraint, SemverError
from mirrord.tagregex import TagRegex, TagRegexError, quoted

_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+|0")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Model(BaseModel):
    """Frozen, and strict about keys: an unknown key is an error, not silently dropped."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        arbitrary_types_allowed=True,
        defer_build=True,
    )


def invalid(message: str) -> PydanticCustomError:
    # The message goes in the context: a regex may contain `{` and `}`.
    return PydanticCustomError("mirrord", "{reason}", {"reason": message})


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"expected {what} (a string)")
    return value


def compile_regex(value: Any) -> TagRegex:
    """An RE2 regex, as skopeo reads it; an invalid one is an error quoting it and saying why."""
    text = _text(value, "a regular expression")
    try:
        return TagRegex.compile(text)
    except TagRegexError as exc:
        raise invalid(f"invalid regular expression {quoted(text)}: {exc}") from None


def compile_skopeo_regex(value: Any) -> TagRegex:
    """skopeo's `images-by-tag-regex` entry: left empty (null), it is Go's "", which matches
    every tag."""
    return compile_regex("" if value is None else value)


_GO_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
_GO_FALSE = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})


def parse_go_bool(value: Any) -> bool:
    """A bool as skopeo's yaml.v3 reads one: a YAML bool or YAML 1.1's yes/no/on/off words;
    anything else (`"false"`, `0`) makes skopeo refuse the file, and is refused here too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _GO_TRUE | _GO_FALSE:
        return value in _GO_TRUE
    raise invalid("expected true or false (skopeo cannot read this value as a bool)")


def parse_constraint(value: Any) -> Constraint:
    """A Masterminds-style semver constraint (`mirrord.semver`)."""
    text = _text(value, "a semver constraint")
    try:
        return Constraint.parse(text)
    except SemverError as exc:
        raise invalid(f"invalid semver constraint {text!r}: {exc}") from None


def parse_duration(value: Any) -> timedelta:
    """`90s`, `10m`, `1h30m`, `2d`, `500ms` (a bare number is refused: which unit?)."""
    if isinstance(value, timedelta):
        return value
    text = _text(value, "a duration").strip()
    if not _DURATION.fullmatch(text):
        raise invalid(f"invalid duration {text[:40]!r}: expected e.g. 30s, 10m, 1h30m, 2d")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def parse_platforms(value: Any) -> PlatformPolicy:
    """`all`, `host` (skopeo's default: the host's platform only), or a list of os/arch[/v]."""
    if isinstance(value, PlatformPolicy):
        return value
    if value == "all":
        return PlatformPolicy.all()
    if value == "host":
        return PlatformPolicy.system()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise invalid("expected all, host, or a list of os/arch[/variant]")
    try:
        return PlatformPolicy.subset(tuple(Platform.parse(i) for i in items))
    except InvalidReference as exc:
        raise invalid(str(exc)) from None


def parse_immutable(value: Any) -> bool | TagRegex:
    """true (every tag), false, or a regex of the tags that never move."""
    if isinstance(value, bool):
        return value
    return compile_regex(value)


def _none_as_empty(value: Any) -> Any:
    # `images:` with nothing after it is an empty mapping to skopeo (a nil Go map).
    return {} if value is None else value


class TLSChoice(StrEnum):
    VERIFY = "verify"
    INSECURE = "insecure"
    PLAIN_HTTP = "plain-http"


Regex = Annotated[TagRegex, PlainValidator(compile_regex)]
SkopeoRegex = Annotated[TagRegex, PlainValidator(compile_skopeo_regex)]
GoBool = Annotated[bool, PlainValidator(parse_go_bool)]
Semver = Annotated[Constraint, PlainValidator(parse_constraint)]
Duration = Annotated[timedelta, PlainValidator(parse_duration)]
Platforms = Annotated[PlatformPolicy, PlainValidator(parse_platforms)]
ImmutableTags = Annotated[bool | TagRegex, PlainValidator(parse_immutable)]
EmptyIfNull = BeforeValidator(_none_as_empty)
