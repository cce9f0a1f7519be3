"""Unit tests for ``mailgate.core.mail.parse_mail`` against the inbound corpus.

The corpus lives in ``tests/data/inbound``. ``expected.json`` records, for every sample that
carries attachments, the *original* attachment bytes (``payload_b64``, single-line base64 taken
from the source bytes, not from the .eml) together with their size and sha256, so attachment
decoding is checked byte for byte independently of the parser.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mailgate.core.mail import Attachment, InboundMail, MailParseError, parse_mail

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "inbound"

VALID_SAMPLES = (
    "gmail_en.eml",
    "outlook_fr.eml",
    "apple_mail.eml",
    "french_qp_latin1.eml",
    "cp1252_subject.eml",
    "rfc2231_attachment.eml",
    "no_message_id.eml",
    "path_traversal_name.eml",
    "accept_language_en.eml",
    "html_only.eml",
    "forwarded_rfc822.eml",
)
INVALID_SAMPLES = ("broken_mime.eml", "garbage.eml")


# --------------------------------------------------------------------------- helpers
def raw(name: str) -> bytes:
    return (DATA_DIR / name).read_bytes()


@cache
def parsed(name: str) -> InboundMail:
    return parse_mail(raw(name))


@cache
def expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA_DIR / "expected.json").read_text(encoding="ascii"))
    return data


def nl(text: str) -> str:
    """Normalise line endings and outer whitespace; everything else must match exactly."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def squash(text: str) -> str:
    """Collapse ASCII whitespace runs only (NBSP / NNBSP are significant and kept)."""
    return re.sub(r"[ \t\r\n]+", " ", text).strip()


def header_values(mail: InboundMail, name: str) -> list[str]:
    return [value for key, value in mail.headers if key.lower() == name.lower()]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def minimal(headers: str, body: str = "Hello.\r\n") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body).encode("utf-8")


# ------------------------------------------------------------------ expected bodies
GMAIL_TEXT = (
    "Hi team,\n"
    "\n"
    "Thanks for the quick reply \u2014 I tried the steps from the \u201cGetting started\u201d "
    "guide, but the export still fails with \u201cAccess denied\u201d (error 0x80070005).\n"
    "\n"
    "I\u2019ve attached the invoice (PDF) and pasted a screenshot below. We\u2019re a small "
    "caf\u00e9 in Z\u00fcrich, so the kiosk export matters a lot to us \U0001f64f\n"
    "\n"
    "[image: screenshot.png]\n"
    "\n"
    "Best regards,\n"
    "Jane\n"
    "\n"
    "On Mon, 11 Mar 2024 at 17:02, Mailgate Support <support@mailgate.example> wrote:\n"
    "\n"
    "> Hello Jane,\n"
    ">\n"
    "> Could you send us a copy of the invoice and a screenshot of the error?\n"
    ">\n"
    "> Mailgate Support\n"
    ">"
)

OUTLOOK_TEXT = (
    "Bonjour,\n"
    "\n"
    "Je n\u2019arrive plus \u00e0 me connecter \u00e0 l\u2019espace client depuis la mise "
    "\u00e0 jour de ce matin. Le message \u00ab\u00a0Mot de passe expir\u00e9\u00a0\u00bb "
    "s\u2019affiche alors que je l\u2019ai chang\u00e9 hier.\n"
    "\n"
    "Vous trouverez ci-joint la facture r\u00e9vis\u00e9e.\n"
    "\n"
    "Cordialement,\n"
    "\n"
    "Camille Dubois\n"
    "Responsable administrative \u2013 Contoso\n"
    "[cid:image001.png@01DA7478.5C4E1F20]\n"
    "\n"
    "De\u00a0: Mailgate Support <support@mailgate.example>\n"
    "Envoy\u00e9\u00a0: lundi 11 mars 2024 18:05\n"
    "\u00c0\u00a0: Camille Dubois <Camille.Dubois@contoso.fr>\n"
    "Objet\u00a0: [#4822] Votre demande a bien \u00e9t\u00e9 re\u00e7ue\n"
    "\n"
    "Bonjour,\n"
    "Votre demande a bien \u00e9t\u00e9 enregistr\u00e9e sous le num\u00e9ro #4822."
)

