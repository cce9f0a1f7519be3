"""SPF, DKIM and DMARC checked by us, over DNS: `DnsSenderVerifier` (the SenderVerifier port).

The libraries decide (dkimpy: signatures; pyspf: SPF; core.dmarc: the DMARC verdict); this module
only feeds them DNS answers, under three rules that keep intake from ever stalling on DNS:
- every answer is cached per (name, type) for its TTL, negative answers too (bounded, LRU);
- one deadline per message (`timeout`, 2 s by default) is shared by every query it makes;
  a query that runs out of it, or a resolver that refuses the connection, ends the DNS work of
  that message at once: no further query is tried and whatever was not shown is "none";
- a refused resolver is remembered as down for `down_seconds`, so the mail right behind does
  not pay for it either.
Queries go over UDP on a *connected* socket (so an ICMP "port unreachable" is an immediate
error, not a wait) with dnspython's wire code, then TCP when the answer is truncated.

Within `DnsSenderVerifier.cache_only()` (an SMTP front checks a small mail on its event loop,
no thread) a check that would send a query raises WouldWait instead, and nothing it found is
kept: the caller runs it again where waiting is allowed. A check the cache answers whole gives
the verdict it would give anyway (same cache, same code; only the question is not sent).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, NoReturn

import dkim
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.resolver
import spf

from mailgate import logs
from mailgate.core.dmarc import (
    Evidence,
    Verdict,
    aligned,
    decide,
    domain_of,
    organizational_domain,
    pick_record,
)
from mailgate.core.limits import body_start
from mailgate.errors import WouldWait

__all__ = ["DnsCache", "DnsSenderVerifier", "parse_resolver"]

MAX_SIGNATURES = 5  # DKIM signatures tried per message; more is abuse, not mail
MIN_TTL, MAX_TTL = 30.0, 3600.0  # what we keep a positive answer for, whatever the zone says
NEGATIVE_MIN_TTL, NEGATIVE_MAX_TTL = 60.0, 900.0
SLOW_TTL = 30.0  # a name that did not answer in time is not asked again for this long
_SLOW: tuple[Any, ...] = (object(),)  # the cache's mark for such a name (compared by identity)


class DnsUnavailable(Exception):
    """No more DNS for this message: the resolver is down, or its deadline has passed."""


class DnsTempError(Exception):
    """One query failed (SERVFAIL, a malformed answer): that check is unknown, not the rest."""


# Set by DnsSenderVerifier.cache_only(): checks in this context send no query (a ContextVar:
# a thread the loop hands work to does not inherit it once the block is left).
_CACHE_ONLY: ContextVar[bool] = ContextVar("mailgate_dns_cache_only", default=False)


def parse_resolver(spec: str) -> list[tuple[str, int]]:
    """ "host:port", "[v6]:port" or "host" (port 53) -> [(ip, port)]; "" -> the system's
    resolvers from /etc/resolv.conf. The host must be an IP address: no DNS to find DNS."""
    spec = spec.strip()
    if not spec:
        try:
            system = dns.resolver.Resolver(configure=True)
        except dns.exception.DNSException:
            return []  # no resolv.conf: every verdict is "none" (logged by the caller)
        return [(str(ns), 53) for ns in system.nameservers]
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    else:
        host, port = spec, "53"
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        number = int(port)
    except (OSError, ValueError):
        raise ValueError(f"dns_resolver {spec!r}: expected IP:PORT, e.g. 127.0.0.1:53") from None
    if not 0 < number < 65536:
        raise ValueError(f"dns_resolver {spec!r}: port out of range")
    return [(host, number)]


class DnsCache:
    """(name, type) -> answers until their TTL runs out; empty answers (NXDOMAIN, no data)
    are cached too. Bounded: the least recently used entries go first."""

    def __init__(self, clock: Callable[[], float], max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, tuple[Any, ...]]] = OrderedDict()
        self._lock = threading.Lock()  # ingest may verify from several threads

    def get(self, key: tuple[str, str]) -> tuple[Any, ...] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: tuple[str, str], answers: tuple[Any, ...], ttl: float) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl, answers)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class _MessageDns:
    """The DNS of one message: the cache first, then the resolver until the deadline."""

    def __init__(self, verifier: DnsSenderVerifier, deadline: float) -> None:
        self._v = verifier
        self._deadline = deadline
        self.stopped = ""  # why the DNS work of this message ended early ("" = it did not)
        self.temp_errors = 0
        self.cache_only = _CACHE_ONLY.get()
        self.needed_network = False  # a query was due (cache_only): the checks count for nothing

    def query(self, name: str, rdtype: str) -> tuple[Any, ...]:
        key = (name.lower().rstrip("."), rdtype)
        cached = self._v.cache.get(key)
        if cached is _SLOW:
            self.temp_errors += 1
            raise DnsTempError(f"{key[0]} timed out recently")
        if cached is not None:
            return cached
        if self.stopped:
            raise DnsUnavailable(self.stopped)
        if self._v.resolver_down():
            self._stop("resolver down")
        remaining = self._deadline - self._v.clock()
        if remaining <= 0:
            self._stop("out of time")
        if self.cache_only:  # (a library may swallow this; `verify` looks at the mark)
            self.needed_network = True
            raise WouldWait(f"DNS: {key[0]} {rdtype} is not in the cache")
        try:
            answers, ttl = self._v.ask(key[0], rdtype, remaining)
        except DnsTempError:
            self.temp_errors += 1
            raise
        except dns.exception.Timeout:
            if remaining >= self._v.timeout / 2:  # it had a fair chance: remember the silence
                self._v.cache.put(key, _SLOW, SLOW_TTL)
            self._stop("out of time")
        except OSError as exc:
            self._v.mark_down()
            self._stop(f"resolver unreachable: {exc.strerror or exc}")
        self._v.cache.put(key, answers, ttl)
        return answers

    def _stop(self, why: str) -> NoReturn:
        self.stopped = why
        raise DnsUnavailable(why)

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(r.strings) for r in self.query(name, "TXT")]


class _Spf(spf.query):
    """pyspf's query with its DNS from our cache, deadline and resolver: `dns` is the one
    method every lookup of pyspf goes through, so the library's logic stays whole."""

    def __init__(self, lookups: _MessageDns, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lookups = lookups

    def dns(
        self, name: str, qtype: str, cnames: Any = None, ignore_void: bool = False
    ) -> list[Any]:
        name = str(name).rstrip(".")
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # as pyspf does: an invalid name has no records
        try:
            answers = self._lookups.query(name, qtype)
        except (DnsUnavailable, DnsTempError) as exc:
            raise spf.TempError(f"DNS {exc}") from None
        result = [_spf_value(qtype, r) for r in answers]
        if not result and not ignore_void:
            self.void_lookups += 1  # RFC 7208 4.6.4, as pyspf's own dns() counts them
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _spf_value(qtype: str, rdata: Any) -> Any:
    """An rdata in the shape pyspf's dnspython driver hands over."""
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(True))
    if qtype == "PTR":
        return rdata.target.to_text(True)
    return rdata.strings  # TXT, SPF


