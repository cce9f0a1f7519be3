"""An S3-compatible object store on loopback for the tests: moto in server mode (a real HTTP
server speaking the S3 API, in a thread), no network. Credentials are dummies set in the
environment, as an operator's AWS_* variables would be."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.peers import free_port


@dataclass
class S3Server:
    endpoint: str

    def url(self, bucket: str | None = None, prefix: str = "mail") -> str:
        """A fresh bucket (created by the test) under a prefix, as `[blobs] url` names it."""
        return f"s3://{bucket or 'b' + uuid.uuid4().hex[:12]}/{prefix}?endpoint={self.endpoint}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def create(self, url: str) -> str:
        bucket = url.split("/")[2]
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture(name="s3")
def s3_fixture(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server
