"""Authentication-Results (RFC 8601): what the MTA in front of us found out about a mail.

Anyone can write this header, so only the one stamped with the authserv-id named in config is
read, and of those only the topmost (the last one added, by our MTA; RFC 8601 section 5 has
that MTA remove any copy that claims its id). Without a configured id nothing is trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AuthResults", "dmarc_result", "parse", "trusted"]


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str
    results: tuple[tuple[str, str], ...]  # (method, result), e.g. ("dmarc", "fail")

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


def parse(value: str) -> AuthResults | None:
    """One header value; None when it is not well formed enough to read."""
    segments = _split(_strip_comments(value))
    head = segments[0].split()
    if not head:
        return None
    authserv_id = head[0].strip('"').lower()
    results = []
    for resinfo in segments[1:]:
        words = resinfo.strip()
        method, sep, rest = words.partition("=")
        if not sep:
            continue  # "none": no result at all
        method = method.strip().split("/", 1)[0].lower()  # "dkim/1" has a version
        tokens = rest.split()
        if method and tokens:
            results.append((method, tokens[0].strip('"').lower()))
    return AuthResults(authserv_id, tuple(results))


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
