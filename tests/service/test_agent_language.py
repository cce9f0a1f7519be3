"""Issue 15 at the service level: mail to agents speaks the agent's language. A refused
command is explained in it (`'#status' needs one of: …` was English in a French mail)."""

from __future__ import annotations

from sqlmodel import select

from mailgate.cli import main
from mailgate.core.language import Source
from mailgate.store.models import Account
from tests.support.conversation import AGENT, AGENT_NAME
from tests.support.inprocess import ServiceDesk


def _agent_speaks(desk: ServiceDesk, locale: str) -> None:
    """As the portal's language switcher records an agent's choice."""
    with desk.mg.app.db.write() as session:
        agent = session.exec(select(Account).where(Account.email == AGENT)).one()
        agent.locale, agent.locale_source = locale, Source.CHOSEN
        session.add(agent)


def _refused_command(desk: ServiceDesk, locale: str) -> str:
    desk.add_agent()
    _agent_speaks(desk, locale)
    opened = desk.open_ticket()
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    assert notification.msg["Content-Language"] == locale  # the notification already was
    text = "#status done\n#assign ghost@helpdesk.example\n\nC'est réglé."
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", text))
    error = desk.wait_mail("command_error", AGENT, ticket=opened.id)
    assert error.msg["Content-Language"] == locale
    return f"{error.msg['Subject']}\n{error.text()}"


def test_a_french_agent_is_told_in_french(desk: ServiceDesk) -> None:
    mail = _refused_command(desk, "fr")
    assert "Commande refusée" in mail
    assert "« #status » attend l'une de ces valeurs : open, pending, solved, closed" in mail
    assert "« ghost@helpdesk.example » n'est pas un agent" in mail
    assert "needs one of" not in mail and "is not an agent" not in mail


def test_an_english_agent_is_told_in_english(desk: ServiceDesk) -> None:
    mail = _refused_command(desk, "en")
    assert "Command refused" in mail
    assert "'#status' needs one of: open, pending, solved, closed" in mail
    assert "'ghost@helpdesk.example' is not an agent" in mail
    assert "attend" not in mail and "Ligne" not in mail


def test_agent_add_sets_the_agents_language(desk: ServiceDesk) -> None:
    code = main(["--config", str(desk.mg.config_path), "agent", "add", AGENT, "--name",
                 AGENT_NAME, "--locale", "en"])  # fmt: skip
    assert code == 0
    with desk.mg.app.db.read() as session:
        agent = session.exec(select(Account).where(Account.email == AGENT)).one()
        assert (agent.locale, agent.locale_source) == ("en", "chosen")
    desk.service.clock.advance(minutes=1)  # the CLI queued it on the real clock, a bit later
    activation = [m for m in desk.service.drain() if m.kind == "activation"][-1]
    assert activation.msg["Content-Language"] == "en"
    opened = desk.open_ticket()  # a French customer's ticket: the agent still reads English
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    assert notification.msg["Content-Language"] == "en"
    assert opened.confirmation.msg["Content-Language"] == "fr"