# format=flowed: compared with ASCII whitespace collapsed, so the parser may or may not unflow.
APPLE_TEXT = (
    "Hello, The billing page shows my plan as \u201cBasic\u201d although I upgraded to Pro "
    "yesterday \u2014 the receipt says 29,00\u00a0\u20ac. Please see the attached screenshot. "
    "Merci d\u2019avance, \u00c9lodie -- \u00c9lodie Martin \u00b7 Studio Lumi\u00e8re"
)

FRENCH_TEXT = (
    "Bonjour,\n"
    "\n"
    "J'ai re\u00e7u ce matin la facture n\u00b0 2024-0312 d'un montant de 149,90 EUR, alors "
    "que le devis sign\u00e9 pr\u00e9voyait 129,90 EUR. Pourriez-vous v\u00e9rifier et "
    "proc\u00e9der au remboursement de la diff\u00e9rence\u00a0?\n"
    "\n"
    "R\u00e9f\u00e9rence client\u00a0: FR-88412\n"
    "Num\u00e9ro de commande\u00a0: CMD-5520 \u00ab\u00a0abonnement annuel\u00a0\u00bb\n"
    "\n"
    "Je reste \u00e0 votre disposition pour tout compl\u00e9ment d'information\u00a0; "
    "o\u00f9 que je sois, je r\u00e9ponds d\u00fbment sous 48 h. Cela dit, ce n'est pas "
    "na\u00eff de ma part d'esp\u00e9rer une r\u00e9ponse avant No\u00ebl\u00a0!\n"
    "\n"
    "Tr\u00e8s cordialement,\n"
    "\n"
    "Fran\u00e7ois L\u00e9v\u00eaque\n"
    "Ma\u00eetre d'\u00e6uvre - b\u00e2timent \u00c9-12"
)

CP1252_TEXT = (
    "Bonjour,\n"
    "\n"
    "La facture re\u00e7ue indique 49,90 \u20ac au lieu de 39,90 \u20ac \u2013 l\u2019offre "
    "\u00ab Printemps \u00bb n\u2019a pas \u00e9t\u00e9 appliqu\u00e9e\u2026\n"
    "C\u2019est un point qui me tient \u00e0 c\u0153ur : merci de corriger la facture.\n"
    "\n"
    "Cordialement,\n"
    "Marc Lef\u00e8vre\n"
    "Lef\u00e8vre & Associ\u00e9s \u2013 Bruxelles"
)

ACCEPT_LANGUAGE_TEXT = (
    "Hi,\n"
    "\n"
    "Could you please reset the MFA device for my account (user: r.patel)? I got a new\n"
    "phone and can't sign in anymore.\n"
    "\n"
    "Thanks,\n"
    "Raj Patel\n"
    "IT Operations | Northwind Traders"
)


# ======================================================== corpus / fixture integrity
def test_corpus_is_complete() -> None:
    for name in (*VALID_SAMPLES, *INVALID_SAMPLES):
        assert (DATA_DIR / name).is_file(), name
    assert set(expected()) <= set(VALID_SAMPLES)


def _check_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds, idat, width, height = 8, [], b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        if kind == b"IDAT":
            idat += body
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)


def _check_pdf(data: bytes) -> None:
    assert data.startswith(b"%PDF-1.") and data.endswith(b"%%EOF\n")
    m = re.search(rb"startxref\n(\d+)\n%%EOF\n$", data)
    assert m is not None
    xref = int(m.group(1))
    assert data[xref : xref + 4] == b"xref"
    offsets = [int(o) for o in re.findall(rb"(\d{10}) 00000 n ", data[xref:])]
    assert offsets
    for number, offset in enumerate(offsets, 1):
        assert data[offset:].startswith(f"{number} 0 obj".encode())


