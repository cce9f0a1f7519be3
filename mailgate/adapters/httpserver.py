"""A uvicorn server on the serve loop, for any ASGI app (the [metrics] listener).

We bind the socket ourselves: port 0 then has a known port, and unix:/path works the same way.
uvicorn's own signal capture is switched off: `serve` owns SIGTERM and stops us in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Generator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # uvicorn would replace serve's SIGTERM handler and re-raise it on exit


def bind(listen: str) -> socket.socket:
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket from a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    else:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets that say so,
        # and without it every small response waits ~40 ms (Nagle against delayed ACKs).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(self, asgi: Any, listen: str) -> None:
        self.sock = bind(listen)
        config = uvicorn.Config(
            asgi, log_config=None, access_log=False, lifespan="off", server_header=False
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return (name[0], name[1]) if isinstance(name, tuple) else (str(name), 0)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="http")
        while not self.server.started:  # uvicorn exposes no event for this
            if self._task.done():
                await self._task  # start-up failed: raise its error
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
