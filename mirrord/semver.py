"""Semantic versions and constraints as skopeo's `images-by-semver` reads them.  [pure]

skopeo uses Masterminds/semver v3: lenient versions (`v1.2.3`, `1.2`, `1` all parse) and
npm-like constraints with a few rules of their own. node-semver does the comparing; this module
translates Masterminds' grammar into node-semver ranges where the two disagree:

- `,` and whitespace both mean AND; `||` means OR; `a - b` is an inclusive range.
- A wildcard or missing part (`1.2.x`, `1.x`, `1`, `*`) makes a comparator "dirty": `=1.2` means
  `~1.2`, `>1.2` means `>=1.3.0`, `<=1.2` means `<1.3.0`, but `<1.2` stays `<1.2.0`.
- `~0.0.0` (and `~*`) accept everything; `^*` only `0.0.0`, as Masterminds' code does.
- `!=` exists (npm has no such operator).
- Prereleases (`1.2.3-alpine`) never match unless a comparator of the same OR-group names a
  prerelease; then every prerelease in range matches (npm only admits those of the same x.y.z).
- Masterminds' patterns are Go regexps: `\\s` is ASCII whitespace only (tab, newline, form feed,
  carriage return, space), so a no-break space or an ideographic space is not a separator.
- Numbers are uint64: a part over 18446744073709551615 is refused where Masterminds parses it
  (everything before the first wildcard).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import nodesemver

_UINT64_MAX = 2**64 - 1
_IDS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_VERSION_RE = re.compile(rf"v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?(?:-({_IDS}))?(?:\+({_IDS}))?")

_OP = r"!=|>=|=>|<=|=<|~>|[=<>~^]|"
_PART = r"[0-9]+|[xX*]"
_CV = rf"v?(?:{_PART})(?:\.(?:{_PART})){{0,2}}(?:-{_IDS})?(?:\+{_IDS})?"
_S = r"[\t\n\f\r ]"  # Go's \s; Python's also takes \v, \x1c-\x1f and Unicode spaces
_TERM = rf"({_OP}){_S}*({_CV})"
_GROUP_RE = re.compile(rf"{_S}*{_TERM}{_S}*(?:(?:{_S}+|,{_S}*){_TERM}{_S}*)*")
_TERM_RE = re.compile(_TERM)
_HYPHEN_RE = re.compile(rf"({_CV}){_S}+-{_S}+({_CV})")
_CV_RE = re.compile(rf"v?({_PART})(?:\.({_PART}))?(?:\.({_PART}))?(?:-({_IDS}))?(?:\+{_IDS})?")
_SYNONYMS = {"": "=", "=>": ">=", "=<": "<=", "~>": "~"}

Wild = Literal["major", "minor", "patch"] | None


class SemverError(ValueError):
    """A constraint that does not parse."""


def _uint64(digits: str) -> int | None:
    """`digits` as Go's ParseUint(_, 10, 64) reads them (leading zeros allowed), or None when
    the number does not fit in a uint64."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(_UINT64_MAX)):  # and int() refuses 4,300 digits and more
        return None
    number = int(significant or "0")
    return number if number <= _UINT64_MAX else None


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[:size] + "…"


def _valid_prerelease(pre: str) -> bool:
    """Numeric identifiers may not have leading zeros (as Masterminds checks)."""
    return not any(p.isdigit() and len(p) > 1 and p[0] == "0" for p in pre.split("."))


@functools.total_ordering
@dataclass(frozen=True, slots=True, eq=False)
class Version:
    """A version parsed leniently, as Masterminds' `NewVersion` does. Ordered by precedence."""

    major: int
    minor: int
    patch: int
    prerelease: str
    _sv: nodesemver.SemVer = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Version | None:
        """The version a tag names, or None when it is not one (`latest`, `1.2.3.4`, `stable`)."""
        m = _VERSION_RE.fullmatch(text)
        if m is None or (m[4] and not _valid_prerelease(m[4])):
            return None
        major, minor, patch = (_uint64(g or "0") for g in (m[1], m[2], m[3]))
        if major is None or minor is None or patch is None:
            return None
        return cls.make(major, minor, patch, m[4] or "")

    @classmethod
    def make(cls, major: int, minor: int, patch: int, prerelease: str = "") -> Version:
        """A version from its parts."""
        text = f"{major}.{minor}.{patch}" + (f"-{prerelease}" if prerelease else "")
        return cls(major, minor, patch, prerelease, nodesemver.make_semver(text, loose=False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._sv.compare(other._sv) == 0

    def __lt__(self, other: Version) -> bool:
        return bool(self._sv.compare(other._sv) < 0)

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch, self.prerelease))

    def __str__(self) -> str:
        return str(self._sv)


@dataclass(frozen=True, slots=True)
class _Bound:
    """The version written in a comparator, with its first wildcard (or missing) position."""

    major: int
    minor: int
    patch: int
    pre: str
    wild: Wild

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")

    @property
    def next_major(self) -> str:
        return f"{self.major + 1}.0.0-0"

    @property
    def next_minor(self) -> str:
        return f"{self.major}.{self.minor + 1}.0-0"

    @property
    def next_patch(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch + 1}-0"