def _check_docx(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert "word/document.xml" in zf.namelist()
        assert "[Content_Types].xml" in zf.namelist()


@pytest.mark.parametrize("name", sorted(expected()))
def test_expected_payloads_are_real_files_and_match_the_eml(name: str) -> None:
    eml = raw(name).replace(b"\r\n", b"\n")
    entry = expected()[name]
    for att in (*entry["attachments"], *entry.get("inner_attachments", ())):
        if att["payload_b64"] is None:  # message/rfc822: compared structurally, not by bytes
            continue
        payload = base64.b64decode(att["payload_b64"], validate=True)
        assert len(payload) == att["size"]
        assert hashlib.sha256(payload).hexdigest() == att["sha256"]
        # the .eml carries exactly these bytes, base64-encoded in 76-column lines
        assert base64.encodebytes(payload) in eml
        if att["content_type"] == "image/png":
            _check_png(payload)
        elif att["content_type"] == "application/pdf":
            _check_pdf(payload)
        elif att["content_type"].endswith("wordprocessingml.document"):
            _check_docx(payload)


# ================================================================ generic contract
@pytest.mark.parametrize("name", VALID_SAMPLES)
def test_valid_samples_parse_to_well_typed_frozen_mail(name: str) -> None:
    mail = parsed(name)
    assert isinstance(mail, InboundMail)
    assert mail.message_id and not mail.message_id.startswith("<")
    assert not mail.message_id.endswith(">")
    assert isinstance(mail.subject, str) and "\n" not in mail.subject and "\r" not in mail.subject
    assert "=?" not in mail.subject
    assert "@" in mail.from_addr and mail.from_addr == mail.from_addr.lower()
    assert "=?" not in mail.from_name
    for group in (mail.to, mail.cc):
        assert isinstance(group, tuple)
        assert all(addr == addr.lower() and "@" in addr for addr in group)
    for group in (mail.reply_to, mail.in_reply_to, mail.references, mail.defects):
        assert isinstance(group, tuple) and all(isinstance(v, str) for v in group)
    for ref in (*mail.in_reply_to, *mail.references):
        assert "<" not in ref and ">" not in ref
    assert mail.date is None or mail.date.utcoffset() is not None
    assert isinstance(mail.headers, tuple)
    assert all(
        isinstance(h, tuple) and len(h) == 2 and all(isinstance(x, str) for x in h)
        for h in mail.headers
    )
    assert header_values(mail, "Received"), "Received headers must be kept"
    assert isinstance(mail.text, str)
    assert mail.html is None or isinstance(mail.html, str)
    assert mail.locale in (None, "fr", "en")
    assert isinstance(mail.attachments, tuple)
    for att in mail.attachments:
        assert isinstance(att, Attachment)
        assert isinstance(att.filename, str) and isinstance(att.payload, bytes)
        assert att.content_type == att.content_type.lower() and att.content_type.count("/") == 1
        assert isinstance(att.inline, bool)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mail.subject = "changed"  # type: ignore[misc]
    if mail.attachments:
        with pytest.raises(dataclasses.FrozenInstanceError):
            mail.attachments[0].payload = b""  # type: ignore[misc]


@pytest.mark.parametrize("name", VALID_SAMPLES)
def test_text_line_endings_are_normalised(name: str) -> None:
    # CRLF on the wire must not leave stray carriage returns (e.g. a trailing "\r")
    assert "\r" not in parsed(name).text


@pytest.mark.parametrize("name", VALID_SAMPLES)
def test_parsing_is_deterministic(name: str) -> None:
    assert parse_mail(raw(name)) == parse_mail(raw(name))


@pytest.mark.parametrize("name", sorted(expected()))
def test_attachments_are_decoded_byte_for_byte(name: str) -> None:
    mail = parsed(name)
    want = expected()[name]["attachments"]
    assert len(mail.attachments) == len(want), [a.filename for a in mail.attachments]
    for att in want:
        if att["payload_b64"] is None:
            matches = [
                a
                for a in mail.attachments
                if (a.filename, a.content_type) == (att["filename"], att["content_type"])
            ]
            assert len(matches) == 1, f"{name}: no attachment {att['filename']!r}"
            got = matches[0]
        else:
            original = base64.b64decode(att["payload_b64"])
            matches = [a for a in mail.attachments if a.payload == original]
            assert len(matches) == 1, f"{name}: no attachment matching {att['filename']!r}"
            got = matches[0]
            assert hashlib.sha256(got.payload).hexdigest() == att["sha256"]
        assert got.content_type == att["content_type"]
        assert got.inline is att["inline"], att["filename"]
        if att["filename"] is not None:
            assert got.filename == att["filename"]


# ========================================================================== gmail
def test_gmail_headers() -> None:
    mail = parsed("gmail_en.eml")
    assert mail.message_id == "CAOp7Z1uQ3d=xL8sV5K0nqE2H9F4bJrTgXcYw6mA+Pz1k_eNdQw@mail.gmail.com"
    assert mail.message_id_synthesized is False
    assert mail.subject == (
        "Re: [#4821] Export fails with \u201cAccess denied\u201d \u2014 any update?"
    )
    assert (mail.from_addr, mail.from_name) == ("jane.doe@gmail.com", "Jane Doe")
    assert mail.to == ("support@mailgate.example",)
    assert mail.cc == ("sean.obrien@example.com", "ops-team@example.com")
    assert mail.reply_to == ()
    assert mail.in_reply_to == ("ticket-4821.1710173051.9f8e7d@mailgate.example",)
    assert mail.references == (
        "ticket-4821.1710176520.a1b2c3@mailgate.example",
        "ticket-4821.1710173051.9f8e7d@mailgate.example",
    )
    assert mail.date == utc(2024, 3, 12, 9, 15, 42)
    assert mail.date is not None and mail.date.utcoffset() == timedelta(hours=1)
    assert len(header_values(mail, "Received")) == 2
    assert mail.locale is None


def test_gmail_bodies() -> None:
    mail = parsed("gmail_en.eml")
    assert nl(mail.text) == GMAIL_TEXT
    assert mail.html is not None
    assert 'class="gmail_quote"' in mail.html
    assert "caf\u00e9 in Z\u00fcrich" in mail.html and "\U0001f64f" in mail.html
    assert 'src="cid:ii_ltoq2x9b0"' in mail.html
    names = {a.filename: a.inline for a in mail.attachments}
    assert names == {"screenshot.png": True, "invoice-2024-03.pdf": False}


# ======================================================================== outlook
def test_outlook_headers() -> None:
    mail = parsed("outlook_fr.eml")
    assert mail.message_id == (
        "PR3P192MB07146B2C3D5E8F9A0B1C2D3E4F5AB@PR3P192MB0714.EURP192.PROD.OUTLOOK.COM"
    )
    assert mail.subject == "RE: [#4822] Probl\u00e8me de connexion \u00e0 l\u2019espace client"
    assert (mail.from_addr, mail.from_name) == ("camille.dubois@contoso.fr", "Camille Dubois")
    assert mail.to == ("support@mailgate.example",)
    assert mail.cc == ("julien.moreau@contoso.fr",)
    assert mail.in_reply_to == ("ticket-4822.1710176700.c0ffee@mailgate.example",)
    assert mail.references == ("ticket-4822.1710176700.c0ffee@mailgate.example",)
    assert mail.date == utc(2024, 3, 12, 13, 42, 16)
    assert [v.strip() for v in header_values(mail, "Thread-Index")] == [
        "AQHadFk3pR6x0y0kS0uY8b7c2mQv3LE1x2aAgAACBwA="
    ]
    assert len(header_values(mail, "Received")) == 3


def test_outlook_locale_prefers_content_language_over_accept_language() -> None:
    # Accept-Language: en-US, Content-Language: fr-FR
    assert parsed("outlook_fr.eml").locale == "fr"


def test_outlook_bodies_and_attachments() -> None:
    mail = parsed("outlook_fr.eml")
    assert nl(mail.text) == OUTLOOK_TEXT
    assert mail.html is not None
    assert '<p class="MsoNormal">' in mail.html and 'class="WordSection1"' in mail.html
    assert "l\u2019espace client depuis la mise \u00e0 jour" in mail.html
    assert 'src="cid:image001.png@01DA7478.5C4E1F20"' in mail.html
    by_name = {a.filename: a for a in mail.attachments}
    # RFC 2047 encoded-word inside a quoted filename parameter, as Exchange sends it
    docx = by_name["Facture mars r\u00e9vis\u00e9e.docx"]
    assert docx.inline is False
    assert docx.payload[:4] == b"PK\x03\x04"
    assert by_name["image001.png"].inline is True


# ===================================================================== apple mail
def test_apple_mail() -> None:
    mail = parsed("apple_mail.eml")
    assert mail.message_id == "8C1E5F2A-3B4D-4E6F-9A0B-1C2D3E4F5A6B@icloud.com"
    assert mail.subject == "Screenshot of the billing page"
    assert (mail.from_addr, mail.from_name) == ("elodie.martin@icloud.com", "\u00c9lodie Martin")
    assert mail.to == ("support@mailgate.example",)
    assert mail.date == utc(2024, 3, 12, 16, 8, 29)
    assert squash(mail.text) == APPLE_TEXT
    assert mail.html is not None and "29,00&nbsp;\u20ac" in mail.html
    assert mail.locale is None
    (image,) = mail.attachments
    # RFC 2231 name with U+202F NARROW NO-BREAK SPACE (macOS screenshot naming)
    assert image.filename == "Screenshot 2024-03-12 at 5.05.11\u202fPM.png"
    assert image.content_type == "image/png" and image.inline is False


# ==================================================================== latin-1 / QP
def test_french_latin1_quoted_printable() -> None:
    mail = parsed("french_qp_latin1.eml")
    assert mail.message_id == "3b7f1c2e-8a4d-4e5f-9c6b-2d1e0f9a8b7c@orange.fr"
    # two adjacent encoded-words over a folded line: no stray whitespace between them
    assert mail.subject == (
        "Re\u00e7u non conforme : demande de remboursement \u00e0 la suite d'une erreur "
        "de facturation"
    )
    assert mail.from_name == "Fran\u00e7ois L\u00e9v\u00eaque"
    assert mail.from_addr == "francois.leveque@orange.fr"
    assert nl(mail.text) == FRENCH_TEXT
    assert "\ufffd" not in mail.text
    assert mail.html is None
    assert mail.attachments == ()
    assert mail.locale == "fr"
    assert mail.date == utc(2024, 3, 13, 8, 1, 9)


# ======================================================================= cp1252
def test_cp1252_subject_and_body() -> None:
    mail = parsed("cp1252_subject.eml")
    assert (
        mail.subject == "Facture de 49,90 \u20ac \u2013 l\u2019offre n\u2019est pas appliqu\u00e9e"
    )
    assert (mail.from_addr, mail.from_name) == (
        "m.lefevre@lefevre-associes.be",
        "Marc Lef\u00e8vre",
    )
    assert mail.message_id == "000001da7530$4a1b2c30$de4f8490$@lefevre-associes.be"
    assert tuple(a.lower() for a in mail.reply_to) == ("compta@lefevre-associes.be",)
    assert mail.to == ("support@mailgate.example",)
    assert nl(mail.text) == CP1252_TEXT
    assert "\ufffd" not in mail.text
    assert mail.locale == "fr"  # Content-Language: fr-be


# ====================================================================== RFC 2231
def test_rfc2231_filenames() -> None:
    mail = parsed("rfc2231_attachment.eml")
    assert mail.subject == "Pi\u00e8ces jointes pour le dossier #4830"
    names = [a.filename for a in mail.attachments]
    assert sorted(names) == sorted(
        [
            "r\u00e9sum\u00e9 \u00e9t\u00e9.pdf",  # filename*=UTF-8''...
            "\u00e9ch\u00e9ancier de paiement 2024 \u2013 version d\u00e9finitive.pdf",  # *0* *1*
            "journal_erreurs_2024-03-12.txt",  # plain continuation *0 *1
        ]
    )
    assert all(a.inline is False for a in mail.attachments)


def test_text_attachment_is_not_merged_into_body() -> None:
    mail = parsed("rfc2231_attachment.eml")
    assert squash(mail.text) == (
        "Bonjour, Voici mon CV, l'\u00e9ch\u00e9ancier sign\u00e9 et le journal d'erreurs "
        "demand\u00e9. Bonne journ\u00e9e, Lucie"
    )
    assert "EACCES" not in mail.text
    log = next(a for a in mail.attachments if a.filename.endswith(".txt"))
    assert log.content_type == "text/plain"
    assert b"\r\n" in log.payload  # CRLF inside a base64 text attachment kept verbatim


# ==================================================================== Message-ID
def test_missing_message_id_is_synthesized_stably() -> None:
    data = raw("no_message_id.eml")
    first, second = parse_mail(data), parse_mail(data)
    assert first.message_id_synthesized is True
    assert first.message_id == second.message_id
    assert first.message_id.endswith("@mailgate.invalid")
    assert "<" not in first.message_id and ">" not in first.message_id
    assert " " not in first.message_id


def test_synthesized_message_id_depends_on_the_bytes() -> None:
    data = raw("no_message_id.eml")
    other = data.replace(b"exit code 2", b"exit code 3")
    assert other != data
    a, b = parse_mail(data), parse_mail(other)
    assert b.message_id_synthesized is True
    assert a.message_id != b.message_id


def test_no_message_id_other_fields() -> None:
    mail = parsed("no_message_id.eml")
    assert mail.subject == "Nightly export job #20240313 failed"
    assert (mail.from_addr, mail.from_name) == (
        "noreply@erp.legacy-corp.example",
        "ERP Notifications",
    )
    assert mail.reply_to == ("it-helpdesk@legacy-corp.example",)
    assert mail.in_reply_to == () and mail.references == ()
    assert "\\\\fs01\\exports\\kiosk.csv" in mail.text
    assert mail.attachments == () and mail.html is None
    assert mail.date == utc(2024, 3, 13, 2, 0, 1)


@pytest.mark.parametrize("name", [n for n in VALID_SAMPLES if n != "no_message_id.eml"])
def test_real_message_ids_are_not_synthesized(name: str) -> None:
    mail = parsed(name)
    assert mail.message_id_synthesized is False
    assert not mail.message_id.endswith("@mailgate.invalid")


# ========================================================================= broken
@pytest.mark.parametrize("name", INVALID_SAMPLES)
def test_unusable_samples_raise(name: str) -> None:
    with pytest.raises(MailParseError):
        parse_mail(raw(name))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n\r\n", id="blank-lines"),
        pytest.param(b"just some text, no header block at all\nsecond line\n", id="no-headers"),
        pytest.param(
            minimal("To: support@mailgate.example\nSubject: hi\nMessage-ID: <a@b.example>\n"),
            id="no-from",
        ),
    ],
)
def test_not_a_usable_mail_raises(data: bytes) -> None:
    with pytest.raises(MailParseError):
        parse_mail(data)


