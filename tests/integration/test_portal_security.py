"""The portal's security rules, each checked over real HTTP against `mailgate serve`: CSRF on
every POST, no state change on GET, session cookie flags and rotation, other people's tickets
and files answer 404, safe downloads, security headers, links from base_url only, internal
notes never shown, HTML from mail sanitised, request size limits."""

from __future__ import annotations

import json
import socket
from email.message import EmailMessage

import pytest
from sqlalchemy import func
from sqlmodel import select
from starlette.routing import Route

from mailgate.app import portal_asgi
from mailgate.store.models import Attachment, Message, Ticket
from tests.support.conversation import CUSTOMER, Desk, addr
from tests.support.mailflow import database_locked
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import (
    PASSWORD,
    Web,
    agent_says,
    cookies_set,
    customer_with_ticket,
    hidden_fields,
    outbox_count,
    path_of,
    reset_link,
    set_password,
)

pytest_plugins = ["tests.support.portal"]

JEAN = addr(CUSTOMER)
PAUL = "Paul Martin <paul@autre.example>"


def message_count(mg: Mailgate, ticket_id: int) -> int:
    with mg.app.db.read() as session:
        query = select(func.count()).select_from(Message).where(Message.ticket_id == ticket_id)
        return int(session.exec(query).one())


def post_routes(mg: Mailgate) -> list[str]:
    app = portal_asgi(mg.app)
    return [r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]


