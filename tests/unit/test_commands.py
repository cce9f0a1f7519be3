"""Tests for mailgate.core.commands (agent commands at the top of a mail reply)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailgate.core.commands import (
    STATUS_VALUES,
    Command,
    CommandError,
    ParsedCommands,
    parse_commands,
)

BOM = "\ufeff"


def _is_candidate(line: str) -> bool:
    """Mirror of the spec: a '#' line that is not '#<digit>' or '#<whitespace>'."""
    return line.startswith("#") and not (len(line) > 1 and (line[1].isdigit() or line[1].isspace()))


# --------------------------------------------------------------------------- valid commands


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#note", Command("note")),
        ("#NOTE", Command("note")),
        ("#Note   ", Command("note")),
        ("#status open", Command("status", "open")),
        ("#status pending", Command("status", "pending")),
        ("#status solved", Command("status", "solved")),
        ("#status closed", Command("status", "closed")),
        ("#STATUS Solved", Command("status", "solved")),
        ("#status\t  PENDING  ", Command("status", "pending")),
        ("#assign bob@example.com", Command("assign", "bob@example.com")),
        ("#Assign  Bob.Smith+help@Example.COM ", Command("assign", "bob.smith+help@example.com")),
        ("#category Billing", Command("category", "Billing")),
        ("#category   Billing / Refunds  ", Command("category", "Billing / Refunds")),
        ("#category " + "x" * 64, Command("category", "x" * 64)),
        ("#CATEGORY Zahlung & Rückerstattung", Command("category", "Zahlung & Rückerstattung")),
        ("#cc add alice@example.com", Command("cc_add", "alice@example.com")),
        ("#CC ADD Alice@Example.com", Command("cc_add", "alice@example.com")),
        ("#cc remove alice@example.com", Command("cc_remove", "alice@example.com")),
        ("#cc   Remove   ALICE@example.com  ", Command("cc_remove", "alice@example.com")),
    ],
)
def test_single_valid_command(line: str, expected: Command) -> None:
    parsed = parse_commands(line + "\n\nHello there.\n")
    assert parsed.errors == ()
    assert parsed.commands == (expected,)
    assert parsed.body == "Hello there.\n"


def test_is_note() -> None:
    assert parse_commands("#note\nInternal remark").is_note
    assert parse_commands("#status pending\n#NOTE\nInternal remark").is_note
    assert not parse_commands("#status pending\nReply to customer").is_note
    assert not parse_commands("Reply\n#note\n").is_note


def test_command_block_followed_by_body() -> None:
    text = (
        "#status pending\n"
        "\n"
        "#assign Bob@Example.com\n"
        "#cc add carol@example.com\n"
        "\n"
        "\n"
        "Hello Dave,\n"
        "\n"
        "#note this line is body text, the block has ended\n"
        "Regards\n"
    )
    parsed = parse_commands(text)
    assert parsed.errors == ()
    assert parsed.commands == (
        Command("status", "pending"),
        Command("assign", "bob@example.com"),
        Command("cc_add", "carol@example.com"),
    )
    assert parsed.body == (
        "Hello Dave,\n\n#note this line is body text, the block has ended\nRegards\n"
    )
    assert not parsed.is_note


def test_no_commands_strips_leading_blank_lines_only() -> None:
    parsed = parse_commands("\n  \n\t\nHello\n\n  indented\n")
    assert parsed == ParsedCommands(commands=(), errors=(), body="Hello\n\n  indented\n")


@pytest.mark.parametrize("text", ["", "\n", "\n\n  \n", "#note", "#note\n", "#note\n\n\n"])
def test_empty_body(text: str) -> None:
    assert parse_commands(text).body == ""


def test_commands_after_text_are_body() -> None:
    parsed = parse_commands("Hi\n#status solved\n")
    assert parsed.commands == ()
    assert parsed.errors == ()
    assert parsed.body == "Hi\n#status solved\n"


def test_indented_hash_line_ends_block() -> None:
    parsed = parse_commands("#note\n  #status solved\n")
    assert parsed.commands == (Command("note"),)
    assert parsed.body == "  #status solved\n"


@pytest.mark.parametrize(
    "line",
    ["#1 priority", "#1", "#42 is the answer", "# heading", "#\tindented", "#  two spaces"],
)
def test_hash_digit_or_space_is_not_a_command(line: str) -> None:
    parsed = parse_commands(f"#status solved\n{line}\n#note\n")
    assert parsed.commands == (Command("status", "solved"),)
    assert parsed.errors == ()
    assert parsed.body == f"{line}\n#note\n"
    assert not parsed.is_note


def test_hash_digit_first_line() -> None:
    parsed = parse_commands("#1 priority is the refund\n")
    assert parsed == ParsedCommands((), (), "#1 priority is the refund\n")


def test_exact_duplicates_are_collapsed() -> None:
    parsed = parse_commands(
        "#note\n#status open\n#NOTE\n#status OPEN\n#cc add a@x.org\n#cc add A@X.org\nBody"
    )
    assert parsed.errors == ()
    assert parsed.commands == (
        Command("note"),
        Command("status", "open"),
        Command("cc_add", "a@x.org"),
    )


def test_several_cc_commands() -> None:
    parsed = parse_commands("#cc add a@x.org\n#cc add b@x.org\n#cc remove c@x.org\n")
    assert parsed.errors == ()
    assert [c.name for c in parsed.commands] == ["cc_add", "cc_add", "cc_remove"]


# --------------------------------------------------------------------------- line endings, BOM


def test_crlf() -> None:
    text = "#status SOLVED\r\n\r\n#assign bob@example.com\r\n\r\nThanks,\r\nBob\r\n"
    parsed = parse_commands(text)
    assert parsed.errors == ()
    assert parsed.commands == (Command("status", "solved"), Command("assign", "bob@example.com"))
    assert parsed.body == "Thanks,\r\nBob\r\n"


def test_crlf_error_line_has_no_carriage_return() -> None:
    parsed = parse_commands("#note\r\n#stauts open\r\nbody\r\n")
    assert parsed.errors == (CommandError(2, "#stauts open", "unknown command '#stauts'"),)


def test_bom() -> None:
    parsed = parse_commands(BOM + "#note\nInternal")
    assert parsed.commands == (Command("note"),)
    assert parsed.errors == ()
    assert parsed.body == "Internal"


def test_bom_without_commands_is_removed_from_body() -> None:
    assert parse_commands(BOM + "\nHello").body == "Hello"


def test_bom_and_crlf_error_line_numbers() -> None:
    parsed = parse_commands(BOM + "#bogus\r\n\r\n#status new\r\nHi\r\n")
    assert parsed.commands == ()
    assert parsed.errors == (
        CommandError(1, "#bogus", "unknown command '#bogus'"),
        CommandError(3, "#status new", "'#status' needs one of: open, pending, solved, closed"),
    )
    assert parsed.body == "Hi\r\n"


def test_bom_only_at_start_is_special() -> None:
    # A BOM later in the text is ordinary text: the line does not start with '#'.
    parsed = parse_commands("#note\n" + BOM + "#status open\n")
    assert parsed.commands == (Command("note"),)
    assert parsed.body == BOM + "#status open\n"


# --------------------------------------------------------------------------- errors

STATUS_REASON = "'#status' needs one of: open, pending, solved, closed"
CATEGORY_REASON = "'#category' needs a name of 1 to 64 printable characters"
CC_REASON = "'#cc' needs 'add ADDRESS' or 'remove ADDRESS', e.g. '#cc add alice@example.com'"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("#stauts open", "unknown command '#stauts'"),
        ("#Stauts", "unknown command '#Stauts'"),
        ("#reply-all", "unknown command '#reply-all'"),
        ("##heading", "unknown command '##heading'"),
        ("#", "empty command '#'"),
        ("#note please", "'#note' takes no argument, got 'please'"),
        ("#status", STATUS_REASON),
        ("#status new", STATUS_REASON),
        ("#status NEW", STATUS_REASON),
        ("#status open now", STATUS_REASON),
        ("#status opened", STATUS_REASON),
        ("#assign", "'#assign' needs an email address, e.g. '#assign alice@example.com'"),
        ("#assign bob", None),
        ("#assign bob@", None),
        ("#assign @example.com", None),
        ("#assign bob@@example.com", None),
        ("#assign bob@a@example.com", None),
        ("#assign bob smith@example.com", None),
        ("#assign <bob@example.com>", None),
        ("#assign Bob <bob@example.com>", None),
        ("#assign bob@example.com, eve@example.com", None),
        ("#assign bob@example.com\x00", None),
        ("#assign bob@example..com", None),
        ("#category", CATEGORY_REASON),
        ("#category    ", CATEGORY_REASON),
        ("#category " + "x" * 65, CATEGORY_REASON),
        ("#category tab\there", CATEGORY_REASON),
        ("#category bell\x07", CATEGORY_REASON),
        ("#category cr\rhere", CATEGORY_REASON),
        ("#cc", CC_REASON),
        ("#cc alice@example.com", CC_REASON),
        ("#cc delete alice@example.com", CC_REASON),
        ("#cc add", "'#cc add' needs an email address, e.g. '#cc add alice@example.com'"),
        ("#cc remove", "'#cc remove' needs an email address, e.g. '#cc remove alice@example.com'"),
        ("#cc add alice", None),
        ("#cc add alice@example.com bob@example.com", None),
        ("#cc remove <alice@example.com>", None),
    ],
)
def test_malformed_command(line: str, reason: str | None) -> None:
    text = f"#note\n\n{line}\n#status open\nBody\n"
    parsed = parse_commands(text)
    assert len(parsed.errors) == 1
    error = parsed.errors[0]
    assert error.line_number == 3
    assert error.line == line
    if reason is None:
        assert "needs one plain email address" in error.reason
    else:
        assert error.reason == reason
    # Malformed lines are part of the block: they never leak into the body.
    assert parsed.body == "Body\n"
    assert parsed.commands == (Command("note"), Command("status", "open"))


def test_bad_address_reason_quotes_value() -> None:
    (error,) = parse_commands("#assign Bob <bob@example.com>").errors
    assert error.reason == (
        "'#assign' needs one plain email address like alice@example.com, "
        "got 'Bob <bob@example.com>'"
    )


def test_reason_escapes_control_characters_and_is_bounded() -> None:
    (error,) = parse_commands("#bad\x1b[31m").errors
    assert error.reason == "unknown command '#bad\\x1b[31m'"
    (error,) = parse_commands("#" + "z" * 500).errors
    assert len(error.reason) < 80


def test_too_long_address() -> None:
    address = "a" * 250 + "@x.io"
    (error,) = parse_commands(f"#assign {address}").errors
    assert "needs one plain email address" in error.reason


@pytest.mark.parametrize(
    ("text", "line_number", "line", "reason"),
    [
        (
            "#status open\n#status solved\n",
            2,
            "#status solved",
            "'#status solved' conflicts with '#status open' on line 1",
        ),
        (
            "#assign a@x.org\n\n#note\n#assign b@x.org\n",
            4,
            "#assign b@x.org",
            "'#assign b@x.org' conflicts with '#assign a@x.org' on line 1",
        ),
        (
            "#category One\n#category Two\n",
            2,
            "#category Two",
            "'#category Two' conflicts with '#category One' on line 1",
        ),
        (
            "#note\n#cc add a@x.org\n#cc remove A@x.org\n",
            3,
            "#cc remove A@x.org",
            "'#cc remove a@x.org' conflicts with '#cc add a@x.org' on line 2",
        ),
        (
            "#cc remove a@x.org\n#cc add a@x.org\n",
            2,
            "#cc add a@x.org",
            "'#cc add a@x.org' conflicts with '#cc remove a@x.org' on line 1",
        ),
    ],
)
def test_conflicting_duplicates(text: str, line_number: int, line: str, reason: str) -> None:
    parsed = parse_commands(text + "Body")
    assert parsed.errors == (CommandError(line_number, line, reason),)
    assert parsed.body == "Body"


def test_every_conflict_is_reported_against_the_first() -> None:
    parsed = parse_commands("#status open\n#status solved\n#status open\n#status closed\n")
    assert [(e.line_number, e.reason) for e in parsed.errors] == [
        (2, "'#status solved' conflicts with '#status open' on line 1"),
        (4, "'#status closed' conflicts with '#status open' on line 1"),
    ]
    assert parsed.commands == (Command("status", "open"),)


def test_invalid_command_does_not_count_for_conflicts() -> None:
    parsed = parse_commands("#status new\n#status open\n")
    assert parsed.commands == (Command("status", "open"),)
    assert [e.line_number for e in parsed.errors] == [1]


def test_many_errors_keep_order_and_line_numbers() -> None:
    text = "#x\n\n#note\n#status\n\n\n#cc\n#1 body starts\n#y\n"
    parsed = parse_commands(text)
    assert [(e.line_number, e.line) for e in parsed.errors] == [
        (1, "#x"),
        (4, "#status"),
        (7, "#cc"),
    ]
    assert parsed.body == "#1 body starts\n#y\n"


def test_results_are_frozen() -> None:
    parsed = parse_commands("#note\nx")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.body = "y"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.commands[0].name = "status"  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

_COMMANDISH = st.sampled_from(
    [
        "#note",
        "#NOTE x",
        "#status open",
        "#status SOLVED",
        "#status new",
        "#status",
        "#assign a@b.c",
        "#assign A@B.C",
        "#assign nope",
        "#category Billing",
        "#category",
        "#cc add a@b.c",
        "#cc remove a@b.c",
        "#cc",
        "#",
        "##",
        "#1 one",
        "# heading",
        "#\t",
        "#stauts",
        "",
        " ",
        "  #note",
        BOM,
        "\r",
    ]
)
_LINE = st.one_of(_COMMANDISH, st.text(max_size=30), _COMMANDISH.map(lambda s: s + "\r"))


@st.composite
def _mail_texts(draw: st.DrawFn) -> str:
    lines = draw(st.lists(_LINE, max_size=12))
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    prefix = draw(st.sampled_from(["", BOM]))
    return prefix + sep.join(lines)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), _mail_texts()))
@example("")
@example(BOM)
@example("#note\r")
@example("\r\n#note\r\n\r\nx")
def test_never_raises_and_body_excludes_command_lines(text: str) -> None:
    parsed = parse_commands(text)

    assert isinstance(parsed, ParsedCommands)
    assert all(isinstance(c, Command) for c in parsed.commands)
    assert all(isinstance(e, CommandError) for e in parsed.errors)
    assert all(
        c.name in {"note", "status", "assign", "category", "cc_add", "cc_remove"}
        for c in parsed.commands
    )
    assert all(c.argument in STATUS_VALUES for c in parsed.commands if c.name == "status")
    assert parsed.is_note == (Command("note") in parsed.commands)

    source = text.removeprefix(BOM)
    # The body is the untouched tail of the text; everything before it is the block.
    assert source.endswith(parsed.body)
    block = source[: len(source) - len(parsed.body)]
    block_lines = [line.removesuffix("\r") for line in block.split("\n")]
    if block.endswith("\n"):
        block_lines.pop()
    # Every line removed from the body is blank or a command line, and every command and
    # error comes from those removed lines (so no parsed line can be in the body).
    command_line_numbers = [
        number
        for number, line in enumerate(block_lines, start=1)
        if line.strip() and _is_candidate(line)
    ]
    assert all(not line.strip() or _is_candidate(line) for line in block_lines)
    assert len(parsed.commands) + len(parsed.errors) <= len(command_line_numbers)
    for error in parsed.errors:
        assert error.line_number in command_line_numbers
        assert error.line == block_lines[error.line_number - 1]
    # The body starts with a non-blank line that is not a command line.
    if parsed.body:
        first = parsed.body.split("\n", 1)[0].removesuffix("\r")
        assert first.strip()
        assert not _is_candidate(first)
    # Error line numbers are strictly increasing.
    numbers = [e.line_number for e in parsed.errors]
    assert numbers == sorted(set(numbers))
    # Parsing the body again finds nothing more (a BOM is only special at the very start).
    if not parsed.body.startswith(BOM):
        assert parse_commands(parsed.body) == ParsedCommands((), (), parsed.body)


_ADDRESS = st.builds(
    lambda local, domain: f"{local}@{domain}.org",
    st.text(alphabet="abcXYZ.+_-019", min_size=1, max_size=10),
    st.text(alphabet="abcdefXYZ-", min_size=1, max_size=10),
)
_VALID_LINE = st.one_of(
    st.just(("#note", Command("note"))),
    st.sampled_from(STATUS_VALUES).map(lambda v: (f"#status {v.upper()}", Command("status", v))),
    _ADDRESS.map(lambda a: (f"#assign {a}", Command("assign", a.lower()))),
    _ADDRESS.map(lambda a: (f"#cc add {a}", Command("cc_add", a.lower()))),
)
_BODY = st.text(min_size=1).filter(
    lambda s: (
        bool(s.split("\n", 1)[0].strip())
        and not _is_candidate(s.split("\n", 1)[0].removesuffix("\r"))
        and not s.startswith(BOM)
    )
)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(_VALID_LINE, st.integers(0, 2)), max_size=6),
    st.integers(0, 2),
    _BODY,
)
def test_valid_block_is_fully_removed_from_body(
    block: list[tuple[tuple[str, Command], int]], blank_after: int, body: str
) -> None:
    # One #assign at most, so that no conflict arises.
    seen_assign = False
    lines: list[str] = []
    expected: list[Command] = []
    for (line, command), blanks in block:
        if command.name == "assign":
            if seen_assign:
                continue
            seen_assign = True
        if command.name == "status" and any(c.name == "status" for c in expected):
            continue
        lines.append(line)
        lines.extend([""] * blanks)
        if command not in expected:
            expected.append(command)
    lines.extend([""] * blank_after)
    text = "".join(line + "\n" for line in lines) + body

    parsed = parse_commands(text)

    assert parsed.errors == ()
    assert parsed.commands == tuple(expected)
    assert parsed.body == body
