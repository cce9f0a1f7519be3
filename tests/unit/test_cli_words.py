"""Which command lines serve's warm process may run (mailgate/cli_warm.py), read off argv as
argparse would read them: the words that are not options, the config file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.cli import _config_path, command_words
from mailgate.cli_warm import warm_eligible


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--config", "x.toml", "ticket", "list"], ["ticket", "list"]),
        (["--conf", "x.toml", "-v", "ticket", "show", "3"], ["ticket", "show", "3"]),
        (["--config=x.toml", "--log-format", "json", "outbox", "list"], ["outbox", "list"]),
        (["ticket", "list", "--status", "open"], ["ticket", "list", "open"]),
        (["--help"], []),
    ],
)
def test_command_words(argv: list[str], words: list[str]) -> None:
    assert command_words(argv) == words


@pytest.mark.parametrize(
    ("words", "warm"),
    [
        (["ticket", "list"], True),
        (["check-config"], True),
        (["db", "upgrade"], True),
        (["ticket", "attachment", "3"], False),  # writes files where the caller says
        (["import", "box.mbox"], False),  # reads a file
        (["serve"], False),
        (["deliver"], False),
        (["oauth", "authorize"], False),
        (["ticket"], False),
        ([], False),
    ],
)
def test_only_commands_whose_paths_are_config_and_database_go_warm(
    words: list[str], warm: bool
) -> None:
    assert warm_eligible(words) is warm


def test_the_config_path_is_chosen_as_config_load_chooses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILGATE_CONFIG", "env.toml")
    assert _config_path(["ticket", "list"]) == Path("env.toml")
    assert _config_path(["--config", "a.toml", "ticket", "list"]) == Path("a.toml")
    assert _config_path(["ticket", "list", "--config=b.toml"]) == Path("b.toml")
    monkeypatch.delenv("MAILGATE_CONFIG")
    assert _config_path(["ticket", "list"]) == Path("config/mailgate.toml")
