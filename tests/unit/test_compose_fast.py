"""core/compose.py: `compose_bytes`, the sender's fast path, says what the reference `compose`
(EmailMessage, headerregistry) says, header by header and part by part, whatever a customer
put in a name or a subject; it writes, byte for byte, what the stdlib's generator writes for
the same compat32 message (and what it wrote before: golden digests); and it gives the same
bytes twice (a retry)."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.charset import BASE64, QP, Charset
from email.header import Header, decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailgate.core.compose import _POLICY as COMPAT32
from mailgate.core.compose import _UTF8 as FAST_UTF8
from mailgate.core.compose import (
    Outgoing,
    _addr_spec,
    _EncodedText,
    _headers,
    _mailbox,
    _qp_body,
    _text,
    address,
    boundary_for,
    compose,
    compose_bytes,
    one_line,
)

LONG_ASCII = "Printer broken since yesterday, the screen stays black and nothing prints at all " * 2
NAMES = [
    "",
    "Jean Dupont",
    "Dupont, Jean",
    'Jean "JD" Dupont',
    "Jérôme Dupont",
    "Jérôme «Dupont», Jr.",
    "Ωμέγα 中文 名前",
    "Eve\r\nBcc: victim@evil.example",
    "x" * 150,
    "Jérôme " * 20,
]
SUBJECTS = [
    "Bonjour",
    "[#1234] Demande reçue : Imprimante en panne depuis hier, écran noir",
    LONG_ASCII,
    "Aide\r\nBcc: victim@evil.example\r\n\r\nbody",
    "=?utf-8?q?already_encoded?= =_mg_ boundary-like",
    "é" * 300,
]


ADDRESS_HEADERS = {"From", "To", "Reply-To"}


def _out(**changes: object) -> Outgoing:
    values: dict[str, object] = {
        "kind": "confirmation",
        "to_addr": "jean@client.example",
        "to_name": "Jean Dupont",
        "subject": "[#12] Demande reçue",
        "text": "Bonjour,\n\nVotre demande #12 est reçue.\n\nLe support\n",
        "html": "<p>Bonjour,</p>\n<p>Votre demande <strong>#12</strong> est reçue.</p>\n",
        "from_addr": "support@example.com",
        "from_name": "Support Exemple",
        "message_id": "mg.0123456789abcdef@mg.test",
        "date": datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
        "hostname": "mg.test",
        "ticket_id": 12,
        "reply_to": "support+t12.abc@example.com",
        "in_reply_to": "a@client.example",
        "references": ("x@client.example", "a@client.example"),
        "auto_submitted": "auto-replied",
        "locale": "fr",
    }
    values.update(changes)
    return Outgoing(**values)  # type: ignore[arg-type]


def _parsed(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def _mailboxes(msg: EmailMessage, name: str) -> list[tuple[str, str]]:
    """(display name, address) of each mailbox; the name without its spaces, since
    policy.default's parser adds one where an encoded word ends inside a word."""
    found = getaddresses([str(msg[name])])
    return [("".join(n.split()), a) for n, a in found]


def _same_mail(out: Outgoing) -> bytes:
    fast = compose_bytes(out)
    ref, got = _parsed(compose(out).as_bytes()), _parsed(fast)
    assert [k.lower() for k in got.keys()] == [k.lower() for k in ref.keys()]
    for name in ref.keys():
        if name not in ADDRESS_HEADERS:
            assert str(got[name]) == str(ref[name]), name
    for name in ADDRESS_HEADERS & set(ref.keys()):
        assert _mailboxes(got, name) == _mailboxes(ref, name), name
    ref_parts, got_parts = list(ref.walk()), list(got.walk())
    assert [p.get_content_type() for p in got_parts] == [p.get_content_type() for p in ref_parts]
    for r, g in zip(ref_parts, got_parts, strict=True):
        if not r.is_multipart():
            assert g.get_content() == r.get_content()
            assert g["Content-Transfer-Encoding"] == "quoted-printable"
    head = fast.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert b"\n" not in head.replace(b"\r\n", b"")  # every line ends CRLF, nothing bare
    return fast


@pytest.mark.parametrize("name", NAMES)
def test_a_name_reads_the_same_and_stays_in_its_header(name: str):
    raw = _same_mail(_out(to_name=name, from_name=name))
    if not name.isascii():  # RFC 2047 decoding gives back the name itself, to the letter
        to = message_from_bytes(raw, policy=policy.compat32)["To"]
        assert str(make_header(decode_header(to))) == f"{one_line(name, 100)} <jean@client.example>"


