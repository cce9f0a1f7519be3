"""Issue 11: big base64 bodies decoded outside the MIME parser (core/hollow.py). The result
must be what parse_mail gives for the whole mail, whichever path was taken; the tests use a
small `min_bytes` so ordinary mails take the shortcut, and a parser that notes what it was
given to tell the paths apart."""

from __future__ import annotations

import base64
import mmap
import tracemalloc
from pathlib import Path

import pytest

from mailgate.core import hollow
from mailgate.core.hollow import Run, base64_runs, decode_run, parse_hollowed, text_runs
from mailgate.core.mail import InboundMail, MailParseError, parse_mail
from tests.support.bigmail import payload, with_attachments

DATA = Path(__file__).resolve().parent.parent / "data"
SMALL = 256  # min_bytes in these tests


class Recording:
    """parse_mail, remembering the size of each input (to see which path was taken)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, raw: bytes) -> InboundMail:
        self.sizes.append(len(raw))
        return parse_mail(raw)


def _hollowed(raw: bytes) -> tuple[InboundMail, list[int]]:
    parse = Recording()
    return parse_hollowed(raw, parse, min_bytes=SMALL), parse.sizes


def test_a_big_base64_attachment_is_decoded_outside_the_parser_and_equals_the_whole_parse():
    data = payload(20_000)
    raw = with_attachments(("dump.bin", data, "base64"), ("petit.bin", b"ok", "base64"))
    mail, sizes = _hollowed(raw)
    assert sizes == [sizes[0]] and sizes[0] < len(raw) // 10  # one parse, of a small view
    assert mail == parse_mail(raw)
    assert [a.payload for a in mail.attachments] == [data, b"ok"]


def test_lf_line_ends_padding_and_a_single_part_mail():
    for size in (20_000, 20_001, 20_002):  # no padding, "==", "="
        data = payload(size, seed=size)
        raw = with_attachments(("a.bin", data, "base64")).replace(b"\r\n", b"\n")
        mail, sizes = _hollowed(raw)
        assert len(sizes) == 1 and mail == parse_mail(raw) and mail.attachments[0].payload == data
    single = (
        b"From: jean@client.example\r\nSubject: pdf\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload(5000)).replace(b"\n", b"\r\n")
    )
    mail, sizes = _hollowed(single)
    assert len(sizes) == 1 and mail == parse_mail(single)
    assert mail.attachments[0].payload == payload(5000)


@pytest.mark.parametrize(
    "case",
    ["text body", "junk in the base64", "padding midway", "forwarded message", "quoted-printable"],
)
def test_whatever_the_shortcut_cannot_vouch_for_is_parsed_whole(case: str):
    """Each of these has a long base64-looking run the parser does not read as one
    attachment's strict base64: the mail is parsed again whole, with the same result."""
    data = payload(20_000)
    lines = base64.encodebytes(data).replace(b"\n", b"\r\n")
    if case == "text body":  # a text/plain body in base64 is a body, not an attachment
        raw = (
            b"From: jean@client.example\r\nSubject: t\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(b"Bonjour " * 3000).replace(b"\n", b"\r\n")
        )
    elif case == "junk in the base64":  # two runs in one part: the stdlib skips the junk
        raw = with_attachments(("a.bin", data, "base64"))
        raw = raw.replace(lines[8000:8077], lines[8000:8077].replace(b"A", b"A*", 1), 1)
    elif case == "padding midway":  # strict base64 refuses it, the stdlib stops there
        half = base64.encodebytes(data[:10_001]).replace(b"\n", b"\r\n")
        raw = with_attachments(("a.bin", data, "base64"))
        raw = raw.replace(lines, half + lines, 1)
    elif case == "forwarded message":  # a message/rfc822 attachment is re-serialised
        inner = with_attachments(("a.bin", data, "base64"))
        raw = (
            b"From: jean@client.example\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: "
            b'multipart/mixed; boundary="X"\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\nfwd\r\n'
            b"--X\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--X--\r\n"
        )
    else:  # quoted-printable of base64-looking text: not a base64 body
        raw = with_attachments(("a.txt", lines.replace(b"\r\n", b""), "quoted-printable"))
    assert base64_runs(raw, SMALL), "the case must have a run, or it tests nothing"
    mail, sizes = _hollowed(raw)
    assert sizes[-1] == len(raw), "parsed whole"
    assert mail == parse_mail(raw)


def test_a_marker_written_by_the_sender_changes_nothing():
    data = payload(20_000)
    forged = b"mailgate-hollowed-run-00000000000"
    raw = with_attachments(("a.bin", data, "base64"), ("forged.bin", forged, "base64"))
    mail, _ = _hollowed(raw)
    assert mail == parse_mail(raw)
    assert [a.payload for a in mail.attachments] == [data, forged]


