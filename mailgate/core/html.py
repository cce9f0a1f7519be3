"""HTML from mail, made safe to show inside a portal page.

nh3 (ammonia) keeps a known-good set of tags and attributes and drops scripts, styles, event
handlers and `javascript:` links. Images lose their source: a remote image is a tracking pixel
that tells the sender when and where the page was read, so it is never fetched; its alt text
stays. The portal's Content-Security-Policy (img-src 'self') is the second lock on that door.
"""

from __future__ import annotations

import nh3

_DROPPED_WITH_CONTENT = {"script", "style", "title", "head", "noscript", "template"}
_LINK_SCHEMES = {"http", "https", "mailto", "tel"}


def _filter(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute in ("src", "srcset"):
        return None
    return value


def safe_html(html: str, images: frozenset[str] = frozenset()) -> str:
    """A fragment with no active content and nothing that loads from elsewhere. `images`: the
    exact URLs of our own files an image may show (a help-centre article's images)."""
    tags = set(nh3.ALLOWED_TAGS) - _DROPPED_WITH_CONTENT

    def keep_own_images(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src" and value in images:
            return value
        return _filter(tag, attribute, value)

    return nh3.clean(
        html,
        tags=tags,
        clean_content_tags=_DROPPED_WITH_CONTENT,
        url_schemes=_LINK_SCHEMES,
        attribute_filter=keep_own_images if images else _filter,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
