"""Issue 9: bad input that must not lose mail, and the SMTP listener's limits, over real SMTP
and LMTP on SQLite and PostgreSQL.

- NUL bytes and undecodable text in a mail are stored cleaned (U+FFFD); the raw mail is kept
  byte for byte. A value the database still refuses is quarantined (250), never a 451 loop.
- A line of any length is accepted; only max_message_bytes refuses.
- DATA transactions in flight hold at most max_inflight_bytes together: beyond, 452 before
  the content is read; a finished or dropped transaction gives its share back.
- At most max_recipients RCPT (452 4.5.3 beyond); every reply under 512 octets.
"""

from __future__ import annotations

import base64
import contextlib
import smtplib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.adapters.smtp import stored_reply
from mailgate.store.clean import clean_params, clean_text
from mailgate.store.models import Account, Attachment, Message, Quarantine, Receipt, Ticket
from tests.conftest import make_mail
from tests.support.hygiene import set_inbound
from tests.support.mailflow import (
    LmtpClient,
    is_sqlite,
    mail_bytes,
    sha256,
    smtp_transaction,
)
from tests.support.peers import Mailgate, SmtpSink, wait_until

SUPPORT = "support@example.com"
JEAN = "jean@client.example"
FFFD = "\ufffd"


def _all(mg: Mailgate, model: type) -> list:  # type: ignore[type-arg]
    with mg.app.db.read() as session:
        return list(session.exec(select(model)))


def _raw_kept(mg: Mailgate, raw: bytes) -> None:
    assert mg.app.ingestor.raw(sha256(raw)) == raw  # a small one from the database (rawmail)


def _dirty_mail() -> bytes:
    """NUL in the Subject, the From name, the Message-ID, the body and a filename; the From
    name also holds bytes that are not UTF-8 inside a utf-8 encoded word (the stdlib hands
    them back as lone surrogates, which no database driver can encode)."""
    name = base64.b64encode(b"Jean \xe9\xff Dupont").decode()
    return (
        f"From: =?utf-8?b?{name}?= <{JEAN}>\r\n"
        f"To: {SUPPORT}\r\n"
        "Subject: Imprimante\x00 en panne\r\n"
        f"Message-ID: <nul\x00{uuid.uuid4().hex}@client.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n'
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Bonjour,\x00 mon imprimante ne marche plus.\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        'Content-Disposition: attachment; filename="journal\x00.txt"\r\n'
        "\r\n"
        "erreur 42\r\n"
        "--b--\r\n"
    ).encode()


# -- 1. values the database refuses ----------------------------------------------------------


def test_nul_bytes_and_surrogates_are_stored_cleaned_and_the_raw_mail_kept(
    mailgate: Mailgate, sink: SmtpSink
):
    raw = _dirty_mail()
    result = smtp_transaction(mailgate.smtp_port, raw, [SUPPORT])
    assert result.data_code == 250, result.data
    _raw_kept(mailgate, raw)
    (ticket,) = _all(mailgate, Ticket)
    (message,) = _all(mailgate, Message)
    (account,) = [a for a in _all(mailgate, Account) if a.email == JEAN]
    assert ticket.subject == f"Imprimante{FFFD} en panne"
    assert message.subject == ticket.subject
    assert f"Bonjour,{FFFD} mon imprimante" in message.body_text
    assert message.message_id.startswith(f"nul{FFFD}")
    assert account.name == f"Jean {FFFD}{FFFD} Dupont"
    stored = [a.filename for a in _all(mailgate, Attachment)]
    assert stored and all("\x00" not in f for f in stored), stored
    assert not _all(mailgate, Quarantine)
    (confirmation,) = sink.wait_kind("confirmation", to=JEAN)  # the customer hears back
    assert "\x00" not in str(confirmation.msg["Subject"])

    # The MTA retries the same bytes: found under the cleaned Message-ID, nothing new.
    assert smtp_transaction(mailgate.smtp_port, raw, [SUPPORT]).data_code == 250
    assert len(_all(mailgate, Ticket)) == 1


