from datetime import UTC, datetime

import pytest
from yarl import URL

from mirrord.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NotFound,
    RateLimited,
    RedirectRefused,
    ServerError,
    Unauthorized,
    registry_error_class,
)
from mirrord.redact import redact_text, redact_url
from mirrord.registry.auth import check_realm, forbidden_redirect, parse_challenges, pick_challenge
from mirrord.registry.http import parse_error_body
from mirrord.retry import BackoffPolicy, parse_ratelimit, parse_retry_after, retry_delay


def test_bearer_challenge_with_commas_inside_quotes() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    (c,) = parse_challenges(header)
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }


def test_bearer_is_preferred_over_basic_among_several_challenges() -> None:
    found = pick_challenge(
        parse_challenges('Basic realm="x", Bearer realm="https://t/",service="s"')
    )
    assert found is not None
    assert found.scheme == "bearer"
    assert found.realm == "https://t/"


@pytest.mark.parametrize("garbage", ["", ",,,", "=", 'Bearer realm="unterminated', "Bearer ,=,"])
def test_challenge_parser_never_raises(garbage: str) -> None:
    parse_challenges(garbage)


@pytest.mark.parametrize(
    ("status", "codes", "cls"),
    [
        (429, (), RateLimited),
        (401, ("UNAUTHORIZED",), Unauthorized),
        (403, ("DENIED",), Denied),
        (404, ("MANIFEST_UNKNOWN",), ManifestUnknown),
        (404, ("BLOB_UNKNOWN",), BlobUnknown),
        (404, (), NotFound),
        (503, (), ServerError),
        (408, (), ServerError),
        (400, ("TOOMANYREQUESTS",), RateLimited),
    ],
)
def test_registry_errors_keep_their_type(status: int, codes: tuple[str, ...], cls: type) -> None:
    assert registry_error_class(status, codes) is cls


def test_error_body_parsing_is_tolerant() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    assert parse_error_body(body) == (("MANIFEST_UNKNOWN",), "manifest unknown")
    assert parse_error_body(b"<html>oops</html>") == ((), "")


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None
    # 5,000 digits fit in a header; int() refuses them (a traceback, a job failed for good).
    assert parse_retry_after("9" * 5000) == 1e8


def test_retry_after_is_honoured_over_a_shorter_backoff_and_capped() -> None:
    policy = BackoffPolicy(base=0.1, cap=1, jitter=0)
    assert retry_delay(RateLimited("x", retry_after=7), 1, policy) == 7
    assert retry_delay(RateLimited("x", retry_after=10**6), 1, policy) == 900


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = BackoffPolicy(base=2, cap=10, jitter=0)
    assert [policy.delay(a) for a in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    jittered = BackoffPolicy(base=10, cap=100, jitter=0.2)
    assert all(8 <= jittered.delay(1) <= 12 for _ in range(50))


def test_docker_hub_ratelimit_header() -> None:
    assert parse_ratelimit("20;w=21600") == 20
    assert parse_ratelimit(None) is None
    assert parse_ratelimit("9" * 5000 + ";w=21600") is None


def test_realm_must_not_downgrade_or_point_at_link_local() -> None:
    registry = URL("https://registry.example")
    assert check_realm("https://auth.example/token", registry).host == "auth.example"
    for bad in (
        "http://auth.example/token",
        "https://169.254.169.254/",
        "https://127.0.0.1/t",
        "ftp://x/",
    ):
        with pytest.raises(RedirectRefused):
            check_realm(bad, registry)
    assert check_realm("http://127.0.0.1:9000/t", URL("http://127.0.0.1:5000")).port == 9000


def test_redirect_policy() -> None:
    origin = URL("https://registry.example/v2/x")
    assert forbidden_redirect(URL("http://cdn.example/blob"), origin)
    assert forbidden_redirect(URL("https://127.0.0.1/blob"), origin)
    assert not forbidden_redirect(URL("https://cdn.example/blob?sig=1"), origin)


def test_signed_query_strings_never_reach_messages() -> None:
    url = "https://user:pw@cdn.example/blob?X-Amz-Signature=abc&digest=sha256:1&_state=secret"
    safe = redact_url(url)
    assert "abc" not in safe
    assert "secret" not in safe
    assert "pw" not in safe
    assert "digest=sha256:1" in safe
    assert "Bearer REDACTED" in redact_text("header was Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig")


@pytest.mark.parametrize(
    "message",
    [
        "invalid registry host 'mirror:Hunter2-pw@127.0.0.1:5000'",
        "cannot read docker://mirror:Hunter2-pw@registry.example/app:v1",
        "mirror:Hunter2-pw@registry.example/app: no such image",
    ],
)
def test_a_password_spelt_into_a_reference_never_reaches_a_message(message: str) -> None:
    text = redact_text(message)
    assert "Hunter2-pw" not in text
    assert "mirror:REDACTED@" in text


def test_a_reference_pinned_by_digest_is_left_as_it_is() -> None:
    message = "invalid tag in 'web:v1@sha256:" + "a" * 64 + "'"
    assert redact_text(message) == message


@pytest.mark.parametrize("value", ["²", "١٢", "3²"])
def test_non_ascii_digits_in_rate_limit_headers_are_ignored_not_a_crash(value: str) -> None:
    assert parse_retry_after(value) is None
    assert parse_ratelimit(f"{value};w=21600") is None


@pytest.mark.parametrize("url", ["http://[::1", "https://host:99999/x?token=s3cret"])
def test_redacting_text_with_an_unparsable_url_never_raises_nor_shows_it(url: str) -> None:
    text = redact_text(f"registry said: see {url} for details")
    assert text.startswith("registry said: see ")
    assert "s3cret" not in text


@pytest.mark.parametrize(
    "host",
    ["2852039166", "0xa9fea9fe", "169.254.43518", "[::ffff:169.254.169.254]", "0", "127.1"],
)
def test_other_spellings_of_forbidden_addresses_are_refused(host: str) -> None:
    """getaddrinfo reads these as 169.254.169.254, 0.0.0.0 or 127.0.0.1 (the cloud metadata
    service, this machine): a remote registry may not send us there by redirect or realm."""
    origin = URL("http://registry.example/v2/x")
    assert forbidden_redirect(URL(f"http://{host}/latest/meta-data/"), origin)
    with pytest.raises(RedirectRefused):
        check_realm(f"http://{host}/token", origin)
    assert not forbidden_redirect(URL("http://10.1.2.3/blob"), origin)
