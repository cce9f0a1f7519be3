"""HTML from mail, made safe for the portal (mailgate.core.html.safe_html)."""

from __future__ import annotations

import pytest

from mailgate.core.html import safe_html


@pytest.mark.parametrize(
    ("dirty", "gone"),
    [
        ("<script>alert(1)</script>ok", "alert"),
        ('<img src="x" onerror="alert(1)">', "onerror"),
        ('<a href="javascript:alert(1)">x</a>', "javascript:"),
        ('<a href="data:text/html,<b>x</b>">x</a>', "data:"),
        ('<p style="background:url(https://t.example/p.gif)">x</p>', "t.example"),
        ("<style>p{color:red}</style><p>x</p>", "color"),
        ('<iframe src="https://evil.example/"></iframe>', "iframe"),
        ('<form action="https://evil.example/"><input name="pw"></form>', "form"),
        ("<svg><script>alert(1)</script></svg>", "script"),
        ("<!-- a comment -->x", "comment"),
        ('<base href="https://evil.example/">', "base"),
        ('<meta http-equiv="refresh" content="0;url=https://evil.example/">', "refresh"),
    ],
)
def test_active_content_is_removed(dirty: str, gone: str) -> None:
    assert gone not in safe_html(dirty)


def test_remote_images_lose_their_source_but_keep_their_words() -> None:
    cleaned = safe_html(
        '<img src="https://tracker.example/open.gif" alt="Logo ACME" width="1">'
        '<img srcset="https://tracker.example/a.png 2x" alt="b">'
    )
    assert "tracker.example" not in cleaned
    assert 'alt="Logo ACME"' in cleaned and "src" not in cleaned


def test_ordinary_formatting_and_links_stay() -> None:
    cleaned = safe_html(
        '<p>Bonjour <b>Jean</b>,</p><ul><li>un</li></ul>'
        '<a href="https://docs.example/aide">aide</a><table><tr><td>1</td></tr></table>'
    )
    assert "<b>Jean</b>" in cleaned and "<li>un</li>" in cleaned and "<td>1</td>" in cleaned
    assert '<a href="https://docs.example/aide" rel="noopener noreferrer nofollow">' in cleaned
