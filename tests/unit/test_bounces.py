from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.core.bounces import Bounce, BounceRecipient, parse_dsn

DATA = Path(__file__).resolve().parent.parent / "data" / "automatic"
POSTFIX = (DATA / "postfix_dsn_511.eml").read_bytes()


def _dsn(
    *recipient_blocks: str,
    report_type: str = "delivery-status",
    status_type: str = "message/delivery-status",
    returned: str | None = None,
) -> bytes:
    """A minimal multipart/report built from text blocks, for focused field tests."""
    blocks = "\n\n".join(["Reporting-MTA: dns; mx.example", *recipient_blocks])
    parts = [
        "Content-Type: text/plain\n\nDelivery failed.\n",
        f"Content-Type: {status_type}\n\n{blocks}\n",
    ]
    if returned is not None:
        parts.append(returned)
    body = "".join(f"--b\n{part}\n" for part in parts)
    head = (
        "From: MAILER-DAEMON@mx.example\nTo: support@helpdesk.example\nSubject: failure\n"
        f"MIME-Version: 1.0\nContent-Type: multipart/report; report-type={report_type}; "
        'boundary="b"\n\n'
    )
    return (head + body + "--b--\n").encode("utf-8")


def _one(raw: bytes) -> BounceRecipient:
    bounce = parse_dsn(raw)
    assert bounce is not None
    assert len(bounce.recipients) == 1
    return bounce.recipients[0]


def test_postfix_permanent_failure() -> None:
    assert parse_dsn(POSTFIX) == Bounce(
        recipients=(
            BounceRecipient(
                address="jdoe@example.org",
                action="failed",
                status="5.1.1",
                permanent=True,
                diagnostic="550 5.1.1 <jdoe@example.org>: Recipient address rejected: "
                "User unknown in virtual mailbox table",
            ),
            BounceRecipient(
                address="full.box@example.org",
                action="failed",
                status="5.2.2",
                permanent=True,
                diagnostic="552 5.2.2 Mailbox full",
            ),
        ),
        original_message_id="ticket-1042.7@helpdesk.example",
    )


def test_exchange_delayed_with_headers_only_part() -> None:
    # CRLF sample whose returned part is text/rfc822-headers with a folded Message-ID.
    raw = (DATA / "exchange_dsn_447.eml").read_bytes()
    assert b"\r\n" in raw
    assert parse_dsn(raw) == Bounce(
        recipients=(
            BounceRecipient(
                address="bob.lambert@fabrikam.com",
                action="delayed",
                status="4.4.7",
                permanent=False,
                diagnostic="400 4.4.7 Message delayed",
            ),
        ),
        original_message_id="ticket-1048.3@helpdesk.example",
    )


@pytest.mark.parametrize(
    "name",
    [
        "human.eml",
        "exchange_ooo_en.eml",
        "exchange_ooo_fr.eml",
        "gmail_vacation.eml",
        "zimbra_ooo.eml",
        "mailing_list.eml",
        "noreply.eml",
        "read_receipt_mdn.eml",
    ],
)
def test_samples_that_are_not_dsns(name: str) -> None:
    assert parse_dsn((DATA / name).read_bytes()) is None


RCPT = "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1"


@pytest.mark.parametrize(
    "report_type",
    ["delivery-status", "Delivery-Status", '"delivery-status"', "global-delivery-status"],
)
def test_report_type_accepted(report_type: str) -> None:
    assert _one(_dsn(RCPT, report_type=report_type)).address == "a@example.org"