def test_lmtp_stores_the_same_dirty_mail(mailgate: Mailgate):
    raw = _dirty_mail()
    client = LmtpClient(mailgate.lmtp_port)
    try:
        _, after_data = client.deliver(raw, [SUPPORT])
    finally:
        client.close()
    assert [code for code, _ in after_data] == [250]
    _raw_kept(mailgate, raw)
    (ticket,) = _all(mailgate, Ticket)
    assert ticket.subject == f"Imprimante{FFFD} en panne"


@contextlib.contextmanager
def _pg_refuses_subject(url: str, marker: str) -> Iterator[None]:
    """PostgreSQL refuses a message whose subject holds `marker` with a data exception
    (SQLSTATE 22023), as it would a value too long for its column: a DataError."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"mg_test_refuse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.subject LIKE '%{marker}%' THEN RAISE EXCEPTION 'bad value' "
            "USING ERRCODE = 'invalid_parameter_value'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON message FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
        try:
            yield
        finally:
            conn.execute(f"DROP TRIGGER {name} ON message")
            conn.execute(f"DROP FUNCTION {name}()")


def test_a_value_the_database_refuses_is_quarantined_at_once_not_retried(
    mailgate: Mailgate, database_url: str
):
    if is_sqlite(database_url):
        pytest.skip("SQLite has no data exceptions (any length, any text once cleaned)")
    marker = "refuse-" + uuid.uuid4().hex[:8]
    raw = mail_bytes(make_mail(subject=f"Facture {marker}"))
    with _pg_refuses_subject(database_url, marker):
        result = smtp_transaction(mailgate.smtp_port, raw, [SUPPORT])
    assert result.data_code == 250, result.data  # not 451: a retry would be refused again
    (held,) = _all(mailgate, Quarantine)
    assert held.raw_sha256 == sha256(raw)
    assert "refused a value" in held.reason and "InvalidParameterValue" in held.reason
    assert held.status == "held"
    assert not _all(mailgate, Ticket)
    _raw_kept(mailgate, raw)
    # Redelivered: a duplicate of the receipt, not a second quarantine row.
    assert smtp_transaction(mailgate.smtp_port, raw, [SUPPORT]).data_code == 250
    assert len(_all(mailgate, Quarantine)) == 1


def test_a_message_id_longer_than_its_column_is_stored_not_retried(mailgate: Mailgate):
    """A 1,200-character Message-ID: a 1,200-byte header line, and on PostgreSQL a value too
    long for message.message_id (varchar 998). Stored one way or the other, answered 250."""
    msg = make_mail(message_id=f"<{'x' * 1200}@client.example>")
    raw = mail_bytes(msg)
    assert smtp_transaction(mailgate.smtp_port, raw, [SUPPORT]).data_code == 250
    _raw_kept(mailgate, raw)
    assert len(_all(mailgate, Ticket)) + len(_all(mailgate, Quarantine)) == 1
    (receipt,) = _all(mailgate, Receipt)
    assert receipt.raw_sha256 == sha256(raw)


# -- 2. long lines -------------------------------------------------------------------------


def _long_line_mail(length: int) -> tuple[bytes, str]:
    line = ("commande=" + "0123456789" * (length // 10))[:length]
    head = mail_bytes(make_mail(subject="Export du script", body="placeholder\n"))
    return head.replace(b"placeholder", line.encode()), line


def test_a_5000_byte_line_is_accepted_and_stored(mailgate: Mailgate):
    raw, line = _long_line_mail(5000)
    with smtplib.SMTP("127.0.0.1", mailgate.smtp_port, timeout=30) as s:
        assert s.sendmail(JEAN, [SUPPORT], raw) == {}
    _raw_kept(mailgate, raw)
    (message,) = _all(mailgate, Message)
    assert line in message.body_text.replace("\r\n", "\n")


def test_lmtp_accepts_a_long_line_too(mailgate: Mailgate):
    raw, _ = _long_line_mail(70000)
    client = LmtpClient(mailgate.lmtp_port)
    try:
        _, after_data = client.deliver(raw, [SUPPORT])
    finally:
        client.close()
    assert [code for code, _ in after_data] == [250]
    _raw_kept(mailgate, raw)


def test_only_the_size_limit_refuses_even_on_one_long_line(mailgate: Mailgate):
    limit = mailgate.config.inbound.max_message_bytes
    raw, _ = _long_line_mail(limit + 10)
    result = smtp_transaction(mailgate.smtp_port, raw, [SUPPORT])
    assert result.data is not None and result.data[0] == 552, result.data
    assert not _all(mailgate, Ticket)


# -- 3. memory bound for concurrent DATA ------------------------------------------------------


@pytest.fixture
def tight_mailgate(config_path: Path) -> Iterator[Mailgate]:
    """Room for one full-size message in flight (200 kB) and 100 kB more."""
    set_inbound(config_path, max_message_bytes=200000, max_inflight_bytes=300000)
    mg = Mailgate(config_path)
    yield mg
    mg.stop()


def _open_data(port: int, size: int | None = None) -> tuple[smtplib.SMTP, int, str]:
    """A client that got as far as DATA: (the client, the reply code to DATA, its text)."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.example")
    code, text = s.mail(JEAN, [f"SIZE={size}"] if size else [])
    assert code == 250, (code, text)
    assert s.rcpt(SUPPORT)[0] == 250
    code, text = s.docmd("DATA")
    return s, code, text.decode()


