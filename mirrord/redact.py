"""The one place where URLs and text are scrubbed before they reach logs, errors or status.  [pure]

URLs keep only query parameters of the registry protocol (an allowlist, as ggcr does): signed
storage redirects and upload `_state` tokens are replaced. Userinfo is dropped. Header values of
Authorization-like headers never leave the HTTP layer.
"""

from __future__ import annotations

import re

from yarl import URL

SAFE_QUERY_KEYS = frozenset({"scope", "service", "mount", "from", "digest", "n", "last", "tag"})
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
REDACTED = "REDACTED"
_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# A password spelt into a reference: `docker://user:pw@host/…`, or quoted bare `'user:pw@host'`.
# Not `repo:tag@sha256:…` (a reference pinned by digest).
_USERINFO = re.compile(
    r"(?:(?<=://)|(?<=^)|(?<=[\s'\"]))([^\s'\"/@:]+):[^\s'\"/@]*@(?!sha256:|sha384:|sha512:)"
)


def redact_url(url: URL | str) -> str:
    """A URL safe to print: no userinfo, non-protocol query values replaced."""
    try:
        parsed = url if isinstance(url, URL) else URL(url, encoded=True)
        return _redacted(parsed)
    except ValueError:  # not a URL yarl can read (`http://[::1`, a port > 65535)
        return f"(unparsable URL {REDACTED})"


def _redacted(parsed: URL) -> str:
    if parsed.user or parsed.password:
        parsed = parsed.with_user(None)
    if not parsed.query_string:
        return str(parsed)
    query = [(k, v if k in SAFE_QUERY_KEYS else REDACTED) for k, v in parsed.query.items()]
    return str(parsed.with_query(query))


def redact_text(text: str) -> str:
    """Scrub URLs and Authorization-looking values out of free text (last line of defence)."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