# ================================================================= path traversal
def test_path_traversal_names_are_returned_as_given() -> None:
    mail = parsed("path_traversal_name.eml")
    assert mail.from_addr == "attacker@evil.example"
    assert squash(mail.text) == "Hi, the files you asked for are attached."
    names = [a.filename for a in mail.attachments]
    assert len(names) == 5
    assert "../../etc/passwd" in names
    assert "..\\..\\windows\\evil.exe" in names
    assert "../../.ssh/authorized_keys" in names  # via RFC 2047 in the quoted parameter
    # control characters (NUL, CR LF) in names: must not crash; sanitising is storage's job
    crlf = [n for n in names if n.startswith("evil") and n.endswith("yes.txt")]
    assert len(crlf) == 1
    assert len([n for n in names if n.startswith("nul") and n.endswith("byte.bin")]) == 1


# ========================================================================= locale
def test_accept_language_fallback() -> None:
    mail = parsed("accept_language_en.eml")
    assert header_values(mail, "Content-Language") == []
    assert mail.locale == "en"
    assert mail.subject == "MFA reset request"
    assert mail.from_addr == "raj.patel@northwind.example"
    assert nl(mail.text) == ACCEPT_LANGUAGE_TEXT
    assert mail.message_id == (
        "SA1PR12MB677512C3E4F5A6B7C8D9E0F1A2B3C@SA1PR12MB6775.namprd12.prod.outlook.com"
    )


