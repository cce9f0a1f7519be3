"""core/authres.py: Authentication-Results (RFC 8601) read only from our own MTA."""

from __future__ import annotations

import pytest

from mailgate.core.authres import aligned_pass, dmarc_result, parse, trusted
from mailgate.services.sender_trust import NoVerifier, client_ip, verdict_from_authres

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


def test_properties_are_kept():
    found = parse('mx.example.com; spf=pass (ok) smtp.mailfrom=bounce@Mail.A.example;'
                  ' dkim=pass reason="good; sig" header.d=a.example header.s=sel;'
                  ' dmarc=pass header.from = a.example')
    assert found is not None
    spf, dkim, dmarc = found.details
    assert spf.prop("smtp.mailfrom") == "bounce@Mail.A.example"
    assert (dkim.prop("reason"), dkim.prop("header.d"), dkim.prop("header.s")) == (
        "good; sig", "a.example", "sel")
    assert dmarc.prop("header.from") == "a.example" and dmarc.prop("missing") == ""


def _ar(results: str) -> list[tuple[str, str]]:
    return [("Authentication-Results", f"{MTA}; {results}")]


@pytest.mark.parametrize(
    ("results", "from_domain", "proof"),
    [
        ("dmarc=pass header.from=a.example", "a.example", "dmarc=pass header.from=a.example"),
        ("dmarc=pass", "a.example", "dmarc=pass header.from=a.example"),
        ("dmarc=pass header.from=other.example", "a.example", None),  # not about this From
        ("spf=pass smtp.mailfrom=bounce@mail.a.example", "a.example",
         "spf=pass smtp.mailfrom=mail.a.example"),
        ("spf=pass smtp.helo=mx.a.example", "a.example", "spf=pass smtp.mailfrom=mx.a.example"),
        ("spf=pass smtp.mailfrom=a.example.evil.test", "a.example", None),
        ("spf=fail smtp.mailfrom=a.example", "a.example", None),
        ("dkim=pass header.d=news.a.example", "a.example", "dkim=pass header.d=news.a.example"),
        ("dkim=pass header.i=@a.example", "a.example", "dkim=pass header.d=a.example"),
        ("dkim=pass header.d=evil.example; dkim=pass header.d=a.example", "a.example",
         "dkim=pass header.d=a.example"),
        ("dkim=fail header.d=a.example; spf=softfail smtp.mailfrom=a.example", "a.example", None),
        ("dkim=pass header.d=bob.github.io", "alice.github.io", None),
        ("dkim=pass header.d=a.example", "", None),
    ],
)
def test_aligned_pass(results: str, from_domain: str, proof: str | None):
    found = trusted(_ar(results), MTA)
    assert found is not None and aligned_pass(found, from_domain) == proof


def test_verdict_from_authres():
    forged = [("Authentication-Results", "mx.elsewhere.example; dmarc=pass")]
    assert verdict_from_authres(forged, MTA, "x@a.example").result == "none"
    assert verdict_from_authres(_ar("dmarc=pass"), "", "x@a.example").result == "none"
    ok = verdict_from_authres(_ar("dkim=pass header.d=a.example"), MTA, "Agent@A.example")
    assert (ok.result, ok.method, ok.domain) == ("pass", "authres", "a.example")
    assert verdict_from_authres(_ar("dmarc=fail"), MTA, "x@a.example").result == "fail"
    assert verdict_from_authres(_ar("spf=pass smtp.mailfrom=b.example"), MTA,
                                "x@a.example").result == "none"
    assert verdict_from_authres(_ar("dmarc=pass"), MTA, "").result == "none"


def test_client_ip_and_no_verifier():
    assert client_ip("192.0.2.1:25") == "192.0.2.1"
    assert client_ip("2001:db8::1:4242") == "2001:db8::1"
    assert client_ip("[2001:db8::1]:25") == "2001:db8::1"
    assert client_ip("::ffff:192.0.2.7:25") == "192.0.2.7"
    assert client_ip("") == client_ip("unix:socket") == ""
    off = NoVerifier().verify(b"", from_addr="a@b.example", mail_from="", helo="", client_ip="")
    assert (off.result, off.domain) == ("none", "b.example")
