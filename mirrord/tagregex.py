"""Tag regexes with Go's semantics (RE2), as skopeo and image-syncer read them.  [pure]

skopeo compiles `images-by-tag-regex` with Go's `regexp`, which is RE2. Python's `re` reads some
RE2 patterns differently without a word (`[[:digit:]]` is a set of the characters `:digt`) and
refuses others (`^(?i)v1`, `\\Q…\\E`, `\\z`). The RE2 library itself (google-re2) gives the same
answers as skopeo, except for what the C++ library has that Go's `regexp/syntax` (Go 1.19, which
skopeo 1.9.3 is built with) refuses, checked here first: `\\C` (any byte), `(?<name>…)` (Go
names groups only as `(?P<name>…)` until Go 1.22) and Unicode classes newer than Go 1.19's
Unicode 13.0 (`\\p{Vithkuqi}`, `\\p{Kawi}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported by us, once, not on stderr by RE2


# Go 1.19's unicode.Categories and unicode.Scripts (Unicode 13.0.0), and "Any": the names Go's
# regexp takes in `\p{…}` and `\pX`.
_GO_UNICODE_NAMES = """
    Adlam Ahom Anatolian_Hieroglyphs Any Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak
    Bengali Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid C Canadian_Aboriginal Carian
    Caucasian_Albanian Cc Cf Chakma Cham Cherokee Chorasmian Co Common Coptic Cs Cuneiform
    Cypriot Cyrillic Deseret Devanagari Dives_Akuru Dogra Duployan Egyptian_Hieroglyphs Elbasan
    Elymaic Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati Gunjala_Gondi Gurmukhi
    Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited
    Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kayah_Li
    Kharoshthi Khitan_Small_Script Khmer Khojki Khudawadi L Lao Latin Lepcha Limbu Linear_A
    Linear_B Lisu Ll Lm Lo Lt Lu Lycian Lydian M Mahajani Makasar Malayalam Mandaic Manichaean
    Marchen Masaram_Gondi Mc Me Medefaidrin Meetei_Mayek Mende_Kikakui Meroitic_Cursive
    Meroitic_Hieroglyphs Miao Mn Modi Mongolian Mro Multani Myanmar N Nabataean Nandinagari Nd
    New_Tai_Lue Newa Nko Nl No Nushu Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian
    Old_Italic Old_North_Arabian Old_Permic Old_Persian Old_Sogdian Old_South_Arabian
    Old_Turkic Oriya Osage Osmanya P Pahawh_Hmong Palmyrene Pau_Cin_Hau Pc Pd Pe Pf Phags_Pa
    Phoenician Pi Po Ps Psalter_Pahlavi Rejang Runic S Samaritan Saurashtra Sc Sharada Shavian
    Siddham SignWriting Sinhala Sk Sm So Sogdian Sora_Sompeng Soyombo Sundanese Syloti_Nagri
    Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangut Telugu Thaana Thai
    Tibetan Tifinagh Tirhuta Ugaritic Vai Wancho Warang_Citi Yezidi Yi Z Zanabazar_Square Zl Zp
    Zs
"""
_GO_UNICODE_CLASSES = frozenset(_GO_UNICODE_NAMES.split())


class TagRegexError(ValueError):
    """A pattern RE2 refuses; the message is RE2's reason."""


@dataclass(frozen=True, slots=True)
class TagRegex:
    """A compiled RE2 pattern, searched (unanchored) in a tag as Go's MatchString does."""

    pattern: str
    _compiled: Any = field(repr=False, compare=False, hash=False)

    @classmethod
    def compile(cls, pattern: str) -> TagRegex:
        if refusal := go_refusal(pattern):
            raise TagRegexError(refusal)
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


def go_refusal(pattern: str) -> str | None:
    """Why Go 1.19's regexp refuses `pattern` where the RE2 library accepts it, or None.

    Walks the pattern as Go's parser does: `\\Q…\\E` is literal text, and inside `[…]` (where
    `]` first is a literal and `[:name:]` a unit) `\\C` and `(?<` mean nothing special; the
    RE2 library reports everything else itself.
    """
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        if pattern[i] == "\\" and i + 1 < n:
            escape = pattern[i + 1]
            if escape == "Q" and not in_class:
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if escape == "C" and not in_class:
                return (
                    "invalid escape sequence in '\\C' (Go's regexp, which skopeo uses, has no \\C)"
                )
            if escape in "pP" and (unknown := _unknown_class(pattern, i)):
                return (
                    f"invalid character class range in {quoted(unknown)} (a Unicode class "
                    "skopeo's Go regexp does not know: it has Unicode 13.0)"
                )
            i += 2
        elif in_class:
            if pattern.startswith("[:", i) and (end := pattern.find(":]", i + 2)) >= 0:
                i = end + 2
                continue
            in_class = pattern[i] != "]"
            i += 1
        elif pattern[i] == "[":
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)  # `[]a]` and `[^]a]`: a first `]` is a literal
            in_class = True
        elif pattern.startswith("(?<", i):
            return (
                "invalid or unsupported Perl syntax in '(?<' (skopeo's Go regexp names a group "
                "only as (?P<name>…))"
            )
        else:
            i += 1
    return None


def _unknown_class(pattern: str, start: int) -> str | None:
    """The `\\p{Name}` or `\\pN` at `start` when Go does not know the name, else None."""
    if pattern.startswith("{", start + 2):
        end = pattern.find("}", start + 3)
        if end < 0:
            return None  # unterminated: RE2 says so
        seq, name = pattern[start : end + 1], pattern[start + 3 : end]
    else:
        seq = pattern[start : start + 3]
        name = seq[2:]
    return None if name.removeprefix("^") in _GO_UNICODE_CLASSES else seq