@pytest.mark.parametrize(
    ("extra", "locale"),
    [
        ("", None),
        ("Content-Language: en-GB\n", "en"),
        ("Content-Language: FR\n", "fr"),
        ("Accept-Language: fr-CA, en-US\n", "fr"),
        ("Content-Language: en-US\nAccept-Language: fr-FR, en-US\n", "en"),
    ],
)
def test_locale_detection(extra: str, locale: str | None) -> None:
    data = minimal(
        "From: a@example.com\nTo: support@mailgate.example\nSubject: x\n"
        "Message-ID: <loc@example.com>\nDate: Wed, 13 Mar 2024 10:00:00 +0000\n" + extra
    )
    assert parse_mail(data).locale == locale


# ====================================================================== html only
def test_html_only_mail_gets_derived_text() -> None:
    mail = parsed("html_only.eml")
    assert mail.subject == "[Shop] New message from Zo\u00eb M\u00fcller"
    assert mail.from_addr == "wordpress@shop.example"
    assert tuple(a.lower() for a in mail.reply_to) == ("zoe.mueller@example.de",)
    assert mail.html is not None and "<p>" in mail.html
    text = squash(mail.text)
    assert "Zo\u00eb M\u00fcller" in text
    # entities decoded, tags dropped
    assert "I can\u2019t log in since Monday & the reset link has expired." in text
    assert "Caf\u00e9 Zo\u00eb" in text
    assert "<" not in text and "&amp;" not in text
    # script / style content is not body text
    assert "tracking" not in text and "margin" not in text


