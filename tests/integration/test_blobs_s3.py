"""Blobs in an S3-compatible object store (issue 17), against moto's S3 server on loopback:
the store itself, `serve` keeping the raw mail there before its 250, the portal's local copy,
`mailgate blobs migrate`, and a store that cannot be reached (451, nothing lost)."""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.errors import TempFailure
from mailgate.store.blobs import BlobStore, copy_all, open_store
from mailgate.store.blobs_s3 import S3BlobStore
from mailgate.store.models import Attachment, Receipt
from tests.conftest import make_mail
from tests.support.inprocess import run_cli
from tests.support.peers import Mailgate, free_port
from tests.support.s3 import S3Server, s3_fixture, s3_server  # noqa: F401 (fixtures)


def test_the_object_store_keeps_reads_and_lists_blobs(s3: S3Server, tmp_path: Path) -> None:
    url = s3.url()
    bucket = s3.create(url)
    store = open_store(url, tmp_path / "scratch")
    assert isinstance(store, S3BlobStore)
    small = b"raw mail\r\n"
    digest = store.put(small)
    assert digest == hashlib.sha256(small).hexdigest()
    assert store.put(small) == digest  # content-addressed: once
    big = os.urandom(3 * 1024 * 1024 + 17)  # written piece by piece, uploaded in parts
    with store.writer() as writer:
        for i in range(0, len(big), 1 << 16):
            writer.write(big[i : i + (1 << 16)])
        ref = writer.commit()
    assert ref.sha256 == hashlib.sha256(big).hexdigest() and ref.size == len(big)
    assert store.exists(ref.sha256) and store.put(ref) == ref.sha256
    assert store.get(digest) == small
    assert b"".join(store.stream(ref.sha256, 1 << 20)) == big
    # Nothing is left in the scratch folder but read-through copies.
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]
    local = store.path(ref.sha256)  # the portal serves this file
    assert local.read_bytes() == big
    assert s3.keys(bucket) == sorted(f"mail/{d[:2]}/{d[2:4]}/{d}" for d in (digest, ref.sha256))
    assert sorted(store.digests()) == sorted([digest, ref.sha256])
    assert not store.exists("0" * 64)
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


def test_an_unreachable_store_is_a_temporary_failure(tmp_path: Path, s3: S3Server) -> None:
    store = open_store(
        f"s3://nowhere/x?endpoint=http://127.0.0.1:{free_port()}", tmp_path / "scratch"
    )
    with pytest.raises(TempFailure):
        store.put(b"mail")
    with pytest.raises(TempFailure), store.writer() as writer:
        writer.write(b"mail")
        writer.commit()
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]


def test_copy_all_is_idempotent_and_checks_every_copy(s3: S3Server, tmp_path: Path) -> None:
    local = BlobStore(tmp_path / "blobs")
    digests = [local.put(f"blob {i}".encode()) for i in range(5)]
    url = s3.url()
    s3.create(url)
    target = open_store(url, tmp_path / "scratch")
    first = copy_all(local, target)
    assert (first.copied, first.present) == (5, 0)
    again = copy_all(local, target)
    assert (again.copied, again.present) == (0, 5)
    assert sorted(target.digests()) == sorted(digests)
    # A blob whose bytes no longer match its name is refused, not copied.
    bad = local.put(b"will rot")
    local.path(bad).write_bytes(b"rotten")
    with pytest.raises(ValueError, match=bad):
        copy_all(local, target)
    assert not target.exists(bad)


@pytest.fixture
def s3_url(s3: S3Server) -> str:
    url = s3.url()
    s3.create(url)
    return url


@pytest.fixture
def config_extra(s3_url: str) -> str:
    return f'[blobs]\nurl = "{s3_url}"\n'


@pytest.fixture
def served(config_path: Path) -> Iterator[Mailgate]:
    mg = Mailgate(config_path)
    yield mg
    mg.stop()


def test_serve_keeps_raw_mail_and_attachments_in_the_object_store(
    served: Mailgate, s3: S3Server, s3_url: str
) -> None:
    msg = make_mail(message_id="<s3-1@client.example>")
    payload = os.urandom(50_000)
    msg.add_attachment(payload, maintype="application", subtype="octet-stream",
                       filename="dump.bin")  # fmt: skip
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=30) as client:
        client.send_message(msg)  # 250, or it raises
    with served.app.db.read() as session:
        receipt = session.exec(select(Receipt)).one()
        attachment = session.exec(select(Attachment)).one()
    keys = s3.keys(s3_url.split("/")[2])
    assert f"mail/{receipt.raw_sha256[:2]}/{receipt.raw_sha256[2:4]}/{receipt.raw_sha256}" in keys
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    assert any(k.endswith(attachment.sha256) for k in keys)
    data_dir = served.config.data_dir
    assert not (data_dir / "blobs").exists()  # nothing on the local disk but scratch
    assert served.app.blobs.path(attachment.sha256).read_bytes() == payload


def test_blobs_migrate_copies_a_local_store_once(
    s3: S3Server, tmp_path: Path, config_path: Path, s3_url: str
) -> None:
    # The config names the object store; migrate from a local folder to a second bucket.
    local = BlobStore(tmp_path / "old-blobs")
    for i in range(3):
        local.put(f"old {i}".encode())
    cfg = config_path.read_text().replace(s3_url, f"file:{tmp_path / 'old-blobs'}")
    config_path.write_text(cfg)
    to = s3.url()
    out = json.loads(run_cli(config_path, "blobs", "migrate", "--to", to, "--json").stdout)
    assert (out["copied"], out["already_there"]) == (3, 0)
    out = json.loads(run_cli(config_path, "blobs", "migrate", "--to", to, "--json").stdout)
    assert (out["copied"], out["already_there"]) == (0, 3)
    assert len(s3.keys(to.split("/")[2])) == 3
