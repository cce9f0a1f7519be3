"""Issue 11: a CLI command prints its result; its log records go to stderr only with
--verbose (accepted before or after the command). serve keeps logging: that is its output."""

from __future__ import annotations

from pathlib import Path

from tests.support.mailflow import run_cli


def test_commands_log_nothing_unless_verbose(config_path: Path):
    upgraded = run_cli(config_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr.decode()
    assert upgraded.stdout.decode().startswith("database at head: ")

    quiet = run_cli(config_path, "agent", "add", "alice@example.com", "--name", "Alice")
    assert quiet.returncode == 0, quiet.stderr.decode()
    assert quiet.stdout.decode().startswith("agent ")
    assert quiet.stderr == b""

    loud = run_cli(config_path, "agent", "add", "bob@example.com", "--name", "Bob", "--verbose")
    assert loud.returncode == 0, loud.stderr.decode()
    assert "event=agent.added" in loud.stderr.decode()
    before = run_cli(config_path, "-v", "agent", "add", "carl@example.com", "--name", "Carl")
    assert "event=agent.added" in before.stderr.decode()

    listed = run_cli(config_path, "account", "list", "--json")
    assert listed.returncode == 0 and listed.stderr == b""
    assert '"alice@example.com"' in listed.stdout.decode()


def test_check_config_reports_the_schema(config_path: Path):
    before = run_cli(config_path, "check-config")
    assert "FAIL schema database schema is not current" in before.stdout.decode()
    assert before.returncode != 0
    run_cli(config_path, "db", "upgrade")
    after = run_cli(config_path, "check-config")
    assert "ok   schema at " in after.stdout.decode(), after.stdout.decode()
