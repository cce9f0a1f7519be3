"""core/authres.py: Authentication-Results (RFC 8601) read only from our own MTA."""

from __future__ import annotations

import pytest

from mailgate.core.authres import dmarc_result, parse, trusted

MTA = "mx.example.com"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example.com; dmarc=fail (p=reject dis=none) header.from=x.example",
         ("mx.example.com", (("dmarc", "fail"),))),
        ("MX.Example.COM 1; spf=pass smtp.mailfrom=a.example;\r\n dkim=pass header.d=a.example;"
         " dmarc=pass header.from=a.example",
         ("mx.example.com", (("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")))),
        ("mx.example.com (comment; with=semicolons); dmarc=fail", ("mx.example.com",
                                                                  (("dmarc", "fail"),))),
        ('mx.example.com; dkim/1=pass reason="a; b=c"; dmarc = none',
         ("mx.example.com", (("dkim", "pass"), ("dmarc", "none")))),
        ("mx.example.com; none", ("mx.example.com", ())),
    ],
)
def test_parse(value: str, expected: tuple[str, tuple[tuple[str, str], ...]]):
    found = parse(value)
    assert found is not None and (found.authserv_id, found.results) == expected


def test_garbage_is_none_not_an_error():
    for value in ("", "   ", "(only a comment)", ";;;", '"unterminated'):
        result = parse(value)
        assert result is None or result.results == ()


def test_only_our_mta_and_only_its_topmost_copy_count():
    ours_fail = ("Authentication-Results", f"{MTA}; dmarc=fail header.from=a.example")
    ours_pass = ("Authentication-Results", f"{MTA}; dmarc=pass header.from=a.example")
    theirs = ("Authentication-Results", "mx.elsewhere.example; dmarc=fail")
    assert dmarc_result([theirs], MTA) is None
    assert dmarc_result([theirs, ours_fail], MTA) == "fail"
    assert dmarc_result([ours_fail, ours_pass], MTA) == "fail"  # the sender's copy sits below
    assert dmarc_result([ours_pass, ours_fail], MTA) == "pass"
    assert dmarc_result([ours_fail], "") is None  # nothing trusted without a configured id
    assert trusted([("Subject", "x"), ours_pass], MTA.upper()) is not None
    assert dmarc_result([("Authentication-Results", f"{MTA}; spf=pass")], MTA) is None