def _finish_data(s: smtplib.SMTP, rest: bytes) -> int:
    s.send(rest + b".\r\n")
    code, _ = s.getreply()
    s.quit()
    return code


def test_data_beyond_the_memory_budget_gets_452_until_the_first_finishes(
    tight_mailgate: Mailgate,
):
    port = tight_mailgate.smtp_port
    first = mail_bytes(make_mail(subject="Premier"))
    second = mail_bytes(make_mail(subject="Second"))

    a, code, _ = _open_data(port)  # no SIZE: reserves max_message_bytes (200 kB)
    assert code == 354
    a.send(first[:100])  # part of the content, the rest later
    b, code, text = _open_data(port)
    assert (code, text) == (452, "4.3.1 Insufficient system storage, try again later")
    b.quit()
    # A client that declares a small SIZE fits in what is left.
    c, code, _ = _open_data(port, size=len(second) + 100)
    assert code == 354
    assert _finish_data(c, second) == 250

    # LMTP shares the budget.
    lmtp = LmtpClient(tight_mailgate.lmtp_port)
    try:
        assert lmtp.command(f"MAIL FROM:<{JEAN}>")[0] == 250
        assert lmtp.command(f"RCPT TO:<{SUPPORT}>")[0] == 250
        assert lmtp.command("DATA")[0] == 452
    finally:
        lmtp.close()

    assert _finish_data(a, first[100:]) == 250
    b, code, _ = _open_data(port)
    assert code == 354
    third = mail_bytes(make_mail(subject="Troisième"))
    assert _finish_data(b, third) == 250
    assert sorted(t.subject for t in _all(tight_mailgate, Ticket)) == [
        "Premier",
        "Second",
        "Troisième",
    ]