@pytest.mark.parametrize("subject", SUBJECTS)
def test_a_subject_reads_the_same_and_stays_in_its_header(subject: str):
    raw = _same_mail(_out(subject=subject))
    names = [
        line.split(b":", 1)[0].lower()
        for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if line[:1] not in b" \t"
    ]
    assert b"bcc" not in names and len(names) == len(set(names))


@pytest.mark.parametrize(
    "changes",
    [
        {"html": None},  # a text-only kind
        {"reply_to": None, "in_reply_to": None, "references": ()},
        {"auto_submitted": None, "kind": "agent_reply"},
        {"ticket_id": None},
        {"references": tuple(f"r{i}@client.example" for i in range(30))},
        {"to_addr": "a,b@client.example"},  # a local part that must be quoted
        {"locale": "en", "text": "line\r\nwith CRLF and trailing space \n" + "é" * 200},
    ],
    ids=repr,
)
def test_every_shape_of_mail_reads_the_same(changes: dict[str, object]):
    _same_mail(_out(**changes))


def test_assembling_twice_gives_the_same_bytes():
    assert compose_bytes(_out()) == compose_bytes(_out())
    assert compose_bytes(_out()) != compose_bytes(_out(message_id="mg.other@mg.test"))


@pytest.mark.parametrize(
    "address",
    ["eve@client.example\r\nBcc: victim@evil.example", "eve@client.example\n", "no-at-sign",
     "@client.example", "eve@", "eve@client.example\x00"],
)  # fmt: skip
def test_an_address_that_is_not_one_addr_spec_is_refused(address: str):
    with pytest.raises(ValueError):
        compose_bytes(_out(to_addr=address))
    with pytest.raises(ValueError):
        compose_bytes(_out(reply_to=address))


@pytest.mark.parametrize("field", ["message_id", "in_reply_to", "hostname", "locale"])
def test_cr_lf_in_any_other_value_is_refused(field: str):
    with pytest.raises(ValueError):
        compose_bytes(_out(**{field: "x@y\r\nBcc: victim@evil.example"}))


@pytest.mark.parametrize("broken", ["Fa\udce9ture", "\ud800", "ok \udcff\udcfe end"])
def test_undecodable_text_echoed_from_a_broken_mail_is_sent_as_replacement_characters(
    broken: str,
):
    raw = _same_mail(_out(subject=broken, to_name=broken, text=broken, html=broken))
    msg = _parsed(raw)
    assert "\ufffd" in str(msg["Subject"]) and "\ufffd" in msg.get_body(("plain",)).get_content()


def _stdlib_utf8() -> Charset:
    stock = Charset("utf-8")
    stock.header_encoding, stock.body_encoding = BASE64, QP
    return stock


def test_long_non_ascii_headers_are_split_as_the_stdlib_splits_them():
    """compose's UTF-8 charset splits encoded words in linear time: the lines must be the
    stdlib's own, whatever the mix of 1- to 4-byte characters and the line lengths."""
    rng = random.Random(20261202)
    alphabet = 'ab Z,;"<>=?_-' + "éàçÉ«»" + "€中文名前’" + "😀𝄞"
    stock = _stdlib_utf8()
    texts = SUBJECTS + NAMES + ["".join(rng.choices(alphabet, k=rng.randrange(0, 400)))
                                for _ in range(300)]  # fmt: skip
    for text in texts:
        widths = [rng.choice([1, 5, 12, 20, 40, 64, 78, 200]) for _ in range(400)]
        assert FAST_UTF8.header_encode_lines(text, iter(widths)) == stock.header_encode_lines(
            text, iter(widths)
        ), text
        for name in ("Subject", "To", "X-A-Rather-Long-Header-Name-Here"):
            assert Header(text, FAST_UTF8, header_name=name).encode(linesep="\r\n") == Header(
                text, stock, header_name=name
            ).encode(linesep="\r\n"), text
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: refused as the stdlib does
        FAST_UTF8.header_encode_lines("a\ud800b", iter([70] * 9))


