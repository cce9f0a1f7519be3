"""store/clean.py: what the engine cleans in every statement's parameters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailgate.store.clean import _REFUSED, REPLACEMENT, clean_params, clean_text, refused_in

# Text near the edges: ASCII, Latin-1, the BMP, astral characters, NUL and surrogates.
_CHARS = st.one_of(
    st.characters(max_codepoint=0x7F),
    st.characters(min_codepoint=0x80, max_codepoint=0xFF),
    st.sampled_from("\x00\ud800\udbff\udc00\udfff\ud7ff\ue000\u20ac\U0001f600"),
    st.characters(),
)


@given(st.text(_CHARS, max_size=40))
def test_refused_in_finds_what_the_regex_finds(text: str) -> None:
    assert refused_in(text) == (_REFUSED.search(text) is not None)


@given(st.lists(st.one_of(st.text(_CHARS, max_size=12), st.integers(), st.none()), max_size=6))
def test_clean_params_cleans_each_string_and_nothing_else(values: list[object]) -> None:
    expected = [clean_text(v) if isinstance(v, str) else v for v in values]
    assert clean_params(tuple(values)) == tuple(expected)
    assert clean_params(values) == expected
    named = {f"p{i}": v for i, v in enumerate(values)}
    assert clean_params(named) == {f"p{i}": v for i, v in enumerate(expected)}
    assert clean_params([named, tuple(values)]) == [
        dict(zip(named, expected, strict=True)),
        tuple(expected),
    ]


def test_clean_parameters_are_given_back_as_they_are() -> None:
    row = (1, "plain", "café €", None, b"\x00bytes")
    named = {"a": "plain", "b": 2}
    assert clean_params(row) is row
    assert clean_params(named) is named


def test_nul_and_lone_surrogates_are_replaced_a_pair_joined() -> None:
    row = ("a\x00b", "x\udcffy", "\ud83d\ude00", "ok")
    assert clean_params(row) == (f"a{REPLACEMENT}b", f"x{REPLACEMENT}y", "\U0001f600", "ok")
    assert clean_params({"k": "\x00"}) == {"k": REPLACEMENT}


@given(
    st.sampled_from(["plain ", "problème à l'écran ", "l’écran ", "merci 😀 "]),
    st.integers(min_value=0, max_value=400),
    st.sampled_from(["", "\x00", "\ud800", "\udfff", "\ud83d\ude00", "é", "€", "\U0001f600"]),
    st.booleans(),
)
def test_refused_in_long_text_of_each_width(word: str, count: int, odd: str, late: bool) -> None:
    """Mail-sized text of 1-, 2- and 4-byte characters, what it may hold early or late."""
    body = word * count
    text = body + odd if late else odd + body
    assert refused_in(text) == (_REFUSED.search(text) is not None)
