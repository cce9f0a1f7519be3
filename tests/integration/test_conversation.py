"""Issue 3, threading over real SMTP, end to end: the first contact's confirmation reaches the
sink, a reply to its Reply-To (by a scripted client, and by mutt) threads by token, its quoted
history stripped. The threading rules themselves are tested in process, in
tests/service/test_conversation.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mailgate.core.quotes import strip_quotes
from tests.support.conversation import (  # noqa: F401 (desk_fixture provides `desk`)
    CUSTOMER,
    Desk,
    addr,
    desk_fixture,
)
from tests.support.peers import ROOT, wait_until

JEAN = addr(CUSTOMER)


def test_customer_reply_via_reply_to_threads_by_token(desk: Desk) -> None:
    opened = desk.open_ticket()
    token_address = addr(str(opened.confirmation.msg["Reply-To"]))
    assert token_address.startswith("support+") and token_address.endswith("@example.com")

    desk.send(desk.reply(opened.confirmation, CUSTOMER, "Le voyant orange clignote."))
    # Some MTAs change the case of local parts: the token must survive it.
    shouted = desk.reply(opened.confirmation, CUSTOMER, "Et il fait du bruit.",
                         to=token_address.upper())
    desk.send(shouted)

    assert [t["id"] for t in desk.tickets()] == [opened.id]
    shown = json.loads(desk.mg.cli("ticket", "show", str(opened.id), "--json").stdout)
    assert [m["matched_by"] for m in shown["messages"]] == ["new", "token", "token"]
    second = shown["messages"][1]
    assert second["role"] == "customer" and second["author"] == JEAN
    assert second["body_text"] == "Le voyant orange clignote."
    # The quoted confirmation (issue 9: a first contact's neutral text, "Votre demande #N ...").
    assert "a écrit :" in second["full_text"] and "> Votre demande #" in second["full_text"]
    assert shown["messages"][2]["body_text"] == "Et il fait du bruit."


MUTT_REPLY = ROOT / "tools" / "peers" / "mutt-reply.sh"


@pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt is not installed "
                    "(tools/peers/install-peers.sh installs it)")
def test_a_real_mail_client_reply_threads_and_is_stripped(desk: Desk, tmp_path: Path) -> None:
    """mutt answers the confirmation from a Maildir, French attribution, bottom-posted."""
    opened = desk.open_ticket()
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.mg:2,").write_bytes(opened.confirmation.raw)
    answer = "Bonjour, toujours en panne ce matin."
    proc = subprocess.run(
        [str(MUTT_REPLY), str(maildir), str(desk.mg.smtp_port)],
        env={**os.environ, "FROM": CUSTOMER, "REPLY_TEXT": answer, "REPLY_POS": "bottom",
             "ATTRIBUTION": "Le %d, %n a écrit :"},
        capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    # mutt's SMTP session ends with 250 after the commit; its exit follows that.
    wait_until(lambda: len(desk.ticket(opened.id)["messages"]) == 2, what="mutt's reply")
    stored = desk.ticket(opened.id)["messages"][1]
    assert stored["matched_by"] == "token"
    assert stored["body_text"] == answer
    assert stored["body_text"] == strip_quotes(stored["full_text"])
    assert "a écrit :" in stored["full_text"]
