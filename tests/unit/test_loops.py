from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailgate.core.loops import Automatic, classify, is_our_loop

DATA = Path(__file__).resolve().parent.parent / "data" / "automatic"
HUMAN = "alice@customer.example"

Headers = list[tuple[str, str]]


def _load(name: str) -> tuple[Headers, str, str]:
    """Header pairs, From addr-spec and decoded Subject, as the ingest would pass them."""
    msg = message_from_bytes((DATA / name).read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    headers = [(key, str(value)) for key, value in msg.items()]
    from_addr = msg["From"].addresses[0].addr_spec
    return headers, from_addr, str(msg["Subject"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("exchange_ooo_en.eml", Automatic("out-of-office", out_of_office=True)),
        ("exchange_ooo_fr.eml", Automatic("out-of-office", out_of_office=True)),
        ("gmail_vacation.eml", Automatic("out-of-office", out_of_office=True)),
        ("zimbra_ooo.eml", Automatic("out-of-office", out_of_office=True)),
        ("mailing_list.eml", Automatic("list-header")),
        ("noreply.eml", Automatic("role-address")),
        ("postfix_dsn_511.eml", Automatic("dsn")),
        ("exchange_dsn_447.eml", Automatic("dsn")),
        ("read_receipt_mdn.eml", Automatic("dsn")),
        ("human.eml", None),
    ],
)
def test_samples(name: str, expected: Automatic | None) -> None:
    headers, from_addr, subject = _load(name)
    # envelope_from=None: the IMAP path, where only the headers are available.
    assert classify(headers, None, from_addr, subject) == expected


def test_human_sample_with_its_real_envelope_sender_is_human() -> None:
    headers, from_addr, subject = _load("human.eml")
    assert classify(headers, from_addr, from_addr, subject) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("Auto-Submitted", "auto-generated")], "auto-submitted"),
        ([("Auto-Submitted", "auto-replied")], "auto-submitted"),
        ([("Auto-Submitted", "auto-notified; owner-email=x@y.example")], "auto-submitted"),
        ([("AUTO-SUBMITTED", " Auto-Generated ")], "auto-submitted"),
        # Malformed or empty is still "not no": err on the side of not answering.
        ([("Auto-Submitted", "")], "auto-submitted"),
        ([("Auto-Submitted", "no"), ("Auto-Submitted", "auto-generated")], "auto-submitted"),
        ([("Precedence", "bulk")], "precedence-bulk"),
        ([("Precedence", "Bulk ")], "precedence-bulk"),
        ([("precedence", "list")], "precedence-list"),
        ([("Precedence", "junk")], "precedence-junk"),
        ([("List-Id", "<dev.lists.example.org>")], "list-header"),
        ([("list-id", "Dev <dev.lists.example.org>")], "list-header"),
        ([("List-Unsubscribe", "<mailto:leave@lists.example.org>")], "list-header"),
        ([("List-Post", "NO")], "list-header"),
        ([("List-Help", "<mailto:help@lists.example.org>")], "list-header"),
        ([("X-Auto-Response-Suppress", "All")], "auto-response-suppress"),
        ([("X-Auto-Response-Suppress", "OOF")], "auto-response-suppress"),
        ([("X-Auto-Response-Suppress", "DR, RN, NRN")], "auto-response-suppress"),
        ([("x-auto-response-suppress", "AutoReply")], "auto-response-suppress"),
        ([("X-Autoreply", "yes")], "x-autoreply"),
        ([("X-Autorespond", "Thanks")], "x-autoreply"),
        ([("X-AutoResponse", "1")], "x-autoreply"),
        ([("Return-Path", "<>")], "null-sender"),
        ([("Return-Path", " < > ")], "null-sender"),
        ([("Content-Type", "multipart/report; report-type=delivery-status; boundary=b")], "dsn"),
        ([("content-type", "Multipart/Report; report-type=disposition-notification")], "dsn"),
    ],
)
def test_header_rules(headers: Headers, reason: str) -> None:
    assert classify(headers, HUMAN, HUMAN, "Printer broken") == Automatic(reason)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Auto-Submitted", "no")],
        [("Auto-Submitted", "No (explicitly human)")],
        [("Precedence", "first-class")],
        [("Precedence", "bulky")],
        [("Return-Path", f"<{HUMAN}>")],
        [("Content-Type", "multipart/mixed; boundary=x")],
        [("Content-Type", "text/plain; name=multipart/report")],
        [("X-Listed-By", "crm"), ("Mailing", "weekly")],
        [("X-MS-Exchange-Inbox-Rules-Loop", "alice@customer.example")],
    ],
)
def test_human_headers(headers: Headers) -> None:
    assert classify(headers, HUMAN, HUMAN, "Printer broken") is None


@pytest.mark.parametrize("envelope_from", ["", "<>", " <> "])
def test_null_envelope_sender(envelope_from: str) -> None:
    assert classify([], envelope_from, HUMAN, "Hello") == Automatic("null-sender")


def test_unknown_envelope_sender_is_not_null() -> None:
    assert classify([], None, HUMAN, "Hello") is None


def test_report_wins_over_null_sender() -> None:
    headers = [("Return-Path", "<>"), ("Content-Type", "multipart/report; report-type=x")]
    assert classify(headers, "", "MAILER-DAEMON@mx.example", "Undelivered") == Automatic("dsn")


