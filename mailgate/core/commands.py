"""Agent commands written at the top of a mail reply.

An agent answering a ticket by mail may start the reply with short commands, one per line,
before any other text::

    #status pending
    #assign bob@example.com

    Hello, we are looking into it.

Supported commands (the command word is case-insensitive, arguments are trimmed):

``#note``
    the mail is an internal note and is never sent to the customer
``#status open|pending|solved|closed``
    set the ticket status (value case-insensitive; ``new`` is not allowed)
``#assign EMAIL``
    assign the ticket to an agent (the address is lowercased)
``#category NAME``
    set the category (1 to 64 printable characters)
``#cc add ADDRESS`` / ``#cc remove ADDRESS``
    accept a collaborator on the ticket / drop one (the address is lowercased)

The command block is the run of lines at the top of the text that start with ``#``; blank
lines may appear between commands. It ends at the first non-blank line that does not start
with ``#`` (a line indented by spaces does not start with ``#``), or at a line where ``#`` is
followed by a digit or whitespace (``#1 priority``, ``# heading``): such lines are ordinary
text and stay in the body. A ``#`` line inside the block that is not a valid command is
reported as a :class:`CommandError`; the caller should then apply none of the commands.

This module is pure: no I/O, and :func:`parse_commands` never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CATEGORY_MAX_LENGTH",
    "STATUS_VALUES",
    "Command",
    "CommandError",
    "ParsedCommands",
    "parse_commands",
]

STATUS_VALUES: tuple[str, ...] = ("open", "pending", "solved", "closed")
CATEGORY_MAX_LENGTH = 64

_BOM = "\ufeff"
# Longest addr-spec that fits in an SMTP path (RFC 5321: 256 octets including "<>").
_ADDRESS_MAX_LENGTH = 254
# Characters that never appear in the plain addr-specs we accept; they would let a value
# smuggle a display name, a second address or a comment into a header.
_ADDRESS_FORBIDDEN = frozenset('<>,;:"()\\')
# Longest excerpt of agent text quoted back in an error reason.
_QUOTE_MAX_LENGTH = 40

_CC_USAGE = "'#cc' needs 'add ADDRESS' or 'remove ADDRESS', e.g. '#cc add alice@example.com'"
# Every `CommandError.code`, so a mail template in any language can say each reason its own way.
ERROR_CODES = (
    "empty",
    "no_argument",
    "status_values",
    "category_length",
    "cc_usage",
    "unknown",
    "address_missing",
    "address_invalid",
    "conflict",
    "not_agent",
)
_SINGLE_VALUED = frozenset({"status", "assign", "category"})


@dataclass(frozen=True)
class Command:
    """One valid command.

    ``name`` is one of ``note``, ``status``, ``assign``, ``category``, ``cc_add``,
    ``cc_remove``; ``argument`` is the normalised argument (``""`` for ``note``; the lowercase
    status; the lowercase address for ``assign`` and the ``cc_*`` commands; the trimmed
    category name as written).
    """

    name: str
    argument: str = ""


@dataclass(frozen=True)
class CommandError:
    """A command line that could not be accepted."""

    line_number: int  # 1-based line number in the original text
    line: str  # the offending line as written (without its line ending or a leading BOM)
    reason: str  # English sentence explaining why (logs, tests)
    # What the reason says, as data, for the agent's own language (issue 15): one of
    # ERROR_CODES and its values (the command as shown, what was given, ...); templates/mail/
    # <locale>/_command_reasons.j2 words it.
    code: str = field(default="", compare=False)
    params: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _Why:
    """Why a line is refused, before its line number is known."""

    code: str
    reason: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedCommands:
    """Result of :func:`parse_commands`.

    ``commands`` are the valid commands in the order written, with exact repeats dropped.
    ``body`` is the rest of the text after the command block, with the leading blank lines
    removed; its line endings are kept as written. When ``errors`` is not empty the caller
    should apply none of the commands.
    """

    commands: tuple[Command, ...]
    errors: tuple[CommandError, ...]
    body: str

    @property
    def is_note(self) -> bool:
        """True when the mail is an internal note (``#note`` was given)."""
        return any(command.name == "note" for command in self.commands)


def parse_commands(text: str) -> ParsedCommands:
    """Split the command block off the top of ``text`` and parse it. Never raises."""
    if text.startswith(_BOM):
        text = text[len(_BOM) :]

    commands: list[Command] = []
    errors: list[CommandError] = []
    # (name, key) of an accepted command -> (its Command, its line number); the key is ""
    # for single-valued commands and the address for cc commands.
    seen: dict[tuple[str, str], tuple[Command, int]] = {}
    body_start = len(text)

    line_number = 0
    position = 0
    while position < len(text):
        line_number += 1
        newline = text.find("\n", position)
        next_position = len(text) if newline == -1 else newline + 1
        line = text[position:next_position].removesuffix("\n").removesuffix("\r")

        if line.strip() == "":
            position = next_position
            continue
        if not _is_command_line(line):
            body_start = position
            break

        result = _parse_line(line)
        if isinstance(result, _Why):
            errors.append(_error(line_number, line, result))
        else:
            conflict = _find_conflict(result, line_number, seen)
            if conflict is not None:
                errors.append(_error(line_number, line, conflict))
            elif (result.name, _conflict_key(result)) not in seen:
                seen[(result.name, _conflict_key(result))] = (result, line_number)
                commands.append(result)
        position = next_position

    return ParsedCommands(tuple(commands), tuple(errors), text[body_start:])


def _is_command_line(line: str) -> bool:
    """Whether ``line`` belongs to the command block (a valid command or not)."""
    if not line.startswith("#"):
        return False
    if len(line) == 1:
        return True
    second = line[1]
    return not (second.isdigit() or second.isspace())


def _error(line_number: int, line: str, why: _Why) -> CommandError:
    return CommandError(line_number, line, why.reason, why.code, why.params)


def _parse_line(line: str) -> Command | _Why:
    """Parse one ``#`` line into a :class:`Command`, or return the reason it is invalid."""
    rest = line[1:]  # starts with a non-blank character, see _is_command_line
    end = 0
    while end < len(rest) and not rest[end].isspace():
        end += 1
    word, argument = rest[:end], rest[end:].strip()
    if not word:
        return _Why("empty", "empty command '#'")
    name = word.lower()
    shown = f"#{name}"

    if name == "note":
        if argument:
            got = _quote(argument)
            return _Why(
                "no_argument",
                f"'{shown}' takes no argument, got {got}",
                {"command": shown, "got": got},
            )
        return Command("note")

    if name == "status":
        value = argument.lower()
        if value not in STATUS_VALUES:
            values = ", ".join(STATUS_VALUES)
            return _Why(
                "status_values",
                f"'{shown}' needs one of: {values}",
                {"command": shown, "choices": values},
            )
        return Command("status", value)

    if name == "assign":
        return _address_command("assign", shown, argument)

    if name == "category":
        if not 1 <= len(argument) <= CATEGORY_MAX_LENGTH or not argument.isprintable():
            return _Why(
                "category_length",
                f"'{shown}' needs a name of 1 to {CATEGORY_MAX_LENGTH} printable characters",
                {"command": shown, "max": str(CATEGORY_MAX_LENGTH)},
            )
        return Command("category", argument)

    if name == "cc":
        parts = argument.split(maxsplit=1)
        action = parts[0].lower() if parts else ""
        if action not in ("add", "remove"):
            return _Why("cc_usage", _CC_USAGE)
        address = parts[1].strip() if len(parts) == 2 else ""
        return _address_command(f"cc_{action}", f"#cc {action}", address)

    got = _quote("#" + word)
    return _Why("unknown", f"unknown command {got}", {"command": got})


def _address_command(name: str, shown: str, argument: str) -> Command | _Why:
    if not argument:
        return _Why(
            "address_missing",
            f"'{shown}' needs an email address, e.g. '{shown} alice@example.com'",
            {"command": shown},
        )
    if not _looks_like_address(argument):
        got = _quote(argument)
        return _Why(
            "address_invalid",
            f"'{shown}' needs one plain email address like alice@example.com, got {got}",
            {"command": shown, "got": got},
        )
    return Command(name, argument.lower())


def _looks_like_address(value: str) -> bool:
    """A loose addr-spec check: ``local@domain``, one ``@``, nothing that is not an address."""
    if len(value) > _ADDRESS_MAX_LENGTH or value.count("@") != 1:
        return False
    if any(
        char.isspace() or not char.isprintable() or char in _ADDRESS_FORBIDDEN for char in value
    ):
        return False
    local, domain = value.split("@")
    if not local or not domain:
        return False
    return not (domain.startswith(".") or domain.endswith(".") or ".." in domain)


def _conflict_key(command: Command) -> str:
    if command.name in ("cc_add", "cc_remove"):
        return command.argument
    return ""


def _find_conflict(
    command: Command, line_number: int, seen: dict[tuple[str, str], tuple[Command, int]]
) -> _Why | None:
    """Return why ``command`` conflicts with an earlier accepted command, or None."""
    if command.name in _SINGLE_VALUED:
        earlier = seen.get((command.name, ""))
        if earlier is not None and earlier[0].argument != command.argument:
            this = f"#{command.name} {command.argument}"
            before = f"#{command.name} {earlier[0].argument}"
            return _conflict(this, before, earlier[1])
    elif command.name in ("cc_add", "cc_remove"):
        other = "cc_remove" if command.name == "cc_add" else "cc_add"
        earlier = seen.get((other, command.argument))
        if earlier is not None:
            return _conflict(_cc_text(command), _cc_text(earlier[0]), earlier[1])
    return None


def _conflict(this: str, before: str, line: int) -> _Why:
    return _Why(
        "conflict",
        f"'{this}' conflicts with '{before}' on line {line}",
        {"command": this, "earlier": before, "line": str(line)},
    )


def _cc_text(command: Command) -> str:
    action = command.name.removeprefix("cc_")
    return f"#cc {action} {command.argument}"


def _quote(value: str) -> str:
    """Quote agent text for an error reason: escape control characters, cap the length."""
    if len(value) > _QUOTE_MAX_LENGTH:
        value = value[: _QUOTE_MAX_LENGTH - 1] + "…"
    escaped = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in value
    )
    return f"'{escaped}'"
