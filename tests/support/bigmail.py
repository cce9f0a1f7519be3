"""Mails with big attachments, as mail clients write them (issue 11)."""

from __future__ import annotations

import hashlib
import random
import uuid
from email.message import EmailMessage
from email.policy import SMTP


def payload(size: int, seed: int = 0) -> bytes:
    """`size` bytes that do not compress and are the same for the same seed."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_attachments(
    *files: tuple[str, bytes, str],
    body: str = "Bonjour, voici les fichiers.\n",
    sender: str = "Jean Dupont <jean@client.example>",
    subject: str = "Fichiers",
) -> bytes:
    """A multipart/mixed mail, CRLF line ends: a text body, then one attachment per
    (filename, bytes, content-transfer-encoding: "base64" or "quoted-printable")."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    msg.set_content(body)
    for name, data, cte in files:
        msg.add_attachment(
            data, maintype="application", subtype="octet-stream", filename=name, cte=cte
        )
    return msg.as_bytes()
