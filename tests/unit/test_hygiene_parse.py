"""Inputs the fuzzers found crashing the parser, kept as files: each one is now either a mail
or a MailParseError (the quarantine's reason), never another exception. And what the ingest
path keeps of the X-Mailgate-* headers a sender wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.core.mail import MailParseError, parse_mail
from mailgate.services.ingest import strip_internal_headers

SEEDS = Path(__file__).resolve().parents[1] / "data" / "fuzz_seeds"


@pytest.mark.parametrize("path", sorted(SEEDS.glob("*.eml")), ids=lambda p: p.name)
def test_seed_parses_or_is_refused_with_a_reason(path: Path):
    try:
        mail = parse_mail(path.read_bytes())
    except MailParseError as exc:
        assert str(exc)
        return
    assert mail.message_id and "@" in mail.from_addr
    assert not any(ord(c) < 0x21 for c in mail.from_addr)


def test_8bit_ids_and_dates_are_read_not_fatal():
    mail = parse_mail((SEEDS / "regress_8bit_message_id.eml").read_bytes())
    assert mail.message_id.endswith("abc@client.example") and len(mail.in_reply_to) == 1
    assert parse_mail((SEEDS / "regress_8bit_date.eml").read_bytes()).date is None
    # A year too large for datetime (found by the hypothesis fuzz test).
    assert parse_mail((SEEDS / "regress_date_overflow.eml").read_bytes()).date is None


def test_a_from_address_with_a_control_character_is_no_address():
    with pytest.raises(MailParseError, match="no From address"):
        parse_mail((SEEDS / "regress_nul_in_from.eml").read_bytes())


def test_internal_headers_are_dropped_but_the_loop_marker_is_kept():
    raw = (
        b"From: eve@client.example\r\nTo: support@example.com\r\nSubject: x\r\n"
        b"X-Mailgate-Kind: agent_reply\r\nX-Mailgate-Ticket: 1\r\nX-Mailgate-Loop: mg.test\r\n"
        b"x-mailgate-agent: alice\r\n\r\nbody\r\n"
    )
    kept = [k.lower() for k, _ in strip_internal_headers(parse_mail(raw)).headers]
    assert [k for k in kept if k.startswith("x-mailgate")] == ["x-mailgate-loop"]