def test_a_client_sending_more_than_its_size_gets_452_when_the_rest_does_not_fit(
    tight_mailgate: Mailgate,
):
    port = tight_mailgate.smtp_port
    raw = mail_bytes(make_mail(subject="Plus gros que prévu", body="x" * 5000 + "\n"))
    liar, code, _ = _open_data(port, size=1000)  # reserves 1 kB
    assert code == 354
    holder, code, _ = _open_data(port)  # reserves 200 kB: 99 kB left
    assert code == 354
    # 5 kB arrive for a 1 kB reservation: growing to max_message_bytes does not fit.
    assert _finish_data(liar, raw) == 452
    assert _finish_data(holder, mail_bytes(make_mail(subject="Tenu ouvert"))) == 250
    assert smtp_transaction(port, raw, [SUPPORT]).data_code == 250
    assert sorted(t.subject for t in _all(tight_mailgate, Ticket)) == [
        "Plus gros que prévu",
        "Tenu ouvert",
    ]


def test_a_dropped_connection_gives_its_reservation_back(tight_mailgate: Mailgate):
    port = tight_mailgate.smtp_port
    a, code, _ = _open_data(port)
    assert code == 354
    a.send(b"Subject: half a mail\r\n")
    b, code, _ = _open_data(port)
    assert code == 452  # the budget is taken
    b.quit()
    a.close()  # gone mid-DATA

    def data_possible() -> bool:
        s, code, _ = _open_data(port)
        if code != 354:
            s.quit()
            return False
        assert _finish_data(s, mail_bytes(make_mail(subject="Après coupure"))) == 250
        return True

    wait_until(data_possible, what="the dropped DATA's reservation released")
    (ticket,) = _all(tight_mailgate, Ticket)
    assert ticket.subject == "Après coupure"


# -- 4. recipients per transaction, reply length -------------------------------------------------


def test_the_101st_recipient_gets_452_and_the_mail_goes_to_the_first_100(mailgate: Mailgate):
    rcpts = [f"support+r{i}@example.com" for i in range(101)]
    raw = mail_bytes(make_mail(subject="Beaucoup de destinataires"))
    result = smtp_transaction(mailgate.smtp_port, raw, rcpts)
    assert all(result.rcpt[r][0] == 250 for r in rcpts[:100])
    assert result.rcpt[rcpts[100]] == (452, "4.5.3 Too many recipients")
    assert result.data_code == 250
    assert len(f"{result.data[0]} {result.data[1]}") < 512  # type: ignore[index]
    receipts = _all(mailgate, Receipt)
    assert receipts and rcpts[100] not in {r.recipient for r in receipts}
    assert _all(mailgate, Ticket)


def test_lmtp_gives_one_short_reply_per_accepted_recipient_and_no_more(mailgate: Mailgate):
    rcpts = [f"support+r{i}@example.com" for i in range(101)]
    raw = mail_bytes(make_mail(subject="Beaucoup de destinataires"))
    client = LmtpClient(mailgate.lmtp_port)
    try:
        at_rcpt, after_data = client.deliver(raw, rcpts)
        assert at_rcpt[rcpts[100]][0] == 452
        assert len(after_data) == 100
        assert all(code == 250 and len(text) < 500 for code, text in after_data)
        assert client.command("NOOP")[0] == 250  # nothing more was said after the 100
    finally:
        client.close()


def test_the_250_names_tickets_within_a_short_line():
    assert stored_reply([]) == "250 2.0.0 Stored"
    assert stored_reply([7, 7, 8]) == "250 2.0.0 Stored (ticket 7,8)"
    many = stored_reply(list(range(1_000_000, 1_000_150)))
    assert len(many) < 512 and many.endswith(" more)"), many


def test_cleaning_replaces_what_a_database_refuses_and_nothing_else():
    assert clean_text("a\x00b") == f"a{FFFD}b"
    assert clean_text("caf\udce9 \ud83d\ude00") == f"caf{FFFD} \U0001f600"  # a pair is joined
    assert clean_text("déjà vu 😀") == "déjà vu 😀"
    params = [{"s": "x\x00", "b": b"\x00raw", "n": 3}, ("\udcff",)]
    assert clean_params(params) == [{"s": f"x{FFFD}", "b": b"\x00raw", "n": 3}, (FFFD,)]