class _CacheOnly:
    """The context of DnsSenderVerifier.cache_only() (a class: a generator-made context
    manager cost twice as much, and an SMTP front enters one per mail)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _CACHE_ONLY.set(True)

    def __exit__(self, *exc: object) -> None:
        _CACHE_ONLY.reset(self._token)


class DnsSenderVerifier:
    """SPF, DKIM and DMARC over DNS, within `timeout` seconds of DNS per message."""

    def __init__(
        self,
        resolver: str,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        cache_entries: int = 4096,
        down_seconds: float = 5.0,
    ) -> None:
        self.servers = parse_resolver(resolver)
        self.timeout = timeout
        self.clock = clock
        self.cache = DnsCache(clock, cache_entries)
        self.down_seconds = down_seconds
        self._down_until = 0.0

    @staticmethod
    def cache_only() -> _CacheOnly:
        """Checks made within send no DNS query: WouldWait instead (see the docstring)."""
        return _CacheOnly()

    def warm(self) -> None:
        """Load the public suffix list now (~0.3 s of CPU): `serve` calls this at start, so
        the first mail needing a DMARC lookup does not stall every session behind it."""
        organizational_domain("example.com")

    # -- the resolver ------------------------------------------------------------------
    def resolver_down(self) -> bool:
        return not self.servers or self.clock() < self._down_until

    def mark_down(self) -> None:
        self._down_until = self.clock() + self.down_seconds

    def ask(self, name: str, rdtype: str, timeout: float) -> tuple[tuple[Any, ...], float]:
        """One question to the resolver: (answers, ttl to cache them for). Raises OSError when
        no server can be reached, dns.exception.Timeout, or DnsTempError."""
        try:
            query = dns.message.make_query(dns.name.from_text(name), rdtype)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return (), NEGATIVE_MAX_TTL  # a name no zone can hold: nothing there
        expiry = time.monotonic() + timeout
        error: OSError = ConnectionRefusedError("no DNS server configured")
        for host, port in self.servers:
            try:
                response = self._exchange(query, host, port, expiry)
            except OSError as exc:
                error = exc  # refused or unreachable: the next server, if any
                continue
            except dns.exception.Timeout:
                raise
            except dns.exception.DNSException as exc:  # an answer we cannot read
                raise DnsTempError(f"{type(exc).__name__}: {exc}") from None
            return _answers(response)
        raise error

    @staticmethod
    def _exchange(query: dns.message.Message, host: str, port: int, expiry: float) -> Any:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # dnspython waits with select, up to the expiry
            sock.connect((host, port))  # so a closed port fails now, not at the deadline
            response = dns.query.udp(
                query,
                host,
                port=port,
                timeout=max(expiry - time.monotonic(), 0.001),
                sock=sock,
                ignore_unexpected=True,
            )
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(
                query, host, port=port, timeout=max(expiry - time.monotonic(), 0.001)
            )
        return response

    # -- the checks ----------------------------------------------------------------------
    def verify(
        self, raw: bytes, *, from_addr: str, mail_from: str, helo: str, client_ip: str
    ) -> Verdict:
        domain = domain_of(from_addr)
        if not domain:
            return Verdict("none", "", "", "no From domain")
        lookups = _MessageDns(self, self.clock() + self.timeout)
        try:
            verdict = self._verify(lookups, raw, domain, mail_from, helo, client_ip)
        except Exception as exc:  # a library bug must not cost the mail: unproven, logged
            if lookups.needed_network:
                raise WouldWait(f"DNS for {domain}") from None
            logs.warning("sender_trust.error", domain=domain, error=repr(exc)[:300])
            return Verdict("none", "", domain, f"verification error: {type(exc).__name__}")
        if lookups.needed_network:
            raise WouldWait(f"DNS for {domain}")
        if verdict.result != "pass" and lookups.stopped:
            return Verdict("none", verdict.method, domain, f"dns {lookups.stopped}")
        return verdict

    def _verify(
        self,
        lookups: _MessageDns,
        raw: bytes,
        domain: str,
        mail_from: str,
        helo: str,
        client_ip: str,
    ) -> Verdict:
        signers = self._dkim(lookups, raw, domain)
        if domain in signers:  # the From's own signature: aligned in any mode, proof enough
            return decide(Evidence(domain, dkim_pass=signers))
        record, known = self._dmarc_record(lookups, domain)  # adkim=s may refuse a subdomain
        early = decide(Evidence(domain, record, known, dkim_pass=signers))
        if early.result == "pass":
            return early
        spf_result, spf_domain = self._spf(lookups, mail_from, helo, client_ip)
        # Without the client's IP (IMAP, `deliver`) SPF was never asked: that proves nothing.
        incomplete = bool(lookups.stopped or lookups.temp_errors or not client_ip)
        return decide(
            Evidence(
                domain,
                record,
                known,
                dkim_pass=signers,
                spf_result=spf_result,
                spf_domain=spf_domain,
                incomplete=incomplete,
            )
        )

    def _dkim(self, lookups: _MessageDns, raw: bytes, domain: str) -> tuple[str, ...]:
        """d= of the signatures that verified, among those that could align with From."""

        def dnsfunc(name: Any, timeout: float = 0) -> bytes | None:
            qname = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
            try:
                found = lookups.txt(qname)
            except (DnsUnavailable, DnsTempError) as exc:
                raise dkim.DnsTimeoutError(str(exc)) from None
            return found[0] if found else None

        if b"dkim-signature" not in raw[: body_start(raw)].lower():
            return ()  # nothing to check: dkimpy would still split the whole mail in lines
        try:
            checker = dkim.DKIM(raw, minkey=1024, timeout=self.timeout)
        except dkim.DKIMException:
            return ()  # unparseable headers: no signature can be shown to hold
        passed: list[str] = []
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        for idx in range(min(count, MAX_SIGNATURES)):
            if lookups.stopped:
                break
            try:
                prep = checker.verify_headerprep(idx)
                if not prep:
                    continue
                sig, include_headers, sigheaders = prep
                signer = sig[b"d"].decode("ascii", "replace").lower()
                if not aligned(signer, domain):
                    continue  # could never speak for the From: spare the DNS
                if checker.verify_sig(sig, include_headers, sigheaders[idx], dnsfunc):
                    passed.append(signer)
            except dkim.DKIMException:
                continue  # a malformed signature proves nothing; the next one may
        return tuple(passed)

    def _dmarc_record(self, lookups: _MessageDns, domain: str) -> tuple[Any, bool]:
        """(the DMARC record, known?): _dmarc.DOMAIN, then the organisational domain's."""
        names = [domain]
        org = _organizational_domain(domain)
        if org != domain:
            names.append(org)
        for name in names:
            try:
                texts = lookups.txt(f"_dmarc.{name}")
            except (DnsUnavailable, DnsTempError):
                return None, False
            record = pick_record([t.decode("utf-8", "replace") for t in texts])
            if record is not None:
                return record, True
        return None, True

    def _spf(
        self, lookups: _MessageDns, mail_from: str, helo: str, client_ip: str
    ) -> tuple[str, str]:
        """(pyspf's result, the domain it speaks for): MAIL FROM's, or HELO's for <>."""
        identity = domain_of(mail_from) if mail_from else helo.strip().rstrip(".").lower()
        if not client_ip or not identity or lookups.stopped:
            return "none", identity
        try:
            checker = _Spf(lookups, i=client_ip, s=mail_from, h=helo, timeout=self.timeout)
            result, _code, _why = checker.check()
        except (ValueError, spf.PermError, spf.TempError):
            return "none", identity  # a bad client IP or an unusable record shows nothing
        return str(result), identity


# The public suffix list's answer for a From domain, kept: most mail comes from a few domains,
# and the lookup (a walk of the list's labels) costs more than the rest of a cached DMARC check.
_organizational_domain = lru_cache(maxsize=4096)(organizational_domain)


def _answers(response: dns.message.Message) -> tuple[tuple[Any, ...], float]:
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsTempError(dns.rcode.to_text(rcode))
    try:
        chain = response.resolve_chaining()
    except dns.exception.DNSException as exc:
        raise DnsTempError(f"malformed answer: {exc}") from None
    if chain.answer is None:
        ttl = min(max(float(chain.minimum_ttl), NEGATIVE_MIN_TTL), NEGATIVE_MAX_TTL)
        return (), ttl
    return tuple(chain.answer), min(max(float(chain.minimum_ttl), MIN_TTL), MAX_TTL)
