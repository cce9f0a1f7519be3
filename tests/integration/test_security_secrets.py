"""Issue 9, secrets: no usable secret ships with mailgate; the embedded default makes a random
one in data_dir (0600) on first start and keeps it; `serve` and `check-config` refuse a short
secret or one printed in our documentation; every key is derived per purpose from it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from mailgate import config as config_mod
from mailgate.cli import EX_CONFIG, main
from mailgate.core.tokens import make_reply_token, read_reply_token
from mailgate.keys import KNOWN_SECRETS, Keys, Purpose, load_secret
from tests.support.peers import ROOT

DOCS = [ROOT / "README.md", ROOT / "config" / "mailgate.toml"]
DOCS += sorted((ROOT / "docs").glob("*.md"))


def write(folder: Path, mailgate_table: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailgate.toml"
    path.write_text(
        f'[mailgate]\nhostname = "mg.test"\ndata_dir = "var"\n{mailgate_table}\n'
        f'[database]\nurl = "sqlite:///var/mailgate.db"\n'
        '[inbound]\nsmtp_listen = "127.0.0.1:0"\n[portal]\nlisten = ""\n'
        '[outbound]\ntransport = "maildir:var/sent"\n'
    )
    return path


def test_the_shipped_config_holds_no_secret():
    cfg = config_mod.load(ROOT / "config" / "mailgate.toml", environ={})
    assert cfg.mailgate.secret_key == "" and cfg.mailgate.secret_key_file == ""
    assert cfg.secret_file == (ROOT / "var" / "secret").resolve()


def test_first_start_creates_a_private_random_secret_and_reuses_it(tmp_path: Path):
    path = write(tmp_path, "")
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    secret_file = tmp_path / "var" / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    first = secret_file.read_bytes()
    assert len(first.strip()) >= 32
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    assert secret_file.read_bytes() == first
    # Another machine's first start gets another secret.
    other = write(tmp_path / "other", "")
    assert main(["--config", str(other), "db", "upgrade"]) == 0
    assert (tmp_path / "other" / "var" / "secret").read_bytes() != first


def test_a_secret_key_file_naming_a_missing_file_is_created(tmp_path: Path):
    path = write(tmp_path, 'secret_key_file = "etc/secret"')
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    created = tmp_path / "etc" / "secret"
    assert stat.S_IMODE(created.stat().st_mode) == 0o600


def test_a_world_readable_secret_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = write(tmp_path, 'secret_key_file = "secret"')
    (tmp_path / "secret").write_text("x" * 48)
    (tmp_path / "secret").chmod(0o644)
    assert main(["--config", str(path), "check-config"]) == EX_CONFIG
    assert "chmod 600" in capsys.readouterr().err


def documented_secrets() -> set[str]:
    """Every value our documentation shows for secret_key, commented out or not."""
    found = set()
    for doc in DOCS:
        found |= set(re.findall(r'secret_key\s*=\s*"([^"]*)"', doc.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize(
    "secret", ["too-short", "change-me-in-production-please", *sorted(documented_secrets())]
)
def test_weak_or_documented_secrets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str, secret: str
):
    path = write(tmp_path, f'secret_key = "{secret}"')
    assert main(["--config", str(path), command]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "mailgate.secret_key" in err and "secrets.token_urlsafe" in err  # the key, the fix


def test_every_documented_secret_is_known_to_be_refused():
    for value in documented_secrets():
        text = value.strip()
        placeholder = text.startswith("<") and text.endswith(">")
        assert text in KNOWN_SECRETS or placeholder or len(value.encode()) < 32, value


def test_a_refused_secret_in_a_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = write(tmp_path, 'secret_key_file = "secret"')
    (tmp_path / "secret").write_text("change-me-in-production-please\n")
    (tmp_path / "secret").chmod(0o600)
    assert main(["--config", str(path), "check-config"]) == EX_CONFIG
    assert str(tmp_path / "secret") in capsys.readouterr().err


def test_one_key_per_purpose_and_the_old_default_forges_nothing(tmp_path: Path):
    keys = Keys(load_secret("", tmp_path / "secret"))
    derived = {keys.key(p) for p in Purpose}
    assert len(derived) == len(Purpose)  # no two purposes share a key
    assert keys.key(Purpose.REPLY) == Keys(load_secret("", tmp_path / "secret")).key(Purpose.REPLY)
    # The attack of the issue: a reply token computed from the key anyone could read in the
    # old README is worth nothing against a fresh installation.
    forged = make_reply_token(b"change-me-in-production-please", 1, 1)
    assert read_reply_token(keys.key(Purpose.REPLY), forged) is None
    # A key of one purpose cannot stand in for another's.
    token = make_reply_token(keys.key(Purpose.LINKS), 1, 1)
    assert read_reply_token(keys.key(Purpose.REPLY), token) is None
