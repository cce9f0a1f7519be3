"""Images and files of a help-centre article (issue 13): their names, and how the Markdown
refers to them.

An author attaches `Screenshot 1.PNG` and writes `![The login page](screenshot-1.png)`; the
name is made URL-safe once, at upload, and is unique within the article. A relative link or
image whose last path segment is such a name points at the file (`![x](screenshot-1.png)` as
well as `![x](my-article/screenshot-1.png)`, the layout of an exported folder, which Markdown
viewers in git show correctly). Names never touch a path: the bytes are a blob, by sha256.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import unquote

NAME_MAX = 100
MAX_FILES = 20  # per upload
MAX_FILE_BYTES = 10 * 1024 * 1024
# Shown in the page; anything else downloads (never SVG inline: it can carry script).
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def file_name(filename: str) -> str:
    """`Capture d'écran 1.PNG` -> `capture-d-ecran-1.png`: lowercase ASCII letters, digits, dots,
    dashes and underscores, no leading dot, at most NAME_MAX characters (extension kept)."""
    base = re.split(r"[/\\]", filename)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    name = _UNSAFE.sub("-", ascii_name.lower()).strip("-.")
    name = re.sub(r"-*\.-*", ".", name)
    if len(name) > NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if stem and len(ext) <= 10 else ""
        name = name[: NAME_MAX - len(ext)].rstrip("-.") + ext
    return name or "file"


def file_target(url: str | None, files: Mapping[str, str]) -> str | None:
    """The URL of the attached file a Markdown link or image names, or None (not one of them:
    an absolute or rooted URL, an anchor, or a name the article has no file for)."""
    if not url or url.startswith(("/", "#", "?")) or _SCHEME.match(url):
        return None
    last = unquote(url.split("#", 1)[0].split("?", 1)[0]).rsplit("/", 1)[-1].lower()
    return files.get(last)