@pytest.mark.parametrize(
    "raw",
    [
        _dsn(RCPT, report_type="disposition-notification"),
        _dsn(RCPT, report_type="feedback-report"),
        _dsn(RCPT).replace(b"multipart/report", b"multipart/mixed"),
        _dsn(RCPT).replace(b"; report-type=delivery-status", b""),
        b"",
        b"Subject: hi\n\nplain text\n",
        b"Content-Type: message/delivery-status\n\n" + RCPT.encode(),
    ],
)
def test_not_a_delivery_report(raw: bytes) -> None:
    assert parse_dsn(raw) is None


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "Final-Recipient: RFC822; <Alice@Example.ORG>\nAction: Failed\nStatus: 5.1.1",
            BounceRecipient("alice@example.org", "failed", "5.1.1", True, ""),
        ),
        # Original-Recipient is what we sent to; Final-Recipient is the alias target.
        (
            "Original-Recipient: rfc822;help@corp.example\n"
            "Final-Recipient: rfc822;h.jones@mail.corp.example\nAction: failed\nStatus: 5.1.1",
            BounceRecipient("help@corp.example", "failed", "5.1.1", True, ""),
        ),
        (
            "Original-Recipient: unknown; garbage\n"
            "Final-Recipient: rfc822;h.jones@mail.corp.example\nAction: failed\nStatus: 5.1.1",
            BounceRecipient("h.jones@mail.corp.example", "failed", "5.1.1", True, ""),
        ),
        (
            "Final-Recipient: rfc822;a@example.org\nAction: failed\n"
            "Status: 5.0.0 (permanent failure)",
            BounceRecipient("a@example.org", "failed", "5.0.0", True, ""),
        ),
        (
            "Final-Recipient: rfc822;a@example.org\nAction: failed\nStatus: 5.1.10",
            BounceRecipient("a@example.org", "failed", "5.1.10", True, ""),
        ),
        (
            "Final-Recipient: rfc822;a@example.org\nAction: delayed\nStatus: 4.4.1\n"
            "Diagnostic-Code: X-Postfix; connect to mx.example.org[192.0.2.1]:25:\n"
            "    Connection timed out",
            BounceRecipient(
                "a@example.org",
                "delayed",
                "4.4.1",
                False,
                "connect to mx.example.org[192.0.2.1]:25: Connection timed out",
            ),
        ),
        # Status missing: fall back to the enhanced code inside the SMTP reply.
        (
            "Final-Recipient: rfc822;a@example.org\nAction: failed\n"
            "Diagnostic-Code: smtp; 550-5.7.1 rejected by policy",
            BounceRecipient(
                "a@example.org", "failed", "5.7.1", True, "550-5.7.1 rejected by policy"
            ),
        ),
        (
            "Final-Recipient: rfc822;a@example.org\nAction: failed\nStatus: garbage",
            BounceRecipient("a@example.org", "failed", "", False, ""),
        ),
        (
            "Final-Recipient: rfc822;a@example.org\n"
            "Action: relayed (to non-DSN MTA)\nStatus: 2.0.0",
            BounceRecipient("a@example.org", "relayed", "2.0.0", False, ""),
        ),
        (
            "Final-Recipient: a@example.org\nAction: delivered\nStatus: 2.0.0",
            BounceRecipient("a@example.org", "delivered", "2.0.0", False, ""),
        ),
    ],
)
def test_recipient_fields(block: str, expected: BounceRecipient) -> None:
    assert _one(_dsn(block)) == expected


@pytest.mark.parametrize(
    "block",
    [
        "Action: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822; not an address\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822;\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: x-local; root\nAction: failed\nStatus: 5.1.1",
    ],
)
def test_recipient_without_usable_address_is_skipped(block: str) -> None:
    bounce = parse_dsn(_dsn(block, RCPT))
    assert bounce is not None
    assert [r.address for r in bounce.recipients] == ["a@example.org"]


@pytest.mark.parametrize(
    ("status_type", "address"),
    [
        ("message/global-delivery-status", "jos\u00e9@exemple.fr"),
        ("message/global-delivery-status", "jos\\x{E9}@exemple.fr"),
        # 8-bit in a plain delivery-status is out of spec but seen; read it as UTF-8.
        ("message/delivery-status", "jos\u00e9@exemple.fr"),
    ],
)
def test_utf8_addresses(status_type: str, address: str) -> None:
    blocks = [
        f"Final-Recipient: utf-8; {address}\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: utf-8; ZO\u00c9@exemple.fr\nAction: delayed\nStatus: 4.2.2",
    ]
    bounce = parse_dsn(_dsn(*blocks, report_type="global-delivery-status", status_type=status_type))
    assert bounce == Bounce(
        recipients=(
            BounceRecipient("jos\u00e9@exemple.fr", "failed", "5.1.1", True, ""),
            BounceRecipient("zo\u00e9@exemple.fr", "delayed", "4.2.2", False, ""),
        ),
        original_message_id=None,
    )


