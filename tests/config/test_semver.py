"""Masterminds/semver v3 semantics (what skopeo's images-by-semver uses), case by case."""

from __future__ import annotations

import nodesemver
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord.semver import Constraint, SemverError, Version


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("1.2", "1.2.0"),
        ("3.14", "3.14.0"),
        ("1", "1.0.0"),
        ("01.02.03", "1.2.3"),  # NewVersion coerces leading zeros
        ("1.2.3-alpine", "1.2.3-alpine"),
        ("1.2-alpine3.12", "1.2.0-alpine3.12"),
        ("20210101", "20210101.0.0"),
    ],
)
def test_lenient_versions(tag: str, expected: str) -> None:
    version = Version.parse(tag)
    assert version is not None
    assert str(version) == expected


@pytest.mark.parametrize(
    "tag",
    ["latest", "stable", "1.2.3.4", "V1.2.3", "1.2.3-beta.01", "1.2.3_x", "v", "", "1..2", "x1"],
)
def test_tags_that_are_not_versions(tag: str) -> None:
    assert Version.parse(tag) is None


def test_versions_order_by_precedence() -> None:
    tags = ["1.10.0", "1.9.0", "1.10.0-rc.1", "1.10.0-rc.10", "1.10.0-rc.2", "2"]
    ordered = sorted(tags, key=lambda t: Version.parse(t) or Version.make(0, 0, 0))
    assert ordered == ["1.9.0", "1.10.0-rc.1", "1.10.0-rc.2", "1.10.0-rc.10", "1.10.0", "2"]
    assert Version.parse("v1.2") == Version.parse("1.2.0")


CASES = [
    # exact and wildcard equality: a missing part is a wildcard ("=2.0" is "~2.0")
    ("=2.0.0", "2.0.0", True),
    ("=2.0.0", "2.0.1", False),
    ("2.0", "2.0.7", True),
    ("2.0", "2.1.0", False),
    ("2", "2.9.9", True),
    ("2.*", "3.0.0", False),
    ("2.1.x", "2.1.9", True),
    ("*", "9.9.9", True),
    ("*", "1.0.0-rc1", False),
    # not equal, with wildcards
    ("!=1.2.3", "1.2.3", False),
    ("!=1.2.3", "1.2.4", True),
    ("!=1.2", "1.2.9", False),
    ("!=1.2", "1.3.0", True),
    ("!=1.x", "1.9.0", False),
    ("!=1.x", "2.0.0", True),
    ("!=1.2-beta", "1.2.0", True),
    ("!=1.2-beta", "1.2.5-beta", False),
    ("!=1.2-beta", "1.2.5-rc", True),
    # ordering operators; a dirty (wildcard) bound moves to the next release line
    (">1.2", "1.2.9", False),
    (">1.2", "1.3.0", True),
    (">1", "1.9.9", False),
    (">1", "2.0.0", True),
    (">=1.2", "1.2.0", True),
    (">=1.2", "1.1.9", False),
    ("=>1.2", "1.2.0", True),
    ("<1.2", "1.1.9", True),
    ("<1.2", "1.2.0", False),
    ("<1.2.x", "1.2.5", False),
    ("<=1.2", "1.2.9", True),
    ("<=1.2", "1.3.0", False),
    ("=<1", "1.9.0", True),
    ("<=1", "2.0.0", False),
    (">= 3.12.0", "3.12.0", True),
    (">= 3.12.0", "3.11.9", False),
    # tilde: patch-level changes, or minor-level when the minor is missing
    ("~1.2.3", "1.2.9", True),
    ("~1.2.3", "1.3.0", False),
    ("~1.2.3", "1.2.2", False),
    ("~1.2", "1.2.0", True),
    ("~1", "1.9.0", True),
    ("~1", "2.0.0", False),
    ("~>1.2", "1.2.7", True),
    ("~0.0.0", "5.0.0", True),
    ("~*", "5.0.0", True),
    ("~0.0", "0.1.0", False),
    ("~0", "0.9.0", True),
    # caret: major-level changes, minor-level below 1.0, patch-level below 0.1
    ("^1.2.3", "1.9.0", True),
    ("^1.2.3", "2.0.0", False),
    ("^1.2.3", "1.2.2", False),
    ("^1.x", "1.0.0", True),
    ("^0.2.3", "0.2.9", True),
    ("^0.2.3", "0.3.0", False),
    ("^0.2", "0.2.0", True),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.9", True),
    ("^0.0", "0.1.0", False),
    ("^0", "0.9.9", True),
    ("^0", "1.0.0", False),
    ("^0.x", "0.9.0", True),
    ("^0.x", "1.0.0", False),
    ("^*", "0.0.0", True),  # what Masterminds' code does, whatever its README says
    ("^*", "0.0.1", False),
    # AND with commas or spaces, OR with ||, hyphen ranges
    (">=1.0, <2.0", "1.5.0", True),
    (">=1.0, <2.0", "2.0.0", False),
    (">=1.0 <2.0", "1.99.0", True),
    (">= 1.1, <2, !=1.2.3", "1.2.3", False),
    ("<1.0 || >=2.0", "0.9.0", True),
    ("<1.0 || >=2.0", "1.5.0", False),
    ("<1.0 || >=2.0", "2.1.0", True),
    ("1.2 - 1.4", "1.4.9", True),  # `<= 1.4` is dirty: the whole 1.4 line
    ("1.2 - 1.4", "1.5.0", False),
    ("1.2 - 1.4", "1.1.9", False),
    ("1.2-1.4", "1.2.0-1.4", True),  # no spaces: a prerelease, not a range
    ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", True),
    # prereleases only when the OR-group names one; then any prerelease in range
    (">=1.0", "1.5.0-rc1", False),
    (">=1.0-0", "1.5.0-rc1", True),
    ("~1.2.3-beta.2", "1.2.4-beta.2", True),  # npm would refuse: other x.y.z
    ("~1.2.3-beta.2", "1.3.0-beta.2", False),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", False),
    (">= 1.0.0 <= 2.0.0-beta || > 3", "1.0.1-beta", True),
    (">= 1.0.0 <= 2.0.0-beta || > 3", "3.0.1-beta", False),
    (">0", "0.0.1-alpha", False),
    (">=0-0", "0.0.1-alpha", True),
    (">0.0.0-0", "0.0.0-alpha", True),
    ("<0-z", "0.0.0-alpha", True),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", True),
    (">= 3.12.0", "3.13.0-alpine", False),
    ("v1.2.3", "1.2.3", True),
]


