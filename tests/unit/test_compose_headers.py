"""core/compose.py: no CR/LF taken from a customer (name, subject) can add a header or a
recipient, and an address that is not one addr-spec is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import getaddresses

import pytest

from mailgate.core.compose import Outgoing, compose

INJECTION = "Eve\r\nBcc: victim@evil.example\r\nX-Injected: 1"


def _out(**changes: object) -> Outgoing:
    values: dict[str, object] = {
        "kind": "confirmation", "to_addr": "eve@client.example", "subject": "Bonjour",
        "text": "Bonjour", "from_addr": "support@example.com", "from_name": "Support",
        "message_id": "mg.1@mg.test", "date": datetime(2026, 1, 5, tzinfo=UTC),
        "hostname": "mg.test", "in_reply_to": "a@client.example",
    }
    values.update(changes)
    return Outgoing(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["to_name", "subject", "from_name"])
def test_cr_lf_in_a_name_or_subject_stays_inside_its_header(field: str):
    raw = compose(_out(**{field: INJECTION})).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"]
    assert "bcc" not in names and "x-injected" not in names
    assert len(names) == len(set(names))  # nothing appears twice
    parsed = message_from_bytes(raw, policy=policy.default)
    assert [a for _, a in getaddresses([str(parsed["To"])])] == ["eve@client.example"]


@pytest.mark.parametrize(
    "address",
    ["eve@client.example\r\nBcc: victim@evil.example", "eve@client.example\n", "eve\r@x.example",
     "no-at-sign", "@client.example", "eve@", "eve@client.example\x00"],
)
def test_an_address_that_is_not_one_addr_spec_is_refused(address: str):
    with pytest.raises(ValueError):
        compose(_out(to_addr=address)).as_bytes()