@pytest.mark.parametrize(
    "from_addr",
    [
        "MAILER-DAEMON@mx.example",
        "mailer-daemon@mx.example",
        "postmaster@example.com",
        "Postmaster+alerts@example.com",
        "noreply@example.com",
        "NoReply@example.com",
        "noreply-billing@example.com",
        "no-reply@example.com",
        "no-reply-notifications@example.com",
        "do-not-reply@example.com",
        "DoNotReply@example.com",
        "dev-request@lists.example.org",
        "owner-dev@lists.example.org",
        "bounce@example.com",
        "bounces+123-abc@example.com",
        "Acme Billing <noreply@acme.example>",
    ],
)
def test_role_addresses(from_addr: str) -> None:
    assert classify([], HUMAN, from_addr, "Your receipt") == Automatic("role-address")


@pytest.mark.parametrize(
    "from_addr",
    [
        "reply@example.com",
        "noel@example.com",
        "owner@example.com",
        "requests@example.com",
        "postmaster-jones@example.com",
        "bob@noreply.example.com",
        "bounty@example.com",
        "not-an-address",
        "",
    ],
)
def test_people_are_not_role_addresses(from_addr: str) -> None:
    assert classify([], HUMAN, from_addr, "Your receipt") is None


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: [#12] VPN down",
        "AUTOMATIC REPLY: VPN down",
        "Réponse automatique : [#12] VPN",
        "Réponse automatique\u00a0: [#12] VPN",
        "Re\u0301ponse automatique\u202f: VPN",
        "Reponse automatique: VPN",
        "Out of Office: VPN down",
        "Out of Office AutoReply: VPN down",
        "Absence du bureau : VPN",
        "Abwesenheitsnotiz: VPN",
        "Automatische Antwort: VPN",
        "  Autoreply: VPN",
    ],
)
def test_out_of_office_subject_alone(subject: str) -> None:
    # Some autoresponders send no RFC 3834 header at all; the subject has to do.
    assert classify([], HUMAN, HUMAN, subject) == Automatic("out-of-office", out_of_office=True)


@pytest.mark.parametrize(
    "subject",
    [
        "Auto: insurance quote for my car",
        "Absent today",
        "Out of office policy",
        "Vacation request",
        "Re: Automatic reply: VPN down",
        "Fwd: Out of Office: VPN down",
    ],
)
def test_people_may_write_out_of_office_words(subject: str) -> None:
    assert classify([], HUMAN, HUMAN, subject) is None


@pytest.mark.parametrize(
    ("headers", "subject"),
    [
        ([("Auto-Submitted", "auto-replied")], "Auto: Re: VPN down"),
        ([("Auto-Submitted", "auto-replied")], "Out of Office"),
        ([("X-Autoreply", "yes")], "Out of the office until Monday"),
        ([("X-Auto-Response-Suppress", "All")], "Absence du bureau"),
        ([("X-MS-Exchange-Inbox-Rules-Loop", HUMAN)], "Absent"),
        ([("Return-Path", "<>")], "OOO until 3 April"),
        ([("Auto-Submitted", "auto-replied (zimbra; vacation)")], "Re: VPN down"),
    ],
)
def test_out_of_office_with_reply_headers(headers: Headers, subject: str) -> None:
    assert classify(headers, None, HUMAN, subject) == Automatic("out-of-office", out_of_office=True)


def test_auto_reply_that_is_not_out_of_office() -> None:
    # A ticket system's acknowledgement is automatic but nobody is away.
    headers = [("Auto-Submitted", "auto-replied")]
    assert classify(headers, HUMAN, HUMAN, "[Ticket#991] We received your request") == Automatic(
        "auto-submitted"
    )


def test_newsletter_about_vacations_is_not_out_of_office() -> None:
    headers = [("List-Id", "<news.example.com>"), ("Precedence", "bulk")]
    result = classify(headers, HUMAN, HUMAN, "Vacation deals: 20% off")
    assert result == Automatic("precedence-bulk")


HOST = "helpdesk.example"


@pytest.mark.parametrize(
    ("headers", "hostname", "expected"),
    [
        ([("X-Mailgate-Loop", HOST)], HOST, True),
        ([("x-mailgate-loop", " HelpDesk.Example ")], HOST, True),
        ([("X-Mailgate-Loop", HOST)], "HELPDESK.EXAMPLE", True),
        ([("X-Mailgate-Loop", "other.example")], HOST, False),
        ([("X-Mailgate-Loop", f"x.{HOST}")], HOST, False),
        ([("Message-ID", f"<t-1.2@{HOST}>"), ("X-Mailgate-Kind", "ack")], HOST, True),
        ([("message-id", " <T-1.2@HELPDESK.example> "), ("x-mailgate-kind", "")], HOST, True),
        # Our Message-ID alone is not enough: a person can reply quoting it.
        ([("Message-ID", f"<t-1.2@{HOST}>")], HOST, False),
        ([("Message-ID", f"<t-1.2@mx.{HOST}>"), ("X-Mailgate-Kind", "ack")], HOST, False),
        ([("Message-ID", "<t-1.2@other.example>"), ("X-Mailgate-Kind", "ack")], HOST, False),
        ([("In-Reply-To", f"<t-1.2@{HOST}>"), ("X-Mailgate-Kind", "ack")], HOST, False),
        ([("X-Mailgate-Loop", "")], "", False),
        ([("Message-ID", "<t-1.2@>"), ("X-Mailgate-Kind", "ack")], "", False),
        ([], HOST, False),
    ],
)
def test_is_our_loop(headers: Headers, hostname: str, expected: bool) -> None:
    assert is_our_loop(headers, hostname) is expected


def test_bounce_of_our_mail_is_not_our_loop_at_top_level() -> None:
    # The marker sits in the returned message, not in the bounce's own headers.
    headers, _, _ = _load("postfix_dsn_511.eml")
    assert is_our_loop(headers, HOST) is False
