"""Driving the portal like a person: an HTTP client that uses forms the way a browser does
(it loads the page and sends back its hidden fields, CSRF token included), the links mailgate
mails, the captcha solved with altcha's own solver, and counts of queued mail."""

from __future__ import annotations

import html
import re
from typing import Any

import altcha
import httpx
from sqlalchemy import func
from sqlmodel import select

from mailgate.store.models import Outbox
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, Received, SmtpSink

PASSWORD = "correct horse battery staple"
HIDDEN = re.compile(r"<input\b[^>]*\btype=\"hidden\"[^>]*>")
ATTR = re.compile(r"\b(name|value)=\"([^\"]*)\"")


def hidden_fields(page: str) -> dict[str, str]:
    fields = {}
    for tag in HIDDEN.findall(page):
        attrs = dict(ATTR.findall(tag))
        if "name" in attrs:
            fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
    return fields


class Web:
    """A browser without JavaScript: it follows no redirect by itself, so tests see them."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30, headers=headers or {})

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def submit(
        self,
        page: str,
        data: dict[str, str],
        action: str | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    ) -> httpx.Response:
        """Load `page`, then post its hidden fields plus `data` to `action` (default: page)."""
        loaded = self.get(page)
        assert loaded.status_code == 200, (page, loaded.status_code)
        fields = {**hidden_fields(loaded.text), **data}
        return self.post(action or page, data=fields, files=files)

    def session_cookie(self) -> str | None:
        return self.http.cookies.get("mg_session")


# -- mail side -----------------------------------------------------------------------------


def link(mail: Received, path: str) -> str:
    found = re.search(r"https?://\S+" + re.escape(path) + r"/\S+", mail.text())
    assert found, f"no {path} link in {mail.kind} mail"
    return found.group(0)


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


def activation_link(sink: SmtpSink, email: str, count: int = 1) -> str:
    return link(sink.wait_kind("activation", to=email, count=count)[-1], "/activate")


def reset_link(sink: SmtpSink, email: str, count: int = 1) -> str:
    return link(sink.wait_kind("password_reset", to=email, count=count)[-1], "/password/reset")


def set_password(web: Web, url: str, password: str = PASSWORD) -> httpx.Response:
    return web.submit(path_of(url), {"password": password, "password_confirm": password})


def customer_with_ticket(
    desk: Desk, web: Web, sender: str = CUSTOMER, subject: str = "Imprimante en panne", **kw: Any
) -> int:
    """A customer who mailed a ticket, then activated their account from the mailed link
    (signed in on `web`). Returns the ticket id."""
    opened = desk.open_ticket(sender=sender, subject=subject, **kw)
    response = set_password(web, activation_link(desk.sink, addr(sender)))
    assert response.status_code == 303, response.text
    return opened.id


def outbox_count(mg: Mailgate, kind: str, to: str | None = None) -> int:
    query = select(func.count()).select_from(Outbox).where(Outbox.kind == kind)
    if to is not None:
        query = query.where(Outbox.to_addr == to)
    with mg.app.db.read() as session:
        return int(session.exec(query).one())


def solve_captcha(web: Web) -> str:
    """What the widget does in the browser, with altcha's own solver."""
    challenge = altcha.Challenge.from_dict(web.get("/captcha/challenge").json())
    solution = altcha.solve_challenge(challenge)
    assert solution is not None
    return altcha.Payload(challenge, solution).to_base64()


def cookies_set(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (the whole header, attributes included)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found


# -- the agent's side, by mail ---------------------------------------------------------------


def agent_says(
    desk: Desk,
    ticket_id: int,
    text: str,
    attachment: tuple[str, bytes, str] | None = None,
) -> None:
    """The agent answers the ticket's notification from their mail client (commands first)."""
    notification = desk.wait_mail("agent_notification", AGENT, ticket=ticket_id)
    msg = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", text, quote=False)
    if attachment is not None:
        name, payload, content_type = attachment
        maintype, subtype = content_type.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    desk.send(msg)
