"""Portal fixtures: `mailgate serve` with the portal on, a clock the test can move, and
browsers (tests.support.portal_web.Web) pointed at it. Mail goes through the real SMTP listener
and the real sink.

Use them from a test module with `pytest_plugins = ["tests.support.portal"]`.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.clock import FixedClock
from tests.support.conversation import Desk
from tests.support.peers import Mailgate, SmtpSink, write_config
from tests.support.portal_web import Web


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range. A port picked inside that range can be
    taken, between the pick and the portal's bind, as the local end of any outgoing connection
    (the tests make many); below it, only another listener could take it."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(min(20000, low - 1000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@pytest.fixture
def portal_config(tmp_path: Path, database_url: str, sink: SmtpSink, config_extra: str) -> Path:
    path = write_config(
        tmp_path, database_url=database_url, sink_port=sink.port, extra=config_extra, portal=True
    )
    port = quiet_port()
    text = path.read_text()
    for key, value in (("listen", f"127.0.0.1:{port}"), ("base_url", f"http://127.0.0.1:{port}")):
        text = re.sub(rf'(?m)^{key} = "[^"]*"', f'{key} = "{value}"', text, count=1)
    path.write_text(text)
    return path


@pytest.fixture
def portal_clock() -> FixedClock:
    """The service clock: it stands still unless the test moves it (link expiry, windows)."""
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def portal(portal_config: Path, portal_clock: FixedClock) -> Iterator[Mailgate]:
    mg = Mailgate(portal_config, clock=portal_clock)
    yield mg
    mg.stop()


@pytest.fixture
def helpdesk(portal: Mailgate, sink: SmtpSink) -> Desk:
    """Mail in and out of the portal's mailgate (tests.support.conversation.Desk)."""
    return Desk(portal, sink)


@pytest.fixture
def web(portal: Mailgate) -> Iterator[Web]:
    client = Web(portal.config.portal.base_url)
    yield client
    client.close()


@pytest.fixture
def make_web(portal: Mailgate) -> Iterator[Callable[..., Web]]:
    """More browsers (another customer, another device)."""
    made: list[Web] = []

    def make(**headers: str) -> Web:
        made.append(Web(portal.config.portal.base_url, headers=headers))
        return made[-1]

    yield make
    for client in made:
        client.close()
