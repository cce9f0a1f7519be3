"""CPU per inbound mail in a parse worker, whole and by piece (time.process_time, one process).

    .venv/bin/python bench/parse_cpu_bench.py [N]

The mails: ingest_bench's 5 KB plain first-contact mail (mixed French/English words) and the
real ones in tests/data/inbound. "worker" is what a parse worker runs per mail, the reply's
pickling included (parse_storing with parser_for(locales), then pickle.dumps)."""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ingest_bench import make_message  # bench/ is on sys.path when run as a script

from mailgate.adapters.parsing import parse_storing
from mailgate.config import mail_locales
from mailgate.core.language_detect import detect_language, mail_language, parser_for, sample
from mailgate.core.mail import MailParseError, parse_mail, strict_sender
from mailgate.core.quotes import strip_quotes

INBOUND = Path(__file__).resolve().parent.parent / "tests" / "data" / "inbound"


def per_call(fn: Callable[[], object], n: int) -> float:
    """Microseconds of CPU per call, best of 3 rounds."""
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def real_mails() -> list[bytes]:
    mails = []
    for path in sorted(INBOUND.glob("*.eml")):
        raw = path.read_bytes()
        try:
            parse_mail(raw)
        except MailParseError:
            continue
        mails.append(raw)
    return mails


def rows(mails: list[bytes], locales: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    """What is timed, each a call over all `mails`."""
    parse = parser_for(locales)
    parsed = [parse_mail(raw) for raw in mails]
    froms = [p.header("From") for p in parsed]
    return {
        "worker (parse+pickle)": lambda: [
            pickle.dumps(("ok", parse_storing(raw, parse, None)), -1) for raw in mails
        ],
        "  parse_storing": lambda: [parse_storing(raw, parse, None) for raw in mails],
        "  parse_mail": lambda: [parse_mail(raw) for raw in mails],
        "    strict_sender": lambda: [strict_sender([f]) for f in froms],
        "  pickle reply": lambda: [pickle.dumps(("ok", p), -1) for p in parsed],
        "  mail_language": lambda: [mail_language(p, locales) for p in parsed],
        "    sample": lambda: [sample(p.text) for p in parsed],
        "    detect_language": lambda: [detect_language(sample(p.text), locales) for p in parsed],
        "  strip_quotes(text)": lambda: [strip_quotes(p.text) for p in parsed],
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    locales = mail_locales()
    bench = [make_message("cpu", i, 5000).data for i in range(20)]
    real = real_mails()
    for name, mails in (("bench 5KB", bench), (f"inbound x{len(real)}", real)):
        rounds = max(1, n // len(mails))
        print(f"-- {name}: us CPU per mail (N={rounds * len(mails)})")
        for label, fn in rows(mails, locales).items():
            print(f"{label:24} {per_call(fn, rounds) / len(mails):8.1f}")
        size = len(pickle.dumps(("ok", parse_mail(mails[0])), -1))
        print(f"{'  pickled bytes':24} {size:8d}")


if __name__ == "__main__":
    main()
