"""Mailer.queue checks every address it writes (compose.address) once per distinct address:
a good one is remembered (the support address on every mail, a customer's for the
confirmation and then the activation), a refused one is refused every time."""

from __future__ import annotations

import pytest

from mailgate.services.outbox import _checked_address


def test_a_good_address_is_parsed_once_and_a_refused_one_every_time() -> None:
    _checked_address.cache_clear()
    for _ in range(2):
        with pytest.raises(ValueError, match="not an address"):
            _checked_address("no-at-sign")
    first = _checked_address("a@x.example")
    assert _checked_address("a@x.example") is first
    assert _checked_address.cache_info()[:2] == (1, 3)  # (hits, misses)