def test_a_long_non_ascii_subject_is_folded_as_header_folds_it():
    """compose writes a long non-ASCII subject's encoded words itself: the same folded lines
    as email.header.Header under the policy, whatever the text (line breaks as Python's
    splitlines sees them included, where Header drops or splits) and the header's name."""
    rng = random.Random(1202)
    alphabet = 'ab Z,;:"<>=?_-\t' + "éàçÉ«»" + "€中文名前’" + "😀𝄞" + "\x85\u2028\u2029\x0b\x0c"
    texts = SUBJECTS + NAMES + ["é" * n for n in range(60, 90)]
    texts += [t + end for t in ("Écran noir", "é" * 70) for end in "\x85\u2028\u2029\x0b\x0c"]
    texts += ["".join(rng.choices(alphabet, k=rng.randrange(1, 400))) for _ in range(200)]
    for text in (t for t in texts if not t.isascii()):
        for name in ("Subject", "X-A-Very-Long-Header-Name-Of-Sixty-Characters-Or-So-Really-Yes"):
            made = _EncodedText(text, name)
            assert COMPAT32.fold_binary(name, made) == COMPAT32.fold_binary(
                name, Header(text, FAST_UTF8, header_name=name)
            ), (name, text)
            for width in (0, None, 40, 41, 42, 43, 61):
                assert made.encode(maxlinelen=width, linesep="\r\n") == Header(
                    text, FAST_UTF8, header_name=name
                ).encode(maxlinelen=width, linesep="\r\n"), (name, text, width)


# -- byte for byte: the stdlib's generator --------------------------------------------------


class _Built(Message):
    """A compat32 message or part whose content type is known without parsing it."""

    def __init__(self, content_type: str, boundary: str | None = None) -> None:
        super().__init__(policy=COMPAT32)
        self._content_type = content_type
        self._boundary = boundary

    def get_content_type(self) -> str:
        return self._content_type

    def get_boundary(self, failobj: Any = None) -> Any:
        return failobj if self._boundary is None else self._boundary


def _part(body: str, subtype: str) -> Message:
    if not body.endswith(("\n", "\r")):
        body += "\n"
    part = _Built(f"text/{subtype}")
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(FAST_UTF8.body_encode(body))
    return part


def _generated(out: Outgoing) -> bytes:
    """What compose_bytes wrote before it wrote bytes itself: a compat32 Message of the same
    headers and parts, flattened by the stdlib's BytesGenerator (quoprimime's encoder)."""
    boundary = boundary_for(out.message_id) if out.html else None
    msg = _Built("multipart/alternative" if out.html else "text/plain", boundary)
    msg["From"] = _mailbox(out.from_addr, out.from_name, "From")
    msg["To"] = _mailbox(out.to_addr, out.to_name, "To")
    msg["Subject"] = _text(one_line(out.subject, 250), "Subject")
    rest = _headers(out)
    msg["Date"], msg["Message-ID"] = rest[0][1], rest[1][1]
    if out.reply_to:
        msg["Reply-To"] = _mailbox(out.reply_to, out.from_name, "Reply-To")
    for name, value in rest[2:]:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    if out.html:
        msg["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        msg.attach(_part(out.text, "plain"))
        msg.attach(_part(out.html, "html"))
    else:
        text = _part(out.text, "plain")
        for name, value in text.items():
            msg[name] = value
        msg.set_payload(text.get_payload())
    msg["Content-Language"] = out.locale
    return msg.as_bytes()


# Quoted-printable's corners: "=" and escapes about the 76th column, white space ending a line
# at every length about it, "." alone, CR alone, line breaks other than CR and LF, astral
# characters, NUL and DEL.
_ALPHABET = ("abc XYZ 019 .,;:!?=_-'\"<>()[]{}~" * 3) + "\t\r\n\n\r\n" + "éàÉ«»€中’😀𝄞"
_ALPHABET += "\x85\u2028\u2029\x0b\x0c\x1c\x00\x7f\x1b" + " " * 8


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choices(_ALPHABET, k=rng.randrange(0, 500)))
    lines = [
        rng.choice(["", ".", " ", "\t", "From me", "é" * rng.randrange(20, 30)])
        if rng.random() < 0.3
        else "".join(rng.choices("ab=é ", k=rng.randrange(60, 90)))
        + rng.choice(["", " ", "\t", "=", "é", "  "])
        for _ in range(rng.randrange(1, 12))
    ]
    return "\n".join(lines) + rng.choice(["\n", "\r\n", "\r", " ", ""])


