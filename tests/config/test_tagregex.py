"""Tag regexes as Go 1.19's regexp (skopeo 1.9.3's) reads them, where the RE2 library differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrord.config import skopeo_sync_config
from mirrord.errors import ConfigError
from mirrord.tagregex import TagRegex, TagRegexError

# Each of these compiles in the RE2 library; Go's regexp/syntax refuses it, and skopeo logs
# "Error parsing regex, skipping" (checked against skopeo in tests/sync/test_skopeo_yaml_dry_run).
GO_REFUSES = {
    r"\C": r"invalid escape sequence in '\C'",
    r"^v\C+$": r"invalid escape sequence in '\C'",
    r"(?i)a\Cb": r"invalid escape sequence in '\C'",
    r"\Q\E\C": r"invalid escape sequence in '\C'",
    r"[\]]\C": r"invalid escape sequence in '\C'",
    r"[]a]\C": r"invalid escape sequence in '\C'",
    r"[[:alpha:]]\C": r"invalid escape sequence in '\C'",
    r"(?<major>\d+)\.": "invalid or unsupported Perl syntax in '(?<'",
    r"\\(?<n>a)": "invalid or unsupported Perl syntax in '(?<'",
    r"\p{Vithkuqi}": r"invalid character class range in '\p{Vithkuqi}'",
    r"[\p{Kawi}a]": r"invalid character class range in '\p{Kawi}'",
    r"\P{^Toto}": r"invalid character class range in '\P{^Toto}'",
}

# Look alike, and Go takes them: inside \Q…\E and [...] these are plain characters.
GO_ACCEPTS = [
    r"\Q\C(?<\E",
    r"\Q\C",
    r"[(?<]",
    r"[^]\p{Greek}(?<]",
    r"\\C",
    r"(?P<major>\d+)\.",
    r"\p{Greek}\pL\PN\p{^Han}\p{Any}",
    r"(?)v",
    r"\_\<",
]


@pytest.mark.parametrize(("pattern", "reason"), list(GO_REFUSES.items()), ids=list(GO_REFUSES))
def test_what_go_refuses_is_refused(pattern: str, reason: str) -> None:
    with pytest.raises(TagRegexError) as err:
        TagRegex.compile(pattern)
    assert str(err.value).startswith(reason)


@pytest.mark.parametrize("pattern", GO_ACCEPTS)
def test_what_go_accepts_is_accepted(pattern: str) -> None:
    TagRegex.compile(pattern)


def test_the_reason_says_why() -> None:
    with pytest.raises(TagRegexError) as err:
        TagRegex.compile(r"^v\C")
    assert str(err.value) == (
        r"invalid escape sequence in '\C' (Go's regexp, which skopeo uses, has no \C)"
    )


def test_literal_text_is_matched_as_go_matches_it() -> None:
    assert TagRegex.compile(r"^\Q\C(?<\E$").search(r"\C(?<")
    assert TagRegex.compile(r"^[(?<]+$").search("<(?")


def test_a_sync_file_with_one_is_refused_naming_the_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "sync.yml"
    path.write_text("quay.io:\n  images-by-tag-regex:\n    coreos/etcd: '^v3\\.\\C'\n")
    with pytest.raises(ConfigError) as err:
        skopeo_sync_config("mirror.example.com/m", file=path)
    (problem,) = err.value.problems
    assert problem == (
        f'{path}:3: "quay.io".images-by-tag-regex."coreos/etcd": invalid regular expression '
        r"'^v3\.\C': invalid escape sequence in '\C' (Go's regexp, which skopeo uses, has no \C)"
    )
