"""What the ingest decides without the database (ingest_steps.screen), on real mails: it runs
in the caller's thread before the transaction, so the single writer only does what needs SQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.core.mail import parse_mail
from mailgate.core.verification import DEFAULT_RULES
from mailgate.services.ingest_steps import NOTHING_FOUND, Envelope, screen

DATA = Path(__file__).resolve().parent.parent / "data"
HOST = "help.example.com"


def screened(path: Path, mail_from: str | None = "someone@client.example"):
    raw = path.read_bytes()
    envelope = Envelope(mail_from=mail_from, recipients=("support@example.com",))
    return screen(raw, parse_mail(raw), envelope, HOST, DEFAULT_RULES)


def test_a_customer_mail_is_none_of_them() -> None:
    assert screened(DATA / "automatic" / "human.eml") == NOTHING_FOUND
    assert screened(DATA / "inbound" / "gmail_en.eml") == NOTHING_FOUND


@pytest.mark.parametrize("name", ["postfix_dsn_511.eml", "exchange_dsn_447.eml"])
def test_bounces_are_found(name: str) -> None:
    found = screened(DATA / "automatic" / name, mail_from="")
    assert found.bounce is not None


@pytest.mark.parametrize(
    "name", ["exchange_ooo_en.eml", "gmail_vacation.eml", "mailing_list.eml", "noreply.eml"]
)
def test_automatic_mail_is_classified(name: str) -> None:
    found = screened(DATA / "automatic" / name)
    assert found.automatic is not None and found.bounce is None


def test_third_party_sign_up_mail_is_found() -> None:
    held = sorted((DATA / "verification" / "held").glob("*.eml"))
    assert held, "fixtures of third-party sign-up mail"
    for path in held:
        assert screened(path).third_party, path.name


def test_our_own_mail_coming_back_is_a_loop() -> None:
    raw = (DATA / "automatic" / "human.eml").read_bytes()
    looped = b"X-Mailgate-Loop: " + HOST.encode() + b"\r\n" + raw
    envelope = Envelope(mail_from="someone@client.example", recipients=())
    assert screen(looped, parse_mail(looped), envelope, HOST, DEFAULT_RULES).loop


def test_an_unparsed_mail_is_left_to_the_parse_step() -> None:
    envelope = Envelope(mail_from="", recipients=())
    assert screen(b"garbage", None, envelope, HOST, DEFAULT_RULES) == NOTHING_FOUND