def test_refusals_are_the_same():
    headless = base64.encodebytes(payload(5000))
    with pytest.raises(MailParseError, match="no header block"):
        parse_hollowed(headless, parse_mail, min_bytes=SMALL)
    no_from = with_attachments(("a.bin", payload(5000), "base64")).replace(b"From:", b"X-Was:")
    with pytest.raises(MailParseError, match="no From address"):
        parse_hollowed(no_from, parse_mail, min_bytes=SMALL)


def test_a_synthesized_message_id_is_made_from_the_real_bytes():
    raw = with_attachments(("a.bin", payload(5000), "base64"))
    raw = b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Message-ID"))
    mail, sizes = _hollowed(raw)
    assert sizes[0] < len(raw) and mail.message_id_synthesized
    assert mail == parse_mail(raw)


@pytest.mark.parametrize("slice_bytes", [1, 3, 77, 78, 79, 1000])
def test_decoding_in_slices_joins_up_whatever_the_slice(
    monkeypatch: pytest.MonkeyPatch, slice_bytes: int
):
    monkeypatch.setattr(hollow, "SLICE", slice_bytes)
    for size in (3000, 3001, 3002):
        data = payload(size, seed=size)
        text = base64.encodebytes(data).replace(b"\n", b"\r\n")
        assert b"".join(decode_run(text, Run(0, len(text), b""))) == data


def test_the_corpus_parses_the_same_by_either_path():
    """Every sample mail, its base64 runs of 256 bytes and more taken out of the parser."""
    samples = sorted(DATA.rglob("*.eml"))
    assert len(samples) > 50
    shortcut = 0
    for path in samples:
        raw = path.read_bytes()
        try:
            expected: InboundMail | str = parse_mail(raw)
        except MailParseError as exc:
            expected = str(exc)
        parse = Recording()
        try:
            got: InboundMail | str = parse_hollowed(raw, parse, min_bytes=SMALL)
        except MailParseError as exc:
            got = str(exc)
        assert got == expected, path.name
        shortcut += parse.sizes[-1] < len(raw)
    assert shortcut >= 3, "the corpus should exercise the shortcut"


def _resident_kib(path: Path) -> int:
    """The pages of `path`'s mapping resident in this process (/proc/self/smaps)."""
    mapped, total = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and not line.endswith(":"):
            mapped = line.endswith(" " + str(path))
        elif mapped and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc needed")
def test_a_mapped_mail_parses_the_same_and_its_pages_are_let_go(tmp_path: Path):
    """The parse worker maps a big stored mail instead of reading it: same result, and each
    slice scanned or decoded leaves the process's pages, so the mail is never resident whole."""
    data = payload(4_000_000, seed=7)
    raw = with_attachments(("dump.bin", data, "base64"))
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        parse = Recording()
        mail = parse_hollowed(mapped, parse)  # the real threshold: one run of 5.4 MB
        assert len(parse.sizes) == 1 and parse.sizes[0] < 10_000, "the shortcut was taken"
        assert mail == parse_mail(raw) and mail.attachments[0].payload == data
        assert _resident_kib(path) < 2048 < len(raw) // 1024, "the scanned slices let go"
        # A mail the shortcut cannot vouch for is parsed whole from the mapping, the same.
        assert parse_hollowed(mapped, parse, min_bytes=len(raw) + 1) == mail
        assert parse.sizes[-1] == len(raw)


def test_scanning_a_big_text_mail_holds_no_more_than_a_slice():
    """A text body (a log file sent 8bit, say) has millions of bytes outside the base64
    alphabet: the scan goes through them, it does not collect them (it did: 28x the mail)."""
    log = b"".join(
        b"2026-12-02 14:00:%02d INFO request %d: 200 OK\r\n" % (i % 60, i) for i in range(30_000)
    )
    raw = b"From: jean@client.example\r\nSubject: log\r\n\r\n" + log
    tracemalloc.start()
    try:
        assert base64_runs(raw) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * hollow.SLICE < len(raw), f"{peak} bytes held scanning {len(raw)}"


