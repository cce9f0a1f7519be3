"""A Postfix socketmap (socketmap_table(5)) answering "is this address ours?".

Postfix asks with `relay_recipient_maps = socketmap:inet:127.0.0.1:PORT:mailgate` and refuses
an unknown recipient at RCPT (550 5.1.1), so it never accepts mail it would bounce later
(backscatter). The answer comes from the same AddressBook the ingest uses, so the list is never
out of date. Protocol: one netstring request "NAME KEY", one netstring reply "OK VALUE",
"NOTFOUND " or "PERM reason"; a connection carries any number of requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailgate import logs

MAP_NAME = "mailgate"
MAX_REQUEST = 1024  # "mailgate " + an address (254 bytes at most) with room to spare
IDLE_SECONDS = 60.0  # Postfix reconnects on demand; an idle peer does not hold a slot forever
MAX_CONNECTIONS = 64  # each Postfix smtpd holds one; more wait in the kernel's backlog


class NetstringError(ValueError):
    """The peer does not speak netstrings: the connection is closed."""


def encode(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    """Bytes in (any chunking), whole netstrings out; `max_len` bounds what one may claim."""

    def __init__(self, max_len: int = MAX_REQUEST) -> None:
        self.max_len = max_len
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            colon = self._buf.find(b":")
            if colon < 0:
                if len(self._buf) > len(str(self.max_len)) or not self._buf.isdigit():
                    if self._buf:
                        raise NetstringError("bad netstring length")
                return out
            digits = self._buf[:colon]
            if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
                raise NetstringError("bad netstring length")
            size = int(digits)
            if size > self.max_len:
                raise NetstringError(f"netstring of {size} bytes, over {self.max_len}")
            end = colon + 1 + size
            if len(self._buf) <= end:
                return out  # the rest (and its comma) is still on the way
            if self._buf[end : end + 1] != b",":
                raise NetstringError("netstring not ended by a comma")
            out.append(self._buf[colon + 1 : end])
            self._buf = self._buf[end + 1 :]


def answer(request: bytes, is_ours: Callable[[str], bool]) -> bytes:
    """The reply payload for one request payload."""
    name, sep, key = request.partition(b" ")
    if not sep or name.decode("ascii", "replace") != MAP_NAME:
        return b"PERM unknown map name (use socketmap:...:" + MAP_NAME.encode() + b")"
    try:
        address = key.decode("utf-8")
    except UnicodeDecodeError:
        return b"NOTFOUND "
    return b"OK OK" if is_ours(address) else b"NOTFOUND "


class PostfixMap:
    """The socketmap server on `serve`'s loop."""

    def __init__(self, is_ours: Callable[[str], bool]) -> None:
        self.is_ours = is_ours
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._sessions: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.server: asyncio.AbstractServer | None = None

    async def start(self, listen: str) -> asyncio.AbstractServer:
        if listen.startswith("unix:"):
            self.server = await asyncio.start_unix_server(
                self._session, path=listen[len("unix:") :]
            )
        else:
            host, _, port = listen.rpartition(":")
            self.server = await asyncio.start_server(
                self._session, host=host.strip("[]"), port=int(port)
            )
        return self.server

    async def stop(self) -> None:
        """Stop accepting and end the sessions Postfix keeps open (they would outlive the loop);
        Postfix reconnects, or answers 451 while nobody listens."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._sessions.values()):
            writer.close()  # the session reads EOF and ends
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions[task] = writer
            task.add_done_callback(lambda t: self._sessions.pop(t, None))
        async with self._slots:
            decoder = NetstringDecoder()
            try:
                while True:
                    data = await asyncio.wait_for(reader.read(4096), IDLE_SECONDS)
                    if not data:
                        break
                    for request in decoder.feed(data):
                        writer.write(encode(answer(request, self.is_ours)))
                    await writer.drain()
            except NetstringError as exc:
                logs.warning("postfix_map.bad_request", reason=str(exc))
            except (TimeoutError, ConnectionError):
                pass  # idle or gone: Postfix opens a new connection when it needs one
            finally:
                writer.close()
