"""`mailgate articles import DIR | export DIR | delete SLUG | list [--json]` (issue 13):
help-centre articles as Markdown files with front matter, so a team keeps its docs in git.

Registered on cli.py's parser by `register`; it imports the help-centre services only when one
of these commands runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailgate import config as config_mod

Add = Callable[..., argparse.ArgumentParser]


def _articles(args: argparse.Namespace) -> Any:
    from mailgate.clock import SystemClock
    from mailgate.services.articles import Articles
    from mailgate.store.db import Database
    from mailgate.wiring import blob_store

    config = config_mod.load(args.config)
    db = Database(config.database.url)
    db.require_current()

    def write(job: Callable[[Any], Any]) -> Any:
        with db.write() as session:
            return job(session)

    return Articles(db, write, SystemClock(), blob_store(config))


def cmd_import(args: argparse.Namespace) -> int:
    from mailgate.cli import BadArgument

    folder = Path(args.dir)
    if not folder.is_dir():
        raise BadArgument(f"{folder} is not a folder")
    report = _articles(args).import_dir(folder)
    if args.json:
        import json

        print(json.dumps(report.__dict__, indent=2))
    else:
        print(
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    written = _articles(args).export_dir(Path(args.dir))
    articles = sum(1 for path in written if path.suffix == ".md")
    print(f"{articles} articles and {len(written) - articles} files written to {args.dir}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from mailgate.cli import BadArgument

    if not _articles(args).delete(args.slug):
        raise BadArgument(f"no article {args.slug}")
    print(f"deleted {args.slug}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from mailgate.cli import _output

    rows = [a.as_json() for a in _articles(args).listing(locale=args.locale)]
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    columns = ("slug", "title", "section", "locale", "visibility", "status", "views", "updated_at")
    _output(args, rows, columns)
    return 0


def register(sub: Any, add: Add, json_help: str) -> None:
    """The `articles` command group, on the top-level subparsers of cli.parser()."""
    group = sub.add_parser("articles", help="help-centre articles (Markdown files)")
    articles = group.add_subparsers(dest="sub", required=True)
    imp = add(
        "import", cmd_import, "import a folder of Markdown files (idempotent by slug)", articles
    )
    imp.add_argument("dir", help="folder of *.md files with front matter (title, slug, ...)")
    imp.add_argument("--json", action="store_true", help="print the created/updated slugs as JSON")
    exp = add("export", cmd_export, "write every article to a folder, one .md file each", articles)
    exp.add_argument("dir", help="folder to write to (created when missing; files overwritten)")
    rm = add("delete", cmd_delete, "delete an article, its files and its search entry", articles)
    rm.add_argument("slug", help="the article's slug")
    lst = add("list", cmd_list, "list articles by language, section and title", articles)
    lst.add_argument("--json", action="store_true", help=json_help)
    lst.add_argument(
        "--locale", choices=config_mod.mail_locales(), help="only articles in this language"
    )
    lst.add_argument("--status", choices=("draft", "published"), help="only articles in this state")
