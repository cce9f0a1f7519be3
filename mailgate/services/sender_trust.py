"""Is the From address of an inbound mail really its sender? The port, and its pure answers.

Two sources of truth. With a trusted MTA in front (`[security] authserv_id`), its topmost
Authentication-Results header (`verdict_from_authres`). Without one, a `SenderVerifier` that
checks SPF, DKIM and DMARC itself (adapters/senderauth.DnsSenderVerifier), or `NoVerifier` when
`verify_sender = "off"`. Only a "pass" lets a mail act as the address in its From.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Protocol

from mailgate.core import authres
from mailgate.core.dmarc import Verdict, domain_of

__all__ = ["NoVerifier", "SenderVerifier", "Verdict", "client_ip", "verdict_from_authres"]


class SenderVerifier(Protocol):
    def verify(
        self, raw: bytes, *, from_addr: str, mail_from: str, helo: str, client_ip: str
    ) -> Verdict:
        """Never raises and never blocks past its own deadline: a verdict, "none" at worst."""
        ...

    def warm(self) -> None:
        """Load what the first check would otherwise load (serve calls it at start)."""
        ...


class NoVerifier:
    """`verify_sender = "off"`: nothing is ever shown, so no From is ever trusted."""

    def verify(
        self, raw: bytes, *, from_addr: str, mail_from: str, helo: str, client_ip: str
    ) -> Verdict:
        return Verdict("none", "", domain_of(from_addr), "sender verification is off")

    def warm(self) -> None:
        return None


def verdict_from_authres(
    headers: Sequence[tuple[str, str]], authserv_id: str, from_addr: str
) -> Verdict:
    """Our MTA's word on this From: "pass" (DMARC pass, or an aligned SPF or DKIM pass),
    "fail" (its DMARC failed), or "none" (no trusted header, or it showed nothing)."""
    domain = domain_of(from_addr)
    found = authres.trusted(headers, authserv_id)
    if found is None:
        return Verdict("none", "authres", domain, "no trusted Authentication-Results")
    if not domain:
        return Verdict("none", "authres", "", "no From domain")
    proof = authres.aligned_pass(found, domain)
    if proof is not None:
        return Verdict("pass", "authres", domain, proof)
    if found.result("dmarc") == "fail":
        return Verdict("fail", "authres", domain, "dmarc=fail")
    return Verdict("none", "authres", domain, "nothing aligned passed")


def client_ip(peer: str) -> str:
    """The IP of an Envelope.peer ("1.2.3.4:25", "::1:25", "[::1]:25"), "" when unknown.
    An IPv4-mapped IPv6 address is given as IPv4, the form SPF records use."""
    host = peer.strip().rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)
