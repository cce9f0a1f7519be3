"""Portal fixtures: `mailgate serve` with the portal on, a clock the test can move, and
browsers (tests.support.portal_web.Web) pointed at it. Mail goes through the real SMTP listener
and the real sink.

Use them from a test module with `pytest_plugins = ["tests.support.portal"]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.clock import FixedClock
from tests.support.conversation import Desk
from tests.support.peers import Mailgate, SmtpSink, free_port, write_config
from tests.support.portal_web import Web


@pytest.fixture
def portal_config(tmp_path: Path, database_url: str, sink: SmtpSink, config_extra: str) -> Path:
    path = write_config(
        tmp_path, database_url=database_url, sink_port=sink.port, extra=config_extra, portal=True
    )
    port = free_port()  # (below the ephemeral range: see its docstring)
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
