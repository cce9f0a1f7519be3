"""The tests' `mailgate` commands fork from tests/support/cli_zygote.py (the imports done once)
instead of starting a new interpreter: what a command says and its exit status must be the
same both ways: a success, not found, a usage error, a config error, standard input, and
what a command wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.peers import ROOT, free_port, run_cli, write_config


def fresh(config: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(config), *args],
        input=stdin, capture_output=True, env=env, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'mailgate.db'}", sink_port=free_port()
    )
    assert fresh(path, "db", "upgrade").returncode == 0
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("ticket", "list", "--json"),
        ("ticket", "show", "999"),  # not found: 1
        ("ticket", "frobnicate"),  # usage: 2
        ("--help",),
    ],
    ids=["json", "not-found", "usage", "help"],
)
def test_a_command_says_the_same_and_exits_the_same(config: Path, args: tuple[str, ...]) -> None:
    want, got = fresh(config, *args), run_cli(config, *args, check=False)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)


def test_a_config_error_and_standard_input_reach_the_command(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[inbound]\nsmtp_lisen = "127.0.0.1:25"\n')
    want, got = fresh(broken, "check-config"), run_cli(broken, "check-config", check=False)
    assert got.returncode == want.returncode == 78
    assert got.stderr == want.stderr and b"smtp_lisen" in got.stderr
    # deliver reads the mail on its standard input: refused for a recipient not ours (65)
    mail = b"From: a@client.example\r\nTo: x@elsewhere.example\r\nSubject: s\r\n\r\nhi\r\n"
    args = ("deliver", "--sender", "a@client.example", "--recipient", "x@elsewhere.example")
    config = write_config(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'm.db'}", sink_port=free_port()
    )
    want = fresh(config, *args, stdin=mail)
    got = run_cli(config, *args, stdin=mail, check=False)
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr)
    assert got.returncode == 65, got.stderr


def test_what_a_forked_command_writes_a_fresh_one_reads(config: Path) -> None:
    added = run_cli(config, "agent", "add", "alice@helpdesk.example", "--name", "Alice",
                    "--print-link")  # fmt: skip
    assert b"http" in added.stdout
    want, got = fresh(config, "agent", "list", "--json"), run_cli(config, "agent", "list", "--json")
    assert got.stdout == want.stdout and b"alice@helpdesk.example" in got.stdout


def test_the_environment_given_reaches_the_command(config: Path) -> None:
    gone = {"MAILGATE_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"}
    got = run_cli(config, "ticket", "list", env=gone, check=False)
    assert got.returncode == 75, got.stderr  # temporary failure: that database is not there
    assert run_cli(config, "ticket", "list", check=False).returncode == 0
