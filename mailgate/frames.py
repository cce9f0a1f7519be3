"""Length-prefixed pickled frames between serve and its own child processes (the sender, the
SMTP fronts), over socketpairs it made itself: never a socket anyone else can reach."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct("!I")


def encode(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def send(sock: socket.socket, value: Any) -> None:
    sock.sendall(encode(value))


def receive(sock: socket.socket) -> Any:
    """One frame from a blocking socket. Raises EOFError when the other end closed."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the other process closed the socket")
            data += chunk
        return data

    (length,) = _LENGTH.unpack(exactly(_LENGTH.size))
    return pickle.loads(exactly(length))  # noqa: S301  (our own process, over a socketpair)


async def read(reader: asyncio.StreamReader) -> Any:
    """One frame from a stream. Raises asyncio.IncompleteReadError when the other end closed."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))  # noqa: S301  (our own process)