def _text_mail(body: bytes, cte: str = "8bit", eol: bytes = b"\r\n", inline: bool = False) -> bytes:
    disposition = b"inline" if inline else b'attachment; filename="app.log"'
    name = b"" if inline else b'; name="app.log"'  # a text/plain part without one is a body
    return eol.join(
        [
            b"From: jean@client.example",
            b"Subject: log",
            b"MIME-Version: 1.0",
            b'Content-Type: multipart/mixed; boundary="B"',
            b"",
            b"--B",
            b"Content-Type: text/plain; charset=utf-8",
            b"",
            b"Bonjour, voici le journal.",
            b"--B",
            b"Content-Type: text/plain; charset=utf-8" + name,
            b"Content-Disposition: " + disposition,
            b"Content-Transfer-Encoding: " + cte.encode(),
            b"",
            body + b"--B--",
            b"",
        ]
    )


def _log(lines: int, eol: bytes = b"\r\n") -> bytes:
    return b"".join(
        b"2026-12-02 14:00:%02d req=%d user=\xc3\xa9lodie -- ok  %s" % (i % 60, i, eol)
        for i in range(lines)
    )


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("cte", ["8bit", "7bit", "binary", "quoted-printable"])
def test_a_big_text_attachment_is_taken_outside_the_parser_and_equals_the_whole_parse(
    cte: str, eol: bytes
):
    """A log file sent as it is (or quoted-printable, "=" escapes and soft line breaks
    included): one parse, of a small view, and the same result as the whole parse."""
    body = _log(200, eol)
    if cte == "quoted-printable":  # "=" escaped, a soft line break, an escaped byte
        body = body.replace(b"=", b"=3D").replace(b"ok  ", b"o=" + eol + b"k=20 ")
    raw = _text_mail(body, cte, eol)
    mail, sizes = _hollowed(raw)
    assert len(sizes) == 1 and sizes[0] < len(raw) // 10, "one parse, of a small view"
    assert mail == parse_mail(raw)
    assert mail.attachments[0].payload == _log(200, eol).removesuffix(eol)


def test_binary_quoted_printable_and_a_mix_with_base64_are_taken_too():
    data = payload(20_000)
    raw = with_attachments(("qp.bin", data, "quoted-printable"), ("b.bin", data, "base64"))
    mail, sizes = _hollowed(raw)
    assert len(sizes) == 1 and sizes[0] < len(raw) // 10
    assert mail == parse_mail(raw)
    assert [a.payload for a in mail.attachments] == [data, data]


@pytest.mark.parametrize("case", ["dash lines", "rfc2231 boundary", "nested"])
def test_a_text_attachment_among_lines_and_parts_that_look_like_structure(case: str):
    """Lines starting with "--" that are no boundary (a diff, a signature) stay inside; a
    boundary declared in RFC 2231 pieces or by an inner multipart still ends the body."""
    body = _log(200).replace(b"2026-12-02 14:00:10", b"--- a/mailgate/core/hollow.py", 1)
    raw = _text_mail(body)
    if case == "rfc2231 boundary":
        raw = raw.replace(b'boundary="B"', b'boundary*0="B"; boundary*1="Z"', 1)
        raw = raw.replace(b"\r\n--B", b"\r\n--BZ")
    elif case == "nested":  # the log inside a multipart/alternative inside the mixed one
        inner = _text_mail(body).split(b"\r\n\r\n", 1)[1].replace(b"--B", b"--I")
        raw = (
            b"From: jean@client.example\r\nSubject: log\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
            b'Content-Type: multipart/alternative; boundary="I"\r\n\r\n'
            + inner
            + b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nfin\r\n--B--\r\n"
        )
    mail, sizes = _hollowed(raw)
    assert len(sizes) == 1 and sizes[0] < len(raw) // 10, "one parse, of a small view"
    assert mail == parse_mail(raw)
    assert [a.payload for a in mail.attachments] == [body.removesuffix(b"\r\n")]


@pytest.mark.parametrize("case", ["bare CR", "inline text body", "single part", "uuencode"])
def test_text_the_shortcut_cannot_vouch_for_is_parsed_as_before(case: str):
    body = _log(200)
    cte = "uuencode" if case == "uuencode" else "8bit"
    if case == "bare CR":  # the parser ends a line at a bare CR: "--B" after it is a boundary
        raw = _text_mail(body.replace(b"ok  \r\n", b"ok\r--B\r\n", 1))
    elif case == "inline text body":
        raw = _text_mail(body, inline=True)
    elif case == "single part":
        raw = (
            b"From: jean@client.example\r\nSubject: log\r\nContent-Disposition: attachment\r\n\r\n"
        )
        raw += body
    else:
        raw = _text_mail(body, cte)
    assert text_runs(raw, SMALL), "the case must have a text run, or it tests nothing"
    mail, sizes = _hollowed(raw)
    assert sizes[-1] == len(raw), "parsed whole"
    assert mail == parse_mail(raw)
