"""Help-centre search benchmark (issue 13): p99 of a query over 10,000 articles.

`.venv/bin/python bench/search_bench.py --help`. See bench/README.md.

Builds a temporary database (SQLite as `serve` opens it; PostgreSQL too when
--database-url or $MAILGATE_TEST_DATABASE_URL names a server: a fresh database is made on it
and dropped afterwards), migrates it, and writes --articles articles (default 10,000) through
the same code as `mailgate articles import` (stems, full-text index, vocabulary), half French,
half English, in ten sections, of about 150 words each from a vocabulary of a few thousand
words; one article in a hundred speaks of "réinitialiser le mot de passe".

Then it times HelpCentre.search (what /search runs, highlighted passages included, counters
off) for each kind of query, --rounds times each:

  word            reinitialiser (in 1% of the articles)
  common word     a word in most articles (ranking many matches)
  two words       mot passe
  typo            mot de pase (one letter missing: the vocabulary is read)
  prefix          réinit*
  phrase          "mot de passe"
  nothing         xylophone zanzibar (no article: both languages are tried)

Target: p99 < 50 ms for every kind (PASS/FAIL per engine).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailgate.clock import SystemClock  # noqa: E402
from mailgate.services.articles import ArticleInput, save_in  # noqa: E402
from mailgate.services.helpcentre_search import HelpCentre  # noqa: E402
from mailgate.store.db import Database  # noqa: E402

TARGET_MS = 50.0
FR = (
    "compte commande produit flux catalogue facture livraison retour paiement client "
    "diffuseur marketplace export import fichier erreur message statut mise jour connexion "
    "identifiant adresse courriel lien page bouton menu paramètre option tarif abonnement "
    "remboursement stock prix référence catégorie image description titre rapport vente "
    "synchronisation règle filtre champ valeur format délai transporteur colis suivi"
).split()
EN = (
    "account order product feed catalogue invoice delivery return payment customer channel "
    "marketplace export import file error message status update sign link page button menu "
    "setting option price subscription refund stock reference category image description "
    "title report sale synchronisation rule filter field value format delay carrier parcel"
).split()
GLUE_FR = "le la les de des du un une et pour avec dans sur votre vos est sont pas".split()
GLUE_EN = "the a an of to and for with in on your is are not this that".split()
QUERIES = {
    "word": ("reinitialiser", "fr"),
    "common word": ("commande", "fr"),
    "two words": ("mot passe", "fr"),
    "typo": ("mot de pase", "fr"),
    "prefix": ("réinit*", "fr"),
    "phrase": ('"mot de passe"', "fr"),
    "nothing": ("xylophone zanzibar", "fr"),
}


def vocabulary(rng: random.Random, base: list[str]) -> list[str]:
    """The base words plus a few thousand made-up ones (a real help centre's long tail)."""
    syllables = (
        "ba be bi bo bu ca ce ci co da de di do fa fe fi la le li lo ma me mi mo na ne ni".split()
    )
    made = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(4000)}
    return base + sorted(made)


def article(n: int, rng: random.Random, words: dict[str, list[str]]) -> ArticleInput:
    locale = "fr" if n % 2 == 0 else "en"
    glue = GLUE_FR if locale == "fr" else GLUE_EN
    vocab = words[locale]
    paragraphs = []
    for _ in range(5):
        sentence = []
        for _ in range(30):
            sentence.append(rng.choice(glue) if rng.random() < 0.35 else rng.choice(vocab))
        paragraphs.append(" ".join(sentence).capitalize() + ".")
    if n % 100 == 2:  # French (n is even), published and public
        paragraphs.append(
            "Pour réinitialiser le mot de passe, cliquez sur « Mot de passe oublié »."
        )
    return ArticleInput(
        slug=f"article-{n}",
        title=" ".join(rng.choice(vocab) for _ in range(5)).capitalize(),
        section=f"Section {n % 10}",
        locale=locale,
        visibility="public" if n % 7 else "customers",
        status="published" if n % 20 else "draft",
        body_markdown="\n\n".join(paragraphs),
    )


def fill(db: Database, count: int) -> float:
    rng = random.Random(13)
    words = {"fr": vocabulary(rng, FR), "en": vocabulary(rng, EN)}
    started = time.perf_counter()
    now = SystemClock().now()
    batch = 500
    for first in range(0, count, batch):
        with db.write() as session:
            for n in range(first, min(count, first + batch)):
                save_in(session, article(n, rng, words), now)
    return time.perf_counter() - started


def measure(db: Database, rounds: int) -> dict[str, list[float]]:
    def write(job):  # counters are off: nothing is written
        raise AssertionError("no write expected")

    from mailgate.services.articles import Audience

    centre = HelpCentre(db, write, SystemClock())
    timings: dict[str, list[float]] = {name: [] for name in QUERIES}
    for query, locale in QUERIES.values():  # warm-up: caches, prepared plans
        centre.search(query, locale, Audience(), count=False)
    for _ in range(rounds):
        for name, (query, locale) in QUERIES.items():
            started = time.perf_counter()
            found = centre.search(query, locale, Audience(), count=False)
            timings[name].append((time.perf_counter() - started) * 1000)
            if name in ("word", "typo", "prefix", "phrase") and not found.hits:
                raise SystemExit(f"FAIL: {name!r} ({query}) found nothing")
    return timings


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run(label: str, url: str, count: int, rounds: int) -> bool:
    db = Database(url)
    db.upgrade()
    seconds = fill(db, count)
    if not url.startswith("sqlite"):  # what autovacuum does soon after a bulk import
        with db.write() as session:
            session.connection().exec_driver_sql("ANALYZE")
    print(f"\n{label}: {count} articles written and indexed in {seconds:.1f} s")
    timings = measure(db, rounds)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"  load average {load} (other work on the machine inflates these figures)")
    ok = True
    print(f"  {'query':<14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in timings.items():
        worst = p99(values)
        ok = ok and worst < TARGET_MS
        print(f"  {name:<14} {statistics.median(values):8.2f} {worst:8.2f} {max(values):8.2f}")
    overall = p99([v for values in timings.values() for v in values])
    verdict = "PASS" if ok else "FAIL"
    print(
        f"{verdict} {label}: search p99 {overall:.1f} ms over {count} articles (< {TARGET_MS:.0f})"
    )
    db.dispose()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000, help="articles to index")
    parser.add_argument("--rounds", type=int, default=50, help="times each query is run")
    parser.add_argument("--quick", action="store_true", help="2,000 articles, 20 rounds")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MAILGATE_TEST_DATABASE_URL", ""),
        help="a PostgreSQL server to run on too (a fresh database is made there)",
    )
    args = parser.parse_args()
    count, rounds = (2_000, 20) if args.quick else (args.articles, args.rounds)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ok = run("SQLite", f"sqlite:///{tmp}/search.db", count, rounds) and ok
    if args.database_url.startswith("postgresql"):
        ok = run_postgres(args.database_url, count, rounds) and ok
    else:
        print("SKIPPED PostgreSQL: no --database-url / MAILGATE_TEST_DATABASE_URL")
    return 0 if ok else 1


def run_postgres(url: str, count: int, rounds: int) -> bool:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"mg_search_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"SKIPPED PostgreSQL: {exc}".splitlines()[0])
        return True
    try:
        return run("PostgreSQL", base.set(database=name).render_as_string(False), count, rounds)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
