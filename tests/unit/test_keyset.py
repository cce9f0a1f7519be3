"""Page cursors: what encode makes, decode gives back; anything else is BadCursor (a 400
page), never another exception that would surface as a 500."""

from __future__ import annotations

import base64
import random
import string
from datetime import UTC, datetime

import pytest

from mailgate.services.keyset import ID_MAX, BadCursor, Key, decode, encode


@pytest.mark.parametrize(
    "key",
    [
        Key(datetime(2026, 12, 1, 10, 2, 3, 456789, tzinfo=UTC), 1),
        Key(datetime(1969, 7, 20, 20, 17, tzinfo=UTC), ID_MAX),
        Key(datetime(1, 1, 1, tzinfo=UTC), 0),
        Key(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), 42),
    ],
)
def test_round_trip(key: Key):
    token = encode(key)
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    assert decode(token) == key


def test_a_naive_timestamp_is_taken_as_utc():
    # SQLite hands timestamps back without a zone; they are UTC (clock.as_utc).
    naive = Key(datetime(2026, 1, 2, 3, 4, 5), 7)
    assert decode(encode(naive)) == Key(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 7)


def _b64(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "!!!!",
        "A" * 49,
        _b64(b"2.5.5"),
        _b64(b"1.5"),
        _b64(b"1.5.5.5"),
        _b64(b"1.+5.5"),
        _b64(b"1.5.-5"),
        _b64(b"1. 5.5"),
        _b64(b"1.999999999999999999.5"),
        _b64(b"1.5.2147483648"),
        _b64("1.5.٣".encode()),
        _b64(b"\xff\xfe\x00\x01"),
        "MS4xLjE=",  # padding is not part of a cursor
        "MS4x/LjE",
    ],
)
def test_what_encode_never_makes_is_refused(token: str):
    with pytest.raises(BadCursor):
        decode(token)


def test_random_tokens_decode_or_are_refused():
    rng = random.Random(11)
    alphabet = string.printable + "éß٣\x00"
    for _ in range(5000):
        length = rng.randrange(0, 60)
        if rng.random() < 0.5:
            token = "".join(rng.choice(alphabet) for _ in range(length))
        else:
            token = _b64(bytes(rng.randrange(256) for _ in range(length)))
        try:
            key = decode(token)
        except BadCursor:
            continue
        assert 0 <= key.id <= ID_MAX
