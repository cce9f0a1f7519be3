"""Tests for mailgate.core.quotes.strip_quotes (fixtures in tests/data/replies, see README.md)."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.core import quotes
from mailgate.core.quotes import strip_quotes

DATA = Path(__file__).resolve().parent.parent / "data" / "replies"
FIXTURES = sorted(path.name for path in DATA.glob("*.txt"))
UPSTREAM = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))
EXACT = json.loads((DATA / "expected_exact.json").read_text(encoding="utf-8"))


def _read(name: str) -> str:
    # Bytes, not text mode: universal newlines would hide the CRLF fixtures' line ends.
    return (DATA / name).read_bytes().decode("utf-8")


def test_every_fixture_has_an_exact_expectation() -> None:
    assert FIXTURES, f"no fixtures found in {DATA}"
    assert set(FIXTURES) == set(EXACT)
    assert set(UPSTREAM["expected_answer_contains"]) <= set(FIXTURES)


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_exact_output(name: str) -> None:
    assert strip_quotes(_read(name)) == EXACT[name]


@pytest.mark.parametrize("name", sorted(UPSTREAM["expected_answer_contains"]))
def test_fixture_upstream_contract(name: str) -> None:
    result = strip_quotes(_read(name))
    assert UPSTREAM["expected_answer_contains"][name] in result


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_leaks_no_history(name: str) -> None:
    result = strip_quotes(_read(name))
    leaked = [marker for marker in UPSTREAM["must_not_contain"] if marker in result]
    assert not leaked


QUOTE_EN = "> Hello,\n>\n> Your request #42 has been received.\n"
QUOTE_FR = "> Bonjour,\n>\n> Votre demande #42 a bien été enregistrée.\n"

CASES: list[tuple[str, str, str]] = [
    (
        "gmail_en",
        f"Thanks\n\nOn Mon, Jan 1, 2024 at 10:00 AM John <j@x> wrote:\n\n{QUOTE_EN}",
        "Thanks",
    ),
    (
        "gmail_fr",
        f"Merci\n\nLe lun. 1 janv. 2024 à 10:00, Jean <j@x> a écrit :\n\n{QUOTE_FR}",
        "Merci",
    ),
    (
        "gmail_en_wrapped_3_lines",
        "Thanks\n\nOn Mon, Jan 1, 2024 at 10:00 AM Customer Service Department of\n"
        "Example Incorporated International <\nsupport@example.com> wrote:\n\n" + QUOTE_EN,
        "Thanks",
    ),
    ("apple_en", f"Thanks\n\nOn 1 Jan 2024, at 10:00, John <j@x> wrote:\n\n{QUOTE_EN}", "Thanks"),
    ("apple_fr", f"Merci\n\nLe 1 janv. 2024 à 10:00, Jean <j@x> a écrit :\n\n{QUOTE_FR}", "Merci"),
    ("thunderbird_en", f"Thanks\n\nOn 01/01/2024 10:00, John wrote:\n{QUOTE_EN}", "Thanks"),
    ("thunderbird_fr", f"Merci\n\nLe 01/01/2024 à 10:00, Jean a écrit :\n{QUOTE_FR}", "Merci"),
    (
        "attribution_decomposed_accent",
        f"Merci\n\nLe 01/01/2024 à 10:00, Jean a e\u0301crit :\n{QUOTE_FR}",
        "Merci",
    ),
    (
        "attribution_without_quote_runs_to_end",
        "Thanks\n\nOn Mon, Jan 1, 2024 at 10:00 AM John <j@x> wrote:\nHello,\nold text\n",
        "Thanks",
    ),
    ("original_message_alone", "Thanks\n\n-----Original Message-----\nHello, old text\n", "Thanks"),
    (
        "message_original_thunderbird",
        "Merci\n\n-------- Message original --------\nBonjour, ancien texte\n",
        "Merci",
    ),
    (
        "outlook_en_no_separator",
        "Thanks\n\nFrom: A <a@x>\nSent: Monday, January 1, 2024 10:00 AM\nTo: B <b@y>\n"
        "Subject: Re: x\n\nold text\n",
        "Thanks",
    ),
    (
        "gmail_forward_header_and_rule",
        "FYI\n\n---------- Forwarded message ---------\nFrom: A <a@x>\n"
        "Date: Mon, Jan 1, 2024 at 10:00 AM\nSubject: x\nTo: <b@y>\n\nold text\n",
        "FYI",
    ),
    (
        "nested_quotes",
        f"Thanks\n\n>> older\n> On 1 Jan 2024, at 10:00, J wrote:\n{QUOTE_EN}",
        "Thanks",
    ),
    ("sig_dashes_without_space", f"Thanks\n--\nJohn Smith\n\n{QUOTE_EN}", "Thanks"),
    ("sig_dashes_bottom_post", f"{QUOTE_EN}\nStill broken.\n-- \nJohn\n", "Still broken."),
    ("sent_from_my_iphone", f"Thanks\n\nSent from my iPhone\n\n{QUOTE_EN}", "Thanks"),
    ("envoye_de_mon_iphone", f"Merci\n\nEnvoyé de mon iPhone\n\n{QUOTE_FR}", "Merci"),
    (
        "blank_lines_collapse_around_quote",
        f"Hi\n\n\n\n{QUOTE_EN}\n\n\nAnswer\n\n\n",
        "Hi\n\nAnswer",
    ),
    (
        "indentation_kept_inside_text",
        f"Steps:\n\n    1. restart\n    2. print\n\n{QUOTE_EN}",
        "Steps:\n\n    1. restart\n    2. print",
    ),
    ("lone_cr_line_ends", "Thanks\r\rOn 1 Jan 2024, at 10:00, J <j@x> wrote:\r> old\r", "Thanks"),
    # Look-alikes in the author's own text must survive.
    (
        "from_line_in_prose",
        "Hi,\n\nFrom: the logs, it fails at 10:00.\nSubject: printer\n\nThanks",
        "Hi,\n\nFrom: the logs, it fails at 10:00.\nSubject: printer\n\nThanks",
    ),
    ("underscore_rule_in_prose", "Total\n__________\n42", "Total\n__________\n42"),
    (
        "le_sentence_without_date",
        "Bonjour,\nLe technicien de votre équipe a écrit :\nil faut changer le toner.",
        "Bonjour,\nLe technicien de votre équipe a écrit :\nil faut changer le toner.",
    ),
    (
        "finished_sentence_is_not_a_wrapped_attribution",
        f"On 2 occasions the printer failed.\nMy colleague wrote:\n{QUOTE_EN}",
        "On 2 occasions the printer failed.\nMy colleague wrote:",
    ),
    (
        "sent_from_not_at_end",
        "Sent from my office yesterday\nthe file is attached",
        "Sent from my office yesterday\nthe file is attached",
    ),
    ("no_quote_at_all", "  \n\nJust a question.\n\nThanks\n\n", "Just a question.\n\nThanks"),
    # Fallbacks: never empty when the author wrote something.
    ("empty", "", ""),
    ("blank", " \r\n\n\t\n", ""),
    ("everything_quoted", f"\n{QUOTE_EN}\n", QUOTE_EN.strip()),
    (
        "attribution_and_quote_only",
        f"On 1 Jan 2024, at 10:00, J <j@x> wrote:\n{QUOTE_EN}",
        f"On 1 Jan 2024, at 10:00, J <j@x> wrote:\n{QUOTE_EN}".strip(),
    ),
    ("only_mobile_signature", f"Sent from my iPhone\n\n{QUOTE_EN}", "Sent from my iPhone"),
    ("only_sig_dashes", f"-- \nJohn\n\n{QUOTE_EN}", "-- \nJohn"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_strip_quotes_cases(text: str, expected: str) -> None:
    assert strip_quotes(text) == expected


# Author text that cannot look like history: no ">", "-", "_", ":" and no capitals.
SAFE_LINE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéàç0123456789 ,.!?'", max_size=40)
AUTHOR = st.lists(SAFE_LINE, min_size=1, max_size=6).map("\n".join).filter(str.strip)
# Anything a quoted line may hold, including history markers, minus line breaks.
ANY_LINE = st.text(st.characters(blacklist_characters="\r\n"), max_size=40)
QUOTED = st.lists(ANY_LINE, min_size=1, max_size=6).map(
    lambda lines: "".join(f"> {line}\n" for line in lines)
)
ATTRIBUTION = st.sampled_from(
    [
        "On Mon, Jan 1, 2024 at 10:00 AM John <j@x> wrote:",
        "Le lun. 1 janv. 2024 à 10:00, Jean <j@x> a écrit :",
        "On 01/01/2024 10:00, John wrote:",
        "Le 01/01/2024 à 10:00, Jean a écrit :",
    ]
)


@given(AUTHOR, ATTRIBUTION, QUOTED)
def test_top_posted_reply_keeps_only_author_text(author: str, attr: str, quoted: str) -> None:
    assert strip_quotes(f"{author}\n\n{attr}\n{quoted}") == author.strip()


@given(ATTRIBUTION, QUOTED, AUTHOR)
def test_bottom_posted_reply_keeps_text_below_quote(attr: str, quoted: str, author: str) -> None:
    assert strip_quotes(f"{attr}\n{quoted}\n{author}\n") == author.strip()


@given(AUTHOR)
def test_text_without_history_is_only_trimmed(author: str) -> None:
    assert strip_quotes(f"\n{author}\n\n") == author.strip()


@given(st.text())
def test_empty_only_for_blank_input(text: str) -> None:
    assert (strip_quotes(text) == "") == (text.strip() == "")


@given(st.text())
def test_idempotent(text: str) -> None:
    once = strip_quotes(text)
    assert strip_quotes(once) == once


@given(ATTRIBUTION, QUOTED, AUTHOR)
def test_without_fallback_nothing_new_is_empty(attr: str, quoted: str, author: str) -> None:
    """An agent's mail of commands only: what is left is history and a signature, not a reply."""
    assert strip_quotes(f"{attr}\n{quoted}\n", fallback=False) == ""
    assert strip_quotes(f"-- \nAlice\n\n{attr}\n{quoted}\n", fallback=False) == ""
    assert strip_quotes(f"{author}\n\n{attr}\n{quoted}", fallback=False) == author.strip()


PIECES = [*"-*FDOLonrmeé :>_ \u00a0", "From", "De", "On ", "Le ", "Original Message", "Sent"]


@given(st.lists(st.sampled_from(PIECES)).map("".join))
def test_lines_that_open_history_or_an_attribution_start_with_an_opener(line: str) -> None:
    # strip_quotes looks no further at a line whose first character is not one of _OPENERS
    opens = (
        quotes._ORIGINAL_SEPARATOR.match(line)
        or quotes._HEADER_FROM.match(line)
        or quotes._ATTRIBUTION_START.match(line)
    )
    assert not opens or line[:1] in quotes._OPENERS
