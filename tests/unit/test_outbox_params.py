"""services/outbox.py + services/assemble.py: a mail is queued as kind + parameters (nothing
rendered in the writer's transaction) and the sender assembles from them the mail the old
enqueue-time path built; held and not-sent rows have nothing to send; a first contact skips
the per-address lookups and the first-contact window still holds. Real SQLite (and
PostgreSQL when MAILGATE_TEST_DATABASE_URL is set), migrated by Alembic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from mailgate.app import TEMPLATES
from mailgate.clock import FixedClock, as_utc
from mailgate.core.commands import CommandError
from mailgate.core.compose import Outgoing, compose
from mailgate.services.assemble import MailAssembler, encode_params
from mailgate.services.digests import DigestLine
from mailgate.services.outbound_limits import SENDABLE
from mailgate.services.outbox import Mailer, MailSettings
from mailgate.services.render import MailRenderer
from mailgate.store.db import Database
from mailgate.store.models import Outbox, Suppression, Ticket

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SETTINGS = MailSettings(
    hostname="mg.test",
    support_address="support@example.com",
    from_name="Support Exemple",
    base_url="https://help.example.com",
    first_contact_per_hour=3,
)
RENDERER = MailRenderer(TEMPLATES)
TICKET = Ticket(
    id=42, subject="Imprimante en panne, écran noir", status="open", requester_id=7,
    locale="fr", created_at=NOW, updated_at=NOW, last_exchange_at=NOW, pending_since=None,
)  # fmt: skip
URL = "https://help.example.com/tickets/42"
# What the callers (tickets, accounts, digests) pass, ORM rows and dataclasses included.
CONTEXTS: dict[str, dict[str, Any]] = {
    "confirmation": {"ticket": TICKET, "echo": True, "customer_name": "Jérôme Dupont",
                     "ticket_url": URL, "old_ticket_id": None},
    "follow_up": {"ticket": TICKET, "echo": False, "customer_name": "", "ticket_url": URL,
                  "old_ticket_id": 41},
    "activation": {"customer_name": "Jérôme", "echo": True, "email": "jerome@client.example",
                   "activation_url": "https://help.example.com/activate/tok"},
    "password_reset": {"email": "jerome@client.example",
                       "reset_url": "https://help.example.com/password/reset/tok"},
    "agent_notification": {"ticket": TICKET, "customer": "Jérôme <jerome@client.example>",
                           "body": "Bonjour,\nça ne marche pas.\n", "ticket_url": URL,
                           "is_new": True},
    "agent_reply": {"ticket": TICKET, "body": "Bonjour,\nessayez ceci.\n",
                    "agent_name": "Alice", "ticket_url": URL},
    "auto_resolved": {"ticket": TICKET, "days": 7, "ticket_url": URL},
    "command_error": {"ticket": TICKET, "errors": [CommandError(1, "#status nowhere", "no")]},
    "limit_reached": {},
    "agent_digest": {"tickets": [DigestLine(42, "Écran", "open", URL, 3),
                                 DigestLine(43, "Clavier", "new", URL, 1)],
                     "notifications": 4, "per_hour": 30},
}  # fmt: skip
BASE = {"company": "Support Exemple", "portal_url": "https://help.example.com/", "echo": False}


def _kinds() -> list[str]:
    found = {p.name.split(".")[0] for p in (TEMPLATES / "mail" / "fr").glob("*.subject.j2")}
    assert found == set(CONTEXTS), "a kind without a context here: add it"
    return sorted(found)


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("kind", _kinds())
def test_every_kind_renders_the_same_from_its_stored_params(kind: str, lang: str):
    context = {**BASE, **CONTEXTS[kind]}
    params = encode_params(locale=lang, context=context, date=NOW, from_addr="s@example.com",
                           from_name="S", hostname="mg.test")  # fmt: skip
    stored = json.loads(params)["context"]
    assert RENDERER.render(kind, lang, stored) == RENDERER.render(kind, lang, context)


def test_a_context_json_cannot_hold_is_refused_when_queued():
    @dataclass
    class Opaque:
        pass

    with pytest.raises(TypeError):
        encode_params(locale="fr", context={"x": object()}, date=NOW, from_addr="s@example.com",
                      from_name="S", hostname="mg.test")  # fmt: skip
    assert "Opaque" not in encode_params(
        locale="fr", context={"x": Opaque()}, date=NOW, from_addr="a@b", from_name="", hostname="h"
    )  # a dataclass is its fields


def test_a_row_queued_before_params_is_sent_with_its_own_bytes():
    row = Outbox(kind="confirmation", to_addr="a@client.example", subject="Old",
                 message_id="m@h", raw=b"Subject: Old\r\n\r\nbody\r\n", next_attempt_at=NOW,
                 created_at=NOW)  # fmt: skip
    built = MailAssembler(RENDERER).build(row)
    assert (built.raw, built.subject) == (b"Subject: Old\r\n\r\nbody\r\n", "Old")


# -- through a real database ------------------------------------------------------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def mailer() -> Mailer:
    return Mailer(SETTINGS, RENDERER, FixedClock(NOW))


def _parsed(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def _suppress(db: Database, address: str) -> None:
    with db.write() as session:
        session.add(Suppression(email=address, reason="5.1.1", until=NOW + timedelta(days=9)))


def _queue(db: Database, mailer: Mailer, **kw: Any) -> Outbox:
    args: dict[str, Any] = {"kind": "confirmation", "to_addr": "jerome@client.example",
                            "locale": "fr", "context": CONTEXTS["confirmation"]}  # fmt: skip
    args.update(kw)
    with db.write() as session:
        return mailer.queue(session, **args)


@pytest.mark.parametrize("kind", ["confirmation", "agent_reply", "command_error"])
def test_a_queued_row_holds_parameters_and_assembles_into_the_mail_compose_built(
    db: Database, mailer: Mailer, kind: str
):
    thread = {"ticket_id": None, "reply_to": "support+t42@example.com",
              "in_reply_to": "a@client.example", "references": ("x@client.example",)}  # fmt: skip
    row = _queue(db, mailer, kind=kind, to_name="Jérôme Dupont", context=CONTEXTS[kind], **thread)
    with db.read() as session:  # as the sender reads it back
        stored = session.exec(select(Outbox).where(Outbox.id == row.id)).one()
    assert (stored.raw, stored.subject) == (b"", "")
    assert json.loads(stored.params)["date"] == NOW.isoformat()
    built = MailAssembler(RENDERER).build(stored)

    rendered = RENDERER.render(kind, "fr", {**BASE, **CONTEXTS[kind]})
    automatic = kind != "agent_reply"
    reference = compose(
        Outgoing(kind=kind, to_addr=row.to_addr, to_name="Jérôme Dupont", subject=rendered.subject,
                 text=rendered.text, html=rendered.html, from_addr=SETTINGS.support_address,
                 from_name=SETTINGS.from_name, message_id=row.message_id, date=NOW,
                 hostname=SETTINGS.hostname, locale="fr",
                 auto_submitted="auto-replied" if automatic else None, **thread)  # type: ignore[arg-type]
    ).as_bytes()  # fmt: skip
    got, ref = _parsed(built.raw), _parsed(reference)
    assert built.subject == rendered.subject
    assert [(k, str(v)) for k, v in got.items()] == [(k, str(v)) for k, v in ref.items()]
    got_parts, ref_parts = list(got.walk()), list(ref.walk())
    assert [p.get_content_type() for p in got_parts] == [p.get_content_type() for p in ref_parts]
    for g, r in zip(got_parts, ref_parts, strict=True):
        if not r.is_multipart():
            assert g.get_content() == r.get_content()
    assert MailAssembler(RENDERER).assemble(stored) == built.raw  # a retry: the same bytes
    assert row.envelope_from == ("" if automatic else SETTINGS.support_address)


def test_held_and_unsent_rows_have_nothing_to_send(db: Database, mailer: Mailer):
    _suppress(db, "gone@client.example")
    sent = _queue(db, mailer)
    unsent = _queue(db, mailer, to_addr="gone@client.example")
    assert (unsent.status, unsent.params, unsent.raw) == ("failed", "", b"")
    old = Outbox(kind="confirmation", to_addr="a@client.example", message_id="m@h", raw=b"x",
                 next_attempt_at=NOW, created_at=NOW)  # fmt: skip
    with db.write() as session:
        session.add(old)
        session.flush()
        old_id = old.id
        sendable = set(session.exec(select(Outbox.id).where(SENDABLE)))
    assert sendable == {sent.id, old_id}


def test_a_first_contact_skips_the_per_address_caps(db: Database, mailer: Mailer):
    """An address we never heard from cannot be over a cap or suppressed: no lookups. (The
    suppression here is only there to show the lookup is skipped.)"""
    _suppress(db, "new@client.example")
    first = _queue(db, mailer, to_addr="new@client.example", first_contact=True)
    assert (first.status, first.reason, first.first_contact) == ("queued", "", True)
    assert first.params
    again = _queue(db, mailer, to_addr="new@client.example")
    assert again.status == "failed" and again.reason.startswith("suppressed")


def test_the_first_contact_window_delays_what_is_over_it(db: Database, mailer: Mailer):
    per_hour = SETTINGS.first_contact_per_hour
    _suppress(db, "x@client.example")  # a mail not sent never counts
    _queue(db, mailer, to_addr="x@client.example")
    first = [_queue(db, mailer, to_addr=f"c{i}@client.example", first_contact=True)
             for i in range(per_hour)]  # fmt: skip
    assert all(r.reason == "" and as_utc(r.next_attempt_at) == NOW for r in first)
    late = _queue(db, mailer, to_addr="late@client.example", first_contact=True)
    assert as_utc(late.next_attempt_at) == NOW + timedelta(hours=1)
    assert late.reason == "first-contact cap: waits until 10:00 UTC"
    dated = _parsed(MailAssembler(RENDERER).assemble(late))["Date"].datetime
    assert dated == NOW + timedelta(hours=1)
    asked = _queue(db, mailer, to_addr="asked@client.example", first_contact=True, requested=True)
    assert asked.reason == ""  # asked for in the portal: not held by the window


def test_templates_are_compiled_once(tmp_path: Path):
    (tmp_path / "mail" / "fr").mkdir(parents=True)
    for ext, text in (("subject", "Sujet {{ n }}"), ("txt", "Corps {{ n }}\n")):
        (tmp_path / "mail" / "fr" / f"k.{ext}.j2").write_text(text)
    renderer = MailRenderer(tmp_path)
    assert renderer.render("k", "fr", {"n": 1}).subject == "Sujet 1"
    (tmp_path / "mail" / "fr" / "k.subject.j2").write_text("Changed")
    assert renderer.render("k", "fr", {"n": 2}) == renderer.render("k", "fr", {"n": 2})
    assert renderer.render("k", "fr", {"n": 2}).subject == "Sujet 2"
    assert renderer.render("k", "fr", {"n": 2}).html is None