@pytest.mark.parametrize(("constraint", "version", "expected"), CASES)
def test_constraint(constraint: str, version: str, expected: bool) -> None:
    parsed = Version.parse(version)
    assert parsed is not None
    assert Constraint.parse(constraint).allows(parsed) is expected


@pytest.mark.parametrize(
    ("constraint", "groups", "terms"),
    [
        (">= 1.1", 1, 1),
        (">40.50.60, < 50.70", 1, 2),
        ("v2.3.5-20161202202307-sha.e8fc5e5", 1, 1),
        (">= 1.2.3 < 2.0 || => 3.0 < 4", 2, 2),
        ("3 - 4 || => 3.0, < 4", 2, 2),
        ("12.3.34 ~1.2.3", 1, 2),
        ("1.0.0 - 2.0.0, <=2.0.0", 1, 3),
    ],
)
def test_constraint_structure(constraint: str, groups: int, terms: int) -> None:
    parsed = Constraint.parse(constraint)
    assert len(parsed.groups) == groups
    assert len(parsed.groups[0].terms) == terms


@pytest.mark.parametrize(
    "constraint",
    [
        "",
        "   ",
        "foo",
        ">= bar",
        "BAR >= 1.2.3",
        "1.0 ||",
        "12.3.4.1234",
        "12.3.34~ 1.2.3",
        "v1.2.3-beta.01",
        ">>1.0",
        "1.2.3 -",
    ],
)
def test_bad_constraints(constraint: str) -> None:
    with pytest.raises(SemverError):
        Constraint.parse(constraint)


def test_tags_that_do_not_parse_never_match() -> None:
    constraint = Constraint.parse(">= 0")
    assert not constraint.allows_tag("latest")
    assert constraint.allows_tag("v3")


def test_nodesemver_string_api_trap() -> None:
    # node-semver's Python port ignores prereleases when a *string* is tested with
    # include_prerelease=True; Version always hands it a SemVer object instead.
    assert nodesemver.satisfies("1.2.3-alpha", ">=1.2.3", include_prerelease=True)
    assert not Constraint.parse(">=1.2.3, >=1.0.0-0").allows(Version.make(1, 2, 3, "alpha"))


parts = st.integers(min_value=0, max_value=12)


