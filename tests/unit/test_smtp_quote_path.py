"""adapters/transports.py writes a plain local@domain path in MAIL FROM / RCPT TO itself: the
same text as smtplib.quoteaddr, which it still uses for everything else."""

from __future__ import annotations

import random
import smtplib
import string

import pytest

from mailgate.adapters.transports import _PLAIN_ADDRESS, quote_path

ATOM = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
LABEL = string.ascii_letters + string.digits + "-"
EDGES = ["", "a@b", "A@B.C", "1@2.3", "'@x", "~@x", "a/b@c", "=?utf-8?q?x?=@y", "x@-y-",
         "support+t12.abc@example.com", "bounces+mg.0123456789abcdef01234567@mg.example.com",
         "a..b@c", ".a@b", "a.@b", "a@b.", "a@.b", "a b@c", '"a b"@c', "a@[127.0.0.1]", "<a@b>",
         "a@b@c", "a,b@c", "a(x)@b", "é@x.fr", "a@bü.de", "a", "@b", "a@", "%@%", "a@b\r\n",
         "Name <a@b>", "a@b (comment)", "a;b@c", "a\\b@c"]  # fmt: skip


def _generated(n: int) -> list[str]:
    rng = random.Random(2026)
    found = []
    for _ in range(n):
        local = ".".join("".join(rng.choices(ATOM, k=rng.randint(1, 6)))
                         for _ in range(rng.randint(1, 3)))  # fmt: skip
        domain = ".".join("".join(rng.choices(LABEL, k=rng.randint(1, 8)))
                          for _ in range(rng.randint(1, 4)))  # fmt: skip
        found.append(f"{local}@{domain}")
    return found


@pytest.mark.parametrize("address", EDGES)
def test_a_path_reads_as_quoteaddr_writes_it(address: str) -> None:
    assert quote_path(address) == smtplib.quoteaddr(address)


def test_plain_addresses_take_the_shortcut_and_agree() -> None:
    generated = _generated(5000)
    assert all(_PLAIN_ADDRESS.fullmatch(a) for a in generated)
    for address in generated:
        assert quote_path(address) == smtplib.quoteaddr(address), address