def test_quoted_printable_bodies_are_the_stdlib_s_to_the_byte():
    rng = random.Random(20261202)
    texts = ["", "\n", "\r", ".", "x" * 76 + " ", "=" * 200, "a" * 74 + "\t\n" + "a" * 75 + " "]
    texts += [_random_text(rng) for _ in range(3000)]
    texts += ["a" * n + end for n in range(70, 80) for end in (" ", "\t", "=", "é", "=\n")]
    for text in texts:
        stdlib = FAST_UTF8.body_encode(text) if text else text
        assert _qp_body(text) == stdlib.replace("\n", "\r\n").encode("ascii"), repr(text)


PARIS = ZoneInfo("Europe/Paris")
DATES = [  # the same instant in other zones, the hour that comes twice, microseconds
    datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
    datetime(2026, 1, 5, 10, 30, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 1, 5, 10, 30, tzinfo=PARIS),
    datetime(2026, 10, 25, 2, 30, tzinfo=PARIS),
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS),
    datetime(2026, 1, 5, 9, 30, 59, 999999, tzinfo=UTC),
    datetime(2026, 1, 5, 9, 30),
]


def test_the_bytes_are_the_stdlib_generator_s_whatever_the_mail():
    rng = random.Random(1202)
    for _ in range(1500):
        out = _out(
            date=rng.choice(DATES),
            text=_random_text(rng),
            html=rng.choice([None, "", _random_text(rng), "<p>Bonjour</p>\n"]),
            subject=rng.choice([*SUBJECTS, "".join(rng.choices(_ALPHABET, k=rng.randrange(300)))]),
            to_name=rng.choice([*NAMES, "".join(rng.choices(_ALPHABET, k=rng.randrange(120)))]),
            from_name=rng.choice(NAMES),
            locale=rng.choice(["fr", "en"]),
            ticket_id=rng.choice([None, 12345]),
            reply_to=rng.choice([None, "support+t1.x@example.com"]),
            in_reply_to=rng.choice([None, "a@client.example", "x" * 120 + "@c.example"]),
            references=tuple(f"r{i}@client.example" for i in range(rng.randrange(25))),
            auto_submitted=rng.choice([None, "auto-replied"]),
            message_id=f"mg.{rng.randrange(10**12)}@mg.test",
        )
        assert compose_bytes(out) == _generated(out), out


GOLDEN = {  # sha256 of the bytes as the stdlib's generator wrote them (December 2026)
    "default": ({}, "f1f4aeae8e9eb075531065ad2e468eb3ddd89b553729789e8b28c7a0fb9768e1"),
    "text only": (
        {"html": None},
        "55e71091df3cd0daeaab372649a726d66ddea282c23a14a7e1efb891f30513cf",
    ),
    "long names": (
        {"to_name": NAMES[5], "from_name": NAMES[9]},
        "2970cab0d78e4c424e61809bcd670b425023827002a310c3324c9a4e301847cc",
    ),
    "long subject": (
        {"subject": SUBJECTS[5]},
        "2615549bd64a5bc9a6f1249bfca4523e4e857abb8566618b611e16dc03758022",
    ),
    "long lines": (
        {
            "text": "line\r\nwith CRLF and trailing space \n" + "é" * 200 + "\n" + "=" * 90 + "\t",
            "html": "<p>" + "x" * 150 + " </p>",
        },
        "8976df042dc4ee5f2f6740d319111ce48c8ff8a18bb0974d2d7eae142bf829a5",
    ),
}


@pytest.mark.parametrize("case", GOLDEN)
def test_the_bytes_sent_do_not_change(case: str):
    changes, digest = GOLDEN[case]
    assert hashlib.sha256(compose_bytes(_out(**changes))).hexdigest() == digest


@pytest.mark.parametrize(
    "spec",
    ["a@b", "jean.dupont@client.example", "a+b@c.d", "'x'@y", "~!#$%&*+/=?^_`{|}-@x-y.z",
     "a..b@c", ".a@b", "a.@b", "a,b@c", '"a b"@c', "a b@c", "a(x)@b", "a@b@c", "a;b@c",
     "a\\b@c", "é@x.fr", "a@bü.de", "a@[127.0.0.1]", "a@b.", "a@-b"],
)  # fmt: skip
def test_an_address_is_written_as_headerregistry_writes_it(spec: str):
    assert _addr_spec(spec) == address(spec).addr_spec
