"""Issue 10, bug (a): `check-config` once created only the top folder of the outbound maildir;
Maildir(create=True) then never made tmp/new/cur and every outbound mail failed. A check leaves
nothing behind, and the transport sends into a top folder that lacks them."""

from __future__ import annotations

import re
from pathlib import Path

from mailgate.adapters.transports import MaildirTransport
from tests.support.mailflow import run_cli
from tests.support.peers import write_config

RAW = b"From: support@example.com\r\nTo: jean@client.example\r\nSubject: x\r\n\r\nhello\r\n"


def _maildir_config(tmp_path: Path, database_url: str) -> tuple[Path, Path]:
    cfg = write_config(tmp_path, database_url=database_url, sink_port=1)
    sent = tmp_path / "var" / "sent"
    text = re.sub(r'(?m)^transport = ".*"$', f'transport = "maildir:{sent}"', cfg.read_text())
    cfg.write_text(text)
    return cfg, sent


def test_check_config_leaves_no_half_made_maildir_and_sending_works_after_it(
    tmp_path: Path, database_url: str
):
    cfg, sent = _maildir_config(tmp_path, database_url)
    proc = run_cli(cfg, "check-config")
    out = proc.stdout.decode()
    assert re.search(r"(?m)^ok   outbound maildir .* will be created", out), out
    assert not sent.exists()  # the check created nothing
    MaildirTransport(sent).send("support@example.com", "jean@client.example", RAW)
    assert [p.read_bytes() for p in (sent / "new").iterdir()] == [RAW]


def test_the_maildir_transport_completes_a_top_folder_without_tmp_new_cur(tmp_path: Path):
    sent = tmp_path / "sent"
    sent.mkdir()  # what the old check-config (or an operator's mkdir) left
    MaildirTransport(sent).send("support@example.com", "jean@client.example", RAW)
    assert sorted(p.name for p in sent.iterdir()) == ["cur", "new", "tmp"]
    assert len(list((sent / "new").iterdir())) == 1
    assert "writable" in MaildirTransport(sent).check()


def test_check_config_fails_when_the_maildir_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    try:
        MaildirTransport(blocker / "sent").check()
    except Exception as exc:
        assert "not writable" in str(exc) or "not a folder" in str(exc), exc
    else:  # root can write anywhere but into a regular file's "folder"
        raise AssertionError("check passed for a maildir under a regular file")