def test_every_post_needs_the_csrf_token(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    ticket_id = customer_with_ticket(helpdesk, web)
    anonymous = Web(web.base_url)
    try:
        anonymous.submit("/password/forgot", {"email": JEAN})
    finally:
        anonymous.close()
    token = reset_link(sink, JEAN).rsplit("/", 1)[1]
    paths = post_routes(portal)
    assert len(paths) >= 9  # login, logout, signup, forgot, activate, reset, new, reply, delete
    forms = {
        "/login": {"email": JEAN, "password": PASSWORD},
        "/password/reset/{token}": {"password": "x" * 12, "password_confirm": "x" * 12},
        "/tickets/new": {
            "customer_id": "C-1",
            "subject": "s",
            "description": "d",
            "problem": "Other",
        },
        "/tickets/{ticket_id}/reply": {"body": "forged reply"},
    }
    for path in paths:
        url = path.replace("{ticket_id}", str(ticket_id)).replace("{token}", token)
        data = forms.get(path, {})
        assert web.post(url, data=data).status_code == 403, path
        assert web.post(url, data={**data, "csrf": "forged"}).status_code == 403, path
    # A valid token from a page of another site's making is refused too.
    csrf = hidden_fields(web.get("/tickets").text)["csrf"]
    cross = web.post(
        f"/tickets/{ticket_id}/delete",
        data={"csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    # Nothing happened: still signed in, the ticket is there with one message, the link works.
    assert web.get(f"/tickets/{ticket_id}").status_code == 200
    assert message_count(portal, ticket_id) == 1
    assert [t["id"] for t in helpdesk.tickets()] == [ticket_id]
    assert web.get(path_of(f"/password/reset/{token}")).status_code == 200


def test_get_never_changes_anything(portal: Mailgate, helpdesk: Desk, web: Web):
    ticket_id = customer_with_ticket(helpdesk, web)
    assert web.get("/logout").status_code == 405
    assert web.get(f"/tickets/{ticket_id}/reply").status_code == 405
    confirm = web.get(f"/tickets/{ticket_id}/delete")
    assert confirm.status_code == 200 and 'method="post"' in confirm.text
    listing = web.get("/tickets")
    assert listing.status_code == 200  # still signed in
    assert f'href="/tickets/{ticket_id}"' in listing.text  # still there
    with portal.app.db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.customer_deleted_at is None


def test_session_cookie_flags(helpdesk: Desk, web: Web, make_web):
    customer_with_ticket(helpdesk, web)
    browser = make_web()
    signed_in = browser.submit("/login", {"email": JEAN, "password": PASSWORD})
    cookie = cookies_set(signed_in)["mg_session"]
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # base_url is http here; see test_portal_https.py
    anon = cookies_set(make_web().get("/login"))["mg_csrf"].lower()
    assert "httponly" in anon and "samesite=lax" in anon


def test_sign_in_gives_a_new_session_id(helpdesk: Desk, web: Web, make_web):
    customer_with_ticket(helpdesk, web)
    browser = make_web()
    # Session fixation: a value planted before sign-in is never the one used after it.
    browser.http.cookies.set("mg_session", "planted-by-someone-else", domain="127.0.0.1")
    browser.submit("/login", {"email": JEAN, "password": PASSWORD})
    first = browser.session_cookie()
    assert first and first != "planted-by-someone-else"
    # Signing in again (a login form left open in another tab) replaces the session too.
    csrf = hidden_fields(browser.get("/tickets").text)["csrf"]
    again = browser.post("/login", data={"csrf": csrf, "email": JEAN, "password": PASSWORD})
    assert again.status_code == 303
    second = browser.session_cookie()
    assert second and second != first
    stale = make_web()
    stale.http.cookies.set("mg_session", first, domain="127.0.0.1")
    assert stale.get("/tickets").status_code == 303  # the replaced session is gone


def test_password_change_ends_every_session(helpdesk: Desk, web: Web, sink: SmtpSink, make_web):
    customer_with_ticket(helpdesk, web)
    laptop = make_web()
    laptop.submit("/login", {"email": JEAN, "password": PASSWORD})
    before = {web.session_cookie(), laptop.session_cookie()}
    assert laptop.get("/tickets").status_code == 200
    phone = make_web()
    phone.submit("/password/forgot", {"email": JEAN})
    assert set_password(phone, reset_link(sink, JEAN), "a new and better one").status_code == 303
    assert phone.session_cookie() not in before
    assert phone.get("/tickets").status_code == 200
    assert laptop.get("/tickets").status_code == 303
    assert web.get("/tickets").status_code == 303


def mail_with_files(helpdesk: Desk, sender: str, files: list[tuple[str, bytes, str]]) -> int:
    msg = helpdesk.mail(sender, "support@example.com", "Voir pièces jointes", "Ci-joint.\n")
    for name, payload, content_type in files:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    helpdesk.send(msg)
    confirmation = helpdesk.wait_mail(
        "confirmation",
        addr(sender),
        where=lambda m: (
            (m.msg["In-Reply-To"] or "").strip("<>") == str(msg["Message-ID"]).strip("<>")
        ),
    )
    return int(str(confirmation.msg["X-Mailgate-Ticket"]))


def attachment_ids(mg: Mailgate, ticket_id: int) -> list[int]:
    with mg.app.db.read() as session:
        rows = session.exec(
            select(Attachment.id)
            .join(Message, Message.id == Attachment.message_pk)  # type: ignore[arg-type]
            .where(Message.ticket_id == ticket_id)
            .order_by(Attachment.id)  # type: ignore[arg-type]
        )
        return [int(r) for r in rows]


def test_another_customers_ticket_and_files_are_not_found(
    portal: Mailgate, helpdesk: Desk, web: Web, make_web
):
    customer_with_ticket(helpdesk, web)
    pdf = ("facture.pdf", b"%PDF-1.4 secret", "application/pdf")
    jeans = mail_with_files(helpdesk, CUSTOMER, [pdf])
    (jeans_file,) = attachment_ids(portal, jeans)
    paul = make_web()
    pauls = customer_with_ticket(helpdesk, paul, sender=PAUL, subject="Ticket de Paul")
    assert web.get(f"/tickets/{jeans}/attachments/{jeans_file}/facture.pdf").status_code == 200

    missing = paul.get("/tickets/999999")
    assert missing.status_code == 404
    theirs = paul.get(f"/tickets/{jeans}")
    assert theirs.status_code == 404
    # Nothing tells "exists" from "not yours" (the path asked for is only echoed back, as the
    # language switcher's way back to the page).
    assert theirs.text.replace(f"/tickets/{jeans}", "/tickets/999999") == missing.text
    assert paul.get(f"/tickets/{jeans}/delete").status_code == 404
    for url in (
        f"/tickets/{jeans}/attachments/{jeans_file}/facture.pdf",
        f"/tickets/{pauls}/attachments/{jeans_file}/facture.pdf",
    ):
        refused = paul.get(url)
        assert refused.status_code == 404 and b"secret" not in refused.content
    csrf = hidden_fields(paul.get("/tickets").text)["csrf"]
    reply = paul.post(f"/tickets/{jeans}/reply", data={"csrf": csrf, "body": "hijack"})
    assert reply.status_code == 404
    delete = paul.post(f"/tickets/{jeans}/delete", data={"csrf": csrf})
    assert delete.status_code == 404
    assert message_count(portal, jeans) == 1
    assert f'/tickets/{jeans}"' in web.get("/tickets").text  # Jean still has it


def test_downloads_are_attachments_that_never_run(portal: Mailgate, helpdesk: Desk, web: Web):
    customer_with_ticket(helpdesk, web)
    page = b"<html><script>alert(document.cookie)</script></html>"
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    ticket = mail_with_files(
        helpdesk, CUSTOMER, [("piège.html", page, "text/html"), ("capture.png", png, "image/png")]
    )
    html_id, png_id = attachment_ids(portal, ticket)
    shown = web.get(f"/tickets/{ticket}").text
    assert f"/tickets/{ticket}/attachments/{html_id}/pi%C3%A8ge.html" in shown

    got = web.get(f"/tickets/{ticket}/attachments/{html_id}/pi%C3%A8ge.html")
    assert got.status_code == 200 and got.content == page
    assert got.headers["content-disposition"].startswith("attachment;")
    assert "filename*=utf-8''pi%C3%A8ge.html" in got.headers["content-disposition"]
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-type"] == "application/octet-stream"  # never text/html
    assert "sandbox" in got.headers["content-security-policy"]

    image = web.get(f"/tickets/{ticket}/attachments/{png_id}/capture.png")
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("attachment;")
    assert image.content == png


def test_internal_notes_are_never_shown(portal: Mailgate, helpdesk: Desk, web: Web):
    helpdesk.add_agent()
    ticket = customer_with_ticket(helpdesk, web)
    agent_says(
        helpdesk,
        ticket,
        "#note Client difficile, voir dossier 4711.",
        attachment=("dossier-4711.txt", b"notes internes", "text/plain"),
    )
    agent_says(helpdesk, ticket, "Bonjour, avez-vous essayé de la redémarrer ?")
    stored = json.loads(portal.cli("ticket", "show", str(ticket), "--json").stdout)
    notes = [m for m in stored["messages"] if m["internal"]]
    assert len(notes) == 1 and notes[0]["attachments"]  # the note and its file exist

    page = web.get(f"/tickets/{ticket}").text
    assert "avez-vous essayé de la redémarrer" in page
    assert "4711" not in page and "Client difficile" not in page
    (note_file,) = attachment_ids(portal, ticket)
    assert web.get(f"/tickets/{ticket}/attachments/{note_file}/x").status_code == 404
    assert "alice@helpdesk.example" not in page  # agents appear by name only


def test_html_from_mail_is_sanitised_and_loads_nothing_remote(helpdesk: Desk, web: Web):
    customer_with_ticket(helpdesk, web)
    msg: EmailMessage = helpdesk.mail(CUSTOMER, "support@example.com", "Mise en page", "Texte.\n")
    msg.add_alternative(
        '<p onclick="steal()">Voir <b>important</b></p>'
        '<img src="http://tracker.example/pixel.gif" alt="logo">'
        '<img src="x" onerror="alert(1)">'
        '<a href="javascript:alert(2)">clic</a><a href="https://docs.example/aide">aide</a>'
        "<script>alert(3)</script><style>body{display:none}</style>"
        '<iframe src="https://evil.example/"></iframe><form action="https://evil.example/">'
        '<input name="pw"></form>',
        subtype="html",
    )
    helpdesk.send(msg)
    confirmation = helpdesk.wait_mail(
        "confirmation", JEAN, in_reply_to=str(msg["Message-ID"])[1:-1]
    )
    ticket = int(str(confirmation.msg["X-Mailgate-Ticket"]))
    page = web.get(f"/tickets/{ticket}").text
    start = page.index('class="mail-html"')
    shown = page[start : page.index("</details>", start)]
    assert "<b>important</b>" in shown
    assert 'href="https://docs.example/aide"' in shown
    for bad in (
        "tracker.example",
        "onerror",
        "onclick",
        "javascript:",
        "<script",
        "alert(3)",
        "<style",
        "display:none",
        "<iframe",
        "evil.example",
        "<form",
        'name="pw"',
    ):
        assert bad not in shown, bad
    assert 'alt="logo"' in shown  # the image's words stay, its source does not


def test_security_headers_on_every_page(helpdesk: Desk, web: Web):
    for path in ("/login", "/signup", "/password/forgot", "/nope"):
        response = web.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "img-src 'self' data:" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
    customer_with_ticket(helpdesk, web)
    assert "content-security-policy" in web.get("/tickets").headers
    page = web.get("/tickets").text
    assert "<script>" not in page and " style=" not in page  # nothing inline to allow


def test_links_come_from_base_url_never_from_the_host_header(
    helpdesk: Desk, web: Web, sink: SmtpSink, make_web
):
    customer_with_ticket(helpdesk, web)
    evil = make_web(Host="evil.example")
    home = evil.get("/tickets")  # "/" is the help-centre home now (issue 13): no redirect
    assert home.headers["location"] == web.base_url + "/login?next=/tickets"
    assert "evil.example" not in evil.get("/").text
    page = evil.get("/login")
    assert "evil.example" not in page.text
    assert evil.submit("/password/forgot", {"email": JEAN}).status_code == 200
    mailed = reset_link(sink, JEAN)
    assert mailed.startswith(web.base_url + "/password/reset/")
    assert "evil.example" not in mailed
    signed_in = evil.submit("/login", {"email": JEAN, "password": PASSWORD})
    assert signed_in.headers["location"] == web.base_url + "/tickets"


def test_uploads_over_the_limits_are_refused(portal: Mailgate, helpdesk: Desk, web: Web):
    ticket = customer_with_ticket(helpdesk, web)
    page, action = f"/tickets/{ticket}", f"/tickets/{ticket}/reply"

    def reply_with(size: int) -> int:
        upload = ("attachments", ("gros.bin", b"x" * size, "application/octet-stream"))
        return web.submit(page, {"body": "voici"}, action=action, files=[upload]).status_code

    # Over [inbound] max_message_bytes (200 kB in tests): the service says it is too big.
    assert reply_with(300_000) == 400
    # Far over it: refused from the headers alone, before a byte of the body is read (the
    # client announces it and waits, as `Expect: 100-continue` allows).
    port = int(web.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            f"POST {action} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        status_line = raw.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert message_count(portal, ticket) == 1
    assert "voici" not in web.get(page).text


def test_a_database_fault_answers_503_and_queues_nothing(
    portal: Mailgate, helpdesk: Desk, web: Web, database_url: str
):
    if not database_url.startswith("sqlite"):
        pytest.skip("a held SQLite write lock is the fault injected here")
    helpdesk.open_ticket()
    fields = hidden_fields(web.get("/password/forgot").text)
    with database_locked(database_url, table="rateevent"):
        refused = web.post("/password/forgot", data={**fields, "email": JEAN})
    assert refused.status_code == 503
    assert refused.text == "Le service est momentanément indisponible. Réessayez dans une minute."
    assert refused.headers["retry-after"].isdigit()
    assert outbox_count(portal, "password_reset") == 0
    assert web.submit("/password/forgot", {"email": JEAN}).status_code == 200  # and it recovers
