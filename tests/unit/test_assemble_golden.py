"""The sender's bytes for a first contact's mix (confirmation with articles, activation with
its link's expiry) across a daylight-saving change, in French and English, an agent's reply
with attachments and a row queued before params existed: the digest of every mail's bytes
and subject, as the code before the sender's CPU work (03d3f80) assembled them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from mailgate.app import TEMPLATES
from mailgate.services.assemble import FileRef, MailAssembler, encode_params
from mailgate.services.render import MailRenderer

GOLDEN = "92e76a42691927a07c47ad1ba90842d65947d1a66cd17b1f29518e23b357061f"


class Row(NamedTuple):
    id: int
    kind: str
    to_addr: str
    subject: str
    ticket_id: int | None
    message_id: str
    raw: bytes
    params: str


class Blobs:
    def get(self, sha256: str) -> bytes:
        return b"%PDF-1.4 " + sha256.encode() * 50


def _rows() -> list[Row]:
    rows = []
    start = datetime(2026, 3, 29, 0, 50, 1, 123456, tzinfo=UTC)  # Paris springs forward at 1:00
    for i in range(24):
        lang, now = ("fr", "en")[i % 2], start + timedelta(seconds=397 * i, microseconds=i)
        common: dict[str, Any] = {
            "locale": lang, "date": now, "from_addr": "support@example.com",
            "from_name": ("Support Exemple", "Ça, « support »")[i % 2 if i > 11 else 0],
            "hostname": "mg.example.com", "to_name": ("", "Jérôme Dupont")[i % 3 == 0],
            "in_reply_to": f"CAF{i}@mail.client.example", "auto_submitted": "auto-replied",
        }  # fmt: skip
        context = {"company": "Support Exemple", "portal_url": "https://help.example.com/"}
        ticket = {"id": 1000 + i, "subject": f"Imprimante en panne, l'écran reste noir ({i})"}
        confirmation = encode_params(
            context={**context, "ticket": ticket, "ticket_url": f"https://h.example/t/{i}",
                     "tz": ("", "America/New_York", "Asia/Kolkata")[i % 3], "echo": i % 4 == 0,
                     "customer_name": "Jérôme", "old_ticket_id": None,
                     "suggest": {"ticket_id": 1000 + i, "subject": "x", "locale": lang,
                                 "limit": 2}},
            reply_to=f"support+t{1000 + i}.abc{i}@example.com",
            references=(f"CAF{i}@mail.client.example",) if i % 2 else (),
            **common,
        )  # fmt: skip
        activation = encode_params(
            context={**context, "customer_name": "Jérôme", "echo": i % 4 == 0,
                     "email": f"c{i}@client.example",
                     "activation_url": f"https://h.example/activate/{i:08d}" + "x" * 90,
                     "expires": now + timedelta(hours=72),
                     "tz": ("", "Europe/Paris", "Australia/Lord_Howe")[i % 3]},
            **common,
        )  # fmt: skip
        for n, (kind, params) in enumerate((("confirmation", confirmation),
                                            ("activation", activation))):  # fmt: skip
            rows.append(Row(2 * i + n, kind, f"c{i}@client.example", "", 1000 + i,
                            f"mg.{i:024x}.{n}@mg.example.com", b"", params))  # fmt: skip
    reply = encode_params(
        locale="fr",
        context={"company": "C", "portal_url": "u", "echo": True, "agent_name": "Al",
                 "ticket": {"id": 3, "subject": "S"}, "body": "Bonjour é\n" * 30,
                 "ticket_url": "u"},
        date=datetime(2026, 1, 1, tzinfo=UTC), from_addr="s@x.example", from_name="C",
        hostname="h", attachments=[FileRef("ab" * 32, "facture é.pdf", "application/pdf"),
                                   FileRef("cd" * 32, "x.bin", "bad type")],
    )  # fmt: skip
    rows.append(Row(999, "agent_reply", "a@b.example", "", 3, "m@h", b"", reply))
    rows.append(Row(1000, "confirmation", "a@b.example", "old", 3, "m2@h", b"raw\r\n", ""))
    return rows


def digest() -> str:
    renderer = MailRenderer(TEMPLATES, "fr", "Europe/Paris")
    articles = [{"title": "Réinitialiser l'imprimante", "url": "https://h.example/a/1"}]
    assembler = MailAssembler(renderer, blobs=Blobs(), suggest=lambda **_: articles)
    found = hashlib.sha256()
    for _ in range(2):  # the second time with every cache warm
        for row in _rows():
            mail = assembler.build(row)
            assert assembler.assemble(row) == mail.raw
            found.update(mail.raw + b"\0" + mail.subject.encode() + b"\0")
    return found.hexdigest()


def test_the_mix_assembles_to_the_same_bytes():
    assert digest() == GOLDEN
