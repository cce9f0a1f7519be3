"""A real DNS server on 127.0.0.1 for the sender-verification tests (dnslib), UDP and TCP on
one port. It serves the records a test gives it, counts the questions it is asked (to prove a
cache), and can hold its answers back for a while (a slow resolver).

    dns_server.txt("example.com", "v=spf1 ip4:192.0.2.1 -all")
    verifier = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

__all__ = ["LoopbackDns", "closed_port", "dns_server_fixture", "serving"]


class _Quiet(DNSLogger):
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data")


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.records: dict[str, list[RR]] = {}
        self.asked: list[tuple[str, str, str]] = []  # (name, type, "udp" | "tcp")
        self.delay = 0.0
        self.broken: set[str] = set()  # names answered with SERVFAIL
        self.released = threading.Event()  # set at teardown: held answers go at once
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.asked.append((qname, qtype, handler.protocol))
            delay = self.delay
            found = list(self.records.get(qname, []))
            broken = qname in self.broken
        if delay:
            self.released.wait(delay)  # simulates a slow upstream, not a synchronisation
        reply = request.reply()
        if broken:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if not found:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in found:
            if QTYPE[rr.rtype] == qtype:
                reply.add_answer(rr)
        return reply


class LoopbackDns:
    """The zone and the counters of one running server (see the module docstring)."""

    def __init__(self, zone: _Zone, port: int) -> None:
        self._zone = zone
        self.port = port
        self.address = f"127.0.0.1:{port}"

    def txt(self, name: str, *texts: str, ttl: int = 300) -> None:
        for text in texts:
            data = text.encode()
            chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
            self._add(name, RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=ttl))

    def a(self, name: str, ip: str, ttl: int = 300) -> None:
        self._add(name, RR(name, QTYPE.A, rdata=A(ip), ttl=ttl))

    def _add(self, name: str, rr: RR) -> None:
        with self._zone.lock:
            self._zone.records.setdefault(name.rstrip(".").lower(), []).append(rr)

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Every (name, type) asked so far, in order."""
        with self._zone.lock:
            return [(name, qtype) for name, qtype, _ in self._zone.asked]

    @property
    def tcp_queries(self) -> list[tuple[str, str]]:
        with self._zone.lock:
            return [(name, qtype) for name, qtype, proto in self._zone.asked if proto == "tcp"]

    def servfail(self, name: str) -> None:
        """Answer SERVFAIL for this name (an upstream failure)."""
        with self._zone.lock:
            self._zone.broken.add(name.rstrip(".").lower())

    def slow(self, seconds: float) -> None:
        """Hold every answer back this long from now on."""
        with self._zone.lock:
            self._zone.delay = seconds


def closed_port() -> int:
    """A loopback UDP port nobody listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Truncating(DNSHandler):
    """Over UDP, answers past the classic 512 bytes come back empty with TC set (and, as
    real servers do, the question: dnslib's own truncate() drops it)."""

    def get_reply(self, data: bytes) -> bytes:
        reply = super().get_reply(data)
        if self.protocol == "udp" and len(reply) > 512:
            cut = DNSRecord.parse(data).reply()
            cut.header.tc = 1
            return cut.pack()
        return reply


def _start(
    zone: _Zone, port: int = 0, truncate: bool = False, tcp: bool = True
) -> tuple[DNSServer, ...]:
    """UDP on a free port (or the one asked for), TCP on the same one; another free port if
    TCP's is taken."""
    handler = _Truncating if truncate else DNSHandler
    for _ in range(20):
        udp = DNSServer(zone, address="127.0.0.1", port=port, logger=_Quiet(), handler=handler)
        bound = udp.server.server_address[1]
        if not tcp:
            _serve(udp)
            return (udp,)
        try:
            tcp = DNSServer(zone, address="127.0.0.1", port=bound, tcp=True, logger=_Quiet())
        except OSError:
            udp.server.server_close()
            if port:
                raise
            continue
        _serve(udp)
        _serve(tcp)
        return udp, tcp
    raise RuntimeError("no free port for the loopback DNS server")


def _serve(server: DNSServer) -> None:
    loop = server.server.serve_forever  # a short poll: shutdown() waits for it at teardown
    threading.Thread(target=loop, kwargs={"poll_interval": 0.02}, daemon=True).start()


@contextmanager
def serving(port: int = 0, truncate: bool = False, tcp: bool = True) -> Iterator[LoopbackDns]:
    """A server for the length of a `with` (on `port` if given; `truncate`: UDP answers
    over 512 bytes are cut, so clients must retry over TCP; `tcp=False`: UDP only)."""
    zone = _Zone()
    servers = _start(zone, port, truncate, tcp)
    try:
        yield LoopbackDns(zone, servers[0].server.server_address[1])
    finally:
        zone.released.set()
        for server in servers:
            server.server.shutdown()
            server.server.server_close()


@pytest.fixture(name="dns_server")
def dns_server_fixture() -> Iterator[LoopbackDns]:
    with serving() as server:
        yield server


def dkim_key() -> tuple[bytes, str]:
    """A fresh RSA key for signing test mail: (private PEM for dkim.sign, its DNS `p=`)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode()