def _parse_bound(text: str) -> _Bound:
    m = _CV_RE.fullmatch(text)
    if m is None or (m[4] and not _valid_prerelease(m[4])):
        raise SemverError(f"improper version {text!r}")
    parts = [m[1], m[2], m[3]]
    names: tuple[Wild, ...] = ("major", "minor", "patch")
    wild = next((n for n, p in zip(names, parts, strict=True) if p is None or p in "xX*"), None)
    numbers = [0, 0, 0]
    for i, part in enumerate(parts):
        if wild is not None and i >= names.index(wild):
            break  # Masterminds never parses what follows a wildcard (`1.x.99999…` is `1.x`)
        number = _uint64(part or "0")
        if number is None:
            raise SemverError(
                f"improper version {_clip(text)!r}: {_clip(part)} is over {_UINT64_MAX} "
                "(Masterminds/semver's limit, a uint64)"
            )
        numbers[i] = number
    return _Bound(numbers[0], numbers[1], numbers[2], m[4] or "", wild)


def _tilde(b: _Bound) -> str:
    if b.wild == "major" or (b.wild is None and (b.major, b.minor, b.patch) == (0, 0, 0)):
        return f">={b}"
    return f">={b} <{b.next_major if b.wild == 'minor' else b.next_minor}"


def _caret(b: _Bound) -> str:
    if b.major > 0 or b.wild == "minor":
        return f">={b} <{b.next_major}"
    if b.minor > 0 or b.wild == "patch":
        return f">={b} <{b.next_minor}"
    return f">={b} <{b.next_patch}"


def _greater(b: _Bound) -> str:
    if b.wild == "minor":
        return f">={b.next_major}"
    return f">={b.next_minor}" if b.wild == "patch" else f">{b}"


def _less_equal(b: _Bound) -> str:
    if b.wild is None:
        return f"<={b}"
    return f"<{b.next_major}" if b.wild == "minor" else f"<{b.next_minor}"


def _not_equal(b: _Bound) -> str:
    if b.wild == "minor":
        return f"<{b.major}.0.0-0 || >={b.next_major}"
    if b.wild == "patch":
        return f"<{b.major}.{b.minor}.0-0 || >={b.next_minor}"
    return f"<{b} || >{b}"


_RANGES: dict[str, Callable[[_Bound], str]] = {
    "=": lambda b: _tilde(b) if b.wild else f"={b}",
    "~": _tilde,
    "^": _caret,
    ">": _greater,
    ">=": lambda b: f">={b}",
    "<": lambda b: f"<{b}",
    "<=": _less_equal,
    "!=": _not_equal,
}


@dataclass(frozen=True, slots=True)
class _Term:
    """One comparator, as a node-semver range (plus Masterminds' `!=1.2` prerelease quirk)."""

    range: nodesemver.Range
    bound: _Bound
    op: str

    def allows(self, v: Version) -> bool:
        if self.range.test(v._sv, include_prerelease=True):
            return True
        return self._other_prerelease(v)

    def _other_prerelease(self, v: Version) -> bool:
        # `!=1.2` lets through a 1.2.z whose prerelease differs from the constraint's.
        b = self.bound
        if self.op != "!=" or b.wild != "patch" or (v.major, v.minor) != (b.major, b.minor):
            return False
        return v.prerelease != b.pre


def _parse_term(op: str, version: str) -> _Term:
    op = _SYNONYMS.get(op, op)
    bound = _parse_bound(version)
    return _Term(nodesemver.make_range(_RANGES[op](bound), False), bound, op)


@dataclass(frozen=True, slots=True)
class _Group:
    """Comparators joined by AND."""

    terms: tuple[_Term, ...]

    @property
    def admits_prereleases(self) -> bool:
        return any(t.bound.pre for t in self.terms)

    def allows(self, v: Version) -> bool:
        if v.prerelease and not self.admits_prereleases:
            return False
        return all(t.allows(v) for t in self.terms)


def _parse_group(text: str) -> _Group:
    if _GROUP_RE.fullmatch(text) is None:
        odd = next((c for c in text if c.isspace() and c not in "\t\n\f\r "), None)
        hint = (
            f" (U+{ord(odd):04X} is not a space to Masterminds/semver: only tab, newline, form "
            "feed, carriage return and space are)"
            if odd
            else ""
        )
        raise SemverError(f"improper constraint {text.strip()!r}{hint}")
    return _Group(tuple(_parse_term(m[1], m[2]) for m in _TERM_RE.finditer(text)))


@dataclass(frozen=True, slots=True)
class Constraint:
    """A Masterminds-style constraint such as `>= 3.12.0`, `~1.2`, `^1.0` or `<1.0 || >=2.0`."""

    text: str
    groups: tuple[_Group, ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse `text`; raise SemverError when Masterminds would refuse it."""
        rewritten = _HYPHEN_RE.sub(lambda m: f">= {m[1]}, <= {m[2]} ", text)
        return cls(text, tuple(_parse_group(part) for part in rewritten.split("||")))

    def allows(self, version: Version) -> bool:
        """True when `version` satisfies the constraint (Masterminds' `Check`)."""
        return any(g.allows(version) for g in self.groups)

    def allows_tag(self, tag: str) -> bool:
        """True when `tag` parses as a version that satisfies the constraint."""
        version = Version.parse(tag)
        return version is not None and self.allows(version)

    def __str__(self) -> str:
        return self.text
