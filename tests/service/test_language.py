"""Issue 15 at the service level: a customer's language decided from their mail (header, else
the text they wrote) and remembered on the account; the mails they get are in it."""

from __future__ import annotations

from sqlmodel import select

from mailgate.core.language import Source
from mailgate.store.models import Account
from tests.support.conversation import addr
from tests.support.inprocess import ServiceDesk

BOB = "Bob Smith <bob@client.example>"
ENGLISH = (
    "Hello,\n\nSince last night I cannot sign in to my account: the site says my password is "
    "wrong although I have not changed it. Could you help me, please?\n\nThanks,\nBob\n"
)
FRENCH = (
    "Bonjour,\n\nDepuis hier soir je n'arrive plus à me connecter à mon compte : le site me dit "
    "que mon mot de passe est faux. Pouvez-vous m'aider ?\n\nMerci,\nBob\n"
)


def _account(desk: ServiceDesk, email: str) -> Account:
    with desk.mg.app.db.read() as session:
        found = session.exec(select(Account).where(Account.email == email)).one()
        session.expunge(found)
        return found


def _set(desk: ServiceDesk, email: str, locale: str, source: Source) -> None:
    with desk.mg.app.db.write() as session:
        account = session.exec(select(Account).where(Account.email == email)).one()
        account.locale, account.locale_source = locale, source
        session.add(account)


def test_english_text_without_content_language_gets_english_mail(desk: ServiceDesk) -> None:
    opened = desk.open_ticket(BOB, subject="Cannot sign in", body=ENGLISH)
    account = _account(desk, addr(BOB))
    assert (account.locale, account.locale_source) == ("en", "detected")
    assert opened.confirmation.msg["Content-Language"] == "en"
    assert "Content-Language" in opened.confirmation.msg
    assert desk.ticket_row(opened.id).locale == "en"


def test_the_header_outranks_the_text(desk: ServiceDesk) -> None:
    opened = desk.open_ticket(BOB, body=ENGLISH, headers={"Content-Language": "fr"})
    assert (_account(desk, addr(BOB)).locale_source, opened.confirmation.msg["Content-Language"]) \
        == ("header", "fr")  # fmt: skip


def test_a_later_mail_in_another_language_does_not_flip_a_choice(desk: ServiceDesk) -> None:
    desk.open_ticket(BOB, subject="Cannot sign in", body=ENGLISH)
    _set(desk, addr(BOB), "en", Source.CHOSEN)  # as the portal's language switcher does
    later = desk.open_ticket(BOB, subject="Facture", body=FRENCH,
                             headers={"Content-Language": "fr"})  # fmt: skip
    assert (_account(desk, addr(BOB)).locale, _account(desk, addr(BOB)).locale_source) == (
        "en", "chosen",
    )  # fmt: skip
    assert later.confirmation.msg["Content-Language"] == "en"


def test_detected_language_gives_way_to_a_header_later_but_not_to_more_text(
    desk: ServiceDesk,
) -> None:
    desk.open_ticket(BOB, subject="Cannot sign in", body=ENGLISH)
    desk.open_ticket(BOB, subject="Facture", body=FRENCH)  # same rank: no flip
    assert _account(desk, addr(BOB)).locale == "en"
    desk.open_ticket(BOB, subject="Facture", body=ENGLISH, headers={"Content-Language": "fr"})
    assert (_account(desk, addr(BOB)).locale, _account(desk, addr(BOB)).locale_source) == (
        "fr", "header",
    )  # fmt: skip