# ============================================================ header edge cases
def test_folded_plain_subject_is_unfolded_and_missing_subject_is_empty() -> None:
    base = "From: a@example.com\nTo: b@example.com\nMessage-ID: <fold@example.com>\n"
    folded = parse_mail(minimal(base + "Subject: This is a rather long\n subject line\n"))
    assert folded.subject == "This is a rather long subject line"
    assert parse_mail(minimal(base)).subject == ""


def test_minus_zero_timezone_date_is_aware_utc() -> None:
    mail = parse_mail(
        minimal(
            "From: a@example.com\nTo: b@example.com\nMessage-ID: <tz@example.com>\n"
            "Date: Tue, 12 Mar 2024 10:15:42 -0000\n"
        )
    )
    assert mail.date is not None and mail.date.utcoffset() is not None
    assert mail.date == utc(2024, 3, 12, 10, 15, 42)


def test_unparseable_date_is_none() -> None:
    mail = parse_mail(
        minimal(
            "From: a@example.com\nTo: b@example.com\nMessage-ID: <d@example.com>\n"
            "Date: sometime last tuesday\n"
        )
    )
    assert mail.date is None


def test_message_id_brackets_and_whitespace_stripped() -> None:
    mail = parse_mail(
        minimal(
            "From: A Person <A.Person@Example.com>\nTo: b@example.com\n"
            "Message-ID:\n <Folded.ID-123@Example.com>\n"
            "In-Reply-To: <x1@example.com>\n"
            "References: <x0@example.com>\n <x1@example.com>\n"
        )
    )
    assert mail.message_id == "Folded.ID-123@Example.com"  # ids are case-sensitive
    assert mail.from_addr == "a.person@example.com"
    assert mail.in_reply_to == ("x1@example.com",)
    assert mail.references == ("x0@example.com", "x1@example.com")


