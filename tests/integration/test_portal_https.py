"""When base_url is https (TLS ends at a proxy in front of the portal), cookies are Secure and
`__Host-` prefixed, and HSTS is sent. The test talks plain HTTP to the portal as the proxy
would, so it carries the Secure cookies by hand (an HTTP client keeps them for https)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.conversation import Desk
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import PASSWORD, activation_link, cookies_set, hidden_fields, path_of

pytest_plugins = ["tests.support.portal"]


@pytest.fixture
def portal_config(portal_config: Path) -> Path:
    text = portal_config.read_text().replace('base_url = "http://', 'base_url = "https://')
    portal_config.write_text(text)
    return portal_config


@pytest.fixture
def proxy(portal: Mailgate) -> Iterator[httpx.Client]:
    plain = portal.config.portal.base_url.replace("https://", "http://")
    with httpx.Client(base_url=plain, timeout=30) as client:
        yield client


def value_of(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def test_secure_host_only_cookies_under_https(
    portal: Mailgate, helpdesk: Desk, sink: SmtpSink, proxy: httpx.Client
):
    helpdesk.open_ticket()
    path = path_of(activation_link(sink, "jean@client.example"))
    assert portal.config.portal.base_url.startswith("https://")

    form = proxy.get(path)
    csrf_cookie = cookies_set(form)["__Host-mg_csrf"]
    assert "secure" in csrf_cookie.lower() and "path=/" in csrf_cookie.lower()
    assert "domain=" not in csrf_cookie.lower()  # what the __Host- prefix requires
    assert form.headers["strict-transport-security"].startswith("max-age=")

    done = proxy.post(
        path,
        data={**hidden_fields(form.text), "password": PASSWORD, "password_confirm": PASSWORD},
        headers={"Cookie": f"__Host-mg_csrf={value_of(csrf_cookie)}"},
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("https://")
    session = cookies_set(done)["__Host-mg_session"]
    attributes = {a.strip().lower() for a in session.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= attributes
    assert "mg_session" not in cookies_set(done)  # never the unprefixed, insecure name

    dashboard = proxy.get("/tickets", headers={"Cookie": f"__Host-mg_session={value_of(session)}"})
    assert dashboard.status_code == 200
    assert "Imprimante en panne" in dashboard.text
