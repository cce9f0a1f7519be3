"""Keep a child process running: start it again when it ends, with backoff (a leaf module).

serve supervises a few children this way (the sender, the warm command process): each is
`run_once`, an awaitable that starts the child and returns its exit code when it ends. A child
that keeps failing is restarted after 0.5 s, then 1, 2 ... up to `max_delay`; one that had run
for a minute is a fresh failure and starts the count again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def keep_running(
    run_once: Callable[[], Awaitable[int | None]],
    stop: asyncio.Event,
    on_exit: Callable[[int | None, float, bool], None],
    *,
    max_delay: float = 30.0,
    first_delay: float = 0.5,
    healthy_after: float = 60.0,
) -> None:
    """Until `stop`: run_once(), then on_exit(code, restart_in, crashed) and a pause.

    `crashed`: run_once itself raised (the supervision failed, not the child); on_exit is then
    called inside the except block, so that it may log the exception."""
    delay = first_delay
    while not stop.is_set():
        started = time.monotonic()
        try:
            code = await run_once()
        except Exception:  # fault barrier: the child must come back
            if stop.is_set():
                return
            delay = first_delay if time.monotonic() - started > healthy_after else delay
            on_exit(None, delay, True)
        else:
            if stop.is_set():
                return
            # One that had been running fine for a while: this is a fresh failure.
            delay = first_delay if time.monotonic() - started > healthy_after else delay
            on_exit(code, delay, False)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
        delay = min(max_delay, delay * 2)