# ============================================================ forwarded message
def test_forwarded_message_is_one_attachment_not_merged_into_body() -> None:
    mail = parsed("forwarded_rfc822.eml")
    assert mail.message_id == "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0@contoso.fr"
    assert mail.subject == "Fwd: Commande 5520 bloqu\u00e9e"
    assert mail.from_addr == "julien.moreau@contoso.fr"
    assert squash(mail.text) == (
        "Bonjour le support, je vous transf\u00e8re la r\u00e9clamation du client ci-jointe. Julien"
    )
    assert "CMD-5520" not in mail.text  # the forwarded mail's body stays in the attachment
    (fwd,) = mail.attachments  # the inner PDF is part of the .eml, not a sibling
    assert fwd.content_type == "message/rfc822"
    assert fwd.filename == "Commande 5520 bloqu\u00e9e.eml"
    assert fwd.inline is False
    inner = parse_mail(fwd.payload)
    assert inner.message_id == "5d2c9e1a-7b3f-4a6d-8e0c-1f2a3b4c5d6e@boulangerie-martin.example"
    assert inner.subject == "Commande 5520 bloqu\u00e9e"
    assert inner.from_addr == "achats@boulangerie-martin.example"
    assert "Notre commande CMD-5520 est bloqu\u00e9e depuis vendredi." in inner.text
    (want,) = expected()["forwarded_rfc822.eml"]["inner_attachments"]
    (pdf,) = inner.attachments
    assert pdf.filename == want["filename"]
    assert hashlib.sha256(pdf.payload).hexdigest() == want["sha256"]


