"""Tag regexes with Go's semantics (RE2), as skopeo and image-syncer read them.  [pure]

skopeo compiles `images-by-tag-regex` with Go's `regexp`, which is RE2. Python's `re` reads some
RE2 patterns differently without a word (`[[:digit:]]` is a set of the characters `:digt`) and
refuses others (`^(?i)v1`, `\\Q…\\E`, `\\z`). The RE2 library itself (google-re2) gives the same
answers as skopeo for every pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported by us, once, not on stderr by RE2


class TagRegexError(ValueError):
    """A pattern RE2 refuses; the message is RE2's reason."""


@dataclass(frozen=True, slots=True)
class TagRegex:
    """A compiled RE2 pattern, searched (unanchored) in a tag as Go's MatchString does."""

    pattern: str
    _compiled: Any = field(repr=False, compare=False, hash=False)

    @classmethod
    def compile(cls, pattern: str) -> TagRegex:
        try:
            return cls(pattern, re2.compile(pattern, options=_OPTIONS))
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid"
            text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
            what, _, where = text.partition(": ")  # RE2 says "missing ]: [12"
            raise TagRegexError(f"{what} in {quoted(where)}" if where else what) from None

    def search(self, tag: str) -> bool:
        return self._compiled.search(tag) is not None


def quoted(pattern: str) -> str:
    """`pattern` in quotes as the user wrote it (repr() would double every backslash), unless
    it holds a quote or an unprintable character: then repr(), which shows those safely."""
    if pattern.isprintable() and "'" not in pattern:
        return f"'{pattern}'"
    return repr(pattern)
