"""Issue 10, Postfix-facing units: the socketmap's netstring codec and answers
(socketmap_table(5)), and `deliver`'s argv as Postfix builds it."""

from __future__ import annotations

import pytest

from mailgate.adapters.postfix_map import (
    MAX_REQUEST,
    NetstringDecoder,
    NetstringError,
    answer,
    encode,
)
from mailgate.core.addresses import AddressBook

BOOK = AddressBook("support@example.com", {"billing@example.com": "Billing"})


def ours(address: str) -> bool:
    return BOOK.resolve(address) is not None


def test_encode_is_length_colon_payload_comma():
    assert encode(b"OK OK") == b"5:OK OK,"
    assert encode(b"") == b"0:,"


def test_decoder_reassembles_any_chunking_and_several_per_chunk():
    wire = encode(b"mailgate support@example.com") + encode(b"mailgate x@y")
    for size in (1, 2, 7, len(wire)):
        decoder = NetstringDecoder()
        out: list[bytes] = []
        for i in range(0, len(wire), size):
            out += decoder.feed(wire[i : i + size])
        assert out == [b"mailgate support@example.com", b"mailgate x@y"], size


@pytest.mark.parametrize(
    "wire",
    [
        b"abc:xyz,",  # not a length
        b"05:hello,",  # leading zero
        b"5:hello;",  # no comma
        b"-1:,",
        b"%d:" % (MAX_REQUEST + 1),  # claims more than a request may be
        b"9" * 12,  # a length that never ends
    ],
)
def test_decoder_refuses_what_is_not_a_netstring(wire: bytes):
    with pytest.raises(NetstringError):
        NetstringDecoder().feed(wire)


def test_answers_ok_for_our_addresses_and_notfound_otherwise():
    for address in (
        "support@example.com",
        "support+tok3n@example.com",
        "Billing@Example.COM",
        "billing+x@example.com",
    ):
        assert answer(b"mailgate " + address.encode(), ours) == b"OK OK", address
    for key in ("nobody@example.com", "support@other.example", "@example.com", "support", ""):
        assert answer(b"mailgate " + key.encode(), ours) == b"NOTFOUND ", key
    assert answer(b"mailgate \xff\xfe@example.com", ours) == b"NOTFOUND "


def test_an_unknown_map_name_is_a_permanent_error():
    assert answer(b"other support@example.com", ours).startswith(b"PERM ")
    assert answer(b"mailgate", ours).startswith(b"PERM ")


def test_deliver_takes_recipients_the_way_postfix_passes_them():
    """Postfix expands `--recipient ${recipient}` to every recipient of a delivery."""
    from mailgate.cli import parser

    def recipients(*argv: str) -> list[str]:
        return parser().parse_args(["deliver", *argv]).recipient  # type: ignore[no-any-return]

    assert recipients("--recipient", "a@x", "b@x") == ["a@x", "b@x"]
    assert recipients("--recipient", "a@x", "--recipient", "b@x") == ["a@x", "b@x"]
    assert recipients("--sender", "", "--recipient", "a@x", "b@x") == ["a@x", "b@x"]
    assert recipients() is None
