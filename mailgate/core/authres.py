"""Authentication-Results (RFC 8601): what the MTA in front of us found out about a mail.

Anyone can write this header, so only the one stamped with the authserv-id named in config is
read, and of those only the topmost (the last one added, by our MTA; RFC 8601 section 5 has
that MTA remove any copy that claims its id). Without a configured id nothing is trusted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailgate.core.dmarc import aligned, domain_of

__all__ = ["AuthResults", "Result", "aligned_pass", "dmarc_result", "parse", "trusted"]


@dataclass(frozen=True)
class Result:
    method: str  # "spf", "dkim", "dmarc", ... (version dropped)
    result: str  # "pass", "fail", ...
    properties: tuple[tuple[str, str], ...] = ()  # ("smtp.mailfrom", "a.example"), lower keys

    def prop(self, name: str) -> str:
        return next((v for k, v in self.properties if k == name), "")


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str
    results: tuple[tuple[str, str], ...]  # (method, result), e.g. ("dmarc", "fail")
    details: tuple[Result, ...] = ()  # the same results, with their properties

    def result(self, method: str) -> str | None:
        return next((r for m, r in self.results if m == method), None)


def _strip_comments(value: str) -> str:
    """Remove (nested) comments outside quoted strings; keep quoted strings whole."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split(value: str) -> list[str]:
    """Split on ';' outside quoted strings."""
    parts, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


# ptype.property=value (RFC 8601 2.2), or reason=value; the value may be a quoted string.
_PROP = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s"]+)')


def _properties(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v.strip('"')) for k, v in _PROP.findall(text))


def parse(value: str) -> AuthResults | None:
    """One header value; None when it is not well formed enough to read."""
    segments = _split(_strip_comments(value))
    head = segments[0].split()
    if not head:
        return None
    authserv_id = head[0].strip('"').lower()
    results, details = [], []
    for resinfo in segments[1:]:
        words = resinfo.strip()
        method, sep, rest = words.partition("=")
        if not sep:
            continue  # "none": no result at all
        method = method.strip().split("/", 1)[0].lower()  # "dkim/1" has a version
        tokens = rest.split(None, 1)
        if method and tokens:
            result = tokens[0].strip('"').lower()
            results.append((method, result))
            props = _properties(tokens[1]) if len(tokens) > 1 else ()
            details.append(Result(method, result, props))
    return AuthResults(authserv_id, tuple(results), tuple(details))


def trusted(headers: Sequence[tuple[str, str]], authserv_id: str) -> AuthResults | None:
    """The topmost Authentication-Results stamped by our MTA, or None."""
    wanted = authserv_id.strip().lower()
    if not wanted:
        return None
    for name, value in headers:
        if name.strip().lower() != "authentication-results":
            continue
        parsed = parse(value)
        if parsed is not None and parsed.authserv_id == wanted:
            return parsed
    return None


def dmarc_result(headers: Sequence[tuple[str, str]], authserv_id: str) -> str | None:
    """'pass', 'fail', 'none', ... as our MTA found it; None when it said nothing we trust."""
    found = trusted(headers, authserv_id)
    return found.result("dmarc") if found is not None else None


def _identity(value: str) -> str:
    """A property value as a domain: "user@a.example" and "@a.example" give "a.example"."""
    return domain_of(value) if "@" in value else value.strip().rstrip(".").lower()


def aligned_pass(found: AuthResults, from_domain: str) -> str | None:
    """What shows the mail came from `from_domain`, as "method=pass prop=value", or None.

    DMARC pass (for that From domain, when the MTA names it), or an SPF pass whose
    smtp.mailfrom (smtp.helo for the null sender) or a DKIM pass whose header.d (header.i)
    aligns with it. Relaxed alignment: the header carries no adkim/aspf, and our MTA applied
    the domain's own DMARC policy already when it says dmarc=."""
    domain = from_domain.strip().rstrip(".").lower()
    if not domain:
        return None
    for r in found.details:
        if r.result != "pass":
            continue
        if r.method == "dmarc":
            named = _identity(r.prop("header.from"))
            if not named or named == domain:
                return f"dmarc=pass header.from={named or domain}"
        elif r.method == "spf":
            who = r.prop("smtp.mailfrom") or r.prop("smtp.helo")
            if aligned(_identity(who), domain):
                return f"spf=pass smtp.mailfrom={_identity(who)}"
        elif r.method == "dkim":
            signer = _identity(r.prop("header.d") or r.prop("header.i"))
            if aligned(signer, domain):
                return f"dkim=pass header.d={signer}"
    return None