def test_report_without_status_part_is_an_empty_bounce() -> None:
    raw = _dsn(RCPT).replace(b"message/delivery-status", b"text/plain")
    assert parse_dsn(raw) == Bounce((), None)


RETURNED_HEADERS = "From: support@helpdesk.example\nMessage-ID: <t-9.1@helpdesk.example>\n"


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, None),
        (f"Content-Type: message/rfc822\n\n{RETURNED_HEADERS}\nbody\n", "t-9.1@helpdesk.example"),
        (f"Content-Type: text/rfc822-headers\n\n{RETURNED_HEADERS}", "t-9.1@helpdesk.example"),
        (
            "Content-Type: text/rfc822-headers\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(RETURNED_HEADERS.encode()).decode(),
            "t-9.1@helpdesk.example",
        ),
        (
            "Content-Type: message/rfc822\n\nMessage-Id: t-9.2@helpdesk.example\n\nbody\n",
            "t-9.2@helpdesk.example",
        ),
        (
            "Content-Type: message/rfc822\n\nMessage-ID:  <t-9.3@helpdesk.example> (comment)\n\n",
            "t-9.3@helpdesk.example",
        ),
        ("Content-Type: message/rfc822\n\nFrom: support@helpdesk.example\n\nbody\n", None),
        ("Content-Type: message/rfc822\n\nMessage-ID: <>\n\nbody\n", None),
        ("Content-Type: text/plain\n\nMessage-ID: <t-9.4@helpdesk.example>\n", None),
    ],
)
def test_original_message_id(returned: str | None, expected: str | None) -> None:
    bounce = parse_dsn(_dsn(RCPT, returned=returned))
    assert bounce is not None
    assert bounce.original_message_id == expected


def test_first_returned_part_wins() -> None:
    first = "Content-Type: message/rfc822\n\nMessage-ID: <first@helpdesk.example>\n\nbody\n"
    second = "Content-Type: text/rfc822-headers\n\nMessage-ID: <second@helpdesk.example>\n"
    bounce = parse_dsn(_dsn(RCPT, returned=f"{first}\n--b\n{second}"))
    assert bounce is not None
    assert bounce.original_message_id == "first@helpdesk.example"


def test_truncated_postfix_bounce_keeps_what_was_read() -> None:
    # Cut inside the returned message, before its Message-ID and the closing boundary.
    cut = POSTFIX.index(b"Subject: [#1042]")
    bounce = parse_dsn(POSTFIX[:cut])
    assert bounce is not None
    assert [r.status for r in bounce.recipients] == ["5.1.1", "5.2.2"]
    assert bounce.original_message_id is None


def _check_invariants(result: Bounce | None) -> None:
    if result is None:
        return
    assert isinstance(result, Bounce)
    for rcpt in result.recipients:
        assert "@" in rcpt.address
        assert rcpt.address == rcpt.address.lower()
        assert rcpt.permanent == rcpt.status.startswith("5.")
    if result.original_message_id is not None:
        assert result.original_message_id.strip()
        assert "<" not in result.original_message_id


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check_invariants(parse_dsn(raw))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(POSTFIX)), st.integers(0, 40), st.binary(max_size=12)),
        min_size=1,
        max_size=6,
    )
)
def test_mangled_real_bounce_never_raises(edits: list[tuple[int, int, bytes]]) -> None:
    # Random bytes rarely look like a report; splicing into a real one reaches the
    # field parsing with hostile content.
    raw = POSTFIX
    for at, drop, insert in edits:
        raw = raw[:at] + insert + raw[at + drop :]
    _check_invariants(parse_dsn(raw))


_FIELD = st.sampled_from(
    ["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code", "X-Junk"]
)
_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60).map(
    lambda s: s.replace("\n", " ").replace("\r", " ")
)


@settings(max_examples=300)
@given(st.lists(st.lists(st.tuples(_FIELD, _VALUE), max_size=6), max_size=4), st.booleans())
def test_hostile_field_values_never_raise(
    blocks: list[list[tuple[str, str]]], global_type: bool
) -> None:
    texts = ["\n".join(f"{name}: {value}" for name, value in block) for block in blocks]
    status_type = "message/global-delivery-status" if global_type else "message/delivery-status"
    _check_invariants(parse_dsn(_dsn(*texts, status_type=status_type)))
