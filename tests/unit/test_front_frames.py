"""What an SMTP front sends serve crosses the process boundary intact (frames.py: pickled),
including a crash found while preparing the message, which serve counts (Ingestor.recover)."""

from __future__ import annotations

import socket

from mailgate import frames
from mailgate.adapters.smtp.front import listening_sockets
from mailgate.services.ingest import CrashElsewhere


def test_a_crash_found_in_a_front_crosses_to_serve_with_its_kind_and_text() -> None:
    crash = CrashElsewhere("BrokenPipeError", "the parse worker died")
    ours, theirs = socket.socketpair()
    try:
        frames.send(ours, (7, "ingest", crash))
        request_id, verb, back = frames.receive(theirs)
    finally:
        ours.close()
        theirs.close()
    assert (request_id, verb) == (7, "ingest")
    assert isinstance(back, CrashElsewhere)
    assert (back.kind, str(back)) == ("BrokenPipeError", "the parse worker died")


def test_every_address_gets_a_socket_on_one_free_port() -> None:
    """ ":PORT" is every address, IPv4 and IPv6 (as asyncio binds it): a socket each, all on
    the same port, each taking connections."""
    sockets = listening_sockets(":0")
    try:
        found = socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        assert {sock.getsockname()[0] for sock in sockets} == {info[4][0] for info in found}
        (port,) = {sock.getsockname()[1] for sock in sockets}
        for sock in sockets:
            loopback = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
            socket.create_connection((loopback, port), timeout=5).close()
    finally:
        for sock in sockets:
            sock.close()
