"""The portal inside `mailgate serve`: on `[portal] listen`, recorded in the listeners, sharing
its listener with /healthz and /metrics, serving its own static files (the captcha widget
included, no CDN), and gone when serve stops."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from mailgate.clock import FixedClock
from tests.support.peers import Mailgate

pytest_plugins = ["tests.support.portal"]


def test_portal_listens_where_configured_with_health_beside_it(portal: Mailgate):
    base = portal.config.portal.base_url
    host, port = portal.app.listeners["portal"]
    assert base == f"http://{host}:{port}"
    health = httpx.get(base + "/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["listeners"]["portal"] == f"{host}:{port}"
    assert httpx.get(base + "/metrics", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/portal.css", "text/css"),
        ("/static/portal.js", "javascript"),
        ("/static/captcha.js", "javascript"),
        ("/static/altcha/altcha.js", "javascript"),
        ("/static/altcha/pbkdf2.js", "javascript"),
        ("/static/altcha/altcha.css", "text/css"),
    ],
)
def test_static_files_are_served_by_the_portal(portal: Mailgate, path: str, kind: str):
    got = httpx.get(portal.config.portal.base_url + path, timeout=10)
    assert got.status_code == 200 and kind in got.headers["content-type"]
    assert got.headers["x-content-type-options"] == "nosniff"


def test_the_portal_stops_with_serve(portal_config: Path, portal_clock: FixedClock):
    mg = Mailgate(portal_config, clock=portal_clock)
    host, port = mg.app.listeners["portal"]
    assert httpx.get(f"http://{host}:{port}/login", timeout=10).status_code == 200
    mg.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), 2):
        pass
