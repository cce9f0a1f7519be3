"""The cost of detecting a mail's language (issue 15), per message, in the parse worker.

    .venv/bin/python bench/language_bench.py

Target: well under 1 ms of CPU for a normal mail (a few paragraphs, a quoted reply)."""

from __future__ import annotations

import time

from mailgate.core.language_detect import detect_language, mail_language, sample
from mailgate.core.mail import parse_mail

PARAGRAPH = (
    "Bonjour, depuis hier soir je n'arrive plus à me connecter à mon compte : le site me dit que "
    "mon mot de passe est faux alors que je ne l'ai pas changé. Pouvez-vous m'aider ? "
)
QUOTED = "\n".join("> " + PARAGRAPH for _ in range(40))
MAILS = {
    "short": "Merci, c'est réglé.",
    "normal": "\n\n".join([PARAGRAPH] * 3),
    "reply": f"{PARAGRAPH}\n\nLe 1 déc. 2026 à 10:02, Support a écrit :\n{QUOTED}",
    "long": "\n\n".join([PARAGRAPH] * 200),
}
RAW = (
    b"From: Jean <jean@client.example>\r\nTo: support@example.com\r\nSubject: Compte\r\n"
    b"Message-ID: <1@client.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    + MAILS["normal"].encode()
)
LOCALES = ("en", "fr")
N = 500


def main() -> None:
    detect_language(PARAGRAPH, LOCALES)  # models loaded once per worker
    for name, text in MAILS.items():
        start = time.process_time()
        for _ in range(N):
            detect_language(sample(text), LOCALES)
        per = (time.process_time() - start) / N * 1e6
        print(f"{name:7} {len(text):6} chars  {per:7.0f} us CPU per mail")
    mail = parse_mail(RAW)
    start = time.process_time()
    for _ in range(N):
        parse_mail(RAW)
    parse = (time.process_time() - start) / N * 1e6
    start = time.process_time()
    for _ in range(N):
        mail_language(mail, LOCALES)
    detect = (time.process_time() - start) / N * 1e6
    print(f"parse_mail {parse:.0f} us, detection {detect:.0f} us per normal mail")


if __name__ == "__main__":
    main()
