"""The plain-address shortcut (mail._plain_sender, and _addresses for To/Cc/Reply-To) gives what
the parsers give, without them."""

from __future__ import annotations

import random
from email.utils import getaddresses

import pytest

from mailgate.core.mail import (
    _addresses,
    _parsed_sender,
    _plain_address,
    _plain_sender,
    parse_mail,
    strict_sender,
)

NAME_CHARS = [*"abcXYZ019_'-", " ", "  ", "\t", "\r\n ", ".", '"', "\\", "é", "=", "?", "@", ","]
NAME_CHARS += [*"():;<>!#$%&*+/^`{|}~"]
ATOM_CHARS = [*"abc019.!#$%&'*+/^_`{|}~-"]
ODD_CHARS = [*"abcXYZ019!#$%&'*+/^_`{|}~-=?", ".", "..", "@", " ", '"', "\\", "(", ")", "é", "[]"]


def _word(rng: random.Random, chars: list[str], most: int) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(0, most)))


def _value(rng: random.Random) -> str:
    """A From value near the plain form: right, or one character away from it."""
    if rng.random() < 0.7:
        addr = _word(rng, ATOM_CHARS, 6) + "@" + _word(rng, [*"abcXYZ019-."], 8)
    else:
        addr = _word(rng, ODD_CHARS, 14)
    space = ["", " ", "  ", "\t", "\r\n "]
    if rng.random() < 0.3:
        return rng.choice(space) + addr + rng.choice(space)
    names = NAME_CHARS if rng.random() < 0.5 else [*"abcXYZ019_'- "]
    name = _word(rng, names, 12)
    return f"{rng.choice(space)}{name}{rng.choice(space)}<{addr}>{rng.choice(space)}"


def test_the_shortcut_agrees_with_the_parsers() -> None:
    rng = random.Random(5322)
    taken = 0
    for _ in range(20_000):
        value = _value(rng)
        plain = _plain_sender([value])
        if plain is None:
            continue
        taken += 1
        senders = _addresses([value])
        assert plain == _parsed_sender(value), value
        assert senders and senders[0][1] == plain[1], value
    assert taken > 2_000  # the generator does reach the shortcut


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Customer 12 <Customer-12@Bench.Example.org>",
            ("Customer 12", "customer-12@bench.example.org"),
        ),
        ("jean@example.com", ("", "jean@example.com")),
        ("<jean@example.com>", ("", "jean@example.com")),
        ("O'Brien\r\n  Sean\t<sean@example.ie>", ("O'Brien Sean", "sean@example.ie")),
    ],
)
def test_plain_forms_take_the_shortcut(value: str, expected: tuple[str, str]) -> None:
    assert _plain_sender([value]) == expected == strict_sender([value])


@pytest.mark.parametrize(
    "value",
    [
        "boss@ours <x@evil.example>",  # ambiguous: left to the strict parser (which refuses it)
        '"boss@ours" <x@evil.example>',
        "=?utf-8?Q?support=40ours?= <x@evil.example>",
        "J. Dupont <j@example.fr>",
        "a@example.com, b@example.com",
        "Jean <j@example.fr> (le boss)",
    ],
)
def test_other_forms_go_to_the_parsers(value: str) -> None:
    assert _plain_sender([value]) is None


def test_two_from_fields_stay_ambiguous() -> None:
    mail = parse_mail(b"From: a@example.com\nFrom: b@example.com\nTo: s@example.com\n\nhi\n")
    assert mail.sender_ambiguous and (mail.from_name, mail.from_addr) == ("", "a@example.com")


def test_address_lists_in_the_plain_form_read_as_the_lenient_parser_reads_them() -> None:
    rng = random.Random(2822)
    taken = 0
    for _ in range(5_000):
        values = [_value(rng) for _ in range(rng.randint(1, 3))]
        if any(_plain_address(v) is None for v in values):
            continue
        taken += 1
        lenient = [(name, addr.lower()) for name, addr in getaddresses(values)]
        assert _addresses(values) == lenient, values
    assert taken > 100
