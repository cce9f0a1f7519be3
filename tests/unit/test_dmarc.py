"""core/dmarc.py: DMARC records, identifier alignment and the sender verdict, as pure values."""

from __future__ import annotations

import pytest

from mailgate.core.dmarc import (
    DmarcRecord,
    Evidence,
    aligned,
    decide,
    domain_of,
    organizational_domain,
    parse_record,
    pick_record,
)


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("Mail.Example.COM.", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("alice.github.io", "alice.github.io"),  # a private suffix: alice is her own org
        ("co.uk", "co.uk"),  # a public suffix aligns only with itself
        ("", ""),
    ],
)
def test_organizational_domain(domain: str, org: str):
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "from_domain", "mode", "expected"),
    [
        ("example.com", "example.com", "r", True),
        ("mail.example.com", "example.com", "r", True),
        ("example.com", "news.example.com", "r", True),
        ("mail.example.com", "example.com", "s", False),
        ("EXAMPLE.com.", "example.com", "s", True),
        ("example.net", "example.com", "r", False),
        ("evil-example.com", "example.com", "r", False),
        ("bob.github.io", "alice.github.io", "r", False),  # same public suffix, two owners
        ("example.co.uk", "other.co.uk", "r", False),
        ("", "example.com", "r", False),
    ],
)
def test_alignment(identifier: str, from_domain: str, mode: str, expected: bool):
    assert aligned(identifier, from_domain, mode) is expected


def test_parse_record():
    assert parse_record("v=DMARC1; p=reject; adkim=s; aspf=s; sp=none") == DmarcRecord(
        "reject", "none", "s", "s"
    )
    assert parse_record("v=DMARC1;p=quarantine") == DmarcRecord("quarantine", "quarantine")
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:d@example.com").policy == "none"
    assert parse_record("v=DMARC1; adkim=x; p=none").adkim == "r"  # bad mode: the default
    for not_a_record in ("v=spf1 -all", "p=reject; v=DMARC1", "v=DMARC1; p=bogus", "", "v=DMARC2"):
        assert parse_record(not_a_record) is None


def test_one_record_or_none():
    assert pick_record(["v=spf1 -all", "v=DMARC1; p=reject"]).policy == "reject"
    assert pick_record(["v=DMARC1; p=reject", "v=DMARC1; p=none"]) is None  # RFC 7489 6.6.3
    assert pick_record([]) is None


def test_domain_of():
    assert domain_of("Agent@Sub.Example.COM.") == "sub.example.com"
    assert domain_of("<a@example.com>") == "example.com"
    assert domain_of("") == ""
    assert domain_of("no-at-sign") == "no-at-sign"


REJECT = DmarcRecord("reject", "reject")
STRICT = DmarcRecord("reject", "reject", adkim="s", aspf="s")


@pytest.mark.parametrize(
    ("evidence", "result", "method"),
    [
        # aligned proofs pass, with or without a record
        (Evidence("example.com", dkim_pass=("example.com",)), "pass", "dkim"),
        (Evidence("example.com", REJECT, dkim_pass=("mail.example.com",)), "pass", "dkim"),
        (
            Evidence("example.com", spf_result="pass", spf_domain="bounce.example.com"),
            "pass",
            "spf",
        ),
        # strict records want the very domain
        (Evidence("example.com", STRICT, dkim_pass=("mail.example.com",)), "fail", "dmarc"),
        (
            Evidence("example.com", STRICT, spf_result="pass", spf_domain="b.example.com"),
            "fail",
            "dmarc",
        ),
        # unaligned passes prove nothing
        (
            Evidence(
                "example.com",
                REJECT,
                dkim_pass=("attacker.example",),
                spf_result="pass",
                spf_domain="attacker.example",
            ),
            "fail",
            "dmarc",
        ),
        (Evidence("example.com", dkim_pass=("attacker.example",)), "none", ""),
        # a record and nothing aligned: fail; unless a check could not finish
        (
            Evidence(
                "example.com",
                DmarcRecord("none", "none"),
                spf_result="fail",
                spf_domain="example.com",
            ),
            "fail",
            "dmarc",
        ),
        (
            Evidence("example.com", REJECT, spf_result="temperror", spf_domain="example.com"),
            "none",
            "",
        ),
        (Evidence("example.com", REJECT, incomplete=True), "none", ""),
        # no record: fail only on the domain's own SPF fail
        (Evidence("example.com", spf_result="fail", spf_domain="example.com"), "fail", "spf"),
        (Evidence("example.com", spf_result="softfail", spf_domain="example.com"), "none", ""),
        (Evidence("example.com", spf_result="fail", spf_domain="other.example"), "none", ""),
        (Evidence("example.com"), "none", ""),
        # a record we could not read: only a strictly aligned proof counts
        (Evidence("example.com", record_known=False, dkim_pass=("example.com",)), "pass", "dkim"),
        (
            Evidence("example.com", record_known=False, dkim_pass=("m.example.com",)),
            "none",
            "dmarc",
        ),
        (
            Evidence(
                "example.com", record_known=False, spf_result="fail", spf_domain="example.com"
            ),
            "none",
            "dmarc",
        ),
        (Evidence(""), "none", ""),
    ],
)
def test_decide(evidence: Evidence, result: str, method: str):
    verdict = decide(evidence)
    assert (verdict.result, verdict.method) == (result, method), verdict
    assert verdict.domain == evidence.from_domain
