"""Raw mail and attachments, stored by the sha256 of their bytes.

Names from a mail never touch the file system: the path is derived from the hash only.
Writes go to a temporary file, are fsync'd, renamed into place and the folder fsync'd, so a
blob that exists is complete, and a 250 said after `put` survives a power cut.

Big payloads need not be in memory whole: `writer()` takes them piece by piece (the parse
worker decodes a 25 MB attachment into one), and `put` of a `BlobRef` (a blob written so) only
checks that it is there. `spool()` is scratch space on the same disk for a DATA too big to
hold in memory while it is read.

Two implementations, chosen by `[blobs] url` (`open_store`): `BlobStore`, a local directory
(one instance, the default), and `S3BlobStore` (store/blobs_s3.py), an S3-compatible object
store shared by several instances. Both offer the same methods; `path()` of the object store
is a local, verified copy read through once (streamed to disk, never held in memory), so the
portal serves attachments from a file either way. `copy_all` is `mailgate blobs migrate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from mailgate.core.mail import BlobRef
from mailgate.errors import TempFailure

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SPOOL_BUFFER = 1 << 20  # write a spooled DATA in 1 MiB system calls, not 8 KiB ones


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """The blob as a local file (to serve it, or read it whole)."""
        return self.local_path(sha256)

    def local_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes | BlobRef) -> str:
        """Store `data`; its digest. A BlobRef is already stored: it is only checked."""
        if isinstance(data, BlobRef):
            if not self.path(data.sha256).exists():  # removed since the worker wrote it
                raise TempFailure("blob store: a blob written while parsing is missing")
            return data.sha256
        digest = hashlib.sha256(data).hexdigest()
        if self.path(digest).exists():
            return digest
        with self.writer() as writer:
            writer.write(data)
            return writer.commit().sha256

    def writer(self) -> BlobWriter:
        """A blob written piece by piece: `with store.writer() as w: w.write(...); w.commit()`.
        Left without commit() (an exception), nothing is stored."""
        return BlobWriter(self)

    def spool(self) -> IO[bytes]:
        """An unnamed temporary file next to the blobs (O_TMPFILE: nothing is left behind,
        even by a crash), buffered for large writes."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return tempfile.TemporaryFile(dir=self.root, buffering=SPOOL_BUFFER)
        except OSError as exc:
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def stream(self, sha256: str, chunk: int = SPOOL_BUFFER) -> Iterator[bytes]:
        """The blob's bytes piece by piece (a big one is never whole in memory)."""
        with open(self.path(sha256), "rb") as fh:
            while piece := fh.read(chunk):
                yield piece

    def digests(self) -> Iterator[str]:
        """Every blob stored (for `mailgate blobs migrate`)."""
        if not self.root.is_dir():
            return
        for top in sorted(self.root.iterdir()):
            if not (top.is_dir() and len(top.name) == 2):
                continue
            for mid in sorted(top.iterdir()):
                for item in sorted(mid.iterdir()):
                    if _HEX64.match(item.name):
                        yield item.name

    def describe(self) -> str:
        return f"file:{self.root}"

    def _install(self, tmp: str, fh: IO[bytes], digest: str) -> None:
        """Put a complete temporary file in place as blob `digest` (BlobWriter.commit)."""
        target = self.local_path(digest)
        if target.exists():
            fh.close()
            os.unlink(tmp)
            return
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)


class CopyReport(NamedTuple):
    copied: int
    present: int  # already in the target (a re-run copies nothing twice)
    bytes: int


def copy_all(
    source: BlobStore, target: BlobStore, progress: Callable[[str], None] | None = None
) -> CopyReport:
    """Copy every blob of `source` missing from `target`, streaming, and check that what the
    target stored hashes to the blob's name (a mismatch raises ValueError: a corrupt source
    blob, or a bad copy). Idempotent: blobs already there are counted, not copied."""
    copied = present = size = 0
    for digest in source.digests():
        if target.exists(digest):
            present += 1
            continue
        with target.writer() as writer:
            for piece in source.stream(digest):
                writer.write(piece)
            if writer.hexdigest() != digest:
                raise ValueError(f"blob {digest}: its bytes hash to {writer.hexdigest()}")
            ref = writer.commit()
        copied += 1
        size += ref.size
        if progress is not None:
            progress(digest)
    return CopyReport(copied, present, size)


def open_store(url: str, scratch: Path) -> BlobStore:
    """The store `[blobs] url` names: "file:PATH" or "s3://BUCKET/PREFIX?endpoint=...".
    `scratch` is local room for the object store's temporary files and read-through copies."""
    if url.startswith("file:"):
        return BlobStore(Path(url[len("file:") :]))
    if url.startswith("s3://"):
        from mailgate.store.blobs_s3 import S3BlobStore  # boto3: only when configured

        return S3BlobStore(url, scratch)
    raise ValueError(f"blob store URL: expected file: or s3://, got {url!r}")


class BlobWriter:
    """A temporary file in the store's root, hashed as it is written; commit() fsyncs it and
    renames it to its digest's path (unless that blob exists: then it is dropped)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.size = 0
        self._hash = hashlib.sha256()
        self._tmp = ""
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> BlobWriter:
        try:
            self.store.root.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=self.store.root, prefix=".tmp-")
        except OSError as exc:  # disk full, read-only, permissions: try again later
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc
        self._fh = os.fdopen(fd, "wb")
        return self

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "use BlobWriter in a with block"
        self._hash.update(data)
        self.size += len(data)
        try:
            self._fh.write(data)
        except OSError as exc:
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> BlobRef:
        assert self._fh is not None, "use BlobWriter in a with block"
        digest = self._hash.hexdigest()
        fh, self._fh = self._fh, None
        try:
            self.store._install(self._tmp, fh, digest)
        except OSError as exc:  # disk full, read-only, permissions: try again later
            fh.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc
        self._tmp = ""
        return BlobRef(digest, self.size)

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = ""


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
