"""Article images and files (issue 13): names made URL-safe, Markdown pointing at them, and
only our own files shown as images."""

from __future__ import annotations

import re

from mailgate.core.article_files import file_name, file_target
from mailgate.services.articles import file_urls, render_markdown


def test_file_names_are_url_safe_and_never_paths():
    assert file_name("Capture d'écran 1.PNG") == "capture-d-ecran-1.png"
    assert file_name("../../etc/passwd") == "passwd"
    assert file_name("C:\\Users\\bob\\.hidden.txt") == "hidden.txt"
    assert file_name("...") == "file"
    assert file_name("a b - . c.jpg") == "a-b.c.jpg"
    long = file_name("x" * 300 + ".jpeg")
    assert len(long) == 100 and long.endswith(".jpeg")


def test_relative_names_point_at_the_articles_files():
    files = {"form.png": "/articles/a/files/form.png"}
    assert file_target("form.png", files) == "/articles/a/files/form.png"
    assert file_target("Form.PNG", files) == "/articles/a/files/form.png"
    assert file_target("a/form.png", files) == "/articles/a/files/form.png"  # exported layout
    assert file_target("form.png#top", files) == "/articles/a/files/form.png"
    for other in ("https://x.example/form.png", "/form.png", "#form.png", "other.png", None):
        assert file_target(other, files) is None


def test_only_the_articles_own_images_are_shown():
    files = file_urls("a", ["form.png", "guide.pdf"], prefix="/help")
    html = render_markdown(
        "![Form](form.png) ![Remote](https://tracker.example/p.gif) [Guide](guide.pdf)\n\n"
        '<img src="form.png" onerror="alert(1)">',
        files,
    )
    assert '<img src="/help/articles/a/files/form.png" alt="Form">' in html
    assert "tracker.example" not in html and 'alt="Remote"' in html
    assert 'href="/help/articles/a/files/guide.pdf"' in html
    assert re.search(r"<[^>]*\bonerror=", html) is None  # raw HTML stays text
    # Without files nothing changes: no image has a source.
    assert "src=" not in render_markdown("![Form](form.png)")
