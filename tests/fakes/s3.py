"""A local S3 server (moto in server mode) reached over HTTP by boto3, as a real bucket would be."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "test-access-key"
SECRET_ACCESS_KEY = "test-secret-access-key-0123456789"
REGION = "eu-west-3"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def create_bucket(self) -> str:
        name = f"encours-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        return name

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                                              aws_access_key_id=ACCESS_KEY_ID,
                                              aws_secret_access_key=SECRET_ACCESS_KEY)

    def settings(self, bucket: str) -> dict[str, str]:
        """The environment an operator sets for this bucket."""
        return {"ENCOURS_STORAGE": "s3", "ENCOURS_S3_BUCKET": bucket, "ENCOURS_S3_ENDPOINT_URL": self.endpoint_url,
                "ENCOURS_S3_REGION": REGION, "ENCOURS_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "ENCOURS_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
