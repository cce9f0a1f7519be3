"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...), shared by several
instances: `[blobs] url = "s3://BUCKET/PREFIX?endpoint=http://HOST:PORT"`.

Keys are PREFIX/aa/bb/<sha256>, as the local layout. Credentials come from boto3's usual chain:
the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables, or a credentials file
(AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials; `?profile=NAME` picks a profile). Other
query keys: `region` (default us-east-1), `addressing` ("path", the default, fits MinIO and
emulators; or "virtual").

A write goes to a local temporary file (hashed as it is written), then is uploaded (multipart
for big ones) under its digest; `put` returns once the store has answered the PUT, so a 250
said after it stands on the object store's durability. Reads are streamed. `path()` gives a
local copy under `scratch`, downloaded once and checked against its digest (the portal serves
files from it); copies are immutable (content-addressed) so every instance may keep its own.
Any failure to reach the store is a TempFailure (451, retried), never a lost mail.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from mailgate.core.mail import BlobRef
from mailgate.errors import TempFailure
from mailgate.store.blobs import SPOOL_BUFFER, BlobStore, BlobWriter

CHUNK = 1 << 20


class S3BlobStore(BlobStore):
    def __init__(self, url: str, scratch: Path) -> None:
        super().__init__(scratch)  # temporary files and read-through copies
        self.url = url
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("expected s3://BUCKET/PREFIX?endpoint=...")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region", "profile", "addressing"}
        if unknown:
            raise ValueError(f"unknown s3 URL option(s): {', '.join(sorted(unknown))}")
        self.endpoint = query.get("endpoint") or None
        self.region = query.get("region", "us-east-1")
        self.profile = query.get("profile") or None
        self.addressing = query.get("addressing", "path")
        self._client: Any = None

    # Pickled to the parse workers: each process makes its own client.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            session = boto3.session.Session(profile_name=self.profile)
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=BotoConfig(
                    s3={"addressing_style": self.addressing},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        return self._client

    def key(self, sha256: str) -> str:
        self.local_path(sha256)  # validates the digest
        name = f"{sha256[:2]}/{sha256[2:4]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self) -> str:
        return self.url

    # -- reading ------------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with _mapped():
                self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise TempFailure(f"object store: {exc}") from exc
        return True

    def stream(self, sha256: str, chunk: int = SPOOL_BUFFER) -> Iterator[bytes]:
        with _mapped():
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
        try:
            with _mapped():
                yield from body.iter_chunks(chunk)
        finally:
            body.close()

    def get(self, sha256: str) -> bytes:
        return b"".join(self.stream(sha256))

    def path(self, sha256: str) -> Path:
        """A local copy of the blob, downloaded (streamed to disk) on first use and checked."""
        local = self.local_path(sha256)
        if local.is_file():
            return local
        with LocalCopy(self) as writer:
            for piece in self.stream(sha256):
                writer.write(piece)
            if writer.hexdigest() != sha256:
                raise TempFailure(f"object store: blob {sha256} came back with other bytes")
            writer.commit()
        return local

    def digests(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        with _mapped():
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"].rsplit("/", 1)[-1]

    # -- writing ------------------------------------------------------------------------

    def put(self, data: bytes | BlobRef) -> str:
        if isinstance(data, BlobRef):
            if not self.exists(data.sha256):
                raise TempFailure("object store: a blob written while parsing is missing")
            return data.sha256
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        with _mapped():
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data)
        return digest

    def _install(self, tmp: str, fh: IO[bytes], digest: str) -> None:
        """Upload a complete temporary file as blob `digest`, then drop the file."""
        try:
            fh.close()
            if not self.exists(digest):
                with _mapped():
                    self.client.upload_file(tmp, self.bucket, self.key(digest))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (`blobs migrate` to a new store; tests)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            with _mapped():
                self.client.create_bucket(Bucket=self.bucket)


class LocalCopy(BlobWriter):
    """A blob written into the scratch folder's local layout (the read-through copy)."""

    def commit(self) -> BlobRef:
        assert self._fh is not None
        fh, self._fh = self._fh, None
        BlobStore._install(self.store, self._tmp, fh, self._hash.hexdigest())
        self._tmp = ""
        return BlobRef(self._hash.hexdigest(), self.size)


def _status(exc: Any) -> int:
    try:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    except (KeyError, TypeError, ValueError):
        return 0


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Every botocore failure to reach or use the store becomes a TempFailure: the mail
    waits (451) rather than being lost. A missing key (404) on a read is left to the caller."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        if _status(exc) == 404:
            raise
        raise TempFailure(f"object store: {exc}") from exc
    except BotoCoreError as exc:
        raise TempFailure(f"object store: {exc}") from exc
