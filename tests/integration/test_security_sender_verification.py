"""Issue 9: SPF, DKIM and DMARC checked by mailgate itself (adapters/senderauth.py), against a
real DNS server on loopback, with mail signed by a real RSA key. And the guarantees that keep
intake moving: answers cached (negative ones too), one deadline per message, a dead resolver
costing nothing."""

from __future__ import annotations

import dkim
import pytest

from mailgate.adapters.senderauth import DnsCache, DnsSenderVerifier
from mailgate.errors import WouldWait
from tests.support.dnsserver import (  # noqa: F401 (dns_server_fixture provides `dns_server`)
    LoopbackDns,
    closed_port,
    dkim_key,
    dns_server_fixture,
    serving,
)

AGENT = "agent@example.com"
GOOD_IP, BAD_IP = "192.0.2.10", "203.0.113.66"
SPF = f"v=spf1 ip4:{GOOD_IP} -all"


class Clock:
    """Monotonic seconds a test can move (cache TTLs, the resolver-down memory)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    return dkim_key()


def mail(from_addr: str = AGENT, body: str = "#status solved\r\n") -> bytes:
    return (
        f"From: Agent <{from_addr}>\r\nTo: support@desk.example\r\n"
        f"Subject: Re: printer\r\nMessage-ID: <m1@{from_addr.split('@')[1]}>\r\n"
        f"Date: Tue, 01 Dec 2026 08:00:00 +0000\r\n\r\n{body}"
    ).encode()


def signed(raw: bytes, pem: bytes, domain: str, selector: str = "sel") -> bytes:
    sig = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        pem,
        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"],
    )
    return sig + raw


def publish_key(dns: LoopbackDns, key: tuple[bytes, str], domain: str) -> None:
    dns.txt(f"sel._domainkey.{domain}", f"v=DKIM1; k=rsa; p={key[1]}")


def check(
    v: DnsSenderVerifier,
    raw: bytes,
    *,
    mail_from: str = AGENT,
    ip: str = GOOD_IP,
    from_addr: str = AGENT,
):
    return v.verify(
        raw, from_addr=from_addr, mail_from=mail_from, helo="mx.example.com", client_ip=ip
    )


def test_aligned_dkim_signature_passes(dns_server: LoopbackDns, key):
    publish_key(dns_server, key, "mail.example.com")
    dns_server.txt("_dmarc.example.com", "v=DMARC1; p=reject")
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    raw = signed(mail(), key[0], "mail.example.com")  # relaxed: a subdomain speaks for it
    verdict = check(v, raw, mail_from="bounce@esp.example.net", ip=BAD_IP)
    assert (verdict.result, verdict.method, verdict.domain) == ("pass", "dkim", "example.com")
    assert ("example.com", "TXT") not in dns_server.queries  # proof enough: SPF not asked

    tampered = signed(mail(), key[0], "mail.example.com").replace(b"solved", b"closed")
    assert check(v, tampered, mail_from="bounce@esp.example.net", ip=BAD_IP).result == "fail"


def test_own_signature_needs_no_more_dns_and_strict_records_refuse_subdomains(
    dns_server: LoopbackDns, key
):
    publish_key(dns_server, key, "example.com")
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    assert check(v, signed(mail(), key[0], "example.com"), ip=BAD_IP).result == "pass"
    assert dns_server.queries == [("sel._domainkey.example.com", "TXT")]

    publish_key(dns_server, key, "mail.strict.example")
    dns_server.txt("_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s")
    raw = signed(mail("agent@strict.example"), key[0], "mail.strict.example")
    verdict = check(v, raw, from_addr="agent@strict.example", ip=BAD_IP)
    assert (verdict.result, verdict.method) == ("fail", "dmarc")


def test_forged_from_without_signature_fails_on_spf(dns_server: LoopbackDns):
    dns_server.txt("example.com", SPF)  # no DMARC record: the domain's own SPF fail decides
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    forged = check(v, mail(), ip=BAD_IP)
    assert (forged.result, forged.method) == ("fail", "spf")
    real = check(v, mail(), ip=GOOD_IP)
    assert (real.result, real.method) == ("pass", "spf")
    # an SPF fail for somebody else's envelope domain says nothing about this From
    dns_server.txt("other.example", SPF)
    assert check(v, mail(), mail_from="x@other.example", ip=BAD_IP).result == "none"


def test_dmarc_reject_and_nothing_aligned_fails(dns_server: LoopbackDns, key):
    dns_server.txt("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:d@example.com")
    dns_server.txt("attacker.example", "v=spf1 +all")
    publish_key(dns_server, key, "attacker.example")
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    # valid signature and SPF pass, both for the attacker's own domain: not aligned
    raw = signed(mail(), key[0], "attacker.example")
    verdict = check(
        v, raw, mail_from="x@attacker.example", ip=BAD_IP, from_addr="agent@sub.example.com"
    )  # the org domain's record applies
    assert (verdict.result, verdict.method, verdict.domain) == ("fail", "dmarc", "sub.example.com")
    assert "p=reject" in verdict.detail
    assert ("_dmarc.sub.example.com", "TXT") in dns_server.queries
    assert ("sel._domainkey.attacker.example", "TXT") not in dns_server.queries  # never aligns


def test_no_records_is_none_and_negative_answers_are_cached(dns_server: LoopbackDns):
    clock = Clock()
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0, clock=clock)
    assert check(v, mail()).result == "none"
    asked = dns_server.queries
    assert ("_dmarc.example.com", "TXT") in asked and ("example.com", "TXT") in asked
    assert check(v, mail()).result == "none"
    assert dns_server.queries == asked  # NXDOMAIN remembered
    clock.now += 3600
    check(v, mail())
    assert len(dns_server.queries) == 2 * len(asked)  # and forgotten once its TTL has run out


def test_second_mail_for_a_domain_asks_nothing(dns_server: LoopbackDns, key):
    publish_key(dns_server, key, "example.com")
    dns_server.txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    dns_server.txt("example.com", SPF)
    clock = Clock()
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0, clock=clock)
    assert check(v, signed(mail(), key[0], "example.com"), ip=BAD_IP).result == "pass"
    assert check(v, mail(), ip=BAD_IP).result == "fail"
    asked = dns_server.queries
    assert check(v, signed(mail(body="again\r\n"), key[0], "example.com")).result == "pass"
    assert check(v, mail(body="again\r\n"), ip=BAD_IP).result == "fail"
    assert check(v, mail(body="again\r\n"), ip=GOOD_IP).result == "pass"
    assert dns_server.queries == asked
    clock.now += 301  # the zone's TTL
    check(v, mail(), ip=BAD_IP)
    assert len(dns_server.queries) > len(asked)


def test_unreachable_resolver_is_none_at_once_and_remembered():
    port = closed_port()
    clock = Clock()
    v = DnsSenderVerifier(resolver=f"127.0.0.1:{port}", timeout=2.0, clock=clock, down_seconds=5.0)
    verdict = check(v, mail())
    assert verdict.result == "none"
    assert "unreachable" in verdict.detail  # refused, not waited out
    # The resolver comes back on that very port: within down_seconds nobody asks it ...
    with serving(port=port, tcp=False) as dns:  # UDP only: that port's TCP may be anyone's
        dns.txt("example.com", SPF)
        assert check(v, mail()).result == "none"
        assert dns.queries == []
        clock.now += 6  # ... after them, it is used again
        assert check(v, mail()).result == "pass"
        assert dns.queries


def test_slow_resolver_costs_one_deadline_not_a_timeout_per_query(dns_server: LoopbackDns, key):
    publish_key(dns_server, key, "example.com")
    dns_server.txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.txt("example.com", SPF)
    dns_server.slow(30)  # far beyond the deadline; released at teardown
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=0.3)
    verdict = check(v, signed(mail(), key[0], "example.com"), ip=BAD_IP)
    assert verdict.result == "none"
    assert "out of time" in verdict.detail
    # DKIM key, DMARC record and SPF were all due; the first used the deadline up, the rest
    # were never asked (a timeout per query would have asked all three, one after another)
    assert dns_server.queries == [("sel._domainkey.example.com", "TXT")]
    # the silent name is remembered: the next mail spends its deadline elsewhere, not there
    check(v, signed(mail(body="again\r\n"), key[0], "example.com"), ip=BAD_IP)
    assert dns_server.queries.count(("sel._domainkey.example.com", "TXT")) == 1
    assert len(dns_server.queries) == 2


def test_truncated_answer_is_retried_over_tcp(key):
    with serving(truncate=True) as dns:
        dns.txt("example.com", SPF, *(f"site-verification={'x' * 200}-{n}" for n in range(3)))
        v = DnsSenderVerifier(resolver=dns.address, timeout=2.0)
        assert check(v, mail()).result == "pass"
        assert ("example.com", "TXT") in dns.tcp_queries


def test_bad_inputs_give_none_not_errors(dns_server: LoopbackDns):
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    assert check(v, mail(), from_addr="").result == "none"
    assert check(v, mail(), ip="not-an-ip").result == "none"
    assert check(v, b"\x00\xff garbage without headers").result == "none"
    assert check(v, mail(), mail_from="", ip="").result == "none"
    with pytest.raises(ValueError, match="dns_resolver"):
        DnsSenderVerifier(resolver="resolver.example:53")


def test_a_failing_dmarc_lookup_never_turns_into_a_fail(dns_server: LoopbackDns):
    dns_server.txt("example.com", SPF)
    dns_server.servfail("_dmarc.example.com")
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    verdict = check(v, mail(), ip=BAD_IP)  # SPF fails, but p= might have been anything
    assert verdict.result == "none"
    # an SPF pass for the From domain itself still shows it (aligned in any mode) ...
    assert check(v, mail(), ip=GOOD_IP).result == "pass"
    # ... one for a subdomain does not: the unknown record might have said aspf=s
    dns_server.txt("bounce.example.com", SPF)
    assert check(v, mail(), mail_from="b@bounce.example.com", ip=GOOD_IP).result == "none"


def test_cache_is_bounded_least_recently_used_first():
    clock = Clock()
    cache = DnsCache(clock, max_entries=2)
    cache.put(("a.example", "TXT"), (b"a",), 300)
    cache.put(("b.example", "TXT"), (), 300)
    assert cache.get(("a.example", "TXT")) == (b"a",)  # a is now the most recent
    cache.put(("c.example", "TXT"), (b"c",), 300)
    assert cache.get(("b.example", "TXT")) is None
    assert cache.get(("a.example", "TXT")) == (b"a",) and cache.get(("c.example", "TXT"))
    clock.now += 301
    assert cache.get(("a.example", "TXT")) is None


def test_cache_only_sends_nothing_and_gives_the_same_verdicts_once_cached(
    dns_server: LoopbackDns, key
):
    """An SMTP front checks small mails on its event loop within cache_only(): a check that
    would send a query raises WouldWait and keeps nothing; one the cache answers whole gives
    what the check without it gives."""
    publish_key(dns_server, key, "example.com")
    dns_server.txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    dns_server.txt("example.com", SPF)
    v = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0, clock=Clock())
    cases = [
        (signed(mail(), key[0], "example.com"), BAD_IP),
        (mail(), BAD_IP),
        (mail(), GOOD_IP),
    ]
    for raw, ip in cases:
        with v.cache_only(), pytest.raises(WouldWait):
            check(v, raw, ip=ip)
    assert dns_server.queries == []
    online = [check(v, raw, ip=ip) for raw, ip in cases]
    asked = dns_server.queries
    with v.cache_only():
        assert [check(v, raw, ip=ip) for raw, ip in cases] == online
    assert dns_server.queries == asked
    assert [o.result for o in online] == ["pass", "fail", "pass"]