# ============================================================== address parsing
@pytest.mark.parametrize(
    ("from_header", "addr", "name"),
    [
        pytest.param(
            '"Dupont, Jean" <Jean.Dupont@example.fr>',
            "jean.dupont@example.fr",
            "Dupont, Jean",
            id="quoted-comma",
        ),
        pytest.param(  # Exchange "Last, First" display names with accents
            "=?iso-8859-1?Q?Moreau=2C_J=E9r=F4me?= <Jerome.Moreau@contoso.fr>",
            "jerome.moreau@contoso.fr",
            "Moreau, J\u00e9r\u00f4me",
            id="encoded-comma",
        ),
        pytest.param(  # spoofing: an address hidden in the encoded display name
            "=?utf-8?Q?support=40mailgate.example?= <evil@attacker.example>",
            "evil@attacker.example",
            "",  # an address-like name is dropped: nobody is shown it as if it were one
            id="encoded-at-sign",
        ),
        pytest.param(
            "=?utf-8?Q?Boss_=3Cceo=40corp.example=3E?= <evil@attacker.example>",
            "evil@attacker.example",
            "",
            id="encoded-angle-addr",
        ),
    ],
)
def test_encoded_display_names_never_change_the_address(
    from_header: str, addr: str, name: str
) -> None:
    mail = parse_mail(
        minimal(
            f"From: {from_header}\nTo: support@mailgate.example\n"
            f"Cc: {from_header}, other@example.com\nMessage-ID: <addr@example.com>\n"
        )
    )
    assert (mail.from_addr, mail.from_name) == (addr, name)
    assert mail.cc == (addr, "other@example.com")


def test_raw_utf8_headers_are_decoded() -> None:
    # RFC 6532 / SMTPUTF8 and many sloppy mailers put raw UTF-8 in headers
    data = (
        "From: \u00c9lodie Martin <elodie@example.com>\r\n"
        "To: support@mailgate.example\r\n"
        "Message-ID: <raw8@example.com>\r\n"
        "Subject: R\u00e9clamation \u2013 facture n\u00b0 12\r\n"
        "\r\n"
        "Corps du message.\r\n"
    ).encode("utf-8")
    mail = parse_mail(data)
    assert mail.subject == "R\u00e9clamation \u2013 facture n\u00b0 12"
    assert mail.from_name == "\u00c9lodie Martin"
    assert mail.from_addr == "elodie@example.com"


def test_a_nul_in_a_charset_name_is_no_reason_to_quarantine() -> None:
    # mail-parser (the parser until then) raised on it: the mail went to quarantine
    mail = parse_mail(
        b"From: a@example.com\nTo: s@example.com\nMessage-ID: <nul@example.com>\n"
        b'Content-Type: text/plain; charset="ut\x00f-8"\n\nBonjour \xc3\xa9\n'
    )
    assert mail.text == "Bonjour \u00e9"


def test_defects_are_the_ones_the_stdlib_found() -> None:
    mail = parse_mail(
        b"From: a@example.com\nTo: s@example.com, <<odd\nMessage-ID: <d@example.com>\n"
        b"no colon here\n\nhi\n"
    )
    assert mail.to == ("s@example.com",)
    # mail-parser added an AddressHeaderDefect of its own for "<<odd"; nothing reads those
    assert mail.defects == ("MissingHeaderBodySeparatorDefect",)
