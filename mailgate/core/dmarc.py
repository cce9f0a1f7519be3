"""DMARC (RFC 7489) as pure decisions: the record, identifier alignment and the verdict.

Is the From address really who sent the mail? It is when a DKIM signature or an SPF check that
passed speaks for a domain *aligned* with the From domain (relaxed: same organisational domain;
strict: the very same domain), or when the domain's DMARC record says so. The organisational
domain comes from the Public Suffix List shipped inside `publicsuffixlist` (no download, no I/O
after it is loaded once): "a.example.co.uk" -> "example.co.uk", and "x.github.io" stays itself,
which the naive "same domain or a subdomain" rule would get wrong in both directions.

Verdicts (what `decide` returns):
- "pass": an aligned DKIM or SPF pass (with or without a DMARC record).
- "fail": a DMARC record exists and nothing aligned passed (whatever its p=; p only says what the
  owner wants done, the From is unproven either way). Without a record: "fail" only when SPF for
  an *aligned* envelope domain says "fail" (the domain itself lists who may send) and no aligned
  DKIM passed. A softfail, neutral or unaligned SPF fail proves nothing: "none".
- "none": nothing could be shown (no records, no client IP), or a check could not finish
  (temporary DNS error, out of time): an unfinished check never turns into a "fail".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from publicsuffixlist import PublicSuffixList

__all__ = [
    "DmarcRecord",
    "Evidence",
    "Verdict",
    "aligned",
    "decide",
    "domain_of",
    "organizational_domain",
    "parse_record",
    "pick_record",
]


@dataclass(frozen=True)
class Verdict:
    result: str  # "pass" | "fail" | "none"
    method: str  # "dmarc" | "spf" | "dkim" | "authres" | ""
    domain: str  # the From domain the verdict is about ("" when there is none)
    detail: str  # why, for the log: "dkim=pass header.d=a.example", "p=reject", ...


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # "none" | "quarantine" | "reject"
    subdomain_policy: str  # sp=, defaults to p=
    adkim: str = "r"  # "r" relaxed | "s" strict
    aspf: str = "r"


@dataclass(frozen=True)
class Evidence:
    """What the checks found for one message; gathered by an adapter, judged here."""

    from_domain: str
    record: DmarcRecord | None = None
    record_known: bool = True  # False: the DMARC lookup failed (temporary error, no time left)
    dkim_pass: tuple[str, ...] = ()  # d= of every signature that verified
    spf_result: str = "none"  # pyspf's: pass fail softfail neutral none permerror temperror
    spf_domain: str = ""  # the identity SPF checked: MAIL FROM's domain, or HELO for <>
    incomplete: bool = False  # a check could not finish (DNS error, out of time)


_POLICIES = ("none", "quarantine", "reject")


def domain_of(address: str) -> str:
    """'Agent <a@Sub.Example.COM.>' style leftovers aside: the lower-cased domain, or ''."""
    domain = address.strip().strip("<>").rpartition("@")[2]
    return domain.strip().rstrip(".").lower()


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # parsed once, on first use: `deliver` pays only if it checks


def organizational_domain(domain: str) -> str:
    """The registrable domain ("a.b.example.co.uk" -> "example.co.uk"); a public suffix or a
    malformed name is its own organisational domain, so it aligns only with itself."""
    name = domain.strip().rstrip(".").lower()
    if not name:
        return ""
    try:
        found = _psl().privatesuffix(name)
    except (ValueError, UnicodeError):
        found = None
    return found or name


def aligned(identifier: str, from_domain: str, mode: str = "r") -> bool:
    """RFC 7489 3.1: strict = identical names, relaxed = same organisational domain."""
    a = identifier.strip().rstrip(".").lower()
    b = from_domain.strip().rstrip(".").lower()
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def _tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


def parse_record(text: str) -> DmarcRecord | None:
    """One TXT string; None unless it is a DMARC1 record (v= first, RFC 7489 6.4)."""
    head, _, _ = text.strip().partition(";")
    key, sep, value = head.partition("=")
    if not sep or key.strip().lower() != "v" or value.strip() != "DMARC1":
        return None
    tags = _tags(text)
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        if "rua" not in tags:
            return None  # 6.6.3: no valid p= and nowhere to report -> no record
        policy = "none"
    sub = tags.get("sp", "").lower()
    mode = {"r": "r", "s": "s"}
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sub if sub in _POLICIES else policy,
        adkim=mode.get(tags.get("adkim", "r").lower(), "r"),
        aspf=mode.get(tags.get("aspf", "r").lower(), "r"),
    )


def pick_record(texts: Sequence[str]) -> DmarcRecord | None:
    """The one DMARC record among a name's TXT strings; none, or more than one, is no record
    (RFC 7489 6.6.3)."""
    records = [r for r in (parse_record(t) for t in texts) if r is not None]
    return records[0] if len(records) == 1 else None


def decide(ev: Evidence) -> Verdict:
    """The verdict for one message's evidence (see the module docstring)."""
    domain = ev.from_domain
    if not domain:
        return Verdict("none", "", "", "no From domain")
    record = ev.record
    # An unknown record might be strict: then only strict alignment is safe to count.
    dkim_mode = record.adkim if record else ("r" if ev.record_known else "s")
    spf_mode = record.aspf if record else ("r" if ev.record_known else "s")
    for d in ev.dkim_pass:
        if aligned(d, domain, dkim_mode):
            return Verdict("pass", "dkim", domain, f"dkim=pass header.d={d}")
    spf_aligned = aligned(ev.spf_domain, domain, spf_mode)
    if ev.spf_result == "pass" and spf_aligned:
        return Verdict("pass", "spf", domain, f"spf=pass smtp.mailfrom={ev.spf_domain}")
    if ev.incomplete or ev.spf_result == "temperror":
        return Verdict("none", "", domain, f"checks incomplete, spf={ev.spf_result}")
    if record is not None:
        detail = f"dmarc=fail p={record.policy} sp={record.subdomain_policy} spf={ev.spf_result}"
        return Verdict("fail", "dmarc", domain, detail)
    if not ev.record_known:
        return Verdict("none", "dmarc", domain, "dmarc record unknown (temporary error)")
    if ev.spf_result == "fail" and spf_aligned:
        return Verdict("fail", "spf", domain, f"spf=fail smtp.mailfrom={ev.spf_domain}")
    return Verdict("none", "", domain, f"no dmarc record, spf={ev.spf_result}")