@given(parts, parts, parts, parts, parts, parts)
def test_wildcards_follow_their_definitions(
    major: int, minor: int, patch: int, c_major: int, c_minor: int, c_patch: int
) -> None:
    v = Version.make(major, minor, patch)
    bound = Version.make(c_major, c_minor, c_patch)
    same_major, same_minor = major == c_major, (major, minor) == (c_major, c_minor)
    checks = {
        f">={c_major}.{c_minor}.{c_patch}": v >= bound,
        f"<{c_major}.{c_minor}": v < Version.make(c_major, c_minor, 0),
        f"<={c_major}.{c_minor}": (major, minor) <= (c_major, c_minor),
        f">{c_major}.{c_minor}": (major, minor) > (c_major, c_minor),
        # ~0.0.0 is Masterminds' special case: everything.
        f"~{c_major}.{c_minor}.{c_patch}": v >= bound
        and (same_minor or (c_major, c_minor, c_patch) == (0, 0, 0)),
        f"{c_major}.{c_minor}.x": same_minor,
        f"{c_major}": same_major,
        f"!={c_major}.{c_minor}": not same_minor,
        f"^{c_major}.{c_minor}.{c_patch}": v >= bound
        and (same_major if c_major else same_minor if c_minor else v == bound),
    }
    for text, expected in checks.items():
        assert Constraint.parse(text).allows(v) is expected, text


# Masterminds' patterns are Go regexps, whose \s is [\t\n\f\r ]: other spaces are not separators.
@pytest.mark.parametrize(
    "constraint",
    [
        ">=\u00a01.2.3",  # no-break space
        "1.2.3\u3000",  # ideographic space
        ">=1.0,\u2003<2",  # em space
        ">=1.0\u2028<2",  # line separator
        ">=1\x85<2",  # next line
        ">=1\v<2",  # vertical tab: ASCII, but not in Go's \s
        ">=1\x1c<2",  # file separator: Python's \s takes it
        "1.0 \u00a0-\u00a0 2.0",
    ],
)
def test_only_go_whitespace_separates(constraint: str) -> None:
    with pytest.raises(SemverError, match="is not a space to Masterminds/semver"):
        Constraint.parse(constraint)


def test_go_whitespace_separates() -> None:
    assert len(Constraint.parse("\t>=1.0\f<2.0\r\n||\n3").groups) == 2
    assert Constraint.parse("1.0 \t-\t 2.0").allows_tag("2.0.5")


UINT64_MAX = "18446744073709551615"
OVER = "18446744073709551616"


@pytest.mark.parametrize(
    "constraint",
    [
        OVER,
        f"v{OVER}",
        f"1.{OVER}",
        f"1.2.{OVER}",
        f"^{OVER}",
        f"{OVER}.x",
        f"1.{OVER}.x",
        f">= 1.0, < {OVER}",
        f"1.0 - {OVER}",
        f"~1 || {OVER}",
        "1" * 5000,  # also past int()'s 4,300 digits: a ValueError, not a SemverError
    ],
)
def test_numbers_over_uint64_are_refused(constraint: str) -> None:
    with pytest.raises(SemverError, match=f"is over {UINT64_MAX}"):
        Constraint.parse(constraint)


@pytest.mark.parametrize(
    "constraint",
    [UINT64_MAX, f"{UINT64_MAX}.{UINT64_MAX}.{UINT64_MAX}", f"1.x.{OVER}", f"*.{OVER}", "0" * 30],
)
def test_numbers_masterminds_reads_are_accepted(constraint: str) -> None:
    # Nothing after a wildcard is parsed; leading zeros are dropped as ParseUint drops them.
    Constraint.parse(constraint)


def test_tags_over_uint64_are_not_versions() -> None:
    assert Version.parse(f"{UINT64_MAX}.1") is not None
    assert Version.parse(f"1.{OVER}") is None
    assert Version.parse("9" * 5000) is None
    assert str(Version.parse("0" * 30 + "7")) == "7.0.0"


def test_no_limit_on_length_or_or_groups() -> None:
    # Masterminds/semver v3 (v3.2.1, what skopeo vendors since images-by-semver came in, through
    # v3.4.0) checks neither the length of a constraint nor its number of || groups.
    assert len(Constraint.parse(" || ".join(f"~{i}.0" for i in range(2000))).groups) == 2000
    assert len(Constraint.parse(", ".join(["<2.0"] * 2000) + " >=1.0").groups[0].terms) == 2001
